//! Deployments: the functions the executor can serve, kept in step with the
//! store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use flare_access::seal::Place;
use flare_model::{
    ConfigSpec, Document, EnvironmentSpec, Error, FunctionSpec, Kind, Resource, Result,
    RuntimeKind, SecretSpec, is_env_name, qualified, split_qualified,
};
use flare_runtime::{Function, Injected, Runtime};
use flare_store::logs::LogSender;
use flare_store::{Change, Follower, PackageStore, Revision, Store, Update, advance};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

/// A function as the executor holds it.
pub(crate) struct Deployment {
    /// Its qualified name (`name`, or `name.namespace` outside the default
    /// namespace): what the executor, logs and metrics call it.
    pub name: Arc<str>,
    pub namespace: Arc<str>,
    pub generation: u64,
    /// The version it serves (0: stored before versions were kept).
    pub version: u64,
    /// The generations of the secrets and configs it was prepared with:
    /// a change to one of them prepares it again.
    pub inputs: Vec<u64>,
    /// The node's share of the cluster it was prepared with; `spec`'s
    /// limits are that share's.
    pub share: crate::Share,
    pub spec: FunctionSpec,
    pub state: State,
}

pub(crate) enum State {
    Ready(Ready),
    /// The function is stored but cannot be served (its package is gone or
    /// no longer loads); requests get 503 with this reason.
    Failed(String),
}

pub(crate) struct Ready {
    /// What its runtime prepared.
    pub function: Arc<dyn Function>,
    /// One per request it may have in flight ([`Function::capacity`]).
    pub permits: Arc<Semaphore>,
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
    /// process functions with `keepAlive: adaptive`: what it has learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_alive: Option<KeepAliveStatus>,
}

/// What an adaptive keep-alive has learned: from how many idle times (in
/// a cluster, `from_other_nodes` of them the other nodes'), whether that is
/// enough, and the windows it applies after an invocation: unloaded for
/// `prewarm_seconds`, then one instance loaded for `keep_alive_seconds`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KeepAliveStatus {
    pub samples: u64,
    pub from_other_nodes: u64,
    pub learned: bool,
    pub prewarm_seconds: u64,
    pub keep_alive_seconds: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceStatus {
    pub warm: usize,
    pub busy: usize,
    pub specializing: u32,
}

/// The executor. One per process.
pub struct Executor {
    /// One per [`RuntimeKind`]; a function goes to the one of its kind.
    runtimes: Vec<Arc<dyn Runtime>>,
    packages: PackageStore,
    /// Generation of each environment whose pool is running.
    pub(crate) environments: RwLock<HashMap<String, u64>>,
    pub(crate) metrics: RwLock<HashMap<String, Arc<crate::metrics::FunctionMetrics>>>,
    /// Every function's recent points, for charts.
    pub(crate) history: std::sync::Mutex<crate::history::History>,
    pub(crate) logs: LogSender,
    pub(crate) deployments: RwLock<HashMap<String, Arc<Deployment>>>,
    applied: watch::Sender<Revision>,
    pub(crate) invocation_prefix: u32,
    pub(crate) invocation_counter: AtomicU64,
    /// How long a client may take to send a request body.
    pub(crate) body_timeout: std::time::Duration,
    /// Opens the secrets functions use (set once, at start).
    sealer: std::sync::OnceLock<Arc<flare_access::seal::Sealer>>,
    /// Where a package missing here comes from (a cluster's object store).
    remote: std::sync::OnceLock<Arc<flare_cluster::packages::NatsPackages>>,
    /// The store [`Executor::run`] follows: versions are read from it when
    /// a route first serves one.
    store: std::sync::OnceLock<Arc<dyn Store>>,
    /// One version prepared at a time, so concurrent first requests
    /// prepare it once.
    preparing: tokio::sync::Mutex<()>,
    /// This node's share of every function's limits (a cluster's).
    share: watch::Sender<crate::Share>,
    /// Spans for invocations, when the server exports them.
    pub(crate) tracing: std::sync::OnceLock<crate::trace::Tracing>,
}

/// How long a client may take to send a request body, unless the server
/// says otherwise.
pub const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

