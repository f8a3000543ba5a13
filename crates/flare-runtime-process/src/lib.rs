//! Flare's process runtime: Python, Node.js or custom language workers,
//! each in its own sandbox, kept warm in a pool per environment and
//! specialized to a function on its first request (Fission's poolmgr).
//!
//! - [`ProcessRuntime`] holds one pool of generic workers per environment,
//!   refilled in the background, and the worker programs it ships
//!   (`environments/python`, `environments/node`).
//! - [`ProcessRuntime::prepare`] unpacks a function's package once per
//!   digest ([`unpack`]); [`ProcessFunction`] is the function's set of
//!   specialized instances.
//! - [`ProcessRuntime::invoke`] picks the least busy instance with room,
//!   or specializes a pooled worker (a fresh one when the pool is empty)
//!   while the function is below its max scale, and runs the request under
//!   the function's timeout. A worker that dies, hangs or exceeds its
//!   memory is killed and dropped; the next request gets a new one.
//! - Idle instances are destroyed after the function's keep-alive.
//!
//! The walls around each worker are described in [`sandbox`]; the wire
//! protocol in `environments/PROTOCOL.md` and [`protocol`].

mod protocol;
pub mod sandbox;
pub mod unpack;
mod worker;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flare_model::{
    EnvironmentRuntime, EnvironmentSpec, Error, Failure, FunctionSpec, KeepAlive, Limits, Result,
};
use flare_scaling::{AdaptiveKeepAlive, Autoscaler, AutoscalerConfig};
use flare_store::logs::LogSender;
use tokio::sync::Notify;

pub use worker::WorkerError;
use worker::{Worker, WorkerPlan};

/// Processes a worker may run at once (a fork bomb stops here).
pub const PIDS_PER_WORKER: u32 = 64;
/// CPU a worker may use, in cores.
pub const CPUS_PER_WORKER: f64 = 1.0;
/// Keep-alive of an adaptive function until its pattern is learned.
const ADAPTIVE_FALLBACK: Duration = Duration::from_secs(10 * 60);
/// Memory of a generic worker before it is specialized.
const GENERIC_MEMORY: u64 = 256 << 20;

const PYTHON_WORKER: &str = include_str!("../../../environments/python/worker.py");
const NODE_WORKER: &str = include_str!("../../../environments/node/worker.js");

/// Settings of the process runtime.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Scratch space: worker directories, unpacked packages. Every parent
    /// must be searchable by the sandbox user (so not under /root).
    pub work_dir: PathBuf,
    pub python: PathBuf,
    pub node: PathBuf,
    /// Start workers even where cgroups cannot limit their memory and
    /// processes (`flare server --allow-unlimited-workers`).
    pub allow_unlimited: bool,
    /// Where a function's outbound connections may go, beyond its own
    /// `allowedHosts` list.
    pub egress: Arc<flare_egress::EgressPolicy>,
}

impl ProcessConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        ProcessConfig {
            work_dir,
            python: PathBuf::from("/usr/bin/python3"),
            node: PathBuf::from("/usr/bin/node"),
            allow_unlimited: false,
            egress: Arc::default(),
        }
    }
}

/// How a request to a process function failed: the one vocabulary every
/// runtime uses (see [`Failure`]).
pub type ProcessError = Failure;

struct Pool {
    name: String,
    spec: EnvironmentSpec,
    idle: Mutex<VecDeque<Worker>>,
    /// When workers were asked for: the pool grows with recent demand.
    demand: Mutex<VecDeque<Instant>>,
    wake: Notify,
    closed: AtomicBool,
}

/// How far back demand counts towards the pool's size.
const DEMAND_WINDOW: Duration = Duration::from_secs(30);

struct Inner {
    config: ProcessConfig,
    /// The two seccomp filters (see [`sandbox::SandboxCommand::seccomp`]).
    seccomp: [PathBuf; 2],
    logs: LogSender,
    pools: Mutex<HashMap<String, Arc<Pool>>>,
    functions: Mutex<Vec<Weak<ProcessFunction>>>,
    next_worker: AtomicU64,
}

/// The process runtime. One per process; cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

