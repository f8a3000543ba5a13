//! Attacks on a real server, from careless clients and hostile functions:
//! each asserts that the wall held and that the server still serves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Server, error_of, eventually, guest, http};

fn hostile_function(server: &Server, name: &str, extra: &[&str]) {
    server.create_python(name, "hostile.py", extra);
}

/// `py`: a function whose import takes a second (tests/functions/slow_start.py).
fn slow_start_function(server: &Server, extra: &[&str]) {
    server.create_python("py", "slow_start.py", extra);
}

/// The deployment status of `name`, from the API.
fn status(server: &Server, name: &str) -> serde_json::Value {
    let view: serde_json::Value = server
        .api_client()
        .get(format!("{}/v1/functions/{name}", server.api))
        .send()
        .unwrap()
        .json()
        .unwrap();
    view["status"].clone()
}

/// Every count the request path takes, summed: zero when nothing is held.
fn held(status: &serde_json::Value) -> u64 {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    n(&status["inFlight"])
        + n(&status["queued"])
        + n(&status["instances"]["busy"])
        + n(&status["instances"]["specializing"])
}

fn router_addr(server: &Server) -> String {
    server.router.trim_start_matches("http://").to_string()
}

/// Sends `n` requests for `path` on raw connections, waits until the
/// server shows them taken in (`taken` holds for the status), then drops
/// every connection mid-flight, as a load tool does when it stops.
fn abort_mid_flight(
    server: &Server,
    name: &str,
    path: &str,
    n: usize,
    taken: impl Fn(&serde_json::Value) -> bool,
) {
    let addr = router_addr(server);
    let streams: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            write!(stream, "GET {path} HTTP/1.1\r\nHost: flare\r\n\r\n").unwrap();
            stream
        })
        .collect();
    let seen = eventually(Duration::from_secs(30), || {
        let s = status(server, name);
        taken(&s).then_some(s)
    });
    assert!(held(&seen) > 0, "{seen}");
    drop(streams);
}

/// After aborted requests: every counter returns to zero and 100 of 100
/// later requests succeed.
fn nothing_stuck(server: &Server, name: &str, path: &str) {
    eventually(Duration::from_secs(60), || {
        let s = status(server, name);
        (held(&s) == 0).then_some(())
    });
    let client = http();
    let url = format!("{}{path}", server.router);
    let ok = (0..100)
        .filter(|_| client.get(&url).send().unwrap().status() == 200)
        .count();
    assert_eq!(
        ok,
        100,
        "after the aborted requests: {}",
        status(server, name)
    );
    let s = status(server, name);
    assert_eq!(held(&s), 0, "{s}");
}

#[test]
fn clients_that_disconnect_mid_request_leave_no_capacity_behind() {
    let server = Server::start();
    server.python_env("1");
    // Its import takes a second, so the first requests are reliably cut
    // off while their instances are specializing.
    slow_start_function(
        &server,
        &["--maxscale", "2", "--queue", "1000", "--timeout", "10s"],
    );
    abort_mid_flight(&server, "py", "/fn/py/sleep?s=0.3", 100, |s| {
        s["instances"]["specializing"].as_u64() > Some(0) && s["queued"].as_u64() > Some(0)
    });
    nothing_stuck(&server, "py", "/fn/py/");
    // Warm: instances exist now; cut off requests that are running.
    abort_mid_flight(&server, "py", "/fn/py/sleep?s=0.3", 100, |s| {
        s["instances"]["busy"].as_u64() == Some(2) && s["queued"].as_u64() > Some(0)
    });
    nothing_stuck(&server, "py", "/fn/py/");

    // The same for a wasm function, first call and later ones alike.
    server.create(
        "w",
        "misbehave",
        &["--concurrency", "2", "--queue", "1000", "--timeout", "10s"],
    );
    for _ in 0..2 {
        abort_mid_flight(&server, "w", "/fn/w/sleep?ms=300", 100, |s| {
            s["inFlight"].as_u64() == Some(2) && s["queued"].as_u64() > Some(0)
        });
        nothing_stuck(&server, "w", "/fn/w/");
    }
}

