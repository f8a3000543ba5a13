//! What every resource endpoint does, once: decode and validate the
//! document in the request's namespace, check it against other resources
//! under `cross_checks`, write, wait until the write is applied, answer
//! with what was stored.
//!
//! The namespace of a request is its `?namespace=` (`default` when
//! absent), checked against the caller's token before a handler runs. A
//! document that leaves `metadata.namespace` out is put in it; one that
//! names another is refused. Cluster-wide kinds (environments, tokens,
//! namespaces) live under [`DEFAULT_NAMESPACE`] and take no namespace.

use flare_model::{
    ALL_NAMESPACES, DEFAULT_NAMESPACE, Error, ErrorCode, Kind, NamespaceSpec, Resource, Result,
    Spec,
};
use flare_store::Store;
use serde_json::Value;

use crate::Api;

/// The namespace a request is about (set by the access middleware).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope(pub String);

impl Scope {
    /// The scope of cluster-wide resources.
    pub(crate) fn cluster() -> Scope {
        Scope(DEFAULT_NAMESPACE.into())
    }

    /// Whether a resource of `namespace` is in this scope (`*`: all).
    pub(crate) fn holds(&self, namespace: &str) -> bool {
        self.0 == ALL_NAMESPACES || self.0 == namespace
    }

    /// The one namespace named; `*` is only for listing.
    pub(crate) fn one(&self) -> Result<&str> {
        if self.0 == ALL_NAMESPACES {
            return Err(Error::invalid(
                "namespace * is for listing; name one namespace to read or change a resource",
            ));
        }
        Ok(&self.0)
    }

    /// Where resources of `kind` are stored for this request.
    pub(crate) fn of(&self, kind: Kind) -> Result<&str> {
        if kind.namespaced() {
            self.one()
        } else {
            Ok(DEFAULT_NAMESPACE)
        }
    }
}

/// Puts a document of `kind` in `namespace`, or refuses it when it names
/// another.
pub(crate) fn place(value: &mut Value, kind: Kind, namespace: &str) -> Result<()> {
    let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    // null is the same as left out.
    if metadata.get("namespace").is_some_and(Value::is_null) {
        metadata.remove("namespace");
    }
    if !kind.namespaced() {
        return Ok(());
    }
    match metadata.get("namespace") {
        None => {
            metadata.insert("namespace".into(), Value::String(namespace.into()));
            Ok(())
        }
        Some(Value::String(named)) if named == namespace => Ok(()),
        Some(named) => Err(Error::invalid(format!(
            "the document is in namespace {named} but the request is for \"{namespace}\" (add ?namespace=, or flare -n)"
        ))),
    }
}

/// Why a document of `kind` does not decode. serde's text can quote the
/// value it did not expect; for secrets and configs that value may be the
/// secret, so only its kind of fault is said (a syntax error quotes
/// nothing and keeps its position).
pub(crate) fn invalid_document(kind: Kind, e: serde_json::Error) -> Error {
    let sensitive = matches!(kind, Kind::Secret | Kind::Config);
    if sensitive && e.classify() == serde_json::error::Category::Data {
        return Error::invalid(format!(
            "invalid {kind} document: metadata must name it and every value must be a string (base64 in a secret's data)"
        ));
    }
    Error::invalid(format!("invalid {kind} document: {e}"))
}

/// Decodes and validates a document of kind `S` in `scope`.
pub(crate) fn decode<S: Spec>(body: &[u8], scope: &Scope) -> Result<Resource<S>> {
    let invalid = |e: serde_json::Error| invalid_document(S::KIND, e);
    let mut value: Value = serde_json::from_slice(body).map_err(invalid)?;
    // serde would take a struct from an array too.
    if value.get("spec").is_some_and(|spec| !spec.is_object()) {
        return Err(Error::invalid(format!(
            "invalid {} document: spec must be an object",
            S::KIND
        )));
    }
    place(&mut value, S::KIND, scope.of(S::KIND)?)?;
    let resource: Resource<S> = serde_json::from_value(value).map_err(invalid)?;
    resource.validate()?;
    Ok(resource)
}

/// Every resource of kind `S` in every namespace.
pub(crate) fn all<S: Spec>(store: &dyn Store) -> Result<Vec<Resource<S>>> {
    store
        .list(S::KIND)?
        .into_iter()
        .map(Resource::from_document)
        .collect()
}

/// The resources of kind `S` in `scope` (all of them for `*`).
pub(crate) fn all_in<S: Spec>(store: &dyn Store, scope: &Scope) -> Result<Vec<Resource<S>>> {
    Ok(all::<S>(store)?
        .into_iter()
        .filter(|r| !S::KIND.namespaced() || scope.holds(&r.metadata.namespace))
        .collect())
}

pub(crate) fn get<S: Spec>(api: &Api, scope: &Scope, name: &str) -> Result<Resource<S>> {
    Resource::from_document(api.store.get(S::KIND, scope.of(S::KIND)?, name)?)
}

impl Api {
    /// The quotas of `namespace`; an error if it does not exist (the
    /// default namespace always does).
    pub(crate) fn namespace(&self, namespace: &str) -> Result<NamespaceSpec> {
        match self
            .store
            .get(Kind::Namespace, DEFAULT_NAMESPACE, namespace)
        {
            Ok(doc) => Ok(Resource::<NamespaceSpec>::from_document(doc)?.spec),
            Err(e) if e.code == ErrorCode::NotFound && namespace == DEFAULT_NAMESPACE => {
                Ok(NamespaceSpec::default())
            }
            Err(e) if e.code == ErrorCode::NotFound => Err(Error::new(
                ErrorCode::NotFound,
                format!(
                    "namespace \"{namespace}\" does not exist (an admin creates it: flare ns create {namespace})"
                ),
            )),
            Err(e) => Err(e),
        }
    }
}

/// Creates `resource` after `check` passed, both under `cross_checks`.
pub(crate) async fn create<S: Spec>(
    api: &Api,
    resource: Resource<S>,
    check: impl FnOnce(&Api, &Resource<S>) -> Result<()>,
) -> Result<Resource<S>> {
    let written = {
        let _guard = api.cross_checks.lock().await;
        if S::KIND.namespaced() {
            api.namespace(&resource.metadata.namespace)?;
        }
        check(api, &resource)?;
        let doc = resource.to_document()?;
        api.write(move |store| store.create(doc)).await?
    };
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}

/// Replaces the resource named in the URL after `check` passed.
pub(crate) async fn update<S: Spec>(
    api: &Api,
    name: &str,
    resource: Resource<S>,
    check: impl FnOnce(&Api, &Resource<S>) -> Result<()>,
) -> Result<Resource<S>> {
    if resource.metadata.name != name {
        return Err(Error::invalid(format!(
            "the document names {} \"{}\" but the URL names \"{name}\"",
            S::KIND,
            resource.metadata.name
        )));
    }
    let written = {
        let _guard = api.cross_checks.lock().await;
        check(api, &resource)?;
        let doc = resource.to_document()?;
        api.write(move |store| store.update(doc)).await?
    };
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}

/// Deletes a resource after `check` passed; returns what was stored.
pub(crate) async fn delete<S: Spec>(
    api: &Api,
    scope: &Scope,
    name: &str,
    check: impl FnOnce(&Api) -> Result<()>,
) -> Result<Resource<S>> {
    let namespace = scope.of(S::KIND)?.to_string();
    let written = {
        let _guard = api.cross_checks.lock().await;
        check(api)?;
        let name = name.to_string();
        api.write(move |store| store.delete(S::KIND, &namespace, &name))
            .await?
    };
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}
