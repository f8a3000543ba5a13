//! The embedded backend: one SQLite database in WAL mode.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flare_model::{Document, Error, Kind, Metadata, Resource, Result};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::broadcast;

use crate::{Change, Event, Revision, Store, Written};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
CREATE TABLE IF NOT EXISTS resources (
    kind       TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    name       TEXT NOT NULL,
    generation INTEGER NOT NULL,
    doc        TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    id         INTEGER PRIMARY KEY,
    ts_us      INTEGER NOT NULL,
    function   TEXT NOT NULL,
    invocation TEXT NOT NULL,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_function ON logs (function, ts_us);
CREATE INDEX IF NOT EXISTS logs_by_invocation ON logs (invocation);
CREATE INDEX IF NOT EXISTS logs_by_time ON logs (ts_us);
";

/// The resource store on SQLite. One connection behind a mutex: writes are
/// serialized anyway, and reads are point lookups.
pub struct SqliteStore {
    conn: Mutex<Connection>,
    path: PathBuf,
    revision: AtomicU64,
    events: broadcast::Sender<Event>,
}

pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    Error::internal(format!("store: {e}"))
}

/// Opens a connection with the pragmas every Flare connection uses.
pub(crate) fn connect(path: &Path, synchronous: &str) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::internal(format!("cannot open database {}: {e}", path.display())))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(db_err)?;
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_err)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) `flare.db` in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::internal(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let path = dir.join("flare.db");
        // FULL: an acknowledged write survives a crash of the machine, not
        // only of the process.
        let conn = connect(&path, "FULL")?;
        conn.execute_batch(SCHEMA).map_err(db_err)?;
        conn.execute_batch(crate::invocations::SCHEMA)
            .map_err(db_err)?;
        conn.execute_batch(crate::audit::SCHEMA).map_err(db_err)?;
        crate::audit::migrate(&conn)?;
        crate::logs::index_text(&conn)?;
        let revision: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .map_err(db_err)?;
        let (events, _) = broadcast::channel(4096);
        Ok(SqliteStore {
            conn: Mutex::new(conn),
            path,
            revision: AtomicU64::new(revision),
            events,
        })
    }

    /// The database file, for other connections (the log writer).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the store off the async threads: a SQLite write (a
    /// 1 MiB body, an fsync) must not stall every other request.
    pub async fn off_thread<T: Send + 'static>(
        self: &std::sync::Arc<Self>,
        work: impl FnOnce(&SqliteStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Error::internal(format!("store task failed: {e}")))?
    }

    pub(crate) fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| Error::internal("store: connection lock poisoned"))
    }

    /// Runs `write` in an immediate transaction that also bumps the
    /// revision; broadcasts the event once committed.
    fn write(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<Option<Document>>,
    ) -> Result<(Option<Document>, Revision)> {
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let doc = write(&tx)?;
        let revision: u64 = tx
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'revision' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        self.revision.store(revision, Ordering::Release);
        let change = match &doc {
            Some(doc) => Change::Put(Box::new(doc.clone())),
            None => Change::Deleted,
        };
        // No receivers is fine: nobody is watching yet.
        let _ = self.events.send(Event {
            revision,
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            change,
        });
        Ok((doc, revision))
    }
}