#[test]
fn a_cold_start_cut_short_by_its_deadline_gives_its_slot_back() {
    let server = Server::start();
    server.python_env("1");
    // Specializing takes a second; the request may wait 200 ms.
    slow_start_function(&server, &["--timeout", "200ms", "--maxscale", "1"]);
    let response = server.get("/fn/py/");
    assert_eq!(response.status(), 504, "{}", response.text().unwrap());
    // The start went on without the request: its slot is given back and
    // the instance it made is there for the next one.
    let s = eventually(Duration::from_secs(30), || {
        let s = status(&server, "py");
        (held(&s) == 0 && s["instances"]["warm"] == 1).then_some(s)
    });
    assert_eq!(s["instances"]["specializing"], 0, "{s}");
}

/// Writes raw requests on one connection (the last one asking the server
/// to close it) and reads everything until the server closes.
fn raw_exchange(server: &Server, requests: &str) -> String {
    let mut stream = TcpStream::connect(router_addr(server)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(requests.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_function_cannot_frame_or_break_the_response() {
    let server = Server::start();
    server.python_env("1");
    // Room for a 70 MiB answer in memory.
    hostile_function(&server, "py", &["--maxscale", "1", "--memory", "512"]);
    server.create("echo", "echo", &[]);

    // Framing headers never reach the wire: the next response on the same
    // keep-alive connection is intact.
    let both = raw_exchange(
        &server,
        "GET /fn/py/framing HTTP/1.1\r\nHost: flare\r\n\r\n\
         POST /fn/echo HTTP/1.1\r\nHost: flare\r\nConnection: close\r\ncontent-length: 27\r\n\r\nhello from the next request",
    );
    let (first, second) = both.split_at(both.rfind("HTTP/1.1 ").unwrap());
    assert!(first.starts_with("HTTP/1.1 200"), "{both}");
    assert!(first.contains("a body the headers lie about"), "{both}");
    assert!(first.contains("x-fine: kept"), "{both}");
    let lower = first.to_ascii_lowercase();
    for header in [
        "transfer-encoding",
        "keep-alive:",
        "upgrade:",
        "trailer:",
        "content-length: 0",
    ] {
        assert!(
            !lower.contains(header),
            "{header} reached the wire: {first}"
        );
    }
    assert!(second.starts_with("HTTP/1.1 200"), "{both}");
    assert!(second.contains("hello from the next request"), "{both}");

    // Statuses outside 200-599: a 502, and the worker lives on.
    let pid = server.get("/fn/py/").text().unwrap();
    for code in ["101", "600", "999", "-1", "0", "199"] {
        let response = server.get(&format!("/fn/py/status?code={code}"));
        assert_eq!(response.status(), 502, "status {code}");
        let (kind, message) = error_of(&response.text().unwrap());
        assert_eq!(kind, "bad_gateway");
        assert!(message.contains("invalid response"), "{message}");
    }
    assert_eq!(server.get("/fn/py/status?code=418").status(), 418);
    assert_eq!(
        server.get("/fn/py/").text().unwrap(),
        pid,
        "the same worker still serves"
    );

    // Header count and size are bounded.
    assert_eq!(server.get("/fn/py/headers?n=50&size=100").status(), 200);
    for query in ["n=10000&size=1", "n=1&size=1048576"] {
        let response = server.get(&format!("/fn/py/headers?{query}"));
        assert_eq!(response.status(), 502, "{query}");
        let (_, message) = error_of(&response.text().unwrap());
        assert!(message.contains("invalid response"), "{message}");
    }
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&[
            "fn",
            "logs",
            "--name",
            "py",
            "--contains",
            "invalid response",
        ]);
        (out.lines().count() >= 8).then_some(out)
    });
    assert!(logs.contains("system"), "{logs}");
    assert!(logs.contains("is not an HTTP status"), "{logs}");
    assert!(logs.contains("limit"), "the log says which limit: {logs}");

    // A body past the worker protocol's 64 MiB: said so, not "crashed".
    let response = server.get("/fn/py/big?mb=70");
    assert_eq!(response.status(), 502);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, message) = error_of(&response.text().unwrap());
    assert!(message.contains("invalid response"), "{message}");
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "py", "--invocation", &id]);
        out.contains("larger than the limit").then_some(out)
    });
    assert!(logs.contains("broke the protocol"), "{logs}");
    assert_eq!(
        server.get("/fn/py/big?mb=1").bytes().unwrap().len(),
        1 << 20
    );
}