/// One specialized worker of a function.
struct Instance {
    worker: Worker,
    last_used: Mutex<Instant>,
}

#[derive(Default)]
struct Instances {
    live: Vec<Arc<Instance>>,
    starting: u32,
}

/// A deployed process function and its instances.
pub struct ProcessFunction {
    name: Arc<str>,
    environment: String,
    code: PathBuf,
    file: Option<String>,
    entrypoint: Option<String>,
    /// The egress proxy's rules, for a function that may call out.
    egress: Option<Arc<flare_egress::proxy::Rules>>,
    limits: Limits,
    instances: Mutex<Instances>,
    freed: Notify,
    /// Requests of this function in flight, over all instances.
    in_flight: AtomicU32,
    policy: Mutex<Policy>,
    /// Requests that had to specialize a new instance.
    pub cold_starts: AtomicU64,
    /// Instances started (on demand, reserved, pre-warmed) and removed.
    pub scale_ups: AtomicU64,
    pub scale_downs: AtomicU64,
}

/// The scaling state of one function: the autoscaler on its concurrency
/// and, with `keepAlive: adaptive`, its learned idle times.
struct Policy {
    autoscaler: Autoscaler,
    adaptive: Option<AdaptiveKeepAlive>,
    /// When the function last became idle.
    idle_since: Option<Instant>,
    origin: Instant,
}

/// What `flare fn get` shows about a process function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceCounts {
    pub instances: usize,
    pub busy: usize,
    pub starting: u32,
}

fn internal(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {e}"))
}

impl ProcessRuntime {
    /// Writes the worker programs and the seccomp filter into `work_dir`
    /// and clears what a previous run left there.
    pub fn new(config: ProcessConfig, logs: LogSender) -> Result<Self> {
        let dir = &config.work_dir;
        let _ = std::fs::remove_dir_all(dir.join("workers"));
        for sub in [
            "workers",
            "packages",
            "environments/python",
            "environments/node",
        ] {
            std::fs::create_dir_all(dir.join(sub)).map_err(internal("create work dir"))?;
        }
        // Searchable but not listable by other users: the sandbox's user
        // reaches what it is shown, and nothing tells it what else is here.
        for sub in [
            "",
            "workers",
            "packages",
            "environments",
            "environments/python",
            "environments/node",
        ] {
            set_mode(&dir.join(sub), 0o711)?;
        }
        std::fs::write(dir.join("environments/python/worker.py"), PYTHON_WORKER)
            .map_err(internal("write worker"))?;
        std::fs::write(dir.join("environments/node/worker.js"), NODE_WORKER)
            .map_err(internal("write worker"))?;
        for file in [
            "environments/python/worker.py",
            "environments/node/worker.js",
        ] {
            set_mode(&dir.join(file), 0o644)?;
        }
        sandbox::remove_stale_cgroups();
        let seccomp = [dir.join("seccomp.bpf"), dir.join("seccomp-abi.bpf")];
        std::fs::write(&seccomp[0], sandbox::seccomp_program()?)
            .map_err(internal("write seccomp filter"))?;
        std::fs::write(&seccomp[1], sandbox::abi_program())
            .map_err(internal("write seccomp filter"))?;
        let runtime = ProcessRuntime {
            inner: Arc::new(Inner {
                config,
                seccomp,
                logs,
                pools: Mutex::default(),
                functions: Mutex::default(),
                next_worker: AtomicU64::new(1),
            }),
        };
        Ok(runtime)
    }

