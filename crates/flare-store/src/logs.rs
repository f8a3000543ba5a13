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

/// Makes the text index of log lines: FTS5 trigrams of each line (any
/// substring of 3 characters or more can be looked up), without a copy of
/// the text. Lines reach it in the background ([`index_lines`]), in big
/// batches, so the log writer keeps its pace; `logs_indexed` says up to
/// which line id it holds, and what is above is read by a scan.
pub(crate) fn index_text(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE VIRTUAL TABLE IF NOT EXISTS logs_text USING fts5(
             line, content='', contentless_delete=1, tokenize='trigram', detail='none'
         );
         CREATE TABLE IF NOT EXISTS logs_indexed (
             one  INTEGER PRIMARY KEY CHECK (one = 1),
             upto INTEGER NOT NULL
         );
         INSERT OR IGNORE INTO logs_indexed (one, upto) VALUES (1, 0);
         CREATE TRIGGER IF NOT EXISTS logs_text_delete AFTER DELETE ON logs
             WHEN old.id <= (SELECT upto FROM logs_indexed)
         BEGIN
             DELETE FROM logs_text WHERE rowid = old.id;
         END;",
    )
    .map_err(db_err)
}

/// Lines indexed per transaction: big enough to amortize FTS5's work,
/// small enough that the log writer never waits long for the database.
const INDEX_BATCH: i64 = 2048;

/// Indexes the lines above the mark, batch by batch, until `logs` is
/// dropped; sleeps while there is nothing new.
fn index_lines(conn: Connection, logs: std::sync::Weak<Logs>) {
    let step = |conn: &mut Connection| -> rusqlite::Result<usize> {
        let tx = conn.transaction()?;
        let upto: i64 = tx.query_row("SELECT upto FROM logs_indexed", [], |r| r.get(0))?;
        let added = tx.execute(
            "INSERT INTO logs_text (rowid, line)
                 SELECT id, line FROM logs WHERE id > ?1 ORDER BY id LIMIT ?2",
            params![upto, INDEX_BATCH],
        )?;
        if added > 0 {
            tx.execute(
                "UPDATE logs_indexed SET upto = (
                     SELECT max(id) FROM (SELECT id FROM logs WHERE id > ?1 ORDER BY id LIMIT ?2)
                 )",
                params![upto, INDEX_BATCH],
            )?;
        }
        tx.commit()?;
        Ok(added)
    };
    let mut conn = conn;
    while logs.strong_count() > 0 {
        match step(&mut conn) {
            Ok(added) if added as i64 == INDEX_BATCH => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!("log text index: {e}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The FTS5 query for lines holding `text` (3 characters or more): every
/// trigram of it (at most 32, spread over it), the exact match left to
/// `instr`.
fn trigram_query(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let all: Vec<String> = chars.windows(3).map(|w| w.iter().collect()).collect();
    let step = all.len().div_ceil(32).max(1);
    let mut picked: Vec<&String> = all.iter().step_by(step).collect();
    if let Some(last) = all.last()
        && picked.last() != Some(&last)
    {
        picked.push(last);
    }
    picked.dedup();
    picked
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" AND ")
}

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
    /// Only lines of this stream.
    pub stream: Option<LogStream>,
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
            && self.stream.is_none_or(|s| s == r.stream)
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
    index_text(&writer)?;
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
    let indexer = connect(db, "NORMAL")?;
    let watched = Arc::downgrade(&logs);
    std::thread::Builder::new()
        .name("flare-log-index".into())
        .spawn(move || index_lines(indexer, watched))
        .map_err(|e| Error::internal(format!("cannot start log indexer: {e}")))?;
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

/// The last `limit` lines with an id in (`after`, `upto`] that pass `q`'s
/// filters (and, given, the FTS5 query `text_index`), oldest first. Only
/// the filters asked for are in the SQL, so SQLite picks the index that
/// fits (`?1 IS NULL OR ...` would hide them all from the planner).
fn select(
    conn: &Connection,
    q: &LogQuery,
    after: i64,
    upto: Option<i64>,
    text_index: Option<String>,
    limit: i64,
) -> Result<Vec<LogEntry>> {
    let mut sql =
        String::from("SELECT id, ts_us, function, invocation, stream, line FROM logs WHERE id > ?");
    let mut args: Vec<rusqlite::types::Value> = vec![after.into()];
    let mut filter = |clause: &str, value: rusqlite::types::Value| {
        sql.push_str(clause);
        args.push(value);
    };
    if let Some(upto) = upto {
        filter(" AND id <= ?", upto.into());
    }
    if let Some(function) = &q.function {
        filter(" AND function = ?", function.clone().into());
    }
    if let Some(invocation) = &q.invocation {
        filter(" AND invocation = ?", invocation.clone().into());
    }
    if let Some(since) = q.since_us {
        filter(" AND ts_us >= ?", since.into());
    }
    if let Some(until) = q.until_us {
        filter(" AND ts_us < ?", until.into());
    }
    if let Some(stream) = q.stream {
        filter(" AND stream = ?", stream.as_str().to_string().into());
    }
    if let Some(query) = text_index {
        filter(
            " AND id IN (SELECT rowid FROM logs_text WHERE logs_text MATCH ?)",
            query.into(),
        );
    }
    if let Some(text) = &q.contains {
        filter(" AND instr(line, ?) > 0", text.clone().into());
    }
    filter(" ORDER BY id DESC LIMIT ?", limit.into());
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), |row| {
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
        })
        .map_err(db_err)?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?;
    entries.reverse();
    Ok(entries)
}

