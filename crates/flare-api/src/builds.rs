//! Server-side builds (`/v1/packages/{name}`): a function created or
//! updated with its source (a multipart `source` part instead of `code`)
//! is answered at once with a `Package` record; the build runs on this
//! node, in the process runtime's build sandbox ([`Builder`]), and only
//! when it succeeds is the function created or updated with the package
//! it made. A failed build changes nothing the function serves; its
//! record keeps the log.
//!
//! A build interrupted by a restart runs again when its node starts.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use flare_model::{
    BuildState, BuildStatus, DEFAULT_NAMESPACE, Document, EnvironmentRuntime, EnvironmentSpec,
    Error, FunctionSpec, Kind, Metadata, PackageSpec, Resource, Result,
};
use futures::future::BoxFuture;

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

pub type Package = Resource<PackageSpec>;

/// How a build ended, when it could be run at all.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub ok: bool,
    /// Why it failed, in one line.
    pub message: String,
    pub log: String,
}

/// Makes a package from a source archive: the process runtime's build
/// sandbox, in the server.
pub trait Builder: Send + Sync {
    /// Builds `source` for an environment of `runtime` into `out`. `Err`
    /// is a build that could not be run; a failed one is `ok: false`.
    fn build<'a>(
        &'a self,
        runtime: EnvironmentRuntime,
        source: &'a Path,
        out: &'a Path,
    ) -> BoxFuture<'a, Result<BuildOutcome>>;
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The environment runtime a source of `function` is built for.
fn runtime_of(api: &Api, function: &FunctionSpec) -> Result<(String, EnvironmentRuntime)> {
    let Some(environment) = &function.environment else {
        return Err(Error::invalid(
            "a source is built for an environment: name one (--env)",
        ));
    };
    let env: Resource<EnvironmentSpec> = Resource::from_document(api.store.get(
        Kind::Environment,
        DEFAULT_NAMESPACE,
        environment,
    )?)?;
    match env.spec.runtime {
        runtime @ (EnvironmentRuntime::Python | EnvironmentRuntime::Node) => {
            Ok((environment.clone(), runtime))
        }
        _ => Err(Error::invalid(format!(
            "environment \"{environment}\" is not python or node; Flare builds only those, send a built package (--code)"
        ))),
    }
}

/// Accepts a build of `function`, whose `spec.package` is its stored
/// source: records it (pending) and starts it. `update`: the function
/// exists and is updated when the build succeeds; otherwise created.
pub(crate) async fn submit(
    api: &Arc<Api>,
    function: Resource<FunctionSpec>,
    update: bool,
) -> Result<Package> {
    let Some(builder) = api.builder.clone() else {
        return Err(Error::invalid(
            "this server does not build sources; send a built package (--code)",
        ));
    };
    let (environment, _) = runtime_of(api, &function.spec)?;
    let namespace = function.metadata.namespace.clone();
    let target = serde_json::to_value(function.to_document()?)
        .map_err(|e| Error::internal(e.to_string()))?;
    let written = {
        // Numbers are given out one at a time.
        let _guard = api.cross_checks.lock().await;
        let next = of(api, &namespace, function.name())?
            .iter()
            .filter_map(|p| number(&p.metadata.name, function.name()))
            .max()
            .unwrap_or(0)
            + 1;
        let package = Package {
            api_version: flare_model::API_VERSION.into(),
            kind: Kind::Package,
            metadata: Metadata {
                namespace,
                ..Metadata::named(format!("{}-b{next}", function.name()))
            },
            spec: PackageSpec {
                function: function.name().to_string(),
                environment,
                source: function.spec.package.clone(),
                target,
                update,
                status: BuildStatus {
                    node: api.membership.node_name().map(str::to_string),
                    ..BuildStatus::default()
                },
            },
        };
        let doc = package.to_document()?;
        api.write(move |store| store.create(doc)).await?
    };
    let package = Package::from_document(written.doc)?;
    tokio::spawn(run(api.clone(), builder, package.clone()));
    Ok(package)
}

/// `N` of a package named `<function>-b<N>`.
fn number(name: &str, function: &str) -> Option<u64> {
    name.strip_prefix(function)?
        .strip_prefix("-b")?
        .parse()
        .ok()
}

/// The builds of `function` in `namespace`, in no order.
fn of(api: &Api, namespace: &str, function: &str) -> Result<Vec<Package>> {
    Ok(crud::all::<PackageSpec>(&*api.store)?
        .into_iter()
        .filter(|p| p.metadata.namespace == namespace && p.spec.function == function)
        .collect())
}

/// Writes `package`'s status (the record may have been deleted with its
/// function: then there is nothing to write).
async fn set_status(api: &Api, package: &mut Package, status: BuildStatus) {
    package.spec.status = status;
    let doc = match package.to_document() {
        Ok(doc) => doc,
        Err(e) => {
            tracing::warn!("build {}: {e}", package.metadata.name);
            return;
        }
    };
    match api.write(move |store| store.update(doc)).await {
        Ok(written) => {
            if let Ok(updated) = Package::from_document(written.doc) {
                *package = updated;
            }
        }
        Err(e) => tracing::warn!("build {}: status not stored: {e}", package.metadata.name),
    }
}

