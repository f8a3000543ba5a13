//! `flare server`: every component in one process on the embedded store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use flare_api::{Api, ApiParts};
use flare_executor::Executor;
use flare_router::Router;
use flare_runtime_process::build::BuildSettings;
use flare_runtime_process::{ProcessConfig, ProcessRuntime};
use flare_runtime_wasm::{RuntimeConfig, WasmRuntime};
use flare_store::invocations::{InvocationQueue, SqliteQueue};
use flare_store::retention::Retention;
use flare_store::{PackageStore, SqliteStore, Store};
use flare_triggers::asynchronous::AsyncInvoker;
use flare_triggers::mq::MqTriggers;
use flare_triggers::timer::Timers;
use serde::Deserialize;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Address of the router, which serves functions.
    /// [default: 127.0.0.1:8080]
    #[arg(long, env = "FLARE_ADDR")]
    addr: Option<SocketAddr>,
    /// Address of the API, which the CLI talks to.
    /// [default: 127.0.0.1:8081]
    #[arg(long, env = "FLARE_API_ADDR")]
    api_addr: Option<SocketAddr>,
    /// Where Flare keeps its database, packages and compiled code.
    /// [default: $XDG_DATA_HOME/flare or ~/.local/share/flare]
    #[arg(long, env = "FLARE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Largest package accepted, in bytes. [default: 67108864]
    #[arg(long, env = "FLARE_MAX_PACKAGE_BYTES")]
    max_package_bytes: Option<u64>,
    /// Instances allowed at once (pool slots of the wasm runtime).
    /// [default: 1000]
    #[arg(long, env = "FLARE_MAX_INSTANCES")]
    max_instances: Option<u32>,
    /// Let functions' outbound HTTP and async callbacks reach loopback and
    /// private addresses (a trusted network, tests). Off: only public
    /// addresses; Flare's own ports are refused either way.
    #[arg(long, env = "FLARE_EGRESS_ALLOW_PRIVATE")]
    egress_allow_private: bool,
    /// Run process functions even where cgroups cannot limit their memory
    /// and processes (no memory or pids controller). Off: such workers do
    /// not start.
    #[arg(long, env = "FLARE_ALLOW_UNLIMITED_WORKERS")]
    allow_unlimited_workers: bool,
    /// gVisor's runsc, for environments created with `--isolation gvisor`
    /// (a path, or a name looked up on PATH).
    #[arg(long, env = "FLARE_RUNSC", default_value = "runsc")]
    runsc: PathBuf,
    /// The JDK's java, for Java environments; javac is taken from beside it.
    #[arg(long, env = "FLARE_JAVA", default_value = "/usr/bin/java")]
    java: PathBuf,
    /// Hosts a server-side build (`flare fn create --src`) may reach: the
    /// package registries, as `name`, `name:port` or `*.domain`; repeat
    /// the flag. The hosts of --pip-index-url and --npm-registry are
    /// added. [default: pypi.org, files.pythonhosted.org,
    /// registry.npmjs.org]
    #[arg(
        long = "build-allow-host",
        env = "FLARE_BUILD_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    build_allow_hosts: Vec<String>,
    /// pip's index for server-side builds (a mirror, say). [default: PyPI]
    #[arg(long, env = "FLARE_PIP_INDEX_URL")]
    pip_index_url: Option<String>,
    /// npm's registry for server-side builds. [default: registry.npmjs.org]
    #[arg(long, env = "FLARE_NPM_REGISTRY")]
    npm_registry: Option<String>,
    /// How long a server-side build may run. [default: 10m]
    #[arg(long, env = "FLARE_BUILD_TIMEOUT", value_parser = humantime::parse_duration)]
    build_timeout: Option<Duration>,
    /// How long a client may take to send a request body; past it, 408 and
    /// the connection is closed. The body is read before a function's
    /// capacity is taken, so a slow client never holds that. [default: 30s]
    #[arg(long, env = "FLARE_BODY_TIMEOUT", value_parser = parse_interval)]
    body_timeout: Option<Duration>,
    /// How long function log lines are kept. [default: 7d]
    #[arg(long, env = "FLARE_LOG_RETENTION", value_parser = parse_age)]
    log_retention: Option<Duration>,
    /// How long finished asynchronous invocations (status and result) are
    /// kept; queued and running ones are never removed. [default: 7d]
    #[arg(long, env = "FLARE_INVOCATION_RETENTION", value_parser = parse_age)]
    invocation_retention: Option<Duration>,
    /// How long a package no function uses, and its compiled code, is kept
    /// after its last upload. [default: 1h]
    #[arg(long, env = "FLARE_PACKAGE_RETENTION", value_parser = parse_age)]
    package_retention: Option<Duration>,
    /// How long the audit trail (who changed what) is kept. [default: 90d]
    #[arg(long, env = "FLARE_AUDIT_RETENTION", value_parser = parse_age)]
    audit_retention: Option<Duration>,
    /// How often the retention pass removes what is past its retention.
    /// [default: 10m]
    #[arg(long, env = "FLARE_GC_INTERVAL", value_parser = parse_interval)]
    gc_interval: Option<Duration>,
    /// Serve the router and the API over TLS with this certificate chain
    /// (PEM); needs --tls-key.
    #[arg(long, env = "FLARE_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "FLARE_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Make a new admin token and write it to <data-dir>/admin.token, for an
    /// operator who lost theirs (the others stay valid; revoke them with
    /// `flare token revoke`).
    #[arg(long)]
    new_admin_token: bool,
    /// A TOML file with any of the settings above (addr, api_addr, data_dir,
    /// max_package_bytes, max_instances, log_retention, invocation_retention,
    /// package_retention, audit_retention, gc_interval, tls_cert, tls_key);
    /// flags and FLARE_* variables win.
    #[arg(long, env = "FLARE_CONFIG")]
    config: Option<PathBuf>,
    /// Cluster mode: the NATS JetStream servers the nodes share
    /// (comma-separated, nats://host:4222,...). Without it, this node
    /// serves alone on its embedded store.
    #[arg(long, env = "FLARE_CLUSTER", value_name = "NATS_URLS")]
    cluster: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[arg(long, env = "FLARE_NODE_NAME", requires = "cluster")]
    node_name: Option<String>,
    /// The key secrets are sealed with: a file of 32 random bytes, mode
    /// 0600 (head -c 32 /dev/urandom > FILE). Required in cluster mode,
    /// the same file on every node; default: `secrets.key` in the data dir,
    /// made on the first start.
    #[arg(long, env = "FLARE_SECRETS_KEY", value_name = "FILE")]
    secrets_key: Option<PathBuf>,
    /// Export a span for every invocation (OpenTelemetry, OTLP) to this
    /// collector: http://HOST:4318 with --otlp-protocol http, http://HOST:4317
    /// with grpc. A caller's `traceparent` is continued and passed to the
    /// function. Off without it, at no cost.
    #[arg(long, env = "FLARE_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// How spans reach the collector: http (OTLP/HTTP, protobuf) or grpc.
    #[arg(long, env = "FLARE_OTLP_PROTOCOL", value_enum, default_value = "http")]
    otlp_protocol: crate::telemetry::OtlpProtocol,
    /// The fraction of invocations Flare starts a trace for (0.01: one in
    /// a hundred); a caller's sampled trace is always continued.
    #[arg(
        long,
        env = "FLARE_TRACE_SAMPLE_RATE",
        default_value = "1",
        value_parser = crate::telemetry::parse_sample_rate
    )]
    trace_sample_rate: f64,
    /// A NATS credentials file (.creds) to connect with.
    #[arg(
        long,
        env = "FLARE_NATS_CREDS",
        requires = "cluster",
        value_name = "FILE"
    )]
    nats_creds: Option<PathBuf>,
}

