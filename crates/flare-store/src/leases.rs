//! Leases: what one node of a cluster at a time may do, such as consuming
//! an ordered message-queue trigger. A node alone holds every lease; in a
//! cluster a lease is a key that expires unless its holder renews it.

use std::time::Duration;

use async_trait::async_trait;
use flare_model::Result;

/// A cluster's leases.
#[async_trait]
pub trait Leases: Send + Sync {
    /// Takes `key` when no node holds it (`held` is `None`), or renews it
    /// when this node does (`held` is the revision its last take or
    /// renewal returned). The revision now held, or `None` when another
    /// node holds it (or took it over after this node failed to renew).
    async fn hold(&self, key: &str, held: Option<u64>) -> Result<Option<u64>>;

    /// Gives `key` up at once (a clean stop), if this node still holds it.
    async fn release(&self, key: &str, held: u64);

    /// How long a lease lasts without a renewal. A holder renews well
    /// within it and stops what the lease guards once it is over.
    fn ttl(&self) -> Duration;
}