impl Executor {
    /// An executor running functions on `runtimes`; a client gets
    /// `body_timeout` to send a request body.
    pub fn new(
        runtimes: Vec<Arc<dyn Runtime>>,
        packages: PackageStore,
        logs: LogSender,
        body_timeout: std::time::Duration,
    ) -> Arc<Self> {
        Arc::new(Executor {
            runtimes,
            packages,
            environments: RwLock::default(),
            metrics: RwLock::default(),
            history: std::sync::Mutex::default(),
            logs,
            deployments: RwLock::default(),
            applied: watch::Sender::new(0),
            invocation_prefix: rand::random(),
            invocation_counter: AtomicU64::new(0),
            body_timeout,
            sealer: std::sync::OnceLock::new(),
            remote: std::sync::OnceLock::new(),
            store: std::sync::OnceLock::new(),
            preparing: tokio::sync::Mutex::new(()),
            share: watch::Sender::new(crate::Share::default()),
            tracing: std::sync::OnceLock::new(),
        })
    }

    /// Serves this node's `share` of every function's limits from now on
    /// (a cluster's nodes came or went): the functions are prepared again
    /// with it.
    pub fn set_share(&self, share: crate::Share) {
        self.share.send_if_modified(|held| {
            let changed = *held != share;
            *held = share;
            changed
        });
    }

    /// The key that opens secrets; functions that use secrets fail to
    /// deploy without one.
    pub fn set_sealer(&self, sealer: Arc<flare_access::seal::Sealer>) {
        let _ = self.sealer.set(sealer);
    }

    /// Makes a span for every invocation with `tracer` from now on.
    pub fn set_tracer(&self, tracer: opentelemetry_sdk::trace::SdkTracer) {
        let _ = self.tracing.set(crate::trace::Tracing::new(tracer));
    }

    /// Fetches packages this node lacks from `remote` (cluster mode).
    pub fn set_remote_packages(&self, remote: Arc<flare_cluster::packages::NatsPackages>) {
        let _ = self.remote.set(remote);
    }

    /// The store revision every deployment reflects.
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    pub fn status(&self, name: &str) -> Option<DeploymentStatus> {
        let deployment = self.get(name)?;
        Some(match &deployment.state {
            State::Ready(ready) => DeploymentStatus {
                generation: deployment.generation,
                ready: true,
                error: None,
                in_flight: ready
                    .function
                    .capacity()
                    .saturating_sub(ready.permits.available_permits()),
                queued: self
                    .metrics_for(name)
                    .queued
                    .load(std::sync::atomic::Ordering::Acquire),
                max_concurrency: ready.function.capacity() as u32,
                instances: ready.function.instances().map(|i| InstanceStatus {
                    warm: i.live - i.busy,
                    busy: i.busy,
                    specializing: i.starting,
                }),
                keep_alive: ready.function.keep_alive().map(|k| KeepAliveStatus {
                    samples: k.samples,
                    from_other_nodes: k.from_peers,
                    learned: k.learned,
                    prewarm_seconds: k.windows.prewarm.as_secs(),
                    keep_alive_seconds: k.windows.keep_alive.as_secs(),
                }),
            },
            State::Failed(reason) => DeploymentStatus {
                generation: deployment.generation,
                ready: false,
                error: Some(reason.clone()),
                in_flight: 0,
                queued: 0,
                max_concurrency: 0,
                instances: None,
                keep_alive: None,
            },
        })
    }

    /// Checks that every runtime can serve `spec`'s workers on this host.
    pub fn check_environment(&self, spec: &EnvironmentSpec) -> Result<()> {
        self.runtimes
            .iter()
            .try_for_each(|r| r.check_environment(spec))
    }

    /// Generic workers waiting in an environment's pool.
    pub fn idle_workers(&self, environment: &str) -> Option<usize> {
        self.runtimes
            .iter()
            .find_map(|r| r.idle_workers(environment))
    }

    /// The runtime that serves functions of `kind`.
    fn runtime(&self, kind: RuntimeKind) -> Result<&Arc<dyn Runtime>> {
        self.runtimes
            .iter()
            .find(|r| r.kind() == kind)
            .ok_or_else(|| Error::invalid(format!("this server runs no {kind:?} functions")))
    }

    /// Checks that the package at `package` can serve `spec`, so that
    /// nothing unservable is stored (the API calls this before storing).
    pub async fn check(&self, spec: &FunctionSpec, package: &std::path::Path) -> Result<()> {
        self.runtime(spec.runtime)?
            .clone()
            .check(spec, package)
            .await
    }

