//! Versions: every change is a new version, none is rewritten, and
//! rollback serves an earlier one again at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, eventually, guest};

fn versions(server: &Server, name: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&server.ok(&["fn", "versions", "--name", name, "-o", "json"])).unwrap()
}

fn metadata(server: &Server, name: &str) -> serde_json::Value {
    let view: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", name, "-o", "json"])).unwrap();
    view["metadata"].clone()
}

fn serving(list: &[serde_json::Value]) -> Vec<u64> {
    list.iter()
        .filter(|v| v["serving"] == true)
        .map(|v| v["version"].as_u64().unwrap())
        .collect()
}

#[test]
fn each_change_is_a_new_version_and_rollback_serves_an_old_one_at_once() {
    // Packages nothing refers to go within a second: a version's must not.
    let server = Server::start_with(&["--package-retention", "1s", "--gc-interval", "300ms"]);
    server.create("hello", "hello_rust", &[]);
    assert_eq!(metadata(&server, "hello")["version"], 1);
    let echo = guest("echo");
    server.ok(&[
        "fn",
        "update",
        "--name",
        "hello",
        "--code",
        echo.to_str().unwrap(),
    ]);
    server.ok(&["fn", "update", "--name", "hello", "--timeout", "3s"]);
    // No change to code or settings: no new version.
    server.ok(&["fn", "update", "--name", "hello"]);
    let list = versions(&server, "hello");
    let numbers: Vec<u64> = list
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(serving(&list), [3]);
    assert_eq!(metadata(&server, "hello")["generation"], 4);
    let v1 = list[0]["spec"].clone();
    assert_ne!(v1["package"], list[1]["spec"]["package"]);

    // A retention pass runs (an unused upload goes), and version 1's
    // package, used by no function now, stays.
    let uploaded = server.upload_unused("misbehave");
    assert_eq!(uploaded.status(), 201);
    assert_eq!(server.blobs(), 3);
    eventually(Duration::from_secs(30), || {
        (server.blobs() == 2).then_some(())
    });

    // Rollback: version 1's code and settings, served when it returns.
    assert_eq!(server.get("/fn/hello").status(), 200);
    let rolled = server.ok(&[
        "fn", "rollback", "--name", "hello", "--to", "1", "-o", "json",
    ]);
    let rolled: serde_json::Value = serde_json::from_str(&rolled).unwrap();
    assert_eq!(rolled["metadata"]["version"], 1);
    assert_eq!(rolled["spec"], v1);
    assert_eq!(
        server.get("/fn/hello").text().unwrap(),
        "Hello from Flare!\n"
    );
    assert_eq!(serving(&versions(&server, "hello")), [1]);

    // The next change is a new version; none before it was rewritten.
    server.ok(&["fn", "update", "--name", "hello", "--memory", "64"]);
    let list = versions(&server, "hello");
    assert_eq!(list.len(), 4);
    assert_eq!(serving(&list), [4]);
    assert_eq!(list[0]["spec"], v1);
    assert_eq!(list[3]["spec"]["limits"]["memoryMb"], 64);

    // A version that does not exist: a clear 404, nothing changed.
    let generation = metadata(&server, "hello")["generation"].clone();
    let err = server.fails(&["fn", "rollback", "--name", "hello", "--to", "9"]);
    assert!(
        err.contains("function \"hello\" has no version 9; it has versions 1 to 4"),
        "{err}"
    );
    let bad = server
        .api_client()
        .post(format!("{}/v1/functions/hello/rollback", server.api))
        .body("{\"to\": 1}")
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().unwrap().contains("invalid rollback request"));
    assert_eq!(metadata(&server, "hello")["generation"], generation);
    assert_eq!(metadata(&server, "hello")["version"], 4);

    // A deleted function takes its versions with it; made again, it
    // starts at 1.
    server.ok(&["fn", "delete", "--name", "hello"]);
    let err = server.fails(&["fn", "versions", "--name", "hello"]);
    assert!(err.contains("not found"), "{err}");
    server.create("hello", "hello_rust", &[]);
    let numbers: Vec<u64> = versions(&server, "hello")
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1]);
}

#[test]
fn a_viewer_sees_versions_and_may_not_roll_back() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    server.ok(&["fn", "update", "--name", "hello", "--timeout", "3s"]);
    let created = server.ok(&[
        "token", "create", "--name", "look", "--role", "viewer", "-o", "json",
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let viewer = created["token"].as_str().unwrap();
    let out = server.cli_as(viewer, &["fn", "versions", "--name", "hello"]);
    assert!(out.status.success());
    let out = server.cli_as(viewer, &["fn", "rollback", "--name", "hello", "--to", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token \"look\" (viewer) may not"), "{err}");
    assert_eq!(metadata(&server, "hello")["version"], 2);
}

/// Which version answered: hello_rust greets, echo answers JSON.
fn which(server: &Server, path: &str) -> &'static str {
    let response = server.get(path);
    assert_eq!(response.status(), 200, "{path}");
    if response.text().unwrap().starts_with("Hello from Flare!") {
        "v1"
    } else {
        "v2"
    }
}

