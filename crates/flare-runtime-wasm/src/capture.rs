//! stdout / stderr of a guest, split into lines and sent to the log store.
//!
//! Each invocation gets its own pair of streams; a line is sent when its
//! newline arrives, the unfinished rest when the invocation ends. A guest
//! may write at most [`BUDGET`] bytes per invocation; the rest is dropped
//! with one note, so a chatty loop cannot flood the store.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use flare_model::{LogRecord, LogStream, now_us};
use flare_store::logs::LogSender;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of output kept per invocation.
pub(crate) const BUDGET: usize = 1 << 20;
/// Longest line stored; longer lines are split.
const MAX_LINE: usize = 16 * 1024;

/// Who is writing: shared by the stdout and stderr of one invocation.
pub(crate) struct Capture {
    function: Arc<str>,
    invocation: Arc<str>,
    sender: LogSender,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    written: usize,
    truncated: bool,
}

impl Capture {
    pub fn new(function: Arc<str>, invocation: Arc<str>, sender: LogSender) -> Arc<Self> {
        Arc::new(Capture {
            function,
            invocation,
            sender,
            state: Mutex::default(),
        })
    }

    pub fn stream(self: &Arc<Self>, stream: LogStream) -> CaptureStream {
        CaptureStream {
            capture: self.clone(),
            stream,
        }
    }

    /// Records a line written by Flare about this invocation.
    pub fn system(&self, line: impl Into<String>) {
        self.send(LogStream::System, line.into());
    }

    fn send(&self, stream: LogStream, line: String) {
        self.sender.send(LogRecord {
            ts_us: now_us(),
            function: self.function.to_string(),
            invocation: self.invocation.to_string(),
            stream,
            line,
        });
    }

    fn write(&self, stream: LogStream, mut bytes: &[u8]) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let room = BUDGET.saturating_sub(state.written);
        if bytes.len() > room {
            bytes = &bytes[..room];
            if !state.truncated {
                state.truncated = true;
                self.send(
                    LogStream::System,
                    format!("output over {BUDGET} bytes in one invocation; the rest is dropped"),
                );
            }
        }
        state.written += bytes.len();
        let buffer = match stream {
            LogStream::Stderr => &mut state.stderr,
            _ => &mut state.stdout,
        };
        buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = buffer
            .iter()
            .position(|b| *b == b'\n')
            .or_else(|| (buffer.len() >= MAX_LINE).then_some(MAX_LINE))
        {
            let rest = buffer.split_off((end + 1).min(buffer.len()));
            let mut line = std::mem::replace(buffer, rest);
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        drop(state);
        for line in lines {
            self.send(stream, line);
        }
    }

    /// Sends what is left without a newline; call when the guest is done.
    pub fn finish(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let stdout = std::mem::take(&mut state.stdout);
        let stderr = std::mem::take(&mut state.stderr);
        drop(state);
        for (stream, rest) in [(LogStream::Stdout, stdout), (LogStream::Stderr, stderr)] {
            if !rest.is_empty() {
                self.send(stream, String::from_utf8_lossy(&rest).into_owned());
            }
        }
    }
}

/// One of the two output streams of an invocation.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    capture: Arc<Capture>,
    stream: LogStream,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.capture.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.capture.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
