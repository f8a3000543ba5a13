//! Durable asynchronous invocations: a queue in the same SQLite database.
//!
//! An invocation is stored (synchronous=FULL) before the caller is told
//! 202, moves queued -> running -> succeeded | failed, and is retried with
//! backoff up to its max retries; a failed one stays as the dead letter.
//! On start, invocations left running by a crash are queued again.

use std::sync::Arc;
use std::time::Duration;

use flare_model::{Error, Result, now_us};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::SqliteStore;
use crate::sqlite::db_err;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InvocationStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl InvocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            InvocationStatus::Queued => "queued",
            InvocationStatus::Running => "running",
            InvocationStatus::Succeeded => "succeeded",
            InvocationStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queued" => Some(InvocationStatus::Queued),
            "running" => Some(InvocationStatus::Running),
            "succeeded" => Some(InvocationStatus::Succeeded),
            "failed" => Some(InvocationStatus::Failed),
            _ => None,
        }
    }
}

/// A request to run later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewInvocation {
    pub id: String,
    pub function: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    #[serde(skip)]
    pub body: Vec<u8>,
    pub callback_url: Option<String>,
    pub max_retries: u32,
}

/// Which invocations a listing wants: the newest `limit`, optionally of
/// one status, one function (its qualified name) and one namespace.
#[derive(Debug, Clone, Default)]
pub struct InvocationFilter {
    pub status: Option<InvocationStatus>,
    pub function: Option<String>,
    pub namespace: Option<String>,
    pub limit: usize,
}

impl InvocationFilter {
    /// The newest `limit` of every invocation.
    pub fn newest(limit: usize) -> Self {
        InvocationFilter {
            limit,
            ..Default::default()
        }
    }

    pub fn matches(&self, invocation: &Invocation) -> bool {
        let function = &invocation.request.function;
        self.status.is_none_or(|s| invocation.status == s)
            && self.function.as_ref().is_none_or(|f| function == f)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| flare_model::split_qualified(function).1 == n)
    }
}

/// An invocation as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    #[serde(flatten)]
    pub request: NewInvocation,
    pub status: InvocationStatus,
    pub attempts: u32,
    pub created_us: i64,
    pub updated_us: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_status: Option<u16>,
    /// The response body, as text (lossy) when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of one attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: Option<u16>,
    pub body: Vec<u8>,
    pub error: Option<String>,
    /// It failed: try again while retries are left.
    pub retry: bool,
    /// It failed in a way retrying cannot fix (the function is gone).
    pub fatal: bool,
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS invocations (
    id              TEXT PRIMARY KEY,
    function        TEXT NOT NULL,
    status          TEXT NOT NULL,
    request         TEXT NOT NULL,
    body            BLOB NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL,
    created_us      INTEGER NOT NULL,
    updated_us      INTEGER NOT NULL,
    result_status   INTEGER,
    result_body     BLOB,
    error           TEXT
);
CREATE INDEX IF NOT EXISTS invocations_due ON invocations (status, next_attempt_us);
";

fn row_to_invocation(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Vec<u8>, Invocation)> {
    let request: String = row.get("request")?;
    let body: Vec<u8> = row.get("body")?;
    let status: String = row.get("status")?;
    let result_body: Option<Vec<u8>> = row.get("result_body")?;
    Ok((
        request,
        body,
        Invocation {
            request: NewInvocation {
                id: row.get("id")?,
                function: row.get("function")?,
                method: String::new(),
                path: String::new(),
                headers: Vec::new(),
                body: Vec::new(),
                callback_url: None,
                max_retries: 0,
            },
            status: InvocationStatus::parse(&status).unwrap_or(InvocationStatus::Failed),
            attempts: row.get("attempts")?,
            created_us: row.get("created_us")?,
            updated_us: row.get("updated_us")?,
            result_status: row.get("result_status")?,
            result_body: result_body.map(|b| String::from_utf8_lossy(&b).into_owned()),
            error: row.get("error")?,
        },
    ))
}

fn decode((request, body, mut invocation): (String, Vec<u8>, Invocation)) -> Result<Invocation> {
    let stored: NewInvocation = serde_json::from_str(&request)
        .map_err(|e| Error::internal(format!("corrupt invocation: {e}")))?;
    invocation.request = NewInvocation { body, ..stored };
    Ok(invocation)
}

