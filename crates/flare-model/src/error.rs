//! One error type for the platform's boundaries, with a code that maps to an
//! HTTP status in exactly one place ([`ErrorCode::status`]).

use serde::{Deserialize, Serialize};

/// What kind of failure happened. The set is small on purpose: callers branch
/// on it (CLI exit codes, HTTP statuses, retries), and the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The input is malformed or breaks a rule (400).
    InvalidArgument,
    /// The named thing does not exist (404).
    NotFound,
    /// The path exists but not for this method (405).
    MethodNotAllowed,
    /// The request carries no valid token: none, unknown, expired or
    /// revoked (401).
    Unauthenticated,
    /// The request may not do this: its token's role or namespace does not
    /// allow it, or a browser request came from another origin (403).
    Forbidden,
    /// A body of a type the endpoint does not take (415).
    UnsupportedMediaType,
    /// A resource with that name already exists (409).
    AlreadyExists,
    /// The write conflicts with the current state: a stale generation, a
    /// clashing route, a resource still in use (409).
    Conflict,
    /// A body or package is larger than its limit (413).
    PayloadTooLarge,
    /// The client did not send its request body in the time allowed (408).
    RequestTimeout,
    /// Temporarily unable to serve: saturated or not ready; retry later (503).
    Unavailable,
    /// The function did not finish within its timeout (504).
    Timeout,
    /// The function trapped, ran out of memory or answered nothing (500).
    FunctionFailed,
    /// The function answered something that is not a valid HTTP response:
    /// a status outside 200-599, headers past the limits (502).
    BadGateway,
    /// A bug or an environment failure on Flare's side (500).
    Internal,
}

impl ErrorCode {
    /// The HTTP status for this code. The only place statuses are chosen.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::AlreadyExists | ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::BadGateway => 502,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::FunctionFailed | ErrorCode::Internal => 500,
        }
    }

    /// The code for a status received from a server that sent no error body.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => ErrorCode::InvalidArgument,
            404 => ErrorCode::NotFound,
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::Conflict,
            415 => ErrorCode::UnsupportedMediaType,
            413 => ErrorCode::PayloadTooLarge,
            408 => ErrorCode::RequestTimeout,
            502 => ErrorCode::BadGateway,
            429 | 503 => ErrorCode::Unavailable,
            504 => ErrorCode::Timeout,
            _ => ErrorCode::Internal,
        }
    }
}

/// An error with a code and a message meant for the user.
///
/// `detail` is what only the function's owner may see (an exception's
/// text, a trap's backtrace): it is never serialized, so it never reaches
/// an HTTP caller; triggers put it in error topics and invocation records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip)]
    pub detail: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Serialize, Deserialize)]
struct Envelope {
    error: Error,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// Adds what only the function's owner may see (see [`Error`]).
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The message with its detail, for the owner's channels (error
    /// topics, invocation records), never for an HTTP caller.
    pub fn owner_message(&self) -> String {
        match &self.detail {
            Some(detail) => format!("{}: {detail}", self.message),
            None => self.message.clone(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    pub fn not_found(what: impl std::fmt::Display, name: &str) -> Self {
        Error::new(ErrorCode::NotFound, format!("{what} \"{name}\" not found"))
    }

    pub fn already_exists(what: impl std::fmt::Display, name: &str) -> Self {
        Error::new(
            ErrorCode::AlreadyExists,
            format!("{what} \"{name}\" already exists"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Conflict, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The JSON body every Flare server sends for an error:
    /// `{"error":{"code":"...","message":"..."}}`.
    pub fn to_json(&self) -> String {
        let envelope = Envelope {
            error: self.clone(),
        };
        // Serializing two plain strings cannot fail; fall back to a fixed
        // document rather than panic if it ever did.
        serde_json::to_string(&envelope).unwrap_or_else(|_| {
            r#"{"error":{"code":"internal","message":"unprintable error"}}"#.to_string()
        })
    }

    /// Parse an error body sent by a Flare server, or describe the status
    /// when the body is not one.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) => envelope.error,
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("server answered {status}")
                } else {
                    format!("server answered {status}: {text}")
                };
                Error::new(ErrorCode::from_status(status), message)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_status() {
        let codes = [
            ErrorCode::InvalidArgument,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Unauthenticated,
            ErrorCode::Forbidden,
            ErrorCode::Conflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::BadGateway,
            ErrorCode::Unavailable,
            ErrorCode::Timeout,
            ErrorCode::Internal,
        ];
        for code in codes {
            assert_eq!(ErrorCode::from_status(code.status()), code, "{code:?}");
        }
        assert_eq!(ErrorCode::AlreadyExists.status(), 409);
        assert_eq!(ErrorCode::FunctionFailed.status(), 500);
    }

    #[test]
    fn json_body_round_trips() {
        let err = Error::not_found("function", "hello");
        let json = err.to_json();
        assert_eq!(
            json,
            r#"{"error":{"code":"not_found","message":"function \"hello\" not found"}}"#
        );
        assert_eq!(Error::from_response(404, json.as_bytes()), err);
    }

    #[test]
    fn detail_never_reaches_the_json_body() {
        let err = Error::new(ErrorCode::FunctionFailed, "function \"f\" raised an error")
            .with_detail("ValueError: secret");
        assert!(!err.to_json().contains("secret"), "{}", err.to_json());
        assert!(!err.to_string().contains("secret"));
        assert!(err.owner_message().contains("ValueError: secret"));
    }

    #[test]
    fn non_json_body_keeps_status_and_text() {
        let err = Error::from_response(500, b"bad gateway");
        assert_eq!(err.code, ErrorCode::Internal);
        assert!(err.message.contains("500"), "{}", err.message);
        assert!(err.message.contains("bad gateway"), "{}", err.message);
    }
}