/// Cluster mode's settings.
struct ClusterSettings {
    servers: String,
    node_name: String,
    creds: Option<PathBuf>,
}

/// The node name a host gets by default: its host name, lower-cased.
fn default_node_name() -> anyhow::Result<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    flare_cluster::check_node_name(&host).map_err(|_| {
        anyhow::anyhow!("the host name {host:?} is not a valid node name; pass --node-name")
    })?;
    Ok(host)
}

/// The optional configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    addr: Option<SocketAddr>,
    api_addr: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    max_package_bytes: Option<u64>,
    max_instances: Option<u32>,
    log_retention: Option<String>,
    invocation_retention: Option<String>,
    package_retention: Option<String>,
    audit_retention: Option<String>,
    gc_interval: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (try 12h, 7d or 30m)"))
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    match parse_age(s)? {
        d if d.is_zero() => Err("the interval must be more than zero".into()),
        d => Ok(d),
    }
}

/// A duration from the flag, else the config file, else `default`.
fn age_setting(
    flag: Option<Duration>,
    file: Option<&str>,
    name: &str,
    default: Duration,
    parse: fn(&str) -> Result<Duration, String>,
) -> anyhow::Result<Duration> {
    match (flag, file) {
        (Some(d), _) => Ok(d),
        (None, Some(text)) => {
            parse(text).map_err(|e| anyhow::anyhow!("invalid {name} in the config file: {e}"))
        }
        (None, None) => Ok(default),
    }
}

