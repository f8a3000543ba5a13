//! Python, Node.js and custom functions: environments, pools,
//! specialization, and the sandbox walls, proven from inside a function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{Server, error_of, eventually, function_file, http};

fn python_server() -> Server {
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
    server
}

fn create_py(server: &Server, name: &str, extra: &[&str]) {
    server.create_python(name, "probe.py", extra);
}

#[test]
fn python_contract_values_and_errors() {
    let server = python_server();
    create_py(&server, "py", &[]);
    let response = server.get("/fn/py/");
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-flare-invocation-id"));
    assert_eq!(response.text().unwrap(), "hello from python");

    let body: serde_json::Value = http()
        .post(format!("{}/fn/py/json", server.router))
        .header("x-test", "yes")
        .body(r#"{"a":1}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        body,
        serde_json::json!({"method": "POST", "got": {"a": 1}, "header": "yes"})
    );

    let response = server.get("/fn/py/tuple");
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-custom"], "1");
    assert_eq!(
        server.get("/fn/py/bytes").bytes().unwrap().as_ref(),
        b"\x00\x01"
    );

    // An exception: 500 with the invocation id; the traceback only in the log.
    let response = server.get("/fn/py/raise");
    assert_eq!(response.status(), 500);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (code, message) = error_of(&response.text().unwrap());
    assert_eq!(code, "function_failed");
    // The caller gets the code, a generic message and the invocation id;
    // what the exception said is the owner's, in the log.
    assert!(
        message.contains("raised an error") && message.contains(&id),
        "{message}"
    );
    assert!(
        !message.contains("ValueError") && !message.contains("deliberate"),
        "{message}"
    );
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "py", "--invocation", &id]);
        out.contains("Traceback").then_some(out)
    });
    assert!(
        logs.contains("stdout [") && logs.contains("about to fail"),
        "{logs}"
    );
    assert!(logs.contains("raise ValueError"), "{logs}");
    assert!(
        logs.contains("system") && logs.contains("raised an error: ValueError: deliberate failure"),
        "{logs}"
    );
    assert_eq!(
        server.get("/fn/py/").status(),
        200,
        "the instance survives an exception"
    );

    let noarg = function_file("noarg.py");
    server.ok(&[
        "fn",
        "create",
        "--name",
        "noarg",
        "--env",
        "python",
        "--code",
        noarg.to_str().unwrap(),
    ]);
    assert_eq!(
        server.get("/fn/noarg").text().unwrap(),
        "no arguments needed"
    );
}

