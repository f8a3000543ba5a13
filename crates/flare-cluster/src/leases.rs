//! Leases in the KV bucket `flare-leases`: a key per lease, holding the
//! holder's node name. Taking one is `create` (it fails while the key
//! exists), renewing is an update that names the revision the holder last
//! wrote, and the bucket's `max_age` ([`TTL`]) removes a key its holder
//! stopped renewing, so another node can take it. One holder at a time is
//! JetStream's decision, not ours.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_trait::async_trait;
use flare_model::{Error, ErrorCode, Result};
use flare_store::leases::Leases;

const BUCKET: &str = "flare-leases";
/// How long a lease outlives its holder's last renewal.
pub const TTL: Duration = Duration::from_secs(10);

/// The cluster's leases, as one node holds them.
pub struct NatsLeases {
    bucket: kv::Store,
    node: String,
    servers: String,
}

impl NatsLeases {
    /// Opens the bucket (creating it with `replicas` when it is missing)
    /// for node `node`.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        node: &str,
        servers: &str,
    ) -> Result<NatsLeases> {
        let bucket = crate::kv_bucket(
            js,
            BUCKET,
            "Flare leases: what one node at a time does",
            replicas,
            Some(TTL),
        )
        .await
        .map_err(|e| {
            Error::new(
                ErrorCode::Unavailable,
                format!("NATS at {servers}: cannot open the {BUCKET} bucket: {e}"),
            )
        })?;
        Ok(NatsLeases {
            bucket,
            node: node.to_string(),
            servers: servers.to_string(),
        })
    }

    fn failed(&self, e: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorCode::Unavailable,
            format!("NATS at {}: a lease: {e}", self.servers),
        )
    }
}

/// A lease name as a KV key (any character may be in `key`).
fn lease_key(key: &str) -> String {
    hex::encode(key.as_bytes())
}

#[async_trait]
impl Leases for NatsLeases {
    async fn hold(&self, key: &str, held: Option<u64>) -> Result<Option<u64>> {
        let key = lease_key(key);
        let value = bytes::Bytes::from(self.node.clone());
        match held {
            None => match self.bucket.create(&key, value).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(self.failed(e)),
            },
            Some(revision) => match self.bucket.update(&key, value, revision).await {
                Ok(revision) => Ok(Some(revision)),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
                Err(e) => Err(self.failed(e)),
            },
        }
    }

    async fn release(&self, key: &str, held: u64) {
        let key = lease_key(key);
        if let Err(e) = self.bucket.delete_expect_revision(&key, Some(held)).await {
            tracing::debug!("lease {key} not released: {e}");
        }
    }

    fn ttl(&self) -> Duration {
        TTL
    }
}
