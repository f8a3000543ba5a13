//! How fast `flare fn logs` queries are on a big log: fills a fresh
//! database with N lines (default 1,000,000) spread like a busy server's
//! (200 functions, 10 lines per invocation, stdout/stderr/system), then
//! times each kind of query (median of 5 runs). Run by bench/logs.sh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use flare_store::logs::LogQuery;

const FUNCTIONS: usize = 200;
const PER_INVOCATION: usize = 10;
/// Lines apart between two microsecond timestamps: 1,000 lines a second.
const STEP_US: i64 = 1_000;
const START_US: i64 = 1_800_000_000_000_000;

fn main() {
    let lines: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("N is a number of lines"))
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("flare-log-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = flare_store::SqliteStore::open(&dir).unwrap();
    drop(store);
    let db = dir.join("flare.db");

    // Opened first, as a server does (it makes what it needs), then filled
    // directly: the writer's batching is not what is measured here.
    let (_sender, logs) = flare_store::logs::start(&db).unwrap();
    let filled = Instant::now();
    {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF")
            .unwrap();
        // In batches, as the log writer commits them.
        for batch in (0..lines).collect::<Vec<_>>().chunks(4096) {
            let tx = conn.transaction().unwrap();
            {
                let mut insert = tx
                .prepare_cached(
                    "INSERT INTO logs (ts_us, function, invocation, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .unwrap();
                for &i in batch {
                    let invocation = i / PER_INVOCATION;
                    let function = format!("fn{}", invocation % FUNCTIONS);
                    let stream = match i % 10 {
                        0 => "stderr",
                        9 => "system",
                        _ => "stdout",
                    };
                    // One line in 100,000 holds a rare word.
                    let line = if i % 100_000 == 77 {
                        format!("payment {i} failed: card declined (zebra-{i})")
                    } else {
                        format!(
                            "GET /items/{} took {} ms for user{} ok",
                            i % 997,
                            i % 113,
                            i % 5_003
                        )
                    };
                    insert
                        .execute(rusqlite::params![
                            START_US + i as i64 * STEP_US,
                            function,
                            format!("inv{invocation:012}"),
                            stream,
                            line
                        ])
                        .unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
    let filled = filled.elapsed();
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0)
        + std::fs::metadata(dir.join("flare.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!(
        "{lines} lines stored in {:.1} s ({:.0} lines/s, {} MiB on disk)",
        filled.as_secs_f64(),
        lines as f64 / filled.as_secs_f64(),
        size >> 20
    );

    // The text index follows in the background; how long it takes to
    // catch up (queries scan what it has not reached, so they are right
    // meanwhile, only slower).
    let caught_up = Instant::now();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        loop {
            let (upto, last): (i64, i64) = conn
                .query_row(
                    "SELECT (SELECT upto FROM logs_indexed), (SELECT max(id) FROM logs)",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            if upto >= last {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let caught_up = caught_up.elapsed();
    println!(
        "text index caught up {:.1} s after the last line ({:.0} lines/s overall)",
        caught_up.as_secs_f64(),
        lines as f64 / (filled + caught_up).as_secs_f64()
    );

    let middle = START_US + (lines as i64 / 2) * STEP_US;
    let base = LogQuery {
        limit: 100,
        ..Default::default()
    };
    let queries: Vec<(&str, LogQuery)> = vec![
        ("newest 100 lines", base.clone()),
        (
            "one function, newest 100",
            LogQuery {
                function: Some("fn7".into()),
                ..base.clone()
            },
        ),
        (
            "one invocation",
            LogQuery {
                invocation: Some(format!("inv{:012}", lines / PER_INVOCATION / 2)),
                ..base.clone()
            },
        ),
        (
            "one function, a 10 s window mid-log",
            LogQuery {
                function: Some("fn7".into()),
                since_us: Some(middle),
                until_us: Some(middle + 10_000_000),
                ..base.clone()
            },
        ),
        (
            "text, rare word, whole log",
            LogQuery {
                contains: Some("zebra".into()),
                ..base.clone()
            },
        ),
        (
            "text, rare word, one function",
            LogQuery {
                function: Some("fn7".into()),
                contains: Some("declined".into()),
                ..base.clone()
            },
        ),
        (
            "stderr, one function",
            LogQuery {
                function: Some("fn7".into()),
                stream: Some(flare_model::LogStream::Stderr),
                ..base.clone()
            },
        ),
    ];
    for (what, query) in &queries {
        let mut times: Vec<Duration> = Vec::new();
        let mut found = 0;
        for _ in 0..5 {
            let started = Instant::now();
            found = logs.query(query).unwrap().len();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{what:<40} {:>9.2} ms  ({found} lines)",
            times[2].as_secs_f64() * 1000.0
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
