//! Why an invocation failed, in one vocabulary for every runtime.
//!
//! A runtime says what happened as a [`Failure`]; its `Display` is the
//! `system` line written to the function's log, the same words whether the
//! function ran in wasm or in a worker process. The caller is told less:
//! [`Failure::to_error`] gives the error code, a generic message and the
//! invocation id; what the function itself said (an exception, a trap's
//! backtrace) stays in the log and in the error's owner-only detail.

use std::time::Duration;

use crate::{Error, ErrorCode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Still running at its timeout: stopped (wasm) or killed (process).
    #[error("function timed out after {} and was stopped", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The memory limit in MiB, seen as a failed grow (wasm) or the
    /// cgroup's OOM event (process).
    #[error("function exceeded its memory limit of {0} MiB and was killed")]
    OutOfMemory(u32),
    /// The worker was killed by a signal (the name, e.g. `9 (SIGKILL)`).
    #[error("function was killed by signal {0}")]
    Signal(String),
    /// The worker exited on its own with this status.
    #[error("function exited with status {0}")]
    Exited(i32),
    /// The worker stopped answering for another reason.
    #[error("function's worker stopped: {0}")]
    Crashed(String),
    /// A wasm trap, with its message and backtrace.
    #[error("function trapped: {0}")]
    Trap(String),
    /// The function's own error: an exception, an error code it returned.
    #[error("function raised an error: {0}")]
    Raised(String),
    #[error("function returned without sending a response")]
    NoResponse,
    /// An answer HTTP cannot carry (a status outside 200-599, headers
    /// past the limits); the instance itself is fine.
    #[error("function sent an invalid response: {0}")]
    BadResponse(String),
    /// The worker broke the protocol (a frame past its limit); killed.
    #[error("function's worker broke the protocol and was killed: {0}")]
    Protocol(String),
    /// No instance could be started for it.
    #[error("function could not be started: {0}")]
    Start(String),
    /// No room to run it (every instance slot taken) within its wait.
    #[error("function was not run: {0}")]
    Busy(String),
}

impl Failure {
    /// The caller's error code; also chooses the HTTP status.
    pub fn code(&self) -> ErrorCode {
        match self {
            Failure::Timeout(_) => ErrorCode::Timeout,
            Failure::BadResponse(_) | Failure::Protocol(_) => ErrorCode::BadGateway,
            Failure::Busy(_) => ErrorCode::Unavailable,
            Failure::OutOfMemory(_)
            | Failure::Signal(_)
            | Failure::Exited(_)
            | Failure::Crashed(_)
            | Failure::Trap(_)
            | Failure::Raised(_)
            | Failure::NoResponse
            | Failure::Start(_) => ErrorCode::FunctionFailed,
        }
    }

    /// What the caller may know: nothing the function wrote.
    fn summary(&self) -> String {
        match self {
            Failure::Timeout(t) => format!(
                "did not finish within its timeout of {}",
                humantime::format_duration(*t)
            ),
            Failure::OutOfMemory(mb) => {
                format!("exceeded its memory limit of {mb} MiB and was killed")
            }
            Failure::Signal(_) | Failure::Exited(_) | Failure::Crashed(_) => "crashed".into(),
            Failure::Trap(_) => "trapped".into(),
            Failure::Raised(_) => "raised an error".into(),
            Failure::NoResponse => "returned without sending a response".into(),
            Failure::BadResponse(_) | Failure::Protocol(_) => "sent an invalid response".into(),
            Failure::Start(_) => "could not be started".into(),
            Failure::Busy(_) => "found no free instance slot; retry later".into(),
        }
    }

    /// The caller's error: code, generic message, invocation id; the full
    /// reason only as the owner's detail.
    pub fn to_error(&self, function: &str, invocation: &str) -> Error {
        Error::new(
            self.code(),
            format!(
                "function \"{function}\" {} (invocation {invocation}; see `flare fn logs --name {function} --invocation {invocation}`)",
                self.summary()
            ),
        )
        .with_detail(self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_never_see_what_the_function_said() {
        let secret = "ValueError: secret at 0x54a5";
        for failure in [
            Failure::Trap(secret.into()),
            Failure::Raised(secret.into()),
            Failure::BadResponse(secret.into()),
            Failure::Protocol(secret.into()),
            Failure::Start(secret.into()),
            Failure::Crashed(secret.into()),
        ] {
            let error = failure.to_error("f", "inv-1");
            assert!(!error.message.contains("secret"), "{}", error.message);
            assert!(error.message.contains("inv-1"), "{}", error.message);
            assert!(failure.to_string().contains(secret), "the log keeps it");
        }
    }

    #[test]
    fn codes_choose_the_status() {
        assert_eq!(
            Failure::Timeout(Duration::from_secs(1)).code().status(),
            504
        );
        assert_eq!(Failure::Busy(String::new()).code().status(), 503);
        assert_eq!(Failure::BadResponse(String::new()).code().status(), 502);
        assert_eq!(Failure::OutOfMemory(128).code().status(), 500);
    }
}
