//! Who may do what: tokens, roles, contexts, from the outside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Server, client_with_token, error_of, eventually, http};

/// Makes a token through the CLI and returns its secret.
fn token(server: &Server, name: &str, role: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", "json"]);
    let created: serde_json::Value = serde_json::from_str(&server.ok(&args)).unwrap();
    created["token"].as_str().unwrap().to_string()
}

#[test]
fn the_first_start_writes_an_admin_token_and_nothing_works_without_one() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start_in(tmp.path(), &[]);
    let file = tmp.path().join("admin.token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "admin.token is {mode:o}");
    assert!(server.token.starts_with("flr_") && server.token.len() == 68);

    // Health and the API description stay open.
    let health = http()
        .get(format!("{}/healthz", server.api))
        .send()
        .unwrap();
    assert_eq!(health.status(), 200);
    let description = http()
        .get(format!("{}/v1/openapi.json", server.api))
        .send()
        .unwrap();
    assert_eq!(description.status(), 200);

    // Everything else: 401, with a message that says what to do.
    let basic = format!("Basic {}", server.token);
    let longer = format!("Bearer {}x", server.token);
    for (header, why) in [
        (None, "needs a token"),
        (Some("Bearer flr_0000"), "not valid"),
        (Some(basic.as_str()), "not \"Bearer"),
        (Some(longer.as_str()), "not valid"),
    ] {
        let mut request = http().get(format!("{}/v1/functions", server.api));
        if let Some(header) = &header {
            request = request.header("authorization", *header);
        }
        let response = request.send().unwrap();
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (code, message) = error_of(&response.text().unwrap());
        assert_eq!(code, "unauthenticated");
        assert!(message.contains(why), "{header:?}: {message}");
    }
    let refused = server.cli_as("", &["fn", "list"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("admin.token"), "{stderr}");

    // A restart keeps the token and writes no new one.
    drop(server);
    let again = Server::start_in(tmp.path(), &[]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap().trim(),
        again.token.as_str()
    );
    again.ok(&["fn", "list"]);
    assert_eq!(
        again
            .ok(&["token", "list", "-o", "json"])
            .matches("\"name\"")
            .count(),
        1
    );

    // An operator who lost the file asks for a new one; the old stays.
    let old = again.token.clone();
    drop(again);
    let recovered = Server::start_in(tmp.path(), &["--new-admin-token"]);
    assert_ne!(recovered.token, old);
    recovered.ok(&["whoami"]);
    let listed = recovered.ok(&["token", "list"]);
    assert!(listed.contains("admin-2"), "{listed}");
    let status = client_with_token(&old)
        .get(format!("{}/v1/whoami", recovered.api))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

/// The CLI with its own config home and nothing from the environment.
fn own_cli(config_home: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("FLARE_API")
        .env_remove("FLARE_TOKEN")
        .env_remove("FLARE_CA_CERT")
        .output()
        .unwrap()
}

/// What one request needs, as the issue's table of roles says.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Needs {
    Read,
    Write,
    Invoke,
    Admin,
    /// Read in every namespace (metrics).
    ReadAll,
    /// Any valid token.
    Token,
    /// Nothing at all (the API description, health from loopback).
    Nothing,
}

#[test]
fn no_role_does_more_than_its_row_allows() {
    let server = Server::start();
    server.ok(&["ns", "create", "team-a"]);
    // The same resources in two namespaces: the caller's own and another.
    for namespace in ["default", "team-a"] {
        let ns = ["-n", namespace];
        server.create("hello", "hello_rust", &ns);
        for args in [
            &["secret", "create", "--name", "s", "--from-literal", "K=v"][..],
            &["config", "create", "--name", "c", "--from-literal", "K=v"],
            &[
                "tt",
                "create",
                "--name",
                "t",
                "--function",
                "hello",
                "--cron",
                "0 0 1 1 *",
            ],
        ] {
            server.ok(&[&ns[..], args].concat());
        }
    }
    let url = |path: &str| format!("{}{path}", server.api);
    let env_doc = r#"{"apiVersion":"flare.dev/v1","kind":"Environment","metadata":{"name":"x"},"spec":{"runtime":"nope"}}"#;
    let ns_doc = r#"{"kind":"Namespace","metadata":{"name":"Bad"},"spec":{}}"#;
    let bad_secret = r#"{"metadata":{"name":"x"},"data":{"K":"not base64!"}}"#;
    let function = |namespace: &str| {
        let mut doc: serde_json::Value = server
            .api_client()
            .get(url(&format!("/v1/functions/hello?namespace={namespace}")))
            .send()
            .unwrap()
            .json()
            .unwrap();
        doc["metadata"]["generation"] = 0.into();
        doc.to_string()
    };

    // (method, path, body, what it needs, namespace it is about, the
    // status when allowed). Writes that an allowed caller makes are either
    // idempotent or refused after the wall by the request's own fault, so
    // every caller meets the same state.
    let mut endpoints: Vec<(&str, String, String, Needs, &str, u16)> = Vec::new();
    for namespace in ["default", "team-a"] {
        let q = format!("?namespace={namespace}");
        let p = |path: &str| format!("{path}{q}");
        let mut add = |method, path: String, body: String, needs, status| {
            endpoints.push((method, path, body, needs, namespace, status));
        };
        add("GET", p("/v1/functions"), String::new(), Needs::Read, 200);
        add(
            "GET",
            p("/v1/functions/hello"),
            String::new(),
            Needs::Read,
            200,
        );
        add(
            "GET",
            p("/v1/functions/hello/logs"),
            String::new(),
            Needs::Read,
            200,
        );
        add(
            "GET",
            p("/v1/httptriggers"),
            String::new(),
            Needs::Read,
            200,
        );
        add(
            "GET",
            p("/v1/timertriggers"),
            String::new(),
            Needs::Read,
            200,
        );
        add(
            "GET",
            p("/v1/timertriggers/t"),
            String::new(),
            Needs::Read,
            200,
        );
        add("GET", p("/v1/mqtriggers"), String::new(), Needs::Read, 200);
        add("GET", p("/v1/invocations"), String::new(), Needs::Read, 200);
        add("GET", p("/v1/secrets"), String::new(), Needs::Read, 200);
        add("GET", p("/v1/secrets/s"), String::new(), Needs::Read, 200);
        add("GET", p("/v1/configs/c"), String::new(), Needs::Read, 200);
        add("GET", p("/v1/configs"), String::new(), Needs::Read, 200);
        add(
            "GET",
            p("/v1/mqtriggers/nope"),
            String::new(),
            Needs::Read,
            404,
        );
        add(
            "GET",
            p("/v1/invocations/nope"),
            String::new(),
            Needs::Read,
            404,
        );
        add(
            "POST",
            p("/v1/invocations/nope/retry"),
            String::new(),
            Needs::Invoke,
            404,
        );
        add(
            "PUT",
            p("/v1/functions/hello"),
            function(namespace),
            Needs::Write,
            200,
        );
        add(
            "POST",
            p("/v1/secrets"),
            bad_secret.into(),
            Needs::Write,
            400,
        );
        add(
            "DELETE",
            p("/v1/httptriggers/nope"),
            String::new(),
            Needs::Write,
            404,
        );
        // Not a package: allowed callers get past the wall to the check.
        add("POST", p("/v1/packages"), "bytes".into(), Needs::Write, 400);
        let invoke = match namespace {
            "default" => "/v1/functions/hello/invoke".to_string(),
            other => format!("/v1/functions/hello.{other}/invoke"),
        };
        add("POST", invoke.clone(), String::new(), Needs::Invoke, 200);
        add(
            "GET",
            format!("{invoke}/x"),
            String::new(),
            Needs::Invoke,
            200,
        );
    }
    let cluster = "*";
    for (method, path, body, needs, status) in [
        ("GET", "/metrics", "", Needs::ReadAll, 200),
        ("GET", "/v1/tokens", "", Needs::Admin, 200),
        ("DELETE", "/v1/tokens/nope", "", Needs::Admin, 404),
        ("GET", "/v1/audit", "", Needs::Admin, 200),
        ("GET", "/v1/whoami", "", Needs::Token, 200),
        ("GET", "/v1/environments", "", Needs::Token, 200),
        ("GET", "/v1/environments/nope", "", Needs::Token, 404),
        ("GET", "/healthz", "", Needs::Nothing, 200),
        ("GET", "/v1/openapi.json", "", Needs::Nothing, 200),
        ("POST", "/v1/environments", env_doc, Needs::Admin, 400),
        ("GET", "/v1/namespaces", "", Needs::Token, 200),
        ("POST", "/v1/namespaces", ns_doc, Needs::Admin, 400),
        ("DELETE", "/v1/namespaces/nope", "", Needs::Admin, 404),
        ("GET", "/v1/functions?namespace=*", "", Needs::ReadAll, 200),
    ] {
        endpoints.push((method, path.into(), body.into(), needs, cluster, status));
    }

    // (who, token, role, namespace)
    let mut callers: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("admin", server.token.clone(), Some("admin"), "*"),
        (
            "developer",
            token(&server, "dev", "developer", &[]),
            Some("developer"),
            "default",
        ),
        (
            "viewer",
            token(&server, "view", "viewer", &[]),
            Some("viewer"),
            "default",
        ),
        (
            "invoker",
            token(&server, "inv", "invoker", &[]),
            Some("invoker"),
            "default",
        ),
        (
            "developer of team-a",
            token(&server, "dev-a", "developer", &["-n", "team-a"]),
            Some("developer"),
            "team-a",
        ),
        (
            "invoker of team-a",
            token(&server, "inv-a", "invoker", &["-n", "team-a"]),
            Some("invoker"),
            "team-a",
        ),
        (
            "viewer of every namespace",
            token(&server, "view-all", "viewer", &["--namespace", "*"]),
            Some("viewer"),
            "*",
        ),
        ("no token", String::new(), None, ""),
        (
            "a made-up token",
            format!("flr_{}", "0".repeat(64)),
            None,
            "",
        ),
    ];
    let revoked = token(&server, "gone", "admin", &[]);
    server.ok(&["token", "revoke", "--name", "gone"]);
    callers.push(("a revoked token", revoked, None, ""));
    let expiring = token(&server, "brief", "admin", &["--expires", "1s"]);
    eventually(Duration::from_secs(20), || {
        let status = client_with_token(&expiring)
            .get(url("/v1/whoami"))
            .send()
            .unwrap()
            .status();
        (status == 401).then_some(())
    });
    callers.push(("an expired token", expiring, None, ""));

    for (who, secret, role, reach) in &callers {
        for (method, path, body, needs, about, allowed_status) in &endpoints {
            let client = if secret.is_empty() {
                http()
            } else {
                client_with_token(secret)
            };
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut request = client.request(method.clone(), url(path));
            if !body.is_empty() {
                let kind = if path.starts_with("/v1/packages") {
                    "application/octet-stream"
                } else {
                    "application/json"
                };
                request = request.header("content-type", kind).body(body.clone());
            }
            let status = request.send().unwrap().status().as_u16();
            let role_allows = match (role, needs) {
                (_, Needs::Nothing) => Some(true),
                (None, _) => None,
                (Some(_), Needs::Token) => Some(true),
                (Some("admin"), _) => Some(true),
                (Some("developer"), n) => {
                    Some(matches!(n, Needs::Read | Needs::Write | Needs::Invoke))
                }
                (Some("viewer"), n) => Some(matches!(n, Needs::Read | Needs::ReadAll)),
                (Some("invoker"), n) => Some(*n == Needs::Invoke),
                (Some(other), _) => panic!("no row for {other}"),
            };
            let reaches = match needs {
                Needs::ReadAll | Needs::Admin => *reach == "*",
                Needs::Token | Needs::Nothing => true,
                _ => *reach == "*" || reach == about,
            };
            let named = path.split('?').next().unwrap().matches('/').count() > 2;
            let expected = match role_allows {
                None => 401,
                Some(false) => 403,
                Some(true) if reaches => *allowed_status,
                Some(true) if named => 404,
                Some(true) => 403,
            };
            assert_eq!(status, expected, "{who}: {method} {path}");
        }
    }
    // A name that carries another namespace (a dot, or a dot encoded)
    // does not slip past the check of the namespace asked for: refused
    // before any handler reads it, for every caller.
    let developer = &callers[1].1;
    for (method, path) in [
        ("GET", "/v1/functions/hello.team-a/logs?namespace=default"),
        ("GET", "/v1/functions/hello.team-a?namespace=default"),
        ("POST", "/v1/functions/hello%2Eteam-a/invoke"),
        ("GET", "/v1/functions/hello%2eteam-a/invoke/x"),
        ("DELETE", "/v1/secrets/s.team-a"),
    ] {
        for token in [developer, &server.token] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = client_with_token(token)
                .request(method.clone(), url(path))
                .send()
                .unwrap();
            assert_eq!(response.status(), 400, "{method} {path}");
        }
    }
    // What the refused ones would have changed is not there.
    assert_eq!(server.ok(&["env", "list", "-o", "json"]).trim(), "[]");
    for namespace in ["default", "team-a"] {
        let listed = server.ok(&["-n", namespace, "secret", "list", "-o", "json"]);
        assert_eq!(listed.matches("\"name\"").count(), 1, "{listed}");
    }
    assert_eq!(
        server
            .ok(&["ns", "list", "-o", "json"])
            .matches("\"name\"")
            .count(),
        2
    );
}

