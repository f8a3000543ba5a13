//! Bad input gets a clear error, nothing is stored, and the server keeps
//! serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::{Server, error_of, guest, http};

/// Packages stored on disk (blob files, not the staging dir).
fn blobs(server: &Server) -> usize {
    server.blobs()
}

fn staged(server: &Server) -> usize {
    std::fs::read_dir(server.data_dir.join("packages/tmp"))
        .unwrap()
        .count()
}

fn create_fails(server: &Server, name: &str, code: &Path) -> String {
    server.fails(&[
        "fn",
        "create",
        "--name",
        name,
        "--code",
        code.to_str().unwrap(),
    ])
}

#[test]
fn malformed_packages_are_refused_and_nothing_is_stored() {
    let server = Server::start_with(&["--max-package-bytes", "300000"]);
    server.create("hello", "hello_rust", &[]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let hello = std::fs::read(guest("hello_rust")).unwrap();
    // A core module that exports nothing is not a component.
    let core = write("core.wasm", b"\0asm\x01\0\0\0");
    let truncated = write("truncated.wasm", &hello[..hello.len() / 3]);
    let empty = write("empty.wasm", b"");
    let text = write("hello.py", b"def main():\n    return 'hi'\n");
    let huge = write("huge.wasm", &vec![0u8; 400_000]);

    let cases = [
        ("core", &core, "core WebAssembly module"),
        ("truncated", &truncated, "not a valid component"),
        ("empty", &empty, "package is empty"),
        ("text", &text, "not WebAssembly"),
        ("huge", &huge, "larger than the limit of 300000 bytes"),
    ];
    for (name, path, expected) in cases {
        let err = create_fails(&server, name, path);
        assert!(err.contains(expected), "{name}: {err}");
    }
    assert_eq!(blobs(&server), 1, "only hello's package is stored");
    assert_eq!(staged(&server), 0, "no upload is left half-written");
    let list = server.ok(&["fn", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert_eq!(server.get("/fn/hello").status(), 200, "still serving");

    // The same through the API's raw package upload: 400 / 413 with JSON.
    let response = server
        .api_client()
        .post(format!("{}/v1/packages", server.api))
        .body(vec![0u8; 400_000])
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(error_of(&response.text().unwrap()).0, "payload_too_large");
    let response = server
        .api_client()
        .post(format!("{}/v1/packages", server.api))
        .body(b"\0asm\x01\0\0\0".to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(&response.text().unwrap()).0, "invalid_argument");
    assert_eq!(blobs(&server), 1);
}

#[test]
fn a_component_without_the_http_export_is_refused() {
    // hello with its export renamed: a valid component that is not a
    // wasi:http proxy.
    let server = Server::start();
    let mut bytes = std::fs::read(guest("hello_rust")).unwrap();
    let needle = b"wasi:http/incoming-handler";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("hello exports wasi:http/incoming-handler");
    bytes[at..at + needle.len()].copy_from_slice(b"wasi:http/incoming-handlex");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("renamed.wasm");
    std::fs::write(&path, bytes).unwrap();
    let err = create_fails(&server, "renamed", &path);
    assert!(err.contains("wasi:http/incoming-handler"), "{err}");
    assert_eq!(blobs(&server), 0);
}

#[test]
fn names_duplicates_and_references_are_checked() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);

    let err = server.fails(&[
        "fn",
        "create",
        "--name",
        "hello",
        "--code",
        guest("echo").to_str().unwrap(),
    ]);
    assert!(err.contains("function \"hello\" already exists"), "{err}");
    assert_eq!(
        server.get("/fn/hello").text().unwrap(),
        "Hello from Flare!\n",
        "unchanged"
    );

    for bad in ["Hello", "-x", "a_b", &"x".repeat(64)] {
        let name = format!("--name={bad}");
        let err = server.fails(&[
            "fn",
            "create",
            &name,
            "--code",
            guest("echo").to_str().unwrap(),
        ]);
        assert!(err.contains("invalid function name"), "{bad}: {err}");
    }
    let err = server.fails(&[
        "fn",
        "create",
        "--name",
        "x",
        "--code",
        guest("echo").to_str().unwrap(),
        "--memory",
        "0",
    ]);
    assert!(err.contains("memory limit"), "{err}");
    let err = server.fails(&[
        "fn",
        "create",
        "--name",
        "x",
        "--code",
        guest("echo").to_str().unwrap(),
        "--env",
        "1X=y",
    ]);
    assert!(err.contains("environment variable"), "{err}");

    let err = server.fails(&["ht", "create", "--url", "/x", "--function", "nope"]);
    assert!(err.contains("function \"nope\" does not exist"), "{err}");
    let err = server.fails(&["ht", "create", "--url", "greet", "--function", "hello"]);
    assert!(err.contains("must start with '/'"), "{err}");
    let err = server.fails(&["ht", "create", "--url", "/fn/hello", "--function", "hello"]);
    assert!(err.contains("reserved"), "{err}");
    let err = server.fails(&[
        "ht",
        "create",
        "--url",
        "/x",
        "--method",
        "FETCH",
        "--function",
        "hello",
    ]);
    assert!(err.contains("FETCH"), "{err}");

    server.ok(&[
        "ht",
        "create",
        "--name",
        "a",
        "--url",
        "/users/{id}",
        "--method",
        "GET",
        "--function",
        "hello",
    ]);
    let err = server.fails(&[
        "ht",
        "create",
        "--name",
        "b",
        "--url",
        "/users/{name}",
        "--method",
        "GET",
        "--function",
        "hello",
    ]);
    assert!(err.contains("clashes with http trigger \"a\""), "{err}");
    // Different method or a literal segment: no clash.
    server.ok(&[
        "ht",
        "create",
        "--name",
        "c",
        "--url",
        "/users/{id}",
        "--method",
        "POST",
        "--function",
        "hello",
    ]);
    server.ok(&[
        "ht",
        "create",
        "--name",
        "d",
        "--url",
        "/users/me",
        "--method",
        "GET",
        "--function",
        "hello",
    ]);
    let err = server.fails(&[
        "ht",
        "create",
        "--name",
        "a",
        "--url",
        "/other",
        "--function",
        "hello",
    ]);
    assert!(err.contains("already exists"), "{err}");

    // A function in use cannot be deleted.
    let err = server.fails(&["fn", "delete", "--name", "hello"]);
    assert!(err.contains("used by http trigger"), "{err}");
    assert_eq!(server.get("/users/7").status(), 200);

    // Through the API: statuses and JSON errors.
    let response = server.api_client()
        .post(format!("{}/v1/httptriggers", server.api))
        .header("content-type", "application/json")
        .body(r#"{"kind":"HttpTrigger","metadata":{"name":"e"},"spec":{"path":"/users/{x}","methods":["GET"],"function":"hello"}}"#)
        .send()
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(error_of(&response.text().unwrap()).0, "conflict");
    let response = server
        .api_client()
        .post(format!("{}/v1/httptriggers", server.api))
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server
        .api_client()
        .get(format!("{}/v1/functions/nope", server.api))
        .send()
        .unwrap();
    assert_eq!(response.status(), 404);
    let (code, message) = error_of(&response.text().unwrap());
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("not_found", "function \"nope\" not found")
    );
}

#[test]
fn stale_generation_is_a_conflict() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    let mut doc: serde_json::Value = server
        .api_client()
        .get(format!("{}/v1/functions/hello", server.api))
        .send()
        .unwrap()
        .json()
        .unwrap();
    doc.as_object_mut().unwrap().remove("status");
    let put = |doc: &serde_json::Value| {
        server
            .api_client()
            .put(format!("{}/v1/functions/hello", server.api))
            .json(doc)
            .send()
            .unwrap()
    };
    let first = put(&doc);
    assert_eq!(first.status(), 200);
    let stale = put(&doc);
    assert_eq!(stale.status(), 409, "generation 1 is stale now");
    assert!(
        error_of(&stale.text().unwrap())
            .1
            .contains("changed by someone else")
    );
}

