//! Function logs: a writer thread that batches lines into SQLite off the
//! request path, queries by function / invocation / time / text, and a
//! broadcast of new lines for `--follow`.
//!
//! Invariant: a line is broadcast only after the transaction holding it has
//! committed, and broadcast ids only grow, so a follower that queries first
//! and then skips ids it has seen neither loses nor repeats a line.
//!
//! In a cluster ([`start_shipped`]) the writer hands this node's lines to a
//! [`Ship`] (the cluster's log stream) instead of storing them, and every
//! node stores what the stream holds, its own lines included, through a
//! [`LogApplier`]: each node's database is a replica of the cluster's log,
//! so queries and followers stay local. The position applied is stored in
//! the same transaction as the lines, so a restart neither skips nor
//! repeats a batch.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use flare_model::{Error, LogEntry, LogRecord, LogStream, Result};
use rusqlite::{Connection, OptionalExtension, params};
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

/// What the writer thread is handed.
enum Write {
    /// A line written on this node.
    Line(LogRecord),
    /// Lines from the cluster's stream, at `position` in it.
    Applied {
        position: u64,
        records: Vec<LogRecord>,
    },
    /// A namespace deleted, at `position` in the cluster's stream: its
    /// lines go, and any of its lines written before `before_us` that
    /// arrive later are not stored.
    Forget {
        position: u64,
        namespace: String,
        before_us: i64,
    },
}

/// Stream writes handed to the writer and not yet stored, at most: a node
/// catching up on the stream neither crowds out its own lines nor holds
/// more than this many messages of lines in memory.
const APPLIED_IN_FLIGHT: usize = 16;

/// Counts the stream writes in the writer's queue.
#[derive(Default)]
struct Gate {
    held: Mutex<usize>,
    freed: Condvar,
}

impl Gate {
    fn enter(&self) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        while *held >= APPLIED_IN_FLIGHT {
            held = match self.freed.wait(held) {
                Ok(held) => held,
                Err(_) => return,
            };
        }
        *held += 1;
    }

    fn leave(&self) {
        if let Ok(mut held) = self.held.lock() {
            *held = held.saturating_sub(1);
            self.freed.notify_one();
        }
    }
}

/// Where a node of a cluster sends its lines before they are stored.
pub trait Ship: Send + 'static {
    /// Ships `batch` (blocking; called on the writer thread) and returns
    /// the lines it could not ship, which the writer stores here.
    fn ship(&mut self, batch: Vec<LogRecord>) -> Vec<LogRecord>;
}

/// Hands lines to the writer thread; cheap to clone, never blocks.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::SyncSender<Write>,
    dropped: Arc<AtomicU64>,
}

