//! An environment's pool of generic workers: started ahead of demand,
//! taken by the first request of a function (which specializes one), and
//! refilled in the background.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flare_model::{EnvironmentRuntime, EnvironmentSpec, Isolation};
use tokio::sync::Notify;

use crate::gvisor::{Gvisor, find_program};
use crate::sandbox::{Bind, Walls};
use crate::worker::{Worker, WorkerError, WorkerPlan};
use crate::{CPUS_PER_WORKER, GENERIC_MEMORY, Inner, PIDS_PER_WORKER};

pub(crate) struct Pool {
    pub(crate) name: String,
    pub(crate) spec: EnvironmentSpec,
    pub(crate) idle: Mutex<VecDeque<Worker>>,
    /// When workers were asked for: the pool grows with recent demand.
    pub(crate) demand: Mutex<VecDeque<Instant>>,
    pub(crate) wake: Notify,
    pub(crate) closed: AtomicBool,
    /// The environment's zygote, once started (Python at the namespace
    /// level).
    pub(crate) zygote: tokio::sync::Mutex<Zygote>,
    /// The zygote that replaces the running one when it retires, started
    /// ahead so that no fork waits for an interpreter to start.
    pub(crate) successor: Mutex<Successor>,
}

/// A zygote's replacement: not needed yet, starting, or ready.
#[derive(Default)]
pub(crate) enum Successor {
    #[default]
    None,
    Starting,
    Ready(Worker),
}

/// A pool's zygote: not tried yet, running, or refused by this host (then
/// workers are started whole, as before).
#[derive(Default)]
pub(crate) enum Zygote {
    #[default]
    Untried,
    /// The zygote, and how many children it has been asked for.
    Running(Arc<Worker>, usize),
    Refused,
}

/// The system's trusted TLS roots (Debian's ca-certificates).
pub(crate) const TRUSTED_ROOTS: &str = "/etc/ssl/certs";

/// Children a zygote is asked for before a fresh one replaces it. Pages
/// the zygote writes after a fork stay charged to its cgroup while any
/// child still maps the old copy (about 0.7 MiB a child, measured): this
/// bounds that charge well under the zygote's memory limit.
const FORKS_PER_ZYGOTE: usize = 64;

/// Children after which a zygote's successor is started.
const SUCCESSOR_AFTER: usize = FORKS_PER_ZYGOTE * 3 / 4;

/// Workers a forking pool starts at once when it refills.
const FORKS_AT_ONCE: usize = 4;

/// How far back demand counts towards the pool's size.
const DEMAND_WINDOW: Duration = Duration::from_secs(30);

impl Inner {
    pub(crate) fn pool(&self, name: &str) -> Option<Arc<Pool>> {
        self.pools.lock().ok()?.get(name).cloned()
    }

    /// The wall for `isolation` on this host, or what is missing for it.
    pub(crate) fn walls(&self, isolation: Isolation) -> std::result::Result<Walls, String> {
        match isolation {
            Isolation::Namespace => Ok(Walls::Namespace),
            Isolation::Gvisor => {
                let runsc = find_program(&self.config.runsc).ok_or_else(|| {
                    format!(
                        "isolation gvisor needs gVisor's runsc, which is not at \"{}\" on this host (Debian: apt-get install runsc; or start the server with --runsc PATH)",
                        self.config.runsc.display()
                    )
                })?;
                let launcher = self
                    .config
                    .launcher
                    .clone()
                    .filter(|l| l.is_file())
                    .ok_or("isolation gvisor needs the flare binary as its launcher, and this server has none")?;
                Ok(Walls::Gvisor(Arc::new(Gvisor { runsc, launcher })))
            }
            Isolation::Microvm => Err(
                "isolation microvm is not available in this version of Flare; use namespace or gvisor"
                    .into(),
            ),
        }
    }

    /// A new worker for `pool`: forked from its zygote where it has one,
    /// otherwise started whole. `ahead`: started ahead of need (for the
    /// pool), not for a request waiting on it.
    pub(crate) async fn start_worker(
        &self,
        pool: &Pool,
        egress: Option<Arc<flare_egress::proxy::Rules>>,
        ahead: bool,
    ) -> std::result::Result<Worker, WorkerError> {
        // A worker with a way out starts whole: the zygote's children do
        // not see the system's TLS roots.
        if pool.forks()
            && egress.is_none()
            && let Some(worker) = self.fork_worker(pool, ahead).await
        {
            return Ok(worker);
        }
        self.start_whole(pool, egress).await
    }