#[test]
fn unmatched_routes_and_methods() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    server.ok(&[
        "ht",
        "create",
        "--url",
        "/only-get",
        "--method",
        "GET",
        "--function",
        "hello",
    ]);
    let response = server.get("/nowhere");
    assert_eq!(response.status(), 404);
    assert_eq!(error_of(&response.text().unwrap()).0, "not_found");
    let response = http()
        .delete(format!("{}/only-get", server.router))
        .send()
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(server.get("/fn/").status(), 404);
}

#[test]
fn extractor_rejections_are_json_errors_too() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let api = &server.api;
    for (method, path, status) in [
        ("GET", "/v1/functions/echo/logs?limit=abc", 400),
        ("GET", "/v1/functions/echo/logs?limit=1&limit=2", 400),
        ("GET", "/v1/functions/echo/logs?follow=maybe", 400),
        ("DELETE", "/v1/functions", 405),
        ("POST", "/v1/environments", 400),
    ] {
        let response = server
            .api_client()
            .request(method.parse().unwrap(), format!("{api}{path}"))
            .header("content-type", "application/json")
            .send()
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{method} {path}"
        );
        let (code, message) = error_of(&response.text().unwrap());
        assert!(!code.is_empty() && !message.is_empty(), "{method} {path}");
    }
}

/// What schemathesis found past the contract: a log window further back
/// than a date can go used to panic the handler (an empty reply), and a
/// percent-encoded path could not be invoked through the API.
#[test]
fn far_back_windows_and_encoded_invoke_paths() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let api = &server.api;
    for query in ["since=20000years", "until=1000000weeks", "since=0s"] {
        let response = server
            .api_client()
            .get(format!("{api}/v1/functions/echo/logs?{query}"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{query}");
        let lines: serde_json::Value = response.json().unwrap();
        assert!(lines.is_array(), "{query}: {lines}");
    }
    let response = server
        .api_client()
        .post(format!("{api}/v1/functions/echo/invoke/a%20b/c%2Fd?x=%20"))
        .body("hi")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let echoed: serde_json::Value = response.json().unwrap();
    assert_eq!(echoed["path"], "/a%20b/c%2Fd?x=%20", "{echoed}");
    assert_eq!(server.get("/fn/echo/").status(), 200);
}
