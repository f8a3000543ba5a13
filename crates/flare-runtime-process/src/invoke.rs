//! The request path: an instance with room (or a new one), the call under
//! the function's timeout, and the guards that give every count back.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flare_model::Failure;

use crate::ProcessRuntime;
use crate::function::{Active, Instance, InstanceList, ProcessFunction};
use crate::packages::link_tree;
use crate::worker::{Worker, WorkerError};

impl ProcessRuntime {
    /// Runs one request on an instance of `function`.
    ///
    /// A caller that goes away does not cut the attempt short, because the
    /// worker is already working on the request: the attempt then finishes
    /// on a task of its own ([`Detached`]). Its capacity (and `guard`, the
    /// caller's permit) stays taken until the worker answers or the timeout
    /// kills it; every count is given back by a guard however it ends.
    pub async fn invoke(
        &self,
        function: &Arc<ProcessFunction>,
        invocation: Arc<str>,
        request: http::Request<Bytes>,
        guard: Box<dyn Send>,
        cold_start: Option<Arc<flare_runtime::ColdStart>>,
    ) -> std::result::Result<http::Response<Bytes>, Failure> {
        let (runtime, function) = (self.clone(), function.clone());
        Detached::new(async move {
            let result = runtime
                .attempt(&function, &invocation, request, cold_start.as_deref())
                .await;
            drop(guard);
            result
        })
        .await
    }

