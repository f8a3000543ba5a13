//! Asynchronous invocations: turn a request into a durable queue entry.
//! The router (`/async/fn/...`, `X-Flare-Async: true`) and the API
//! (`flare fn test --async`) both submit through here.

use std::sync::Arc;

use bytes::Bytes;
use flare_model::Error;
use flare_store::invocations::{InvocationQueue, NewInvocation};
use http::header::{CONTENT_TYPE, LOCATION};
use http::{HeaderValue, Request, Response, StatusCode};

use crate::{Executor, INVOCATION_HEADER};

/// A request header asking for asynchronous invocation.
pub const ASYNC_HEADER: &str = "x-flare-async";
/// Where to POST the outcome of an asynchronous invocation.
pub const CALLBACK_HEADER: &str = "x-flare-callback-url";
/// Retries of an asynchronous invocation (0..=10, default 3).
pub const RETRIES_HEADER: &str = "x-flare-max-retries";
const DEFAULT_RETRIES: u32 = 3;
/// Headers that carry someone's credentials: never stored with an
/// invocation (its record outlives the request, and whoever may read
/// invocations need not see them), so an asynchronous run goes without.
const CREDENTIALS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];
const MAX_RETRIES: u32 = 10;

/// The 202 answer to a submitted invocation, with its id and Location.
pub fn accepted(id: &str) -> Response<Bytes> {
    let json = serde_json::json!({"invocation": id, "status": "queued"}).to_string();
    let mut response = Response::new(Bytes::from(json));
    *response.status_mut() = StatusCode::ACCEPTED;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/invocations/{id}")) {
        headers.insert(LOCATION, location);
    }
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(INVOCATION_HEADER, value);
    }
    response
}

impl Executor {
    /// Stores `request` for `function` in the queue, durably, and returns
    /// the invocation id. Refused (nothing stored) for an unknown function,
    /// a body over the function's limit or bad headers.
    pub async fn submit<B>(
        &self,
        queue: &dyn InvocationQueue,
        function: &str,
        request: Request<B>,
    ) -> Result<Arc<str>, Error>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let limit = self
            .max_body_bytes(function)
            .ok_or_else(|| Error::not_found("function", function))?;
        let (parts, body) = request.into_parts();
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let callback_url = header(CALLBACK_HEADER).map(str::to_string);
        if let Some(url) = &callback_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::invalid(format!(
                "{CALLBACK_HEADER} must be an http(s) URL, got \"{url}\""
            )));
        }
        let max_retries = match header(RETRIES_HEADER) {
            None => DEFAULT_RETRIES,
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_RETRIES)
                .ok_or_else(|| {
                    Error::invalid(format!("{RETRIES_HEADER} must be 0..={MAX_RETRIES}"))
                })?,
        };
        let body = self
            .read_body(function, &parts.headers, body, limit)
            .await?;
        let id = self.next_invocation_id();
        let headers = parts
            .headers
            .iter()
            .filter(|(k, _)| {
                ![ASYNC_HEADER, CALLBACK_HEADER, RETRIES_HEADER].contains(&k.as_str())
                    && !CREDENTIALS.contains(&k.as_str())
            })
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        queue
            .submit(NewInvocation {
                id: id.to_string(),
                function: function.to_string(),
                method: parts.method.to_string(),
                path: parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string(),
                headers,
                body: body.to_vec(),
                callback_url,
                max_retries,
            })
            .await?;
        Ok(id)
    }

    /// Submits `request` (a stored invocation's) again as a new
    /// invocation; its id. Refused, with nothing stored, when its function
    /// is gone or its body is now over the function's limit.
    pub async fn resubmit(
        &self,
        queue: &dyn InvocationQueue,
        request: NewInvocation,
    ) -> Result<Arc<str>, Error> {
        let limit = self
            .max_body_bytes(&request.function)
            .ok_or_else(|| Error::not_found("function", &request.function))?;
        if request.body.len() as u64 > limit {
            return Err(Error::new(
                flare_model::ErrorCode::PayloadTooLarge,
                format!(
                    "the invocation's body of {} bytes is over function \"{}\"'s limit of {limit} bytes",
                    request.body.len(),
                    request.function
                ),
            ));
        }
        let id = self.next_invocation_id();
        queue
            .submit(NewInvocation {
                id: id.to_string(),
                ..request
            })
            .await?;
        Ok(id)
    }
}
