//! `/v1/namespaces`: where teams' functions and triggers live, and their
//! quotas. Only an admin creates, changes or deletes one; any token sees
//! the namespaces it reaches. `default` always exists: storing it only
//! gives it quotas.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_model::{
    DEFAULT_NAMESPACE, Error, ErrorCode, Grant, Kind, NamespaceSpec, Resource, Result, TokenSpec,
};
use http::StatusCode;

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

type Namespace = Resource<NamespaceSpec>;

/// Every namespace: the stored ones, and `default` whether stored or not.
fn every(api: &Api) -> Result<Vec<Namespace>> {
    let mut namespaces = crud::all::<NamespaceSpec>(&*api.store)?;
    if !namespaces.iter().any(|n| n.name() == DEFAULT_NAMESPACE) {
        namespaces.insert(
            0,
            Resource::new(DEFAULT_NAMESPACE, NamespaceSpec::default()),
        );
    }
    Ok(namespaces)
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(grant): Extension<Grant>,
) -> ApiResult<Json<Vec<Namespace>>> {
    let namespaces = every(&api)?
        .into_iter()
        .filter(|n| grant.reaches(n.name()))
        .collect();
    Ok(Json(namespaces))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(grant): Extension<Grant>,
    Path(name): Path<String>,
) -> ApiResult<Json<Namespace>> {
    every(&api)?
        .into_iter()
        .find(|n| n.name() == name && grant.reaches(&name))
        .map(Json)
        .ok_or_else(|| Error::not_found(Kind::Namespace, &name).into())
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<Namespace>)> {
    let namespace: Namespace = crud::decode(&body, &Scope::cluster())?;
    let created = crud::create(&api, namespace, |_, _| Ok(())).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<Namespace>> {
    let namespace: Namespace = crud::decode(&body, &Scope::cluster())?;
    Ok(Json(
        crud::update(&api, &name, namespace, |_, _| Ok(())).await?,
    ))
}

/// What still lives in `namespace` or is bound to it.
fn holdings(api: &Api, namespace: &str) -> Result<Vec<String>> {
    let scope = Scope(namespace.to_string());
    let store = &*api.store;
    let mut held = Vec::new();
    let mut add = |kind: Kind, names: Vec<String>| {
        held.extend(names.into_iter().map(|n| format!("{kind} {n}")));
    };
    let names = |docs: Vec<flare_model::Document>| -> Vec<String> {
        docs.into_iter()
            .filter(|d| scope.holds(&d.metadata.namespace))
            .map(|d| d.metadata.name)
            .collect()
    };
    for kind in [
        Kind::Function,
        Kind::HttpTrigger,
        Kind::TimerTrigger,
        Kind::MessageQueueTrigger,
        Kind::Secret,
        Kind::Config,
    ] {
        add(kind, names(store.list(kind)?));
    }
    let tokens = crud::all::<TokenSpec>(store)?
        .into_iter()
        .filter(|t| t.spec.namespace == namespace)
        .map(|t| t.metadata.name)
        .collect();
    add(Kind::Token, tokens);
    Ok(held)
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Path(name): Path<String>,
) -> ApiResult<Json<Namespace>> {
    if name == DEFAULT_NAMESPACE {
        return Err(Error::new(
            ErrorCode::Conflict,
            "the default namespace always exists; update it to change its quotas",
        )
        .into());
    }
    let deleted = crud::delete(&api, &Scope::cluster(), &name, |api| {
        let held = holdings(api, &name)?;
        if held.is_empty() {
            return Ok(());
        }
        Err(Error::conflict(format!(
            "namespace \"{name}\" still holds {}; delete (or revoke) them first",
            held.join(", ")
        )))
    })
    .await?;
    let forgotten = {
        let name = name.clone();
        api.local
            .off_thread(move |store| flare_store::retention::forget_namespace(store, &name))
            .await?
    } + api.queue.forget_namespace(&name).await?;
    // In a cluster every node holds the namespace's lines: the stream tells
    // them all. The namespace is gone already, so this must happen even
    // while NATS does not answer: tried again until it does.
    if let Some(logs) = api.cluster_logs.clone() {
        let name = name.clone();
        tokio::spawn(async move {
            let mut pause = std::time::Duration::from_millis(100);
            while let Err(e) = logs.forget_namespace(&name).await {
                tracing::warn!("the log lines of deleted namespace {name}: {e}; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(30));
            }
        });
    }
    tracing::info!(
        namespace = deleted.name(),
        records = forgotten,
        "namespace deleted with its logs and records"
    );
    Ok(Json(deleted))
}
