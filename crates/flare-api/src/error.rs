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
        if self.0.code == ErrorCode::Unavailable {
            headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
