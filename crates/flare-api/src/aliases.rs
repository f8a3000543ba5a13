//! `/v1/aliases`: names for versions of a function (`prod` -> 3), which
//! HTTP triggers serve instead of the latest version.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_model::{
    AliasSpec, Error, ErrorCode, FunctionVersionSpec, HttpTriggerSpec, Kind, Resource, Result,
};
use http::StatusCode;

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

type Alias = Resource<AliasSpec>;

/// Version `version` of `function` exists in `namespace`.
pub(crate) fn requires_version(
    api: &Api,
    namespace: &str,
    function: &str,
    version: u64,
) -> Result<()> {
    crate::triggers::requires_function(api, namespace, function)?;
    let name = FunctionVersionSpec::name_of(function, version);
    match api.store.get(Kind::FunctionVersion, namespace, &name) {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::NotFound => {
            let known = crate::versions::of(api, namespace, function)?;
            let known = match (known.first(), known.last()) {
                (Some(first), Some(last)) => {
                    format!(
                        "it has versions {} to {}",
                        first.spec.version, last.spec.version
                    )
                }
                _ => "it has none yet".into(),
            };
            Err(Error::invalid(format!(
                "function \"{function}\" has no version {version}; {known} (flare fn versions --name {function})"
            )))
        }
        Err(e) => Err(e),
    }
}

/// The alias `alias` of `function` exists in `namespace`.
pub(crate) fn requires_alias(
    api: &Api,
    namespace: &str,
    function: &str,
    alias: &str,
) -> Result<()> {
    match api.store.get(Kind::Alias, namespace, alias) {
        Ok(doc) => {
            let alias_of = Resource::<AliasSpec>::from_document(doc)?;
            if alias_of.spec.function != function {
                return Err(Error::invalid(format!(
                    "alias \"{alias}\" names a version of function \"{}\", not of \"{function}\"",
                    alias_of.spec.function
                )));
            }
            Ok(())
        }
        Err(e) if e.code == ErrorCode::NotFound => Err(Error::invalid(format!(
            "alias \"{alias}\" does not exist in namespace \"{namespace}\"; create it first (flare alias create)"
        ))),
        Err(e) => Err(e),
    }
}

fn check(api: &Api, alias: &Alias) -> Result<()> {
    requires_version(
        api,
        &alias.metadata.namespace,
        &alias.spec.function,
        alias.spec.version,
    )
}

fn decode(body: &[u8], scope: &Scope) -> Result<Alias> {
    let alias: Alias = crud::decode(body, scope)?;
    alias.validate()?;
    Ok(alias)
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<Alias>>> {
    Ok(Json(crud::all_in(&*api.store, &scope)?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Alias>> {
    Ok(Json(crud::get(&api, &scope, &name)?))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Alias>)> {
    let alias = decode(&body, &scope)?;
    let created = crud::create(&api, alias, check).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Moves an alias to another version: the routes that serve it follow.
pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<Alias>> {
    let alias = decode(&body, &scope)?;
    let current: Alias = crud::get(&api, &scope, &name)?;
    if current.spec.function != alias.spec.function {
        return Err(Error::invalid(format!(
            "alias \"{name}\" names versions of function \"{}\"; it cannot move to another function",
            current.spec.function
        ))
        .into());
    }
    Ok(Json(crud::update(&api, &name, alias, check).await?))
}

/// Refused while an HTTP trigger serves the alias.
pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Alias>> {
    let namespace = scope.one()?.to_string();
    let deleted = crud::delete(&api, &scope, &name, |api| {
        let users: Vec<String> = crud::all::<HttpTriggerSpec>(&*api.store)?
            .into_iter()
            .filter(|t| t.metadata.namespace == namespace && t.spec.alias.as_deref() == Some(&name))
            .map(|t| format!("http trigger {}", t.metadata.name))
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "alias \"{name}\" is served by {}; point them elsewhere first",
            users.join(", ")
        )))
    })
    .await?;
    Ok(Json(deleted))
}