#[test]
fn archives_with_an_entrypoint_and_bad_archives() {
    let server = python_server();
    let dir = tempfile::tempdir().unwrap();
    let zip_path = dir.path().join("app.zip");
    {
        let file = std::fs::File::create(&zip_path).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("app/__init__.py", options).unwrap();
        zip.start_file("app/handler.py", options).unwrap();
        zip.write_all(b"from app import helper\ndef handler(req):\n    return helper.greet(req.query.get('n', 'zip'))\n").unwrap();
        zip.start_file("app/helper.py", options).unwrap();
        zip.write_all(b"def greet(n):\n    return 'hello ' + n\n")
            .unwrap();
        zip.finish().unwrap();
    }
    server.ok(&[
        "fn",
        "create",
        "--name",
        "zipped",
        "--env",
        "python",
        "--code",
        zip_path.to_str().unwrap(),
        "--entrypoint",
        "app.handler.handler",
    ]);
    assert_eq!(server.get("/fn/zipped?n=ada").text().unwrap(), "hello ada");

    let tgz_path = dir.path().join("app.tar.gz");
    {
        let file = std::fs::File::create(&tgz_path).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        let source = b"def main(req):\n    return 'from tar'\n";
        let mut header = tar::Header::new_gnu();
        header.set_size(source.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "lib/entry.py", &source[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    server.ok(&[
        "fn",
        "create",
        "--name",
        "tarred",
        "--env",
        "python",
        "--code",
        tgz_path.to_str().unwrap(),
        "--entrypoint",
        "lib.entry.main",
    ]);
    assert_eq!(server.get("/fn/tarred").text().unwrap(), "from tar");

    // A zip bomb (1 GiB of zeros, a megabyte packed) and a path traversal:
    // clear errors, nothing stored.
    let bomb = dir.path().join("bomb.zip");
    {
        let file = std::fs::File::create(&bomb).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file("zeros.py", options).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            zip.write_all(&chunk).unwrap();
        }
        zip.finish().unwrap();
    }
    let err = server.fails(&[
        "fn",
        "create",
        "--name",
        "bomb",
        "--env",
        "python",
        "--code",
        bomb.to_str().unwrap(),
    ]);
    assert!(err.contains("unpacks to more than"), "{err}");
    let evil = dir.path().join("evil.zip");
    {
        let file = std::fs::File::create(&evil).unwrap();
        let mut zip = zip::ZipWriter::new(file);
        zip.start_file("../../escape.py", zip::write::SimpleFileOptions::default())
            .unwrap();
        zip.write_all(b"x").unwrap();
        zip.finish().unwrap();
    }
    let err = server.fails(&[
        "fn",
        "create",
        "--name",
        "evil",
        "--env",
        "python",
        "--code",
        evil.to_str().unwrap(),
    ]);
    assert!(err.contains("outside the package"), "{err}");
    let list = server.ok(&["fn", "list"]);
    assert!(!list.contains("bomb") && !list.contains("evil"), "{list}");
    let blobs = std::fs::read_dir(server.data_dir.join("packages"))
        .unwrap()
        .count();
    assert_eq!(blobs, 3, "two packages and tmp/");
}

#[test]
fn node_functions() {
    let server = Server::start();
    server.ok(&[
        "env",
        "create",
        "--name",
        "node",
        "--runtime",
        "node",
        "--poolsize",
        "1",
    ]);
    let code = function_file("probe.js");
    server.ok(&[
        "fn",
        "create",
        "--name",
        "js",
        "--env",
        "node",
        "--code",
        code.to_str().unwrap(),
    ]);
    let response = http()
        .post(format!("{}/fn/js/hi?name=ada", server.router))
        .body("12345")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-runtime"], "node");
    let body: serde_json::Value = response.json().unwrap();
    assert_eq!(
        body,
        serde_json::json!({"hello": "ada", "method": "POST", "length": 5})
    );

    let response = server.get("/fn/js/raise");
    assert_eq!(response.status(), 500);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, message) = error_of(&response.text().unwrap());
    assert!(message.contains("raised an error"), "{message}");
    assert!(!message.contains("deliberate failure"), "{message}");
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "js", "--invocation", &id]);
        out.contains("at module.exports").then_some(out)
    });
    assert!(logs.contains("about to throw"), "{logs}");

    // Concurrent invocations on one Node instance keep their own logs.
    server.ok(&[
        "fn",
        "update",
        "--name",
        "js",
        "--concurrency",
        "4",
        "--maxscale",
        "1",
    ]);
    let json: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", "js", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["limits"]["instanceConcurrency"], 4);
    let router = server.router.clone();
    let calls: Vec<_> = (0..3)
        .map(|i| {
            let url = format!("{router}/fn/js/sleep?ms=300&tag=t{i}");
            std::thread::spawn(move || {
                let response = http().get(url).send().unwrap();
                let id = response.headers()["x-flare-invocation-id"]
                    .to_str()
                    .unwrap()
                    .to_string();
                let body: serde_json::Value = response.json().unwrap();
                (id, body)
            })
        })
        .collect();
    let results: Vec<(String, serde_json::Value)> =
        calls.into_iter().map(|c| c.join().unwrap()).collect();
    let instances: std::collections::HashSet<_> = results
        .iter()
        .map(|(_, b)| b["instance"].to_string())
        .collect();
    assert_eq!(
        instances.len(),
        1,
        "one instance served all three: {results:?}"
    );
    for (id, body) in &results {
        let tag = body["tag"].as_str().unwrap();
        let logs = eventually(Duration::from_secs(10), || {
            let out = server.ok(&["fn", "logs", "--name", "js", "--invocation", id]);
            out.contains("slept").then_some(out)
        });
        assert!(
            logs.contains(&format!("slept {tag}")) && logs.lines().count() == 1,
            "{logs}"
        );
    }
}

