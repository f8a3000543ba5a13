//! `/v1/httptriggers`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_model::{Error, ErrorCode, HttpTriggerSpec, Kind, Resource, Result};
use http::StatusCode;

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

type HttpTrigger = Resource<HttpTriggerSpec>;

/// A trigger's function must exist, in the trigger's namespace.
pub(crate) fn requires_function(api: &Api, namespace: &str, function: &str) -> Result<()> {
    match api.store.get(Kind::Function, namespace, function) {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::NotFound => Err(Error::invalid(format!(
            "function \"{function}\" does not exist in namespace \"{namespace}\"; create it first"
        ))),
        Err(e) => Err(e),
    }
}

/// The function exists, and no other trigger, in any namespace, claims the
/// same requests: routes are global.
fn check_references(api: &Api, trigger: &HttpTrigger) -> Result<()> {
    let (namespace, function) = (&trigger.metadata.namespace, &trigger.spec.function);
    requires_function(api, namespace, function)?;
    if let Some(alias) = &trigger.spec.alias {
        crate::aliases::requires_alias(api, namespace, function, alias)?;
    }
    for &version in trigger.spec.weights.keys() {
        crate::aliases::requires_version(api, namespace, function, version)?;
    }
    for other in crud::all::<HttpTriggerSpec>(&*api.store)? {
        let same = other.metadata.name == trigger.metadata.name
            && other.metadata.namespace == trigger.metadata.namespace;
        if !same && other.spec.overlaps(&trigger.spec) {
            let methods = |spec: &HttpTriggerSpec| {
                if spec.methods.is_empty() {
                    "any method".to_string()
                } else {
                    spec.methods.join(",")
                }
            };
            return Err(Error::conflict(format!(
                "route {} {} clashes with http trigger \"{}\" ({} {})",
                methods(&trigger.spec),
                trigger.spec.path,
                other.qualified_name(),
                methods(&other.spec),
                other.spec.path
            )));
        }
    }
    Ok(())
}

/// Decodes a trigger with its methods upper-cased and deduplicated.
fn decode(body: &[u8], scope: &Scope) -> Result<HttpTrigger> {
    let mut trigger: HttpTrigger = crud::decode(body, scope)?;
    for method in &mut trigger.spec.methods {
        *method = method.to_ascii_uppercase();
    }
    trigger.spec.methods.sort();
    trigger.spec.methods.dedup();
    trigger.validate()?;
    Ok(trigger)
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<HttpTrigger>>> {
    Ok(Json(crud::all_in(&*api.store, &scope)?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<HttpTrigger>> {
    Ok(Json(crud::get(&api, &scope, &name)?))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<HttpTrigger>)> {
    let created = crud::create(&api, decode(&body, &scope)?, check_references).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<HttpTrigger>> {
    Ok(Json(
        crud::update(&api, &name, decode(&body, &scope)?, check_references).await?,
    ))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<HttpTrigger>> {
    Ok(Json(crud::delete(&api, &scope, &name, |_| Ok(())).await?))
}