#[test]
fn exception_text_never_reaches_the_caller() {
    let server = Server::start();
    server.python_env("1");
    hostile_function(&server, "py", &[]);
    let response = server.get("/fn/py/raise?tag=42");
    assert_eq!(response.status(), 500);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let body = response.text().unwrap();
    assert!(
        !body.contains("secret-token") && !body.contains("ValueError"),
        "{body}"
    );
    let (code, message) = error_of(&body);
    assert_eq!(code, "function_failed");
    assert!(message.contains(&id), "{message}");
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "py", "--invocation", &id]);
        out.contains("secret-token-42").then_some(out)
    });
    assert!(logs.contains("Traceback"), "{logs}");

    // Log forgery: carriage returns, escapes and embedded newlines are
    // printed escaped, one stored line per printed line.
    let response = server.get("/fn/py/forge");
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "py", "--invocation", &id]);
        out.contains("fake line").then_some(out)
    });
    assert!(!logs.contains(['\r', '\u{1b}']), "{logs:?}");
    assert!(logs.contains("line one\\r\\u{1b}[2Kforged"), "{logs}");
    for line in logs.lines() {
        assert!(
            line.contains(&format!("[{id}]")),
            "a line of another invocation? {line:?}"
        );
    }
    assert_eq!(server.get("/fn/py/").status(), 200, "still serving");
}

#[test]
fn the_host_header_is_one_and_valid() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    for request in [
        "GET /fn/echo HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /fn/echo HTTP/1.1\r\n\r\n",
        "GET /fn/echo HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /fn/echo HTTP/1.1\r\nHost: user@a\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(router_addr(&server)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut head = [0; 12];
        stream.read_exact(&mut head).unwrap();
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 400"), "{request:?}: {head}");
    }
    // HTTP/1.0 without Host is still served.
    let mut stream = TcpStream::connect(router_addr(&server)).unwrap();
    stream.write_all(b"GET /fn/echo HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200"), "{out}");
}

