//! `GET /v1/nodes`: the nodes serving, as their heartbeats say (this node
//! alone on the embedded store).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use flare_cluster::{Load, NodeView};

use crate::Api;
use crate::error::ApiResult;

pub(crate) async fn list(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<NodeView>>> {
    let (functions_warm, busy) = api.executor.load();
    let nodes = api
        .membership
        .nodes(Load {
            functions_warm,
            busy,
        })
        .await?;
    Ok(Json(nodes))
}