/// Settings after merging flags, environment, file and defaults.
struct Settings {
    addr: SocketAddr,
    api_addr: SocketAddr,
    data_dir: PathBuf,
    max_package_bytes: u64,
    max_instances: u32,
    allow_unlimited_workers: bool,
    runsc: PathBuf,
    java: PathBuf,
    egress_allow_private: bool,
    builds: BuildSettings,
    retention: Retention,
    gc_interval: Duration,
    body_timeout: Duration,
    /// Certificate chain and key, when serving TLS.
    tls: Option<(PathBuf, PathBuf)>,
    cluster: Option<ClusterSettings>,
    secrets_key: Option<PathBuf>,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("flare"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/flare")),
        None => bail!("no --data-dir given and neither XDG_DATA_HOME nor HOME is set"),
    }
}

impl ServerArgs {
    fn settings(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let max_instances = self.max_instances.or(file.max_instances).unwrap_or(1000);
        if max_instances == 0 {
            bail!("max instances must be at least 1");
        }
        let defaults = Retention::default();
        let retention = Retention {
            logs: age_setting(
                self.log_retention,
                file.log_retention.as_deref(),
                "log_retention",
                defaults.logs,
                parse_age,
            )?,
            invocations: age_setting(
                self.invocation_retention,
                file.invocation_retention.as_deref(),
                "invocation_retention",
                defaults.invocations,
                parse_age,
            )?,
            packages: age_setting(
                self.package_retention,
                file.package_retention.as_deref(),
                "package_retention",
                defaults.packages,
                parse_age,
            )?,
            audit: age_setting(
                self.audit_retention,
                file.audit_retention.as_deref(),
                "audit_retention",
                defaults.audit,
                parse_age,
            )?,
        };
        let gc_interval = age_setting(
            self.gc_interval,
            file.gc_interval.as_deref(),
            "gc_interval",
            Duration::from_secs(600),
            parse_interval,
        )?;
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
        };
        if self.cluster.is_some() && self.secrets_key.is_none() {
            bail!(
                "cluster mode needs --secrets-key FILE, the same file on every node (secrets sealed on one node are opened on another); make one with: head -c 32 /dev/urandom > FILE; chmod 600 FILE"
            );
        }
        let cluster = match self.cluster {
            Some(servers) => Some(ClusterSettings {
                servers,
                node_name: match self.node_name {
                    Some(name) => {
                        flare_cluster::check_node_name(&name)
                            .map_err(|e| anyhow::anyhow!(e.message))?;
                        name
                    }
                    None => default_node_name()?,
                },
                creds: self.nats_creds,
            }),
            None => None,
        };
        Ok(Settings {
            tls,
            cluster,
            secrets_key: self.secrets_key,
            addr: self
                .addr
                .or(file.addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
            api_addr: self
                .api_addr
                .or(file.api_addr)
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081))),
            data_dir: match self.data_dir.or(file.data_dir) {
                Some(dir) => dir,
                None => default_data_dir()?,
            },
            max_package_bytes: self
                .max_package_bytes
                .or(file.max_package_bytes)
                .unwrap_or(flare_api::DEFAULT_MAX_PACKAGE_BYTES),
            max_instances,
            allow_unlimited_workers: self.allow_unlimited_workers,
            runsc: self.runsc,
            java: self.java,
            egress_allow_private: self.egress_allow_private,
            builds: build_settings(
                self.build_allow_hosts,
                self.pip_index_url,
                self.npm_registry,
                self.build_timeout,
            )?,
            retention,
            gc_interval,
            body_timeout: self
                .body_timeout
                .unwrap_or(flare_executor::DEFAULT_BODY_TIMEOUT),
        })
    }
}