    /// The request body limit of a deployed function.
    pub fn max_body_bytes(&self, name: &str) -> Option<u64> {
        self.get(name).map(|d| d.spec.limits.max_body_bytes)
    }

    /// Who may call a deployed function over HTTP, and its namespace.
    pub fn auth(&self, name: &str) -> Option<(flare_model::InvokeAuth, Arc<str>)> {
        self.get(name).map(|d| (d.spec.auth, d.namespace.clone()))
    }

    pub fn deployed(&self) -> usize {
        self.deployments.read().map(|d| d.len()).unwrap_or(0)
    }

    /// The idle times each adaptive function saw on this node, by
    /// qualified name.
    pub fn idle_times(&self) -> Vec<(Arc<str>, flare_scaling::IdleTimes)> {
        let Ok(deployments) = self.deployments.read() else {
            return Vec::new();
        };
        deployments
            .values()
            .filter_map(|d| match &d.state {
                State::Ready(ready) => Some((d.name.clone(), ready.function.idle_times()?)),
                State::Failed(_) => None,
            })
            .collect()
    }

    /// Teaches the function `name` the idle times the other nodes saw.
    pub fn learn_idle_times(&self, name: &str, peers: &flare_scaling::IdleTimes) {
        if let Some(d) = self.get(name)
            && let State::Ready(ready) = &d.state
        {
            ready.function.learn_idle_times(peers);
        }
    }

    /// Makes `name` servable when it names a version (`hello@3`,
    /// `hello@3.team-a`) that is not deployed yet: the version is read
    /// from the store and prepared like a function. Other names: nothing
    /// to do.
    pub async fn ensure(&self, name: &str) -> Result<()> {
        // Most names are functions: no lock, no lookup here.
        let (base, namespace) = split_qualified(name);
        let Some((function, version)) = base.rsplit_once('@') else {
            return Ok(());
        };
        if self.get(name).is_some() {
            return Ok(());
        }
        let no_version = || {
            flare_model::Error::new(
                flare_model::ErrorCode::NotFound,
                format!("function \"{function}\" has no version {version}"),
            )
        };
        // Only the canonical spelling: `@03` and `@+3` would otherwise be
        // as many more deployments of version 3 as a client cares to ask.
        let number: u64 = version
            .parse()
            .ok()
            .filter(|n: &u64| n.to_string() == version)
            .ok_or_else(no_version)?;
        let store = self.store.get().cloned().ok_or_else(|| {
            flare_model::Error::new(
                flare_model::ErrorCode::Unavailable,
                "functions are not loaded yet",
            )
        })?;
        // A version that does not exist is answered without waiting for
        // one that is being prepared.
        let stored = match store.get(
            Kind::FunctionVersion,
            namespace,
            &flare_model::FunctionVersionSpec::name_of(function, number),
        ) {
            Ok(doc) => doc,
            Err(e) if e.code == flare_model::ErrorCode::NotFound => return Err(no_version()),
            Err(e) => return Err(e),
        };
        let _one = self.preparing.lock().await;
        if self.get(name).is_some() {
            return Ok(());
        }
        let mut version = Resource::<flare_model::FunctionVersionSpec>::from_document(stored)?;
        // A version serves what routes send it; reserved instances stay the
        // function's, or any caller of /fn/NAME@N could make a node keep
        // warm instances of every old version.
        version.spec.spec.limits.min_scale = 0;
        let doc = Document {
            api_version: flare_model::API_VERSION.into(),
            kind: Kind::Function,
            metadata: flare_model::Metadata {
                namespace: namespace.to_string(),
                generation: number,
                version: number,
                ..flare_model::Metadata::named(base)
            },
            spec: serde_json::to_value(&version.spec.spec)
                .map_err(|e| flare_model::Error::internal(e.to_string()))?,
        };
        self.apply(&*store, doc).await;
        match self.get(name) {
            Some(_) => Ok(()),
            None => Err(no_version()),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.read().ok()?.get(name).cloned()
    }

    /// Follows the store until it closes: the executor's control loop.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let _ = self.store.set(store.clone());
        let mut follower = Follower::new(&*store);
        let mut share = self.share.subscribe();
        loop {
            let update = tokio::select! {
                update = follower.next(&*store) => update,
                Ok(()) = share.changed() => {
                    tracing::info!(share = ?*share.borrow_and_update(), "the cluster changed: functions get this node's new share");
                    self.resync(&*store).await;
                    continue;
                }
            };
            let Some(update) = update else { break };
            let revision = update.revision();
            match update {
                Update::Reload { .. } => self.resync(&*store).await,
                Update::Change(event) => match (event.kind, event.change) {
                    (Kind::Function, Change::Put(doc)) => self.apply(&*store, *doc).await,
                    (Kind::Function, Change::Deleted) => {
                        self.remove(&qualified(&event.name, &event.namespace))
                    }
                    // A version is immutable: it goes only with its function.
                    (Kind::FunctionVersion, Change::Deleted) => {
                        if let Some((function, version)) = event.name.rsplit_once("-v") {
                            self.remove(&qualified(
                                &format!("{function}@{version}"),
                                &event.namespace,
                            ));
                        }
                    }
                    (Kind::Environment, Change::Put(doc)) => self.apply_environment(*doc),
                    (Kind::Environment, Change::Deleted) => self.remove_environment(&event.name),
                    (Kind::Secret | Kind::Config, _) => {
                        self.refresh(&*store, event.kind, &event.namespace, &event.name)
                            .await
                    }
                    _ => {}
                },
            }
            advance(&self.applied, revision);
        }
    }

