//! `/v1/secrets` and `/v1/configs`. Values of both are sealed here, before
//! anything is stored, and no answer carries them again: both read as
//! their keys. They differ in delivery: a secret's keys are also files in
//! a process function's sandbox.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use flare_access::seal::Place;
use flare_model::{
    ConfigSpec, Error, FunctionSpec, Kind, Metadata, Resource, Result, SecretSpec, check_values,
};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::crud::Scope;
use crate::error::ApiResult;
use crate::{Api, crud};

/// A secret as it is sent: values in base64 (`data`) or as text
/// (`stringData`), like a Kubernetes Secret. No `Debug`: it holds them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretRequest {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    metadata: Metadata,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default)]
    string_data: BTreeMap<String, String>,
}

/// A secret or config as the API shows it: its keys, never its values.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeysView {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    pub keys: Vec<String>,
}

impl From<Resource<SecretSpec>> for KeysView {
    fn from(secret: Resource<SecretSpec>) -> Self {
        KeysView {
            api_version: secret.api_version,
            kind: secret.kind,
            metadata: secret.metadata,
            keys: secret.spec.sealed.into_keys().collect(),
        }
    }
}

impl From<Resource<ConfigSpec>> for KeysView {
    fn from(config: Resource<ConfigSpec>) -> Self {
        KeysView {
            api_version: config.api_version,
            kind: config.kind,
            metadata: config.metadata,
            keys: config.spec.data.into_keys().collect(),
        }
    }
}

impl Api {
    /// Decodes a secret request in `scope` and seals its values.
    fn seal(&self, body: &[u8], scope: &Scope) -> Result<Resource<SecretSpec>> {
        use base64::Engine;
        let invalid = |e: serde_json::Error| crud::invalid_document(Kind::Secret, e);
        let mut value: serde_json::Value = serde_json::from_slice(body).map_err(invalid)?;
        crud::place(&mut value, Kind::Secret, scope.one()?)?;
        let request: SecretRequest = serde_json::from_value(value).map_err(invalid)?;
        if request
            .kind
            .as_deref()
            .is_some_and(|k| k != Kind::Secret.as_str())
        {
            return Err(Error::invalid("expected kind Secret"));
        }
        let mut values: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for (key, encoded) in request.data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| {
                    Error::invalid(format!("the value of secret key \"{key}\" is not base64"))
                })?;
            values.insert(key, bytes);
        }
        for (key, text) in request.string_data {
            if values.insert(key.clone(), text.into_bytes()).is_some() {
                return Err(Error::invalid(format!(
                    "secret key \"{key}\" is in both data and stringData"
                )));
            }
        }
        // Checked before sealing, so a refusal cannot depend on the cipher.
        check_values(Kind::Secret, values.iter().map(|(k, v)| (k, v.len())))?;
        let metadata = request.metadata;
        let mut sealed = BTreeMap::new();
        for (key, value) in &values {
            let place = Place {
                kind: Kind::Secret,
                namespace: &metadata.namespace,
                name: &metadata.name,
                key,
            };
            sealed.insert(key.clone(), self.sealer.seal(place, value)?);
        }
        let secret = Resource {
            api_version: request
                .api_version
                .unwrap_or_else(|| flare_model::API_VERSION.to_string()),
            kind: Kind::Secret,
            metadata,
            spec: SecretSpec { sealed },
        };
        secret.validate()?;
        Ok(secret)
    }
}

/// Functions of `namespace` that name `name` as a secret or a config.
fn users(api: &Api, namespace: &str, kind: Kind, name: &str) -> Result<Vec<String>> {
    Ok(crud::all::<FunctionSpec>(&*api.store)?
        .into_iter()
        .filter(|f| f.metadata.namespace == namespace)
        .filter(|f| match kind {
            Kind::Secret => f.spec.secrets.iter().any(|s| s == name),
            _ => f.spec.configs.iter().any(|c| c == name),
        })
        .map(|f| f.metadata.name)
        .collect())
}