/// Scratch space of the process runtime. Sandboxed workers (an
/// unprivileged user) must be able to reach it, which a data dir under
/// /root is not; so it lives in the system temp dir. Its name is random
/// and it is created fresh (never a directory someone else made first);
/// the data dir records it so the next start removes it.
fn process_work_dir(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let record = data_dir.join("process-work-dir");
    let temp = std::env::temp_dir();
    if let Ok(old) = std::fs::read_to_string(&record) {
        let old = PathBuf::from(old.trim());
        let ours = old.parent() == Some(temp.as_path())
            && old
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("flare-"));
        if ours {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    for _ in 0..8 {
        let dir = temp.join(format!("flare-{:016x}", rand::random::<u64>()));
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {
                std::fs::write(&record, dir.to_string_lossy().as_bytes())
                    .with_context(|| format!("cannot write {}", record.display()))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("cannot create a fresh work directory in {}", temp.display())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLARE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args_new_admin_token = args.new_admin_token;
    let otlp = args
        .otlp_endpoint
        .clone()
        .map(|endpoint| (endpoint, args.otlp_protocol, args.trace_sample_rate));
    let settings = args.settings()?;
    let data_dir = &settings.data_dir;
    // A bad exporter setting is an error before anything starts.
    let spans = match &otlp {
        Some((endpoint, protocol, rate)) => {
            let node = match &settings.cluster {
                Some(c) => c.node_name.clone(),
                None => default_node_name().unwrap_or_else(|_| "flare".into()),
            };
            let provider = crate::telemetry::provider(endpoint, *protocol, *rate, &node)?;
            tracing::info!(endpoint, protocol = ?protocol, sample_rate = rate, "exporting invocation spans");
            Some(provider)
        }
        None => None,
    };
    // An operator's key file is checked before anything starts.
    let file_sealer = match &settings.secrets_key {
        Some(file) => Some(
            flare_access::seal::Sealer::open_file(file).map_err(|e| anyhow::anyhow!(e.message))?,
        ),
        None => None,
    };

    let tls = match &settings.tls {
        Some((cert, key)) => {
            Some(flare_router::listen::tls_acceptor(cert, key).map_err(|e| anyhow::anyhow!(e))?)
        }
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let router_listener = tokio::net::TcpListener::bind(settings.addr)
        .await
        .with_context(|| format!("cannot listen on {} (router)", settings.addr))?;
    let api_listener = tokio::net::TcpListener::bind(settings.api_addr)
        .await
        .with_context(|| format!("cannot listen on {} (API)", settings.api_addr))?;
    let router_url = format!("{scheme}://{}", router_listener.local_addr()?);
    let api_url = format!("{scheme}://{}", api_listener.local_addr()?);
    // Joined first: an unreachable NATS is an error before anything starts.
    let (membership, cluster) = match &settings.cluster {
        Some(c) => {
            let cluster = flare_cluster::Cluster::join(
                &c.servers,
                c.creds.as_deref(),
                &c.node_name,
                router_url,
                api_url,
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
            let cluster = Arc::new(cluster);
            (
                flare_cluster::Membership::Cluster(cluster.clone()),
                Some(cluster),
            )
        }
        None => (
            flare_cluster::Membership::Alone(flare_cluster::NodeView::new(
                "local", router_url, api_url,
            )),
            None,
        ),
    };
    let egress = Arc::new(flare_egress::EgressPolicy {
        allow_private: settings.egress_allow_private,
        own_ports: vec![
            router_listener.local_addr()?.port(),
            api_listener.local_addr()?.port(),
        ],
    });

    let sqlite = Arc::new(SqliteStore::open(data_dir)?);
    // Resources and packages: this node's own, or the cluster's. The logs
    // and the audit trail stay on this node's store.
    let (store, cluster_packages): (Arc<dyn Store>, _) = match &cluster {
        Some(cluster) => {
            let store = flare_cluster::store::NatsStore::open(
                cluster.jetstream().clone(),
                cluster.replicas(),
                cluster.servers(),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
            let packages = flare_cluster::packages::NatsPackages::open(
                cluster.jetstream(),
                cluster.replicas(),
                cluster.servers(),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
            (store, Some(Arc::new(packages)))
        }
        None => (sqlite.clone(), None),
    };
    let packages = PackageStore::open(&data_dir.join("packages"))?;
    // Logs: this node's own, or a replica of the cluster's log stream.
    let (log_sender, logs, cluster_logs) = match &cluster {
        Some(cluster) => {
            let stream = flare_cluster::logs::LogStream::open(
                cluster.jetstream().clone(),
                cluster.replicas(),
                settings.retention.logs,
                cluster.servers(),
            )
            .await
            .map_err(|e| anyhow::anyhow!(e.message))?;
            let (sender, applier, logs) = flare_store::logs::start_shipped(
                sqlite.path(),
                stream.ship(tokio::runtime::Handle::current()),
            )?;
            stream.apply(applier, logs.position_in(stream.made())?);
            (sender, logs, Some(Arc::new(stream)))
        }
        None => {
            let (sender, logs) = flare_store::logs::start(sqlite.path())?;
            (sender, logs, None)
        }
    };
    let mut runtime_config = RuntimeConfig::new(data_dir.join("cache"));
    runtime_config.pool_instances = settings.max_instances;
    runtime_config.egress = egress.clone();
    let runtime = Arc::new(WasmRuntime::new(runtime_config, log_sender.clone())?);
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let mut process_config = ProcessConfig::new(process_work_dir(data_dir)?);
    process_config.allow_unlimited = settings.allow_unlimited_workers;
    process_config.runsc = settings.runsc.clone();
    process_config.javac = settings.java.with_file_name("javac");
    process_config.java = settings.java.clone();
    // This binary is the launcher inside gVisor sandboxes.
    process_config.launcher = std::env::current_exe().ok();
    process_config.egress = egress.clone();
    if !flare_runtime_process::sandbox::can_limit_workers() {
        if settings.allow_unlimited_workers {
            tracing::warn!(
                "cgroups cannot limit workers' memory and processes on this host; --allow-unlimited-workers: process functions run without those limits"
            );
        } else {
            tracing::warn!(
                "cgroups cannot limit workers' memory and processes on this host: process functions will not start (pass --allow-unlimited-workers to run them anyway)"
            );
        }
    }
    let process = ProcessRuntime::new(process_config, log_sender.clone())?;
    process.start();
    let builder = Arc::new(SandboxBuilder {
        runtime: process.clone(),
        settings: settings.builds.clone(),
    });

    let executor = Executor::new(
        vec![runtime.clone(), Arc::new(process)],
        packages.clone(),
        log_sender,
        settings.body_timeout,
    );
    // The key secrets are sealed with, made on the first start.
    let sealer = Arc::new(match file_sealer {
        Some(sealer) => sealer,
        None => flare_access::seal::Sealer::open_dir(data_dir)?,
    });
    executor.set_sealer(sealer.clone());
    executor.keep_history();
    if let Some(provider) = &spans {
        executor.set_tracer(crate::telemetry::tracer(provider));
    }
    if let Some(shared) = &cluster_packages {
        executor.set_remote_packages(shared.clone());
    }
    // Async invocations: this node's own queue, or the cluster's, which
    // any node takes from.
    let queue: Arc<dyn InvocationQueue> = match &cluster {
        Some(cluster) => flare_cluster::invocations::NatsQueue::open(
            cluster.jetstream().clone(),
            cluster.replicas(),
            settings.retention.invocations,
            cluster.servers(),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?,
        None => Arc::new(SqliteQueue::open(sqlite.clone())?),
    };
    let tokens = flare_access::Tokens::new();
    let router = Router::new(executor.clone(), Some(queue.clone()), tokens.clone());
    let timers = Timers::new(store.clone(), executor.clone());
    // Triggers that consume on one node at a time take a lease, and none
    // may use the cluster's own NATS as its broker.
    let in_cluster = match &cluster {
        Some(cluster) => Some(flare_triggers::mq::InCluster {
            node: cluster.name().to_string(),
            leases: Arc::new(
                flare_cluster::leases::NatsLeases::open(
                    cluster.jetstream(),
                    cluster.replicas(),
                    cluster.name(),
                    cluster.servers(),
                )
                .await
                .map_err(|e| anyhow::anyhow!(e.message))?,
            ),
            reserved: match settings.cluster.as_ref().and_then(|c| c.creds.as_ref()) {
                Some(_) => None,
                None => {
                    let info = cluster.jetstream().client().server_info();
                    Some(flare_triggers::mq::ReservedNats {
                        server_id: info.server_id,
                        cluster: info.cluster,
                    })
                }
            },
        }),
        None => None,
    };
    let mq = MqTriggers::new(store.clone(), executor.clone(), in_cluster);
    let mut applied = vec![
        executor.applied(),
        router.applied(),
        timers.applied(),
        mq.applied(),
        tokens.applied(),
    ];
    tokio::spawn(tokens.clone().run(store.clone()));
    // In a cluster each node serves its share of every function's limits,
    // known before the first function is prepared.
    if let Some(cluster) = &cluster {
        share_limits(cluster, &executor).await;
        let (cluster, executor) = (cluster.clone(), executor.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(flare_cluster::HEARTBEAT).await;
                share_limits(&cluster, &executor).await;
            }
        });
    }
    // ... and an adaptive keep-alive learns from every node's idle times.
    if let Some(cluster) = &cluster {
        let exchange = flare_cluster::idle::IdleExchange::new(
            cluster.jetstream(),
            cluster.replicas(),
            cluster.name(),
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot open the idle-times bucket on NATS at {}: {e}",
                cluster.servers()
            )
        })?;
        let executor = executor.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(flare_cluster::idle::EXCHANGE).await;
                for (function, peers) in exchange.share(executor.idle_times()).await {
                    executor.learn_idle_times(&function, &peers);
                }
            }
        });
    }
    // ... and every node answers for its metric points, so charts show
    // the cluster.
    let cluster_metrics = match &cluster {
        Some(cluster) => {
            let executor = executor.clone();
            let exchange = flare_cluster::metrics::MetricsExchange::new(
                cluster.jetstream().client(),
                move |function| {
                    serde_json::to_vec(&executor.shared_history(function)).unwrap_or_default()
                },
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot answer metrics requests on NATS at {}: {e}",
                    cluster.servers()
                )
            })?;
            Some(Arc::new(exchange))
        }
        None => None,
    };
    tokio::spawn(executor.clone().run(store.clone()));
    tokio::spawn(router.clone().run(store.clone()));
    tokio::spawn(timers.run());
    tokio::spawn(mq.clone().run());
    tokio::spawn(AsyncInvoker::new(queue.clone(), executor.clone(), egress).run(store.revision()));
    tokio::spawn(collect_garbage(
        sqlite.clone(),
        store.clone(),
        packages.clone(),
        runtime.clone(),
        settings.retention,
        settings.gc_interval,
    ));

    let admin_token = flare_api::access::bootstrap_admin(&*store, data_dir, args_new_admin_token)?;

    // Serve only once everything stored before the start is deployed.
    let revision = store.revision();
    for applied in &mut applied {
        applied
            .wait_for(|r| *r >= revision)
            .await
            .context("executor or router stopped while starting")?;
    }

    let api = Api::new(ApiParts {
        store: store.clone(),
        packages,
        executor: executor.clone(),
        logs,
        queue: queue.clone(),
        local: sqlite.clone(),
        mq,
        applied,
        max_package_bytes: settings.max_package_bytes,
        tokens,
        sealer,
        membership,
        cluster_packages,
        cluster_logs,
        cluster_metrics,
        builder: Some(builder),
    });
    // A cluster sees this node from its first heartbeat on.
    let heartbeat = cluster.as_ref().map(|cluster| {
        let executor = executor.clone();
        cluster.heartbeat(move || {
            let (functions_warm, busy) = executor.load();
            flare_cluster::Load {
                functions_warm,
                busy,
            }
        })
    });
    // Tests and scripts read these two lines to find ports chosen by the OS.
    println!(
        "router listening on {scheme}://{}",
        router_listener.local_addr()?
    );
    println!("api listening on {scheme}://{}", api_listener.local_addr()?);
    if let Some(path) = admin_token {
        // stderr, not stdout: whoever reads the two lines above may have
        // closed stdout by now.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "a new admin token is in {path} (readable only by this user); use it with\n  flare login --api {scheme}://{api} --token \"$(cat {path})\"",
            path = path.display(),
            api = api_listener.local_addr()?,
        );
    }
    tracing::info!(
        data_dir = %data_dir.display(),
        functions = executor.deployed(),
        routes = router.table().len(),
        pooling = runtime.pooling(),
        "flare is serving"
    );

    // Canaries step on every node, one write per interval.
    tokio::spawn(flare_api::canaries::run(api.clone()));
    tokio::spawn(flare_api::builds::resume(api.clone()));
    let app = flare_api::router(api);
    let api_server = flare_router::listen::accept_loop(
        api_listener,
        tls.clone(),
        shutdown_signal(),
        move |stream| {
            let app = app.clone();
            async move {
                // Each request learns where it came from (health answers
                // loopback without a token).
                let peer = stream
                    .peer_addr()
                    .ok()
                    .map(|a| flare_api::access::Peer(a.ip()));
                let service = hyper::service::service_fn(
                    move |mut request: hyper::Request<hyper::body::Incoming>| {
                        if let Some(peer) = peer {
                            request.extensions_mut().insert(peer);
                        }
                        tower_service::Service::call(&mut app.clone(), request)
                    },
                );
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("API connection ended: {e}");
                }
            }
        },
    );
    tokio::select! {
        served = router.serve(router_listener, tls, shutdown_signal()) => served.context("router failed")?,
        served = api_server => served.context("API failed")?,
    }
    tracing::info!("shutting down");
    if let Some(provider) = spans {
        // What is still batched goes out, within the export timeout.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(15), flushed).await {
            tracing::warn!("spans not all exported at shutdown: {e}");
        }
    }
    if let (Some(cluster), Some(heartbeat)) = (cluster, heartbeat) {
        heartbeat.abort();
        cluster.leave().await;
    }
    Ok(())
}