#[test]
fn http_trigger_urls_no_request_can_match_are_refused() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    for url in ["/a b", "/a\r\nb", "/caf\u{e9}", "/a%zz"] {
        let err = server.fails(&["ht", "create", "--url", url, "--function", "echo"]);
        assert!(err.contains("segment"), "{url:?}: {err}");
    }
    // A NUL cannot pass through a command line; straight to the API.
    let response = server
        .api_client()
        .post(format!("{}/v1/httptriggers", server.api))
        .json(&serde_json::json!({
            "apiVersion": "flare.dev/v1",
            "kind": "HttpTrigger",
            "metadata": {"name": "nul"},
            "spec": {"path": "/x\u{0}y", "function": "echo"},
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(!server.ok(&["ht", "list"]).contains("caf"));
    server.ok(&[
        "ht",
        "create",
        "--name",
        "cafe",
        "--url",
        "/caf%C3%A9",
        "--function",
        "echo",
    ]);
    assert_eq!(server.get("/caf%C3%A9").status(), 200);
}

#[test]
fn archives_standard_clashing_and_bombs() {
    let server = Server::start();
    server.python_env("1");
    let dir = tempfile::tempdir().unwrap();

    // `tar czf app.tar.gz -C dir .`: the first entry is "./".
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(
        src.join("main.py"),
        "def main(req):\n    return 'from a tarball'\n",
    )
    .unwrap();
    let tgz = dir.path().join("app.tar.gz");
    let tar = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let args = |name: &'static str, code: &std::path::Path| {
        vec![
            "fn".to_string(),
            "create".into(),
            "--name".into(),
            name.into(),
            "--env".into(),
            "python".into(),
            "--code".into(),
            code.to_string_lossy().into_owned(),
            "--entrypoint".into(),
            "main.main".into(),
        ]
    };
    let run = |a: Vec<String>| server.cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args("tarball", &tgz));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.get("/fn/tarball").text().unwrap(), "from a tarball");

    // A file and a directory of one name: a 400 that names the entry and
    // no path of the host.
    let clash = dir.path().join("clash.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&clash).unwrap());
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("app", options).unwrap();
        zip.write_all(b"x").unwrap();
        zip.start_file("app/main.py", options).unwrap();
        zip.write_all(b"def main(req): return 1\n").unwrap();
        zip.finish().unwrap();
    }
    let out = run(args("clash", &clash));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"app/main.py\"") && err.contains("clashes"),
        "{err}"
    );
    assert!(!err.contains("/tmp") && !err.contains("internal"), "{err}");

    // 200k directory entries: refused, nothing stored.
    let dirs = dir.path().join("dirs.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&dirs).unwrap());
        for i in 0..20_000 {
            zip.add_directory(format!("d{i}/"), zip::write::SimpleFileOptions::default())
                .unwrap();
        }
        zip.finish().unwrap();
    }
    let out = run(args("dirs", &dirs));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than 10000 entries"), "{err}");

    // A gzip bomb: 512 MiB of zeros in well under a megabyte. Refused at
    // the decoder's cap, with the server's memory flat.
    let bomb = dir.path().join("bomb.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&bomb).unwrap(),
            flate2::Compression::best(),
        );
        let mut builder = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(512 << 20);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "zeros", std::io::repeat(0).take(512 << 20))
            .unwrap();
        builder.into_inner().unwrap().finish().unwrap();
    }
    assert!(std::fs::metadata(&bomb).unwrap().len() < 2 << 20);
    let before = server.rss_kib();
    let out = run(args("bomb", &bomb));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("more than"), "{err}");
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 100 << 10, "the server grew by {grown} KiB");

    // A "name" of 256 MiB (a GNU long-name entry, which tar reads whole
    // into memory) in a small archive: refused at its header.
    let names = dir.path().join("names.tar.gz");
    {
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&names).unwrap(),
            flate2::Compression::fast(),
        );
        let size: u64 = 256 << 20;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::GNULongName);
        header.set_size(size);
        header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
        header.set_cksum();
        gz.write_all(header.as_bytes()).unwrap();
        std::io::copy(&mut std::io::repeat(b'a').take(size), &mut gz).unwrap();
        // The file the long name is for, then the end of the archive.
        let mut file = tar::Header::new_gnu();
        file.set_path("short").unwrap();
        file.set_size(0);
        file.set_mode(0o644);
        file.set_cksum();
        gz.write_all(file.as_bytes()).unwrap();
        gz.write_all(&[0; 1024]).unwrap();
        gz.finish().unwrap();
    }
    assert!(std::fs::metadata(&names).unwrap().len() < 8 << 20);
    let before = server.rss_kib();
    let out = run(args("names", &names));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("long name or PAX record"), "{err}");
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 100 << 10, "the server grew by {grown} KiB");

    let list = server.ok(&["fn", "list"]);
    for refused in ["clash", "dirs", "bomb", "names"] {
        assert!(!list.contains(refused), "{list}");
    }
    // Nothing of the refused packages is stored: only the tarball's blob.
    assert_eq!(server.blobs(), 1);
    assert_eq!(server.get("/fn/tarball").status(), 200);
}

#[test]
fn an_oversized_spec_part_is_refused_before_it_is_buffered() {
    let server = Server::start();
    let code = std::fs::read(guest("echo")).unwrap();
    let spec = format!(
        "{{\"apiVersion\":\"flare.dev/v1\",\"kind\":\"Function\",\"metadata\":{{\"name\":\"big\"}},\"spec\":{{\"x\":\"{}\"}}}}",
        "a".repeat(3 << 20)
    );
    let form = reqwest::blocking::multipart::Form::new()
        .part(
            "spec",
            reqwest::blocking::multipart::Part::text(spec.clone()),
        )
        .part("code", reqwest::blocking::multipart::Part::bytes(code));
    let response = server
        .api_client()
        .post(format!("{}/v1/functions", server.api))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    let (_, message) = error_of(&response.text().unwrap());
    assert!(
        message.contains("\"spec\" part") && message.contains("limit"),
        "{message}"
    );
    // The JSON body has the same limit, and says so the same way.
    let response = server
        .api_client()
        .post(format!("{}/v1/functions", server.api))
        .header("content-type", "application/json")
        .body(spec)
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(!server.ok(&["fn", "list"]).contains("big"));
    assert_eq!(
        http()
            .get(format!("{}/healthz", server.api))
            .send()
            .unwrap()
            .status(),
        200,
        "the API still serves"
    );
}

