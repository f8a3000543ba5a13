//! The data path: one request to one function.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use flare_model::{Error, ErrorCode};
use flare_runtime_process::ProcessError;
use flare_runtime_wasm::{Call, InvokeError, ResponseBody, full_body};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderName, HeaderValue, Request, Response};

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
use http_body_util::{BodyExt, Limited};

use crate::Executor;
use crate::deploy::{Backend, State};

/// The response header that carries the invocation id.
pub const INVOCATION_HEADER: &str = "x-flare-invocation-id";

/// The outcome of [`Executor::invoke`]: the invocation id, when the function
/// was started, and its response (already carrying the id in
/// [`INVOCATION_HEADER`]) or the error to send instead.
pub struct Invoked {
    pub invocation: Option<Arc<str>>,
    pub result: Result<Response<ResponseBody>, Error>,
}

impl Invoked {
    fn refused(error: Error) -> Self {
        Invoked {
            invocation: None,
            result: Err(error),
        }
    }
}

fn failure(error: InvokeError, function: &str, invocation: &str) -> Error {
    let code = match error {
        InvokeError::Timeout(_) => ErrorCode::Timeout,
        InvokeError::Instantiate(_) => ErrorCode::Unavailable,
        InvokeError::OutOfMemory(_)
        | InvokeError::Trap(_)
        | InvokeError::NoResponse
        | InvokeError::Guest(_) => ErrorCode::FunctionFailed,
    };
    Error::new(
        code,
        format!(
            "function \"{function}\": {error} (invocation {invocation}; see `flare fn logs --name {function} --invocation {invocation}`)"
        ),
    )
}

fn process_failure(error: ProcessError, function: &str, invocation: &str) -> Error {
    let code = match error {
        ProcessError::Timeout(_) => ErrorCode::Timeout,
        ProcessError::Saturated(_) => ErrorCode::Unavailable,
        ProcessError::OutOfMemory(_)
        | ProcessError::Function(_)
        | ProcessError::Crashed(_)
        | ProcessError::Start(_) => ErrorCode::FunctionFailed,
    };
    Error::new(
        code,
        format!(
            "function \"{function}\": {error} (invocation {invocation}; see `flare fn logs --name {function} --invocation {invocation}`)"
        ),
    )
}

fn status_of(result: &Result<Response<ResponseBody>, Error>) -> u16 {
    match result {
        Ok(response) => response.status().as_u16(),
        Err(e) => e.status(),
    }
}

/// Adds the invocation id and `Server-Timing: fn;dur=<ms>`: how long the
/// function took to answer (specialization included on a cold start), so
/// callers can tell the function's time from the platform's.
fn annotate(
    mut response: Response<ResponseBody>,
    started: Instant,
    invocation: &str,
) -> Response<ResponseBody> {
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("fn;dur={ms:.3}")) {
        headers.append(SERVER_TIMING, value);
    }
    if let Ok(value) = HeaderValue::from_str(invocation) {
        headers.insert(INVOCATION_HEADER, value);
    }
    response
}

impl Executor {
    /// A new invocation id: time-ordered, unique across restarts.
    pub fn next_invocation_id(&self) -> Arc<str> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let n = self.invocation_counter.fetch_add(1, Ordering::Relaxed);
        format!("{millis:011x}{:08x}{n:08x}", self.invocation_prefix).into()
    }

    /// Runs `request` through the function `name`.
    pub async fn invoke<B>(&self, name: &str, request: Request<B>) -> Invoked
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(deployment) = self.get(name) else {
            return Invoked::refused(Error::not_found("function", name));
        };
        let ready = match &deployment.state {
            State::Ready(ready) => ready,
            State::Failed(reason) => {
                return Invoked::refused(Error::new(
                    ErrorCode::Unavailable,
                    format!("function \"{name}\" is not ready: {reason}"),
                ));
            }
        };
        let limits = deployment.spec.limits;
        let metrics = self.metrics_for(name);
        let permit = match ready.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Saturated: wait in the bounded queue if there is room.
                let queue = u64::from(limits.queue);
                let refuse = |why: String| {
                    metrics.rejected.fetch_add(1, Ordering::Relaxed);
                    Invoked::refused(Error::new(ErrorCode::Unavailable, why))
                };
                if queue == 0 {
                    return refuse(format!(
                        "function \"{name}\" is at its concurrency limit of {}; retry later",
                        crate::deploy::permits_for(&deployment.spec)
                    ));
                }
                if metrics.queued.fetch_add(1, Ordering::AcqRel) >= queue {
                    metrics.queued.fetch_sub(1, Ordering::AcqRel);
                    return refuse(format!(
                        "function \"{name}\" is at capacity and its queue of {queue} is full; retry later"
                    ));
                }
                let waited = tokio::time::timeout(
                    limits.queue_timeout,
                    ready.permits.clone().acquire_owned(),
                )
                .await;
                metrics.queued.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        return refuse(format!(
                            "function \"{name}\" stayed at capacity for the queue timeout of {}; retry later",
                            humantime::format_duration(limits.queue_timeout)
                        ));
                    }
                }
            }
        };

        let too_large = || {
            Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than the limit of {} bytes for function \"{name}\"",
                    limits.max_body_bytes
                ),
            )
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limits.max_body_bytes) {
            return Invoked::refused(too_large());
        }
        let (mut parts, body) = request.into_parts();
        let limit = usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
        let body = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Invoked::refused(too_large());
            }
            Err(e) => {
                return Invoked::refused(Error::invalid(format!("cannot read request body: {e}")));
            }
        };
        // wasi:http needs an authority; HTTP/1.0 clients may send none.
        if !parts.headers.contains_key(HOST) && parts.uri.authority().is_none() {
            parts
                .headers
                .insert(HOST, HeaderValue::from_static("localhost"));
        }

        let invocation = self.next_invocation_id();
        let request = Request::from_parts(parts, body);
        let started = Instant::now();
        let prepared = match &ready.backend {
            Backend::Wasm(prepared) => prepared,
            Backend::Process(function) => {
                let result = self
                    .process
                    .invoke(function, invocation.clone(), request)
                    .await
                    .map(|response| annotate(response.map(full_body), started, &invocation))
                    .map_err(|e| process_failure(e, name, &invocation));
                drop(permit);
                metrics.record(status_of(&result), started.elapsed());
                return Invoked {
                    invocation: Some(invocation),
                    result,
                };
            }
        };
        let call = Call {
            function: deployment.name.clone(),
            invocation: invocation.clone(),
            request,
            limits,
            env: ready.env.clone(),
            allowed_hosts: ready.allowed_hosts.clone(),
            logs: self.logs.clone(),
            guard: Some(Box::new(permit)),
        };
        let result = self
            .runtime
            .invoke(prepared, call)
            .await
            .map(|response| annotate(response, started, &invocation))
            .map_err(|e| failure(e, name, &invocation));
        metrics.record(status_of(&result), started.elapsed());
        Invoked {
            invocation: Some(invocation),
            result,
        }
    }
}
