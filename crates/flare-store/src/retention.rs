//! Retention: what Flare keeps is bounded by time, not by luck.
//!
//! One pass ([`collect`]) removes log lines and finished invocation records
//! older than their retention, and package blobs no function refers to
//! that nobody has touched for the package retention (the grace covers an
//! upload made just before the function that uses it is created). Queued
//! and running invocations are never removed: nothing accepted is lost.
//! Deletes go in small batches on a connection of their own, so the pass
//! never holds the database for long.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use flare_model::{FunctionSpec, FunctionVersionSpec, Kind, Resource, Result, now_us};
use rusqlite::{Connection, params};

use crate::sqlite::{connect, db_err};
use crate::{PackageStore, SqliteStore, Store};

/// How long each kind of record is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub logs: Duration,
    /// Finished (succeeded or failed) asynchronous invocations.
    pub invocations: Duration,
    /// Packages (and their compiled artifacts) no function refers to.
    pub packages: Duration,
    /// The audit trail.
    pub audit: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            logs: Duration::from_secs(7 * 24 * 3600),
            invocations: Duration::from_secs(7 * 24 * 3600),
            packages: Duration::from_secs(3600),
            audit: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// What one pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub log_lines: u64,
    pub invocations: u64,
    pub packages: u64,
    pub package_bytes: u64,
    pub audit_entries: u64,
    /// The packages functions use (hex digests), which the pass kept; for
    /// what else is kept per package (compiled code).
    pub in_use: HashSet<String>,
}

/// Rows deleted per statement.
const BATCH: i64 = 5_000;

fn cutoff_us(age: Duration) -> i64 {
    now_us().saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX))
}

/// The packages functions refer to now (hex digests). A function that
/// cannot be read fails the whole answer: better no pruning than pruning
/// its package.
pub fn packages_in_use(store: &dyn Store) -> Result<HashSet<String>> {
    let mut in_use: HashSet<String> = store
        .list(Kind::Function)?
        .into_iter()
        .map(|doc| {
            Resource::<FunctionSpec>::from_document(doc).map(|f| f.spec.package.hex().to_string())
        })
        .collect::<Result<_>>()?;
    // A build's source and what it made stay while its record does.
    for doc in store.list(Kind::Package)? {
        let build = Resource::<flare_model::PackageSpec>::from_document(doc)?;
        in_use.insert(build.spec.source.hex().to_string());
        if let Some(built) = &build.spec.status.package {
            in_use.insert(built.hex().to_string());
        }
    }
    // A version may be served again (rollback, alias): its package stays.
    for doc in store.list(Kind::FunctionVersion)? {
        let version = Resource::<FunctionVersionSpec>::from_document(doc)?;
        in_use.insert(version.spec.spec.package.hex().to_string());
    }
    Ok(in_use)
}

/// One retention pass over the store and the package blobs, keeping the
/// packages `resources` (the resource store in use: this one, or a
/// cluster's) refers to. Blocking.
pub fn collect(
    store: &SqliteStore,
    resources: &dyn Store,
    packages: &PackageStore,
    retention: &Retention,
) -> Result<Collected> {
    let conn = connect(store.path(), "NORMAL")?;
    let log_lines = expire_logs(&conn, cutoff_us(retention.logs))?;
    let invocations = expire_invocations(&conn, cutoff_us(retention.invocations))?;
    let audit_entries = expire_audit(&conn, cutoff_us(retention.audit))?;
    let in_use = packages_in_use(resources)?;
    let (removed, package_bytes) = packages.prune(&in_use, retention.packages)?;
    Ok(Collected {
        log_lines,
        invocations,
        packages: removed,
        package_bytes,
        audit_entries,
        in_use,
    })
}

/// Deletes audit entries written before `before_us`.
fn expire_audit(conn: &Connection, before_us: i64) -> Result<u64> {
    let mut removed = 0u64;
    loop {
        let n = conn
            .execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts_us < ?1 LIMIT ?2)",
                params![before_us, BATCH],
            )
            .map_err(db_err)?;
        removed += n as u64;
        if (n as i64) < BATCH {
            return Ok(removed);
        }
    }
}