#[test]
fn the_sandbox_refuses_namespaces_io_uring_and_the_mount_api() {
    let server = Server::start();
    server.python_env("1");
    common::walls::refuse_attacks(&server);
}

#[test]
fn output_without_end_or_newline_is_capped() {
    let server = Server::start();
    server.python_env("1");
    hostile_function(&server, "py", &[]);
    let before = server.rss_kib();
    assert_eq!(server.get("/fn/py/spew?mb=64").text().unwrap(), "spewed");
    let logs: serde_json::Value = eventually(Duration::from_secs(20), || {
        let logs: serde_json::Value = server
            .api_client()
            .get(format!(
                "{}/v1/functions/py/logs?contains=dropped",
                server.api
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        (!logs.as_array().unwrap().is_empty()).then_some(logs)
    });
    assert!(!logs.as_array().unwrap().is_empty());
    let all: serde_json::Value = server
        .api_client()
        .get(format!("{}/v1/functions/py/logs?limit=10000", server.api))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let lines = all.as_array().unwrap();
    assert!(
        lines
            .iter()
            .all(|l| l["line"].as_str().unwrap().len() <= 16 << 10)
    );
    // Per owner (the invocation; the worker, for what its pipe still held
    // once the answer was sent): at most the budget and the note.
    let mut per_owner = std::collections::HashMap::<&str, usize>::new();
    for l in lines {
        *per_owner
            .entry(l["invocation"].as_str().unwrap())
            .or_default() += l["line"].as_str().unwrap().len();
    }
    for (owner, stored) in &per_owner {
        assert!(*stored <= (1 << 20) + 256, "{owner}: {stored} bytes stored");
    }
    assert!(per_owner.len() <= 2, "{:?}", per_owner.keys());
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 100 << 10, "the server grew by {grown} KiB");
    assert_eq!(server.get("/fn/py/").status(), 200);
}

#[test]
fn global_flags_go_anywhere() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let token = server.token.as_str();
    for args in [
        &["--api", &server.api, "--token", token, "fn", "list"][..],
        &["fn", "--api", &server.api, "list", "--token", token][..],
        &["fn", "list", "--api", &server.api, "--token", token],
        &[
            "-o",
            "json",
            "--token",
            token,
            "--api",
            &server.api,
            "fn",
            "list",
        ],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
            .args(args)
            .env_remove("FLARE_API")
            .env_remove("FLARE_TOKEN")
            .env("XDG_CONFIG_HOME", &server.config_home)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("echo"),
            "{args:?}"
        );
    }
}

#[test]
fn a_python_function_goes_out_only_through_the_egress_policy() {
    // The operator allows private addresses, so the test's own server on
    // the host's loopback can stand in for an allowed host; Flare's own
    // ports stay shut. Inside the sandbox 127.0.0.1 is its own loopback
    // (NO_PROXY), so the host's is reached as 127.0.0.2.
    let server = Server::start_with(&["--egress-allow-private"]);
    server.python_env("1");
    common::walls::egress_only_through_the_proxy(&server);
}

#[test]
fn a_slow_upload_holds_no_capacity_and_is_cut_off() {
    let server = Server::start_with(&["--body-timeout", "2s"]);
    server.create("one", "misbehave", &["--concurrency", "1"]);
    // A client that promises 1000 bytes, sends 10, then stalls.
    let mut slow = TcpStream::connect(router_addr(&server)).unwrap();
    write!(
        slow,
        "POST /fn/one/ HTTP/1.1\r\nHost: flare\r\nContent-Length: 1000\r\n\r\n0123456789"
    )
    .unwrap();
    // The function's one slot stays free for everyone else meanwhile.
    for _ in 0..5 {
        assert_eq!(server.get("/fn/one/").status(), 200);
    }
    assert_eq!(held(&status(&server, "one")), 0);
    // Past the body timeout the slow client gets 408 and its connection
    // is closed.
    slow.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
    assert_eq!(server.get("/fn/one/").status(), 200);
}

