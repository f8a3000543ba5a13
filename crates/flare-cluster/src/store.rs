//! The resource store on NATS JetStream: every node's [`Store`] in cluster
//! mode.
//!
//! Resources live in the KV bucket `flare-resources`, one key per resource
//! (`<Kind>.<namespace>.<name>`). Every write is a JetStream primitive:
//! `create` fails when the key exists, an update names the revision it
//! read (so a write based on a stale generation is refused cluster-wide,
//! whichever node made the other one), a delete names the revision it
//! removes. The bucket's stream sequence is the store-wide [`Revision`].
//!
//! Reads are local: each node keeps a replica of the bucket, filled by a
//! watch with history and kept current by it; every entry it applies is
//! also an [`Event`] for the node's watchers, so components follow writes
//! made on any node exactly as they follow their own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use flare_model::{Document, Error, Kind, Metadata, Resource, Result};
use flare_store::{Change, Event, Revision, Store, Written, new_uid, now_rfc3339};
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

const RESOURCES_BUCKET: &str = "flare-resources";
const STATE_BUCKET: &str = "flare-state";
/// Claims of things that happen once (a timer's slot), kept an hour.
const CLAIMS_BUCKET: &str = "flare-claims";
const CLAIMS_KEPT: Duration = Duration::from_secs(3600);
/// How long a write may wait for NATS.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

type Key = (Kind, String, String);

/// The resource store of a cluster.
pub struct NatsStore {
    js: jetstream::Context,
    resources: kv::Store,
    state: kv::Store,
    claims: kv::Store,
    replica: RwLock<BTreeMap<Key, Document>>,
    revision: AtomicU64,
    /// The revision the replica has applied, for writers waiting to read
    /// their own write.
    applied: watch::Sender<Revision>,
    events: broadcast::Sender<Event>,
    runtime: tokio::runtime::Handle,
    servers: String,
}

fn key_of(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}.{namespace}.{name}", kind.as_str())
}

fn parse_key(key: &str) -> Option<Key> {
    let mut parts = key.splitn(3, '.');
    let kind = Kind::parse(parts.next()?)?;
    Some((kind, parts.next()?.to_string(), parts.next()?.to_string()))
}

/// A state key as a KV key: hex, since state keys may hold any character.
fn state_key(key: &str) -> String {
    hex::encode(key.as_bytes())
}

fn encode(doc: &Document) -> Result<bytes::Bytes> {
    serde_json::to_vec(doc)
        .map(Into::into)
        .map_err(|e| Error::internal(format!("store: {e}")))
}

