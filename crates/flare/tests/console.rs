//! The web console at `/ui`: its files and their policy, and the console
//! itself driven in headless Chromium by ui/test/console.mjs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Server, http};

fn ui_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ui")
}

#[test]
fn the_console_files_are_served_without_a_token_under_a_strict_policy() {
    let server = Server::start();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let moved = client.get(format!("{}/ui", server.api)).send().unwrap();
    assert_eq!(moved.status(), 308);
    assert_eq!(moved.headers()["location"], "/ui/");
    for (path, kind, has) in [
        ("/ui/", "text/html", "app.js"),
        ("/ui/app.js", "text/javascript", "sessionStorage"),
        ("/ui/app.css", "text/css", "focus-visible"),
    ] {
        let response = http().get(format!("{}{path}", server.api)).send().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let policy = headers["content-security-policy"].to_str().unwrap();
        for rule in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(rule), "{path}: {policy}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let text = response.text().unwrap();
        assert!(text.contains(has), "{path}");
        assert!(!text.contains("flr_"), "{path} carries no token");
    }
    // Nothing else is served under /ui, and the API behind it still wants
    // a token.
    let other = http()
        .get(format!("{}/ui/secret", server.api))
        .send()
        .unwrap();
    assert_eq!(other.status(), 404);
    let api = http()
        .get(format!("{}/v1/functions", server.api))
        .send()
        .unwrap();
    assert_eq!(api.status(), 401);
}

#[test]
fn the_console_signs_in_invokes_a_function_and_shows_its_log_line_live() {
    let ui = ui_dir();
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).is_file(),
        "{chromium} is missing: scripts/system-deps.sh installs Debian's chromium"
    );
    if !ui.join("node_modules/playwright-core").is_dir() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&ui)
            .status()
            .expect("npm runs (scripts/system-deps.sh installs it)");
        assert!(status.success(), "npm ci in ui/");
    }

    let server = Server::start();
    server.python_env("1");
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("console.py");
    std::fs::write(
        &code,
        // Markup in a log line and a body: the console shows it as text.
        "def main(req):\n    print(\"console-test-line <img src=x onerror=window.pwned=1>\", flush=True)\n    return \"<b id=injected>hello</b> from the console test\"\n",
    )
    .unwrap();
    server.create_in("python", "console", &code, &[]);
    // A second version, for the versions table.
    server.ok(&["fn", "update", "--name", "console", "--memory", "192"]);
    server.ok(&[
        "alias",
        "create",
        "--function",
        "console",
        "--name",
        "prod",
        "--version",
        "1",
    ]);
    // A function in the middle of a canary, for its page.
    server.create_in("python", "canaried", &code, &[]);
    server.ok(&["fn", "update", "--name", "canaried", "--memory", "192"]);
    server.ok(&[
        "canary",
        "create",
        "--name",
        "slowly",
        "--function",
        "canaried",
        "--from",
        "1",
        "--to",
        "2",
        "--step",
        "10",
        "--interval",
        "1h",
    ]);
    server.ok(&[
        "ht",
        "create",
        "--name",
        "shown",
        "--url",
        "/console-path",
        "--function",
        "console",
    ]);
    // A dead letter for the invocations page to retry.
    server.create("broken", "misbehave", &[]);
    let queued = http()
        .post(format!("{}/async/fn/broken/trap", server.router))
        .header("x-flare-max-retries", "0")
        .send()
        .unwrap();
    assert_eq!(queued.status(), 202);
    let failed = queued.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    common::eventually(std::time::Duration::from_secs(30), || {
        server
            .ok(&["invocations", "get", "--id", &failed])
            .contains("failed")
            .then_some(())
    });
    let viewer: serde_json::Value = serde_json::from_str(&server.ok(&[
        "token", "create", "--name", "look", "--role", "viewer", "-o", "json",
    ]))
    .unwrap();

    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    // This run's screenshots, not an earlier run's.
    let _ = std::fs::remove_dir_all(&shots);
    let output = Command::new("node")
        .arg("test/console.mjs")
        .current_dir(&ui)
        .env("FLARE_API", &server.api)
        .env("FLARE_TOKEN", &server.token)
        .env("FLARE_VIEWER_TOKEN", viewer["token"].as_str().unwrap())
        .env("FLARE_FUNCTION", "console")
        .env("FLARE_FAILED_INVOCATION", &failed)
        .env("FLARE_TRIGGER_PATH", "/console-path")
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOTS", &shots)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{said}");
    assert!(said.contains("console test passed"), "{said}");
    for shot in [
        "1-sign-in-refused",
        "2-functions",
        "3-function",
        "4-invocations",
        "5-nodes",
    ] {
        let png = shots.join(format!("{shot}.png"));
        assert!(
            std::fs::metadata(&png).unwrap().len() > 1000,
            "{}",
            png.display()
        );
    }
}