#[test]
fn without_cgroup_limits_workers_start_only_when_the_operator_says_so() {
    // An empty directory for a cgroup mount: no memory or pids controller.
    let empty = tempfile::tempdir().unwrap();
    let root = [("FLARE_CGROUP_ROOT", empty.path().to_str().unwrap())];

    // The server says so when it starts.
    let data = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data.path())
        .envs(root)
        .env("FLARE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "the server ended without a warning");
        if line.contains("cgroups cannot limit workers") {
            break;
        }
    }
    assert!(line.contains("--allow-unlimited-workers"), "{line}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Workers do not start: the call fails and the log says why.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in_env(data.path(), &[], &root);
    server.python_env("0");
    hostile_function(&server, "py", &[]);
    let refused = server.get("/fn/py/");
    assert_eq!(refused.status(), 500);
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "py"]);
        out.contains("cannot limit workers").then_some(out)
    });
    assert!(logs.contains("--allow-unlimited-workers"), "{logs}");
    // Starts that failed (the zygote's and the worker's) leave nothing in
    // the work dir.
    let work = std::fs::read_to_string(data.path().join("process-work-dir")).unwrap();
    let left: Vec<_> = std::fs::read_dir(std::path::Path::new(work.trim()).join("workers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(server);

    // With the operator's flag they do.
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in_env(data.path(), &["--allow-unlimited-workers"], &root);
    server.python_env("0");
    hostile_function(&server, "py", &[]);
    assert_eq!(server.get("/fn/py/").status(), 200);
}

#[test]
fn the_work_dir_and_sockets_are_private() {
    let server = Server::start_with(&["--egress-allow-private"]);
    server.python_env("1");
    // A function that may call out: its worker has an egress socket.
    hostile_function(&server, "out", &["--allow-host", "127.0.0.1:1"]);
    assert_eq!(server.get("/fn/out/sleep?s=0").status(), 200);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let record = std::fs::read_to_string(server.data_dir.join("process-work-dir")).unwrap();
    let work = std::path::PathBuf::from(record.trim());
    // Created fresh under a random name, searchable but not listable by
    // others (the sandbox's user must reach what it is shown).
    let name = work.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.len() >= 16, "{name}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&work), 0o711);
    assert_eq!(std::fs::metadata(&work).unwrap().uid(), 0);
    let sockets: Vec<_> = std::fs::read_dir(work.join("workers"))
        .unwrap()
        .filter_map(|w| {
            let socket = w.unwrap().path().join("run/egress.sock");
            socket.exists().then_some(socket)
        })
        .collect();
    assert_eq!(sockets.len(), 1, "one worker may call out");
    let socket = std::fs::metadata(&sockets[0]).unwrap();
    assert_eq!(socket.permissions().mode() & 0o777, 0o600);
    assert_eq!(socket.uid(), 65534, "owned by the sandbox's user");
    assert_eq!(server.get("/fn/out/sleep?s=0").status(), 200);
}

/// Deflate bits, least significant first, as gzip streams are packed.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= value << self.n;
        self.n += count;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    /// A fixed-Huffman code: sent most significant bit first.
    fn code(&mut self, code: u64, len: u32) {
        let reversed = (0..len).fold(0, |r, i| r | (((code >> i) & 1) << (len - 1 - i)));
        self.put(reversed, len);
    }

    fn literal(&mut self, byte: u8) {
        match byte {
            0..=143 => self.code(0x30 + u64::from(byte), 8),
            _ => self.code(0x190 + u64::from(byte - 144), 9),
        }
    }

    /// "Copy 258 bytes from 1 back": length code 285, distance code 0.
    fn repeat_258(&mut self) {
        self.code(0xc5, 8);
        self.code(0, 5);
    }
}

/// A .tar.gz of `size` bytes whose one file claims 8 GiB and whose deflate
/// stream, written by hand (13 bits for every 258 bytes), would expand to
/// about 159 times its size: some 10 GB at 64 MiB.
fn deflate_bomb(size: usize) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.set_path("zeros").unwrap();
    header.set_size((8 << 30) - 1);
    header.set_mode(0o644);
    header.set_cksum();
    let mut bits = Bits {
        out: vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
        acc: 0,
        n: 0,
    };
    bits.put(1, 1); // the last block
    bits.put(1, 2); // fixed Huffman codes
    for byte in header.as_bytes() {
        bits.literal(*byte);
    }
    while bits.n != 0 {
        bits.repeat_258();
    }
    let start = bits.out.len();
    for _ in 0..8 {
        bits.repeat_258();
    }
    let unit = bits.out[start..].to_vec();
    assert_eq!(unit.len(), 13);
    while bits.out.len() + unit.len() <= size {
        bits.out.extend_from_slice(&unit);
    }
    bits.out
}