impl Logs {
    pub fn query(&self, q: &LogQuery) -> Result<Vec<LogEntry>> {
        let conn = self
            .reader
            .lock()
            .map_err(|_| Error::internal("logs: reader lock poisoned"))?;
        let after = q.after_id.unwrap_or(0);
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let indexed = q.contains.as_ref().is_some_and(|t| t.chars().count() >= 3);
        if !indexed {
            return select(&conn, q, after, None, None, limit);
        }
        // The newest lines, not indexed yet, by a scan; then the index for
        // the rest, below the mark read once for both.
        let upto: i64 = conn
            .query_row("SELECT upto FROM logs_indexed", [], |r| r.get(0))
            .map_err(db_err)?;
        let mut newest = select(&conn, q, after.max(upto), None, None, limit)?;
        let missing = limit - newest.len() as i64;
        if missing > 0 && upto > after {
            let text = q.contains.as_deref().unwrap_or_default();
            let mut older = select(
                &conn,
                q,
                after,
                Some(upto),
                Some(trigram_query(text)),
                missing,
            )?;
            older.append(&mut newest);
            newest = older;
        }
        Ok(newest)
    }

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

    /// Lines stored directly (as the writer does), in one transaction.
    fn insert(db: &Path, records: &[LogRecord]) {
        let mut conn = connect(db, "NORMAL").unwrap();
        let mut batch = records.to_vec();
        insert_batch(&mut conn, &mut batch);
    }

    fn insert_batch(conn: &mut Connection, batch: &mut [LogRecord]) {
        let tx = conn.transaction().unwrap();
        for r in batch.iter() {
            tx.execute(
                "INSERT INTO logs (ts_us, function, invocation, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![r.ts_us, r.function, r.invocation, r.stream.as_str(), r.line],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }

    fn indexed_upto(db: &Path) -> i64 {
        let conn = connect(db, "NORMAL").unwrap();
        conn.query_row("SELECT upto FROM logs_indexed", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn text_is_found_through_the_index_and_above_it_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let db = store.path().to_path_buf();
        let (_sender, logs) = start(&db).unwrap();
        let mut lines: Vec<LogRecord> = (0..5000)
            .map(|i| record("a", &format!("i{i}"), i, &format!("line {i} of many")))
            .collect();
        lines[10].line = "card Declined for \"ada\"".into();
        lines[4000].line = "card declined again".into();
        lines[4001].stream = LogStream::Stderr;
        insert(&db, &lines);
        // The indexer reaches every line in the background.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while indexed_upto(&db) < 5000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the index never caught up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Lines the index has not reached yet are found by the scan.
        insert(
            &db,
            &[
                record("a", "new", 6000, "declined, newest"),
                record("b", "new", 6001, "declined elsewhere"),
            ],
        );
        let find = |text: &str, function: Option<&str>| -> Vec<String> {
            logs.query(&LogQuery {
                contains: Some(text.into()),
                function: function.map(str::to_string),
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.record.line)
            .collect()
        };
        // Exact and case-sensitive, oldest first, indexed and not.
        assert_eq!(
            find("declined", None),
            [
                "card declined again",
                "declined, newest",
                "declined elsewhere"
            ]
        );
        assert_eq!(
            find("declined", Some("a")),
            ["card declined again", "declined, newest"]
        );
        assert_eq!(
            find("Declined for \"ada\"", None),
            ["card Declined for \"ada\""]
        );
        // Shorter than a trigram: a scan, still exact.
        assert_eq!(find("4000", None), Vec::<String>::new());
        assert_eq!(
            find("39", None).len(),
            100,
            "the limit holds: the newest 100"
        );
        assert_eq!(find("zz", None), Vec::<String>::new());
        // A limit smaller than what the scan found takes the newest.
        let newest = logs
            .query(&LogQuery {
                contains: Some("declined".into()),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(newest[0].record.line, "declined elsewhere");
        // By stream.
        let stderr = logs
            .query(&LogQuery {
                stream: Some(LogStream::Stderr),
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(stderr.len(), 1);
        assert_eq!(stderr[0].record.line, "line 4001 of many");
        // Lines deleted (retention) leave the index too: a line made later
        // with a reused id is not matched by the text of the old one.
        let conn = connect(&db, "NORMAL").unwrap();
        conn.execute("DELETE FROM logs WHERE id > 4000", [])
            .unwrap();
        let text_rows: i64 = conn
            .query_row(
                "SELECT count(*) FROM logs_text WHERE logs_text MATCH '\"ecl\"'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(text_rows, 1, "only line 10 is left holding \"ecl\"");
        assert_eq!(find("declined", None), Vec::<String>::new());
        assert_eq!(find("Declined", None), ["card Declined for \"ada\""]);
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