#[test]
fn a_custom_worker_that_speaks_the_protocol() {
    let server = Server::start();
    // The sandbox user must be able to read the program: copy it out of the
    // checkout to a world-readable place.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("worker.py");
    std::fs::copy(function_file("custom-worker.py"), &program).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    server.ok(&[
        "env",
        "create",
        "--name",
        "mine",
        "--runtime",
        "custom",
        "--poolsize",
        "1",
        "--command",
        program.to_str().unwrap(),
    ]);
    let code = dir.path().join("code.txt");
    std::fs::write(&code, "v1\n").unwrap();
    server.ok(&[
        "fn",
        "create",
        "--name",
        "custom",
        "--env",
        "mine",
        "--code",
        code.to_str().unwrap(),
    ]);
    let response = server.get("/fn/custom/path?q=1");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().unwrap(), "custom[v1] GET /path?q=1");
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "custom"]);
        out.contains("custom worker saw /path?q=1").then_some(out)
    });
    assert_eq!(logs.lines().count(), 1, "{logs}");
}

#[test]
fn environments_are_checked() {
    let server = python_server();
    let code = function_file("probe.py");
    let err = server.fails(&[
        "fn",
        "create",
        "--name",
        "x",
        "--env",
        "nope",
        "--code",
        code.to_str().unwrap(),
    ]);
    assert!(err.contains("environment \"nope\" does not exist"), "{err}");
    let err = server.fails(&["env", "create", "--name", "bad", "--runtime", "custom"]);
    assert!(err.contains("needs a command"), "{err}");
    let err = server.fails(&["env", "create", "--name", "python", "--runtime", "python"]);
    assert!(err.contains("already exists"), "{err}");

    // Update: a bad value or an unknown environment changes nothing; a good
    // pool size is put to work.
    let err = server.fails(&["env", "update", "--name", "python", "--poolsize", "65"]);
    assert!(err.contains("poolsize 65 is over the limit"), "{err}");
    let err = server.fails(&["env", "update", "--name", "nope", "--poolsize", "2"]);
    assert!(err.contains("not found"), "{err}");
    let env = |server: &Server| -> serde_json::Value {
        serde_json::from_str(&server.ok(&["env", "get", "--name", "python", "-o", "json"])).unwrap()
    };
    assert_eq!(env(&server)["spec"]["poolsize"], 1);
    server.ok(&["env", "update", "--name", "python", "--poolsize", "3"]);
    eventually(Duration::from_secs(20), || {
        let env = env(&server);
        (env["spec"]["poolsize"] == 3 && env["idle_workers"] == 3).then_some(())
    });
    create_py(&server, "py", &[]);
    let err = server.fails(&["env", "delete", "--name", "python"]);
    assert!(err.contains("used by function(s) py"), "{err}");
    server.ok(&["fn", "delete", "--name", "py"]);
    server.ok(&["env", "delete", "--name", "python"]);
    assert!(!server.ok(&["env", "list"]).contains("python"));
}

