//! Retention: one pass bounds logs, finished invocations, unused packages
//! and their compiled code; nothing live or accepted goes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, eventually, http};

#[test]
fn retention_flags_are_documented_with_their_defaults() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["server", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, default) in [
        ("--log-retention", "[default: 7d]"),
        ("--invocation-retention", "[default: 7d]"),
        ("--package-retention", "[default: 1h]"),
        ("--gc-interval", "[default: 10m]"),
    ] {
        let at = help.find(flag).unwrap_or_else(|| panic!("{flag}: {help}"));
        let next = help[at + 2..]
            .find("\n  -")
            .map_or(help.len(), |i| at + 2 + i);
        assert!(help[at..next].contains(default), "{flag}: {help}");
    }
    // A zero interval is refused before anything starts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["server", "--gc-interval", "0s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than zero"));
}

#[test]
fn a_short_retention_removes_what_is_old_and_keeps_what_is_live() {
    let server = Server::start_with(&[
        // Long enough for the test to see a line before it goes.
        "--log-retention",
        "5s",
        "--invocation-retention",
        "5s",
        "--package-retention",
        "2s",
        "--gc-interval",
        "500ms",
    ]);
    server.create("chatty", "misbehave", &[]);
    let cache = server.data_dir.join("cache");
    let blobs = || server.blobs();

    // A log line, a finished async invocation, and a package no function
    // uses (uploaded, compiled, never referred to).
    let logged = server.get("/fn/chatty/log?n=1");
    let old_invocation = logged.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let submitted: serde_json::Value = http()
        .post(format!("{}/async/fn/chatty/", server.router))
        .body("x")
        .send()
        .unwrap()
        .json()
        .unwrap();
    let async_id = submitted["invocation"].as_str().unwrap().to_string();
    let uploaded = server.upload_unused("hello_rust");
    assert_eq!(uploaded.status(), 201);
    assert_eq!(blobs(), 2);
    eventually(Duration::from_secs(10), || {
        let out = server.ok(&["invocations", "get", "--id", &async_id, "-o", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        (json["status"] == "succeeded").then_some(())
    });
    let logs_of = |invocation: &str| {
        server.ok(&["fn", "logs", "--name", "chatty", "--invocation", invocation])
    };
    eventually(Duration::from_secs(10), || {
        logs_of(&old_invocation).contains("line 0").then_some(())
    });

    // Past the retention, a pass removes all three, and the compiled code
    // of the unused package with it.
    eventually(Duration::from_secs(30), || {
        let gone = !logs_of(&old_invocation).contains("line 0")
            && server
                .cli(&["invocations", "get", "--id", &async_id])
                .status
                .code()
                == Some(1)
            && blobs() == 1
            && std::fs::read_dir(&cache).unwrap().count() == 1;
        gone.then_some(())
    });

    // What is live stays and works: the function's package and code, and
    // new lines are kept.
    let fresh = server.get("/fn/chatty/log?n=1");
    assert_eq!(fresh.status(), 200);
    let fresh_id = fresh.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    eventually(Duration::from_secs(10), || {
        logs_of(&fresh_id).contains("line 0").then_some(())
    });
}
