//! `/v1/timertriggers`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use flare_model::{Resource, TimerTriggerSpec};
use http::StatusCode;

use crate::error::ApiResult;
use crate::triggers::requires_function;
use crate::{Api, crud};

type Timer = Resource<TimerTriggerSpec>;

pub(crate) async fn list(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<Timer>>> {
    Ok(Json(crud::all(&*api.store)?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Timer>> {
    Ok(Json(crud::get(&api, &name)?))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Timer>)> {
    let timer: Timer = crud::decode(&body)?;
    let created = crud::create(&api, timer, |api, t| {
        requires_function(api, &t.spec.function)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<Timer>> {
    let timer: Timer = crud::decode(&body)?;
    let updated = crud::update(&api, &name, timer, |api, t| {
        requires_function(api, &t.spec.function)
    })
    .await?;
    Ok(Json(updated))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Timer>> {
    Ok(Json(crud::delete(&api, &name, |_| Ok(())).await?))
}