/// The retention pass, every `interval` from the start: log lines and
/// finished invocations past their retention, packages and compiled code
/// no function has used for the package retention.
async fn collect_garbage(
    store: Arc<SqliteStore>,
    resources: Arc<dyn Store>,
    packages: PackageStore,
    runtime: Arc<WasmRuntime>,
    retention: Retention,
    interval: Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (store, resources, packages, runtime) = (
            store.clone(),
            resources.clone(),
            packages.clone(),
            runtime.clone(),
        );
        let pass = tokio::task::spawn_blocking(move || {
            let collected =
                flare_store::retention::collect(&store, &*resources, &packages, &retention)?;
            let artifacts = runtime.prune_cache(&collected.in_use, retention.packages);
            anyhow::Ok((collected, artifacts))
        })
        .await;
        match pass {
            Ok(Ok((c, artifacts))) => tracing::info!(
                log_lines = c.log_lines,
                invocations = c.invocations,
                packages = c.packages,
                package_bytes = c.package_bytes,
                audit_entries = c.audit_entries,
                compiled = artifacts,
                "retention pass"
            ),
            Ok(Err(e)) => tracing::error!("retention pass failed: {e:#}"),
            Err(e) => tracing::error!("retention pass failed: {e}"),
        }
    }
}

/// Gives the executor this node's share of the cluster as the live nodes
/// stand now; while they cannot be listed (NATS away) the last share holds.
async fn share_limits(cluster: &flare_cluster::Cluster, executor: &Executor) {
    match cluster.nodes().await {
        Ok(nodes) => executor.set_share(flare_executor::Share::among(
            cluster.name(),
            nodes.iter().map(|n| n.name.as_str()),
        )),
        Err(e) => tracing::debug!("the cluster's nodes: {e}"),
    }
}

