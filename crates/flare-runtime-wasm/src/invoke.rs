//! One request in one fresh instance.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flare_model::{Failure, Limits, LogStream};
use flare_runtime::ResponseBody;
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::capture::Capture;
use crate::host::{Host, OutboundPolicy};
use crate::{Prepared, WasmRuntime};

/// The body the guest writes, as wasmtime-wasi-http hands it over.
type GuestBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// Everything one invocation needs.
pub struct Call {
    pub function: Arc<str>,
    pub invocation: Arc<str>,
    /// The request, its body already read within the function's limit.
    pub request: http::Request<Bytes>,
    pub limits: Limits,
    pub env: Arc<[(String, String)]>,
    /// What `wasi:config/store` answers (its configs' and secrets' keys).
    pub config: Arc<wasmtime_wasi_config::WasiConfigVariables>,
    pub allowed_hosts: Arc<[String]>,
    /// Held until the guest has finished, response body included: the
    /// caller's concurrency permit.
    pub guard: Option<Box<dyn Send>>,
}

/// How an invocation failed before it produced a response: the one
/// vocabulary every runtime uses (see [`Failure`]).
pub type InvokeError = Failure;

fn classify(error: &wasmtime::Error, limits: &Limits) -> Failure {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return Failure::Timeout(limits.timeout);
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        // The slot permits count component instances; a component with
        // more core instances or memories than the pool's average can
        // still run out of those. Still a moment's wait, so 503.
        return Failure::Busy(format!("the instance pool is full: {full}"));
    }
    let message = format!("{error:#}");
    if message.contains("forcing trap when growing memory") {
        return Failure::OutOfMemory(limits.memory_mb);
    }
    Failure::Trap(message)
}

impl WasmRuntime {
    fn new_store(&self, call: &Call, capture: &Arc<Capture>, deadline: Instant) -> Store<Host> {
        let mut wasi = WasiCtx::builder();
        wasi.envs(&call.env)
            .stdout(capture.stream(LogStream::Stdout))
            .stderr(capture.stream(LogStream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let host = Host {
            table: wasmtime::component::ResourceTable::new(),
            wasi: wasi.build(),
            config: call.config.clone(),
            http: WasiHttpCtx::new(),
            hooks: OutboundPolicy {
                allowed_hosts: call.allowed_hosts.clone(),
                egress: self.egress.clone(),
            },
            limits: StoreLimitsBuilder::new()
                .memory_size(call.limits.memory_bytes())
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|host| &mut host.limits);
        // Checked every epoch tick: past the deadline the guest traps;
        // before it, the guest yields so a spinning function cannot hold a
        // worker thread that other requests need.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // tokio's own yield puts the task at the back of the run
                // queue; a plain self-wake would run it again at once.
                Ok(UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store
    }

    /// A pool slot for one instance: at once if one is free, else after
    /// waiting at most the function's queue timeout. Dropped (with the
    /// store) however the invocation ends.
    async fn slot(
        &self,
        limits: &Limits,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Failure> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        match tokio::time::timeout(limits.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(Failure::Busy(format!(
                "no free instance slot within the queue timeout of {}",
                humantime::format_duration(limits.queue_timeout)
            ))),
        }
    }

    /// Runs `call` in a fresh instance of `prepared`. Returns once the guest
    /// has sent its response head; the body streams on while the guest
    /// writes it, still under the timeout.
    pub async fn invoke(
        &self,
        prepared: &Prepared,
        call: Call,
    ) -> Result<http::Response<ResponseBody>, Failure> {
        let started = Instant::now();
        let deadline = started + call.limits.timeout;
        let capture = Capture::new(
            call.function.clone(),
            call.invocation.clone(),
            self.logs.clone(),
        );
        let slot = match self.slot(&call.limits).await {
            Ok(slot) => slot,
            Err(e) => {
                capture.system(e.to_string());
                return Err(e);
            }
        };
        let mut store = self.new_store(&call, &capture, deadline);
        let Call {
            request,
            limits,
            guard,
            ..
        } = call;

        let (sender, receiver) = oneshot::channel();
        let request = request.map(|body| {
            Full::new(body)
                .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} })
        });
        let resources = (|| -> wasmtime::Result<_> {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(Scheme::Http, request)?;
            let out = http.new_response_outparam(sender)?;
            Ok((request, out))
        })();
        let (request, out) = match resources {
            Ok(resources) => resources,
            Err(e) => {
                let failure = Failure::Start(format!("{e:#}"));
                capture.system(failure.to_string());
                return Err(failure);
            }
        };

        let pre = prepared.pre.clone();
        let task_capture = capture.clone();
        let (freed, on_freed) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            };
            let result = match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(classify(&e, &limits)),
                Err(_) => Err(Failure::Timeout(limits.timeout)),
            };
            task_capture.finish();
            if let Err(e) = &result {
                task_capture.system(e.to_string());
            }
            // The slot goes back only once the store (and so the pool's
            // instance) is gone; then the caller's permit.
            drop(store);
            drop(slot);
            drop(guard);
            drop(freed);
            result
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response.map(|body| {
                Freeing {
                    body,
                    freed: Some(on_freed),
                }
                .boxed_unsync()
            })),
            Ok(Err(code)) => {
                let failure = Failure::Raised(describe(&code));
                capture.system(failure.to_string());
                Err(failure)
            }
            // The guest dropped the response outparam: it trapped, timed out
            // or returned without answering. The task says which.
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => {
                    capture.system(Failure::NoResponse.to_string());
                    Err(Failure::NoResponse)
                }
                Err(join) => {
                    let failure = Failure::Trap(format!("invocation task failed: {join}"));
                    capture.system(failure.to_string());
                    Err(failure)
                }
            },
        }
    }
}

/// A response body that ends only once the instance behind it is gone and
/// its pool slot and the caller's permit are given back: a caller that has
/// the whole answer and sends its next request at once finds them free.
struct Freeing {
    body: GuestBody,
    /// Closed by the invocation task after it dropped the store.
    freed: Option<oneshot::Receiver<()>>,
}

impl http_body::Body for Freeing {
    type Data = Bytes;
    type Error = flare_runtime::BodyError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(freed) = &mut this.freed {
            match std::pin::Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(None) => {}
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(flare_runtime::BodyError::new(e))));
                }
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Some(Ok(frame))),
                Poll::Pending => return Poll::Pending,
            }
            // The guest has finished the body; wait for its teardown (the
            // task ends within the timeout however the guest behaves).
            if std::pin::Pin::new(freed).poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.freed = None;
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.freed.is_none()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}
