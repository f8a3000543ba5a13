//! One request in one fresh instance.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flare_model::{Limits, LogStream};
use flare_store::logs::LogSender;
use http_body_util::{BodyExt, Full};
use tokio::sync::oneshot;
use wasmtime::{Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpView};

use crate::capture::Capture;
use crate::host::{Host, OutboundPolicy};
use crate::{Prepared, WasmRuntime};

/// The body of a function's response, streamed while the guest writes it.
pub type ResponseBody = wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// A response body holding `bytes`, for answers Flare writes itself.
pub fn full_body(bytes: Bytes) -> ResponseBody {
    Full::new(bytes)
        .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} })
        .boxed_unsync()
}

/// Everything one invocation needs.
pub struct Call {
    pub function: Arc<str>,
    pub invocation: Arc<str>,
    /// The request, its body already read within the function's limit.
    pub request: http::Request<Bytes>,
    pub limits: Limits,
    pub env: Arc<[(String, String)]>,
    pub allowed_hosts: Arc<[String]>,
    pub logs: LogSender,
    /// Held until the guest has finished, response body included: the
    /// caller's concurrency permit.
    pub guard: Option<Box<dyn Send>>,
}

/// How an invocation failed before it produced a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    #[error("function did not finish within its timeout of {0}")]
    Timeout(String),
    #[error("function exceeded its memory limit of {0} MiB")]
    OutOfMemory(u32),
    #[error("function trapped: {0}")]
    Trap(String),
    #[error("function returned without sending a response")]
    NoResponse,
    #[error("function failed: {0}")]
    Guest(String),
    #[error("cannot start the function: {0}")]
    Instantiate(String),
    /// The instance pool had no room for as long as the call could wait.
    #[error("{0}")]
    Busy(String),
}

fn classify(error: &wasmtime::Error, limits: &Limits) -> InvokeError {
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return InvokeError::Timeout(humantime::format_duration(limits.timeout).to_string());
    }
    if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        // The slot permits count component instances; a component with
        // more core instances or memories than the pool's average can
        // still run out of those. Still a moment's wait, so 503.
        return InvokeError::Busy(format!("the instance pool is full: {full}"));
    }
    let message = format!("{error:#}");
    if message.contains("forcing trap when growing memory") {
        return InvokeError::OutOfMemory(limits.memory_mb);
    }
    InvokeError::Trap(message)
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
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, InvokeError> {
        let Some(slots) = &self.slots else {
            return Ok(None);
        };
        if let Ok(permit) = slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        match tokio::time::timeout(limits.queue_timeout, slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Some(permit)),
            _ => Err(InvokeError::Busy(format!(
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
    ) -> Result<http::Response<ResponseBody>, InvokeError> {
        let started = Instant::now();
        let deadline = started + call.limits.timeout;
        let capture = Capture::new(
            call.function.clone(),
            call.invocation.clone(),
            call.logs.clone(),
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
        let (request, out) =
            resources.map_err(|e: wasmtime::Error| InvokeError::Instantiate(format!("{e:#}")))?;

        let pre = prepared.pre.clone();
        let task_capture = capture.clone();
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
                Err(_) => Err(InvokeError::Timeout(
                    humantime::format_duration(limits.timeout).to_string(),
                )),
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
            result
        });

        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(InvokeError::Guest(describe(&code))),
            // The guest dropped the response outparam: it trapped, timed out
            // or returned without answering. The task says which.
            Err(_) => match task.await {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => {
                    capture.system(InvokeError::NoResponse.to_string());
                    Err(InvokeError::NoResponse)
                }
                Err(join) => Err(InvokeError::Trap(format!("invocation task failed: {join}"))),
            },
        }
    }
}

fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}
