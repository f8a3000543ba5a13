//! `/v1/invocations`: asynchronous invocations and their outcomes.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Extension, Json};
use flare_model::{ALL_NAMESPACES, Error, ErrorCode, qualified, split_qualified};
use flare_store::invocations::{Invocation, InvocationFilter, InvocationStatus};
use serde::Deserialize;

use crate::Api;
use crate::crud::Scope;
use crate::error::ApiResult;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    function: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Vec<Invocation>>> {
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => Some(InvocationStatus::parse(s).ok_or_else(|| {
            Error::invalid(format!(
                "unknown status \"{s}\" (use queued, running, succeeded or failed)"
            ))
        })?),
    };
    let limit = params.limit.unwrap_or(100).clamp(1, 10_000);
    let namespace = (scope.0 != ALL_NAMESPACES).then_some(scope.0.as_str());
    let function = match (&params.function, namespace) {
        (Some(function), Some(namespace)) => Some(qualified(function, namespace)),
        (Some(function), None) => Some(function.clone()),
        (None, _) => None,
    };
    let filter = InvocationFilter {
        status,
        function,
        namespace: namespace.map(String::from),
        limit,
    };
    Ok(Json(api.queue.invocations(filter).await?))
}

/// `POST /v1/invocations/{id}/retry`: a failed invocation's request
/// submitted again, as a new invocation (202 with its id); the failed one
/// stays as it was.
pub(crate) async fn retry(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    let invocation = api.queue.invocation(&id).await?;
    let (_, namespace) = split_qualified(&invocation.request.function);
    if namespace != scope.one()? {
        return Err(Error::not_found("invocation", &id).into());
    }
    if invocation.status != InvocationStatus::Failed {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "invocation {id} is {}; only a failed one is retried",
                invocation.status.as_str()
            ),
        )
        .into());
    }
    if !api.queue.keeps_bodies() {
        return Err(Error::new(
            ErrorCode::Conflict,
            format!(
                "invocation {id} cannot be retried: in cluster mode a finished invocation's body is not kept; invoke the function again"
            ),
        )
        .into());
    }
    let retried = api
        .executor
        .resubmit(&*api.queue, invocation.request)
        .await?;
    Ok(flare_executor::accepted(&retried).map(axum::body::Body::from))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(id): Path<String>,
) -> ApiResult<Json<Invocation>> {
    let invocation = api.queue.invocation(&id).await?;
    let (_, namespace) = split_qualified(&invocation.request.function);
    if namespace != scope.one()? {
        return Err(Error::not_found("invocation", &id).into());
    }
    Ok(Json(invocation))
}