    /// Starts the keep-alive reaper; call once inside the tokio runtime.
    pub fn start(&self) {
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(inner) = inner.upgrade() else { return };
                let functions: Vec<Arc<ProcessFunction>> = match inner.functions.lock() {
                    Ok(mut list) => {
                        list.retain(|f| f.strong_count() > 0);
                        list.iter().filter_map(Weak::upgrade).collect()
                    }
                    Err(_) => continue,
                };
                let runtime = ProcessRuntime {
                    inner: inner.clone(),
                };
                for function in functions {
                    let (floor, keep_alive) = function.decide();
                    function.reap(floor, keep_alive).await;
                    let have = {
                        let counts = function.counts();
                        counts.instances as u32 + counts.starting
                    };
                    if have < floor {
                        // Scale up or pre-warm in the background.
                        let runtime = runtime.clone();
                        tokio::spawn(async move { runtime.scale_to(&function, floor).await });
                    }
                }
            }
        });
    }

    /// Creates or replaces an environment's pool and starts filling it.
    pub fn set_environment(&self, name: &str, spec: EnvironmentSpec) {
        let pool = Arc::new(Pool {
            name: name.to_string(),
            spec,
            idle: Mutex::default(),
            demand: Mutex::default(),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let old = self
            .inner
            .pools
            .lock()
            .ok()
            .and_then(|mut pools| pools.insert(name.to_string(), pool.clone()));
        if let Some(old) = old {
            old.close();
        }
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.fill(pool).await });
    }

    pub fn remove_environment(&self, name: &str) {
        let old = self
            .inner
            .pools
            .lock()
            .ok()
            .and_then(|mut pools| pools.remove(name));
        if let Some(old) = old {
            old.close();
        }
    }

    /// Generic workers waiting in an environment's pool.
    pub fn idle_workers(&self, environment: &str) -> Option<usize> {
        let pool = self.inner.pool(environment)?;
        pool.idle.lock().ok().map(|idle| idle.len())
    }

    /// Unpacks the package (once per digest and environment) and returns
    /// the function, with no instance yet. Blocking: call off the async
    /// threads.
    pub fn prepare(
        &self,
        name: &str,
        spec: &FunctionSpec,
        package: &Path,
    ) -> Result<Arc<ProcessFunction>> {
        let environment = spec
            .environment
            .clone()
            .ok_or_else(|| Error::invalid("a process function needs an environment"))?;
        let pool = self.inner.pool(&environment).ok_or_else(|| {
            Error::invalid(format!("environment \"{environment}\" does not exist"))
        })?;
        let file_name = source_file_name(pool.spec.runtime);
        let (code, file) = self.unpacked(spec.package.hex(), file_name, package)?;
        let function = Arc::new(ProcessFunction {
            name: name.into(),
            environment,
            code,
            file,
            entrypoint: spec.entrypoint.clone(),
            egress: (spec.network || !spec.allowed_hosts.is_empty()).then(|| {
                Arc::new(flare_egress::proxy::Rules {
                    policy: self.inner.config.egress.clone(),
                    allowed_hosts: spec.allowed_hosts.iter().cloned().collect(),
                })
            }),
            limits: spec.limits,
            instances: Mutex::default(),
            freed: Notify::new(),
            in_flight: AtomicU32::new(0),
            policy: Mutex::new(Policy {
                autoscaler: Autoscaler::new(AutoscalerConfig::new(
                    spec.limits.instance_concurrency,
                    spec.limits.min_scale,
                    spec.limits.max_scale,
                )),
                adaptive: matches!(spec.limits.keep_alive, KeepAlive::Adaptive)
                    .then(|| AdaptiveKeepAlive::new(ADAPTIVE_FALLBACK)),
                idle_since: None,
                origin: Instant::now(),
            }),
            cold_starts: AtomicU64::new(0),
            scale_ups: AtomicU64::new(0),
            scale_downs: AtomicU64::new(0),
        });
        if let Ok(mut list) = self.inner.functions.lock() {
            list.push(Arc::downgrade(&function));
        }
        Ok(function)
    }

    /// Checks that a package unpacks within the limits (zip bombs, links,
    /// traversal) for an environment, keeping the result for `prepare`.
    pub fn check_package(&self, environment: &str, digest_hex: &str, package: &Path) -> Result<()> {
        let pool = self.inner.pool(environment).ok_or_else(|| {
            Error::invalid(format!("environment \"{environment}\" does not exist"))
        })?;
        let file_name = source_file_name(pool.spec.runtime);
        self.unpacked(digest_hex, file_name, package).map(|_| ())
    }

    fn unpacked(
        &self,
        hex: &str,
        file_name: &str,
        package: &Path,
    ) -> Result<(PathBuf, Option<String>)> {
        let dir = self
            .inner
            .config
            .work_dir
            .join("packages")
            .join(format!("{hex}-{file_name}"));
        let marker = dir.with_extension("file");
        if dir.is_dir() {
            let file = std::fs::read_to_string(&marker)
                .ok()
                .filter(|f| !f.is_empty());
            return Ok((dir, file));
        }
        let bytes = std::fs::read(package).map_err(internal("read package"))?;
        let tmp = dir.with_extension(format!(
            "tmp{}",
            self.inner.next_worker.fetch_add(1, Ordering::Relaxed)
        ));
        let unpacked = unpack::unpack(&bytes, &tmp, file_name, unpack::UnpackLimits::default())?;
        let file = match unpacked {
            unpack::Unpacked::File(name) => Some(name),
            unpack::Unpacked::Archive => None,
        };
        std::fs::write(&marker, file.as_deref().unwrap_or("")).map_err(internal("write marker"))?;
        if std::fs::rename(&tmp, &dir).is_err() {
            // Someone else unpacked the same digest first.
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Ok((dir, file))
    }

    /// Runs one request on an instance of `function`.
    ///
    /// The attempt runs as its own task: a caller that goes away does not
    /// cut it short, because the worker is already working on the request.
    /// Its capacity (and `guard`, the caller's permit) stays taken until
    /// the worker answers or the timeout kills it; every count is given
    /// back by a guard however the attempt ends.
    pub async fn invoke(
        &self,
        function: &Arc<ProcessFunction>,
        invocation: Arc<str>,
        request: http::Request<Bytes>,
        guard: Box<dyn Send>,
    ) -> std::result::Result<http::Response<Bytes>, Failure> {
        let (runtime, function) = (self.clone(), function.clone());
        let attempt = tokio::spawn(async move {
            let result = runtime.attempt(&function, &invocation, request).await;
            drop(guard);
            result
        });
        attempt
            .await
            .unwrap_or_else(|e| Err(Failure::Crashed(format!("invocation task failed: {e}"))))
    }

    async fn attempt(
        &self,
        function: &Arc<ProcessFunction>,
        invocation: &Arc<str>,
        request: http::Request<Bytes>,
    ) -> std::result::Result<http::Response<Bytes>, Failure> {
        let limits = function.limits;
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let _active = Active::begin(function);
        let timed_out = || Failure::Timeout(limits.timeout);
        let lease = match tokio::time::timeout_at(deadline, self.instance_for(function)).await {
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
    async fn instance_for(
        &self,
        function: &Arc<ProcessFunction>,
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
                let start = tokio::spawn(async move { runtime.finish_start(slot).await });
                return start
                    .await
                    .unwrap_or_else(|e| Err(Failure::Start(format!("start task failed: {e}"))));
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
                .start_worker(&pool, function.egress.clone())
                .await
                .map_err(|e| Failure::Start(e.to_string()))?,
        };
        link_tree(&function.code, &worker.code_dir()).map_err(|e| Failure::Start(e.message))?;
        let memory = u64::from(function.limits.memory_mb) << 20;
        match worker
            .specialize(
                function.name.clone(),
                function.file.as_deref(),
                function.entrypoint.as_deref(),
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

/// A request of `function` in flight, for its scaling policy: from the
/// moment it asks for an instance until it ends, however it ends.
struct Active<'a>(&'a ProcessFunction);

impl<'a> Active<'a> {
    fn begin(function: &'a ProcessFunction) -> Self {
        function.begin();
        Active(function)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.end();
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
    fn reserve(function: &Arc<ProcessFunction>, state: &mut Instances) -> Self {
        state.starting += 1;
        StartSlot {
            function: function.clone(),
            held: true,
        }
    }

    /// Gives the place back under a lock the caller already holds.
    fn release(mut self, state: &mut Instances) {
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

impl Inner {
    fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.lock().ok()?.get(name).cloned()
    }

    async fn start_worker(
        &self,
        pool: &Pool,
        egress: Option<Arc<flare_egress::proxy::Rules>>,
    ) -> std::result::Result<Worker, WorkerError> {
        // The pid keeps cgroup names apart between servers on one machine.
        let id = format!(
            "{}-w{}",
            std::process::id(),
            self.next_worker.fetch_add(1, Ordering::Relaxed)
        );
        let work = &self.config.work_dir;
        let (argv, ro_binds) = match pool.spec.runtime {
            EnvironmentRuntime::Python => (
                vec![
                    self.config.python.to_string_lossy().into_owned(),
                    "-I".into(),
                    "/env/worker.py".into(),
                ],
                vec![],
            ),
            EnvironmentRuntime::Node => (
                vec![
                    self.config.node.to_string_lossy().into_owned(),
                    "/env/worker.js".into(),
                ],
                vec![],
            ),
            EnvironmentRuntime::Custom => (
                pool.spec.command.clone(),
                pool.spec
                    .command
                    .first()
                    .map(PathBuf::from)
                    .into_iter()
                    .collect(),
            ),
        };
        let env_dir = match pool.spec.runtime {
            EnvironmentRuntime::Node => work.join("environments/node"),
            _ => work.join("environments/python"),
        };
        let mut binds = ro_binds;
        for interpreter in [&self.config.python, &self.config.node] {
            if !interpreter.starts_with("/usr") {
                binds.push(interpreter.clone());
            }
        }
        Worker::start(WorkerPlan {
            id: id.clone(),
            dir: work.join("workers").join(&id),
            seccomp: [&self.seccomp[0], &self.seccomp[1]],
            ro_binds: binds,
            argv,
            egress,
            logs: self.logs.clone(),
            memory_bytes: GENERIC_MEMORY,
            pids: PIDS_PER_WORKER,
            cpus: CPUS_PER_WORKER,
            env_dir: Some(env_dir),
            allow_unlimited: self.config.allow_unlimited,
        })
        .await
    }

    /// Keeps `poolsize` generic workers ready until the pool is closed.
    async fn fill(self: Arc<Self>, pool: Arc<Pool>) {
        let mut failures = 0u32;
        while !pool.closed.load(Ordering::Acquire) {
            let have = pool.idle.lock().map(|idle| idle.len()).unwrap_or(0);
            let target = pool.target();
            if have > target {
                // Demand has passed: let the extra workers go.
                let extra = pool.idle.lock().ok().and_then(|mut idle| idle.pop_back());
                drop(extra);
                continue;
            }
            if have == target {
                // Woken by a take, or every few seconds to follow demand down.
                let _ = tokio::time::timeout(Duration::from_secs(5), pool.wake.notified()).await;
                continue;
            }
            match self.start_worker(&pool, None).await {
                Ok(worker) => {
                    failures = 0;
                    if pool.closed.load(Ordering::Acquire) {
                        return;
                    }
                    if let Ok(mut idle) = pool.idle.lock() {
                        idle.push_back(worker);
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!("environment \"{}\": {e}", pool.name);
                    // Back off so a broken environment does not spin.
                    let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

impl Pool {
    /// Generic workers to keep: the configured size, or as many as were
    /// asked for in the last [`DEMAND_WINDOW`] when that is more (bounded).
    /// A pool of size 0 stays empty.
    fn target(&self) -> usize {
        let size = self.spec.poolsize as usize;
        if size == 0 {
            return 0;
        }
        let recent = self
            .demand
            .lock()
            .map(|mut demand| {
                while demand.front().is_some_and(|t| t.elapsed() > DEMAND_WINDOW) {
                    demand.pop_front();
                }
                demand.len()
            })
            .unwrap_or(0);
        size.max(recent).min(EnvironmentSpec::MAX_POOLSIZE as usize)
    }

    fn take(&self) -> Option<Worker> {
        if let Ok(mut demand) = self.demand.lock() {
            demand.push_back(Instant::now());
        }
        self.wake.notify_one();
        let worker = loop {
            let worker = self.idle.lock().ok()?.pop_front()?;
            if !worker.is_dead() {
                break worker;
            }
        };
        Some(worker)
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        self.wake.notify_one();
    }
}

impl ProcessFunction {
    pub fn counts(&self) -> InstanceCounts {
        match self.instances.lock() {
            Ok(state) => InstanceCounts {
                instances: state.live.len(),
                busy: state
                    .live
                    .iter()
                    .filter(|i| i.worker.in_flight.load(Ordering::Acquire) > 0)
                    .count(),
                starting: state.starting,
            },
            Err(_) => InstanceCounts::default(),
        }
    }

    fn drop_instance(&self, gone: &Arc<Instance>) {
        if let Ok(mut state) = self.instances.lock() {
            state.live.retain(|i| !Arc::ptr_eq(i, gone));
        }
    }

    fn begin(&self) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0
            && let Ok(mut policy) = self.policy.lock()
        {
            let idle = policy.idle_since.take().map(|t| t.elapsed());
            if let (Some(adaptive), Some(idle)) = (policy.adaptive.as_mut(), idle) {
                adaptive.record(idle);
            }
        }
    }

    fn end(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut policy) = self.policy.lock()
        {
            policy.idle_since = Some(Instant::now());
        }
    }

    /// One scaling decision: how many instances to keep, from the
    /// autoscaler, the reserved minimum and (adaptive keep-alive) the
    /// learned pre-warm window; and which idle instances may go.
    fn decide(&self) -> (u32, Duration) {
        let Ok(mut policy) = self.policy.lock() else {
            return (self.limits.min_scale, Duration::MAX);
        };
        let live = self.counts().instances as u32;
        let now = policy.origin.elapsed();
        let concurrency = f64::from(self.in_flight.load(Ordering::Acquire));
        policy.autoscaler.record(now, concurrency);
        let mut floor = policy
            .autoscaler
            .desired(now, live)
            .max(self.limits.min_scale);
        let idle_since = policy.idle_since;
        let keep_alive = match (&mut policy.adaptive, self.limits.keep_alive) {
            (Some(adaptive), _) => {
                let windows = adaptive.windows();
                // Unloaded during the pre-warm window, one instance loaded
                // for the keep-alive window after it.
                if let Some(idle) = idle_since.map(|t| t.elapsed())
                    && windows.is_warm(idle)
                    && windows.keep_alive > Duration::ZERO
                {
                    floor = floor.max(1);
                }
                Duration::ZERO
            }
            (None, KeepAlive::Fixed(keep_alive)) => keep_alive,
            (None, KeepAlive::Adaptive) => ADAPTIVE_FALLBACK,
        };
        (floor, keep_alive)
    }

    /// Removes idle instances beyond `floor` that have idled `keep_alive`.
    async fn reap(&self, floor: u32, keep_alive: Duration) {
        let expired: Vec<Arc<Instance>> = match self.instances.lock() {
            Ok(mut state) => {
                let mut excess = (state.live.len() as u32).saturating_sub(floor) as usize;
                let mut expired = Vec::new();
                state.live.retain(|i| {
                    let idle = i.worker.in_flight.load(Ordering::Acquire) == 0
                        && i.last_used
                            .lock()
                            .map(|t| t.elapsed() >= keep_alive)
                            .unwrap_or(false);
                    if excess > 0 && idle {
                        excess -= 1;
                        expired.push(i.clone());
                        false
                    } else {
                        true
                    }
                });
                expired
            }
            Err(_) => return,
        };
        for instance in expired {
            tracing::debug!(
                "function {}: instance {} removed (idle past keep-alive)",
                self.name,
                instance.worker.id()
            );
            self.scale_downs.fetch_add(1, Ordering::Relaxed);
            instance.worker.kill().await;
        }
    }
}

/// The name a single-file package gets in `/code`.
fn source_file_name(runtime: EnvironmentRuntime) -> &'static str {
    match runtime {
        EnvironmentRuntime::Python => "main.py",
        EnvironmentRuntime::Node => "index.js",
        EnvironmentRuntime::Custom => "function",
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(internal("chmod"))
}

/// Hard-links (or copies) a tree of files into `to`.
fn link_tree(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).map_err(internal("read package dir"))? {
        let entry = entry.map_err(internal("read package dir"))?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).map_err(internal("create dir"))?;
            set_mode(&target, 0o755)?;
            link_tree(&entry.path(), &target)?;
        } else if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).map_err(internal("copy code"))?;
        }
    }
    Ok(())
}
