//! Flare's controller: the REST API under `/v1` and the typed [`Client`]
//! the CLI uses to call it.
//!
//! The API is the only writer of the store. It validates everything before
//! it writes (nothing invalid is stored), uploads packages streamed and
//! size-limited, validates and compiles wasm before the function is stored,
//! and answers a write only once the executor and router have applied it,
//! so a `curl` right after `flare fn create` is served.
//!
//! Errors are [`flare_model::Error`]s; [`ApiError`] turns them into the
//! JSON body and status chosen by [`flare_model::ErrorCode::status`].

pub mod access;
mod aliases;
mod browsers;
pub mod builds;
pub mod canaries;
pub mod client;
mod crud;
mod environments;
mod error;
mod functions;
mod invocations;
mod logs;
mod mqtriggers;
mod namespaces;
mod nodes;
mod schema;
mod secrets;
mod timers;
mod triggers;
mod ui;
pub mod versions;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{any, get, post};
use flare_executor::Executor;
use flare_store::logs::Logs;
use flare_store::{PackageStore, Revision, Store};
use tokio::sync::{Mutex, watch};

pub use client::{Client, InvokeResponse, Upload, UploadWatcher};
pub use environments::EnvironmentView;
pub use error::ApiError;
pub use functions::{FunctionView, MetricsView};
pub use mqtriggers::MqTriggerView;
pub use secrets::KeysView;

/// The OpenAPI 3 description of this API, served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest package accepted unless configured otherwise.
pub const DEFAULT_MAX_PACKAGE_BYTES: u64 = 64 << 20;

/// What the handlers share.
pub struct Api {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) packages: PackageStore,
    pub(crate) executor: Arc<Executor>,
    pub(crate) logs: Arc<Logs>,
    pub(crate) queue: Arc<dyn flare_store::invocations::InvocationQueue>,
    /// This node's database: its audit trail.
    pub(crate) local: Arc<flare_store::SqliteStore>,
    pub(crate) mq: Arc<flare_triggers::mq::MqTriggers>,
    /// Revisions applied by the components that serve what the API writes.
    pub(crate) applied: Vec<watch::Receiver<Revision>>,
    /// Serializes writes whose validity depends on other resources (a
    /// trigger's function must exist; a function in use cannot go).
    pub(crate) cross_checks: Mutex<()>,
    pub(crate) max_package_bytes: u64,
    pub(crate) tokens: Arc<flare_access::Tokens>,
    pub(crate) sealer: Arc<flare_access::seal::Sealer>,
    pub(crate) membership: flare_cluster::Membership,
    pub(crate) cluster_packages: Option<Arc<flare_cluster::packages::NatsPackages>>,
    pub(crate) cluster_logs: Option<Arc<flare_cluster::logs::LogStream>>,
    pub(crate) cluster_metrics: Option<Arc<flare_cluster::metrics::MetricsExchange>>,
    pub(crate) builder: Option<Arc<dyn builds::Builder>>,
}

/// The components the API is built on.
pub struct ApiParts {
    pub store: Arc<dyn Store>,
    pub packages: PackageStore,
    pub executor: Arc<Executor>,
    pub logs: Arc<Logs>,
    /// The queue of asynchronous invocations.
    pub queue: Arc<dyn flare_store::invocations::InvocationQueue>,
    /// This node's own database (its audit trail), in cluster mode too.
    pub local: Arc<flare_store::SqliteStore>,
    pub mq: Arc<flare_triggers::mq::MqTriggers>,
    /// Revisions applied by the components that serve what the API writes.
    pub applied: Vec<watch::Receiver<Revision>>,
    pub max_package_bytes: u64,
    /// The valid tokens; `applied` should include its revision.
    pub tokens: Arc<flare_access::Tokens>,
    /// Seals secret values before they are stored.
    pub sealer: Arc<flare_access::seal::Sealer>,
    /// This node alone, or its cluster (`GET /v1/nodes`).
    pub membership: flare_cluster::Membership,
    /// In cluster mode, where uploaded packages go so every node has them.
    pub cluster_packages: Option<Arc<flare_cluster::packages::NatsPackages>>,
    /// In cluster mode, the log stream every node keeps a replica of.
    pub cluster_logs: Option<Arc<flare_cluster::logs::LogStream>>,
    /// In cluster mode, where a function's metric points of every node
    /// are gathered.
    pub cluster_metrics: Option<Arc<flare_cluster::metrics::MetricsExchange>>,
    /// What builds functions' sources; `None`: sources are refused.
    pub builder: Option<Arc<dyn builds::Builder>>,
}

impl Api {
    /// A write to the store, on a blocking thread: it waits for its fsync,
    /// which must not hold an async worker that serves invocations.
    pub(crate) async fn write(
        &self,
        op: impl FnOnce(&dyn Store) -> flare_model::Result<flare_store::Written> + Send + 'static,
    ) -> flare_model::Result<flare_store::Written> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&*store))
            .await
            .map_err(|e| flare_model::Error::internal(format!("store task failed: {e}")))?
    }

    /// In cluster mode, puts a package this node stores where every node
    /// can fetch it.
    pub(crate) async fn share_package(
        &self,
        package: &flare_model::PackageRef,
    ) -> flare_model::Result<()> {
        match &self.cluster_packages {
            Some(shared) => shared.publish(&self.packages, package).await,
            None => Ok(()),
        }
    }

    pub fn new(parts: ApiParts) -> Arc<Self> {
        Arc::new(Api {
            store: parts.store,
            packages: parts.packages,
            executor: parts.executor,
            logs: parts.logs,
            queue: parts.queue,
            local: parts.local,
            mq: parts.mq,
            applied: parts.applied,
            cross_checks: Mutex::new(()),
            max_package_bytes: parts.max_package_bytes,
            tokens: parts.tokens,
            sealer: parts.sealer,
            membership: parts.membership,
            cluster_packages: parts.cluster_packages,
            cluster_logs: parts.cluster_logs,
            cluster_metrics: parts.cluster_metrics,
            builder: parts.builder,
        })
    }

    /// Waits until every serving component has applied `revision`. The
    /// write is durable either way; this only makes it visible on return.
    pub(crate) async fn settle(&self, revision: Revision) {
        for applied in &self.applied {
            let mut applied = applied.clone();
            let caught_up = tokio::time::timeout(
                Duration::from_secs(10),
                applied.wait_for(|r| *r >= revision),
            )
            .await;
            if !matches!(caught_up, Ok(Ok(_))) {
                tracing::warn!("revision {revision} not applied within 10s");
            }
        }
    }
}