#[test]
fn pool_specialization_reuse_keepalive_and_spread() {
    let server = Server::start();
    server.ok(&[
        "env",
        "create",
        "--name",
        "python",
        "--runtime",
        "python",
        "--poolsize",
        "2",
    ]);
    eventually(Duration::from_secs(20), || {
        let env: serde_json::Value =
            serde_json::from_str(&server.ok(&["env", "get", "--name", "python", "-o", "json"]))
                .unwrap();
        (env["idle_workers"] == 2).then_some(())
    });
    create_py(&server, "py", &["--keepalive", "1s", "--maxscale", "3"]);
    let first = server.get("/fn/py/id").text().unwrap();
    assert_eq!(
        server.get("/fn/py/id").text().unwrap(),
        first,
        "the instance is reused"
    );
    // The pool refills after lending a worker.
    eventually(Duration::from_secs(20), || {
        let env: serde_json::Value =
            serde_json::from_str(&server.ok(&["env", "get", "--name", "python", "-o", "json"]))
                .unwrap();
        (env["idle_workers"] == 2).then_some(())
    });
    // Idle past its keep-alive, the instance is destroyed.
    eventually(Duration::from_secs(10), || {
        let f: serde_json::Value =
            serde_json::from_str(&server.ok(&["fn", "get", "--name", "py", "-o", "json"])).unwrap();
        (f["status"]["instances"]["warm"] == 0).then_some(())
    });
    assert_ne!(
        server.get("/fn/py/id").text().unwrap(),
        first,
        "a new instance after keep-alive"
    );

    // One request in flight per instance: three at once use three instances.
    let router = server.router.clone();
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let url = format!("{router}/fn/py/sleep?s=1");
            std::thread::spawn(move || http().get(url).send().unwrap().text().unwrap())
        })
        .collect();
    let ids: std::collections::HashSet<String> =
        calls.into_iter().map(|c| c.join().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2900),
        "they ran side by side: {:?}",
        started.elapsed()
    );
}

#[test]
fn crashes_hangs_and_memory_hogs_are_replaced() {
    let server = python_server();
    create_py(&server, "py", &["--timeout", "1s", "--memory", "64"]);
    let before = server.get("/fn/py/id").text().unwrap();

    let response = server.get("/fn/py/crash");
    assert_eq!(response.status(), 500);
    let id = response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, message) = error_of(&response.text().unwrap());
    assert!(
        message.contains("crashed") && message.contains(&id),
        "{message}"
    );
    // The caller is told it crashed; the log says how.
    let logs = eventually(Duration::from_secs(10), || {
        let out = server.ok(&["fn", "logs", "--name", "py", "--invocation", &id]);
        out.contains("system").then_some(out)
    });
    assert!(
        logs.contains("function exited with status") || logs.contains("killed by signal"),
        "{logs}"
    );
    let after_crash = server.get("/fn/py/id").text().unwrap();
    assert_ne!(after_crash, before, "a new worker replaced the crashed one");

    let started = Instant::now();
    let response = server.get("/fn/py/sleep?s=30");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_ne!(
        server.get("/fn/py/id").text().unwrap(),
        after_crash,
        "the hung worker was killed"
    );

    let response = server.get("/fn/py/hog");
    assert!(response.status().is_server_error());
    let (_, message) = error_of(&response.text().unwrap());
    assert!(message.contains("memory limit of 64 MiB"), "{message}");
    assert_eq!(
        server.get("/fn/py/").status(),
        200,
        "and the function goes on"
    );
}

#[test]
fn sandbox_walls_hold_from_inside_a_function() {
    let server = python_server();
    common::walls::hold(&server, "namespace");
}

#[test]
fn the_pool_grows_with_demand() {
    let server = python_server();
    let code = function_file("noarg.py");
    for i in 0..4 {
        let name = format!("f{i}");
        server.ok(&[
            "fn",
            "create",
            "--name",
            &name,
            "--env",
            "python",
            "--code",
            code.to_str().unwrap(),
        ]);
        assert_eq!(server.get(&format!("/fn/{name}")).status(), 200);
    }
    // Four workers were asked for within the demand window: the pool of
    // one grows to four idle workers.
    eventually(Duration::from_secs(30), || {
        let env: serde_json::Value =
            serde_json::from_str(&server.ok(&["env", "get", "--name", "python", "-o", "json"]))
                .unwrap();
        (env["idle_workers"] == 4).then_some(())
    });
}

