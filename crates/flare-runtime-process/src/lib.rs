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
//! - A Python environment at the `namespace` level keeps a zygote
//!   (`environments/python/zygote.py`): an interpreter with the worker and
//!   common modules imported, from which workers are forked, each into
//!   namespaces and a cgroup of its own, instead of started; a pool miss
//!   costs a fork. Other runtimes and levels start workers whole (Node.js
//!   cannot fork a running V8; gVisor's sandboxes are their own).
//! - Each isolation level is a backend ([`sandbox::Walls`]) behind the same
//!   pool, specialization, limits and logs.
//!
//! The walls around each worker are described in [`sandbox`]; the wire
//! protocol in `environments/PROTOCOL.md` and [`protocol`].

pub mod archive;
pub mod build;
mod function;
pub mod gvisor;
mod invoke;
mod java;
pub mod launcher;
mod packages;
mod pool;
mod protocol;
pub mod sandbox;
mod seccomp;
pub mod unpack;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use flare_model::{EnvironmentSpec, Error, Failure, FunctionSpec, KeepAlive, Result, RuntimeKind};
use flare_runtime::{Call, Function, Injected, Instances, ResponseBody, Runtime, full_body};
use flare_scaling::{AdaptiveKeepAlive, Autoscaler, AutoscalerConfig};
use flare_store::logs::LogSender;
use tokio::sync::Notify;

use function::Policy;
pub use function::ProcessFunction;
use packages::{Code, set_mode};
use pool::Pool;
pub use worker::WorkerError;

/// Processes a worker may run at once (a fork bomb stops here).
pub const PIDS_PER_WORKER: u32 = 64;
/// CPU a worker may use, in cores.
pub const CPUS_PER_WORKER: f64 = 1.0;
/// Keep-alive of an adaptive function until its pattern is learned.
const ADAPTIVE_FALLBACK: Duration = Duration::from_secs(10 * 60);
/// Memory of a generic worker before it is specialized.
const GENERIC_MEMORY: u64 = 256 << 20;

const PYTHON_WORKER: &str = include_str!("../../../environments/python/worker.py");
const PYTHON_ZYGOTE: &str = include_str!("../../../environments/python/zygote.py");
const NODE_WORKER: &str = include_str!("../../../environments/node/worker.js");

/// Settings of the process runtime.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Scratch space: worker directories, unpacked packages. Every parent
    /// must be searchable by the sandbox user (so not under /root).
    pub work_dir: PathBuf,
    pub python: PathBuf,
    pub node: PathBuf,
    /// The JDK's `java` and `javac`, for Java environments.
    pub java: PathBuf,
    pub javac: PathBuf,
    /// Start workers even where cgroups cannot limit their memory and
    /// processes (`flare server --allow-unlimited-workers`).
    pub allow_unlimited: bool,
    /// Where a function's outbound connections may go, beyond its own
    /// `allowedHosts` list.
    pub egress: Arc<flare_egress::EgressPolicy>,
    /// gVisor's `runsc` (a path, or a name looked up on `PATH`), for
    /// environments with `isolation: gvisor`.
    pub runsc: PathBuf,
    /// The `flare` binary, which runs first inside sandboxes bubblewrap
    /// does not build ([`launcher`]); gVisor needs it.
    pub launcher: Option<PathBuf>,
}

impl ProcessConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        ProcessConfig {
            work_dir,
            python: PathBuf::from("/usr/bin/python3"),
            node: PathBuf::from("/usr/bin/node"),
            java: PathBuf::from("/usr/bin/java"),
            javac: PathBuf::from("/usr/bin/javac"),
            allow_unlimited: false,
            egress: Arc::default(),
            runsc: PathBuf::from("runsc"),
            launcher: None,
        }
    }
}

/// How a request to a process function failed: the one vocabulary every
/// runtime uses (see [`Failure`]).
pub type ProcessError = Failure;