#[test]
fn aliases_and_weights_route_to_versions_and_bad_ones_are_refused() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    let echo = guest("echo");
    server.ok(&[
        "fn",
        "update",
        "--name",
        "hello",
        "--code",
        echo.to_str().unwrap(),
    ]);
    server.ok(&[
        "alias",
        "create",
        "--name",
        "prod",
        "--function",
        "hello",
        "--version",
        "1",
    ]);
    server.ok(&[
        "ht",
        "create",
        "--name",
        "api",
        "--url",
        "/api",
        "--function",
        "hello",
        "--alias",
        "prod",
    ]);
    assert_eq!(which(&server, "/api"), "v1");
    assert_eq!(which(&server, "/fn/hello"), "v2");
    assert_eq!(which(&server, "/fn/hello@1"), "v1");

    // Moving the alias moves its routes.
    server.ok(&["alias", "update", "--name", "prod", "--version", "2"]);
    eventually(Duration::from_secs(10), || {
        (which(&server, "/api") == "v2").then_some(())
    });

    // Weighted: both versions answer, near their share.
    server.ok(&["ht", "update", "--name", "api", "--weights", "1=50,2=50"]);
    let mut v1 = 0;
    for _ in 0..200 {
        if which(&server, "/api") == "v1" {
            v1 += 1;
        }
    }
    assert!((60..=140).contains(&v1), "v1 answered {v1} of 200");

    // Bad input: a clear error, nothing stored or changed.
    let err = server.fails(&["ht", "update", "--name", "api", "--weights", "1=80,2=30"]);
    assert!(
        err.contains("weights must sum to 100, not 110 (1=80,2=30)"),
        "{err}"
    );
    let err = server.fails(&["ht", "update", "--name", "api", "--weights", "1=50,7=50"]);
    assert!(
        err.contains("function \"hello\" has no version 7; it has versions 1 to 2"),
        "{err}"
    );
    let api: serde_json::Value =
        serde_json::from_str(&server.ok(&["ht", "get", "--name", "api", "-o", "json"])).unwrap();
    assert_eq!(
        api["spec"]["weights"],
        serde_json::json!({"1": 50, "2": 50})
    );
    let err = server.fails(&[
        "alias",
        "create",
        "--name",
        "next",
        "--function",
        "hello",
        "--version",
        "9",
    ]);
    assert!(
        err.contains("has no version 9; it has versions 1 to 2"),
        "{err}"
    );
    server.fails(&["alias", "get", "--name", "next"]);
    let err = server.fails(&[
        "ht",
        "create",
        "--name",
        "x",
        "--url",
        "/x",
        "--function",
        "hello",
        "--alias",
        "nope",
    ]);
    assert!(err.contains("alias \"nope\" does not exist"), "{err}");
    server.fails(&["ht", "get", "--name", "x"]);
    let err = server.fails(&[
        "ht",
        "create",
        "--url",
        "/y",
        "--function",
        "hello",
        "--alias",
        "prod",
        "--weights",
        "1=100",
    ]);
    assert!(err.contains("cannot be used with"), "{err}");
    // A missing version, and other spellings of an existing one (each
    // would be one more deployment of it), are not found.
    for path in ["/fn/hello@9", "/fn/hello@01", "/fn/hello@+1", "/fn/hello@x"] {
        assert_eq!(server.get(path).status(), 404, "{path}");
    }

    // An alias a route serves stays; once none does, it goes.
    server.ok(&["ht", "update", "--name", "api", "--alias", "prod"]);
    let err = server.fails(&["alias", "delete", "--name", "prod"]);
    assert!(
        err.contains("alias \"prod\" is served by http trigger api"),
        "{err}"
    );
    server.ok(&["ht", "update", "--name", "api", "--latest"]);
    eventually(Duration::from_secs(10), || {
        (which(&server, "/api") == "v2").then_some(())
    });
    server.ok(&["alias", "delete", "--name", "prod"]);
}

#[test]
fn closing_a_function_to_tokens_closes_its_old_versions_too() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    server.ok(&["fn", "update", "--name", "hello", "--auth", "token"]);
    server.ok(&[
        "alias",
        "create",
        "--name",
        "old",
        "--function",
        "hello",
        "--version",
        "1",
    ]);
    server.ok(&[
        "ht",
        "create",
        "--name",
        "old",
        "--url",
        "/old",
        "--function",
        "hello",
        "--alias",
        "old",
    ]);
    for path in ["/fn/hello", "/fn/hello@1", "/old"] {
        assert_eq!(server.get(path).status(), 401, "{path}");
        let with_token = common::client_with_token(&server.token)
            .get(format!("{}{path}", server.router))
            .send()
            .unwrap();
        assert_eq!(with_token.status(), 200, "{path}");
    }
}

fn canary(server: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&server.ok(&["canary", "get", "--name", name, "-o", "json"])).unwrap()
}