#[test]
fn forked_workers_share_nothing_a_tenant_could_use() {
    let server = python_server();
    create_py(&server, "a", &[]);
    create_py(&server, "b", &[]);
    let first: serde_json::Value = server.get("/fn/a/neighbours").json().unwrap();
    let other = first["worker"].as_str().unwrap();
    let second: serde_json::Value = server
        .get(&format!("/fn/b/neighbours?other={other}"))
        .json()
        .unwrap();
    for report in [&first, &second] {
        // Forked from the environment's zygote, not started whole.
        assert_eq!(report["main"], "/env/zygote.py", "{report}");
        // Its own pid namespace (the reaper and itself), its own /tmp,
        // and nothing of the zygote's view of the workers.
        assert_eq!(report["pids"], serde_json::json!([1, 2]), "{report}");
        assert_eq!(report["tmp"], serde_json::json!([]), "{report}");
        assert_eq!(report["flare"], serde_json::json!([]), "{report}");
        // No descriptor of the zygote's: stdin, its own output FIFOs, the
        // protocol socket, nothing else.
        let fds = report["fds"].as_object().unwrap();
        let sockets = fds
            .values()
            .filter(|t| t.as_str().unwrap().starts_with("socket:"))
            .count();
        assert_eq!(sockets, 1, "{report}");
        assert_eq!(fds.len(), 4, "{report}");
        assert_eq!(fds["0"], "/dev/null", "{report}");
        // Nor does its reaper (pid 1, which it can see) hold anything of
        // the zygote's, such as its output pipes, the same in every child.
        if let Some(reaper) = report["reaper_fds"].as_object() {
            assert!(
                reaper.values().all(|target| target == "/dev/null"),
                "{report}"
            );
        }
    }
    assert_ne!(first["worker"], second["worker"]);
    // Fresh randomness in each: the kernel's and Python's `random`.
    assert_ne!(first["urandom"], second["urandom"], "{first} {second}");
    assert_ne!(first["random"], second["random"], "{first} {second}");
    // b cannot reach a's code or sockets, named or not.
    for key in ["other_code", "other_run"] {
        assert!(
            second[key].as_str().unwrap().starts_with("denied"),
            "{key}: {second}"
        );
    }
    // a's /tmp is still a's alone.
    let again: serde_json::Value = server.get("/fn/a/neighbours").json().unwrap();
    assert_eq!(again["tmp"], serde_json::json!(["mine"]), "{again}");
    let b_again: serde_json::Value = server.get("/fn/b/neighbours").json().unwrap();
    assert_eq!(b_again["tmp"], serde_json::json!(["mine"]), "{b_again}");
    assert_ne!(again["urandom"], first["urandom"]);
}

/// The memory charged to a cgroup of this server's (`*-z*`: zygotes,
/// `*-w*`: workers), in bytes, one entry per cgroup.
fn charges(server: &Server, kind: &str) -> Vec<u64> {
    let v1 = std::path::Path::new("/sys/fs/cgroup/memory/flare");
    let (root, file) = if v1.is_dir() {
        (v1.to_path_buf(), "memory.usage_in_bytes")
    } else {
        (
            std::path::PathBuf::from("/sys/fs/cgroup/flare"),
            "memory.current",
        )
    };
    let prefix = format!("{}-{kind}", server.pid());
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| std::fs::read_to_string(e.path().join(file)).ok())
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[test]
fn forked_workers_pay_for_their_own_memory() {
    let server = Server::start();
    server.python_env("16");
    eventually(Duration::from_secs(60), || {
        let env: serde_json::Value =
            serde_json::from_str(&server.ok(&["env", "get", "--name", "python", "-o", "json"]))
                .unwrap();
        (env["idle_workers"].as_u64() == Some(16)).then_some(())
    });
    // Each child joins its worker's cgroup before it copies a page: the
    // zygote is charged for what it shares and what it writes after a
    // fork (measured about 0.7 MiB a child), not for its children's
    // copies (3.4 MiB a child when they were moved in after connecting).
    let zygote: u64 = charges(&server, "z").iter().sum();
    assert!(zygote < 40 << 20, "the zygote holds {} MiB", zygote >> 20);
    let workers = charges(&server, "w");
    assert!(
        workers.iter().all(|&w| w > 1 << 20),
        "each worker is charged for its own pages: {workers:?}"
    );
}