impl NatsStore {
    /// Opens the cluster's store on `js` (creating its buckets with
    /// `replicas` where they are missing) and waits until this node's
    /// replica holds everything written before.
    pub async fn open(
        js: jetstream::Context,
        replicas: usize,
        servers: &str,
    ) -> Result<Arc<NatsStore>> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(
                flare_model::ErrorCode::Unavailable,
                format!("NATS at {servers}: cannot {what}: {e}"),
            )
        };
        let resources = crate::kv_bucket(&js, RESOURCES_BUCKET, "Flare resources", replicas, None)
            .await
            .map_err(|e| unavailable("open the resources bucket", &e))?;
        let state = crate::kv_bucket(&js, STATE_BUCKET, "Flare components' state", replicas, None)
            .await
            .map_err(|e| unavailable("open the state bucket", &e))?;
        let claims = crate::kv_bucket(
            &js,
            CLAIMS_BUCKET,
            "Flare claims: what happens once",
            replicas,
            Some(CLAIMS_KEPT),
        )
        .await
        .map_err(|e| unavailable("open the claims bucket", &e))?;
        let last = resources
            .status()
            .await
            .map_err(|e| unavailable("read the resources bucket", &e))?
            .info
            .state
            .last_sequence;
        let (events, _) = broadcast::channel(4096);
        let store = Arc::new(NatsStore {
            js,
            resources,
            state,
            claims,
            replica: RwLock::default(),
            revision: AtomicU64::new(0),
            applied: watch::channel(0).0,
            events,
            runtime: tokio::runtime::Handle::current(),
            servers: servers.to_string(),
        });
        let mut watcher = store
            .resources
            .watch_with_history(">")
            .await
            .map_err(|e| unavailable("watch the resources bucket", &e))?;
        let follower = store.clone();
        tokio::spawn(async move {
            while let Some(entry) = watcher.next().await {
                match entry {
                    Ok(entry) => follower.apply(entry),
                    Err(e) => tracing::warn!("resources watch: {e}"),
                }
            }
            tracing::error!("the watch of the cluster's resources ended");
        });
        let mut applied = store.applied.subscribe();
        applied
            .wait_for(|r| *r >= last)
            .await
            .map_err(|_| Error::internal("the resources watch ended while loading"))?;
        Ok(store)
    }

    /// Applies one entry of the bucket to the replica and tells watchers.
    fn apply(&self, entry: kv::Entry) {
        let Some((kind, namespace, name)) = parse_key(&entry.key) else {
            tracing::warn!("resources bucket: a key of no resource: {:?}", entry.key);
            return;
        };
        let change = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Document>(&entry.value) {
                Ok(doc) => Change::Put(Box::new(doc)),
                Err(e) => {
                    tracing::warn!("resources bucket: {:?} is no document: {e}", entry.key);
                    return;
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => Change::Deleted,
        };
        if let Ok(mut replica) = self.replica.write() {
            let key = (kind, namespace.clone(), name.clone());
            match &change {
                Change::Put(doc) => replica.insert(key, (**doc).clone()),
                Change::Deleted => replica.remove(&key),
            };
        }
        self.revision.store(entry.revision, Ordering::Release);
        let _ = self.events.send(Event {
            revision: entry.revision,
            kind,
            namespace,
            name,
            change,
        });
        self.applied.send_replace(entry.revision);
    }

    /// Runs `f` on the runtime from synchronous code (the store's methods
    /// are synchronous; writes come from blocking threads).
    fn block<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let timed = async {
            tokio::time::timeout(WRITE_TIMEOUT, f)
                .await
                .map_err(|_| {
                    Error::new(
                        flare_model::ErrorCode::Unavailable,
                        format!(
                            "the cluster's store (NATS at {}) did not answer within 10 s; the change may still have been made: read it back before trying again",
                            self.servers
                        ),
                    )
                })?
        };
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(timed)),
            Err(_) => self.runtime.block_on(timed),
        }
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::new(
            flare_model::ErrorCode::Unavailable,
            format!(
                "the cluster's store (NATS at {}) refused a write: {e}",
                self.servers
            ),
        )
    }

    /// Waits until this node's replica has applied `revision`, so what a
    /// write returns can be read back here at once.
    async fn applied(&self, revision: Revision) -> Result<()> {
        let mut applied = self.applied.subscribe();
        applied
            .wait_for(|r| *r >= revision)
            .await
            .map(|_| ())
            .map_err(|_| Error::internal("the resources watch ended"))
    }

    /// The stored document and its revision, read from NATS (not the
    /// replica: a write checks against the latest).
    async fn current(&self, key: &str) -> Result<Option<(Document, u64)>> {
        let entry = self
            .resources
            .entry(key)
            .await
            .map_err(|e| self.unavailable(e))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let doc = serde_json::from_slice(&entry.value)
                    .map_err(|e| Error::internal(format!("store: corrupt document: {e}")))?;
                Ok(Some((doc, entry.revision)))
            }
            _ => Ok(None),
        }
    }
}

impl Store for NatsStore {
    fn create(&self, doc: Document) -> Result<Written> {
        let (kind, name) = (doc.kind, doc.metadata.name.clone());
        let key = key_of(kind, &doc.metadata.namespace, &name);
        let stored = Resource {
            metadata: Metadata {
                uid: new_uid(),
                generation: 1,
                created_at: Some(now_rfc3339()),
                ..doc.metadata
            },
            ..doc
        };
        let value = encode(&stored)?;
        self.block(async {
            let revision = self.resources.create(&key, value).await.map_err(|e| {
                if e.kind() == kv::CreateErrorKind::AlreadyExists {
                    Error::already_exists(kind, &name)
                } else {
                    self.unavailable(e)
                }
            })?;
            self.applied(revision).await?;
            Ok(Written {
                doc: stored,
                revision,
            })
        })
    }