    async fn attempt(
        &self,
        function: &Arc<ProcessFunction>,
        invocation: &Arc<str>,
        request: http::Request<Bytes>,
        cold_start: Option<&flare_runtime::ColdStart>,
    ) -> std::result::Result<http::Response<Bytes>, Failure> {
        let limits = function.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let _active = Active::begin(function);
        let timed_out = || Failure::Timeout(limits.timeout);
        let lease = match tokio::time::timeout_at(deadline, self.instance_for(function, cold_start))
            .await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(e)) => {
                // The caller sees a generic message; the reason is the
                // owner's, in the function's log.
                self.inner.logs.send(flare_model::LogRecord {
                    ts_us: flare_model::now_us(),
                    function: function.name.to_string(),
                    invocation: invocation.to_string(),
                    stream: flare_model::LogStream::System,
                    line: e.to_string(),
                });
                return Err(e);
            }
            Err(_) => return Err(timed_out()),
        };
        let instance = &lease.instance;
        let result =
            tokio::time::timeout_at(deadline, instance.worker.invoke(invocation, &request)).await;
        let outcome = match result {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(match e {
                WorkerError::Function(message) => Failure::Raised(message),
                WorkerError::BadResponse(why) => Failure::BadResponse(why),
                WorkerError::OutOfMemory => Failure::OutOfMemory(limits.memory_mb),
                WorkerError::Protocol(why) => Failure::Protocol(why),
                WorkerError::Signal(signal) => Failure::Signal(signal),
                WorkerError::Status(code) => Failure::Exited(code),
                WorkerError::Exited(why) => Failure::Crashed(why),
                WorkerError::Start(why) => Failure::Start(why),
            }),
            Err(_) => Err(timed_out()),
        };
        // One `system` line in the function's log says why, whatever the
        // caller was told.
        if let Err(e) = &outcome {
            instance.worker.log_lines(
                invocation,
                vec![(flare_model::LogStream::System, e.to_string())],
            );
        }
        if matches!(
            &outcome,
            Err(e) if !matches!(e, Failure::Raised(_) | Failure::BadResponse(_))
        ) {
            // Dead or hung: never reuse it.
            instance.worker.kill().await;
            function.drop_instance(instance);
        }
        outcome
    }

    /// An instance with room for one more request: the least busy live
    /// one, or a new one while below max scale; otherwise waits for room,
    /// at most the function's queue timeout (then [`Failure::Busy`], a 503).
    /// A start made for it is noted in `cold_start`.
    async fn instance_for(
        &self,
        function: &Arc<ProcessFunction>,
        cold_start: Option<&flare_runtime::ColdStart>,
    ) -> std::result::Result<Lease, Failure> {
        let per_instance = function.limits.instance_concurrency;
        let queue_timeout = function.limits.queue_timeout;
        let wait_until = tokio::time::Instant::now() + queue_timeout;
        loop {
            let freed = function.freed.notified();
            let slot = {
                let Ok(mut state) = function.instances.lock() else {
                    return Err(Failure::Start("instance list poisoned".into()));
                };
                state.live.retain(|i| !i.worker.is_dead());
                let best = state
                    .live
                    .iter()
                    .filter(|i| i.worker.in_flight.load(Ordering::Acquire) < per_instance)
                    .min_by_key(|i| i.worker.in_flight.load(Ordering::Acquire))
                    .cloned();
                if let Some(instance) = best {
                    return Ok(Lease::new(function, instance));
                }
                if (state.live.len() as u32 + state.starting) < function.limits.max_scale {
                    Some(StartSlot::reserve(function, &mut state))
                } else {
                    None
                }
            };
            if let Some(slot) = slot {
                function.cold_starts.fetch_add(1, Ordering::Relaxed);
                // The start runs to its end even if this request is cut
                // short (its caller gone, its deadline passed): the instance
                // then serves the next request instead of being thrown
                // away, and the lease it comes with is dropped, unused.
                let runtime = self.clone();
                let began = std::time::SystemTime::now();
                let start = tokio::spawn(async move { runtime.finish_start(slot).await });
                let started = start
                    .await
                    .unwrap_or_else(|e| Err(Failure::Start(format!("start task failed: {e}"))));
                if let Some(cold_start) = cold_start {
                    cold_start.record(began, std::time::SystemTime::now());
                }
                return started;
            }
            if tokio::time::timeout_at(wait_until, freed).await.is_err() {
                return Err(Failure::Busy(format!(
                    "every instance stayed busy for the queue timeout of {}",
                    humantime::format_duration(queue_timeout)
                )));
            }
        }
    }

    /// Specializes an instance for a reserved slot and adds it to the
    /// function's live instances, leased to the caller in the same step (so
    /// no other request takes its room first). A start that fails or is
    /// dropped gives the slot back.
    async fn finish_start(&self, slot: StartSlot) -> std::result::Result<Lease, Failure> {
        let function = slot.function.clone();
        let started = self.specialize(&function).await;
        let Ok(mut state) = function.instances.lock() else {
            return Err(Failure::Start("instance list poisoned".into()));
        };
        slot.release(&mut state);
        let instance = Arc::new(Instance {
            worker: started?,
            last_used: Mutex::new(Instant::now()),
        });
        state.live.push(instance.clone());
        let lease = Lease::new(&function, instance);
        function.scale_ups.fetch_add(1, Ordering::Relaxed);
        drop(state);
        // With room for more than one request, the new instance can take
        // some of those waiting too.
        if function.limits.instance_concurrency > 1 {
            function.freed.notify_waiters();
        }
        Ok(lease)
    }

    /// Starts instances until `function` has `target` (live + starting),
    /// within its max scale. Waits for them.
    pub async fn scale_to(&self, function: &Arc<ProcessFunction>, target: u32) {
        let wanted = {
            let Ok(mut state) = function.instances.lock() else {
                return;
            };
            state.live.retain(|i| !i.worker.is_dead());
            let have = state.live.len() as u32 + state.starting;
            let wanted = target.min(function.limits.max_scale).saturating_sub(have);
            (0..wanted)
                .map(|_| StartSlot::reserve(function, &mut state))
                .collect::<Vec<_>>()
        };
        // Start them side by side: each waits on its own sandbox.
        let starts: Vec<_> = wanted
            .into_iter()
            .map(|slot| {
                let runtime = self.clone();
                tokio::spawn(async move { runtime.finish_start(slot).await })
            })
            .collect();
        for start in starts {
            match start.await {
                // Started for later requests: the lease is given back.
                Ok(Ok(lease)) => drop(lease),
                Ok(Err(e)) => {
                    tracing::warn!("function {}: cannot start an instance: {e}", function.name)
                }
                Err(e) => tracing::warn!("function {}: start task failed: {e}", function.name),
            }
        }
    }

    /// Starts the function's reserved instances (`minScale`).
    pub async fn reserve(&self, function: &Arc<ProcessFunction>) {
        self.scale_to(function, function.limits.min_scale).await;
    }

    /// Takes a generic worker (or starts one) and makes it `function`'s.
    async fn specialize(
        &self,
        function: &Arc<ProcessFunction>,
    ) -> std::result::Result<Worker, Failure> {
        let pool = self.inner.pool(&function.environment).ok_or_else(|| {
            Failure::Start(format!(
                "environment \"{}\" does not exist",
                function.environment
            ))
        })?;
        // Pooled workers have no way out; one that may call out starts
        // with its proxy.
        let pooled = match function.egress {
            Some(_) => None,
            None => pool.take(),
        };
        let worker = match pooled {
            Some(worker) => worker,
            None => self
                .inner
                .start_worker(&pool, function.egress.clone(), false)
                .await
                .map_err(|e| Failure::Start(e.to_string()))?,
        };
        // Linking the code in is disk work: off the async threads.
        let (from, to) = (function.code.dir.clone(), worker.code_dir());
        let linked = tokio::task::spawn_blocking(move || link_tree(&from, &to))
            .await
            .map_err(|e| Failure::Start(format!("link task failed: {e}")))
            .and_then(|linked| linked.map_err(|e| Failure::Start(e.message)));
        if let Err(e) = linked {
            worker.kill().await;
            return Err(e);
        }
        let memory = u64::from(function.limits.memory_mb) << 20;
        match worker
            .specialize(
                function.name.clone(),
                crate::worker::Specialization {
                    file: function.code.file.as_deref(),
                    entrypoint: function.entrypoint.as_deref(),
                    env: &function.env,
                    files: &function.files,
                },
                memory,
                Duration::from_secs(30),
            )
            .await
        {
            Ok(()) => Ok(worker),
            Err(e) => {
                worker.kill().await;
                Err(Failure::Start(e.to_string()))
            }
        }
    }
}