    /// Forks a worker from the pool's zygote (started on first need), or
    /// `None` when this host refuses zygotes.
    async fn fork_worker(&self, pool: &Pool, ahead: bool) -> Option<Worker> {
        for _ in 0..2 {
            let zygote = self.zygote_of(pool, 1).await?;
            // Forks run side by side, in the zygote too (it answers each
            // when its child is walled off).
            match Worker::fork(self.plan(pool, None, "w"), zygote.clone(), ahead).await {
                Ok(worker) => return Some(worker),
                Err(e) => {
                    tracing::warn!("environment \"{}\": fork failed: {e}", pool.name);
                    // A zygote that died is started again, once.
                    if !zygote.is_dead() {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// The pool's zygote, started if it is not running, counting
    /// `children` more asked of it; `None` when this host refuses zygotes.
    async fn zygote_of(&self, pool: &Pool, children: usize) -> Option<Arc<Worker>> {
        let mut zygote = pool.zygote.lock().await;
        match &mut *zygote {
            Zygote::Refused => None,
            Zygote::Running(z, forks) if !z.is_dead() && *forks < FORKS_PER_ZYGOTE => {
                *forks += children;
                Some(z.clone())
            }
            // Not started, dead, or retired: a retired zygote lives on
            // while its children do (they hold it). Its successor takes
            // over if one was started ahead and is alive.
            _ => match self.successor_of(pool).await {
                Ok(z) => {
                    let z = Arc::new(z);
                    *zygote = Zygote::Running(z.clone(), children);
                    Some(z)
                }
                Err(e) => {
                    tracing::warn!(
                        "environment \"{}\": no zygote ({e}); workers start whole",
                        pool.name
                    );
                    *zygote = Zygote::Refused;
                    None
                }
            },
        }
    }

    /// The successor started ahead, if it is ready and alive, or a zygote
    /// started now.
    async fn successor_of(&self, pool: &Pool) -> std::result::Result<Worker, WorkerError> {
        let ready =
            pool.successor
                .lock()
                .ok()
                .and_then(|mut next| match std::mem::take(&mut *next) {
                    Successor::Ready(z) => Some(z),
                    other => {
                        *next = other;
                        None
                    }
                });
        match ready {
            Some(z) if !z.is_dead() => Ok(z),
            _ => self.start_zygote(pool).await,
        }
    }

    /// Starts the successor of `pool`'s zygote in the background when the
    /// running one nears retirement.
    pub(crate) fn prepare_successor(self: &Arc<Self>, pool: &Arc<Pool>) {
        let near = match pool.zygote.try_lock() {
            Ok(zygote) => {
                matches!(&*zygote, Zygote::Running(_, forks) if *forks >= SUCCESSOR_AFTER)
            }
            Err(_) => false,
        };
        if !near {
            return;
        }
        let Ok(mut next) = pool.successor.lock() else {
            return;
        };
        if !matches!(*next, Successor::None) {
            return;
        }
        *next = Successor::Starting;
        let (inner, pool) = (self.clone(), pool.clone());
        tokio::spawn(async move {
            let started = inner.start_zygote(&pool).await;
            if let Ok(mut next) = pool.successor.lock() {
                *next = match started {
                    Ok(z) if !pool.closed.load(Ordering::Acquire) => Successor::Ready(z),
                    Ok(_) => Successor::None,
                    Err(e) => {
                        tracing::warn!("environment \"{}\": no successor zygote: {e}", pool.name);
                        Successor::None
                    }
                };
            }
        });
    }

    /// Starts the pool's zygote: a Python with the worker imported, which
    /// may make namespaces for its children and sees the workers'
    /// directories (environments/python/zygote.py).
    async fn start_zygote(&self, pool: &Pool) -> std::result::Result<Worker, WorkerError> {
        let mut plan = self.plan(pool, None, "z");
        plan.argv = vec![
            self.config.python.to_string_lossy().into_owned(),
            "-I".into(),
            "/env/zygote.py".into(),
        ];
        plan.seccomp = [&self.zygote_seccomp, &self.seccomp[1]];
        plan.nested = true;
        let bind = |from: &Path, to: &str, writable| Bind {
            from: from.to_path_buf(),
            to: to.into(),
            writable,
        };
        plan.binds = vec![
            bind(
                &self.config.work_dir.join("workers"),
                "/.flare/workers",
                true,
            ),
            bind(&self.seccomp[0], "/.flare/seccomp.bpf", false),
            bind(&self.seccomp[1], "/.flare/seccomp-abi.bpf", false),
        ];
        // Its children join their workers' cgroups themselves.
        for (n, parent) in crate::sandbox::cgroup_parents().iter().enumerate() {
            let to = format!("{}/{n}", crate::worker::ZYGOTE_CGROUPS);
            plan.binds.push(bind(parent, &to, true));
        }
        Worker::start(plan).await
    }

    /// Starts a worker whole: its own sandbox, its own interpreter.
    async fn start_whole(
        &self,
        pool: &Pool,
        egress: Option<Arc<flare_egress::proxy::Rules>>,
    ) -> std::result::Result<Worker, WorkerError> {
        if pool.spec.runtime == EnvironmentRuntime::Java {
            let java = self.java.clone();
            let built = match java.compiled() {
                Some(built) => built,
                None => tokio::task::spawn_blocking(move || java.classes())
                    .await
                    .map_err(|e| WorkerError::Start(e.to_string()))?,
            };
            built.map_err(WorkerError::Start)?;
        }
        let mut plan = self.plan(pool, egress, "w");
        plan.walls = self
            .walls(pool.spec.isolation)
            .map_err(WorkerError::Start)?;
        Worker::start(plan).await
    }

    /// What every worker of `pool` is started with; `kind` tells workers
    /// (`w`) from zygotes (`z`) in their ids.
    fn plan(
        &self,
        pool: &Pool,
        egress: Option<Arc<flare_egress::proxy::Rules>>,
        kind: &str,
    ) -> WorkerPlan<'_> {
        // The pid keeps cgroup names apart between servers on one machine.
        let id = format!(
            "{}-{kind}{}",
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
            EnvironmentRuntime::Java => (self.java.argv(), self.java.binds()),
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
            EnvironmentRuntime::Java => work.join("environments/java/classes"),
            _ => work.join("environments/python"),
        };
        let mut binds = ro_binds;
        for interpreter in [&self.config.python, &self.config.node] {
            if !interpreter.starts_with("/usr") {
                binds.push(interpreter.clone());
            }
        }
        // A function that may call out checks the TLS certificates it is
        // shown against the system's trusted roots.
        if egress.is_some() && Path::new(TRUSTED_ROOTS).is_dir() {
            binds.push(PathBuf::from(TRUSTED_ROOTS));
        }
        WorkerPlan {
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
            walls: Walls::Namespace,
            binds: Vec::new(),
            nested: false,
        }
    }

    /// Keeps `poolsize` generic workers ready until the pool is closed.
    pub(crate) async fn fill(self: Arc<Self>, pool: Arc<Pool>) {
        let mut failures = 0u32;
        // The zygote starts with its environment, pool or not: the first
        // fork then waits for no interpreter.
        if pool.forks() {
            self.zygote_of(&pool, 0).await;
        }
        while !pool.closed.load(Ordering::Acquire) {
            if pool.forks() {
                self.prepare_successor(&pool);
            }
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
            // Forks are cheap in CPU and mostly wait (for the kernel to
            // move each child into its cgroup): several at once share that
            // wait. Whole starts are CPU: one at a time.
            let parallel = if pool.forks() { FORKS_AT_ONCE } else { 1 };
            let starts =
                (0..(target - have).min(parallel)).map(|_| self.start_worker(&pool, None, true));
            let mut failed = false;
            for started in futures::future::join_all(starts).await {
                match started {
                    Ok(worker) => {
                        if pool.closed.load(Ordering::Acquire) {
                            return;
                        }
                        if let Ok(mut idle) = pool.idle.lock() {
                            idle.push_back(worker);
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::error!("environment \"{}\": {e}", pool.name);
                    }
                }
            }
            // Back off so a broken environment does not spin.
            failures = if failed { failures + 1 } else { 0 };
            if failures > 0 {
                let wait = Duration::from_millis(200 * u64::from(failures.min(25)));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl Pool {
    /// Whether its workers are forked from a zygote (when the host allows).
    pub(crate) fn forks(&self) -> bool {
        self.spec.runtime == EnvironmentRuntime::Python
            && self.spec.isolation == Isolation::Namespace
    }

    /// Generic workers to keep: the configured size, or as many as were
    /// asked for in the last [`DEMAND_WINDOW`] when that is more (bounded).
    /// A pool of size 0 stays empty.
    pub(crate) fn target(&self) -> usize {
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

    pub(crate) fn take(&self) -> Option<Worker> {
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

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut next) = self.successor.lock() {
            *next = Successor::None;
        }
        self.wake.notify_one();
    }
}
