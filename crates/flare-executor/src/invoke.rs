//! The data path: one request to one function.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use flare_model::{Error, ErrorCode, Failure};
use flare_runtime::{Call, ColdStart, ResponseBody, full_body};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Request, Response};

const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
use http_body_util::{BodyExt, Limited};

use crate::Executor;
use crate::deploy::State;
use crate::trace::{Traced, Tracing};

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

fn status_of(result: &Result<Response<ResponseBody>, Error>) -> u16 {
    match result {
        Ok(response) => response.status().as_u16(),
        Err(e) => e.status(),
    }
}

/// Headers that frame the message on the wire. The router frames bodies
/// itself; a function setting these could desynchronize a keep-alive
/// connection (a `content-length: 0` with a body poisons the next response).
const FRAMING: [HeaderName; 8] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    UPGRADE,
    TE,
    TRAILER,
    HeaderName::from_static("proxy-connection"),
];
use flare_model::{MAX_RESPONSE_HEADER_BYTES, MAX_RESPONSE_HEADERS};

/// The one check of what a function answered, for every runtime: a status
/// in 200-599, headers within [`MAX_RESPONSE_HEADERS`] and
/// [`MAX_RESPONSE_HEADER_BYTES`], framing headers removed. Then adds the
/// invocation id and `Server-Timing: fn;dur=<ms>` (how long the function
/// took to answer, specialization included on a cold start), so callers
/// can tell the function's time from the platform's.
fn checked(
    mut response: Response<ResponseBody>,
    started: Instant,
    invocation: &str,
) -> Result<Response<ResponseBody>, String> {
    let status = response.status().as_u16();
    if !(200..=599).contains(&status) {
        return Err(format!("status {status} is outside 200-599"));
    }
    let headers = response.headers_mut();
    for name in &FRAMING {
        headers.remove(name);
    }
    if headers.len() > MAX_RESPONSE_HEADERS {
        return Err(format!(
            "{} headers, more than the limit of {MAX_RESPONSE_HEADERS}",
            headers.len()
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if bytes > MAX_RESPONSE_HEADER_BYTES {
        return Err(format!(
            "{bytes} bytes of headers, more than the limit of {MAX_RESPONSE_HEADER_BYTES}"
        ));
    }
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("fn;dur={ms:.3}")) {
        headers.append(SERVER_TIMING, value);
    }
    if let Ok(value) = HeaderValue::from_str(invocation) {
        headers.insert(INVOCATION_HEADER, value);
    }
    Ok(response)
}

/// [`checked`], turning a refusal into the caller's 502 and a `system`
/// line in the function's log.
fn deliver(
    executor: &Executor,
    response: Response<ResponseBody>,
    started: Instant,
    function: &str,
    invocation: &str,
) -> Result<Response<ResponseBody>, Error> {
    checked(response, started, invocation).map_err(|why| {
        let failure = Failure::BadResponse(why);
        executor.system_log(function, invocation, failure.to_string());
        failure.to_error(function, invocation)
    })
}

/// Counts a request waiting in a function's queue for as long as it waits,
/// however the wait ends (a caller that goes away included).
struct Queued<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Executor {
    /// Reads the body of a request to `function`: at most `limit` bytes
    /// (a declared length past it is refused before reading), within the
    /// body timeout, so a client that sends slowly (or stops) holds a
    /// connection for a bounded time and never a function's capacity.
    pub(crate) async fn read_body<B>(
        &self,
        function: &str,
        headers: &http::HeaderMap,
        body: B,
        limit: u64,
    ) -> Result<Bytes, Error>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let too_large = || {
            Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is larger than the limit of {limit} bytes for function \"{function}\""
                ),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large());
        }
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        let read = tokio::time::timeout(self.body_timeout, Limited::new(body, cap).collect());
        match read.await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(Error::invalid(format!("cannot read request body: {e}"))),
            Err(_) => Err(Error::new(
                ErrorCode::RequestTimeout,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(self.body_timeout)
                ),
            )),
        }
    }

    /// A new invocation id: time-ordered, unique across restarts.
    pub fn next_invocation_id(&self) -> Arc<str> {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let n = self.invocation_counter.fetch_add(1, Ordering::Relaxed);
        format!("{millis:011x}{:08x}{n:08x}", self.invocation_prefix).into()
    }

    /// Writes one `system` line to a function's log.
    pub(crate) fn system_log(&self, function: &str, invocation: &str, line: String) {
        self.logs.send(flare_model::LogRecord {
            ts_us: flare_model::now_us(),
            function: function.to_string(),
            invocation: invocation.to_string(),
            stream: flare_model::LogStream::System,
            line,
        });
    }

    /// Runs `request` through the function `name`.
    ///
    /// The body is read before a concurrency permit is taken, so a slow
    /// uploader holds a connection, never a function's capacity. Every
    /// count taken here (queue position, permit) is released by a guard,
    /// so a caller that goes away mid-request leaks nothing.
    pub async fn invoke<B>(&self, name: &str, request: Request<B>) -> Invoked
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.invoke_as(name, request, None).await
    }

    /// [`Executor::invoke`] under an invocation id given in advance (an
    /// asynchronous invocation's, so its logs are found by the id its
    /// caller was given); `None`: a new one.
    pub async fn invoke_as<B>(
        &self,
        name: &str,
        request: Request<B>,
        invocation: Option<Arc<str>>,
    ) -> Invoked
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(tracing) = self.tracing.get() else {
            return self.invoke_once(name, request, invocation, None).await;
        };
        let (mut parts, body) = request.into_parts();
        let traced = tracing.start(name, &mut parts.headers);
        let request = Request::from_parts(parts, body);
        let mut invoked = self
            .invoke_once(name, request, invocation, Some((tracing, &traced)))
            .await;
        if traced.recording() {
            match &mut invoked.result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = std::mem::replace(response.body_mut(), full_body(Bytes::new()));
                    *response.body_mut() = traced.answered(status, body);
                }
                Err(e) => traced.failed(e.status(), &e.message),
            }
        }
        invoked
    }

    /// One invocation, its phases noted on `traced` when it is traced.
    async fn invoke_once<B>(
        &self,
        name: &str,
        request: Request<B>,
        invocation: Option<Arc<str>>,
        traced: Option<(&Tracing, &Traced)>,
    ) -> Invoked
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let traced = traced.filter(|(_, traced)| traced.recording());
        if let Err(e) = self.ensure(name).await {
            return Invoked::refused(e);
        }
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

        let (mut parts, body) = request.into_parts();
        let body = match self
            .read_body(name, &parts.headers, body, limits.max_body_bytes)
            .await
        {
            Ok(body) => body,
            Err(e) => return Invoked::refused(e),
        };

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
                        ready.function.capacity()
                    ));
                }
                let began = traced.map(|_| SystemTime::now());
                let position = metrics.queued.fetch_add(1, Ordering::AcqRel);
                let queued = Queued(&metrics.queued);
                if position >= queue {
                    return refuse(format!(
                        "function \"{name}\" is at capacity and its queue of {queue} is full; retry later"
                    ));
                }
                let waited = tokio::time::timeout(
                    limits.queue_timeout,
                    ready.permits.clone().acquire_owned(),
                )
                .await;
                drop(queued);
                if let (Some((tracing, traced)), Some(began)) = (traced, began) {
                    traced.phase(tracing, "queue", began, SystemTime::now());
                }
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

        // wasi:http needs an authority; HTTP/1.0 clients may send none.
        if !parts.headers.contains_key(HOST) && parts.uri.authority().is_none() {
            parts
                .headers
                .insert(HOST, HeaderValue::from_static("localhost"));
        }

        let invocation = invocation.unwrap_or_else(|| self.next_invocation_id());
        if let Some((_, traced)) = traced {
            let trigger = crate::trace::trigger_of(&parts.headers);
            traced.set(|| {
                crate::trace::attributes(
                    name,
                    &deployment.namespace,
                    deployment.version,
                    &invocation,
                    trigger,
                )
            });
        }
        let request = Request::from_parts(parts, body);
        let started = Instant::now();
        let called = traced.map(|_| SystemTime::now());
        let cold_start = traced.map(|_| Arc::new(ColdStart::default()));
        let call = Call {
            invocation: invocation.clone(),
            request,
            guard: Box::new(permit),
            cold_start: cold_start.clone(),
        };
        let result = match ready.function.invoke(call).await {
            Ok(response) => deliver(self, response, started, name, &invocation),
            Err(e) => Err(e.to_error(name, &invocation)),
        };
        metrics.record(status_of(&result), started.elapsed());
        if let (Some((tracing, traced)), Some(called)) = (traced, called) {
            let cold = cold_start.as_deref().and_then(ColdStart::get);
            if let Some((began, ended)) = cold {
                traced.phase(tracing, "start", began, ended);
            }
            let ran_from = cold.map_or(called, |(_, ended)| ended);
            traced.phase(tracing, "function", ran_from, SystemTime::now());
            traced.set(|| {
                vec![opentelemetry::KeyValue::new(
                    "faas.coldstart",
                    cold.is_some(),
                )]
            });
        }
        Invoked {
            invocation: Some(invocation),
            result,
        }
    }
}