/// Runs one build to its end and stores how it went.
async fn run(api: Arc<Api>, builder: Arc<dyn Builder>, mut package: Package) {
    let started = BuildStatus {
        state: BuildState::Running,
        started_at: Some(now_secs()),
        ..package.spec.status.clone()
    };
    set_status(&api, &mut package, started).await;
    let mut status = package.spec.status.clone();
    match build_and_serve(&api, &*builder, &package).await {
        Ok((built, version, log)) => {
            status.state = BuildState::Succeeded;
            status.package = Some(built);
            status.version = version;
            status.log = log;
        }
        Err((message, log)) => {
            status.state = BuildState::Failed;
            status.message = Some(message);
            status.log = log;
        }
    }
    status.finished_at = Some(now_secs());
    set_status(&api, &mut package, status).await;
}

/// The build, then the function created or updated with its package:
/// the package, the version the function serves and the log; or why it
/// failed, and the log.
async fn build_and_serve(
    api: &Arc<Api>,
    builder: &dyn Builder,
    package: &Package,
) -> std::result::Result<(flare_model::PackageRef, Option<u64>, String), (String, String)> {
    let spec = &package.spec;
    let target: Document = serde_json::from_value(spec.target.clone()).map_err(|e| {
        (
            format!("the stored function document is unreadable: {e}"),
            String::new(),
        )
    })?;
    let mut function =
        crate::functions::decode_function(target).map_err(|e| (e.message, String::new()))?;
    let runtime = runtime_of(api, &function.spec)
        .map_err(|e| (e.message, String::new()))?
        .1;
    let out = api
        .packages
        .scratch()
        .map_err(|e| (e.message, String::new()))?;
    let outcome = builder
        .build(runtime, &api.packages.path(&spec.source), out.path())
        .await
        .map_err(|e| {
            (
                format!("the build could not run: {}", e.message),
                String::new(),
            )
        })?;
    let log = outcome.log;
    if !outcome.ok {
        return Err((outcome.message, log));
    }
    let failed = |e: Error| (e.message, log.clone());
    let file = tokio::fs::File::open(out.path())
        .await
        .map_err(|e| failed(Error::internal(format!("cannot read the package: {e}"))))?;
    let stream = tokio_util::io::ReaderStream::new(file);
    let staged = api
        .packages
        .stage(stream, api.max_package_bytes)
        .await
        .map_err(failed)?;
    function.spec.package = staged.package().clone();
    api.executor
        .check(&function.spec, staged.path())
        .await
        .map_err(failed)?;
    let built = staged.commit().map_err(failed)?;
    api.share_package(&built).await.map_err(failed)?;
    let served = if spec.update {
        let current = api
            .store
            .get(
                Kind::Function,
                &function.metadata.namespace,
                function.name(),
            )
            .and_then(Resource::<FunctionSpec>::from_document)
            .map_err(failed)?;
        // The function as it is now, with what this build was sent with.
        function.metadata.generation = current.metadata.generation;
        crate::functions::store_update(api, function, &current).await
    } else {
        crate::functions::store_create(api, function).await
    }
    .map_err(|e| {
        (
            format!(
                "the package was built, but the function was not stored: {}",
                e.message
            ),
            log.clone(),
        )
    })?;
    Ok((built, Some(served.metadata.version), log))
}

/// Runs again the builds this node had accepted and not finished when it
/// stopped. Call once at start.
pub async fn resume(api: Arc<Api>) {
    let Some(builder) = api.builder.clone() else {
        return;
    };
    let node = api.membership.node_name().map(str::to_string);
    let unfinished = match crud::all::<PackageSpec>(&*api.store) {
        Ok(all) => all
            .into_iter()
            .filter(|p| !p.spec.status.state.finished() && p.spec.status.node == node),
        Err(e) => {
            tracing::warn!("unfinished builds not resumed: {e}");
            return;
        }
    };
    for package in unfinished.collect::<Vec<_>>() {
        tokio::spawn(run(api.clone(), builder.clone(), package));
    }
}

/// Deletes the build records of a deleted function.
pub(crate) async fn forget(api: &Api, namespace: &str, function: &str) {
    let Ok(packages) = of(api, namespace, function) else {
        return;
    };
    for package in packages {
        let (namespace, name) = (namespace.to_string(), package.metadata.name);
        if let Err(e) = api
            .write(move |store| store.delete(Kind::Package, &namespace, &name))
            .await
        {
            tracing::warn!("a build of function {function:?} was kept: {e}");
        }
    }
}

/// A record as listed: without its log (`/log` has it).
fn summary(mut package: Package) -> Package {
    package.spec.status.log = String::new();
    package
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<Package>>> {
    let mut all: Vec<Package> = crud::all_in(&*api.store, &scope)?;
    all.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(Json(all.into_iter().map(summary).collect()))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<Package>> {
    Ok(Json(summary(crud::get(&api, &scope, &name)?)))
}

/// The build's log, as text.
pub(crate) async fn log(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<axum::response::Response> {
    let package: Package = crud::get(&api, &scope, &name)?;
    Ok((
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        package.spec.status.log,
    )
        .into_response())
}

/// The answer to a create or update with a source: 202 and the record.
pub(crate) fn accepted(package: Package) -> axum::response::Response {
    (http::StatusCode::ACCEPTED, Json(summary(package))).into_response()
}