/// The axum router for the API port.
pub fn router(api: Arc<Api>) -> Router {
    let uploads = DefaultBodyLimit::disable();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/ui", get(ui::redirect))
        .route("/ui/", get(ui::index))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .route("/v1/spec.schema.json", get(spec_schema))
        .route("/metrics", get(metrics))
        .route("/v1/whoami", get(access::whoami))
        .route("/v1/nodes", get(nodes::list))
        .route("/v1/audit", get(access::audit))
        .route("/v1/tokens", get(access::list).post(access::create))
        .route("/v1/tokens/{name}", get(access::get).delete(access::revoke))
        .route(
            "/v1/packages",
            get(builds::list)
                .post(functions::upload_package)
                .layer(uploads),
        )
        .route("/v1/packages/{name}", get(builds::get))
        .route("/v1/packages/{name}/log", get(builds::log))
        .route(
            "/v1/functions",
            get(functions::list).post(functions::create).layer(uploads),
        )
        .route(
            "/v1/functions/{name}",
            get(functions::get)
                .put(functions::update)
                .delete(functions::delete)
                .layer(uploads),
        )
        .route("/v1/functions/{name}/logs", get(logs::query))
        .route("/v1/functions/{name}/metrics", get(functions::metrics))
        .route("/v1/functions/{name}/versions", get(versions::list))
        .route("/v1/functions/{name}/rollback", post(versions::rollback))
        .route("/v1/functions/{name}/invoke", any(functions::invoke))
        .route(
            "/v1/functions/{name}/invoke/{*rest}",
            any(functions::invoke),
        )
        .route(
            "/v1/environments",
            get(environments::list).post(environments::create),
        )
        .route(
            "/v1/environments/{name}",
            get(environments::get)
                .put(environments::update)
                .delete(environments::delete),
        )
        .route(
            "/v1/mqtriggers",
            get(mqtriggers::list).post(mqtriggers::create),
        )
        .route(
            "/v1/mqtriggers/{name}",
            get(mqtriggers::get)
                .put(mqtriggers::update)
                .delete(mqtriggers::delete),
        )
        .route(
            "/v1/namespaces",
            get(namespaces::list).post(namespaces::create),
        )
        .route(
            "/v1/namespaces/{name}",
            get(namespaces::get)
                .put(namespaces::update)
                .delete(namespaces::delete),
        )
        .route(
            "/v1/secrets",
            get(secrets::list_secrets).post(secrets::create_secret),
        )
        .route(
            "/v1/secrets/{name}",
            get(secrets::get_secret)
                .put(secrets::update_secret)
                .delete(secrets::delete_secret),
        )
        .route(
            "/v1/configs",
            get(secrets::list_configs).post(secrets::create_config),
        )
        .route(
            "/v1/configs/{name}",
            get(secrets::get_config)
                .put(secrets::update_config)
                .delete(secrets::delete_config),
        )
        .route("/v1/invocations", get(invocations::list))
        .route("/v1/invocations/{id}", get(invocations::get))
        .route("/v1/invocations/{id}/retry", post(invocations::retry))
        .route("/v1/timertriggers", get(timers::list).post(timers::create))
        .route(
            "/v1/timertriggers/{name}",
            get(timers::get).put(timers::update).delete(timers::delete),
        )
        .route("/v1/canaries", get(canaries::list).post(canaries::create))
        .route(
            "/v1/canaries/{name}",
            get(canaries::get).delete(canaries::delete),
        )
        .route("/v1/aliases", get(aliases::list).post(aliases::create))
        .route(
            "/v1/aliases/{name}",
            get(aliases::get)
                .put(aliases::update)
                .delete(aliases::delete),
        )
        .route(
            "/v1/httptriggers",
            get(triggers::list).post(triggers::create),
        )
        .route(
            "/v1/httptriggers/{name}",
            get(triggers::get)
                .put(triggers::update)
                .delete(triggers::delete),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            access::authorize,
        ))
        .fallback(|| async {
            ApiError(flare_model::Error::new(
                flare_model::ErrorCode::NotFound,
                "no such API endpoint; see /v1/openapi.json",
            ))
        })
        .layer(axum::middleware::from_fn(browsers::same_origin))
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(api)
}

async fn metrics(
    axum::extract::State(api): axum::extract::State<Arc<Api>>,
) -> impl axum::response::IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.executor.render_metrics(),
    )
}

/// The JSON Schema of spec files, for editors.
async fn spec_schema() -> axum::Json<&'static serde_json::Value> {
    axum::Json(schema::spec_schema())
}

async fn openapi() -> impl axum::response::IntoResponse {
    ([(http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}
