//! `/v1/mqtriggers`: message-queue triggers and their connection status.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_model::{MessageQueueTriggerSpec, Resource};
use flare_triggers::mq::MqStatus;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::triggers::requires_function;
use crate::{Api, crud};

type MqTrigger = Resource<MessageQueueTriggerSpec>;

/// A trigger with what its connector reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MqTriggerView {
    #[serde(flatten)]
    pub trigger: MqTrigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MqStatus>,
}

impl Api {
    fn mq_view(&self, trigger: MqTrigger) -> MqTriggerView {
        let status = self.mq.status(&trigger.qualified_name());
        MqTriggerView { trigger, status }
    }
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<MqTriggerView>>> {
    let all: Vec<MqTrigger> = crud::all_in(&*api.store, &scope)?;
    Ok(Json(all.into_iter().map(|t| api.mq_view(t)).collect()))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<MqTriggerView>> {
    Ok(Json(api.mq_view(crud::get(&api, &scope, &name)?)))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<MqTriggerView>)> {
    let trigger: MqTrigger = crud::decode(&body, &scope)?;
    let created = crud::create(&api, trigger, |api, t| {
        requires_function(api, &t.metadata.namespace, &t.spec.function)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(api.mq_view(created))))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<MqTriggerView>> {
    let trigger: MqTrigger = crud::decode(&body, &scope)?;
    let updated = crud::update(&api, &name, trigger, |api, t| {
        requires_function(api, &t.metadata.namespace, &t.spec.function)
    })
    .await?;
    Ok(Json(api.mq_view(updated)))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<MqTriggerView>> {
    let trigger = crud::delete(&api, &scope, &name, |_| Ok(())).await?;
    Ok(Json(MqTriggerView {
        trigger,
        status: None,
    }))
}
