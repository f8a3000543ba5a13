//! The audit trail: who changed what, when. One row per API request that
//! would change something (create, update, delete, upload, token
//! management), allowed or refused, with the token that made it. Reads and
//! invocations are not recorded; the retention pass removes rows older
//! than the audit retention.

use flare_model::{Result, now_us};
use rusqlite::params;
use serde::{Deserialize, Serialize};

use crate::SqliteStore;
use crate::sqlite::db_err;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id     INTEGER PRIMARY KEY,
    ts_us  INTEGER NOT NULL,
    token  TEXT NOT NULL,
    method TEXT NOT NULL,
    path   TEXT NOT NULL,
    status INTEGER NOT NULL,
    namespace TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (ts_us);
";

/// Adds what a table made by an earlier build lacks.
pub(crate) fn migrate(conn: &rusqlite::Connection) -> Result<()> {
    let has_namespace = conn.prepare("SELECT namespace FROM audit LIMIT 0").is_ok();
    if !has_namespace {
        conn.execute_batch("ALTER TABLE audit ADD COLUMN namespace TEXT NOT NULL DEFAULT ''")
            .map_err(db_err)?;
    }
    Ok(())
}

/// One request that would change something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Microseconds since the Unix epoch.
    pub ts_us: i64,
    /// The token's name; empty when the request carried no valid token.
    pub token: String,
    pub method: String,
    /// The request's path (no query).
    pub path: String,
    /// The namespace it was about; empty for cluster-wide resources.
    #[serde(default)]
    pub namespace: String,
    /// The status it was answered with.
    pub status: u16,
}

impl SqliteStore {
    /// Records `entry` durably.
    pub fn record_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT INTO audit (ts_us, token, method, path, status, namespace) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    entry.ts_us,
                    entry.token,
                    entry.method,
                    entry.path,
                    entry.status,
                    entry.namespace
                ],
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// The newest `limit` entries at or after `since_us`, oldest first.
    pub fn audit(&self, since_us: i64, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.conn()?;
        let mut statement = conn
            .prepare(
                "SELECT ts_us, token, method, path, status, namespace FROM
                   (SELECT * FROM audit WHERE ts_us >= ?1 ORDER BY id DESC LIMIT ?2)
                 ORDER BY id",
            )
            .map_err(db_err)?;
        let rows = statement
            .query_map(
                params![since_us, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(AuditEntry {
                        ts_us: r.get(0)?,
                        token: r.get(1)?,
                        method: r.get(2)?,
                        path: r.get(3)?,
                        status: r.get(4)?,
                        namespace: r.get(5)?,
                    })
                },
            )
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)
    }
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn now(token: &str, method: &str, path: &str, status: u16) -> Self {
        AuditEntry {
            ts_us: now_us(),
            token: token.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            status,
            namespace: String::new(),
        }
    }

    /// This entry, about `namespace`.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.namespace = namespace.to_string();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_oldest_first_newest_kept_by_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        for (i, path) in ["/v1/a", "/v1/b", "/v1/c"].into_iter().enumerate() {
            let mut entry = AuditEntry::now("admin", "POST", path, 201);
            entry.ts_us = 1_000 + i as i64;
            store.record_audit(&entry).unwrap();
        }
        let paths = |since, limit| -> Vec<String> {
            store
                .audit(since, limit)
                .unwrap()
                .into_iter()
                .map(|e| e.path)
                .collect()
        };
        assert_eq!(paths(0, 10), ["/v1/a", "/v1/b", "/v1/c"]);
        assert_eq!(paths(0, 2), ["/v1/b", "/v1/c"]);
        assert_eq!(paths(1_001, 10), ["/v1/b", "/v1/c"]);
        // Reopened: still there.
        drop(store);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.audit(0, 10).unwrap().len(), 3);
    }

    #[test]
    fn a_table_from_before_namespaces_gains_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("flare.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE audit (id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL,
               token TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
               status INTEGER NOT NULL);
             INSERT INTO audit (ts_us, token, method, path, status)
               VALUES (1, 'admin', 'POST', '/v1/tokens', 201);",
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(dir.path()).unwrap();
        let entry = AuditEntry::now("admin", "POST", "/v1/functions", 201).in_namespace("team-a");
        store.record_audit(&entry).unwrap();
        let all = store.audit(0, 10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].namespace, "");
        assert_eq!(all[1].namespace, "team-a");
    }
}
