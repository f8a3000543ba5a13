//! Functions that misbehave are stopped with the right status, and the
//! rest of the server goes on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, error_of, eventually, http, http_ok_server};

#[test]
fn a_trap_is_a_500_with_the_invocation_id_and_a_log_line() {
    let server = Server::start();
    server.create("bad", "misbehave", &[]);
    let response = server.get("/fn/bad/trap");
    assert_eq!(response.status(), 500);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (code, message) = error_of(&response.text().unwrap());
    assert_eq!(code, "function_failed");
    assert!(message.contains(&id), "{message}");
    assert!(
        !message.contains("deliberate panic") && !message.contains("backtrace"),
        "guest output and the trap's backtrace stay in the log: {message}"
    );
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "bad", "--invocation", &id]);
        out.contains("function trapped").then_some(out)
    });
    assert!(logs.contains("deliberate panic"), "{logs}");
    assert_eq!(server.get("/fn/bad/").status(), 200, "next request is fine");
}

#[test]
fn an_endless_loop_is_a_504_after_its_timeout_and_others_are_unaffected() {
    let server = Server::start();
    server.create("spin", "misbehave", &["--timeout", "1500ms"]);
    server.create("hello", "hello_rust", &[]);
    let router = server.router.clone();
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{router}/fn/spin/loop");
            std::thread::spawn(move || {
                let started = Instant::now();
                let response = http().get(url).send().unwrap();
                (
                    response.status().as_u16(),
                    started.elapsed(),
                    response.text().unwrap(),
                )
            })
        })
        .collect();
    eventually(Duration::from_secs(10), || {
        let status: serde_json::Value =
            serde_json::from_str(&server.ok(&["fn", "get", "--name", "spin", "-o", "json"]))
                .unwrap();
        (status["status"]["inFlight"] == 2).then_some(())
    });
    // Two spinning guests on a two-core machine; hello still answers.
    for _ in 0..5 {
        let response = server.get("/fn/hello");
        assert_eq!(response.status(), 200);
    }
    assert!(
        spinners.iter().all(|s| !s.is_finished()),
        "spinners answered too early"
    );
    for spinner in spinners {
        let (status, elapsed, body) = spinner.join().unwrap();
        assert_eq!(status, 504, "{body}");
        assert_eq!(error_of(&body).0, "timeout");
        assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    }
}

#[test]
fn a_memory_hog_is_stopped_at_its_limit() {
    let server = Server::start();
    server.create("hog", "misbehave", &["--memory", "16"]);
    let response = server.get("/fn/hog/oom");
    assert_eq!(response.status(), 500);
    let (code, message) = error_of(&response.text().unwrap());
    assert_eq!(code, "function_failed");
    assert!(message.contains("memory limit of 16 MiB"), "{message}");
    assert_eq!(server.get("/fn/hog/").status(), 200);
}

#[test]
fn a_body_over_the_limit_is_413() {
    let server = Server::start();
    server.create("echo", "echo", &["--max-body", "1000"]);
    let post = |body: Vec<u8>| {
        http()
            .post(format!("{}/fn/echo", server.router))
            .body(body)
            .send()
            .unwrap()
    };
    assert_eq!(post(vec![b'a'; 1000]).status(), 200);
    let response = post(vec![b'a'; 1001]);
    assert_eq!(response.status(), 413);
    assert_eq!(error_of(&response.text().unwrap()).0, "payload_too_large");
    // Without Content-Length (chunked), the limit holds too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..5).map(|_| Ok(vec![b'b'; 500])).collect();
    let response = http()
        .post(format!("{}/fn/echo", server.router))
        .body(reqwest::blocking::Body::new(std::io::Cursor::new(
            chunks
                .into_iter()
                .flat_map(|c| c.unwrap())
                .collect::<Vec<u8>>(),
        )))
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
}

