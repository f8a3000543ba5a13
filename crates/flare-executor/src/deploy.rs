//! Deployments: the functions the executor can serve, kept in step with the
//! store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use flare_model::{
    Document, EnvironmentSpec, Error, FunctionSpec, Kind, Resource, Result, RuntimeKind,
};
use flare_runtime_process::{ProcessFunction, ProcessRuntime};
use flare_runtime_wasm::{Prepared, WasmRuntime};
use flare_store::logs::LogSender;
use flare_store::{Change, PackageStore, Revision, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, broadcast, watch};

/// A function as the executor holds it.
pub(crate) struct Deployment {
    pub name: Arc<str>,
    pub generation: u64,
    pub spec: FunctionSpec,
    pub state: State,
}

pub(crate) enum State {
    Ready(Ready),
    /// The function is stored but cannot be served (its package is gone or
    /// no longer loads); requests get 503 with this reason.
    Failed(String),
}

/// The runtime that serves a deployment, with what it prepared. An enum
/// rather than a trait object: the executor must know which one it holds to
/// report its state, and there are two.
pub(crate) enum Backend {
    Wasm(Prepared),
    Process(Arc<ProcessFunction>),
}

pub(crate) struct Ready {
    pub backend: Backend,
    pub permits: Arc<Semaphore>,
    pub env: Arc<[(String, String)]>,
    pub allowed_hosts: Arc<[String]>,
}

/// What `flare fn get` shows about a deployment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub generation: u64,
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub in_flight: usize,
    /// Requests waiting in the function's queue for a permit.
    #[serde(default)]
    pub queued: u64,
    pub max_concurrency: u32,
    /// process functions: specialized instances, busy ones, ones starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<InstanceStatus>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    pub warm: usize,
    pub busy: usize,
    pub specializing: u32,
}

/// The executor. One per process.
pub struct Executor {
    pub(crate) runtime: Arc<WasmRuntime>,
    pub(crate) process: ProcessRuntime,
    packages: PackageStore,
    /// Generation of each environment whose pool is running.
    pub(crate) environments: RwLock<HashMap<String, u64>>,
    pub(crate) metrics: RwLock<HashMap<String, Arc<crate::metrics::FunctionMetrics>>>,
    pub(crate) logs: LogSender,
    pub(crate) deployments: RwLock<HashMap<String, Arc<Deployment>>>,
    applied: watch::Sender<Revision>,
    pub(crate) invocation_prefix: u32,
    pub(crate) invocation_counter: AtomicU64,
}

impl Executor {
    pub fn new(
        runtime: Arc<WasmRuntime>,
        process: ProcessRuntime,
        packages: PackageStore,
        logs: LogSender,
    ) -> Arc<Self> {
        Arc::new(Executor {
            runtime,
            process,
            packages,
            environments: RwLock::default(),
            metrics: RwLock::default(),
            logs,
            deployments: RwLock::default(),
            applied: watch::Sender::new(0),
            invocation_prefix: rand::random(),
            invocation_counter: AtomicU64::new(0),
        })
    }

    /// The store revision every deployment reflects.
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    pub fn status(&self, name: &str) -> Option<DeploymentStatus> {
        let deployment = self.get(name)?;
        let max = permits_for(&deployment.spec) as u32;
        Some(match &deployment.state {
            State::Ready(ready) => DeploymentStatus {
                generation: deployment.generation,
                ready: true,
                error: None,
                in_flight: permits_for(&deployment.spec)
                    .saturating_sub(ready.permits.available_permits()),
                queued: self
                    .metrics_for(name)
                    .queued
                    .load(std::sync::atomic::Ordering::Acquire),
                max_concurrency: max,
                instances: match &ready.backend {
                    Backend::Wasm(_) => None,
                    Backend::Process(function) => {
                        let counts = function.counts();
                        Some(InstanceStatus {
                            warm: counts.instances - counts.busy,
                            busy: counts.busy,
                            specializing: counts.starting,
                        })
                    }
                },
            },
            State::Failed(reason) => DeploymentStatus {
                generation: deployment.generation,
                ready: false,
                error: Some(reason.clone()),
                in_flight: 0,
                queued: 0,
                max_concurrency: max,
                instances: None,
            },
        })
    }

    /// Generic workers waiting in an environment's pool.
    pub fn idle_workers(&self, environment: &str) -> Option<usize> {
        self.process.idle_workers(environment)
    }

    /// The request body limit of a deployed function.
    pub fn max_body_bytes(&self, name: &str) -> Option<u64> {
        self.get(name).map(|d| d.spec.limits.max_body_bytes)
    }

    pub fn deployed(&self) -> usize {
        self.deployments.read().map(|d| d.len()).unwrap_or(0)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.read().ok()?.get(name).cloned()
    }

