//! The user's path through Flare: deploy, call, route, update, log, delete,
//! restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, error_of, eventually, guest, http};

#[test]
fn create_call_update_and_delete_a_function() {
    let server = Server::start();
    let table = server.ok(&[
        "fn",
        "create",
        "--name",
        "hello",
        "--code",
        guest("hello_rust").to_str().unwrap(),
    ]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("hello") && table.contains("ready"),
        "{table}"
    );

    // Served at once, with an invocation id.
    let response = server.get("/fn/hello");
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(!id.is_empty());
    assert_eq!(response.text().unwrap(), "Hello from Flare!\n");

    // get / list, as JSON for scripts.
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", "hello", "-o", "json"])).unwrap();
    assert_eq!(json["metadata"]["generation"], 1);
    assert_eq!(json["spec"]["limits"]["memoryMb"], 128);
    assert_eq!(json["status"]["ready"], true);
    let yaml = server.ok(&["fn", "list", "-o", "yaml"]);
    assert!(yaml.contains("name: hello"), "{yaml}");

    // Update the code: the same name now runs echo, generation 2.
    server.ok(&[
        "fn",
        "update",
        "--name",
        "hello",
        "--code",
        guest("echo").to_str().unwrap(),
        "--env",
        "GREETING=updated",
        "--timeout",
        "3s",
    ]);
    let body: serde_json::Value = server.get("/fn/hello/after?x=1").json().unwrap();
    assert_eq!(
        body["path"], "/after?x=1",
        "the rest of the path after /fn/hello"
    );
    assert_eq!(body["greeting"], "updated");
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", "hello", "-o", "json"])).unwrap();
    assert_eq!(json["metadata"]["generation"], 2);
    assert_eq!(json["spec"]["limits"]["timeout"], "3s");

    server.ok(&["fn", "delete", "--name", "hello"]);
    let response = server.get("/fn/hello");
    assert_eq!(response.status(), 404);
    let (code, message) = error_of(&response.text().unwrap());
    assert_eq!(code, "not_found");
    assert!(message.contains("hello"), "{message}");
    assert!(
        server.ok(&["fn", "list"]).lines().count() == 1,
        "only the header is left"
    );
}

#[test]
fn http_triggers_route_with_path_parameters() {
    let server = Server::start();
    server.create("echo", "echo", &["--env", "GREETING=hi"]);
    server.ok(&[
        "httptrigger",
        "create",
        "--name",
        "greet",
        "--url",
        "/greet/{name}",
        "--method",
        "GET",
        "--function",
        "echo",
    ]);
    server.ok(&[
        "ht",
        "create",
        "--name",
        "files",
        "--url",
        "/static/{*rest}",
        "--function",
        "echo",
    ]);

    let body: serde_json::Value = server.get("/greet/ada?loud=1").json().unwrap();
    assert_eq!(
        body["path"], "/greet/ada?loud=1",
        "triggers pass the original path"
    );
    assert_eq!(body["headers"]["x-flare-param-name"], "ada");
    assert_eq!(body["greeting"], "hi");

    // A client cannot forge parameters.
    let body: serde_json::Value = http()
        .get(format!("{}/greet/bob", server.router))
        .header("x-flare-param-name", "mallory")
        .header("x-flare-param-other", "x")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["headers"]["x-flare-param-name"], "bob");
    assert!(body["headers"].get("x-flare-param-other").is_none());

    let body: serde_json::Value = http()
        .post(format!("{}/static/css/site.css", server.router))
        .body("x")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["headers"]["x-flare-param-rest"], "css/site.css");
    assert_eq!(body["method"], "POST");

    let list = server.ok(&["ht", "list"]);
    assert!(
        list.contains("/greet/{name}") && list.contains("/static/{*rest}"),
        "{list}"
    );

    // Move the route: update, then delete.
    server.ok(&["ht", "update", "--name", "greet", "--url", "/hello/{name}"]);
    assert_eq!(server.get("/greet/ada").status(), 404);
    assert_eq!(server.get("/hello/ada").status(), 200);
    server.ok(&["ht", "delete", "--name", "greet"]);
    assert_eq!(server.get("/hello/ada").status(), 404);
}