/// The build settings from the flags: the registries' hosts are allowed.
fn build_settings(
    hosts: Vec<String>,
    pip_index_url: Option<String>,
    npm_registry: Option<String>,
    timeout: Option<Duration>,
) -> anyhow::Result<BuildSettings> {
    let mut settings = BuildSettings::default();
    if !hosts.is_empty() {
        settings.allowed_hosts = hosts;
    }
    for (flag, url) in [
        ("--pip-index-url", &pip_index_url),
        ("--npm-registry", &npm_registry),
    ] {
        let Some(url) = url else { continue };
        let parsed = url
            .parse::<axum::http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .with_context(|| format!("{flag} {url:?} is not an http(s) URL"))?;
        let host = parsed
            .host()
            .with_context(|| format!("{flag} {url:?} names no host"))?;
        settings.allowed_hosts.push(match parsed.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        });
    }
    settings.pip_index_url = pip_index_url;
    settings.npm_registry = npm_registry;
    if let Some(timeout) = timeout {
        settings.timeout = timeout;
    }
    Ok(settings)
}

/// Builds functions' sources in the process runtime's build sandbox.
struct SandboxBuilder {
    runtime: ProcessRuntime,
    settings: BuildSettings,
}

impl flare_api::builds::Builder for SandboxBuilder {
    fn build<'a>(
        &'a self,
        runtime: flare_model::EnvironmentRuntime,
        source: &'a Path,
        out: &'a Path,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<Output = flare_model::Result<flare_api::builds::BuildOutcome>>
                + Send
                + 'a,
        >,
    > {
        Box::pin(async move {
            let built = self
                .runtime
                .build(runtime, source, out, &self.settings)
                .await?;
            Ok(flare_api::builds::BuildOutcome {
                ok: built.ok,
                message: built.message,
                log: built.log,
            })
        })
    }
}