#[test]
fn tokens_are_shown_once_stored_hashed_and_revocable() {
    let server = Server::start();
    let out = server.ok(&["token", "create", "--name", "ci", "--role", "developer"]);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("token (shown only now): "))
        .unwrap_or_else(|| panic!("no secret in {out}"))
        .to_string();
    assert!(secret.starts_with("flr_"));
    let ci = client_with_token(&secret);
    let me: serde_json::Value = ci
        .get(format!("{}/v1/whoami", server.api))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(me["name"], "ci");
    assert_eq!(me["role"], "developer");
    assert_eq!(me["namespace"], "default");

    // No answer and no stored byte carries a secret; the store has hashes.
    let listed = server.ok(&["token", "list", "-o", "json"]);
    for secret in [&secret, &server.token] {
        assert!(!listed.contains(secret.as_str()));
        assert!(!listed.contains("hash"), "{listed}");
    }
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() && !path.ends_with("admin.token") {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(!stored.contains(&secret));
    assert!(!stored.contains(&server.token));

    // Revoked: refused on the very next request.
    server.ok(&["token", "revoke", "--name", "ci"]);
    let status = ci
        .get(format!("{}/v1/whoami", server.api))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 401);

    // Bad requests: a clear error, nothing stored.
    let api = server.api_client();
    for (body, status, why) in [
        (r#"{"name":"x","role":"root"}"#, 400, "unknown role"),
        (
            r#"{"name":"x","role":"admin","namespace":"team-a"}"#,
            400,
            "every namespace",
        ),
        (r#"{"name":"X","role":"viewer"}"#, 400, "invalid token name"),
        (
            r#"{"name":"x","role":"viewer","expires":"soon"}"#,
            400,
            "invalid expiry",
        ),
        (
            r#"{"name":"x","role":"viewer","secret":"mine"}"#,
            400,
            "unknown field",
        ),
        (r#"{"name":"admin","role":"viewer"}"#, 409, "already exists"),
    ] {
        let response = api
            .post(format!("{}/v1/tokens", server.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), status, "{body}");
        let (_, message) = error_of(&response.text().unwrap());
        assert!(message.contains(why), "{body}: {message}");
    }
    let refused = server.fails(&["token", "create", "--name", "x", "--role", "root"]);
    assert!(refused.contains("invalid value 'root'"), "{refused}");
    let names = server.ok(&["token", "list", "-o", "json"]);
    assert_eq!(names.matches("\"name\"").count(), 1, "{names}");

    // The last admin token cannot go: nobody could manage tokens again.
    let last = server.fails(&["token", "revoke", "--name", "admin"]);
    assert!(last.contains("last admin token"), "{last}");
    server.ok(&["whoami"]);
}

#[test]
fn login_keeps_contexts_and_a_token_goes_only_to_its_own_server() {
    let a = Server::start();
    let b = Server::start();
    let config = tempfile::tempdir().unwrap();
    let flare = |args: &[&str]| own_cli(config.path(), args);
    let text = |out: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // A wrong token logs in nowhere and saves nothing.
    let wrong = flare(&["login", "--api", &a.api, "--token", "flr_nope"]);
    assert!(!wrong.status.success());
    assert!(text(&wrong).contains("not valid"), "{}", text(&wrong));
    assert!(!config.path().join("flare/config.toml").exists());

    let login = flare(&[
        "login",
        "--api",
        &a.api,
        "--token",
        &a.token,
        "--context",
        "a",
    ]);
    assert!(login.status.success(), "{}", text(&login));
    assert!(text(&login).contains("admin"), "{}", text(&login));
    let file = config.path().join("flare/config.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let listed = flare(&["fn", "list"]);
    assert!(listed.status.success(), "{}", text(&listed));

    let login = flare(&[
        "login",
        "--api",
        &b.api,
        "--token",
        &b.token,
        "--context",
        "b",
    ]);
    assert!(login.status.success(), "{}", text(&login));
    let contexts = text(&flare(&["context", "list"]));
    assert!(
        contexts.contains(&a.api) && contexts.contains(&b.api),
        "{contexts}"
    );
    let current: Vec<&str> = contexts.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(current.len(), 1);
    assert!(current[0].contains(" b "), "{contexts}");

    // The current context is b: its token is not sent to a.
    let elsewhere = flare(&["--api", &a.api, "whoami"]);
    assert!(!elsewhere.status.success());
    assert!(
        text(&elsewhere).contains("needs a token"),
        "{}",
        text(&elsewhere)
    );
    assert!(flare(&["context", "use", "a"]).status.success());
    assert!(flare(&["whoami"]).status.success());
    let unknown = flare(&["context", "use", "c"]);
    assert!(!unknown.status.success());
    assert!(text(&unknown).contains("no context \"c\""));
    assert!(flare(&["context", "delete", "a"]).status.success());
    let gone = text(&flare(&["context", "list"]));
    assert!(!gone.contains(&a.api), "{gone}");
}

#[test]
fn a_function_never_sees_its_callers_api_token() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let answer = server.ok(&["fn", "test", "--name", "echo"]);
    assert!(answer.contains("\"headers\""), "{answer}");
    assert!(!answer.contains(&server.token), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("authorization"),
        "{answer}"
    );
    let direct = server
        .api_client()
        .post(format!("{}/v1/functions/echo/invoke/x", server.api))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(direct.contains("\"path\""), "{direct}");
    assert!(!direct.contains(&server.token), "{direct}");
}

#[test]
fn a_function_with_token_auth_serves_only_invokers_of_its_namespace() {
    let server = Server::start();
    server.create("open", "echo", &[]);
    server.create("closed", "echo", &["--auth", "token"]);
    server.ok(&[
        "ht",
        "create",
        "--name",
        "door",
        "--url",
        "/door",
        "--function",
        "closed",
    ]);
    server.ok(&["ns", "create", "team-a"]);
    let invoker = token(&server, "inv", "invoker", &[]);
    let viewer = token(&server, "view", "viewer", &[]);
    let other = token(&server, "inv-a", "invoker", &["-n", "team-a"]);
    let gone = token(&server, "gone", "invoker", &[]);
    server.ok(&["token", "revoke", "--name", "gone"]);
    let call = |path: &str, token: Option<&str>| {
        let client = match token {
            Some(token) => client_with_token(token),
            None => http(),
        };
        let response = client
            .post(format!("{}{path}", server.router))
            .send()
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().unwrap())
    };

    // Without a valid token: 401, and the function never ran.
    for path in ["/fn/closed/x", "/door", "/async/fn/closed/x"] {
        for token in [None, Some(gone.as_str()), Some("flr_nothing")] {
            let (status, body) = call(path, token);
            assert_eq!(status, 401, "{path} {token:?}: {body}");
            assert_eq!(error_of(&body).0, "unauthenticated");
        }
    }
    let logs = server.ok(&["fn", "logs", "--name", "closed", "-o", "json"]);
    assert_eq!(logs.trim(), "[]", "{logs}");
    assert_eq!(call("/fn/closed/x", Some(&viewer)).0, 403);
    assert_eq!(call("/fn/closed/x", Some(&other)).0, 404);

    // An invoker of its namespace gets through, and the function does not
    // see the token; an admin too.
    for token in [&invoker, &server.token] {
        let (status, body) = call("/fn/closed/x", Some(token));
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(token.as_str()), "{body}");
        assert!(
            !body.to_ascii_lowercase().contains("authorization"),
            "{body}"
        );
        assert_eq!(call("/door", Some(token)).0, 200);
        assert_eq!(call("/async/fn/closed/x", Some(token)).0, 202);
    }

    // A function open to anyone gets the header as sent: it is its own.
    let (status, body) = call("/fn/open/x", Some(&invoker));
    assert_eq!(status, 200);
    assert!(body.contains(&invoker), "{body}");

    // Closing and opening again takes effect when the update returns.
    server.ok(&["fn", "update", "--name", "open", "--auth", "token"]);
    assert_eq!(call("/fn/open/x", None).0, 401);
    server.ok(&["fn", "update", "--name", "open", "--auth", "none"]);
    assert_eq!(call("/fn/open/x", None).0, 200);
}