#[test]
fn beyond_max_concurrency_is_503_with_retry_after() {
    let server = Server::start();
    server.create("slow", "misbehave", &["--concurrency", "1"]);
    let url = format!("{}/fn/slow/sleep?ms=1500", server.router);
    let busy = std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16());
    eventually(Duration::from_secs(5), || {
        let status: serde_json::Value =
            serde_json::from_str(&server.ok(&["fn", "get", "--name", "slow", "-o", "json"]))
                .unwrap();
        (status["status"]["inFlight"] == 1).then_some(())
    });
    let response = server.get("/fn/slow/");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        error_of(&response.text().unwrap())
            .1
            .contains("concurrency limit of 1")
    );
    assert_eq!(busy.join().unwrap(), 200);
    assert_eq!(
        server.get("/fn/slow/").status(),
        200,
        "the permit came back"
    );
}

/// The wasm instance pool (`--max-instances`) is never asked for more
/// instances than it has: back-to-back clients never find it full, and a
/// request that cannot get a slot within its queue timeout is a 503 with
/// Retry-After, never a 500.
#[test]
fn a_full_instance_pool_is_a_wait_then_503_never_500() {
    let server = Server::start_with(&["--max-instances", "2"]);
    server.create("hello", "hello_rust", &[]);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/fn/hello/", server.router);
            std::thread::spawn(move || {
                let client = http();
                (0..200)
                    .filter(|_| client.get(&url).send().unwrap().status() == 200)
                    .count()
            })
        })
        .collect();
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(answered, 800);

    let server = Server::start_with(&["--max-instances", "1"]);
    server.create("slow", "misbehave", &["--queue-timeout", "200ms"]);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{}/fn/slow/sleep?ms=1500", server.router);
            std::thread::spawn(move || {
                let response = http().get(url).send().unwrap();
                let status = response.status().as_u16();
                let retry = response.headers().get("retry-after").cloned();
                (status, retry, response.text().unwrap())
            })
        })
        .collect();
    let mut outcomes: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    outcomes.sort_by_key(|(status, _, _)| *status);
    assert_eq!(outcomes[0].0, 200, "{outcomes:?}");
    for (status, retry, body) in &outcomes[1..] {
        assert_eq!(*status, 503, "{outcomes:?}");
        assert_eq!(retry.as_ref().unwrap(), "1");
        let (code, message) = error_of(body);
        assert_eq!(code, "unavailable");
        assert!(message.contains("no free instance slot"), "{message}");
    }
    assert_eq!(server.get("/fn/slow/").status(), 200, "the slot came back");
}

#[test]
fn outbound_http_only_to_listed_hosts_and_allowed_addresses() {
    let target = http_ok_server();
    let fetch = format!("/fetch?url=http://{target}/");

    // By default loopback is refused, listed or not.
    let server = Server::start();
    server.create("closed", "misbehave", &[]);
    server.create("open", "misbehave", &["--allow-host", &target]);
    for name in ["closed", "open"] {
        let denied = server.get(&format!("/fn/{name}{fetch}"));
        assert_eq!(denied.status(), 502, "{name}");
        assert!(
            denied.text().unwrap().contains("HttpRequestDenied"),
            "{name}"
        );
    }
    drop(server);

    // The operator allows private addresses: a listed host is reached,
    // an unlisted one is not, and Flare's own API never is.
    let server = Server::start_with(&["--egress-allow-private"]);
    let api_host = server.api.trim_start_matches("http://").to_string();
    server.create("closed", "misbehave", &[]);
    server.create("open", "misbehave", &["--allow-host", &target]);
    server.create("api", "misbehave", &["--allow-host", &api_host]);
    let allowed = server.get(&format!("/fn/open{fetch}"));
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.text().unwrap(), "200 ok\n");
    assert_eq!(server.get(&format!("/fn/closed{fetch}")).status(), 502);
    let own = server.get(&format!("/fn/api/fetch?url=http://{api_host}/healthz"));
    assert_eq!(own.status(), 502);
    assert!(own.text().unwrap().contains("HttpRequestDenied"));
}

#[test]
fn no_host_environment_or_files() {
    let server = Server::start();
    server.create("probe", "misbehave", &["--env", "ONLY=this"]);
    assert_eq!(server.get("/fn/probe/env").text().unwrap(), "ONLY=this");
    let fs = server.get("/fn/probe/fs").text().unwrap();
    assert!(
        !fs.contains("listed /") && !fs.contains("read /etc/passwd"),
        "{fs}"
    );
}