#[test]
fn fn_test_sends_method_headers_and_body() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let out = server.ok(&[
        "fn",
        "test",
        "--name",
        "echo",
        "--method",
        "POST",
        "--body",
        r#"{"a":1}"#,
        "-H",
        "X-Trace: 42",
        "--path",
        "/p?q=1",
    ]);
    let body: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body"], r#"{"a":1}"#);
    assert_eq!(body["headers"]["x-trace"], "42");
    assert_eq!(body["path"], "/p?q=1");
    let err = server.fails(&["fn", "test", "--name", "nope"]);
    assert!(err.contains("404"), "{err}");
}

#[test]
fn logs_are_kept_per_invocation_and_followed() {
    let server = Server::start();
    server.create("chatty", "misbehave", &[]);

    // Follow from before the calls.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["fn", "logs", "--name", "chatty", "--follow"])
        .env("FLARE_API", &server.api)
        .env("FLARE_TOKEN", &server.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    let first = server.get("/fn/chatty/log?n=2");
    assert_eq!(first.status(), 200);
    let first_id = first.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let second = server.get("/fn/chatty/log?n=1");
    let second_id = second.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();

    let lines = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "chatty"]);
        (out.lines().count() >= 5).then_some(out)
    });
    assert!(
        lines.contains(&format!("stdout [{first_id}] line 0")),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("stdout [{first_id}] line 1")),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("stderr [{first_id}] to stderr")),
        "{lines}"
    );
    assert!(
        lines.contains(&format!("stdout [{second_id}] line 0")),
        "{lines}"
    );

    let only_second = server.ok(&[
        "fn",
        "logs",
        "--name",
        "chatty",
        "--invocation",
        &second_id,
        "-o",
        "json",
    ]);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&only_second).unwrap();
    assert_eq!(entries.len(), 2, "{only_second}");
    assert!(
        entries
            .iter()
            .all(|e| e["invocation"] == second_id.as_str())
    );
    let recent = server.ok(&[
        "fn",
        "logs",
        "--name",
        "chatty",
        "--since",
        "10m",
        "--contains",
        "stderr",
    ]);
    assert_eq!(recent.lines().count(), 2, "{recent}");
    let none = server.ok(&[
        "fn",
        "logs",
        "--name",
        "chatty",
        "--since",
        "2000-01-01T00:00:00Z",
        "--limit",
        "1",
    ]);
    assert_eq!(none.lines().count(), 1, "newest line only: {none}");
    let err = server.fails(&["fn", "logs", "--name", "chatty", "--since", "yesterday"]);
    assert!(err.contains("since"), "{err}");
    // By stream, and in a time range that ends before the calls.
    let stderr = server.ok(&["fn", "logs", "--name", "chatty", "--stream", "stderr"]);
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(stderr.lines().all(|l| l.contains(" stderr [")), "{stderr}");
    let before = server.ok(&[
        "fn", "logs", "--name", "chatty", "--since", "1h", "--until", "1m",
    ]);
    assert_eq!(
        before.lines().count(),
        0,
        "nothing before the calls: {before}"
    );
    let bad = server.fails(&["fn", "logs", "--name", "chatty", "--stream", "stdin"]);
    assert!(bad.contains("stdout") && bad.contains("stderr"), "{bad}");
    let raw = common::client_with_token(&server.token)
        .get(format!(
            "{}/v1/functions/chatty/logs?stream=stdin",
            server.api
        ))
        .send()
        .unwrap();
    assert_eq!(raw.status(), 400);
    assert!(
        raw.text()
            .unwrap()
            .contains("not one of stdout, stderr, system")
    );

    // The follower saw the same lines as they came.
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    let mut followed = String::new();
    while followed.lines().count() < 5 {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut reader, &mut line).unwrap() > 0);
        followed.push_str(&line);
    }
    follow.kill().unwrap();
    let _ = follow.wait();
    assert!(
        followed.contains(&format!("[{second_id}] line 0")),
        "{followed}"
    );
}

