//! The walls of a process sandbox, proven from inside a function: one set
//! of checks every isolation level must pass (tests/process.rs and
//! tests/hostile.rs run them at the `namespace` level, tests/isolation.rs
//! at the others).
#![allow(dead_code)]

use super::{Server, http, http_ok_server_on};

/// The kernel a function sees: the host's at the `namespace` level,
/// another (gVisor's, the VM's) at the others.
fn kernel_is(level: &str, report: &serde_json::Value) {
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let seen = report["release"].as_str().unwrap();
    if level == "namespace" {
        assert_eq!(seen, host.trim(), "{report}");
    } else {
        assert_ne!(
            seen,
            host.trim(),
            "the host kernel answers at {level}: {report}"
        );
    }
}

/// The walls a function meets: user, hostname, files, network, processes,
/// capabilities, seccomp, mounts, CPU and the fork limit. Needs an
/// environment named `python`; creates `py` and `netpy`.
pub fn hold(server: &Server, level: &str) {
    server.create_python("py", "probe.py", &[]);
    let api_port = server.api.rsplit(':').next().unwrap().to_string();
    let data_dir = server.data_dir.to_str().unwrap().to_string();
    let url = format!("/fn/py/walls?port={api_port}&data_dir={data_dir}");
    let report: serde_json::Value = server.get(&url).json().unwrap();
    assert_eq!(report["uid"], 65534, "{report}");
    kernel_is(level, &report);
    assert_eq!(report["hostname"], "flare");
    assert!(
        report["read_shadow"]
            .as_str()
            .unwrap()
            .starts_with("denied"),
        "{report}"
    );
    assert!(
        report["list_data_dir"]
            .as_str()
            .unwrap()
            .starts_with("denied"),
        "{report}"
    );
    assert!(
        report["write_code"].as_str().unwrap().starts_with("denied"),
        "{report}"
    );
    assert!(
        report["write_tmp"].as_str().unwrap().starts_with("allowed"),
        "{report}"
    );
    assert!(
        report["connect_loopback"]
            .as_str()
            .unwrap()
            .starts_with("denied"),
        "{report}"
    );
    let pids = report["pids"].as_array().unwrap();
    assert!(
        pids.len() <= 3 && pids.iter().all(|p| p.as_u64().unwrap() < 10),
        "only its own processes: {report}"
    );
    assert_eq!(report["cap_eff"], "0000000000000000");
    assert_eq!(report["seccomp"], "2", "a seccomp filter is installed");
    assert!(
        report["mount"].as_str().unwrap().starts_with("denied"),
        "{report}"
    );

    // A function that may call out still has its own loopback only: the
    // host's is out of reach (its way out is the egress proxy, tested in
    // hostile.rs).
    server.create_python("netpy", "probe.py", &["--network", "--allow-host", "*"]);
    let report: serde_json::Value = server
        .get(&url.replace("/fn/py/", "/fn/netpy/"))
        .json()
        .unwrap();
    assert!(
        report["connect_loopback"]
            .as_str()
            .unwrap()
            .starts_with("denied"),
        "{report}"
    );

    // Two spinning processes share the worker's CPU quota of one core:
    // together they get no more CPU time than wall time (unlimited, on this
    // two-core machine, they would get about twice as much).
    let share: serde_json::Value = server.get("/fn/py/cpu?s=1").json().unwrap();
    let (cpu, wall) = (
        share["cpu"].as_f64().unwrap(),
        share["wall"].as_f64().unwrap(),
    );
    assert!(wall >= 1.0, "{share}");
    // The CPU time a function sees is its kernel's account: the host's at
    // the namespace level; gVisor's own clock of its tasks otherwise, which
    // was seen at 1.25 once on a busy host, so only the host's is held to it.
    if level == "namespace" {
        assert!(cpu / wall < 1.25, "more than one core: {share}");
    }

    // A fork bomb stops at the process limit, and the server stays
    // healthy. Under gVisor a process costs about 8 MiB of the sandbox's
    // memory (549 MiB measured at 63), so a function at the default
    // 128 MiB meets its memory limit first and is killed: a wall all the
    // same, and the next request gets a new worker.
    let bomb = server.get("/fn/py/forkbomb");
    let bomb = bomb.text().unwrap();
    match serde_json::from_str::<serde_json::Value>(&bomb) {
        Ok(bomb) if bomb.get("error").is_none() => {
            assert_eq!(bomb["stopped_by"], "BlockingIOError", "{bomb}");
            assert!(bomb["children"].as_u64().unwrap() < 100, "{bomb}");
        }
        _ => {
            assert_ne!(level, "namespace", "{bomb}");
            assert!(bomb.contains("exceeded its memory limit"), "{bomb}");
        }
    }
    assert_eq!(
        http()
            .get(format!("{}/healthz", server.api))
            .send()
            .unwrap()
            .status(),
        200
    );
    assert_eq!(server.get("/fn/py/").status(), 200);
}

