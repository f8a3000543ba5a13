//! `/v1/invocations`: asynchronous invocations and their outcomes.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use flare_model::Error;
use flare_store::invocations::{Invocation, InvocationStatus};
use serde::Deserialize;

use crate::Api;
use crate::error::ApiResult;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListParams {
    status: Option<String>,
    function: Option<String>,
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
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
    Ok(Json(api.queue.store.invocations(
        status,
        params.function.as_deref(),
        limit,
    )?))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Path(id): Path<String>,
) -> ApiResult<Json<Invocation>> {
    Ok(Json(api.queue.store.invocation(&id)?))
}