    /// Follows the store until it closes: the executor's control loop.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut events = store.watch();
        loop {
            self.resync(&*store).await;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        match (event.kind, event.change) {
                            (Kind::Function, Change::Put(doc)) => self.apply(*doc).await,
                            (Kind::Function, Change::Deleted) => self.remove(&event.name),
                            (Kind::Environment, Change::Put(doc)) => self.apply_environment(*doc),
                            (Kind::Environment, Change::Deleted) => {
                                self.remove_environment(&event.name)
                            }
                            _ => {}
                        }
                        self.applied.send_replace(event.revision);
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!("executor missed {missed} store events; resyncing");
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// Makes the deployments equal to the store's functions.
    async fn resync(&self, store: &dyn Store) {
        let revision = store.revision();
        // Environments first: functions are prepared for their environment.
        match store.list(Kind::Environment) {
            Ok(envs) => {
                for name in stale(&self.environments, &envs) {
                    self.remove_environment(&name);
                }
                for env in envs {
                    self.apply_environment(env);
                }
            }
            Err(e) => tracing::error!("cannot list environments: {e}"),
        }
        let docs = match store.list(Kind::Function) {
            Ok(docs) => docs,
            Err(e) => {
                tracing::error!("cannot list functions: {e}");
                return;
            }
        };
        for name in stale(&self.deployments, &docs) {
            self.remove(&name);
        }
        for doc in docs {
            self.apply(doc).await;
        }
        self.applied.send_if_modified(|applied| {
            let newer = revision > *applied;
            if newer {
                *applied = revision;
            }
            newer
        });
    }

    async fn apply(&self, doc: Document) {
        let name = doc.metadata.name.clone();
        let generation = doc.metadata.generation;
        if self.get(&name).is_some_and(|d| d.generation == generation) {
            return;
        }
        let function = match Resource::<FunctionSpec>::from_document(doc) {
            Ok(function) => function,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let spec = function.spec;
        let state = match self.prepare(&name, &spec).await {
            Ok(backend) => State::Ready(Ready {
                backend,
                permits: Arc::new(Semaphore::new(permits_for(&spec))),
                env: spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                allowed_hosts: spec.allowed_hosts.iter().cloned().collect(),
            }),
            Err(e) => {
                tracing::error!("function \"{name}\" cannot be deployed: {e}");
                State::Failed(e.message)
            }
        };
        let deployment = Arc::new(Deployment {
            name: name.as_str().into(),
            generation,
            spec,
            state,
        });
        let previous = self
            .deployments
            .write()
            .ok()
            .and_then(|mut d| d.insert(name, deployment));
        if let Some(previous) = previous {
            self.forget_if_unused(&previous);
        }
    }

    async fn prepare(&self, name: &str, spec: &FunctionSpec) -> Result<Backend> {
        let path: PathBuf = self.packages.path(&spec.package);
        // Compiling and unpacking are CPU and disk work that can take a
        // while; keep them off the request threads.
        let task = match spec.runtime {
            RuntimeKind::Wasm => {
                let runtime = self.runtime.clone();
                let package = spec.package.clone();
                tokio::task::spawn_blocking(move || {
                    runtime
                        .prepare(&package, &path)
                        .map(Backend::Wasm)
                        .map_err(Error::from)
                })
            }
            RuntimeKind::Process => {
                let process = self.process.clone();
                let (name, spec) = (name.to_string(), spec.clone());
                tokio::task::spawn_blocking(move || {
                    process.prepare(&name, &spec, &path).map(Backend::Process)
                })
            }
        };
        let backend = task
            .await
            .map_err(|e| Error::internal(format!("prepare task failed: {e}")))??;
        if let Backend::Process(function) = &backend {
            // Reserved instances are warm before the function is served.
            self.process.reserve(function).await;
        }
        Ok(backend)
    }

    fn apply_environment(&self, doc: Document) {
        let name = doc.metadata.name.clone();
        let generation = doc.metadata.generation;
        let current = self
            .environments
            .read()
            .ok()
            .and_then(|e| e.get(&name).copied());
        if current == Some(generation) {
            return;
        }
        match Resource::<EnvironmentSpec>::from_document(doc) {
            Ok(env) => {
                self.process.set_environment(&name, env.spec);
                if let Ok(mut envs) = self.environments.write() {
                    envs.insert(name, generation);
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    fn remove_environment(&self, name: &str) {
        self.process.remove_environment(name);
        if let Ok(mut envs) = self.environments.write() {
            envs.remove(name);
        }
    }

    fn remove(&self, name: &str) {
        let removed = self
            .deployments
            .write()
            .ok()
            .and_then(|mut d| d.remove(name));
        if let Some(removed) = removed {
            self.forget_if_unused(&removed);
        }
    }

    /// Drops the wasm runtime's copy of a package when no deployment uses it.
    fn forget_if_unused(&self, gone: &Deployment) {
        let digest = &gone.spec.package.digest;
        let used = self
            .deployments
            .read()
            .map(|d| d.values().any(|d| d.spec.package.digest == *digest))
            .unwrap_or(true);
        if !used {
            self.runtime.forget(digest);
        }
    }
}

/// Names held in `held` that are not among `docs` any more.
fn stale<V>(held: &RwLock<HashMap<String, V>>, docs: &[Document]) -> Vec<String> {
    let names: std::collections::HashSet<&str> =
        docs.iter().map(|d| d.metadata.name.as_str()).collect();
    held.read()
        .map(|held| {
            held.keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Requests of a function allowed in flight at once.
pub(crate) fn permits_for(spec: &FunctionSpec) -> usize {
    match spec.runtime {
        RuntimeKind::Wasm => spec.limits.max_concurrency as usize,
        RuntimeKind::Process => {
            spec.limits.instance_concurrency as usize * spec.limits.max_scale as usize
        }
    }
}