/// Attacks on the kernel from inside a function are refused: namespaces,
/// io_uring, the mount API, ptrace, bpf, raw sockets; /tmp is bounded and
/// a raised memory limit applies. Needs an environment named `python`;
/// creates `py`.
pub fn refuse_attacks(server: &Server) {
    server.create_python("py", "hostile.py", &["--memory", "1024"]);
    let report: serde_json::Value = server.get("/fn/py/syscalls").json().unwrap();
    for call in [
        "unshare_user",
        "clone_newuser",
        "io_uring_setup",
        "fsopen",
        "clone3_namespaces",
        "x32_unshare",
        "ptrace",
        "bpf",
        "socket_alg",
        "socket_packet",
    ] {
        let got = report[call].as_str().unwrap();
        assert!(
            got == "Function not implemented" || got == "Operation not permitted",
            "{call} was not refused: {report}"
        );
    }
    for ordinary in ["fork", "socketpair", "urandom"] {
        assert_eq!(
            report[ordinary], "ok",
            "ordinary work still works: {report}"
        );
    }

    // The private /tmp is bounded (64 MiB): filling it fails a write.
    let filled = server.get("/fn/py/fill-tmp?mb=100").text().unwrap();
    assert!(filled.starts_with("stopped after"), "{filled}");

    // A memory limit above the generic worker's 256 MiB is applied: 400 MiB
    // fits in 1024 MiB.
    let response = server.get("/fn/py/memory?mb=400");
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
}

/// A function goes out only through the egress proxy, to the hosts it
/// lists and the policy allows. Needs a server started with
/// `--egress-allow-private` (the test's own server on the host's loopback
/// stands in for an allowed host; Flare's own ports stay shut) and an
/// environment named `python`; creates `out` and `shut`. Inside the
/// sandbox 127.0.0.1 is its own loopback (NO_PROXY), so the host's is
/// reached as 127.0.0.2.
pub fn egress_only_through_the_proxy(server: &Server) {
    let target = http_ok_server_on("127.0.0.2");
    let api_port = server.api.rsplit_once(':').unwrap().1.to_string();
    let api_host = "127.0.0.1";
    let api = format!("127.0.0.2:{api_port}");
    server.create_python(
        "out",
        "hostile.py",
        &["--allow-host", &target, "--allow-host", &api],
    );
    server.create_python("shut", "hostile.py", &[]);

    let fetch = |name: &str, url: &str| {
        let response = server.get(&format!("/fn/{name}/fetch?url={url}"));
        assert_eq!(response.status(), 200);
        response.text().unwrap()
    };
    // A listed host on an allowed address: through the proxy, plain and
    // tunnelled (CONNECT, as HTTPS clients do).
    assert_eq!(fetch("out", &format!("http://{target}/")), "200 ok\n");
    assert_eq!(
        server
            .get(&format!("/fn/out/tunnel?to={target}"))
            .text()
            .unwrap(),
        "200 ok\n"
    );
    // Flare's own API, although listed: refused by the policy.
    let own = fetch("out", &format!("http://{api}/v1/environments"));
    assert!(own.starts_with("refused 403"), "{own}");
    assert!(own.contains("own ports"), "{own}");
    // A host the function does not list.
    let target_port = target.rsplit_once(':').unwrap().1;
    let unlisted = fetch("out", &format!("http://127.0.0.3:{target_port}/"));
    assert!(unlisted.starts_with("refused 403"), "{unlisted}");
    assert!(unlisted.contains("allowed hosts"), "{unlisted}");
    // Past the proxy there is nothing: the sandbox's loopback is its own.
    for name in ["out", "shut"] {
        let direct = server
            .get(&format!(
                "/fn/{name}/connect?host={api_host}&port={api_port}"
            ))
            .text()
            .unwrap();
        assert!(direct.starts_with("failed"), "{name}: {direct}");
    }
    // A function that lists no host has no proxy at all.
    let closed = fetch("shut", &format!("http://{target}/"));
    assert!(closed.starts_with("failed"), "{closed}");
    // HTTPS clients inside can check certificates: the system's trusted
    // roots are there for a function that may call out.
    let roots: u32 = server.get("/fn/out/certs").text().unwrap().parse().unwrap();
    assert!(roots > 10, "{roots} trusted roots");

    assert_eq!(server.get("/fn/out/").status(), 200, "still serving");
}
