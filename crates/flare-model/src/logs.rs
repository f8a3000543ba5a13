use serde::{Deserialize, Serialize};

/// Microseconds since the Unix epoch: the clock of log lines and queued
/// invocations.
pub fn now_us() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Written by Flare about the invocation: traps, timeouts, limits.
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "stdout" => Some(LogStream::Stdout),
            "stderr" => Some(LogStream::Stderr),
            "system" => Some(LogStream::System),
            _ => None,
        }
    }
}

/// One line a function wrote (or Flare wrote about it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Microseconds since the Unix epoch.
    pub ts_us: i64,
    pub function: String,
    pub invocation: String,
    pub stream: LogStream,
    pub line: String,
}

/// A stored log line with its id (ids grow with time of writing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub id: i64,
    #[serde(flatten)]
    pub record: LogRecord,
}

/// Longest stored log line, in bytes; a longer one is split.
pub const MAX_LOG_LINE: usize = 16 << 10;
/// Bytes of output kept per invocation; the rest is counted and dropped
/// with one note.
pub const INVOCATION_LOG_BUDGET: usize = 1 << 20;

/// Splits a stream of output into log lines of at most [`MAX_LOG_LINE`]
/// bytes, so no amount of output without a newline is held in memory.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buffer: Vec<u8>,
}

impl LineSplitter {
    /// Adds `bytes` and returns the lines they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        while !bytes.is_empty() {
            let room = MAX_LOG_LINE - self.buffer.len();
            let take = match bytes[..bytes.len().min(room)]
                .iter()
                .position(|b| *b == b'\n')
            {
                Some(newline) => newline + 1,
                None => bytes.len().min(room),
            };
            self.buffer.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.buffer.last() == Some(&b'\n') || self.buffer.len() >= MAX_LOG_LINE {
                lines.push(self.take());
            }
        }
        lines
    }

    /// The unfinished rest, if any: call when the stream ends.
    pub fn finish(&mut self) -> Option<String> {
        (!self.buffer.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        let mut line = std::mem::take(&mut self.buffer);
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8_lossy(&line).into_owned()
    }
}

/// Splits one line a worker reported into stored lines of at most
/// [`MAX_LOG_LINE`] bytes (on character boundaries).
pub fn split_long_line(line: &str) -> impl Iterator<Item = &str> {
    let mut rest = line;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(MAX_LOG_LINE);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (head, tail) = rest.split_at(end);
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod splitter_tests {
    use super::*;

    #[test]
    fn lines_split_on_newlines_and_at_the_cap() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\r\nb"), ["a"]);
        assert_eq!(s.push(b"c\n"), ["bc"]);
        let long = vec![b'x'; MAX_LOG_LINE * 2 + 5];
        let lines = s.push(&long);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l.len() == MAX_LOG_LINE));
        assert_eq!(s.finish().as_deref(), Some("xxxxx"));
        assert_eq!(s.finish(), None);
    }

    #[test]
    fn long_reported_lines_split_on_char_boundaries() {
        let line = "é".repeat(MAX_LOG_LINE);
        let parts: Vec<&str> = split_long_line(&line).collect();
        assert!(parts.iter().all(|p| p.len() <= MAX_LOG_LINE));
        assert_eq!(parts.concat(), line);
        assert_eq!(split_long_line("").count(), 0);
    }
}

/// `line` as it is printed for a person: control characters (CR, escape
/// sequences, a newline a worker reported inside one line) shown escaped,
/// so one stored line is one printed line and no function can print
/// something that looks like another invocation's line or rewrites the
/// terminal. The stored bytes are unchanged.
pub fn printable(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn control_characters_are_shown_escaped() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(
            printable("one\r\u{1b}[2Kforged\ninvocation x"),
            "one\\r\\u{1b}[2Kforged\\ninvocation x"
        );
        assert_eq!(printable("tab\there"), "tab\\there");
    }
}