#[test]
fn a_64_mib_archive_that_expands_to_gigabytes_is_refused() {
    let server = Server::start();
    server.python_env("1");
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.tar.gz");
    // Just under the 64 MiB package limit, so it is the archive that is
    // refused and not the upload.
    std::fs::write(&bomb, deflate_bomb((64 << 20) - (64 << 10))).unwrap();
    let before = server.rss_kib();
    let out = server.cli(&[
        "fn",
        "create",
        "--name",
        "bomb",
        "--env",
        "python",
        "--code",
        bomb.to_str().unwrap(),
        "--entrypoint",
        "main.main",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("decompresses to more than"), "{err}");
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 100 << 10, "the server grew by {grown} KiB");
    assert!(!server.ok(&["fn", "list"]).contains("bomb"));
    assert_eq!(server.blobs(), 0, "nothing stored");
    hostile_function(&server, "after", &[]);
    assert_eq!(server.get("/fn/after/").status(), 200, "still serving");
}

#[test]
fn an_unpacked_package_goes_when_no_function_uses_it() {
    let server = Server::start();
    server.python_env("1");
    let record = std::fs::read_to_string(server.data_dir.join("process-work-dir")).unwrap();
    let unpacked = std::path::PathBuf::from(record.trim()).join("packages");
    let trees = || std::fs::read_dir(&unpacked).unwrap().count();
    hostile_function(&server, "a", &[]);
    hostile_function(&server, "b", &[]);
    assert_eq!(server.get("/fn/a/").status(), 200);
    // Two functions of one package share one tree.
    assert_eq!(trees(), 1);
    server.ok(&["fn", "delete", "--name", "a"]);
    assert_eq!(trees(), 1, "b still uses it");
    server.ok(&["fn", "delete", "--name", "b"]);
    eventually(Duration::from_secs(10), || (trees() == 0).then_some(()));
}

#[test]
fn browsers_on_other_sites_change_nothing() {
    let server = Server::start();
    let api = &server.api;
    let env = r#"{"apiVersion":"flare.dev/v1","kind":"Environment","metadata":{"name":"csrf"},"spec":{"runtime":"python"}}"#;
    // What a page can make a browser send without asking first.
    for kind in ["text/plain", "application/x-www-form-urlencoded"] {
        let response = server
            .api_client()
            .post(format!("{api}/v1/environments"))
            .header("content-type", kind)
            .body(env)
            .send()
            .unwrap();
        assert_eq!(response.status(), 415, "{kind}");
    }
    // A form post of a function with its code, from another origin (a
    // page of some site, or a function's own page on the router's port).
    let router = server.router.clone();
    for origin in ["http://evil.example", router.as_str()] {
        let form = reqwest::blocking::multipart::Form::new()
            .text(
                "spec",
                r#"{"apiVersion":"flare.dev/v1","kind":"Function","metadata":{"name":"csrf"},"spec":{}}"#,
            )
            .part(
                "code",
                reqwest::blocking::multipart::Part::bytes(std::fs::read(guest("echo")).unwrap()),
            );
        let response = server
            .api_client()
            .post(format!("{api}/v1/functions"))
            .header("origin", origin)
            .multipart(form)
            .send()
            .unwrap();
        assert_eq!(response.status(), 403, "{origin}");
        assert_eq!(error_of(&response.text().unwrap()).0, "forbidden");
    }
    assert!(!server.ok(&["env", "list"]).contains("csrf"));
    assert!(!server.ok(&["fn", "list"]).contains("csrf"));
    // The API's own origin, and the CLI (no Origin), still work.
    let response = server
        .api_client()
        .post(format!("{api}/v1/environments"))
        .header("content-type", "application/json")
        .header("origin", api.as_str())
        .body(env)
        .send()
        .unwrap();
    assert_eq!(response.status(), 201);
    server.create("echo", "echo", &[]);
    assert_eq!(server.get("/fn/echo/").status(), 200);
}
