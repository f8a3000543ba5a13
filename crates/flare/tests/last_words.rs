//! A function's last words outlive it: what a process function printed
//! before it was killed is in its log, with one `system` line saying why,
//! and the caller sees only a code, a generic message and the invocation id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, error_of, eventually, function_file};

fn server_with(runtime: &str) -> Server {
    let server = Server::start();
    server.environment(runtime, "1");
    let file = match runtime {
        "node" => "last_words.js",
        _ => "last_words.py",
    };
    let code = function_file(file);
    server.ok(&[
        "fn",
        "create",
        "--name",
        "lw",
        "--env",
        runtime,
        "--code",
        code.to_str().unwrap(),
        "--memory",
        "128",
        "--timeout",
        "2s",
    ]);
    server
}

/// The invocation's stored lines, once its `system` line is there.
fn logs_of(server: &Server, id: &str) -> Vec<String> {
    eventually(Duration::from_secs(20), || {
        let out = server.ok(&["fn", "logs", "--name", "lw", "--invocation", id]);
        out.contains(" system ")
            .then(|| out.lines().map(str::to_string).collect())
    })
}

fn dies_and_is_heard(runtime: &str) {
    let server = server_with(runtime);
    for (path, status, reason) in [
        ("/oom", 500, "exceeded its memory limit of 128 MiB"),
        ("/kill", 500, "killed by signal 9 (SIGKILL)"),
        ("/timeout", 504, "timed out after 2s"),
    ] {
        let response = server.get(&format!("/fn/lw{path}"));
        assert_eq!(response.status(), status, "{runtime} {path}");
        let id = response.headers()["x-flare-invocation-id"]
            .to_str()
            .unwrap()
            .to_string();
        let (_, message) = error_of(&response.text().unwrap());
        assert!(message.contains(&id), "{message}");
        assert!(!message.contains("last words"), "{message}");
        let lines = logs_of(&server, &id);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("stdout") && l.ends_with(&format!("last words before {path}"))),
            "{runtime} {path}: the printed line survives: {lines:#?}"
        );
        let system: Vec<_> = lines.iter().filter(|l| l.contains(" system ")).collect();
        assert_eq!(
            system.len(),
            1,
            "{runtime} {path}: one system line: {lines:#?}"
        );
        assert!(system[0].contains(reason), "{runtime} {path}: {system:?}");
    }

    // 42 MB of log in one call under a 128 MiB limit: the call succeeds,
    // the stored log is capped and says how much was dropped.
    let response = server.get("/fn/lw/log42");
    assert_eq!(response.status(), 200, "{runtime}");
    assert_eq!(response.text().unwrap(), "logged");
    let id = server
        .ok(&[
            "fn",
            "logs",
            "--name",
            "lw",
            "--contains",
            "last words before /log42",
        ])
        .lines()
        .last()
        .and_then(|l| l.split(['[', ']']).nth(1).map(str::to_string))
        .unwrap();
    let lines = logs_of(&server, &id);
    let stored: usize = lines.iter().map(|l| l.len()).sum();
    assert!(stored < 3 << 20, "{runtime}: {stored} bytes stored");
    let marker = lines.iter().find(|l| l.contains(" system ")).unwrap();
    assert!(marker.contains("more bytes dropped"), "{runtime}: {marker}");
    let dropped: u64 = marker
        .split_whitespace()
        .rev()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {marker}"));
    assert!(dropped > 40_000_000, "{runtime}: {marker}");
}

#[test]
fn python_last_words_survive_oom_kill_and_timeout() {
    dies_and_is_heard("python");
}

#[test]
fn node_last_words_survive_oom_kill_and_timeout() {
    dies_and_is_heard("node");
}

fn invocation_of(response: &reqwest::blocking::Response) -> String {
    response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

/// A thread (Python) or timer (Node) that outlives its call and prints
/// while another call runs on the same worker: its line is the worker's
/// own, never filed under the call in flight; a thread the call waits for
/// is the call's.
fn leftover_output_is_the_workers_own(runtime: &str) {
    let server = server_with(runtime);
    let started = server.get("/fn/lw/leftover");
    assert_eq!(started.text().unwrap(), "started", "{runtime}");
    // In flight on the same (only idle) worker while the leftover prints.
    let slow = server.get("/fn/lw/slow");
    assert_eq!(slow.status(), 200, "{runtime}");
    let slow_id = invocation_of(&slow);
    let line = eventually(Duration::from_secs(20), || {
        server
            .ok(&["fn", "logs", "--name", "lw", "--contains", "leftover line"])
            .lines()
            .last()
            .map(str::to_string)
    });
    assert!(line.contains("[worker-"), "{runtime}: {line}");
    assert!(!line.contains(&slow_id), "{runtime}: {line}");
    let slow_lines = server.ok(&["fn", "logs", "--name", "lw", "--invocation", &slow_id]);
    assert!(!slow_lines.contains("leftover"), "{runtime}: {slow_lines}");

    let joined = server.get("/fn/lw/thread");
    let id = invocation_of(&joined);
    assert_eq!(joined.text().unwrap(), "joined", "{runtime}");
    eventually(Duration::from_secs(20), || {
        server
            .ok(&["fn", "logs", "--name", "lw", "--invocation", &id])
            .contains("from a thread")
            .then_some(())
    });
}

#[test]
fn python_leftover_output_is_the_workers_own() {
    leftover_output_is_the_workers_own("python");
}

#[test]
fn node_leftover_output_is_the_workers_own() {
    leftover_output_is_the_workers_own("node");
}
