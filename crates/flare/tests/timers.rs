//! Timer triggers: cron schedules, CloudEvents headers, restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Server, eventually};

/// The lines echo wrote for timer events.
fn firings(server: &Server) -> usize {
    server
        .ok(&[
            "fn",
            "logs",
            "--name",
            "echo",
            "--contains",
            "event dev.flare.timer",
        ])
        .lines()
        .count()
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

    // Down for more than two slots.
    std::thread::sleep(Duration::from_secs(23));
    let server = Server::start_in(dir.path(), &[]);
    // The missed run fires once at start...
    eventually(Duration::from_secs(3), || {
        (firings(&server) > before).then_some(())
    });
    // ...and only once: count just before the next regular slot (or just
    // after it, when it is too close to call, expecting it as well).
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let margin = ((now / 10.0).floor() + 1.0) * 10.0 - now;
    if margin > 1.0 {
        std::thread::sleep(Duration::from_secs_f64(margin - 0.8));
        assert_eq!(
            firings(&server),
            before + 1,
            "once, not once per missed slot"
        );
    } else {
        std::thread::sleep(Duration::from_secs_f64(margin + 1.5));
        assert_eq!(
            firings(&server),
            before + 2,
            "the catch-up and the regular slot"
        );
    }
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
