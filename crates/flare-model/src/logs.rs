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
