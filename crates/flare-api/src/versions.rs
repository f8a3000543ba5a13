//! Function versions: every change to a function's spec (its code or its
//! configuration) is recorded as a new version that is never rewritten;
//! `rollback` serves an earlier one again, at once.
//!
//! A version is a `FunctionVersion` document named `<function>-v<N>`,
//! written before the function that serves it, so a function never serves
//! a version that is not stored. The function's `metadata.version` says
//! which one it serves.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Path, State};
use flare_model::{
    Error, ErrorCode, FunctionSpec, FunctionVersionSpec, Kind, Metadata, Resource, Result,
};
use serde::{Deserialize, Serialize};

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, FunctionView};

/// One version as `flare fn versions` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VersionView {
    pub version: u64,
    /// When it was recorded (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    pub spec: FunctionSpec,
    /// Whether the function serves it now.
    pub serving: bool,
}

/// What `rollback` is asked for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rollback {
    pub version: u64,
}

/// The versions of `function` in `namespace`, oldest first.
pub(crate) fn of(
    api: &Api,
    namespace: &str,
    function: &str,
) -> Result<Vec<Resource<FunctionVersionSpec>>> {
    let mut versions: Vec<Resource<FunctionVersionSpec>> =
        crate::crud::all::<FunctionVersionSpec>(&*api.store)?
            .into_iter()
            .filter(|v| v.metadata.namespace == namespace && v.spec.function == function)
            .collect();
    versions.sort_by_key(|v| v.spec.version);
    Ok(versions)
}

/// Gives `function` its version: the one `current` serves when the spec
/// did not change, else a new one, recorded here. Call under the API's
/// cross-checks lock, before the function is written.
pub(crate) async fn record(
    api: &Api,
    function: &mut Resource<FunctionSpec>,
    current: Option<&Resource<FunctionSpec>>,
) -> Result<()> {
    if let Some(current) = current
        && current.metadata.version != 0
        && current.spec == function.spec
    {
        function.metadata.version = current.metadata.version;
        return Ok(());
    }
    let namespace = function.metadata.namespace.clone();
    let next = of(api, &namespace, function.name())?
        .last()
        .map_or(0, |v| v.spec.version)
        + 1;
    let version = Resource {
        api_version: flare_model::API_VERSION.into(),
        kind: Kind::FunctionVersion,
        metadata: Metadata {
            namespace,
            ..Metadata::named(FunctionVersionSpec::name_of(function.name(), next))
        },
        spec: FunctionVersionSpec {
            function: function.name().to_string(),
            version: next,
            spec: function.spec.clone(),
        },
    }
    .to_document()?;
    api.write(move |store| match store.create(version.clone()) {
        // Left by a write that failed after it: never served, replaced.
        Err(e) if e.code == ErrorCode::AlreadyExists => store.update(version),
        written => written,
    })
    .await?;
    function.metadata.version = next;
    Ok(())
}

/// Deletes the versions and aliases of a deleted function. What cannot be deleted now
/// is logged: it is never served, and its package is kept until then.
pub(crate) async fn forget(api: &Api, namespace: &str, function: &str) {
    let versions = match of(api, namespace, function) {
        Ok(versions) => versions,
        Err(e) => {
            tracing::warn!("the versions of function {function:?} were kept: {e}");
            return;
        }
    };
    let aliases: Vec<String> = crate::crud::all::<flare_model::AliasSpec>(&*api.store)
        .map(|all| {
            all.into_iter()
                .filter(|a| a.metadata.namespace == namespace && a.spec.function == function)
                .map(|a| a.metadata.name)
                .collect()
        })
        .unwrap_or_default();
    for alias in aliases {
        let namespace = namespace.to_string();
        let gone = api
            .write(move |store| store.delete(Kind::Alias, &namespace, &alias))
            .await;
        if let Err(e) = gone {
            tracing::warn!("an alias of function {function:?} was kept: {e}");
        }
    }
    for version in versions {
        let (namespace, name) = (namespace.to_string(), version.metadata.name);
        let gone = api
            .write(move |store| store.delete(Kind::FunctionVersion, &namespace, &name))
            .await;
        if let Err(e) = gone {
            tracing::warn!("a version of function {function:?} was kept: {e}");
        }
    }
}

/// `GET /v1/functions/{name}/versions`
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<VersionView>>> {
    let function = api.load(&scope, &name)?;
    let views = of(&api, scope.one()?, &name)?
        .into_iter()
        .map(|v| VersionView {
            serving: v.spec.version == function.metadata.version,
            version: v.spec.version,
            created_at: v.metadata.created_at,
            spec: v.spec.spec,
        })
        .collect();
    Ok(Json(views))
}

/// Makes function `name` of `namespace` serve its version `version`,
/// checked as any update is (environment, quotas, secrets).
pub(crate) async fn serve(
    api: &Api,
    namespace: &str,
    name: &str,
    version: u64,
) -> Result<Resource<FunctionSpec>> {
    let guard = api.cross_checks.lock().await;
    let mut function =
        Resource::<FunctionSpec>::from_document(api.store.get(Kind::Function, namespace, name)?)?;
    let versions = of(api, namespace, name)?;
    let Some(target) = versions.iter().find(|v| v.spec.version == version) else {
        let known = match (versions.first(), versions.last()) {
            (Some(first), Some(last)) => {
                format!(
                    "it has versions {} to {}",
                    first.spec.version, last.spec.version
                )
            }
            _ => "it has none yet (versions are kept from its next update on)".into(),
        };
        return Err(Error::new(
            ErrorCode::NotFound,
            format!("function \"{name}\" has no version {version}; {known}"),
        ));
    };
    function.spec = target.spec.spec.clone();
    function.metadata.version = target.spec.version;
    // Whatever changed since (an environment, the quotas, a secret) is
    // checked as for any update.
    api.check_environment(&function.spec)?;
    api.check_quota(&function)?;
    crate::secrets::check_references(api, &function)?;
    // Kept from the retention pass while it is served again (in a
    // cluster it may be in the object store only: the executor fetches it).
    let _ = api.packages.touch(&function.spec.package);
    let doc = function.to_document()?;
    let written = api.write(move |store| store.update(doc)).await?;
    drop(guard);
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}

/// `POST /v1/functions/{name}/rollback` with `{"version": N}`: the
/// function serves version N again, checked as any update is.
pub(crate) async fn rollback(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<FunctionView>> {
    let asked: Rollback = serde_json::from_slice(&body).map_err(|e| {
        Error::invalid(format!(
            "invalid rollback request: {e} (send {{\"version\": N}})"
        ))
    })?;
    let served = serve(&api, scope.one()?, &name, asked.version).await?;
    Ok(Json(api.view(served)))
}