#[test]
fn the_audit_trail_says_who_changed_what_allowed_or_not() {
    let server = Server::start();
    let developer = token(&server, "dev", "developer", &[]);
    let viewer = token(&server, "view", "viewer", &[]);
    server.create("echo", "echo", &[]);
    assert!(
        server
            .cli_as(
                &developer,
                &["fn", "update", "--name", "echo", "--memory", "64"]
            )
            .status
            .success()
    );
    assert!(
        !server
            .cli_as(&viewer, &["fn", "delete", "--name", "echo"])
            .status
            .success()
    );
    assert!(
        !server
            .cli_as("", &["env", "delete", "--name", "python"])
            .status
            .success()
    );
    server.ok(&["ns", "create", "team-a"]);
    server.create("echo", "echo", &["-n", "team-a"]);
    // Reads and invocations are not changes.
    server.ok(&["fn", "list"]);
    server.ok(&["fn", "test", "--name", "echo"]);

    let entries: serde_json::Value =
        serde_json::from_str(&server.ok(&["audit", "--since", "1h", "-o", "json"])).unwrap();
    let seen: Vec<(String, String, String, u64, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["token"].as_str().unwrap().to_string(),
                e["method"].as_str().unwrap().to_string(),
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_u64().unwrap(),
                e["namespace"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected = [
        ("admin", "POST", "/v1/tokens", 201, ""),
        ("admin", "POST", "/v1/tokens", 201, ""),
        ("admin", "POST", "/v1/functions", 201, "default"),
        ("dev", "PUT", "/v1/functions/echo", 200, "default"),
        ("view", "DELETE", "/v1/functions/echo", 403, "default"),
        // The request without a token is not there: nobody to name, and
        // anyone could fill the trail with them.
        ("admin", "POST", "/v1/namespaces", 201, ""),
        ("admin", "POST", "/v1/functions", 201, "team-a"),
    ]
    .map(|(t, m, p, s, n)| {
        (
            t.to_string(),
            m.to_string(),
            p.to_string(),
            s,
            n.to_string(),
        )
    });
    assert_eq!(seen, expected);
    let table = server.ok(&["audit"]);
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.lines().any(|l| l.contains(" view ")
            && l.contains(" default ")
            && l.contains("/v1/functions/echo")
            && l.ends_with("403")),
        "the refused delete is not in the table: {table}"
    );

    // Only an admin reads it; bad input is refused.
    let refused = server.cli_as(&developer, &["audit"]);
    assert!(!refused.status.success());
    let bad = server.fails(&["audit", "--since", "yesterday"]);
    assert!(bad.contains("neither a duration"), "{bad}");
    let bad = server.fails(&["audit", "--limit", "0"]);
    assert!(bad.contains("limit must be"), "{bad}");
}

#[test]
fn tls_on_both_ports_with_a_certificate_the_test_makes() {
    let dir = tempfile::tempdir().unwrap();
    let made =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.key_pair.serialize_pem()).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

    let mut server = Server::start_with(&["--tls-cert", cert, "--tls-key", key]);
    assert!(server.router.starts_with("https://"), "{}", server.router);
    assert!(server.api.starts_with("https://"), "{}", server.api);

    // The CLI without the certificate: refused, and it says why.
    let refused = server.cli(&["fn", "list"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    server.cli_env.push(("FLARE_CA_CERT".into(), cert.into()));
    server.create("hello", "hello_rust", &[]);

    let trusting = reqwest::blocking::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(made.cert.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // A client that connects and never says a word holds only itself.
    let _silent =
        std::net::TcpStream::connect(server.router.trim_start_matches("https://")).unwrap();
    let hello = trusting
        .get(format!("{}/fn/hello", server.router))
        .send()
        .unwrap();
    assert_eq!(hello.status(), 200);
    let me = trusting
        .get(format!("{}/v1/whoami", server.api))
        .bearer_auth(&server.token)
        .send()
        .unwrap();
    assert_eq!(me.status(), 200);
    // Plain HTTP to a TLS port, and a client trusting nothing of ours.
    let plain = server.router.replace("https://", "http://");
    let answer = http().get(format!("{plain}/fn/hello")).send();
    assert!(answer.is_err() || answer.unwrap().status() != 200);
    assert!(
        http()
            .get(format!("{}/fn/hello", server.router))
            .send()
            .is_err()
    );

    // login keeps the CA file with the context.
    let config = tempfile::tempdir().unwrap();
    let flare = |args: &[&str]| own_cli(config.path(), args);
    let login = flare(&[
        "login",
        "--api",
        &server.api,
        "--token",
        &server.token,
        "--ca-cert",
        cert,
    ]);
    assert!(
        login.status.success(),
        "{}",
        String::from_utf8_lossy(&login.stderr)
    );
    let listed = flare(&["fn", "list"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains("hello"));

    // Half a TLS setting or a key that is not one: the server says so.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["server", "--tls-cert", cert, "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
    let bad_key = dir.path().join("bad.pem");
    std::fs::write(&bad_key, "not a key").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args([
            "server",
            "--addr",
            "127.0.0.1:0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--tls-cert",
            cert,
            "--tls-key",
            bad_key.to_str().unwrap(),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read a private key"), "{stderr}");
}

#[test]
fn namespaces_keep_teams_apart_within_their_quotas() {
    let server = Server::start();
    let hello = common::guest("hello_rust");
    let hello = hello.to_str().unwrap();
    server.ok(&[
        "ns",
        "create",
        "team-a",
        "--max-functions",
        "2",
        "--max-memory",
        "256",
        "--max-minscale",
        "1",
    ]);
    server.ok(&["ns", "create", "team-b"]);
    let dev_a = token(&server, "dev-a", "developer", &["-n", "team-a"]);
    let dev_b = token(&server, "dev-b", "developer", &["-n", "team-b"]);
    let as_a = |args: &[&str]| server.cli_as(&dev_a, args);
    let ok = |out: std::process::Output| {
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let refused = |out: std::process::Output| {
        assert!(
            !out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    };

    // The same name in two namespaces: two functions, two URLs.
    ok(as_a(&[
        "-n", "team-a", "fn", "create", "--name", "api", "--code", hello,
    ]));
    server.create("api", "echo", &[]);
    let served = |path: &str| server.get(path).status().as_u16();
    assert_eq!(served("/fn/api.team-a"), 200);
    assert_eq!(served("/fn/api.default/x"), 200);
    let echoed = server.get("/fn/api/x").text().unwrap();
    assert!(
        echoed.contains("\"path\""),
        "default's api is the echo: {echoed}"
    );
    assert_eq!(served("/fn/api.team-b"), 404);

    // A token sees only its namespace: lists are refused, names not found.
    let listed = ok(as_a(&["-n", "team-a", "fn", "list"]));
    assert!(listed.contains("api.team-a"), "{listed}");
    assert!(refused(as_a(&["fn", "list"])).contains("bound to namespace \"team-a\""));
    assert!(refused(as_a(&["fn", "get", "--name", "api"])).contains("not found"));
    let other = server.cli_as(&dev_b, &["-n", "team-a", "fn", "get", "--name", "api"]);
    assert!(refused(other).contains("not found"));
    let every = server.ok(&["-n", "*", "fn", "list", "-o", "json"]);
    assert_eq!(
        every.matches("\"kind\": \"Function\"").count(),
        2,
        "{every}"
    );
    assert!(refused(as_a(&["-n", "*", "fn", "list"])).contains("bound to namespace"));

    // Quotas: refused with the reason, nothing stored.
    ok(as_a(&[
        "-n", "team-a", "fn", "create", "--name", "two", "--code", hello,
    ]));
    let over = refused(as_a(&[
        "-n", "team-a", "fn", "create", "--name", "three", "--code", hello,
    ]));
    assert!(over.contains("may hold 2 functions"), "{over}");
    let big = refused(as_a(&[
        "-n", "team-a", "fn", "update", "--name", "two", "--memory", "512",
    ]));
    assert!(big.contains("512 MiB"), "{big}");
    let warm = refused(as_a(&[
        "-n",
        "team-a",
        "fn",
        "update",
        "--name",
        "two",
        "--minscale",
        "2",
    ]));
    assert!(warm.contains("instances warm"), "{warm}");
    let kept: serde_json::Value = serde_json::from_str(&ok(as_a(&[
        "-n", "team-a", "fn", "get", "--name", "two", "-o", "json",
    ])))
    .unwrap();
    assert_eq!(kept["metadata"]["generation"], 1, "{kept}");
    assert_eq!(
        ok(as_a(&["-n", "team-a", "fn", "list", "-o", "json"]))
            .matches("\"kind\"")
            .count(),
        2
    );

    // Routes are global; triggers run functions of their own namespace.
    ok(as_a(&[
        "-n",
        "team-a",
        "ht",
        "create",
        "--name",
        "r",
        "--url",
        "/shared",
        "--function",
        "api",
    ]));
    assert_eq!(served("/shared"), 200);
    let clash = server.fails(&[
        "ht",
        "create",
        "--name",
        "r",
        "--url",
        "/shared",
        "--function",
        "api",
    ]);
    assert!(
        clash.contains("clashes with http trigger \"r.team-a\""),
        "{clash}"
    );
    let elsewhere = refused(server.cli_as(
        &dev_b,
        &[
            "-n",
            "team-b",
            "ht",
            "create",
            "--name",
            "s",
            "--url",
            "/b",
            "--function",
            "api",
        ],
    ));
    assert!(
        elsewhere.contains("does not exist in namespace \"team-b\""),
        "{elsewhere}"
    );

    // Asynchronous invocations and their records stay in the namespace.
    let queued = http()
        .post(format!("{}/async/fn/api.team-a", server.router))
        .send()
        .unwrap();
    assert_eq!(queued.status(), 202);
    let mine = ok(as_a(&["-n", "team-a", "invocations", "list", "-o", "json"]));
    assert!(mine.contains("api.team-a"), "{mine}");
    let theirs = server.ok(&["invocations", "list", "-o", "json"]);
    assert!(!theirs.contains("api.team-a"), "{theirs}");

    // Bad input: clear errors, nothing stored.
    let bad = server.fails(&["ns", "create", "Team"]);
    assert!(bad.contains("invalid namespace name"), "{bad}");
    assert!(
        server
            .fails(&["ns", "create", "team-a"])
            .contains("already exists")
    );
    let nowhere = server.fails(&["-n", "nope", "fn", "create", "--name", "x", "--code", hello]);
    assert!(
        nowhere.contains("namespace \"nope\" does not exist"),
        "{nowhere}"
    );
    // Refused before its code is read: the code is read (and dropped)
    // anyway, so the client sees the reason, not a broken connection.
    let ghost = server.fails(&["fn", "update", "--name", "ghost", "--code", hello]);
    assert!(ghost.contains("function \"ghost\" not found"), "{ghost}");
    let doc = r#"{"apiVersion":"flare.dev/v1","kind":"HttpTrigger","metadata":{"name":"t","namespace":"team-b"},"spec":{"path":"/t","function":"api"}}"#;
    let mixed = server
        .api_client()
        .post(format!("{}/v1/httptriggers?namespace=team-a", server.api))
        .header("content-type", "application/json")
        .body(doc)
        .send()
        .unwrap();
    assert_eq!(mixed.status(), 400);
    assert!(
        error_of(&mixed.text().unwrap())
            .1
            .contains("the request is for \"team-a\"")
    );
    for (path, body, why) in [
        (
            "/v1/namespaces",
            r#"{"kind":"Namespace","metadata":{"name":"arr"},"spec":[null,null]}"#,
            "spec must be an object",
        ),
        (
            "/v1/httptriggers?namespace=*",
            r#"{"kind":"HttpTrigger","metadata":{"name":"t"},"spec":{"path":"/t","function":"api"}}"#,
            "namespace * is for listing",
        ),
    ] {
        let response = server
            .api_client()
            .post(format!("{}{path}", server.api))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let (_, message) = error_of(&response.text().unwrap());
        assert!(message.contains(why), "{path}: {message}");
    }
    assert!(!server.ok(&["ns", "list"]).contains("arr"));
    assert!(
        server
            .fails(&["ns", "delete", "default"])
            .contains("always exists")
    );
    assert!(refused(as_a(&["ns", "create", "team-c"])).contains("admin only"));

    // A namespace goes only when nothing lives in it or is bound to it.
    server.ok(&[
        "-n",
        "team-a",
        "secret",
        "create",
        "--name",
        "k",
        "--from-literal",
        "K=v",
    ]);
    let held = server.fails(&["ns", "delete", "team-a"]);
    assert!(
        held.contains("function api") && held.contains("token dev-a") && held.contains("secret k"),
        "{held}"
    );
    server.ok(&["-n", "team-a", "secret", "delete", "--name", "k"]);
    server.ok(&["-n", "team-a", "ht", "delete", "--name", "r"]);
    server.ok(&["-n", "team-a", "fn", "delete", "--name", "api"]);
    server.ok(&["-n", "team-a", "fn", "delete", "--name", "two"]);
    server.ok(&["token", "revoke", "--name", "dev-a"]);
    server.ok(&["ns", "delete", "team-a"]);
    assert_eq!(served("/fn/api.team-a"), 404);
    // Made again (for another team, say), it holds nothing of the old one:
    // no invocation records, no log lines.
    server.ok(&["ns", "create", "team-a"]);
    let records = server.ok(&["-n", "team-a", "invocations", "list", "-o", "json"]);
    assert_eq!(records.trim(), "[]", "{records}");
    let lines = server.ok(&["-n", "team-a", "fn", "logs", "--name", "api", "-o", "json"]);
    assert_eq!(lines.trim(), "[]", "{lines}");
    server.ok(&["ns", "delete", "team-a"]);
    let names = server.ok(&["ns", "list"]);
    assert!(names.contains("default") && names.contains("team-b") && !names.contains("team-a"));
}

/// The store's tables as Flare wrote them before tokens and namespaces
/// (commit e6675c1), frozen here: an upgrade must start from these.
const SCHEMA_BEFORE_ACCESS: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 2);
CREATE TABLE resources (
    kind TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    generation INTEGER NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE logs (
    id INTEGER PRIMARY KEY, ts_us INTEGER NOT NULL, function TEXT NOT NULL,
    invocation TEXT NOT NULL, stream TEXT NOT NULL, line TEXT NOT NULL
);
CREATE INDEX logs_by_function ON logs (function, ts_us);
CREATE INDEX logs_by_invocation ON logs (invocation);
CREATE TABLE invocations (
    id TEXT PRIMARY KEY, function TEXT NOT NULL, status TEXT NOT NULL,
    request TEXT NOT NULL, body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_us INTEGER NOT NULL, created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
    result_status INTEGER, result_body BLOB, error TEXT
);
CREATE INDEX invocations_due ON invocations (status, next_attempt_us);
";

#[test]
fn a_data_dir_from_before_tokens_starts_with_everything_in_default() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    // The package, where that Flare kept it.
    let wasm = std::fs::read(common::guest("hello_rust")).unwrap();
    let hex = hex::encode(sha2::Sha256::digest(&wasm));
    std::fs::create_dir_all(dir.path().join("packages")).unwrap();
    std::fs::write(dir.path().join(format!("packages/sha256-{hex}")), &wasm).unwrap();
    // A function and a trigger, as documents of that day.
    let db = rusqlite::Connection::open(dir.path().join("flare.db")).unwrap();
    db.execute_batch(SCHEMA_BEFORE_ACCESS).unwrap();
    let function = serde_json::json!({
        "apiVersion": "flare.dev/v1", "kind": "Function",
        "metadata": {"name": "old", "namespace": "default", "uid": "u1", "generation": 1,
                     "created_at": "2026-11-01T00:00:00Z"},
        "spec": {"runtime": "wasm", "package": {"digest": format!("sha256:{hex}"), "size": wasm.len()}}
    });
    let trigger = serde_json::json!({
        "apiVersion": "flare.dev/v1", "kind": "HttpTrigger",
        "metadata": {"name": "legacy", "namespace": "default", "uid": "u2", "generation": 1,
                     "created_at": "2026-11-01T00:00:00Z"},
        "spec": {"path": "/legacy", "function": "old"}
    });
    for (kind, name, doc) in [
        ("Function", "old", &function),
        ("HttpTrigger", "legacy", &trigger),
    ] {
        db.execute(
            "INSERT INTO resources VALUES (?1, 'default', ?2, 1, ?3)",
            rusqlite::params![kind, name, doc.to_string()],
        )
        .unwrap();
    }
    drop(db);
    assert!(!dir.path().join("admin.token").exists());

    let server = Server::start_in(dir.path(), &[]);
    assert!(server.token.starts_with("flr_"), "an admin token was made");
    assert_eq!(server.get("/fn/old").status(), 200);
    assert_eq!(server.get("/fn/old.default").status(), 200);
    assert_eq!(server.get("/legacy").status(), 200);
    let old: serde_json::Value =
        serde_json::from_str(&server.ok(&["fn", "get", "--name", "old", "-o", "json"])).unwrap();
    assert_eq!(old["metadata"]["namespace"], "default");
    assert_eq!(old["metadata"]["generation"], 1);
    assert!(server.ok(&["ns", "list"]).contains("default"));
    assert!(server.ok(&["ht", "list"]).contains("legacy"));
    // Without the token, nothing of it is readable.
    let refused = http()
        .get(format!("{}/v1/functions", server.api))
        .send()
        .unwrap();
    assert_eq!(refused.status(), 401);
}

#[test]
fn secrets_reach_functions_and_nothing_else() {
    let server = Server::start();
    let value = format!("s3cret-{}", std::process::id());
    let mode = format!("prod-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("tls.key");
    std::fs::write(&key_file, b"\x00\xffbinary key").unwrap();
    server.ok(&[
        "secret",
        "create",
        "--name",
        "db",
        "--from-literal",
        &format!("PASSWORD={value}"),
        "--from-file",
        key_file.to_str().unwrap(),
    ]);
    server.ok(&[
        "config",
        "create",
        "--name",
        "app",
        "--from-literal",
        &format!("MODE={mode}"),
    ]);
    server.python_env("1");
    server.create_python(
        "py",
        "secrets.py",
        &["--secret", "db", "--config", "app", "--env", "PLAIN=1"],
    );
    server.create("wasm", "misbehave", &["--secret", "db", "--config", "app"]);

    // Delivered: environment variables (wasm and process), files (process).
    let env = |name: &str| -> serde_json::Value {
        server
            .get(&format!("/fn/py/env?name={name}"))
            .json()
            .unwrap()
    };
    assert_eq!(env("PASSWORD")["value"], value.as_str());
    assert_eq!(env("MODE")["value"], mode.as_str());
    // The function's own variables reach process functions too.
    assert_eq!(env("PLAIN")["value"], "1");
    let file: serde_json::Value = server
        .get("/fn/py/file?path=/secrets/db/tls.key")
        .json()
        .unwrap();
    assert_eq!(file["hex"], hex::encode(b"\x00\xffbinary key"));
    assert_eq!(file["mode"], "0o400");
    let file: serde_json::Value = server
        .get("/fn/py/file?path=/secrets/db/PASSWORD")
        .json()
        .unwrap();
    assert_eq!(file["hex"], hex::encode(value.as_bytes()));
    let wasm_env = server.get("/fn/wasm/env").text().unwrap();
    assert!(
        wasm_env.contains(&format!("PASSWORD={value}")),
        "{wasm_env}"
    );
    assert!(wasm_env.contains(&format!("MODE={mode}")), "{wasm_env}");
    // And through wasi:config/store: every text value, by key.
    let got = server.get("/fn/wasm/config?key=PASSWORD").text().unwrap();
    assert_eq!(got, format!("Ok(Some({value:?}))"));
    let all = server.get("/fn/wasm/config").text().unwrap();
    assert_eq!(
        all,
        format!("MODE={mode}\nPASSWORD={value}"),
        "binary tls.key is not text"
    );

    // Changed: new instances see the new value once the update returns.
    let newer = format!("{value}-2");
    server.ok(&[
        "secret",
        "update",
        "--name",
        "db",
        "--from-literal",
        &format!("PASSWORD={newer}"),
    ]);
    eventually(Duration::from_secs(20), || {
        (env("PASSWORD")["value"] == newer.as_str()).then_some(())
    });
    let gone = server.get("/fn/py/file?path=/secrets/db/tls.key");
    let status = gone.status();
    assert_eq!(status, 500, "a key dropped by the update stays gone");

    // Shown: keys only, by the CLI and every API answer.
    let shown = server.ok(&["secret", "get", "--name", "db", "-o", "json"]);
    assert!(
        shown.contains("PASSWORD") && !shown.contains(&newer),
        "{shown}"
    );
    for path in [
        "/v1/secrets",
        "/v1/secrets/db",
        "/v1/configs",
        "/v1/configs/app",
        "/v1/functions/py",
        "/v1/functions",
        "/v1/audit",
    ] {
        let body = server
            .api_client()
            .get(format!("{}{path}", server.api))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            !body.contains(&value) && !body.contains(&newer),
            "{path}: {body}"
        );
    }
    // Not in logs, invocation records or error bodies either.
    let failed = server.get("/fn/py/fail");
    assert_eq!(failed.status(), 500);
    assert!(!failed.text().unwrap().contains(&newer));
    // A queued call of a function that uses the secret (and does not
    // print it): its record holds no value.
    let queued = http()
        .post(format!("{}/async/fn/py/", server.router))
        .header("authorization", "Bearer not-a-flare-token")
        .send()
        .unwrap();
    let id = queued.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let record = eventually(Duration::from_secs(30), || {
        let record = server.ok(&["invocations", "get", "--id", &id, "-o", "json"]);
        record.contains("succeeded").then_some(record)
    });
    assert!(
        !record.contains(&value) && !record.contains(&newer),
        "{record}"
    );
    assert!(!record.contains("not-a-flare-token"), "{record}");
    for name in ["py", "wasm"] {
        let logs = server.ok(&["fn", "logs", "--name", name, "-o", "json"]);
        assert!(!logs.contains(&value) && !logs.contains(&newer), "{logs}");
    }
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            stored.extend(std::fs::read(&path).unwrap());
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        !stored.contains(&value) && !stored.contains(&newer),
        "a value is stored in clear"
    );

    // Bad input: clear errors, nothing stored.
    let unknown = server.fails(&["fn", "update", "--name", "py", "--secret", "nope"]);
    assert!(
        unknown.contains("secret \"nope\" does not exist"),
        "{unknown}"
    );
    let unknown = server.fails(&["fn", "update", "--name", "py", "--config", "nope"]);
    assert!(
        unknown.contains("config \"nope\" does not exist"),
        "{unknown}"
    );
    let bad = server.fails(&["secret", "create", "--name", "x", "--from-literal", "a/b=1"]);
    assert!(bad.contains("invalid secret key"), "{bad}");
    let bad = server.fails(&["secret", "create", "--name", "x"]);
    assert!(bad.contains("--from-literal"), "{bad}");
    let used = server.fails(&["secret", "delete", "--name", "db"]);
    assert!(used.contains("used by function(s) py, wasm"), "{used}");
    let raw = server
        .api_client()
        .post(format!("{}/v1/secrets", server.api))
        .header("content-type", "application/json")
        .body(r#"{"metadata":{"name":"raw"},"data":{"K":"not base64!"}}"#)
        .send()
        .unwrap();
    assert_eq!(raw.status(), 400);
    let listed = server.ok(&["secret", "list"]);
    assert!(
        !listed.contains("raw") && !listed.contains(" x "),
        "{listed}"
    );
    // Another namespace's function cannot name this namespace's secret.
    server.ok(&["ns", "create", "team-a"]);
    let elsewhere = server.fails(&[
        "-n",
        "team-a",
        "fn",
        "create",
        "--name",
        "w",
        "--code",
        common::guest("misbehave").to_str().unwrap(),
        "--secret",
        "db",
    ]);
    assert!(
        elsewhere.contains("does not exist in namespace \"team-a\""),
        "{elsewhere}"
    );
}
