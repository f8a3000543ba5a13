//! `/v1/environments`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use flare_model::{EnvironmentSpec, Error, FunctionSpec, Kind, Resource, Result};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

/// An environment as the API shows it, with its pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnvironmentView {
    #[serde(flatten)]
    pub environment: Resource<EnvironmentSpec>,
    /// Generic workers started and waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_workers: Option<usize>,
}

impl Api {
    fn env_view(&self, environment: Resource<EnvironmentSpec>) -> EnvironmentView {
        let idle_workers = self.executor.idle_workers(environment.name());
        EnvironmentView {
            environment,
            idle_workers,
        }
    }
}

/// Environments are cluster-wide: the operator offers them to every
/// namespace, and only an admin changes them (a worker sees every request
/// of every function it runs).
fn decode(body: &[u8]) -> Result<Resource<EnvironmentSpec>> {
    crud::decode(body, &Scope::cluster())
}

/// Functions, of any namespace, that run in `environment`.
pub(crate) fn users(api: &Api, environment: &str) -> Result<Vec<String>> {
    Ok(api
        .store
        .list(Kind::Function)?
        .into_iter()
        .filter_map(|doc| Resource::<FunctionSpec>::from_document(doc).ok())
        .filter(|f| f.spec.environment.as_deref() == Some(environment))
        .map(|f| f.qualified_name())
        .collect())
}

pub(crate) async fn list(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<EnvironmentView>>> {
    let envs = api
        .store
        .list(Kind::Environment)?
        .into_iter()
        .map(|doc| Ok(api.env_view(Resource::from_document(doc)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Json(envs))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<EnvironmentView>> {
    let env = Resource::from_document(api.store.get(
        Kind::Environment,
        flare_model::DEFAULT_NAMESPACE,
        &name,
    )?)?;
    Ok(Json(api.env_view(env)))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<EnvironmentView>)> {
    let created = crud::create(&api, decode(&body)?, |api, env| {
        api.executor.check_environment(&env.spec)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(api.env_view(created))))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<EnvironmentView>> {
    let updated = crud::update(&api, &name, decode(&body)?, |api, env| {
        api.executor.check_environment(&env.spec)
    })
    .await?;
    Ok(Json(api.env_view(updated)))
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<EnvironmentView>> {
    let scope = Scope::cluster();
    let environment = crud::delete(&api, &scope, &name, |api| {
        let users = users(api, &name)?;
        if users.is_empty() {
            Ok(())
        } else {
            Err(Error::conflict(format!(
                "environment \"{name}\" is used by function(s) {}; delete them first",
                users.join(", ")
            )))
        }
    })
    .await?;
    Ok(Json(EnvironmentView {
        environment,
        idle_workers: None,
    }))
}
