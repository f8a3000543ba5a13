//! A real `flare server` on port 0, driven through the CLI and HTTP.
#![allow(dead_code)]

pub mod kafka;
pub mod nats;
pub mod walls;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn guest(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/build-guests.sh",
        path.display()
    );
    path
}

pub struct Server {
    child: Option<Child>,
    pub router: String,
    pub api: String,
    pub data_dir: PathBuf,
    /// The admin token the first start wrote.
    pub token: String,
    /// The CLI's own config home (contexts), apart from the user's.
    pub config_home: PathBuf,
    /// More environment for every CLI run (FLARE_CA_CERT, say).
    pub cli_env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server on a fresh data dir.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut server = Server::start_in(tmp.path(), &[]);
        server._tmp = Some(tmp);
        server
    }

    pub fn start_with(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut server = Server::start_in(tmp.path(), args);
        server._tmp = Some(tmp);
        server
    }

    /// [`Server::start_with`] with these environment variables set.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().unwrap();
        let mut server = Server::start_in_env(tmp.path(), args, env);
        server._tmp = Some(tmp);
        server
    }

    /// A server on `data_dir`, which outlives it.
    pub fn start_in(data_dir: &Path, extra: &[&str]) -> Server {
        Server::start_in_env(data_dir, extra, &[])
    }

    /// [`Server::start_in`] with these environment variables set.
    pub fn start_in_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flare"))
            .args([
                "server",
                "--addr",
                "127.0.0.1:0",
                "--api-addr",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .env("FLARE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flare server");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut address = |prefix: &str| {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            line.strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {line:?}"))
                .to_string()
        };
        let router = address("router listening on ");
        let api = address("api listening on ");
        let token = match std::fs::read_to_string(data_dir.join("admin.token")) {
            Ok(token) => token.trim().to_string(),
            Err(e) => {
                // Not left running behind a failed test.
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server wrote no admin token: {e}");
            }
        };
        let config_home = data_dir.join("cli-config");
        Server {
            child: Some(child),
            router,
            api,
            data_dir: data_dir.to_path_buf(),
            token,
            config_home,
            cli_env: Vec::new(),
            _tmp: None,
        }
    }

    /// Package blobs stored (uploads in progress left out).
    pub fn blobs(&self) -> usize {
        std::fs::read_dir(self.data_dir.join("packages"))
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().starts_with("sha256-")
            })
            .count()
    }

    /// Runs the CLI against this server with the admin token.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_as(&self.token, args)
    }

    /// Runs the CLI against this server with `token` ("" for none).
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flare"));
        command
            .args(args)
            .env("FLARE_API", &self.api)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("FLARE_TOKEN")
            .envs(self.cli_env.iter().map(|(k, v)| (k, v)));
        if !token.is_empty() {
            command.env("FLARE_TOKEN", token);
        }
        command.output().expect("run flare")
    }

    /// Runs the CLI in `dir`, as the admin.
    pub fn cli_in(&self, dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flare"))
            .args(args)
            .current_dir(dir)
            .env("FLARE_API", &self.api)
            .env("FLARE_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .output()
            .expect("run flare")
    }

    /// Runs the CLI in `dir` and insists that it succeeds; returns stdout.
    pub fn ok_in(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.cli_in(dir, args);
        assert!(
            out.status.success(),
            "flare {args:?} in {} failed: {}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Uploads `guest`'s component as a package no function refers to.
    pub fn upload_unused(&self, guest_name: &str) -> reqwest::blocking::Response {
        let bytes = std::fs::read(guest(guest_name)).unwrap();
        self.api_client()
            .post(format!("{}/v1/packages", self.api))
            .body(bytes)
            .send()
            .unwrap()
    }

    /// An HTTP client that sends the admin token: for the API.
    pub fn api_client(&self) -> reqwest::blocking::Client {
        client_with_token(&self.token)
    }

    /// Runs the CLI and insists that it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "flare {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI and insists that it fails; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "flare {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn create(&self, name: &str, guest_name: &str, extra: &[&str]) {
        let code = guest(guest_name);
        let mut args = vec![
            "fn",
            "create",
            "--name",
            name,
            "--code",
            code.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// Creates the `python` environment with `poolsize` pooled workers.
    pub fn python_env(&self, poolsize: &str) {
        self.environment("python", poolsize);
    }

    /// Creates the environment of `runtime`, named after it, with
    /// `poolsize` pooled workers.
    pub fn environment(&self, runtime: &str, poolsize: &str) {
        self.ok(&[
            "env",
            "create",
            "--name",
            runtime,
            "--runtime",
            runtime,
            "--poolsize",
            poolsize,
        ]);
    }

    /// Creates a Python function from a file of tests/functions.
    pub fn create_python(&self, name: &str, file: &str, extra: &[&str]) {
        self.create_in("python", name, &function_file(file), extra);
    }

    /// Creates a function of environment `env` from the package at `code`.
    pub fn create_in(&self, env: &str, name: &str, code: &Path, extra: &[&str]) {
        let mut args = vec![
            "fn",
            "create",
            "--name",
            name,
            "--env",
            env,
            "--code",
            code.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        http().get(format!("{}{path}", self.router)).send().unwrap()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Kills the server without a chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// An HTTP client that sends `token` as its bearer.
pub fn client_with_token(token: &str) -> reqwest::blocking::Client {
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    value.set_sensitive(true);
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(
            [(reqwest::header::AUTHORIZATION, value)]
                .into_iter()
                .collect(),
        )
        .build()
        .unwrap()
}

/// The `error` object of a Flare JSON error body.
pub fn error_of(body: &str) -> (String, String) {
    let value: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body}"));
    (
        value["error"]["code"].as_str().unwrap().to_string(),
        value["error"]["message"].as_str().unwrap().to_string(),
    )
}

/// [`eventually`], saying `state()` (what was last seen) when the time
/// is up.
pub fn eventually_or<T>(
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    state: impl Fn() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}; last seen: {}",
            state()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `check` until it returns Some, for at most `limit`.
pub fn eventually<T>(limit: Duration, check: impl FnMut() -> Option<T>) -> T {
    eventually_or(limit, check, || "nothing recorded".into())
}

/// Builds a jar with examples/java/build.sh: `src` compiled against
/// Flare's Java API, `handler` named in its manifest.
pub fn jar(dir: &Path, name: &str, src: Option<&str>, handler: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = dir.join(name);
    let mut build = Command::new(root.join("examples/java/build.sh"));
    build.arg(&out);
    if let Some(src) = src {
        build.arg(root.join(src)).arg(handler);
    }
    let built = build.output().unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// A source file of tests/functions.
pub fn function_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/functions")
        .join(name)
}

/// A plain HTTP server of the test's own on loopback, answering "ok" to
/// every request until the test ends.
pub fn http_ok_server() -> String {
    http_ok_server_on("127.0.0.1")
}

/// [`http_ok_server`] on another loopback address (127.0.0.0/8 is all
/// loopback; inside a sandbox, 127.0.0.1 is the sandbox's own).
pub fn http_ok_server_on(ip: &str) -> String {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n",
            );
        }
    });
    addr
}

/// redis-cli `args` against the machine's Redis (scripts/services.sh
/// starts it); its output.
pub fn redis(args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(args)
        .output()
        .expect("redis-cli");
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Takes messages from the durable AMQP queue `queue` (declaring it),
/// acknowledging each, until `done` says it has them all; their texts,
/// in arrival order. Each wait for the next is bounded (60 s).
pub async fn amqp_take(
    channel: &lapin::Channel,
    queue: &str,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    use futures::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            {
                static TAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = TAKES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("test-{}-{n}", std::process::id()).as_str().into()
            },
            BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while !done(&got) {
        let delivery = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("answers arrive")
            .unwrap()
            .unwrap();
        got.push(String::from_utf8(delivery.data.clone()).unwrap());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // The next take on this channel consumes afresh.
    let _ = channel
        .basic_cancel(
            consumer.tag(),
            lapin::options::BasicCancelOptions::default(),
        )
        .await;
    got
}

/// Publishes `text` through AMQP `exchange` ("" for the default one, where
/// the routing key is the queue) and waits for the broker's confirmation.
pub async fn amqp_publish(channel: &lapin::Channel, exchange: &str, routing_key: &str, text: &str) {
    channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            lapin::options::BasicPublishOptions::default(),
            text.as_bytes(),
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A channel to the machine's RabbitMQ (scripts/services.sh starts it),
/// with the connection that must outlive it.
pub async fn amqp_channel() -> (lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(
        "amqp://127.0.0.1:5672/%2f",
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}