/// Deletes log lines written before `before_us`. Lines are stored in the
/// order they were written, so the oldest are the lowest ids: find the
/// first line to keep (a scan over exactly the lines that go), then delete
/// below it in batches.
fn expire_logs(conn: &Connection, before_us: i64) -> Result<u64> {
    let first_kept: Option<i64> = conn
        .query_row(
            "SELECT id FROM logs WHERE ts_us >= ?1 ORDER BY id LIMIT 1",
            params![before_us],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(db_err(e)),
        })?;
    let end = match first_kept {
        Some(id) => id,
        None => conn
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM logs", [], |r| {
                r.get(0)
            })
            .map_err(db_err)?,
    };
    let mut removed = 0u64;
    loop {
        let n = conn
            .execute(
                "DELETE FROM logs WHERE id IN (SELECT id FROM logs WHERE id < ?1 ORDER BY id LIMIT ?2)",
                params![end, BATCH],
            )
            .map_err(db_err)?;
        removed += n as u64;
        if (n as i64) < BATCH {
            return Ok(removed);
        }
    }
}

/// Deletes finished invocations last updated before `before_us`; queued
/// and running ones stay whatever their age.
fn expire_invocations(conn: &Connection, before_us: i64) -> Result<u64> {
    let mut removed = 0u64;
    loop {
        let n = conn
            .execute(
                "DELETE FROM invocations WHERE id IN (
                     SELECT id FROM invocations
                     WHERE status IN ('succeeded', 'failed') AND updated_us < ?1
                     LIMIT ?2)",
                params![before_us, BATCH],
            )
            .map_err(db_err)?;
        removed += n as u64;
        if (n as i64) < BATCH {
            return Ok(removed);
        }
    }
}

/// Whether a file was last modified more than `age` ago.
pub fn older_than(meta: &std::fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|elapsed| elapsed > age)
}

