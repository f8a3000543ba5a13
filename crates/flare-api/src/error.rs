//! flare_model::Error as an axum response.

use axum::response::{IntoResponse, Response};
use flare_model::{Error, ErrorCode};
use http::{HeaderValue, StatusCode};

/// An error on its way to the client: JSON body, status from its code.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() && self.0.code == ErrorCode::Internal {
            tracing::error!("internal error: {}", self.0.message);
        }
        let mut response = (status, self.0.to_json()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.0.code == ErrorCode::Unauthenticated {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        if self.0.code == ErrorCode::Unavailable {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Makes every error the API sends the same JSON document: axum's own
/// rejections (a bad or repeated query parameter, a missing body, a method
/// the route does not take) come as plain text or empty, and go through
/// [`ApiError`] here, so there is one error mapping for every response.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(http::header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status.as_u16() {
        405 => ErrorCode::MethodNotAllowed,
        other => ErrorCode::from_status(other),
    };
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_string()
    } else {
        text
    };
    let mut json = ApiError(Error::new(code, message)).into_response();
    // Keep the status axum chose (422 for a body that does not parse, say).
    *json.status_mut() = status;
    if let Some(allow) = allow {
        json.headers_mut().insert(http::header::ALLOW, allow);
    }
    json
}

/// Reads and drops what is left of a refused request's body, up to `limit`
/// bytes and for `within` at most, so that a client still sending reads
/// the refusal rather than a reset connection.
pub(crate) async fn drain<S, E>(mut body: S, limit: usize, within: std::time::Duration)
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut drained = 0usize;
    while let Ok(Some(Ok(chunk))) =
        tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut body)).await
    {
        drained += chunk.len();
        if drained > limit {
            return;
        }
    }
}