impl SqliteStore {
    /// Stores a new invocation, durably, as queued.
    pub fn enqueue(&self, new: &NewInvocation) -> Result<()> {
        let request = serde_json::to_string(new).map_err(|e| Error::internal(e.to_string()))?;
        let now = now_us();
        self.conn()?
            .execute(
                "INSERT INTO invocations (id, function, status, request, body, next_attempt_us, created_us, updated_us)
                 VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?5, ?5)",
                params![new.id, new.function, request, new.body, now],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Marks up to `limit` due invocations running and returns them.
    pub fn claim_due(&self, limit: usize) -> Result<Vec<Invocation>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(db_err)?;
        let claimed = {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE invocations SET status = 'running', updated_us = ?1
                     WHERE id IN (SELECT id FROM invocations WHERE status = 'queued' AND next_attempt_us <= ?1
                                  ORDER BY next_attempt_us LIMIT ?2)
                     RETURNING *",
                )
                .map_err(db_err)?;
            let rows = stmt
                .query_map(params![now_us(), limit as i64], row_to_invocation)
                .map_err(db_err)?;
            rows.map(|r| decode(r.map_err(db_err)?))
                .collect::<Result<Vec<_>>>()?
        };
        tx.commit().map_err(db_err)?;
        Ok(claimed)
    }

    /// When the next queued invocation is due, if any.
    pub fn next_due_us(&self) -> Result<Option<i64>> {
        self.conn()?
            .query_row(
                "SELECT MIN(next_attempt_us) FROM invocations WHERE status = 'queued'",
                [],
                |r| r.get(0),
            )
            .map_err(db_err)
    }

    /// Records an attempt: done, queued again after `backoff_us`, or
    /// failed for good when no retry is left. Returns the new status.
    pub fn record_attempt(
        &self,
        invocation: &Invocation,
        attempt: &Attempt,
        backoff_us: i64,
    ) -> Result<InvocationStatus> {
        let attempts = invocation.attempts + 1;
        let status = outcome(invocation, attempt);
        let now = now_us();
        self.conn()?
            .execute(
                "UPDATE invocations SET status = ?2, attempts = ?3, updated_us = ?4, next_attempt_us = ?5,
                        result_status = ?6, result_body = ?7, error = ?8 WHERE id = ?1",
                params![
                    invocation.request.id,
                    status.as_str(),
                    attempts,
                    now,
                    now + backoff_us,
                    attempt.status,
                    attempt.body,
                    attempt.error
                ],
            )
            .map_err(db_err)?;
        Ok(status)
    }

    /// Puts a running invocation back in the queue without counting an
    /// attempt: the function was only saturated.
    pub fn defer(&self, id: &str, delay_us: i64) -> Result<()> {
        let now = now_us();
        self.conn()?
            .execute(
                "UPDATE invocations SET status = 'queued', updated_us = ?2, next_attempt_us = ?3 WHERE id = ?1",
                params![id, now, now + delay_us],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Queues again what a crash left running.
    pub fn requeue_running(&self) -> Result<usize> {
        self.conn()?
            .execute(
                "UPDATE invocations SET status = 'queued' WHERE status = 'running'",
                [],
            )
            .map_err(db_err)
    }

    pub fn invocation(&self, id: &str) -> Result<Invocation> {
        let row = self
            .conn()?
            .query_row(
                "SELECT * FROM invocations WHERE id = ?1",
                params![id],
                row_to_invocation,
            )
            .optional()
            .map_err(db_err)?;
        match row {
            Some(row) => decode(row),
            None => Err(Error::not_found("invocation", id)),
        }
    }

    /// The invocations `filter` wants, newest first.
    pub fn invocations(&self, filter: &InvocationFilter) -> Result<Vec<Invocation>> {
        let conn = self.conn()?;
        // Functions are stored by qualified name: `name` in the default
        // namespace, `name.namespace` elsewhere.
        let mut stmt = conn
            .prepare_cached(
                "SELECT * FROM invocations WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR function = ?2)
                 AND (?4 IS NULL OR (CASE WHEN ?4 = 'default' THEN instr(function, '.') = 0
                                     ELSE substr(function, -length(?4) - 1) = '.' || ?4 END))
                 ORDER BY created_us DESC LIMIT ?3",
            )
            .map_err(db_err)?;
        let rows = stmt
            .query_map(
                params![
                    filter.status.map(InvocationStatus::as_str),
                    filter.function,
                    filter.limit as i64,
                    filter.namespace
                ],
                row_to_invocation,
            )
            .map_err(db_err)?;
        rows.map(|r| decode(r.map_err(db_err)?)).collect()
    }
}

/// What an attempt leaves an invocation as: done, queued for another try,
/// or failed for good (no retry left, or one that cannot help).
pub fn outcome(invocation: &Invocation, attempt: &Attempt) -> InvocationStatus {
    if !attempt.retry && !attempt.fatal {
        InvocationStatus::Succeeded
    } else if attempt.fatal || invocation.attempts + 1 > invocation.request.max_retries {
        InvocationStatus::Failed
    } else {
        InvocationStatus::Queued
    }
}

/// Where asynchronous invocations wait to run and where their outcomes
/// stay: the node's own database ([`SqliteQueue`]), or a work queue every
/// node of a cluster takes from.
#[async_trait::async_trait]
pub trait InvocationQueue: Send + Sync {
    /// Stores `new` as queued; once this returns, it will run.
    async fn submit(&self, new: NewInvocation) -> Result<()>;

    /// Up to `limit` invocations due now, each marked running and handed
    /// to the caller to finish. Waits a while (a second at most) for one.
    async fn take(&self, limit: usize) -> Result<Vec<Box<dyn Claimed>>>;

    async fn invocation(&self, id: &str) -> Result<Invocation>;

    /// The invocations `filter` wants, newest first.
    async fn invocations(&self, filter: InvocationFilter) -> Result<Vec<Invocation>>;

    /// Forgets the records of a deleted namespace's invocations that it
    /// keeps outside this node's database (what is in the database goes
    /// with the namespace's logs, in [`crate::retention::forget_namespace`]);
    /// returns how many.
    async fn forget_namespace(&self, namespace: &str) -> Result<u64>;

    /// Whether a finished invocation's record keeps its request body (so
    /// it can be retried).
    fn keeps_bodies(&self) -> bool {
        true
    }

    /// The most response bytes kept with an invocation's record.
    fn max_result(&self) -> usize {
        1 << 20
    }
}

/// An invocation taken from the queue to run. Finishing it records the
/// outcome; one dropped unfinished runs again (its taker crashed).
#[async_trait::async_trait]
pub trait Claimed: Send {
    fn invocation(&self) -> &Invocation;

    /// The request's body, handed over to run it (it is not needed again:
    /// a retry reads it from the queue anew).
    fn take_body(&mut self) -> Vec<u8>;

    /// Records `attempt`: the invocation is done, failed for good, or
    /// queued again after `backoff`. Returns what it is now.
    async fn finish(
        self: Box<Self>,
        attempt: &Attempt,
        backoff: Duration,
    ) -> Result<InvocationStatus>;

    /// Puts the invocation back, to run after `delay`, without spending an
    /// attempt: the function was only saturated.
    async fn defer(self: Box<Self>, delay: Duration) -> Result<()>;
}

/// The queue of a node alone: its SQLite database, plus a wake-up for
/// whoever takes from it.
#[derive(Clone)]
pub struct SqliteQueue {
    store: Arc<SqliteStore>,
    wake: Arc<tokio::sync::Notify>,
}

impl SqliteQueue {
    /// The queue in `store`. What a crash left running is queued again.
    pub fn open(store: Arc<SqliteStore>) -> Result<Self> {
        let requeued = store.requeue_running()?;
        if requeued > 0 {
            tracing::info!("{requeued} invocations left running by a crash are queued again");
        }
        Ok(SqliteQueue {
            store,
            wake: Arc::default(),
        })
    }
}

#[async_trait::async_trait]
impl InvocationQueue for SqliteQueue {
    /// Stores the invocation durably, then wakes the taker.
    async fn submit(&self, new: NewInvocation) -> Result<()> {
        self.store
            .off_thread(move |store| store.enqueue(&new))
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    async fn take(&self, limit: usize) -> Result<Vec<Box<dyn Claimed>>> {
        let claimed = self
            .store
            .off_thread(move |store| store.claim_due(limit))
            .await?;
        if claimed.is_empty() {
            let due = self.store.off_thread(|store| store.next_due_us()).await?;
            let wait = due.map_or(Duration::from_secs(1), |due| {
                Duration::from_micros(due.saturating_sub(now_us()).max(0) as u64)
            });
            let _ =
                tokio::time::timeout(wait.min(Duration::from_secs(1)), self.wake.notified()).await;
        }
        Ok(claimed
            .into_iter()
            .map(|invocation| {
                Box::new(SqliteClaim {
                    invocation,
                    queue: self.clone(),
                }) as Box<dyn Claimed>
            })
            .collect())
    }

    async fn invocation(&self, id: &str) -> Result<Invocation> {
        let id = id.to_string();
        self.store
            .off_thread(move |store| store.invocation(&id))
            .await
    }

    async fn invocations(&self, filter: InvocationFilter) -> Result<Vec<Invocation>> {
        self.store
            .off_thread(move |store| store.invocations(&filter))
            .await
    }

    async fn forget_namespace(&self, _namespace: &str) -> Result<u64> {
        // Every record is in the database.
        Ok(0)
    }
}

struct SqliteClaim {
    invocation: Invocation,
    queue: SqliteQueue,
}

#[async_trait::async_trait]
impl Claimed for SqliteClaim {
    fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.invocation.request.body)
    }

    async fn finish(
        self: Box<Self>,
        attempt: &Attempt,
        backoff: Duration,
    ) -> Result<InvocationStatus> {
        let (invocation, attempt) = (self.invocation, attempt.clone());
        let status = self
            .queue
            .store
            .off_thread(move |store| {
                store.record_attempt(&invocation, &attempt, backoff.as_micros() as i64)
            })
            .await?;
        if status == InvocationStatus::Queued {
            self.queue.wake.notify_one();
        }
        Ok(status)
    }

    async fn defer(self: Box<Self>, delay: Duration) -> Result<()> {
        let id = self.invocation.request.id;
        self.queue
            .store
            .off_thread(move |store| store.defer(&id, delay.as_micros() as i64))
            .await?;
        self.queue.wake.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(id: &str, retries: u32) -> NewInvocation {
        NewInvocation {
            id: id.into(),
            function: "f".into(),
            method: "POST".into(),
            path: "/x".into(),
            headers: vec![("a".into(), "b".into())],
            body: b"payload".to_vec(),
            callback_url: None,
            max_retries: retries,
        }
    }

    #[test]
    fn a_namespace_lists_only_its_functions_invocations() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.enqueue(&new("a", 0)).unwrap();
        store.enqueue(&new("b", 0)).unwrap();
        // Functions are kept by qualified name; a namespace picks its own.
        let mut other = new("d", 0);
        other.function = "f.team-a".into();
        store.enqueue(&other).unwrap();
        let ids = |namespace: &str| -> Vec<String> {
            store
                .invocations(&InvocationFilter {
                    namespace: Some(namespace.to_string()),
                    ..InvocationFilter::newest(10)
                })
                .unwrap()
                .into_iter()
                .map(|i| i.request.id)
                .collect()
        };
        assert_eq!(ids("team-a"), ["d"]);
        assert!(!ids("default").contains(&"d".to_string()));
        assert_eq!(ids("default").len(), 2);
        assert!(ids("eam-a").is_empty());
    }

    #[test]
    fn queue_claim_retry_fail_and_recover() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.enqueue(&new("a", 1)).unwrap();
        store.enqueue(&new("b", 0)).unwrap();
        let claimed = store.claim_due(10).unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(claimed[0].request.body, b"payload");
        assert_eq!(
            claimed[0].request.headers,
            vec![("a".to_string(), "b".to_string())]
        );
        assert!(
            store.claim_due(10).unwrap().is_empty(),
            "running ones are not claimed twice"
        );

        let failure = Attempt {
            status: Some(500),
            body: b"boom".to_vec(),
            error: Some("500".into()),
            retry: true,
            fatal: false,
        };
        let a = claimed.iter().find(|i| i.request.id == "a").unwrap();
        assert_eq!(
            store.record_attempt(a, &failure, 0).unwrap(),
            InvocationStatus::Queued
        );
        let b = claimed.iter().find(|i| i.request.id == "b").unwrap();
        assert_eq!(
            store.record_attempt(b, &failure, 0).unwrap(),
            InvocationStatus::Failed
        );
        let again = store.claim_due(10).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        assert_eq!(
            store.record_attempt(&again[0], &failure, 0).unwrap(),
            InvocationStatus::Failed
        );
        let failed = store
            .invocations(&InvocationFilter {
                status: Some(InvocationStatus::Failed),
                ..InvocationFilter::newest(10)
            })
            .unwrap();
        assert_eq!(failed.len(), 2);
        assert_eq!(failed[0].result_body.as_deref(), Some("boom"));

        store.enqueue(&new("c", 0)).unwrap();
        assert_eq!(store.claim_due(10).unwrap().len(), 1);
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            store.requeue_running().unwrap(),
            1,
            "a crash left c running"
        );
        assert_eq!(
            store.invocation("c").unwrap().status,
            InvocationStatus::Queued
        );
        assert_eq!(
            store.invocation("zzz").unwrap_err().code,
            flare_model::ErrorCode::NotFound
        );
    }
}
