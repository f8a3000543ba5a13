//! Java functions: a jar's handler loaded by a pooled JVM worker with a
//! class loader of its own, and what a bad jar or a bad handler does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{Server, error_of, eventually, jar};

fn java_server() -> Server {
    let server = Server::start();
    server.ok(&[
        "env",
        "create",
        "--name",
        "java",
        "--runtime",
        "java",
        "--poolsize",
        "1",
    ]);
    server
}

fn create(server: &Server, name: &str, jar: &Path, extra: &[&str]) {
    server.create_in("java", name, jar, extra);
}

fn logs(server: &Server, name: &str) -> String {
    server.ok(&["fn", "logs", "--name", name])
}

#[test]
fn the_example_and_the_handler_contract() {
    let dir = tempfile::tempdir().unwrap();
    let server = java_server();
    let hello = jar(dir.path(), "hello.jar", None, "");
    create(&server, "hello", &hello, &[]);
    let response = server.get("/fn/hello?name=flare");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().unwrap(), "Hello, flare!\n");
    let lines = eventually(std::time::Duration::from_secs(10), || {
        let lines = logs(&server, "hello");
        lines.contains("greeting flare").then_some(lines)
    });
    assert!(lines.contains("stdout"), "{lines}");

    // Status, headers and a binary body both ways; the function's own
    // environment through Request.env.
    let probe = jar(
        dir.path(),
        "probe.jar",
        Some("tests/functions/java/probe"),
        "probe.Probe",
    );
    create(&server, "probe", &probe, &["--env", "GREETING=hi there"]);
    let echoed = server
        .api_client()
        .post(format!("{}/fn/probe/echo", server.router))
        .body(vec![0u8, 159, 146, 150])
        .send()
        .unwrap();
    assert_eq!(echoed.status(), 201);
    assert_eq!(echoed.headers()["x-method"], "POST");
    assert_eq!(echoed.bytes().unwrap().as_ref(), &[0u8, 159, 146, 150]);
    assert_eq!(
        server.get("/fn/probe/env?name=GREETING").text().unwrap(),
        "hi there"
    );

    // Output of a thread that outlives its call is the worker's, never
    // filed under the call.
    let late = server.get("/fn/probe/late");
    let call = late.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(late.text().unwrap(), "started");
    let entry = eventually(std::time::Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "probe", "-o", "json"]);
        let entries: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        entries.into_iter().find(|e| e["line"] == "late line")
    });
    assert_ne!(entry["invocation"], call.as_str(), "{entry}");
    assert!(
        entry["invocation"].as_str().unwrap().starts_with("worker-"),
        "{entry}"
    );

    // Each function has its own class loader in its own worker: a static
    // counter of one is not another's.
    create(&server, "probe2", &probe, &[]);
    assert_eq!(server.get("/fn/probe/count").text().unwrap(), "1");
    assert_eq!(server.get("/fn/probe/count").text().unwrap(), "2");
    assert_eq!(server.get("/fn/probe2/count").text().unwrap(), "1");

    // The other contract: a java.util.function.Function<Request, Response>
    // named as the handler.
    let shout = jar(
        dir.path(),
        "shout.jar",
        Some("tests/functions/java/probe"),
        "probe.Shout",
    );
    create(&server, "shout", &shout, &[]);
    let shouted = server
        .api_client()
        .post(format!("{}/fn/shout", server.router))
        .body("quiet words")
        .send()
        .unwrap();
    assert_eq!(shouted.status(), 202);
    assert_eq!(shouted.headers()["x-contract"], "function");
    assert_eq!(shouted.text().unwrap(), "QUIET WORDS");
}

#[test]
fn bad_jars_and_bad_handlers_fail_clearly_and_hurt_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = java_server();
    let probe = jar(
        dir.path(),
        "probe.jar",
        Some("tests/functions/java/probe"),
        "probe.Probe",
    );
    create(&server, "good", &probe, &[]);
    assert_eq!(server.get("/fn/good/count").text().unwrap(), "1");

    // A handler class that is not one, and one that is not there.
    create(
        &server,
        "nothandler",
        &probe,
        &["--entrypoint", "probe.NotAHandler"],
    );
    create(
        &server,
        "missing",
        &probe,
        &["--entrypoint", "probe.Nowhere"],
    );
    for (name, why) in [
        ("nothandler", "implements neither flare.Handler"),
        ("missing", "class probe.Nowhere is not in the package"),
    ] {
        let response = server.get(&format!("/fn/{name}/"));
        assert!(response.status().is_server_error(), "{name}");
        let (_, message) = error_of(&response.text().unwrap());
        assert!(message.contains("could not be started"), "{message}");
        assert!(
            !message.contains(why),
            "the reason is the owner's: {message}"
        );
        let lines = eventually(std::time::Duration::from_secs(10), || {
            let lines = logs(&server, name);
            lines.contains(why).then_some(lines)
        });
        assert!(lines.contains("system"), "{lines}");
    }

    // A handler that throws: a 500 without the exception's text, the
    // stack trace in the log, the worker kept.
    let thrown = server.get("/fn/good/throw");
    assert_eq!(thrown.status(), 500);
    let body = thrown.text().unwrap();
    assert!(!body.contains("deliberate"), "{body}");
    let lines = eventually(std::time::Duration::from_secs(10), || {
        let lines = logs(&server, "good");
        lines.contains("at probe.Probe.handle").then_some(lines)
    });
    assert!(lines.contains("about to throw"), "{lines}");
    assert!(
        lines.contains("java.lang.IllegalStateException: deliberate failure"),
        "{lines}"
    );
    assert_eq!(
        server.get("/fn/good/count").text().unwrap(),
        "2",
        "same worker"
    );

    // System.exit ends the worker: a 5xx, a log line, a new worker (its
    // counter starts again), and the other functions serve on.
    let exited = server.get("/fn/good/exit");
    assert!(exited.status().is_server_error());
    let lines = eventually(std::time::Duration::from_secs(10), || {
        let lines = logs(&server, "good");
        lines.contains("status 3").then_some(lines)
    });
    assert!(lines.contains("system"), "{lines}");
    assert_eq!(server.get("/fn/good/count").text().unwrap(), "1");
    create(&server, "after", &probe, &[]);
    assert_eq!(server.get("/fn/after/count").text().unwrap(), "1");
}

#[test]
fn without_a_jdk_a_java_environment_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in_env(dir.path(), &[], &[("FLARE_JAVA", "/nonexistent/java")]);
    let failed = server.fails(&["env", "create", "--name", "java", "--runtime", "java"]);
    assert!(failed.contains("needs a JDK"), "{failed}");
    assert!(failed.contains("/nonexistent/java"), "{failed}");
    assert_eq!(server.ok(&["env", "list", "-o", "json"]).trim(), "[]");
}
