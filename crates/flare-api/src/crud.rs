//! What every resource endpoint does, once: decode and validate the
//! document, check it against other resources under `cross_checks`, write,
//! wait until the write is applied, answer with what was stored.

use flare_model::{Error, Resource, Result, Spec};
use flare_store::Store;

use crate::Api;

/// Decodes and validates a document of kind `S`.
pub(crate) fn decode<S: Spec>(body: &[u8]) -> Result<Resource<S>> {
    let resource: Resource<S> = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("invalid {} document: {e}", S::KIND)))?;
    resource.validate()?;
    Ok(resource)
}

pub(crate) fn all<S: Spec>(store: &dyn Store) -> Result<Vec<Resource<S>>> {
    store
        .list(S::KIND)?
        .into_iter()
        .map(Resource::from_document)
        .collect()
}

pub(crate) fn get<S: Spec>(api: &Api, name: &str) -> Result<Resource<S>> {
    Resource::from_document(api.store.get(S::KIND, name)?)
}

/// Creates `resource` after `check` passed, both under `cross_checks`.
pub(crate) async fn create<S: Spec>(
    api: &Api,
    resource: Resource<S>,
    check: impl FnOnce(&Api, &Resource<S>) -> Result<()>,
) -> Result<Resource<S>> {
    let written = {
        let _guard = api.cross_checks.lock().await;
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
    name: &str,
    check: impl FnOnce(&Api) -> Result<()>,
) -> Result<Resource<S>> {
    let written = {
        let _guard = api.cross_checks.lock().await;
        check(api)?;
        let name = name.to_string();
        api.write(move |store| store.delete(S::KIND, &name)).await?
    };
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}