impl LogSender {
    pub fn send(&self, record: LogRecord) {
        if self.tx.try_send(Write::Line(record)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Stores what a cluster's log stream holds, in the stream's order.
#[derive(Clone)]
pub struct LogApplier {
    tx: mpsc::SyncSender<Write>,
    gate: Arc<Gate>,
}

impl LogApplier {
    /// Stores `records`, the lines at `position` in the stream. Blocks
    /// while the writer is behind; call off the async runtime. An error
    /// means the writer has stopped.
    pub fn apply(&self, position: u64, records: Vec<LogRecord>) -> Result<()> {
        self.send(Write::Applied { position, records })
    }

    /// Removes the lines of `namespace`'s functions, as the stream says at
    /// `position`, and keeps out its lines written before `before_us` that
    /// arrive later (from a node that was still writing them). Blocking,
    /// like [`LogApplier::apply`].
    pub fn forget(&self, position: u64, namespace: String, before_us: i64) -> Result<()> {
        self.send(Write::Forget {
            position,
            namespace,
            before_us,
        })
    }

    fn send(&self, write: Write) -> Result<()> {
        self.gate.enter();
        self.tx.send(write).map_err(|_| {
            self.gate.leave();
            Error::internal("the log writer has stopped")
        })
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
    let (sender, _, logs) = spawn_writer(db, None)?;
    Ok((sender, logs))
}

/// Starts the writer of a cluster's node: this node's lines go to `ship`,
/// and what the cluster's stream holds comes back through the
/// [`LogApplier`] (lines `ship` could not ship are stored here at once).
pub fn start_shipped(db: &Path, ship: impl Ship) -> Result<(LogSender, LogApplier, Arc<Logs>)> {
    spawn_writer(db, Some(Box::new(ship)))
}

fn spawn_writer(
    db: &Path,
    ship: Option<Box<dyn Ship>>,
) -> Result<(LogSender, LogApplier, Arc<Logs>)> {
    // NORMAL: in WAL mode a process crash loses nothing; only a power loss
    // may lose the last lines, which is the right trade for a log.
    let writer = connect(db, "NORMAL")?;
    let reader = connect(db, "NORMAL")?;
    writer
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS log_forgotten (
                 namespace TEXT PRIMARY KEY,
                 before_us INTEGER NOT NULL
             )",
        )
        .map_err(db_err)?;
    let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
    let (followers, _) = broadcast::channel(QUEUE_CAPACITY);
    let logs = Arc::new(Logs {
        reader: Mutex::new(reader),
        followers: followers.clone(),
    });
    let gate = Arc::new(Gate::default());
    let writer = Writer {
        forgotten: forgotten(&writer)?,
        conn: writer,
        followers,
        gate: gate.clone(),
    };
    std::thread::Builder::new()
        .name("flare-log-writer".into())
        .spawn(move || writer.run(rx, ship))
        .map_err(|e| Error::internal(format!("cannot start log writer: {e}")))?;
    Ok((
        LogSender {
            tx: tx.clone(),
            dropped: Arc::default(),
        },
        LogApplier { tx, gate },
        logs,
    ))
}

/// The deleted namespaces whose late lines are kept out: namespace, and
/// the time before which its lines are dropped.
fn forgotten(conn: &Connection) -> Result<HashMap<String, i64>> {
    let mut stmt = conn
        .prepare("SELECT namespace, before_us FROM log_forgotten")
        .map_err(db_err)?;
    let rows = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(db_err)?;
    rows.collect::<rusqlite::Result<_>>().map_err(db_err)
}

/// The writer thread: the only writer of the log table.
struct Writer {
    conn: Connection,
    followers: broadcast::Sender<LogEntry>,
    forgotten: HashMap<String, i64>,
    gate: Arc<Gate>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Write>, mut ship: Option<Box<dyn Ship>>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut applied = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(write) = next.take() {
                match write {
                    Write::Line(record) => batch.push(record),
                    Write::Applied { position, records } => applied.push((position, records)),
                    Write::Forget {
                        position,
                        namespace,
                        before_us,
                    } => {
                        // What came before the mark is stored before it goes.
                        for (position, mut records) in applied.drain(..) {
                            self.store(&mut records, Some(position));
                            self.gate.leave();
                        }
                        if let Err(e) = self.forget(position, &namespace, before_us) {
                            tracing::error!(
                                "cannot remove the log lines of namespace {namespace}: {e}"
                            );
                        }
                        self.gate.leave();
                    }
                }
                if batch.len() < BATCH && applied.len() < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if let Some(ship) = &mut ship
                && !batch.is_empty()
            {
                batch = ship.ship(std::mem::take(&mut batch));
            }
            if !batch.is_empty() {
                self.store(&mut batch, None);
            }
            for (position, mut records) in applied.drain(..) {
                self.store(&mut records, Some(position));
                self.gate.leave();
            }
        }
    }

    /// Stores `batch` (and the stream `position` it came from) and tells
    /// the followers. Lines of a deleted namespace written before it was
    /// deleted are dropped.
    fn store(&mut self, batch: &mut Vec<LogRecord>, position: Option<u64>) {
        if !self.forgotten.is_empty() {
            batch.retain(|r| {
                let (_, namespace) = flare_model::split_qualified(&r.function);
                self.forgotten
                    .get(namespace)
                    .is_none_or(|before| r.ts_us >= *before)
            });
        }
        match insert(&mut self.conn, batch, position) {
            Ok(first_id) => {
                for (i, record) in batch.drain(..).enumerate() {
                    let _ = self.followers.send(LogEntry {
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

    /// Removes the lines of `namespace`'s functions (qualified names end
    /// in `.namespace`), keeps out those written before `before_us` from
    /// now on, and records `position`, in one transaction.
    fn forget(&mut self, position: u64, namespace: &str, before_us: i64) -> Result<()> {
        let tx = self.conn.transaction().map_err(db_err)?;
        let removed = tx
            .execute(
                "DELETE FROM logs WHERE substr(function, -length(?1)) = ?1",
                params![format!(".{namespace}")],
            )
            .map_err(db_err)?;
        tx.execute(
            "INSERT INTO log_forgotten (namespace, before_us) VALUES (?1, ?2)
             ON CONFLICT (namespace) DO UPDATE SET before_us = excluded.before_us",
            params![namespace, before_us],
        )
        .map_err(db_err)?;
        set_position(&tx, position)?;
        tx.commit().map_err(db_err)?;
        self.forgotten.insert(namespace.to_string(), before_us);
        tracing::info!(
            namespace,
            lines = removed,
            "log lines of a deleted namespace removed"
        );
        Ok(())
    }
}

/// The `meta` key of the stream position this node's log has applied.
const POSITION_KEY: &str = "log_stream_position";
/// The `meta` key of when the stream that position is in was made.
const MADE_KEY: &str = "log_stream_made";

fn meta(conn: &Connection, key: &str) -> Result<Option<i64>> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = ?1",
        params![key],
        |row| row.get(0),
    )
    .optional()
    .map_err(db_err)
}

fn set_position(tx: &rusqlite::Transaction, position: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![POSITION_KEY, i64::try_from(position).unwrap_or(i64::MAX)],
    )
    .map(|_| ())
    .map_err(db_err)
}

/// Inserts a batch in one transaction, with the stream position it came
/// from; returns the id of its first line (0 for an empty batch). Ids are
/// consecutive because this thread is the only writer of the table.
fn insert(conn: &mut Connection, batch: &[LogRecord], position: Option<u64>) -> Result<i64> {
    let tx = conn.transaction().map_err(db_err)?;
    if let Some(position) = position {
        set_position(&tx, position)?;
    }
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
    Ok(first_id.unwrap_or(0))
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

    /// The position in a cluster's log stream this node has stored up to
    /// (0: nothing yet).
    pub fn position(&self) -> Result<u64> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| Error::internal("logs: reader lock poisoned"))?;
        Ok(meta(&conn, POSITION_KEY)?.map_or(0, |p| u64::try_from(p).unwrap_or(0)))
    }

    /// The position this node has stored up to in the stream made at
    /// `made` (any number that changes when the stream is made again). A
    /// stream made again (its data lost) starts over from 0: its positions
    /// are not the old one's. Call before applying anything.
    pub fn position_in(&self, made: i64) -> Result<u64> {
        {
            let conn = self
                .reader
                .lock()
                .map_err(|_| Error::internal("logs: reader lock poisoned"))?;
            if meta(&conn, MADE_KEY)? != Some(made) {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, 0), (?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![POSITION_KEY, MADE_KEY, made],
                )
                .map_err(db_err)?;
            }
        }
        self.position()
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

    /// A ship that keeps what it takes, and refuses everything while
    /// `down` is set.
    struct Kept {
        shipped: Arc<Mutex<Vec<LogRecord>>>,
        down: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Ship for Kept {
        fn ship(&mut self, batch: Vec<LogRecord>) -> Vec<LogRecord> {
            if self.down.load(Ordering::SeqCst) {
                return batch;
            }
            self.shipped.lock().unwrap().extend(batch);
            Vec::new()
        }
    }

    #[tokio::test]
    async fn a_cluster_node_ships_its_lines_and_stores_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let shipped = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ship = Kept {
            shipped: shipped.clone(),
            down: down.clone(),
        };
        let (sender, applier, logs) = start_shipped(store.path(), ship).unwrap();
        let all = |logs: &Logs| {
            logs.query(&LogQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.record.line)
            .collect::<Vec<_>>()
        };
        let eventually = |check: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !check() {
                assert!(std::time::Instant::now() < deadline, "timed out");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };

        // This node's line goes to the ship, not to the table.
        sender.send(record("f", "i1", 10, "mine"));
        eventually(&|| shipped.lock().unwrap().len() == 1);
        assert!(all(&logs).is_empty());
        assert_eq!(logs.position().unwrap(), 0);

        // What the stream holds is stored, with its position; a namespace's
        // mark removes that namespace's lines only.
        let mut follow = logs.follow();
        let mine = shipped.lock().unwrap().clone();
        let (a2, a3) = (applier.clone(), applier.clone());
        tokio::task::spawn_blocking(move || {
            a2.apply(7, mine).unwrap();
            a2.apply(
                8,
                vec![
                    record("g.team-a", "i2", 20, "theirs"),
                    record("g", "i3", 30, "default's"),
                ],
            )
            .unwrap();
            a3.forget(9, "team-a".into(), 25).unwrap();
            // A line of the deleted namespace written before it went,
            // arriving late, stays out; one of a namespace made again
            // under that name afterwards is kept.
            a3.apply(
                10,
                vec![
                    record("late.team-a", "i5", 24, "late"),
                    record("new.team-a", "i6", 26, "new"),
                ],
            )
            .unwrap();
        })
        .await
        .unwrap();
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), follow.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.record.line, "mine");
        eventually(&|| logs.position().unwrap() == 10);
        assert_eq!(all(&logs), ["mine", "default's", "new"]);

        // While the stream does not take lines, they are stored here.
        down.store(true, Ordering::SeqCst);
        sender.send(record("f", "i4", 40, "kept here"));
        eventually(&|| all(&logs).len() == 4);
        assert_eq!(logs.position().unwrap(), 10);
        assert_eq!(shipped.lock().unwrap().len(), 1);
    }
}
