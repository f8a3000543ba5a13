//! One scaling policy: reserved instances, bounded queues, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Server, error_of, eventually, function_file, http};

fn metric(server: &Server, name: &str, labels: &str) -> Option<f64> {
    let text = server
        .api_client()
        .get(format!("{}/metrics", server.api))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

fn status(server: &Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&server.ok(&["fn", "get", "--name", name, "-o", "json"])).unwrap()
}

#[test]
fn reserved_instances_mean_no_cold_start() {
    let server = Server::start();
    server.ok(&[
        "env",
        "create",
        "--name",
        "python",
        "--runtime",
        "python",
        "--poolsize",
        "1",
    ]);
    let code = function_file("probe.py");
    server.ok(&[
        "fn",
        "create",
        "--name",
        "py",
        "--env",
        "python",
        "--code",
        code.to_str().unwrap(),
        "--minscale",
        "2",
    ]);
    // Warm as soon as create returns.
    let f = status(&server, "py");
    assert_eq!(f["status"]["instances"]["warm"], 2, "{f}");
    assert_eq!(f["spec"]["limits"]["minScale"], 2);
    let router = server.router.clone();
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let url = format!("{router}/fn/py/sleep?s=0.3");
            std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().unwrap(), 200);
    }
    assert_eq!(
        metric(&server, "flare_cold_starts_total", "function=\"py\""),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &server,
            "flare_invocations_total",
            "function=\"py\",status=\"2xx\""
        ),
        Some(2.0)
    );
    // Idle, reserved instances are kept.
    server.ok(&["fn", "update", "--name", "py", "--keepalive", "1s"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(status(&server, "py")["status"]["instances"]["warm"], 2);
    // A third concurrent request beyond the reserve is a cold start.
    let router = server.router.clone();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{router}/fn/py/sleep?s=0.5");
            std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    for call in calls {
        assert_eq!(call.join().unwrap(), 200);
    }
    assert_eq!(
        metric(&server, "flare_cold_starts_total", "function=\"py\""),
        Some(1.0)
    );
    let up = metric(
        &server,
        "flare_scale_events_total",
        "function=\"py\",direction=\"up\"",
    )
    .unwrap();
    assert!(up >= 3.0, "{up}");
    // Past its keep-alive the extra instance goes; the reserve stays.
    eventually(Duration::from_secs(15), || {
        (status(&server, "py")["status"]["instances"]["warm"] == 2).then_some(())
    });
    assert!(
        metric(
            &server,
            "flare_scale_events_total",
            "function=\"py\",direction=\"down\""
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn saturated_functions_queue_then_refuse_with_retry_after() {
    let server = Server::start();
    // wasm: one request at a time, two may wait.
    server.create(
        "slow",
        "misbehave",
        &[
            "--concurrency",
            "1",
            "--queue",
            "2",
            "--queue-timeout",
            "5s",
        ],
    );
    let router = server.router.clone();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{router}/fn/slow/sleep?ms=400");
            std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16())
        })
        .collect();
    let statuses: Vec<u16> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(statuses, [200, 200, 200], "queued, then served in turn");

    // Four at once: one runs, two wait, the fourth is refused at once.
    // Each is sent only once the one before it is running or queued.
    let router = server.router.clone();
    let call = move || {
        let url = format!("{router}/fn/slow/sleep?ms=1500");
        std::thread::spawn(move || {
            let response = http().get(url).send().unwrap();
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (response.status().as_u16(), retry, response.text().unwrap())
        })
    };
    let load = |in_flight: u64, queued: u64| {
        eventually(Duration::from_secs(10), || {
            let s = &status(&server, "slow")["status"];
            (s["inFlight"] == in_flight && s["queued"] == queued).then_some(())
        })
    };
    let mut calls = vec![call()];
    load(1, 0);
    calls.push(call());
    load(1, 1);
    calls.push(call());
    load(1, 2);
    calls.push(call());
    let results: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(refused.len(), 1, "{results:?}");
    assert_eq!(refused[0].1.as_deref(), Some("1"));
    assert!(
        error_of(&refused[0].2).1.contains("queue of 2 is full"),
        "{:?}",
        refused[0]
    );
    assert_eq!(
        metric(&server, "flare_queue_rejections_total", "function=\"slow\""),
        Some(1.0)
    );
    assert_eq!(
        metric(&server, "flare_queue_depth", "function=\"slow\""),
        Some(0.0)
    );

    // Waiting longer than the queue timeout: 503 too.
    server.ok(&["fn", "update", "--name", "slow", "--queue-timeout", "300ms"]);
    let url = format!("{}/fn/slow/sleep?ms=1500", server.router);
    let busy = std::thread::spawn(move || http().get(url).send().unwrap().status().as_u16());
    eventually(Duration::from_secs(10), || {
        (status(&server, "slow")["status"]["inFlight"] == 1).then_some(())
    });
    let response = server.get("/fn/slow/");
    assert_eq!(response.status(), 503);
    assert!(
        error_of(&response.text().unwrap())
            .1
            .contains("queue timeout")
    );
    assert_eq!(busy.join().unwrap(), 200);
}

#[test]
fn metrics_and_policy_are_visible() {
    let server = Server::start();
    server.create("hello", "hello_rust", &[]);
    for _ in 0..3 {
        assert_eq!(server.get("/fn/hello").status(), 200);
    }
    assert_eq!(server.get("/fn/hello/nothing?").status(), 200);
    assert_eq!(
        metric(
            &server,
            "flare_invocations_total",
            "function=\"hello\",status=\"2xx\""
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &server,
            "flare_invocation_duration_seconds_count",
            "function=\"hello\""
        ),
        Some(4.0)
    );
    assert_eq!(
        metric(
            &server,
            "flare_invocation_duration_seconds_bucket",
            "function=\"hello\",le=\"+Inf\""
        ),
        Some(4.0)
    );
    let text = server
        .api_client()
        .get(format!("{}/metrics", server.api))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(text.lines().any(|l| l == "flare_functions 1"), "{text}");

    server.ok(&[
        "env",
        "create",
        "--name",
        "python",
        "--runtime",
        "python",
        "--poolsize",
        "1",
    ]);
    let code = function_file("probe.py");
    server.ok(&[
        "fn",
        "create",
        "--name",
        "py",
        "--env",
        "python",
        "--code",
        code.to_str().unwrap(),
        "--keepalive",
        "adaptive",
        "--maxscale",
        "4",
        "--concurrency",
        "2",
    ]);
    let table = server.ok(&["fn", "get", "--name", "py"]);
    assert!(
        table.contains(
            "2/instance, scale 0-4, keepalive adaptive (learning, 0 idle times; keep 10m), queue 0"
        ),
        "{table}"
    );
    assert_eq!(server.get("/fn/py/").status(), 200);
    assert_eq!(
        metric(&server, "flare_cold_starts_total", "function=\"py\""),
        Some(1.0)
    );
    assert_eq!(
        metric(&server, "flare_instances", "function=\"py\",state=\"warm\""),
        Some(1.0)
    );
    let text = server
        .api_client()
        .get(format!("{}/metrics", server.api))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("flare_pool_idle_workers{environment=\"python\"}"),
        "{text}"
    );
    let err = server.fails(&["fn", "update", "--name", "py", "--keepalive", "soon"]);
    assert!(err.contains("adaptive"), "{err}");
    let err = server.fails(&["fn", "update", "--name", "py", "--minscale", "9"]);
    assert!(err.contains("min scale 9 is above max scale 4"), "{err}");
}