/// Removes what a deleted namespace's functions and triggers left behind:
/// their log lines, invocation records and timers' records (kept under
/// qualified names, `name.namespace`), so that a namespace made again
/// later under the same name, perhaps for another team, starts empty.
/// Blocking; in batches, like the retention pass.
pub fn forget_namespace(store: &SqliteStore, namespace: &str) -> Result<u64> {
    let conn = connect(store.path(), "NORMAL")?;
    // Names are DNS labels: `.namespace` ends a qualified name exactly.
    let suffix = format!(".{namespace}");
    let mut removed = 0u64;
    for table in ["logs", "invocations"] {
        loop {
            let n = conn
                .execute(
                    &format!(
                        "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}
                         WHERE substr(function, -length(?1)) = ?1 LIMIT ?2)"
                    ),
                    params![suffix, BATCH],
                )
                .map_err(db_err)?;
            removed += n as u64;
            if (n as i64) < BATCH {
                break;
            }
        }
    }
    removed += conn
        .execute(
            "DELETE FROM state WHERE key LIKE 'timer/%' AND substr(key, -length(?1)) = ?1",
            params![format!("{suffix}/last")],
        )
        .map_err(db_err)? as u64;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invocations::{Attempt, NewInvocation};
    use flare_model::{LogRecord, LogStream};

    fn invocation(id: &str) -> NewInvocation {
        NewInvocation {
            id: id.into(),
            function: "f".into(),
            method: "POST".into(),
            path: "/".into(),
            headers: vec![],
            body: b"x".to_vec(),
            callback_url: None,
            max_retries: 0,
        }
    }

    #[tokio::test]
    async fn a_deleted_namespace_leaves_no_logs_or_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let (logs, reader) = crate::logs::start(store.path()).unwrap();
        for function in ["f", "f.team-a", "f.team-ab", "g.team-a"] {
            logs.send(LogRecord {
                ts_us: now_us(),
                function: function.into(),
                invocation: "i".into(),
                stream: LogStream::Stdout,
                line: "line".into(),
            });
            let mut new = invocation(&format!("id-{function}"));
            new.function = function.into();
            store.enqueue(&new).unwrap();
        }
        drop(logs);
        let count = || {
            reader
                .query(&crate::logs::LogQuery {
                    limit: 100,
                    ..Default::default()
                })
                .unwrap()
                .len()
        };
        let started = std::time::Instant::now();
        while count() < 4 && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        store.put_state("timer/t.team-a/last", "x").unwrap();
        store.put_state("timer/t/last", "x").unwrap();
        assert_eq!(forget_namespace(&store, "team-a").unwrap(), 5);
        assert_eq!(count(), 2, "f and f.team-ab keep their lines");
        let left: Vec<String> = store
            .invocations(&crate::invocations::InvocationFilter::newest(10))
            .unwrap()
            .into_iter()
            .map(|i| i.request.function)
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(store.get_state("timer/t.team-a/last").unwrap().is_none());
        assert!(store.get_state("timer/t/last").unwrap().is_some());
    }

    #[test]
    fn audit_entries_go_after_the_audit_retention() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let packages = PackageStore::open(&dir.path().join("packages")).unwrap();
        let mut old = crate::audit::AuditEntry::now("admin", "POST", "/v1/functions", 201);
        old.ts_us -= 91 * 24 * 3_600_000_000;
        store.record_audit(&old).unwrap();
        let new = crate::audit::AuditEntry::now("admin", "DELETE", "/v1/functions/f", 200);
        store.record_audit(&new).unwrap();
        let collected = collect(&store, &store, &packages, &Retention::default()).unwrap();
        assert_eq!(collected.audit_entries, 1);
        assert_eq!(store.audit(i64::MIN, 10).unwrap(), vec![new]);
    }

    #[tokio::test]
    async fn a_pass_removes_what_is_old_and_keeps_what_is_live() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let packages = PackageStore::open(&dir.path().join("packages")).unwrap();

        // Log lines an hour old and fresh ones.
        let (logs, reader) = crate::logs::start(store.path()).unwrap();
        let hour_ago = now_us() - 3_600_000_000;
        for (i, ts) in [hour_ago, hour_ago, now_us()].into_iter().enumerate() {
            logs.send(LogRecord {
                ts_us: ts,
                function: "f".into(),
                invocation: format!("i{i}"),
                stream: LogStream::Stdout,
                line: "line".into(),
            });
        }
        drop(logs);
        let count = || {
            reader
                .query(&crate::logs::LogQuery {
                    limit: 100,
                    ..Default::default()
                })
                .unwrap()
                .len()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count() < 3 {
            assert!(std::time::Instant::now() < deadline, "lines not written");
            std::thread::sleep(Duration::from_millis(10));
        }

        // A finished invocation and a queued one, both old.
        for id in ["done", "waiting"] {
            store.enqueue(&invocation(id)).unwrap();
        }
        let claimed = store.claim_due(10).unwrap();
        let done = claimed.iter().find(|i| i.request.id == "done").unwrap();
        store
            .record_attempt(
                done,
                &Attempt {
                    status: Some(200),
                    body: vec![],
                    error: None,
                    retry: false,
                    fatal: false,
                },
                0,
            )
            .unwrap();
        store.requeue_running().unwrap();

        // A package no function uses.
        let unused = packages
            .put(bytes::Bytes::from_static(b"\0asm unused"), 1 << 20)
            .await
            .unwrap();

        let retention = Retention {
            logs: Duration::from_secs(60),
            invocations: Duration::ZERO,
            packages: Duration::ZERO,
            audit: Duration::from_secs(60),
        };
        std::thread::sleep(Duration::from_millis(5));
        let collected = collect(&store, &store, &packages, &retention).unwrap();
        assert_eq!(collected.log_lines, 2);
        assert_eq!(collected.invocations, 1);
        assert_eq!(collected.packages, 1);
        assert_eq!(count(), 1, "the fresh line stays");
        assert!(store.invocation("done").is_err());
        assert_eq!(
            store.invocation("waiting").unwrap().status,
            crate::invocations::InvocationStatus::Queued,
            "nothing accepted is lost"
        );
        assert!(!packages.contains(&unused));

        // A second pass finds nothing more.
        let again = collect(&store, &store, &packages, &retention).unwrap();
        assert_eq!(
            (again.log_lines, again.invocations, again.packages),
            (0, 0, 0)
        );
    }
}