fn read(tx: &Connection, kind: Kind, namespace: &str, name: &str) -> Result<Option<Document>> {
    let json: Option<String> = tx
        .query_row(
            "SELECT doc FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
            params![kind.as_str(), namespace, name],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    json.map(|json| decode(&json)).transpose()
}

fn decode(json: &str) -> Result<Document> {
    serde_json::from_str(json).map_err(|e| Error::internal(format!("store: corrupt document: {e}")))
}

fn encode(doc: &Document) -> Result<String> {
    serde_json::to_string(doc).map_err(|e| Error::internal(format!("store: {e}")))
}

/// Now, as a resource's `created_at` (RFC 3339, UTC).
pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// A new resource uid: 16 random bytes in hex.
pub fn new_uid() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

impl Store for SqliteStore {
    fn create(&self, doc: Document) -> Result<Written> {
        let kind = doc.kind;
        let name = doc.metadata.name.clone();
        let namespace = doc.metadata.namespace.clone();
        let (doc, revision) = self.write(kind, &namespace, &name, |tx| {
            if read(tx, kind, &doc.metadata.namespace, &name)?.is_some() {
                return Err(Error::already_exists(kind, &name));
            }
            let stored = Resource {
                metadata: Metadata {
                    uid: new_uid(),
                    generation: 1,
                    created_at: Some(now_rfc3339()),
                    ..doc.metadata
                },
                ..doc
            };
            tx.execute(
                "INSERT INTO resources (kind, namespace, name, generation, doc) VALUES (?1, ?2, ?3, 1, ?4)",
                params![kind.as_str(), stored.metadata.namespace, name, encode(&stored)?],
            )
            .map_err(db_err)?;
            Ok(Some(stored))
        })?;
        let doc = doc.ok_or_else(|| Error::internal("store: create returned nothing"))?;
        Ok(Written { doc, revision })
    }

    fn update(&self, doc: Document) -> Result<Written> {
        let kind = doc.kind;
        let name = doc.metadata.name.clone();
        let namespace = doc.metadata.namespace.clone();
        let (doc, revision) = self.write(kind, &namespace, &name, |tx| {
            let Some(current) = read(tx, kind, &doc.metadata.namespace, &name)? else {
                return Err(Error::not_found(kind, &name));
            };
            let expected = doc.metadata.generation;
            if expected != 0 && expected != current.metadata.generation {
                return Err(Error::conflict(format!(
                    "{kind} \"{name}\" was changed by someone else (generation {} is stored, the update was based on {expected}); read it again and retry",
                    current.metadata.generation
                )));
            }
            let generation = current.metadata.generation + 1;
            let stored = Resource {
                api_version: doc.api_version,
                kind,
                metadata: Metadata {
                    generation,
                    labels: doc.metadata.labels,
                    version: doc.metadata.version,
                    ..current.metadata
                },
                spec: doc.spec,
            };
            tx.execute(
                "UPDATE resources SET generation = ?4, doc = ?5 WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind.as_str(), stored.metadata.namespace, name, generation, encode(&stored)?],
            )
            .map_err(db_err)?;
            Ok(Some(stored))
        })?;
        let doc = doc.ok_or_else(|| Error::internal("store: update returned nothing"))?;
        Ok(Written { doc, revision })
    }

    fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<Written> {
        let mut removed = None;
        let (_, revision) = self.write(kind, namespace, name, |tx| {
            let Some(current) = read(tx, kind, namespace, name)? else {
                return Err(Error::not_found(kind, name));
            };
            tx.execute(
                "DELETE FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                params![kind.as_str(), namespace, name],
            )
            .map_err(db_err)?;
            removed = Some(current);
            Ok(None)
        })?;
        let doc = removed.ok_or_else(|| Error::internal("store: delete returned nothing"))?;
        Ok(Written { doc, revision })
    }

    fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Document> {
        let conn = self.conn()?;
        read(&conn, kind, namespace, name)?.ok_or_else(|| Error::not_found(kind, name))
    }

    fn list(&self, kind: Kind) -> Result<Vec<Document>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT doc FROM resources WHERE kind = ?1 ORDER BY namespace, name")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![kind.as_str()], |r| r.get::<_, String>(0))
            .map_err(db_err)?;
        rows.map(|json| decode(&json.map_err(db_err)?)).collect()
    }

    fn watch(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    fn get_state(&self, key: &str) -> Result<Option<String>> {
        let conn = self.conn()?;
        conn.query_row(
            "SELECT value FROM state WHERE key = ?1",
            params![key],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)
    }

    fn put_state(&self, key: &str, value: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )
        .map_err(db_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flare_model::ErrorCode;
    use serde_json::json;

    fn doc(name: &str, spec: serde_json::Value) -> Document {
        Resource {
            api_version: flare_model::API_VERSION.into(),
            kind: Kind::HttpTrigger,
            metadata: Metadata::named(name),
            spec,
        }
    }

    #[test]
    fn create_get_update_delete_with_generations() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let mut events = store.watch();

        let w = store.create(doc("a", json!({"v": 1}))).unwrap();
        assert_eq!(w.doc.metadata.generation, 1);
        assert_eq!(w.doc.metadata.uid.len(), 32);
        assert!(w.doc.metadata.created_at.is_some());
        assert_eq!(w.revision, 1);
        let err = store.create(doc("a", json!({}))).unwrap_err();
        assert_eq!(err.code, ErrorCode::AlreadyExists);

        let mut next = doc("a", json!({"v": 2}));
        next.metadata.generation = 1;
        let w2 = store.update(next.clone()).unwrap();
        assert_eq!(w2.doc.metadata.generation, 2);
        assert_eq!(w2.doc.metadata.uid, w.doc.metadata.uid);
        assert_eq!(w2.doc.metadata.created_at, w.doc.metadata.created_at);
        // Same stale generation again: conflict, nothing changed.
        assert_eq!(store.update(next).unwrap_err().code, ErrorCode::Conflict);
        assert_eq!(
            store.get(Kind::HttpTrigger, "default", "a").unwrap().spec,
            json!({"v": 2})
        );

        assert_eq!(
            store.get(Kind::Function, "default", "a").unwrap_err().code,
            ErrorCode::NotFound
        );
        store.delete(Kind::HttpTrigger, "default", "a").unwrap();
        assert_eq!(
            store
                .delete(Kind::HttpTrigger, "default", "a")
                .unwrap_err()
                .code,
            ErrorCode::NotFound
        );

        let revisions: Vec<u64> = std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| e.revision)
            .collect();
        assert_eq!(revisions, vec![1, 2, 3], "failed writes emit nothing");
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).unwrap();
            store.create(doc("b", json!({}))).unwrap();
            store.create(doc("a", json!({}))).unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        let names: Vec<String> = store
            .list(Kind::HttpTrigger)
            .unwrap()
            .into_iter()
            .map(|d| d.metadata.name)
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(store.revision(), 2);
        store.put_state("k", "v1").unwrap();
        store.put_state("k", "v2").unwrap();
        assert_eq!(store.get_state("k").unwrap().as_deref(), Some("v2"));
        assert_eq!(store.get_state("other").unwrap(), None);
    }
}