#[test]
fn everything_acknowledged_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), &[]);
    server.create("hello", "hello_rust", &[]);
    server.create(
        "echo",
        "echo",
        &["--env", "GREETING=persisted", "--memory", "64"],
    );
    server.ok(&[
        "ht",
        "create",
        "--name",
        "greet",
        "--url",
        "/greet/{name}",
        "--function",
        "echo",
    ]);
    assert_eq!(server.get("/greet/x").status(), 200);
    server.kill9();

    let server = Server::start_in(dir.path(), &[]);
    assert_eq!(
        server.get("/fn/hello").text().unwrap(),
        "Hello from Flare!\n"
    );
    let body: serde_json::Value = server.get("/greet/ada").json().unwrap();
    assert_eq!(body["greeting"], "persisted");
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", "echo", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["limits"]["memoryMb"], 64);
    // The compiled artifacts were reused, not rebuilt: one per package.
    let artifacts = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
    assert_eq!(artifacts, 2);
}

#[test]
fn api_describes_itself_and_reports_health() {
    let server = Server::start();
    let health = http()
        .get(format!("{}/healthz", server.api))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let doc: serde_json::Value = http()
        .get(format!("{}/v1/openapi.json", server.api))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/v1/functions",
        "/v1/functions/{name}",
        "/v1/functions/{name}/logs",
        "/v1/httptriggers/{name}",
        "/v1/packages",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    let response = server
        .api_client()
        .get(format!("{}/v1/nothing", server.api))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(error_of(&response.text().unwrap()).0, "not_found");
}

#[test]
fn cli_explains_itself_and_reports_an_unreachable_api() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["server", "fn", "httptrigger"] {
        assert!(help.contains(word), "{help}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["fn", "list", "--api", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("cannot reach the Flare API at http://127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn a_functions_recent_metrics_are_kept_in_ten_second_steps() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    server.create("chatty", "misbehave", &[]);
    for _ in 0..20 {
        assert_eq!(server.get("/fn/hello").status(), 200);
    }
    for _ in 0..3 {
        assert_eq!(server.get("/fn/chatty/trap").status(), 500);
    }
    // The sampler takes a point every 10 s: wait for the one holding them.
    let points = |name: &str| -> Vec<serde_json::Value> {
        let out = server.ok(&[
            "fn", "metrics", "--name", name, "--last", "1h", "-o", "json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let sum = |points: &[serde_json::Value], key: &str| -> u64 {
        points.iter().map(|p| p[key].as_u64().unwrap()).sum()
    };
    let hello = eventually(Duration::from_secs(40), || {
        let got = points("hello");
        (sum(&got, "requests") == 20).then_some(got)
    });
    assert_eq!(hello.len(), 360, "one point per 10 s over an hour");
    assert!(
        hello
            .windows(2)
            .all(|w| w[1]["at"].as_u64().unwrap() - w[0]["at"].as_u64().unwrap() == 10),
        "steps of 10 s, oldest first"
    );
    assert_eq!(sum(&hello, "errors"), 0);
    let busy: Vec<&serde_json::Value> = hello.iter().filter(|p| p["requests"] != 0).collect();
    assert!(
        busy.iter().all(|p| p["p99Ms"].as_f64().unwrap() > 0.0),
        "{busy:?}"
    );
    let chatty = eventually(Duration::from_secs(40), || {
        let got = points("chatty");
        (sum(&got, "requests") == 3).then_some(got)
    });
    assert_eq!(sum(&chatty, "errors"), 3);

    // The table shows the steps that had requests.
    let table = server.ok(&["fn", "metrics", "--name", "hello", "--last", "1h"]);
    assert!(table.starts_with("UNTIL (UTC)"), "{table}");
    let missing = server.fails(&["fn", "metrics", "--name", "nobody"]);
    assert!(missing.contains("not found"), "{missing}");
}
