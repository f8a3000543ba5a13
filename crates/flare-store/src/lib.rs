//! Flare's store: everything the platform must not lose.
//!
//! - [`Store`] is the resource store: create / update / delete / get / list /
//!   watch of [`Document`]s with optimistic concurrency on `generation`.
//!   [`SqliteStore`] is the embedded backend (one SQLite database in WAL mode;
//!   a write is acknowledged only after its transaction is durable).
//! - [`PackageStore`] keeps uploaded code as files named by their sha256,
//!   streamed to disk under a size limit and renamed into place only when
//!   complete, so a crash never leaves a half-written package behind a name.
//! - [`logs`] stores function log lines, batched on a writer thread off the
//!   request path, and answers queries and follows.
//!
//! Every successful write bumps a store-wide [`Revision`] and is broadcast to
//! watchers as an [`Event`]; components keep their state from the events
//! (through a [`Follower`]) and never poll.

pub mod audit;
mod follow;
pub mod invocations;
pub mod leases;
pub mod logs;
mod packages;
pub mod retention;
mod sqlite;

use flare_model::{Document, Kind, Result};
use tokio::sync::broadcast;

pub use follow::{Follower, Update, advance};
pub use packages::{PackageStore, Staged};
pub use sqlite::{SqliteStore, new_uid, now_rfc3339};

/// A store-wide counter, bumped by every write.
pub type Revision = u64;

/// What a write changed.
#[derive(Debug, Clone)]
pub enum Change {
    Put(Box<Document>),
    Deleted,
}

/// One committed write, as watchers see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: Revision,
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub change: Change,
}

/// A committed write: the document as stored and the revision it made.
#[derive(Debug, Clone)]
pub struct Written {
    pub doc: Document,
    pub revision: Revision,
}

/// The resource store. Methods are synchronous: the embedded backend answers
/// in microseconds to a few milliseconds (an fsync), and it is used only on
/// the control path, never per request.
pub trait Store: Send + Sync + 'static {
    /// Stores a new resource; `AlreadyExists` if the name is taken. Sets
    /// `uid`, `generation` (1) and `created_at`.
    fn create(&self, doc: Document) -> Result<Written>;
    /// Replaces a resource's spec and labels; `NotFound` if absent,
    /// `Conflict` if `doc.metadata.generation` is non-zero and not the
    /// stored one. Bumps `generation`.
    fn update(&self, doc: Document) -> Result<Written>;
    /// Removes a resource, returning what was stored.
    fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Written>;
    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Document>;
    /// Every resource of a kind in every namespace, ordered by namespace
    /// and name.
    fn list(&self, kind: Kind) -> Result<Vec<Document>>;
    /// Events of every write committed after this call.
    fn watch(&self) -> broadcast::Receiver<Event>;
    /// The revision of the last committed write.
    fn revision(&self) -> Revision;
    /// Small durable values components keep for themselves (a timer's
    /// last firing); not resources, not watched.
    fn get_state(&self, key: &str) -> Result<Option<String>>;
    fn put_state(&self, key: &str, value: &str) -> Result<()>;
    /// Whether this caller is the first to claim `key` (a timer's slot):
    /// what must happen once however many nodes try. A store that serves
    /// one node grants every claim: its one caller is the only one.
    fn claim(&self, key: &str) -> Result<bool> {
        let _ = key;
        Ok(true)
    }
}