/// One request's claim on an instance: counted in its `in_flight` while the
/// lease lives; dropping it gives the room back and wakes a waiter.
struct Lease {
    function: Arc<ProcessFunction>,
    instance: Arc<Instance>,
}

impl Lease {
    fn new(function: &Arc<ProcessFunction>, instance: Arc<Instance>) -> Self {
        instance.worker.in_flight.fetch_add(1, Ordering::AcqRel);
        Lease {
            function: function.clone(),
            instance,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.instance
            .worker
            .in_flight
            .fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut last) = self.instance.last_used.lock() {
            *last = Instant::now();
        }
        self.function.freed.notify_waiters();
    }
}

/// A place reserved for an instance being started, counted in the
/// function's `starting` until it is released (the instance joined or its
/// start failed) or dropped (the start was cut short).
struct StartSlot {
    function: Arc<ProcessFunction>,
    held: bool,
}

impl StartSlot {
    fn reserve(function: &Arc<ProcessFunction>, state: &mut InstanceList) -> Self {
        state.starting += 1;
        StartSlot {
            function: function.clone(),
            held: true,
        }
    }

    /// Gives the place back under a lock the caller already holds.
    fn release(mut self, state: &mut InstanceList) {
        state.starting -= 1;
        self.held = false;
    }
}

impl Drop for StartSlot {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        if let Ok(mut state) = self.function.instances.lock() {
            state.starting -= 1;
        }
        self.function.freed.notify_waiters();
    }
}

/// A future its caller runs in place that, if the caller drops it before
/// it is done, finishes on a task of its own: the same guarantee as
/// spawning every attempt, without a task and a wake-up across threads
/// for each request.
struct Detached<F: Future<Output: Send> + Send + 'static>(Option<std::pin::Pin<Box<F>>>);

impl<F: Future<Output: Send> + Send + 'static> Detached<F> {
    fn new(future: F) -> Self {
        Detached(Some(Box::pin(future)))
    }
}

impl<F: Future<Output: Send> + Send + 'static> Future for Detached<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let Some(future) = self.0.as_mut() else {
            return std::task::Poll::Pending;
        };
        let output = std::task::ready!(future.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(output)
    }
}

impl<F: Future<Output: Send> + Send + 'static> Drop for Detached<F> {
    fn drop(&mut self) {
        if let Some(future) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(future);
        }
    }
}
