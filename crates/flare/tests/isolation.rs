//! Isolation levels: the same walls at every level, and a clear error for
//! a level the host cannot provide.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Server, error_of};

fn env_create(server: &Server, isolation: &str) -> std::process::Output {
    server.cli(&[
        "env",
        "create",
        "--name",
        "python",
        "--runtime",
        "python",
        "--poolsize",
        "1",
        "--isolation",
        isolation,
    ])
}

#[test]
fn gvisor_workers_meet_the_same_walls() {
    let server = Server::start();
    let created = env_create(&server, "gvisor");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    common::walls::hold(&server, "gvisor");
}

#[test]
fn attacks_on_the_kernel_are_refused_under_gvisor() {
    let server = Server::start();
    assert!(env_create(&server, "gvisor").status.success());
    common::walls::refuse_attacks(&server);
}

#[test]
fn under_gvisor_a_function_goes_out_only_through_the_egress_proxy() {
    let server = Server::start_with(&["--egress-allow-private"]);
    assert!(env_create(&server, "gvisor").status.success());
    common::walls::egress_only_through_the_proxy(&server);
}

#[test]
fn java_functions_run_under_gvisor_too() {
    let server = Server::start();
    server.ok(&[
        "env",
        "create",
        "--name",
        "java",
        "--runtime",
        "java",
        "--isolation",
        "gvisor",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let jar = common::jar(dir.path(), "hello.jar", None, "");
    server.ok(&[
        "fn",
        "create",
        "--name",
        "jhello",
        "--env",
        "java",
        "--code",
        jar.to_str().unwrap(),
    ]);
    // The JVM asks which CPU it is on (getcpu), which gVisor answers as a
    // system call the seccomp filter must allow: refused, it never started.
    let response = server.get("/fn/jhello?name=gvisor");
    let status = response.status();
    let text = response.text().unwrap();
    assert_eq!(
        status,
        200,
        "{text}\n{}",
        server.ok(&["fn", "logs", "--name", "jhello"])
    );
    assert_eq!(text, "Hello, gvisor!\n");
}

#[test]
fn node_functions_run_under_gvisor_too() {
    let server = Server::start();
    server.ok(&[
        "env",
        "create",
        "--name",
        "node",
        "--runtime",
        "node",
        "--isolation",
        "gvisor",
    ]);
    let code = common::function_file("probe.js");
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
    let body: serde_json::Value = server.get("/fn/js/").json().unwrap();
    assert_eq!(body["hello"], "node", "{body}");
    let env = server.ok(&["env", "get", "--name", "node"]);
    assert!(env.contains("gvisor"), "{env}");
}

#[test]
fn a_level_the_host_cannot_provide_is_a_clear_error_and_nothing_else_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in_env(dir.path(), &[], &[("FLARE_RUNSC", "/nonexistent/runsc")]);
    for (level, names) in [("gvisor", "runsc"), ("microvm", "microvm is not available")] {
        let failed = env_create(&server, level);
        assert!(!failed.status.success());
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(stderr.contains(names), "{level}: {stderr}");
        // Nothing was stored.
        let list = server.ok(&["env", "list", "-o", "json"]);
        assert_eq!(list.trim(), "[]", "{level}");
    }
    let response = server
        .api_client()
        .post(format!("{}/v1/environments", server.api))
        .json(&serde_json::json!({
            "apiVersion": "flare.dev/v1",
            "kind": "Environment",
            "metadata": {"name": "python"},
            "spec": {"runtime": "python", "isolation": "gvisor"},
        }))
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let (code, message) = error_of(&response.text().unwrap());
    assert_eq!(code, "invalid_argument");
    assert!(message.contains("/nonexistent/runsc"), "{message}");

    // The default level still serves.
    assert!(env_create(&server, "namespace").status.success());
    server.create_python("hello", "noarg.py", &[]);
    assert_eq!(server.get("/fn/hello").status(), 200);
}
