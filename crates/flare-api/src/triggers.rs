//! `/v1/httptriggers`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use flare_model::{Error, ErrorCode, HttpTriggerSpec, Kind, Resource, Result};
use http::StatusCode;

use crate::error::ApiResult;
use crate::{Api, crud};

type HttpTrigger = Resource<HttpTriggerSpec>;

/// A trigger's function must exist.
pub(crate) fn requires_function(api: &Api, function: &str) -> Result<()> {
    match api.store.get(Kind::Function, function) {
        Ok(_) => Ok(()),
        Err(e) if e.code == ErrorCode::NotFound => Err(Error::invalid(format!(
            "function \"{function}\" does not exist; create it first"
        ))),
        Err(e) => Err(e),
    }
}

/// The function exists, and no other trigger claims the same requests.
fn check_references(api: &Api, trigger: &HttpTrigger) -> Result<()> {
    requires_function(api, &trigger.spec.function)?;
    for other in crud::all::<HttpTriggerSpec>(&*api.store)? {
        if other.metadata.name != trigger.metadata.name && other.spec.overlaps(&trigger.spec) {
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
                other.metadata.name,
                methods(&other.spec),
                other.spec.path
            )));
        }
    }
    Ok(())
}

/// Decodes a trigger with its methods upper-cased and deduplicated.
fn decode(body: &[u8]) -> Result<HttpTrigger> {
    let mut trigger: HttpTrigger = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("invalid http trigger document: {e}")))?;
    for method in &mut trigger.spec.methods {
        *method = method.to_ascii_uppercase();
    }
    trigger.spec.methods.sort();
    trigger.spec.methods.dedup();
    trigger.validate()?;
    Ok(trigger)
}

pub(crate) async fn list(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<HttpTrigger>>> {
    Ok(Json(crud::all(&*api.store)?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<HttpTrigger>> {
    Ok(Json(crud::get(&api, &name)?))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<HttpTrigger>)> {
    let created = crud::create(&api, decode(&body)?, check_references).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<HttpTrigger>> {
    Ok(Json(
        crud::update(&api, &name, decode(&body)?, check_references).await?,
    ))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<HttpTrigger>> {
    Ok(Json(crud::delete(&api, &name, |_| Ok(())).await?))
}
