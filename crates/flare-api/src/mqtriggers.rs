//! `/v1/mqtriggers`: message-queue triggers and their connection status.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use flare_model::{MessageQueueTriggerSpec, Resource};
use flare_triggers::mq::MqStatus;
use http::StatusCode;
use serde::{Deserialize, Serialize};

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
        let status = self.mq.status(trigger.name());
        MqTriggerView { trigger, status }
    }
}

pub(crate) async fn list(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<MqTriggerView>>> {
    let all: Vec<MqTrigger> = crud::all(&*api.store)?;
    Ok(Json(all.into_iter().map(|t| api.mq_view(t)).collect()))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<MqTriggerView>> {
    Ok(Json(api.mq_view(crud::get(&api, &name)?)))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<MqTriggerView>)> {
    let trigger: MqTrigger = crud::decode(&body)?;
    let created = crud::create(&api, trigger, |api, t| {
        requires_function(api, &t.spec.function)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(api.mq_view(created))))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<MqTriggerView>> {
    let trigger: MqTrigger = crud::decode(&body)?;
    let updated = crud::update(&api, &name, trigger, |api, t| {
        requires_function(api, &t.spec.function)
    })
    .await?;
    Ok(Json(api.mq_view(updated)))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<MqTriggerView>> {
    let trigger = crud::delete(&api, &name, |_| Ok(())).await?;
    Ok(Json(MqTriggerView {
        trigger,
        status: None,
    }))
}
