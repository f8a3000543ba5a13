//! `/v1/timertriggers`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_model::{Resource, TimerTriggerSpec};
use http::StatusCode;

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::triggers::requires_function;
use crate::{Api, crud};

type Timer = Resource<TimerTriggerSpec>;

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<Timer>>> {
    Ok(Json(crud::all_in(&*api.store, &scope)?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Timer>> {
    Ok(Json(crud::get(&api, &scope, &name)?))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Timer>)> {
    let timer: Timer = crud::decode(&body, &scope)?;
    let created = crud::create(&api, timer, |api, t| {
        requires_function(api, &t.metadata.namespace, &t.spec.function)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<Timer>> {
    let timer: Timer = crud::decode(&body, &scope)?;
    let updated = crud::update(&api, &name, timer, |api, t| {
        requires_function(api, &t.metadata.namespace, &t.spec.function)
    })
    .await?;
    Ok(Json(updated))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<Timer>> {
    Ok(Json(crud::delete(&api, &scope, &name, |_| Ok(())).await?))
}