    /// Makes the deployments equal to the store's functions.
    async fn resync(&self, store: &dyn Store) {
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
            self.apply(store, doc).await;
        }
    }

    /// Prepares again the functions of `namespace` that use the secret or
    /// config that changed (new instances get the new values; running
    /// ones finish what they do).
    async fn refresh(&self, store: &dyn Store, kind: Kind, namespace: &str, name: &str) {
        let users: Vec<String> = self
            .deployments
            .read()
            .map(|d| {
                d.values()
                    .filter(|d| &*d.namespace == namespace)
                    .filter(|d| match kind {
                        Kind::Secret => d.spec.secrets.iter().any(|s| s == name),
                        _ => d.spec.configs.iter().any(|c| c == name),
                    })
                    .map(|d| split_qualified(&d.name).0.to_string())
                    .collect()
            })
            .unwrap_or_default();
        for user in users {
            if user.contains('@') {
                // A version serving a route: prepared again, with the new
                // values, on its next request.
                self.remove(&qualified(&user, namespace));
                continue;
            }
            match store.get(Kind::Function, namespace, &user) {
                Ok(doc) => self.apply(store, doc).await,
                Err(e) => tracing::error!("cannot read function \"{user}\": {e}"),
            }
        }
    }

    /// The generations of a function's secrets and configs (0 for one that
    /// is gone).
    fn inputs(store: &dyn Store, namespace: &str, spec: &FunctionSpec) -> Vec<u64> {
        let secrets = spec.secrets.iter().map(|s| (Kind::Secret, s));
        let configs = spec.configs.iter().map(|c| (Kind::Config, c));
        secrets
            .chain(configs)
            .map(|(kind, name)| {
                store
                    .get(kind, namespace, name)
                    .map_or(0, |doc| doc.metadata.generation)
            })
            .collect()
    }

    /// The values of a function's configs and secrets.
    fn resolve(&self, store: &dyn Store, namespace: &str, spec: &FunctionSpec) -> Result<Injected> {
        let mut injected = Injected::default();
        if spec.configs.is_empty() && spec.secrets.is_empty() {
            return Ok(injected);
        }
        let sealer = self
            .sealer
            .get()
            .ok_or_else(|| Error::internal("secrets and configs cannot be opened: no key"))?;
        let open = |kind: Kind, name: &str, key: &str, sealed: &str| {
            let place = Place {
                kind,
                namespace,
                name,
                key,
            };
            sealer.open(place, sealed)
        };
        for name in &spec.configs {
            let config =
                Resource::<ConfigSpec>::from_document(store.get(Kind::Config, namespace, name)?)?;
            for (key, sealed) in config.spec.data {
                let value = open(Kind::Config, name, &key, &sealed)?;
                if let Ok(text) = String::from_utf8(value) {
                    if env_worthy(&key, &text) {
                        injected.env.push((key.clone(), text.clone()));
                    }
                    injected.config.push((key, text));
                }
            }
        }
        for name in &spec.secrets {
            let secret =
                Resource::<SecretSpec>::from_document(store.get(Kind::Secret, namespace, name)?)?;
            for (key, sealed) in secret.spec.sealed {
                let value = open(Kind::Secret, name, &key, &sealed)?;
                if let Ok(text) = std::str::from_utf8(&value) {
                    if env_worthy(&key, text) {
                        injected.env.push((key.clone(), text.to_string()));
                    }
                    injected.config.push((key.clone(), text.to_string()));
                }
                injected
                    .files
                    .push((format!("/secrets/{name}/{key}"), value));
            }
        }
        Ok(injected)
    }

    async fn apply(&self, store: &dyn Store, doc: Document) {
        let name = qualified(&doc.metadata.name, &doc.metadata.namespace);
        let namespace: Arc<str> = doc.metadata.namespace.as_str().into();
        let generation = doc.metadata.generation;
        let version = doc.metadata.version;
        let function = match Resource::<FunctionSpec>::from_document(doc) {
            Ok(function) => function,
            Err(e) => {
                tracing::error!("{e}");
                return;
            }
        };
        let mut spec = function.spec;
        let inputs = Self::inputs(store, &namespace, &spec);
        let share = *self.share.borrow();
        if self
            .get(&name)
            .is_some_and(|d| d.generation == generation && d.inputs == inputs && d.share == share)
        {
            return;
        }
        spec.limits = share.limits(spec.limits);
        // A function created on another node: its code comes first.
        let fetched = match self.remote.get() {
            Some(remote) => remote.fetch(&self.packages, &spec.package).await,
            None => Ok(()),
        };
        let path: PathBuf = self.packages.path(&spec.package);
        let prepared = match (
            fetched,
            self.runtime(spec.runtime),
            self.resolve(store, &namespace, &spec),
        ) {
            (Ok(()), Ok(runtime), Ok(injected)) => {
                runtime
                    .clone()
                    .prepare(&name, &spec, &path, &injected)
                    .await
            }
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
        };
        let state = match prepared {
            Ok(function) => {
                // Callers' habits outlive a new generation or share: an
                // adaptive keep-alive goes on from what it learned.
                if let Some(previous) = self.get(&name)
                    && let State::Ready(previous) = &previous.state
                    && let Some(seen) = previous.function.idle_times()
                {
                    function.resume_idle_times(&seen);
                }
                State::Ready(Ready {
                    permits: Arc::new(Semaphore::new(function.capacity())),
                    function,
                })
            }
            Err(e) => {
                tracing::error!("function \"{name}\" cannot be deployed: {e}");
                State::Failed(e.message)
            }
        };
        let deployment = Arc::new(Deployment {
            name: name.as_str().into(),
            namespace,
            generation,
            version,
            inputs,
            share,
            spec,
            state,
        });
        if let Ok(mut deployments) = self.deployments.write() {
            deployments.insert(name, deployment);
        }
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
                for runtime in &self.runtimes {
                    runtime.environment(&name, Some(&env.spec));
                }
                if let Ok(mut envs) = self.environments.write() {
                    envs.insert(name, generation);
                }
            }
            Err(e) => tracing::error!("{e}"),
        }
    }

    fn remove_environment(&self, name: &str) {
        for runtime in &self.runtimes {
            runtime.environment(name, None);
        }
        if let Ok(mut envs) = self.environments.write() {
            envs.remove(name);
        }
    }

    fn remove(&self, name: &str) {
        if let Ok(mut deployments) = self.deployments.write() {
            deployments.remove(name);
        }
    }
}

/// Whether a secret or config key can be an environment variable: a valid
/// name, and a value with no NUL (which no process environment can hold;
/// such a value still reaches the function as a file or through
/// wasi:config).
fn env_worthy(key: &str, value: &str) -> bool {
    is_env_name(key) && !value.contains('\0')
}

/// (Qualified) names held in `held` that are not among `docs` any more.
fn stale<V>(held: &RwLock<HashMap<String, V>>, docs: &[Document]) -> Vec<String> {
    let names: std::collections::HashSet<String> = docs
        .iter()
        .map(|d| qualified(&d.metadata.name, &d.metadata.namespace))
        .collect();
    held.read()
        .map(|held| {
            held.keys()
                .filter(|n| !names.contains(n.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}
