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
use flare_model::{INVOCATION_LOG_BUDGET as BUDGET, LineSplitter, LogRecord, LogStream, now_us};
use flare_store::logs::LogSender;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Who is writing: shared by the stdout and stderr of one invocation.
pub(crate) struct Capture {
    function: Arc<str>,
    invocation: Arc<str>,
    sender: LogSender,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stdout: LineSplitter,
    stderr: LineSplitter,
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
        let lines = match stream {
            LogStream::Stderr => state.stderr.push(bytes),
            _ => state.stdout.push(bytes),
        };
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
        let stdout = state.stdout.finish();
        let stderr = state.stderr.finish();
        drop(state);
        for (stream, rest) in [(LogStream::Stdout, stdout), (LogStream::Stderr, stderr)] {
            if let Some(rest) = rest {
                self.send(stream, rest);
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