pub(crate) struct Inner {
    pub(crate) config: ProcessConfig,
    /// The two seccomp filters (see [`sandbox::SandboxCommand::seccomp`]).
    pub(crate) seccomp: [PathBuf; 2],
    /// A zygote's filter (see [`seccomp::zygote_program`]).
    pub(crate) zygote_seccomp: PathBuf,
    /// The JDK and the Java worker built for it.
    pub(crate) java: Arc<java::Java>,
    pub(crate) logs: LogSender,
    pub(crate) pools: Mutex<HashMap<String, Arc<Pool>>>,
    pub(crate) functions: Mutex<Vec<Weak<ProcessFunction>>>,
    /// Packages unpacked on disk, by digest, while a function holds them.
    pub(crate) unpacked: Mutex<HashMap<String, Weak<Code>>>,
    pub(crate) next_worker: AtomicU64,
}

/// The process runtime. One per process; cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    pub(crate) inner: Arc<Inner>,
}

fn internal(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {e}"))
}

impl ProcessRuntime {
    /// Writes the worker programs and the seccomp filter into `work_dir`
    /// and clears what a previous run left there.
    pub fn new(config: ProcessConfig, logs: LogSender) -> Result<Self> {
        let dir = &config.work_dir;
        // Nothing a previous run left is held by anyone now.
        let _ = std::fs::remove_dir_all(dir.join("workers"));
        let _ = std::fs::remove_dir_all(dir.join("packages"));
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
        std::fs::write(dir.join("environments/python/zygote.py"), PYTHON_ZYGOTE)
            .map_err(internal("write worker"))?;
        std::fs::write(dir.join("environments/node/worker.js"), NODE_WORKER)
            .map_err(internal("write worker"))?;
        for file in [
            "environments/python/worker.py",
            "environments/python/zygote.py",
            "environments/node/worker.js",
        ] {
            set_mode(&dir.join(file), 0o644)?;
        }
        sandbox::remove_stale_cgroups();
        let seccomp = [dir.join("seccomp.bpf"), dir.join("seccomp-abi.bpf")];
        std::fs::write(&seccomp[0], seccomp::seccomp_program()?)
            .map_err(internal("write seccomp filter"))?;
        std::fs::write(&seccomp[1], seccomp::abi_program())
            .map_err(internal("write seccomp filter"))?;
        let zygote_seccomp = dir.join("seccomp-zygote.bpf");
        std::fs::write(&zygote_seccomp, seccomp::zygote_program()?)
            .map_err(internal("write seccomp filter"))?;
        for filter in seccomp.iter().chain([&zygote_seccomp]) {
            set_mode(filter, 0o644)?;
        }
        let runtime = ProcessRuntime {
            inner: Arc::new(Inner {
                seccomp,
                zygote_seccomp,
                java: java::Java::new(
                    config.java.clone(),
                    config.javac.clone(),
                    dir.join("environments/java"),
                ),
                logs,
                pools: Mutex::default(),
                functions: Mutex::default(),
                unpacked: Mutex::default(),
                next_worker: AtomicU64::new(1),
                config,
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
                        counts.live as u32 + counts.starting
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
            zygote: tokio::sync::Mutex::default(),
            successor: Mutex::default(),
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
        tokio::spawn(async move {
            if pool.spec.runtime == flare_model::EnvironmentRuntime::Java {
                // The Java worker is compiled once, before the first JVM.
                let java = inner.java.clone();
                let _ = tokio::task::spawn_blocking(move || java.classes()).await;
            }
            inner.fill(pool).await
        });
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

    /// The function `name` of `spec`, its package unpacked, with no
    /// instance yet. Blocking.
    fn function(
        &self,
        name: &str,
        spec: &FunctionSpec,
        package: &Path,
        injected: Injected,
    ) -> Result<Arc<ProcessFunction>> {
        let environment = spec
            .environment
            .clone()
            .ok_or_else(|| Error::invalid("a process function needs an environment"))?;
        let code = self.code(&environment, spec.package.hex(), package)?;
        let function = Arc::new(ProcessFunction {
            name: name.into(),
            environment,
            code,
            entrypoint: spec.entrypoint.clone(),
            // What the worker sets up before it loads the code.
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .chain(injected.env)
                .collect(),
            files: injected.files,
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

    /// Runs blocking `work` on a blocking thread with a clone of `self`.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(ProcessRuntime) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let runtime = self.clone();
        tokio::task::spawn_blocking(move || work(runtime))
            .await
            .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
    }
}

/// A process function as the executor serves it.
struct Served {
    runtime: ProcessRuntime,
    function: Arc<ProcessFunction>,
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Process
    }

    /// Unpacks the package for the function's environment, within the
    /// limits (zip bombs, links, traversal).
    async fn check(self: Arc<Self>, spec: &FunctionSpec, package: &Path) -> Result<()> {
        let environment = spec
            .environment
            .clone()
            .ok_or_else(|| Error::invalid("a process function needs an environment"))?;
        let (hex, package) = (spec.package.hex().to_string(), package.to_path_buf());
        self.blocking(move |runtime| runtime.code(&environment, &hex, &package).map(drop))
            .await
    }

    async fn prepare(
        self: Arc<Self>,
        name: &str,
        spec: &FunctionSpec,
        package: &Path,
        injected: &Injected,
    ) -> Result<Arc<dyn Function>> {
        let (name, spec, package) = (name.to_string(), spec.clone(), package.to_path_buf());
        let injected = injected.clone();
        let function = self
            .blocking(move |runtime| runtime.function(&name, &spec, &package, injected))
            .await?;
        // Reserved instances are warm before the function is served.
        self.reserve(&function).await;
        Ok(Arc::new(Served {
            runtime: (*self).clone(),
            function,
        }))
    }

    fn check_environment(&self, spec: &EnvironmentSpec) -> Result<()> {
        if spec.runtime == flare_model::EnvironmentRuntime::Java {
            self.inner.java.check().map_err(Error::invalid)?;
        }
        self.inner
            .walls(spec.isolation)
            .map(drop)
            .map_err(Error::invalid)
    }

    fn environment(&self, name: &str, spec: Option<&EnvironmentSpec>) {
        match spec {
            Some(spec) => self.set_environment(name, spec.clone()),
            None => self.remove_environment(name),
        }
    }

    fn idle_workers(&self, environment: &str) -> Option<usize> {
        let pool = self.inner.pool(environment)?;
        pool.idle.lock().ok().map(|idle| idle.len())
    }
}

#[async_trait::async_trait]
impl Function for Served {
    async fn invoke(
        &self,
        call: Call,
    ) -> std::result::Result<http::Response<ResponseBody>, Failure> {
        self.runtime
            .invoke(
                &self.function,
                call.invocation,
                call.request,
                call.guard,
                call.cold_start,
            )
            .await
            .map(|response| response.map(full_body))
    }

    fn capacity(&self) -> usize {
        let limits = &self.function.limits;
        limits.instance_concurrency as usize * limits.max_scale as usize
    }

    fn instances(&self) -> Option<Instances> {
        Some(self.function.counts())
    }

    fn idle_times(&self) -> Option<flare_scaling::IdleTimes> {
        let policy = self.function.policy.lock().ok()?;
        policy.adaptive.as_ref().map(AdaptiveKeepAlive::own)
    }

    fn learn_idle_times(&self, peers: &flare_scaling::IdleTimes) {
        if let Ok(mut policy) = self.function.policy.lock()
            && let Some(adaptive) = policy.adaptive.as_mut()
        {
            adaptive.learn(peers);
        }
    }

    fn resume_idle_times(&self, seen: &flare_scaling::IdleTimes) {
        if let Ok(mut policy) = self.function.policy.lock()
            && let Some(adaptive) = policy.adaptive.as_mut()
        {
            adaptive.resume(seen);
        }
    }

    fn keep_alive(&self) -> Option<flare_scaling::Learned> {
        let mut policy = self.function.policy.lock().ok()?;
        policy.adaptive.as_mut().map(AdaptiveKeepAlive::learned)
    }
}
