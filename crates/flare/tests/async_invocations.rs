//! Asynchronous invocation: 202 at once, stored durably, run with retries,
//! dead letters, callbacks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

use common::{Server, error_of, eventually, http};

fn submit(server: &Server, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut request = http()
        .post(format!("{}{path}", server.router))
        .body(body.to_string());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let json: serde_json::Value = response.json().unwrap();
    assert_eq!(json["status"], "queued");
    let id = json["invocation"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/v1/invocations/{id}"));
    id
}

fn outcome(server: &Server, id: &str, status: &str) -> serde_json::Value {
    eventually(Duration::from_secs(30), || {
        let json: serde_json::Value =
            serde_json::from_str(&server.ok(&["invocations", "get", "--id", id, "-o", "json"]))
                .unwrap();
        (json["status"] == status).then_some(json)
    })
}

#[test]
fn queued_then_run_through_fn_and_trigger_routes() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let id = submit(&server, "/async/fn/echo/x?y=1", &[], "payload");
    let done = outcome(&server, &id, "succeeded");
    assert_eq!(done["result_status"], 200);
    let body: serde_json::Value =
        serde_json::from_str(done["result_body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/x?y=1");
    assert_eq!(body["body"], "payload");
    assert_eq!(body["headers"]["x-flare-async-id"], id.as_str());

    server.ok(&[
        "ht",
        "create",
        "--name",
        "hook",
        "--url",
        "/hook/{id}",
        "--function",
        "echo",
    ]);
    let id = submit(&server, "/hook/42", &[("x-flare-async", "true")], "{}");
    let done = outcome(&server, &id, "succeeded");
    let body: serde_json::Value =
        serde_json::from_str(done["result_body"].as_str().unwrap()).unwrap();
    assert_eq!(body["headers"]["x-flare-param-id"], "42");
    // From the CLI, through the API.
    let out = server.ok(&[
        "fn",
        "test",
        "--name",
        "echo",
        "--async",
        "--max-retries",
        "0",
        "--body",
        "via cli",
    ]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let done = outcome(&server, json["invocation"].as_str().unwrap(), "succeeded");
    assert!(
        done["result_body"].as_str().unwrap().contains("via cli"),
        "{done}"
    );
    let err = server.fails(&[
        "fn",
        "test",
        "--name",
        "echo",
        "--async",
        "--callback-url",
        "nope",
    ]);
    assert!(err.contains("x-flare-callback-url"), "{err}");
    let list = server.ok(&["invocations", "list", "--function", "echo"]);
    assert_eq!(list.lines().count(), 4, "{list}");

    // Refused before anything is stored.
    assert_eq!(
        http()
            .post(format!("{}/async/fn/nope", server.router))
            .send()
            .unwrap()
            .status(),
        404
    );
    let response = http()
        .post(format!("{}/async/fn/echo", server.router))
        .header("x-flare-callback-url", "ftp://x")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        error_of(&response.text().unwrap())
            .1
            .contains("x-flare-callback-url")
    );
}

#[test]
fn failures_are_retried_then_dead_lettered() {
    let server = Server::start();
    server.create("bad", "misbehave", &[]);
    let id = submit(
        &server,
        "/async/fn/bad/trap",
        &[("x-flare-max-retries", "1")],
        "",
    );
    let failed = outcome(&server, &id, "failed");
    assert_eq!(
        failed["attempts"], 2,
        "the first try and one retry: {failed}"
    );
    assert_eq!(failed["result_status"], 500);
    assert!(
        failed["error"].as_str().unwrap().contains("trapped"),
        "{failed}"
    );
    let dead = server.ok(&["invocations", "list", "--failed"]);
    assert!(dead.contains(&id), "{dead}");
    let err = server.fails(&["invocations", "get", "--id", "nothing"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn the_outcome_is_posted_to_the_callback() {
    // The callback target is a loopback port of the test's own.
    let server = Server::start_with(&["--egress-allow-private"]);
    server.create("echo", "echo", &[]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    let id = submit(
        &server,
        "/async/fn/echo/cb",
        &[("x-flare-callback-url", &url)],
        "hi",
    );
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        .unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("post /done"), "{head}");
    assert!(
        head.contains(&format!("x-flare-invocation-id: {id}")),
        "{head}"
    );
    assert!(
        head.contains("x-flare-invocation-status: succeeded"),
        "{head}"
    );
    assert!(head.contains("x-flare-function-status: 200"), "{head}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["body"], "hi");
}

#[test]
fn callbacks_cannot_reach_flare_or_private_addresses() {
    for flags in [&[][..], &["--egress-allow-private"][..]] {
        let server = Server::start_with(flags);
        server.python_env("1");
        server.create_python("echo", "hostile.py", &[]);
        // Only the router is the attacker's; the callback aims at the API
        // and carries what the function echoes: an environment document.
        let url = format!("{}/v1/environments", server.api);
        let env = r#"{"apiVersion":"flare.dev/v1","kind":"Environment","metadata":{"name":"pwned"},"spec":{"runtime":"python"}}"#;
        let id = submit(
            &server,
            "/async/fn/echo/echo",
            &[("x-flare-callback-url", &url)],
            env,
        );
        outcome(&server, &id, "succeeded");
        // A callback that would land has done so by the time a second
        // invocation, queued after it, is done.
        let second = submit(&server, "/async/fn/echo/", &[], "");
        outcome(&server, &second, "succeeded");
        let envs = server.ok(&["env", "list"]);
        assert!(!envs.contains("pwned"), "{flags:?}: {envs}");
    }
}

#[test]
fn accepted_invocations_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    server.create("slow", "misbehave", &["--concurrency", "1"]);
    let ids: Vec<String> = (0..5)
        .map(|_| submit(&server, "/async/fn/slow/sleep?ms=700", &[], ""))
        .collect();
    // Some are running, the rest queued: kill the server now.
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    let server = Server::start_in(dir.path(), &[]);
    for id in &ids {
        let done = outcome(&server, id, "succeeded");
        assert_eq!(done["result_body"], "slept");
    }
    let all = server.ok(&["invocations", "list", "--function", "slow", "-o", "json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(all.len(), 5, "none lost, none duplicated");
}

#[test]
fn an_async_invocations_logs_are_found_by_the_id_its_caller_got() {
    let server = Server::start();
    server.create("chatty", "misbehave", &[]);
    let id = submit(&server, "/async/fn/chatty/log?n=1", &[], "");
    outcome(&server, &id, "succeeded");
    let lines = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "chatty", "--invocation", &id]);
        out.contains("line 0").then_some(out)
    });
    assert!(lines.contains(&format!("[{id}]")), "{lines}");
}

#[test]
fn credentials_are_never_stored_with_an_invocation() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let id = submit(
        &server,
        "/async/fn/echo/",
        &[
            ("authorization", "Bearer s3cret-token"),
            ("cookie", "session=s3cret-cookie"),
            ("proxy-authorization", "Basic s3cret-proxy"),
            ("x-kept", "visible"),
        ],
        "hi",
    );
    let record = outcome(&server, &id, "succeeded").to_string();
    assert!(!record.contains("s3cret"), "{record}");
    assert!(record.contains("visible"), "{record}");
}

#[test]
fn a_failed_invocation_is_retried_as_a_new_one_once_the_function_is_fixed() {
    let server = Server::start();
    server.create("flaky", "misbehave", &[]);
    let failed_id = submit(
        &server,
        "/async/fn/flaky/trap",
        &[("x-flare-max-retries", "0"), ("x-kept", "along")],
        "payload-1",
    );
    let failed = outcome(&server, &failed_id, "failed");
    assert_eq!(failed["attempts"], 1, "{failed}");

    // Fixed: the same name now runs the echo function.
    let echo = common::guest("echo");
    server.ok(&[
        "fn",
        "update",
        "--name",
        "flaky",
        "--code",
        echo.to_str().unwrap(),
    ]);
    let retried_id = server
        .ok(&["invocations", "retry", "--id", &failed_id])
        .trim()
        .to_string();
    assert!(
        !retried_id.is_empty() && retried_id != failed_id,
        "{retried_id}"
    );
    let retried = outcome(&server, &retried_id, "succeeded");
    let echoed: serde_json::Value =
        serde_json::from_str(retried["result_body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["body"], "payload-1", "the same body: {echoed}");
    assert_eq!(echoed["path"], "/trap", "the same path: {echoed}");
    assert!(
        echoed.to_string().contains("along"),
        "the same headers: {echoed}"
    );

    // The failed one is as it was.
    let before = outcome(&server, &failed_id, "failed");
    assert_eq!(before["attempts"], 1, "{before}");

    // Only a failed one is retried; an unknown id is not found. Neither
    // stores anything.
    let err = server.fails(&["invocations", "retry", "--id", &retried_id]);
    assert!(err.contains("only a failed one"), "{err}");
    let err = server.fails(&["invocations", "retry", "--id", "nothing"]);
    assert!(err.contains("not found"), "{err}");
    // Asked from another namespace, the failed one is not found there;
    // once its function is gone, it cannot run again.
    server.ok(&["ns", "create", "team-a"]);
    let err = server.fails(&["-n", "team-a", "invocations", "retry", "--id", &failed_id]);
    assert!(err.contains("not found"), "{err}");
    server.ok(&["fn", "delete", "--name", "flaky"]);
    let err = server.fails(&["invocations", "retry", "--id", &failed_id]);
    assert!(
        err.contains("function") && err.contains("not found"),
        "{err}"
    );
    let all = server.ok(&["invocations", "list", "--function", "flaky", "-o", "json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    assert_eq!(all.len(), 2, "nothing stored by a refused retry: {all:?}");
}