fn unused(api: &Api, scope: &Scope, kind: Kind, name: &str) -> Result<()> {
    let users = users(api, scope.one()?, kind, name)?;
    if users.is_empty() {
        return Ok(());
    }
    Err(Error::conflict(format!(
        "{kind} \"{name}\" is used by function(s) {}; change them first",
        users.join(", ")
    )))
}

pub(crate) async fn list_secrets(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<KeysView>>> {
    let secrets = crud::all_in::<SecretSpec>(&*api.store, &scope)?;
    Ok(Json(secrets.into_iter().map(KeysView::from).collect()))
}

pub(crate) async fn get_secret(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<KeysView>> {
    Ok(Json(crud::get::<SecretSpec>(&api, &scope, &name)?.into()))
}

pub(crate) async fn create_secret(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<KeysView>)> {
    let secret = api.seal(&body, &scope)?;
    let created = crud::create(&api, secret, |_, _| Ok(())).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

/// Replaces a secret's values; functions that use it get them in new
/// instances (running ones finish what they do).
pub(crate) async fn update_secret(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<KeysView>> {
    let secret = api.seal(&body, &scope)?;
    Ok(Json(
        crud::update(&api, &name, secret, |_, _| Ok(()))
            .await?
            .into(),
    ))
}

pub(crate) async fn delete_secret(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<KeysView>> {
    let deleted = crud::delete::<SecretSpec>(&api, &scope, &name, |api| {
        unused(api, &scope, Kind::Secret, &name)
    })
    .await?;
    Ok(Json(deleted.into()))
}

type Config = Resource<ConfigSpec>;

impl Api {
    /// Decodes a config in `scope`, checks it, and seals its values.
    fn sealed_config(&self, body: &[u8], scope: &Scope) -> Result<Config> {
        let mut config: Config = crud::decode(body, scope)?;
        check_values(
            Kind::Config,
            config.spec.data.iter().map(|(k, v)| (k, v.len())),
        )?;
        let (namespace, name) = (&config.metadata.namespace, &config.metadata.name);
        let mut sealed = BTreeMap::new();
        for (key, value) in &config.spec.data {
            let place = Place {
                kind: Kind::Config,
                namespace,
                name,
                key,
            };
            sealed.insert(key.clone(), self.sealer.seal(place, value.as_bytes())?);
        }
        config.spec.data = sealed;
        Ok(config)
    }
}

pub(crate) async fn list_configs(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<KeysView>>> {
    let configs = crud::all_in::<ConfigSpec>(&*api.store, &scope)?;
    Ok(Json(configs.into_iter().map(KeysView::from).collect()))
}

pub(crate) async fn get_config(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<KeysView>> {
    Ok(Json(crud::get::<ConfigSpec>(&api, &scope, &name)?.into()))
}

pub(crate) async fn create_config(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<KeysView>)> {
    let config = api.sealed_config(&body, &scope)?;
    let created = crud::create(&api, config, |_, _| Ok(())).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

pub(crate) async fn update_config(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<KeysView>> {
    let config = api.sealed_config(&body, &scope)?;
    let updated = crud::update(&api, &name, config, |_, _| Ok(())).await?;
    Ok(Json(updated.into()))
}

pub(crate) async fn delete_config(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<KeysView>> {
    let deleted = crud::delete::<ConfigSpec>(&api, &scope, &name, |api| {
        unused(api, &scope, Kind::Config, &name)
    })
    .await?;
    Ok(Json(deleted.into()))
}

/// A function's secrets and configs must exist in its namespace.
pub(crate) fn check_references(api: &Api, function: &Resource<FunctionSpec>) -> Result<()> {
    let namespace = &function.metadata.namespace;
    for (kind, names, command) in [
        (Kind::Secret, &function.spec.secrets, "flare secret create"),
        (Kind::Config, &function.spec.configs, "flare config create"),
    ] {
        for name in names {
            match api.store.get(kind, namespace, name) {
                Ok(_) => {}
                Err(e) if e.code == flare_model::ErrorCode::NotFound => {
                    return Err(Error::invalid(format!(
                        "{kind} \"{name}\" does not exist in namespace \"{namespace}\"; create it first ({command})"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
