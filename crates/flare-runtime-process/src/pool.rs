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
use crate::sandbox::Walls;
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
}

/// The system's trusted TLS roots (Debian's ca-certificates).
const TRUSTED_ROOTS: &str = "/etc/ssl/certs";

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

    pub(crate) async fn start_worker(
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
        // A function that may call out checks the TLS certificates it is
        // shown against the system's trusted roots.
        if egress.is_some() && Path::new(TRUSTED_ROOTS).is_dir() {
            binds.push(PathBuf::from(TRUSTED_ROOTS));
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
            walls: self
                .walls(pool.spec.isolation)
                .map_err(WorkerError::Start)?,
        })
        .await
    }

    /// Keeps `poolsize` generic workers ready until the pool is closed.
    pub(crate) async fn fill(self: Arc<Self>, pool: Arc<Pool>) {
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
        self.wake.notify_one();
    }
}