    fn update(&self, doc: Document) -> Result<Written> {
        let (kind, name) = (doc.kind, doc.metadata.name.clone());
        let key = key_of(kind, &doc.metadata.namespace, &name);
        let expected = doc.metadata.generation;
        let stale = |stored: u64| {
            Error::conflict(format!(
                "{kind} \"{name}\" was changed by someone else (generation {stored} is stored, the update was based on {expected}); read it again and retry"
            ))
        };
        self.block(async {
            // An update based on a generation is refused once another
            // write came first; an unconditional one (generation 0) is
            // tried again on what is stored now.
            loop {
                let Some((current, read)) = self.current(&key).await? else {
                    return Err(Error::not_found(kind, &name));
                };
                let generation = current.metadata.generation;
                if expected != 0 && expected != generation {
                    return Err(stale(generation));
                }
                let stored = Resource {
                    metadata: Metadata {
                        generation: generation + 1,
                        uid: current.metadata.uid,
                        created_at: current.metadata.created_at,
                        ..doc.metadata.clone()
                    },
                    ..doc.clone()
                };
                match self.resources.update(&key, encode(&stored)?, read).await {
                    Ok(revision) => {
                        self.applied(revision).await?;
                        return Ok(Written {
                            doc: stored,
                            revision,
                        });
                    }
                    // Another node wrote it since it was read here.
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        if expected != 0 {
                            return Err(stale(generation + 1));
                        }
                    }
                    Err(e) => return Err(self.unavailable(e)),
                }
            }
        })
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Written> {
        let key = key_of(kind, namespace, name);
        self.block(async {
            let Some((current, read)) = self.current(&key).await? else {
                return Err(Error::not_found(kind, name));
            };
            // A delete marker, as the KV's own delete writes it, published
            // here for the sequence it gets: the revision of this write.
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("KV-Operation", "DEL");
            headers.insert("Nats-Expected-Last-Subject-Sequence", read.to_string().as_str());
            let ack = self
                .js
                .publish_with_headers(format!("$KV.{RESOURCES_BUCKET}.{key}"), headers, "".into())
                .await
                .map_err(|e| self.unavailable(e))?
                .await
                .map_err(|e| {
                    if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence {
                        Error::conflict(format!(
                            "{kind} \"{name}\" was changed by someone else while it was deleted; read it again and retry"
                        ))
                    } else {
                        self.unavailable(e)
                    }
                })?;
            self.applied(ack.sequence).await?;
            Ok(Written {
                doc: current,
                revision: ack.sequence,
            })
        })
    }

    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Document> {
        self.replica
            .read()
            .ok()
            .and_then(|r| {
                r.get(&(kind, namespace.to_string(), name.to_string()))
                    .cloned()
            })
            .ok_or_else(|| Error::not_found(kind, name))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Document>> {
        let replica = self
            .replica
            .read()
            .map_err(|_| Error::internal("store: the replica is poisoned"))?;
        // Keys sort by kind, namespace, name: one kind is one range.
        Ok(replica
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, doc)| doc.clone())
            .collect())
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    fn get_state(&self, key: &str) -> Result<Option<String>> {
        let key = state_key(key);
        self.block(async {
            let value = self
                .state
                .get(&key)
                .await
                .map_err(|e| self.unavailable(e))?;
            Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
        })
    }

    fn claim(&self, key: &str) -> Result<bool> {
        let key = state_key(key);
        self.block(async {
            match self.claims.create(&key, bytes::Bytes::new()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(self.unavailable(e)),
            }
        })
    }

    fn put_state(&self, key: &str, value: &str) -> Result<()> {
        let key = state_key(key);
        let value = bytes::Bytes::from(value.to_string());
        self.block(async {
            self.state
                .put(&key, value)
                .await
                .map(|_| ())
                .map_err(|e| self.unavailable(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_one_resource() {
        let key = key_of(Kind::HttpTrigger, "default", "api-v1");
        assert_eq!(key, "HttpTrigger.default.api-v1");
        assert_eq!(
            parse_key(&key),
            Some((Kind::HttpTrigger, "default".into(), "api-v1".into()))
        );
        assert_eq!(parse_key("Nope.default.x"), None);
        assert_eq!(parse_key("Function.default"), None);
        assert_eq!(state_key("timer:a/b"), "74696d65723a612f62");
    }
}