/// Sends requests to `paths` in turn until `done` holds for the canary.
fn drive(
    server: &Server,
    name: &str,
    paths: &[&str],
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        for path in paths {
            let _ = server.get(path).status();
        }
        let now = canary(server, name);
        if done(&now) {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "canary {name}: {now}");
    }
}

#[test]
fn a_canary_that_fails_half_its_requests_is_rolled_back_and_a_healthy_one_reaches_100() {
    let server = Server::start();
    let (misbehave, echo) = (guest("misbehave"), guest("echo"));

    // Version 2 fails every request to /trap: half of what it gets.
    server.create("flaky", "hello_rust", &[]);
    server.ok(&[
        "fn",
        "update",
        "--name",
        "flaky",
        "--code",
        misbehave.to_str().unwrap(),
    ]);
    server.ok(&[
        "canary",
        "create",
        "--name",
        "flaky",
        "--function",
        "flaky",
        "--from",
        "1",
        "--to",
        "2",
        "--step",
        "20",
        "--interval",
        "1s",
        "--failure-threshold",
        "10",
    ]);
    let failed = drive(
        &server,
        "flaky",
        &["/fn/flaky/trap", "/fn/flaky/state"],
        |c| c["spec"]["status"]["state"] != "running",
    );
    let status = &failed["spec"]["status"];
    assert_eq!(status["state"], "failed", "{failed}");
    assert_eq!(status["weight"], 0);
    // Which requests reach version 2 is random (20% of them at first):
    // what counts is that its failures were over the threshold.
    let rate = status["failureRate"].as_f64().unwrap();
    assert!(
        rate > 10.0 && status["requests"].as_u64() > Some(0),
        "{failed}"
    );
    assert_eq!(metadata(&server, "flaky")["version"], 1);
    assert_eq!(
        server.get("/fn/flaky/trap").status(),
        200,
        "version 1 serves all"
    );

    // A healthy version 2 takes 50%, then 100%, and is served.
    server.create("good", "hello_rust", &[]);
    server.ok(&[
        "fn",
        "update",
        "--name",
        "good",
        "--code",
        echo.to_str().unwrap(),
    ]);
    server.ok(&["fn", "rollback", "--name", "good", "--to", "1"]);
    server.ok(&[
        "canary",
        "create",
        "--function",
        "good",
        "--from",
        "1",
        "--to",
        "2",
        "--step",
        "50",
        "--interval",
        "1s",
    ]);
    let mut weights = std::collections::BTreeSet::new();
    let done = drive(&server, "good-1-to-2", &["/fn/good"], |c| {
        weights.insert(c["spec"]["status"]["weight"].as_u64().unwrap());
        c["spec"]["status"]["state"] != "running"
    });
    assert_eq!(done["spec"]["status"]["state"], "succeeded", "{done}");
    assert_eq!(done["spec"]["status"]["weight"], 100);
    assert!(weights.contains(&50), "{weights:?}");
    assert_eq!(metadata(&server, "good")["version"], 2);
    assert_eq!(which(&server, "/fn/good"), "v2");

    // No traffic, no step.
    server.create("idle", "hello_rust", &[]);
    server.ok(&["fn", "update", "--name", "idle", "--timeout", "3s"]);
    server.ok(&[
        "canary",
        "create",
        "--name",
        "idle",
        "--function",
        "idle",
        "--from",
        "1",
        "--to",
        "2",
        "--interval",
        "1s",
    ]);
    let quiet = drive(&server, "idle", &[], |c| {
        c["spec"]["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no requests to version 2"))
    });
    assert_eq!(quiet["spec"]["status"]["weight"], 20, "{quiet}");
    assert_eq!(quiet["spec"]["status"]["state"], "running");

    // Bad input: clear errors, nothing stored.
    let err = server.fails(&[
        "canary",
        "create",
        "--name",
        "x",
        "--function",
        "idle",
        "--from",
        "1",
        "--to",
        "2",
    ]);
    assert!(
        err.contains("canary \"idle\" already runs on function \"idle\""),
        "{err}"
    );
    server.create("single", "hello_rust", &[]);
    let err = server.fails(&[
        "canary",
        "create",
        "--name",
        "x",
        "--function",
        "single",
        "--from",
        "1",
        "--to",
        "2",
    ]);
    assert!(
        err.contains("function \"single\" has no version 2; it has versions 1 to 1"),
        "{err}"
    );
    let err = server.fails(&[
        "canary",
        "create",
        "--name",
        "x",
        "--function",
        "idle",
        "--from",
        "2",
        "--to",
        "2",
    ]);
    assert!(err.contains("from and to are both 2"), "{err}");
    let err = server.fails(&[
        "canary",
        "create",
        "--name",
        "x",
        "--function",
        "good",
        "--from",
        "1",
        "--to",
        "2",
        "--step",
        "0",
    ]);
    assert!(
        err.contains("step is a percent from 1 to 100, not 0"),
        "{err}"
    );
    server.fails(&["canary", "get", "--name", "x"]);
}
