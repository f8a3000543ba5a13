//! Function logs: a writer thread that batches lines into SQLite off the
//! request path, queries by function / invocation / time / text, and a
//! broadcast of new lines for `--follow`.
//!
//! Invariant: a line is broadcast only after the transaction holding it has
//! committed, and broadcast ids only grow, so a follower that queries first
//! and then skips ids it has seen neither loses nor repeats a line.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use flare_model::{Error, LogEntry, LogRecord, LogStream, Result};
use rusqlite::{Connection, params};
use tokio::sync::broadcast;

use crate::sqlite::{connect, db_err};

/// Lines waiting for the writer; beyond this they are dropped and counted,
/// so a function that floods its log cannot exhaust the server's memory.
const QUEUE_CAPACITY: usize = 64 * 1024;
/// Lines written per transaction at most.
const BATCH: usize = 4096;

/// What to read back. `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub function: Option<String>,
    pub invocation: Option<String>,
    /// Microseconds since the Unix epoch, inclusive.
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    /// Substring the line must contain.
    pub contains: Option<String>,
    /// Only lines with an id above this.
    pub after_id: Option<i64>,
    /// The last `limit` matching lines are returned, oldest first.
    pub limit: usize,
}

impl LogQuery {
    pub fn matches(&self, entry: &LogEntry) -> bool {
        let r = &entry.record;
        self.function.as_ref().is_none_or(|f| *f == r.function)
            && self.invocation.as_ref().is_none_or(|i| *i == r.invocation)
            && self.since_us.is_none_or(|t| r.ts_us >= t)
            && self.until_us.is_none_or(|t| r.ts_us < t)
            && self
                .contains
                .as_ref()
                .is_none_or(|c| r.line.contains(c.as_str()))
            && self.after_id.is_none_or(|id| entry.id > id)
    }
}

/// Hands lines to the writer thread; cheap to clone, never blocks.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::SyncSender<LogRecord>,
    dropped: Arc<AtomicU64>,
}

impl LogSender {
    pub fn send(&self, record: LogRecord) {
        if self.tx.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Reads the log table and follows new lines.
pub struct Logs {
    reader: Mutex<Connection>,
    followers: broadcast::Sender<LogEntry>,
}

/// Starts the writer thread on the database at `db`. The thread ends when
/// every [`LogSender`] is dropped, after writing what it was given.
pub fn start(db: &Path) -> Result<(LogSender, Arc<Logs>)> {
    // NORMAL: in WAL mode a process crash loses nothing; only a power loss
    // may lose the last lines, which is the right trade for a log.
    let writer = connect(db, "NORMAL")?;
    let reader = connect(db, "NORMAL")?;
    let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
    let (followers, _) = broadcast::channel(QUEUE_CAPACITY);
    let logs = Arc::new(Logs {
        reader: Mutex::new(reader),
        followers: followers.clone(),
    });
    std::thread::Builder::new()
        .name("flare-log-writer".into())
        .spawn(move || write_loop(writer, rx, followers))
        .map_err(|e| Error::internal(format!("cannot start log writer: {e}")))?;
    Ok((
        LogSender {
            tx,
            dropped: Arc::default(),
        },
        logs,
    ))
}

fn write_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<LogRecord>,
    followers: broadcast::Sender<LogEntry>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        match insert(&mut conn, &batch) {
            Ok(first_id) => {
                for (i, record) in batch.drain(..).enumerate() {
                    let _ = followers.send(LogEntry {
                        id: first_id + i as i64,
                        record,
                    });
                }
            }
            Err(e) => {
                tracing::error!("dropping {} log lines: {e}", batch.len());
                batch.clear();
            }
        }
    }
}

/// Inserts a batch in one transaction; returns the id of its first line.
/// Ids are consecutive because this thread is the only writer of the table.
fn insert(conn: &mut Connection, batch: &[LogRecord]) -> Result<i64> {
    let tx = conn.transaction().map_err(db_err)?;
    let mut first_id = None;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO logs (ts_us, function, invocation, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(db_err)?;
        for r in batch {
            stmt.execute(params![
                r.ts_us,
                r.function,
                r.invocation,
                r.stream.as_str(),
                r.line
            ])
            .map_err(db_err)?;
            first_id.get_or_insert(tx.last_insert_rowid());
        }
    }
    tx.commit().map_err(db_err)?;
    first_id.ok_or_else(|| Error::internal("empty log batch"))
}

impl Logs {
    pub fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| Error::internal("logs: reader lock poisoned"))?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, ts_us, function, invocation, stream, line FROM logs
                 WHERE (?1 IS NULL OR function = ?1)
                   AND (?2 IS NULL OR invocation = ?2)
                   AND (?3 IS NULL OR ts_us >= ?3)
                   AND (?4 IS NULL OR ts_us < ?4)
                   AND (?5 IS NULL OR instr(line, ?5) > 0)
                   AND id > ?6
                 ORDER BY id DESC LIMIT ?7",
            )
            .map_err(db_err)?;
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(
                params![
                    q.function,
                    q.invocation,
                    q.since_us,
                    q.until_us,
                    q.contains,
                    q.after_id.unwrap_or(0),
                    limit
                ],
                |row| {
                    let stream: String = row.get(4)?;
                    Ok(LogEntry {
                        id: row.get(0)?,
                        record: LogRecord {
                            ts_us: row.get(1)?,
                            function: row.get(2)?,
                            invocation: row.get(3)?,
                            stream: LogStream::parse(&stream).unwrap_or(LogStream::System),
                            line: row.get(5)?,
                        },
                    })
                },
            )
            .map_err(db_err)?;
        let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
        entries.reverse();
        Ok(entries)
    }

    /// New lines as they are committed. Subscribe before querying the past.
    pub fn follow(&self) -> broadcast::Receiver<LogEntry> {
        self.followers.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;

    fn record(function: &str, invocation: &str, ts_us: i64, line: &str) -> LogRecord {
        LogRecord {
            ts_us,
            function: function.into(),
            invocation: invocation.into(),
            stream: LogStream::Stdout,
            line: line.into(),
        }
    }

    #[tokio::test]
    async fn writes_then_queries_and_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (sender, logs) = start(store.path()).unwrap();
        let mut follow = logs.follow();
        sender.send(record("a", "i1", 10, "hello"));
        sender.send(record("b", "i2", 20, "other"));
        sender.send(record("a", "i3", 30, "world"));

        let mut seen = Vec::new();
        while seen.len() < 3 {
            let entry = tokio::time::timeout(std::time::Duration::from_secs(5), follow.recv())
                .await
                .unwrap()
                .unwrap();
            seen.push(entry.record.line);
        }
        assert_eq!(seen, ["hello", "other", "world"]);

        let q = |f: fn(&mut LogQuery)| {
            let mut q = LogQuery {
                limit: 100,
                ..Default::default()
            };
            f(&mut q);
            logs.query(&q)
                .unwrap()
                .into_iter()
                .map(|e| e.record.line)
                .collect::<Vec<_>>()
        };
        assert_eq!(q(|q| q.function = Some("a".into())), ["hello", "world"]);
        assert_eq!(q(|q| q.invocation = Some("i2".into())), ["other"]);
        assert_eq!(q(|q| q.since_us = Some(20)), ["other", "world"]);
        assert_eq!(q(|q| q.contains = Some("orl".into())), ["world"]);
        assert_eq!(q(|q| q.limit = 1), ["world"]);
    }
}
