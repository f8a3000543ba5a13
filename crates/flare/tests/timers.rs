//! Timer triggers: cron schedules, CloudEvents headers, restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, eventually};

/// How many timer events echo has logged.
fn firings(server: &Server) -> usize {
    firing_times(server).len()
}

/// When each timer event reached echo, in seconds since the epoch.
fn firing_times(server: &Server) -> Vec<f64> {
    let json = server.ok(&[
        "fn",
        "logs",
        "--name",
        "echo",
        "--contains",
        "event dev.flare.timer",
        "-o",
        "json",
    ]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    entries
        .iter()
        .map(|e| e["ts_us"].as_i64().unwrap() as f64 / 1e6)
        .collect()
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn schedules_are_checked_and_shown() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let err = server.fails(&[
        "tt",
        "create",
        "--name",
        "t",
        "--function",
        "echo",
        "--cron",
        "*/5 25 * * *",
    ]);
    assert!(err.contains("cron hour field \"25\""), "{err}");
    let err = server.fails(&[
        "tt",
        "create",
        "--name",
        "t",
        "--function",
        "echo",
        "--cron",
        "* * *",
    ]);
    assert!(err.contains("3 fields"), "{err}");
    let err = server.fails(&[
        "tt",
        "create",
        "--name",
        "t",
        "--function",
        "echo",
        "--cron",
        "* * * * *",
        "--timezone",
        "Mars/Base",
    ]);
    assert!(err.contains("unknown time zone"), "{err}");
    let err = server.fails(&[
        "tt",
        "create",
        "--name",
        "t",
        "--function",
        "nope",
        "--cron",
        "* * * * *",
    ]);
    assert!(err.contains("function \"nope\" does not exist"), "{err}");

    let out = server.ok(&[
        "tt",
        "showschedule",
        "--cron",
        "*/30 * * * *",
        "--count",
        "3",
    ]);
    let times: Vec<&str> = out.lines().collect();
    assert_eq!(times.len(), 3, "{out}");
    assert!(
        times
            .iter()
            .all(|t| t.contains(":00:00Z") || t.contains(":30:00Z")),
        "{out}"
    );
    let out = server.ok(&[
        "tt",
        "showschedule",
        "--cron",
        "0 9 * * *",
        "--timezone",
        "Asia/Shanghai",
        "--count",
        "1",
    ]);
    assert!(out.trim().ends_with("T09:00:00+08:00"), "{out}");

    server.ok(&[
        "tt",
        "create",
        "--name",
        "nightly",
        "--function",
        "echo",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Europe/Paris",
    ]);
    let list = server.ok(&["tt", "list"]);
    assert!(
        list.contains("nightly") && list.contains("Europe/Paris"),
        "{list}"
    );
    let err = server.fails(&["fn", "delete", "--name", "echo"]);
    assert!(err.contains("timer trigger nightly"), "{err}");
    server.ok(&["tt", "update", "--name", "nightly", "--cron", "0 4 * * *"]);
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["tt", "get", "--name", "nightly", "-o", "json"]))
            .unwrap();
    assert_eq!(json["spec"]["cron"], "0 4 * * *");
    server.ok(&["tt", "delete", "--name", "nightly"]);
    server.ok(&["fn", "delete", "--name", "echo"]);
}

#[test]
fn fires_with_cloudevents_headers_and_catches_up_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    server.create("echo", "echo", &[]);
    server.ok(&[
        "tt",
        "create",
        "--name",
        "tick",
        "--function",
        "echo",
        "--cron",
        "*/10 * * * * *",
    ]);
    // Wait for one firing.
    eventually(Duration::from_secs(15), || {
        (firings(&server) >= 1).then_some(())
    });
    let before = firings(&server);
    server.kill9();

    // Down for more than two slots, and back well clear of a slot
    // boundary, so the catch-up cannot be mistaken for a regular run.
    std::thread::sleep(Duration::from_secs(23));
    eventually(Duration::from_secs(15), || {
        (2.0..5.0).contains(&(now_s() % 10.0)).then_some(())
    });
    let restarted = now_s();
    let server = Server::start_in(dir.path(), &[]);
    // The missed runs fire once at start...
    let catch_up = eventually(Duration::from_secs(15), || {
        firing_times(&server).into_iter().find(|&t| t >= restarted)
    });
    // ...and only once: up to the next regular slot after it there is
    // exactly one firing since the restart.
    let slot = (catch_up / 10.0).floor() * 10.0 + 10.0;
    let times = eventually(Duration::from_secs(20), || {
        let times = firing_times(&server);
        times.iter().any(|&t| t >= slot).then_some(times)
    });
    let early: Vec<f64> = times
        .iter()
        .copied()
        .filter(|&t| t >= restarted && t < slot)
        .collect();
    assert_eq!(early.len(), 1, "once, not once per missed slot: {early:?}");
    // ...and then on schedule.
    eventually(Duration::from_secs(15), || {
        (firings(&server) >= before + 2).then_some(())
    });
    let lines = server.ok(&[
        "fn",
        "logs",
        "--name",
        "echo",
        "--contains",
        "event dev.flare.timer",
    ]);
    assert!(
        lines.contains("echo POST / (event dev.flare.timer)"),
        "{lines}"
    );
}
