//! Cluster mode's ground: NATS JetStream servers of the test's own (a
//! modern nats-server on free loopback ports, see common/nats.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use common::nats::NatsCluster;

/// Retries `attempt` until it succeeds or `limit` passes (a cluster
/// elects new leaders after a server dies).
async fn within<T, E: std::fmt::Debug, F, Fut>(limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => panic!("gave up after {limit:?}: {e:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[test]
fn the_test_cluster_keeps_a_three_replica_bucket_through_a_kill() {
    let mut cluster = NatsCluster::start(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream_of(&cluster, &runtime);
    let bucket = runtime.block_on(async {
        within(Duration::from_secs(20), || {
            js.create_key_value(kv::Config {
                bucket: "probe".into(),
                num_replicas: 3,
                ..Default::default()
            })
        })
        .await
    });
    runtime.block_on(bucket.put("before", "1".into())).unwrap();

    // kill -9 of one server: what was acknowledged is still there, and
    // writes go on once the bucket has a leader again.
    cluster.kill(0);
    runtime.block_on(async {
        let got = within(Duration::from_secs(20), || bucket.get("before")).await;
        assert_eq!(got.as_deref(), Some(&b"1"[..]));
        within(Duration::from_secs(20), || bucket.put("after", "2".into())).await;
    });
    cluster.restart(0);
    let got = runtime.block_on(bucket.get("after")).unwrap();
    assert_eq!(got.as_deref(), Some(&b"2"[..]));
}

/// The node names `flare node list` shows on `server`.
fn node_names(server: &common::Server) -> Vec<String> {
    let out = server.ok(&["node", "list", "-o", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    nodes
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect()
}

/// A secrets key file (32 bytes, 0600) in `dir`, as an operator makes one.
fn secrets_key(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("secrets.key");
    std::fs::write(&path, [42u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

/// The flags of cluster node `name`.
fn node_flags(cluster: &NatsCluster, name: &str, key: &str) -> Vec<String> {
    [
        "--cluster",
        &cluster.urls(),
        "--node-name",
        name,
        "--secrets-key",
        key,
    ]
    .map(String::from)
    .to_vec()
}

/// Nodes a, b and c of `cluster`, sharing one secrets key; the directory
/// holds the key and b's and c's data dirs.
fn three_nodes(
    cluster: &NatsCluster,
) -> (
    tempfile::TempDir,
    String,
    common::Server,
    common::Server,
    common::Server,
) {
    let keys = tempfile::tempdir().unwrap();
    let key = secrets_key(keys.path());
    let a = node(cluster, "a", &key);
    let b = next_node(cluster, "b", &key, &a, &keys.path().join("b"));
    let c = next_node(cluster, "c", &key, &a, &keys.path().join("c"));
    (keys, key, a, b, c)
}

/// The first node of a cluster (it makes the cluster's admin token).
fn node(cluster: &NatsCluster, name: &str, key: &str) -> common::Server {
    let flags = node_flags(cluster, name, key);
    common::Server::start_with(&flags.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn nodes_find_each_other_and_a_dead_one_leaves_the_list() {
    let cluster = NatsCluster::start(3);
    let (_keys, _, a, mut b, c) = three_nodes(&cluster);
    common::eventually(Duration::from_secs(10), || {
        (node_names(&a) == ["a", "b", "c"]).then_some(())
    });
    let out = a.ok(&["node", "list", "-o", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(nodes[1]["address"], b.router.as_str(), "{out}");
    assert_eq!(nodes[1]["api"], b.api.as_str(), "{out}");
    let table = c.ok(&["node", "list"]);
    assert!(table.starts_with("NAME"), "{table}");

    // kill -9: no goodbye; its heartbeats stop and the bucket drops it
    // within the node TTL (10 s).
    b.kill9();
    let killed = Instant::now();
    common::eventually(Duration::from_secs(20), || {
        (node_names(&a) == ["a", "c"]).then_some(())
    });
    let gone = killed.elapsed();
    assert!(
        gone >= Duration::from_secs(5),
        "gone after {gone:?}: it cannot have expired yet"
    );

    // A clean stop says goodbye: gone at once, not after the TTL.
    let pid = c.pid().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stopped = Instant::now();
    common::eventually(Duration::from_secs(20), || {
        (node_names(&a) == ["a"]).then_some(())
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "a stopped node left after {:?}",
        stopped.elapsed()
    );
}

#[test]
fn a_node_alone_lists_itself() {
    let server = common::Server::start();
    let out = server.ok(&["node", "list", "-o", "json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(nodes.len(), 1, "{out}");
    assert_eq!(nodes[0]["name"], "local");
    assert_eq!(nodes[0]["address"], server.router.as_str());
}

/// `flare server` with `args` on a fresh data dir, which must fail: its
/// stderr, and whether it left the data dir untouched.
fn failed_start(args: &[&str]) -> (String, bool) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flare"));
    command.args([
        "server",
        "--addr",
        "127.0.0.1:0",
        "--api-addr",
        "127.0.0.1:0",
        "--data-dir",
    ]);
    command.arg(&data).args(args);
    let out = command.output().unwrap();
    assert!(!out.status.success(), "the server started: {args:?}");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        !data.exists(),
    )
}

#[test]
fn an_unreachable_nats_or_a_bad_node_name_is_a_clear_error_and_nothing_starts() {
    let keys = tempfile::tempdir().unwrap();
    let key = secrets_key(keys.path());
    let url = format!("nats://127.0.0.1:{}", common::nats::free_port());
    let cluster = |url: &str, name: &str| {
        failed_start(&["--cluster", url, "--node-name", name, "--secrets-key", &key])
    };
    let (err, untouched) = cluster(&url, "a");
    assert!(
        err.contains(&format!("cannot reach NATS at {url}")),
        "{err}"
    );
    assert!(untouched, "the data dir was made");

    let (err, untouched) = cluster(&url, "Node_A");
    assert!(err.contains("invalid node name \"Node_A\""), "{err}");
    assert!(untouched);

    let (err, _) = cluster("nats://127.0.0.1:port", "a");
    assert!(err.contains("invalid NATS URL"), "{err}");

    let (err, _) = failed_start(&["--node-name", "a"]);
    assert!(err.contains("--cluster"), "{err}");

    // Every node must open what another sealed: one key file for all.
    let (err, untouched) = failed_start(&["--cluster", &url, "--node-name", "a"]);
    assert!(err.contains("cluster mode needs --secrets-key"), "{err}");
    assert!(untouched);
}

#[test]
fn a_secrets_key_file_must_be_32_private_bytes() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().unwrap();
    let short = keys.path().join("short.key");
    std::fs::write(&short, b"too short").unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (err, untouched) = failed_start(&["--secrets-key", short.to_str().unwrap()]);
    assert!(err.contains("holds 9 bytes, not 32"), "{err}");
    assert!(untouched, "the data dir was made");

    let open = keys.path().join("open.key");
    std::fs::write(&open, [1u8; 32]).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (err, _) = failed_start(&["--secrets-key", open.to_str().unwrap()]);
    assert!(err.contains("readable by others"), "{err}");

    let (err, _) = failed_start(&["--secrets-key", "/nonexistent/flare.key"]);
    assert!(
        err.contains("cannot read the secrets key /nonexistent/flare.key"),
        "{err}"
    );

    // A good one seals and opens: a function gets the secret's value.
    let good = secrets_key(keys.path());
    let server = common::Server::start_with(&["--secrets-key", &good]);
    server.ok(&[
        "secret",
        "create",
        "--name",
        "db",
        "--from-literal",
        "PASSWORD=v4lue",
    ]);
    server.create("wasm", "misbehave", &["--secret", "db"]);
    let env = server.get("/fn/wasm/env").text().unwrap();
    assert!(env.contains("PASSWORD=v4lue"), "{env}");
}

/// A resource document for the store tests.
fn doc(name: &str, spec: serde_json::Value) -> flare_model::Document {
    flare_model::Resource {
        api_version: flare_model::API_VERSION.into(),
        kind: flare_model::Kind::HttpTrigger,
        metadata: flare_model::Metadata::named(name),
        spec,
    }
}

/// A node's view of the cluster's store: its own NATS connection.
fn open_store(
    runtime: &tokio::runtime::Runtime,
    cluster: &NatsCluster,
) -> std::sync::Arc<flare_cluster::store::NatsStore> {
    runtime.block_on(async {
        let client = async_nats::connect(cluster.url(0)).await.unwrap();
        flare_cluster::store::NatsStore::open(jetstream::new(client), 1, &cluster.url(0))
            .await
            .unwrap()
    })
}

#[test]
fn the_nats_store_keeps_one_truth_for_every_node() {
    use flare_model::{ErrorCode, Kind};
    use flare_store::{Change, Store};
    use serde_json::json;

    let cluster = NatsCluster::start(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let a = open_store(&runtime, &cluster);
    let b = open_store(&runtime, &cluster);
    let mut b_events = b.watch();

    // Created on a: read back on a at once, and seen by b.
    let w = a.create(doc("api", json!({"v": 1}))).unwrap();
    assert_eq!(w.doc.metadata.generation, 1);
    assert_eq!(w.doc.metadata.uid.len(), 32);
    assert_eq!(
        a.get(Kind::HttpTrigger, "default", "api").unwrap().spec,
        json!({"v": 1})
    );
    let event = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), b_events.recv()).await })
        .unwrap()
        .unwrap();
    assert_eq!(event.revision, w.revision);
    assert!(matches!(event.change, Change::Put(_)));
    assert_eq!(
        b.get(Kind::HttpTrigger, "default", "api").unwrap().spec,
        json!({"v": 1})
    );
    assert_eq!(
        b.create(doc("api", json!({}))).unwrap_err().code,
        ErrorCode::AlreadyExists,
        "a name is taken cluster-wide"
    );

    // b updates from generation 1; a's update from the same generation is
    // now stale: a conflict, whichever node made the other write.
    let mut from_b = doc("api", json!({"v": 2}));
    from_b.metadata.generation = 1;
    let w2 = b.update(from_b).unwrap();
    assert_eq!(w2.doc.metadata.generation, 2);
    assert_eq!(w2.doc.metadata.uid, w.doc.metadata.uid);
    assert!(w2.revision > w.revision);
    let mut from_a = doc("api", json!({"v": 3}));
    from_a.metadata.generation = 1;
    assert_eq!(a.update(from_a).unwrap_err().code, ErrorCode::Conflict);
    common::eventually(Duration::from_secs(10), || {
        (a.get(Kind::HttpTrigger, "default", "api").ok()?.spec == json!({"v": 2})).then_some(())
    });

    // Lists are per kind, by namespace and name; state is shared.
    a.create(doc("aaa", json!({}))).unwrap();
    common::eventually(Duration::from_secs(10), || {
        let names: Vec<String> = b
            .list(Kind::HttpTrigger)
            .ok()?
            .into_iter()
            .map(|d| d.metadata.name)
            .collect();
        (names == ["aaa", "api"]).then_some(())
    });
    assert!(b.list(Kind::Function).unwrap().is_empty());
    a.put_state("timer:default/t", "2026-12-03T08:00:00Z")
        .unwrap();
    assert_eq!(
        b.get_state("timer:default/t").unwrap().as_deref(),
        Some("2026-12-03T08:00:00Z")
    );
    assert_eq!(b.get_state("nothing").unwrap(), None);
    // What must happen once (a timer's slot) is claimed by one node only.
    assert!(a.claim("timer:default/t@1796284800").unwrap());
    assert!(!b.claim("timer:default/t@1796284800").unwrap());
    assert!(!a.claim("timer:default/t@1796284800").unwrap());
    assert!(b.claim("timer:default/t@1796284860").unwrap());

    // Deleted on b: gone on a; a second delete finds nothing.
    let gone = b.delete(Kind::HttpTrigger, "default", "api").unwrap();
    assert_eq!(gone.doc.spec, json!({"v": 2}));
    common::eventually(Duration::from_secs(10), || {
        a.get(Kind::HttpTrigger, "default", "api")
            .is_err()
            .then_some(())
    });
    assert_eq!(
        a.delete(Kind::HttpTrigger, "default", "api")
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );

    // A node that joins later loads everything written before.
    let c = open_store(&runtime, &cluster);
    let names: Vec<String> = c
        .list(Kind::HttpTrigger)
        .unwrap()
        .into_iter()
        .map(|d| d.metadata.name)
        .collect();
    assert_eq!(names, ["aaa"]);
    assert!(c.revision() >= gone.revision);
}

#[test]
fn packages_reach_every_node_by_digest_and_only_as_themselves() {
    use flare_cluster::packages::NatsPackages;
    use flare_model::ErrorCode;
    use flare_store::PackageStore;

    let cluster = NatsCluster::start(1);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = PackageStore::open(dirs.0.path()).unwrap();
    let b = PackageStore::open(dirs.1.path()).unwrap();
    runtime.block_on(async {
        let client = async_nats::connect(cluster.url(0)).await.unwrap();
        let js = jetstream::new(client);
        let node_a = NatsPackages::open(&js, 1, &cluster.url(0)).await.unwrap();
        let node_b = NatsPackages::open(&js, 1, &cluster.url(0)).await.unwrap();

        // Stored on a, published, fetched by b: the same bytes.
        let code = bytes::Bytes::from(vec![7u8; 300_000]);
        let package = a.put(code.clone(), 1 << 20).await.unwrap();
        node_a.publish(&a, &package).await.unwrap();
        node_a.publish(&a, &package).await.unwrap();
        assert!(!b.contains(&package));
        node_b.fetch(&b, &package).await.unwrap();
        assert_eq!(b.read(&package).unwrap(), code.to_vec());

        // A digest nobody published.
        let missing = flare_model::PackageRef {
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 10,
        };
        let e = node_b.fetch(&b, &missing).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound, "{e:?}");

        // An object under a digest it does not hash to is refused, and
        // nothing is kept under that digest.
        let other = a
            .put(bytes::Bytes::from_static(b"other"), 1 << 20)
            .await
            .unwrap();
        let liar = flare_model::PackageRef {
            digest: format!("sha256:{}", "1".repeat(64)),
            size: other.size,
        };
        let bucket = js.get_object_store("flare-packages").await.unwrap();
        let mut forged: &[u8] = b"other";
        bucket.put(liar.digest.as_str(), &mut forged).await.unwrap();
        let e = node_b.fetch(&b, &liar).await.unwrap_err();
        assert!(e.message.contains("is not that package"), "{e:?}");
        assert!(!b.contains(&liar));
    });
}

/// A node that joins after `first`: the cluster's tokens are shared, so it
/// is driven with the first node's admin token (an operator copies it).
fn next_node(
    cluster: &NatsCluster,
    name: &str,
    key: &str,
    first: &common::Server,
    dir: &std::path::Path,
) -> common::Server {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(first.data_dir.join("admin.token"), dir.join("admin.token")).unwrap();
    let flags = node_flags(cluster, name, key);
    common::Server::start_in(dir, &flags.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Two nodes sharing a secrets key, and a function created through the
/// first (its code uploaded there only) that the second already serves.
struct Pair {
    keys: tempfile::TempDir,
    key: String,
    a: common::Server,
    b: common::Server,
}

fn serving_hello(cluster: &NatsCluster) -> Pair {
    let keys = tempfile::tempdir().unwrap();
    let key = secrets_key(keys.path());
    let a = node(cluster, "a", &key);
    let b = next_node(cluster, "b", &key, &a, &keys.path().join("b"));
    let code = common::guest("hello_rust");
    a.ok(&[
        "fn",
        "create",
        "--name",
        "hello",
        "--code",
        code.to_str().unwrap(),
    ]);
    common::eventually(Duration::from_secs(10), || {
        (b.get("/fn/hello").status() == 200).then_some(())
    });
    Pair { keys, key, a, b }
}

#[test]
fn a_function_created_on_one_node_is_served_by_another() {
    let cluster = NatsCluster::start(3);
    // `_keys` holds b's data dir (and the key) until the test ends.
    let Pair {
        a, b, keys: _keys, ..
    } = serving_hello(&cluster);
    let body = b.get("/fn/hello").text().unwrap();
    assert_eq!(body, a.get("/fn/hello").text().unwrap());
    // The function as b's API sees it, and its routes.
    let seen = b.ok(&["fn", "get", "--name", "hello", "-o", "json"]);
    assert!(seen.contains("\"hello\""), "{seen}");

    // A change through b reaches a (a stale generation is refused on
    // any node: the_nats_store_keeps_one_truth_for_every_node).
    let echo = common::guest("echo");
    b.ok(&[
        "fn",
        "update",
        "--name",
        "hello",
        "--code",
        echo.to_str().unwrap(),
    ]);
    common::eventually(Duration::from_secs(10), || {
        let response = common::http()
            .post(format!("{}/fn/hello", a.router))
            .body("ping")
            .send()
            .unwrap();
        let text = response.text().unwrap();
        text.contains(r#""body":"ping""#).then_some(())
    });

    // A secret sealed on a is opened on b (one --secrets-key for all).
    a.ok(&[
        "secret",
        "create",
        "--name",
        "db",
        "--from-literal",
        "PASSWORD=s3cret",
    ]);
    let misbehave = common::guest("misbehave");
    a.ok(&[
        "fn",
        "create",
        "--name",
        "wasm",
        "--code",
        misbehave.to_str().unwrap(),
        "--secret",
        "db",
    ]);
    let env = common::eventually(Duration::from_secs(10), || {
        let response = b.get("/fn/wasm/env");
        (response.status() == 200).then(|| response.text().unwrap())
    });
    assert!(env.contains("PASSWORD=s3cret"), "{env}");

    // A function's charts add up every node's points: requests on a and on
    // b, seen whole from either.
    let served_on = |node: &common::Server| node.get("/fn/wasm/ok").status() == 200;
    let mut sent = 1; // the env request above
    for node in [&a, &a, &a, &b, &b] {
        assert!(served_on(node));
        sent += 1;
    }
    for node in [&a, &b] {
        common::eventually(Duration::from_secs(40), || {
            let view: serde_json::Value = common::client_with_token(&node.token)
                .get(format!("{}/v1/functions/wasm/metrics", node.api))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let requests: u64 = view["points"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["requests"].as_u64().unwrap())
                .sum();
            (view["nodes"] == 2 && requests == sent).then_some(())
        });
    }

    // Deleted through a: gone from b.
    a.ok(&["fn", "delete", "--name", "hello"]);
    common::eventually(Duration::from_secs(10), || {
        (b.get("/fn/hello").status() == 404).then_some(())
    });
}

#[test]
fn a_restarted_node_rejoins_and_losing_nats_keeps_functions_served() {
    let mut cluster = NatsCluster::start(1);
    let Pair {
        keys,
        key,
        a,
        mut b,
    } = serving_hello(&cluster);
    let b_dir = keys.path().join("b");
    let served = |node: &common::Server| node.get("/fn/hello").status() == 200;

    // kill -9 of b, started again on its data dir: it rejoins and serves
    // with no step of anyone's.
    b.kill9();
    let b = common::Server::start_in(
        &b_dir,
        &node_flags(&cluster, "b", &key)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(served(&b), "a restarted node serves what the cluster holds");
    common::eventually(Duration::from_secs(10), || {
        (node_names(&a) == ["a", "b"]).then_some(())
    });

    // NATS gone: deployed functions are still served from each node's own
    // state; a change is refused, clearly, and nothing is half done.
    cluster.kill(0);
    for _ in 0..5 {
        assert!(served(&a) && served(&b));
    }
    let echo = common::guest("echo");
    let err = a.fails(&[
        "fn",
        "create",
        "--name",
        "other",
        "--code",
        echo.to_str().unwrap(),
    ]);
    assert!(err.contains("NATS"), "{err}");
    // Over the API: 503, for a client to try again later.
    let refused = common::client_with_token(&a.token)
        .post(format!("{}/v1/namespaces", a.api))
        .header("content-type", "application/json")
        .body(r#"{"kind":"Namespace","metadata":{"name":"later"},"spec":{}}"#)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 503);

    // NATS back: the nodes reconnect by themselves and changes go through.
    cluster.restart(0);
    common::eventually(Duration::from_secs(30), || {
        a.cli(&[
            "fn",
            "create",
            "--name",
            "other",
            "--code",
            echo.to_str().unwrap(),
        ])
        .status
        .success()
        .then_some(())
    });
    common::eventually(Duration::from_secs(10), || {
        (b.get("/fn/other").status() == 200).then_some(())
    });
}

/// A JetStream client of the test's own on `cluster`.
fn jetstream_of(cluster: &NatsCluster, runtime: &tokio::runtime::Runtime) -> jetstream::Context {
    let servers: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .split(',')
        .map(|url| url.parse().unwrap())
        .collect();
    let client = runtime.block_on(async_nats::connect(servers)).unwrap();
    let _in = runtime.enter();
    jetstream::new(client)
}

/// Submits `path` to `router` for a later run; the invocation's id.
fn submit_async(router: &str, path: &str) -> String {
    let response = common::http()
        .post(format!("{router}{path}"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().unwrap());
    let json: serde_json::Value = response.json().unwrap();
    json["invocation"].as_str().unwrap().to_string()
}

#[test]
fn async_invocations_survive_the_kill_of_the_node_running_them() {
    const N: usize = 1000;
    let cluster = NatsCluster::start(3);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream_of(&cluster, &runtime);
    // The records bucket made ahead with history, so that every write of
    // each record can be read back: one outcome stored per invocation.
    runtime.block_on(within(Duration::from_secs(20), || {
        js.create_key_value(kv::Config {
            bucket: "flare-invocations".into(),
            history: 64,
            num_replicas: 3,
            ..Default::default()
        })
    }));

    let (_keys, _, a, mut b, c) = three_nodes(&cluster);
    let code = common::guest("misbehave");
    a.ok(&[
        "fn",
        "create",
        "--name",
        "slow",
        "--code",
        code.to_str().unwrap(),
    ]);
    for node in [&b, &c] {
        common::eventually(Duration::from_secs(10), || {
            (node.get("/fn/slow/sleep?ms=1").status() == 200).then_some(())
        });
    }

    // 1,000 accepted through all three nodes, from 8 clients at once.
    let routers = [a.router.clone(), b.router.clone(), c.router.clone()];
    let ids: Vec<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|t| {
                let routers = &routers;
                s.spawn(move || {
                    (0..N / 8)
                        .map(|i| submit_async(&routers[(t + i) % 3], "/async/fn/slow/sleep?ms=300"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(ids.len(), N);

    // b dies holding invocations it took; the rest wait in the queue.
    b.kill9();
    let finished = common::eventually(Duration::from_secs(180), || {
        let out = a.ok(&["invocations", "list", "--limit", "10000", "-o", "json"]);
        let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let done = all
            .iter()
            .filter(|i| i["status"] == "succeeded" || i["status"] == "failed")
            .count();
        (done == N).then_some(all)
    });
    let mut listed: Vec<&str> = finished.iter().map(|i| i["id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut submitted: Vec<&str> = ids.iter().map(String::as_str).collect();
    submitted.sort_unstable();
    assert_eq!(listed, submitted, "every accepted invocation, once");
    for invocation in &finished {
        assert_eq!(invocation["status"], "succeeded", "{invocation}");
        assert_eq!(invocation["result_body"], "slept", "{invocation}");
    }

    // Every write to the records, in order (the bucket keeps them all):
    // exactly one outcome per invocation, and some taken over (running,
    // then running again on another node).
    let writes = runtime.block_on(async {
        let stream = js.get_stream("KV_flare-invocations").await.unwrap();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        let mut writes: std::collections::HashMap<String, Vec<String>> = Default::default();
        for sequence in 1..=last {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let id = message.subject.rsplit('.').next().unwrap().to_string();
            let record: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            let status = record["status"].as_str().unwrap().to_string();
            writes.entry(id).or_default().push(status);
        }
        writes
    });
    let mut taken_over = 0;
    for id in &ids {
        let statuses = &writes[id];
        let outcomes = statuses
            .iter()
            .filter(|s| *s == "succeeded" || *s == "failed")
            .count();
        assert_eq!(outcomes, 1, "{id}: {statuses:?}");
        if statuses
            .windows(2)
            .any(|w| w[0] == "running" && w[1] == "running")
        {
            taken_over += 1;
        }
    }
    assert!(
        taken_over > 0,
        "b held none of the invocations when it died"
    );
    eprintln!("{taken_over} invocations were taken over from the killed node");
}

#[test]
fn an_async_body_too_large_for_one_nats_message_arrives_whole() {
    let cluster = NatsCluster::start(1);
    let keys = tempfile::tempdir().unwrap();
    let a = node(&cluster, "a", &secrets_key(keys.path()));
    a.python_env("0");
    a.create_python("probe", "probe.py", &["--max-body", "4194304"]);
    // 3 MiB, three times NATS's default max_payload, not all one byte.
    let body: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&body))
    };
    let response = common::http()
        .post(format!("{}/async/fn/probe/digest", a.router))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<serde_json::Value>().unwrap()["invocation"]
        .as_str()
        .unwrap()
        .to_string();
    let done = common::eventually(Duration::from_secs(60), || {
        let out = a.ok(&["invocations", "get", "--id", &id, "-o", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        (json["status"] == "succeeded").then_some(json)
    });
    assert_eq!(done["result_body"], format!("{digest} {}", body.len()));

    // The body was kept apart only until the invocation finished.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream_of(&cluster, &runtime);
    let left = runtime.block_on(async {
        let bodies = js
            .get_object_store("flare-invocation-bodies")
            .await
            .unwrap();
        let mut listed = bodies.list().await.unwrap();
        let mut left = 0;
        while let Some(object) = futures::StreamExt::next(&mut listed).await {
            if !object.unwrap().deleted {
                left += 1;
            }
        }
        left
    });
    assert_eq!(left, 0);
}

#[test]
fn a_queued_invocation_without_its_record_still_runs_and_junk_is_dropped() {
    let cluster = NatsCluster::start(1);
    let keys = tempfile::tempdir().unwrap();
    let a = node(&cluster, "a", &secrets_key(keys.path()));
    a.create("slow", "misbehave", &[]);
    // A submitter killed between its publish and its record leaves only
    // the message; one that is not an invocation at all comes first.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream_of(&cluster, &runtime);
    let request = serde_json::json!({
        "id": "0000orphan", "function": "slow", "method": "GET",
        "path": "/sleep?ms=1", "headers": [], "callback_url": null, "max_retries": 0,
    });
    runtime.block_on(async {
        js.publish("flare.invocations", "junk".into())
            .await
            .unwrap()
            .await
            .unwrap();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Flare-Request", request.to_string().as_str());
        js.publish_with_headers("flare.invocations", headers, bytes::Bytes::new())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let done = common::eventually(Duration::from_secs(30), || {
        let out = a.cli(&["invocations", "get", "--id", "0000orphan", "-o", "json"]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (json["status"] == "succeeded").then_some(json)
    });
    assert_eq!(done["result_body"], "slept");
    // Nothing is left in the queue: the junk was dropped, not retried.
    let pending = runtime.block_on(async {
        let mut stream = js.get_stream("FLARE_INVOCATIONS").await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(pending, 0);
}

/// `flare fn logs --follow` of `name` on `server`, read line by line.
fn follow_logs(
    server: &common::Server,
    name: &str,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flare"))
        .args(["fn", "logs", "--name", name, "--follow"])
        .env("FLARE_API", &server.api)
        .env("FLARE_TOKEN", &server.token)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Invokes `path` on `server`'s router; the invocation id.
fn invoked(server: &common::Server, path: &str) -> String {
    let response = server.get(path);
    assert_eq!(response.status(), 200, "{path}");
    response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn logs_of_every_node_are_read_and_followed_on_any_node() {
    let mut cluster = NatsCluster::start(1);
    let (keys, key, a, mut b, c) = three_nodes(&cluster);
    a.create("chatty", "misbehave", &[]);
    for node in [&b, &c] {
        common::eventually(Duration::from_secs(10), || {
            (node.get("/fn/chatty/log?n=0").status() == 200).then_some(())
        });
    }

    // Followed on a; written on b and on c.
    let (mut follower, followed) = follow_logs(&a, "chatty");
    // The follower is connected once it shows a line written after it.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let on_b = loop {
        let id = invoked(&b, "/fn/chatty/log?n=1");
        let until = Instant::now() + Duration::from_millis(500);
        while let Ok(line) = followed.recv_timeout(until.saturating_duration_since(Instant::now()))
        {
            seen.push(line);
        }
        if seen.iter().any(|l| l.contains(&id)) {
            break id;
        }
        assert!(Instant::now() < deadline, "nothing followed: {seen:?}");
    };
    let on_c = invoked(&c, "/fn/chatty/log?n=2");
    let wanted = [
        format!("stdout [{on_b}] line 0"),
        format!("stdout [{on_c}] line 0"),
        format!("stdout [{on_c}] line 1"),
        format!("stderr [{on_c}] to stderr"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !wanted.iter().all(|w| seen.iter().any(|l| l.contains(w))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match followed.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("followed on a: {seen:#?}, wanted {wanted:#?}"),
        }
    }
    follower.kill().unwrap();
    follower.wait().unwrap();

    // Queried on a: each line once, whichever node wrote it.
    let logs = a.ok(&["fn", "logs", "--name", "chatty"]);
    for w in &wanted {
        assert_eq!(logs.matches(w.as_str()).count(), 1, "{w} in {logs}");
    }
    let only_c = a.ok(&["fn", "logs", "--name", "chatty", "--invocation", &on_c]);
    assert_eq!(only_c.lines().count(), 3, "{only_c}");

    // b dies; a node that joins afterwards, on an empty data dir, still has
    // b's lines: they were in the stream before they were on b.
    b.kill9();
    let d = next_node(&cluster, "d", &key, &a, &keys.path().join("d"));
    common::eventually(Duration::from_secs(20), || {
        let logs = d.ok(&["fn", "logs", "--name", "chatty", "--invocation", &on_b]);
        logs.contains(&wanted[0]).then_some(())
    });

    // A deleted namespace's lines go from every node; one made again under
    // the same name starts with none.
    a.ok(&["ns", "create", "team-x"]);
    a.create("talk", "misbehave", &["-n", "team-x"]);
    common::eventually(Duration::from_secs(10), || {
        (c.get("/fn/talk.team-x/log?n=1").status() == 200).then_some(())
    });
    common::eventually(Duration::from_secs(20), || {
        let logs = d.ok(&["-n", "team-x", "fn", "logs", "--name", "talk"]);
        logs.contains("line 0").then_some(())
    });
    a.ok(&["-n", "team-x", "fn", "delete", "--name", "talk"]);
    a.ok(&["ns", "delete", "team-x"]);
    a.ok(&["ns", "create", "team-x"]);
    a.create("talk", "misbehave", &["-n", "team-x"]);
    for node in [&a, &c, &d] {
        common::eventually(Duration::from_secs(20), || {
            let logs = node.ok(&["-n", "team-x", "fn", "logs", "--name", "talk", "-o", "json"]);
            (logs.trim() == "[]").then_some(())
        });
    }

    // NATS gone: a node keeps its own lines rather than lose them.
    cluster.kill(0);
    let alone = invoked(&a, "/fn/chatty/log?n=1");
    common::eventually(Duration::from_secs(30), || {
        let logs = a.ok(&["fn", "logs", "--name", "chatty", "--invocation", &alone]);
        logs.contains("line 0").then_some(())
    });
    cluster.restart(0);
}

/// A NATS trigger `sneaky` of `function` on `broker`'s Flare log subjects,
/// which must not connect: the error its status reports.
fn snooping_trigger(node: &common::Server, function: &str, broker: &str) -> String {
    node.ok(&[
        "mqt",
        "create",
        "--name",
        "sneaky",
        "--function",
        function,
        "--mqtype",
        "nats",
        "--broker",
        broker,
        "--topic",
        "flare.logs.>",
    ]);
    common::eventually(Duration::from_secs(30), || {
        mq_status(node, "sneaky")["error"]
            .as_str()
            .map(str::to_string)
    })
}

/// A NATS trigger `name` of function `worker` on `broker`: from
/// `<name>.in.>`, answers to `<name>.out`.
fn worker_trigger(node: &common::Server, name: &str, broker: &NatsCluster, extra: &[&str]) {
    let (url, topic, out) = (broker.url(0), format!("{name}.in.>"), format!("{name}.out"));
    let mut args = vec![
        "mqt",
        "create",
        "--name",
        name,
        "--function",
        "worker",
        "--mqtype",
        "nats",
        "--broker",
        &url,
        "--topic",
        &topic,
        "--resptopic",
        &out,
    ];
    args.extend_from_slice(extra);
    node.ok(&args);
}

/// Where a trigger of [`worker_on_three_nodes`] reads and answers, and its
/// name: names no earlier run used (brokers outlive test runs).
struct Queues {
    input: String,
    output: String,
    trigger: String,
}

/// Nodes a, b and c of `cluster` with function `worker` (mq.py) and an
/// `mqtype` trigger of it (`extra` flags; concurrency 2 unless they say) that every
/// node has connected; `prepare` runs before the trigger is made.
fn worker_on_three_nodes(
    cluster: &NatsCluster,
    mqtype: &str,
    extra: &[&str],
    prepare: impl FnOnce(&Queues),
) -> (tempfile::TempDir, Vec<common::Server>, Queues) {
    let (keys, _, a, b, c) = three_nodes(cluster);
    a.python_env("1");
    a.create_python("worker", "mq.py", &[]);
    let stamp = format!("{}-{}", std::process::id(), common::nats::free_port());
    let queues = Queues {
        input: format!("flare-cluster-in-{stamp}"),
        output: format!("flare-cluster-out-{stamp}"),
        trigger: format!("q{}", common::nats::free_port()),
    };
    prepare(&queues);
    let mut args = vec![
        "mqt",
        "create",
        "--name",
        &queues.trigger,
        "--function",
        "worker",
        "--mqtype",
        mqtype,
        "--topic",
        &queues.input,
        "--resptopic",
        &queues.output,
    ];
    if !extra.contains(&"--concurrency") {
        args.extend(["--concurrency", "2"]);
    }
    args.extend_from_slice(extra);
    a.ok(&args);
    let nodes = vec![a, b, c];
    // Every node consumes, or (a trigger that needs one consumer) stands by.
    for node in &nodes {
        common::eventually(Duration::from_secs(30), || {
            let status = mq_status(node, &queues.trigger);
            (status["connected"] == true || status["standby"] == true).then_some(())
        });
    }
    (keys, nodes, queues)
}

/// Answers `processed:nap-<key>-<index>` checked for per-key order as they
/// arrive: each is its key's next message or, once per key (the one kill),
/// a replay of at most `depth` messages it had answered before (a message
/// the dead node answered but never acknowledged runs again: at least once).
struct InOrder {
    next: Vec<usize>,
    replayed: Vec<bool>,
    depth: usize,
    answers: Vec<(usize, usize)>,
}

impl InOrder {
    fn new(keys: usize, depth: usize) -> Self {
        InOrder {
            next: vec![0; keys],
            replayed: vec![false; keys],
            depth,
            answers: Vec::new(),
        }
    }

    fn see(&mut self, answer: &str) {
        let name = answer.strip_prefix("processed:nap-").unwrap_or_else(|| {
            panic!("not an answer of a nap: {answer:?}");
        });
        let (k, i) = name.split_once('-').unwrap();
        let (k, i): (usize, usize) = (k.parse().unwrap(), i.parse().unwrap());
        self.answers.push((k, i));
        let next = self.next[k];
        if i != next {
            assert!(
                i < next && next - i <= self.depth && !self.replayed[k],
                "key {k}: message {i} answered after {}; answers {:?}",
                next as i64 - 1,
                self.answers
            );
            self.replayed[k] = true;
        }
        self.next[k] = i + 1;
    }

    /// Every key has had its `each` messages answered, in order.
    fn complete(&self, each: usize) -> bool {
        self.next.iter().all(|n| *n == each)
    }
}

/// An ordered `mqtype` trigger on three nodes, kill -9 of the one that
/// consumes while it runs messages: another takes over and every message
/// is answered, per key in the order published. `publish(queues, k, i)`
/// sends message `nap-<k>-<i>` (each takes 500 ms), a round of `keys` every
/// 550 ms from a thread of its own; `answer` waits for the next answer.
#[allow(clippy::too_many_arguments)]
fn ordered_through_a_kill(
    mqtype: &str,
    extra: &[&str],
    prepare: impl FnOnce(&Queues),
    (keys, each, depth): (usize, usize, usize),
    publish: impl Fn(&Queues, usize, usize) + Sync,
    mut answer: impl FnMut(&Queues) -> String,
) -> Queues {
    let cluster = NatsCluster::start(1);
    let mut flags = vec!["--ordered", "--concurrency", "8"];
    flags.extend_from_slice(extra);
    let (_keys, mut nodes, queues) = worker_on_three_nodes(&cluster, mqtype, &flags, prepare);
    let trigger = queues.trigger.clone();
    let holder = common::eventually(Duration::from_secs(30), || {
        let states: Vec<serde_json::Value> = nodes.iter().map(|n| mq_status(n, &trigger)).collect();
        let consuming: Vec<usize> = (0..3).filter(|i| states[*i]["connected"] == true).collect();
        let standing_by = states.iter().filter(|s| s["standby"] == true).count();
        (consuming.len() == 1 && standing_by == 2).then(|| consuming[0])
    });
    let mut order = InOrder::new(keys, depth);
    std::thread::scope(|scope| {
        let queues = &queues;
        let publish = &publish;
        scope.spawn(move || {
            for i in 0..each {
                for k in 0..keys {
                    publish(queues, k, i);
                }
                std::thread::sleep(Duration::from_millis(550));
            }
        });
        // kill -9 of the consuming node once a few rounds are answered: it
        // is running a message of most keys then (each takes 500 of every
        // 550 ms), and holds later ones.
        while order.answers.len() < keys * 3 {
            order.see(&answer(queues));
        }
        nodes.remove(holder).kill9();
        let killed = Instant::now();
        while !order.complete(each) {
            order.see(&answer(queues));
        }
        eprintln!(
            "{mqtype}: every message answered {:?} after the kill ({} answers for {} messages)",
            killed.elapsed(),
            order.answers.len(),
            keys * each
        );
    });
    let consuming = nodes
        .iter()
        .filter(|n| mq_status(n, &trigger)["connected"] == true)
        .count();
    assert_eq!(consuming, 1, "one node consumes after the takeover");
    queues
}

#[test]
fn an_ordered_redis_trigger_keeps_its_order_when_its_node_dies() {
    // A stream has no keys: an ordered trigger runs its entries one at a
    // time, so few of them (each takes 500 ms).
    let mut seen = 0;
    let queues = ordered_through_a_kill(
        "redis",
        &[],
        |_| {},
        (2, 10, 1),
        |queues, k, i| {
            common::redis(&[
                "XADD",
                &queues.input,
                "*",
                "payload",
                &format!("nap-{k}-{i}"),
            ]);
        },
        |queues| {
            let deadline = Instant::now() + Duration::from_secs(90);
            loop {
                let out = common::redis(&["--raw", "XRANGE", &queues.output, "-", "+"]);
                let answers: Vec<&str> = out
                    .lines()
                    .filter(|l| l.starts_with("processed:"))
                    .collect();
                if let Some(next) = answers.get(seen) {
                    seen += 1;
                    return next.to_string();
                }
                assert!(Instant::now() < deadline, "no answer for 90 s");
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    );
    common::redis(&["DEL", &queues.input, &queues.output]);
}

#[test]
fn an_ordered_amqp_trigger_keeps_each_routing_keys_order_when_its_node_dies() {
    use futures::StreamExt;
    use lapin::options::{
        BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let (_connection, channel) = runtime.block_on(common::amqp_channel());
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let table = lapin::types::FieldTable::default;
    // Keys are routing keys: the input queue takes `<input>.*` from the
    // topic exchange, and RabbitMQ puts what a dead consumer held back in
    // its place in the queue.
    let mut consumer = None;
    let queues = ordered_through_a_kill(
        "amqp",
        &[],
        |queues| {
            runtime.block_on(async {
                channel
                    .queue_declare(queues.input.as_str().into(), durable, table())
                    .await
                    .unwrap();
                channel
                    .queue_bind(
                        queues.input.as_str().into(),
                        "amq.topic".into(),
                        format!("{}.*", queues.input).as_str().into(),
                        QueueBindOptions::default(),
                        table(),
                    )
                    .await
                    .unwrap();
            });
        },
        (4, 20, 1),
        |queues, k, i| {
            let key = format!("{}.k{k}", queues.input);
            runtime.block_on(common::amqp_publish(
                &channel,
                "amq.topic",
                &key,
                &format!("nap-{k}-{i}"),
            ));
        },
        |queues| {
            runtime.block_on(async {
                if consumer.is_none() {
                    channel
                        .queue_declare(queues.output.as_str().into(), durable, table())
                        .await
                        .unwrap();
                    let tag = format!("test-{}", std::process::id());
                    consumer = Some(
                        channel
                            .basic_consume(
                                queues.output.as_str().into(),
                                tag.as_str().into(),
                                BasicConsumeOptions::default(),
                                table(),
                            )
                            .await
                            .unwrap(),
                    );
                }
                let answers = consumer.as_mut().unwrap();
                let delivery = tokio::time::timeout(Duration::from_secs(90), answers.next())
                    .await
                    .expect("answers keep coming")
                    .unwrap()
                    .unwrap();
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                String::from_utf8(delivery.data).unwrap()
            })
        },
    );
    runtime.block_on(async {
        for queue in [&queues.input, &queues.output] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    });
}

#[test]
fn an_ordered_kafka_trigger_keeps_each_partitions_order_when_its_node_dies() {
    let (mock, kafka) = common::kafka::Kafka::start(&[]);
    let url = kafka.url();
    let mut reader = None;
    // Keys are partitions. A commit is asynchronous (kafka.rs), so the
    // group may replay more than the one message a key had running.
    ordered_through_a_kill(
        "kafka",
        &["--broker", &url],
        |queues| {
            mock.create_topic(&queues.input, 4, 1).unwrap();
            mock.create_topic(&queues.output, 1, 1).unwrap();
        },
        (4, 20, 2),
        |queues, k, i| {
            kafka.send(
                &queues.input,
                &format!("k{k}"),
                Some(k as i32),
                &format!("nap-{k}-{i}"),
            );
        },
        |queues| {
            let answers =
                reader.get_or_insert_with(|| kafka.reader("ordered-test", &queues.output));
            kafka.read(answers, 1).remove(0)
        },
    );
}

/// The status of message-queue trigger `name` as `node` reports it.
fn mq_status(node: &common::Server, name: &str) -> serde_json::Value {
    let out = node.ok(&["mqt", "get", "--name", name, "-o", "json"]);
    let view: serde_json::Value = serde_json::from_str(&out).unwrap();
    view["status"].clone()
}

#[test]
fn an_ordered_nats_trigger_keeps_each_key_in_order_when_its_node_dies() {
    use futures::StreamExt;
    let cluster = NatsCluster::start(1);
    let (_keys, _, a, b, c) = three_nodes(&cluster);
    a.python_env("1");
    let code = common::function_file("mq.py");
    a.ok(&[
        "fn",
        "create",
        "--name",
        "worker",
        "--env",
        "python",
        "--code",
        code.to_str().unwrap(),
    ]);
    // The cluster's own NATS is no trigger's broker: through it a tenant
    // would read every namespace's logs.
    let refused = snooping_trigger(&a, "worker", &cluster.url(0));
    assert!(
        refused.contains("holds this Flare cluster's own state"),
        "{refused}"
    );
    a.ok(&["mqt", "delete", "--name", "sneaky"]);

    // The trigger's broker: a NATS of its own.
    let broker = NatsCluster::start(1);
    worker_trigger(&a, "orders", &broker, &["--ordered", "--concurrency", "8"]);

    // One node consumes; the others stand by.
    let mut nodes = vec![a, b, c];
    let holder = common::eventually(Duration::from_secs(30), || {
        let states: Vec<serde_json::Value> = nodes.iter().map(|n| mq_status(n, "orders")).collect();
        let consuming: Vec<usize> = (0..3).filter(|i| states[*i]["connected"] == true).collect();
        let standing_by = states.iter().filter(|s| s["standby"] == true).count();
        (consuming.len() == 1 && standing_by == 2).then(|| consuming[0])
    });

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream_of(&broker, &runtime);
    let client = js.client();
    let mut answers = runtime.block_on(client.subscribe("orders.out")).unwrap();
    runtime.block_on(client.flush()).unwrap();
    // Each message takes 500 ms and each key gets one every 550 ms, before
    // and after the kill: when the consumer dies it is running a message
    // of most keys while later ones of those keys are still to come, and
    // it holds fewer messages than the consumer may have unacknowledged,
    // so JetStream would hand its successor the later ones first.
    const KEYS: usize = 4;
    const EACH: usize = 40;
    let publisher = {
        let js = js.clone();
        runtime.spawn(async move {
            for i in 0..EACH {
                for k in 0..KEYS {
                    js.publish(format!("orders.in.k{k}"), format!("nap-{k}-{i}").into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(550)).await;
            }
        })
    };
    // Per key, every answer is the next message published or a repeat of
    // the last one answered: a message the dead node answered but never
    // acknowledged is answered again (at least once).
    let mut answered: Vec<(usize, usize)> = Vec::new();
    let mut done = [0usize; KEYS];
    let mut next = |answered: &mut Vec<(usize, usize)>, limit: Duration| {
        let m = runtime
            .block_on(async { tokio::time::timeout(limit, answers.next()).await })
            .expect("answers keep coming")
            .unwrap();
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let name: Vec<&str> = text.split(':').nth(1).unwrap().split('-').collect();
        let (k, i): (usize, usize) = (name[1].parse().unwrap(), name[2].parse().unwrap());
        answered.push((k, i));
        if i + 1 == done[k] {
            return; // the last one answered, again
        }
        assert_eq!(
            i, done[k],
            "key k{k}: message {i} answered before {}; answers {answered:?}",
            done[k]
        );
        done[k] += 1;
    };

    // kill -9 of the consuming node under way, while it runs messages it
    // has not acknowledged.
    while answered.len() < KEYS * 8 {
        next(&mut answered, Duration::from_secs(30));
    }
    runtime.block_on(async {
        let stream = js.get_stream("FLARE_ORDERS").await.unwrap();
        let mut consumer: jetstream::consumer::PullConsumer =
            stream.get_consumer("flare-orders").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while consumer.info().await.unwrap().num_ack_pending == 0 {
            assert!(Instant::now() < deadline, "the consumer holds nothing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    nodes.remove(holder).kill9();
    let killed = Instant::now();

    // Another node takes over (the lease expires, then the dead node's
    // unacknowledged messages come back first) and every message is
    // answered, per key in the order published.
    while answered.len() < KEYS * EACH || {
        let mut seen = std::collections::HashSet::new();
        answered.iter().filter(|a| seen.insert(**a)).count() < KEYS * EACH
    } {
        next(&mut answered, Duration::from_secs(90));
    }
    runtime.block_on(publisher).unwrap();
    eprintln!(
        "every message answered {:?} after the kill ({} answers for {} messages)",
        killed.elapsed(),
        answered.len(),
        KEYS * EACH
    );
    let consuming = nodes
        .iter()
        .filter(|n| mq_status(n, "orders")["connected"] == true)
        .count();
    assert_eq!(consuming, 1, "one node consumes after the takeover");
}

#[test]
fn a_nats_server_killed_under_load_loses_nothing_acknowledged() {
    const N: usize = 200;
    let mut cluster = NatsCluster::start(3);
    let keys = tempfile::tempdir().unwrap();
    let key = secrets_key(keys.path());
    let a = node(&cluster, "a", &key);
    let b = next_node(&cluster, "b", &key, &a, &keys.path().join("b"));
    a.create("slow", "misbehave", &[]);
    common::eventually(Duration::from_secs(30), || {
        (b.get("/fn/slow/sleep?ms=1").status() == 200).then_some(())
    });
    let routers = [a.router.clone(), b.router.clone()];
    let ids: Vec<String> = (0..N)
        .map(|i| submit_async(&routers[i % 2], "/async/fn/slow/sleep?ms=50"))
        .collect();

    // kill -9 of one of the three servers while those run; every stream
    // and bucket has three replicas.
    cluster.kill(0);
    // Changes go through once the streams have their leaders again (a
    // refusal meanwhile is a clear 503, tested elsewhere), packages too.
    // On 2 busy cores the elections, the package and the function's two
    // writes (its version, then itself) took over a minute once.
    let echo = common::guest("echo");
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let out = b.cli(&[
            "fn",
            "create",
            "--name",
            "after",
            "--code",
            echo.to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        // An attempt NATS took but did not confirm in time made it.
        if out.status.success() || err.contains("already exists") {
            break;
        }
        assert!(Instant::now() < deadline, "no create after the kill: {err}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every accepted invocation ends with its result.
    let seen = std::cell::RefCell::new(String::from("no listing yet"));
    let finished = common::eventually_or(
        Duration::from_secs(120),
        || {
            // Refused (503) while the streams elect new leaders.
            let out = a.cli(&["invocations", "list", "--limit", "1000", "-o", "json"]);
            let Ok(all) = serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout) else {
                *seen.borrow_mut() = String::from_utf8_lossy(&out.stderr).into_owned();
                return None;
            };
            let mut by_status = std::collections::BTreeMap::<String, usize>::new();
            for i in &all {
                *by_status.entry(i["status"].to_string()).or_default() += 1;
            }
            *seen.borrow_mut() = format!("{} listed: {by_status:?}", all.len());
            (by_status.get("\"succeeded\"") == Some(&N)).then_some(all)
        },
        || seen.borrow().clone(),
    );
    let mut listed: Vec<&str> = finished.iter().map(|i| i["id"].as_str().unwrap()).collect();
    listed.sort_unstable();
    let mut submitted: Vec<&str> = ids.iter().map(String::as_str).collect();
    submitted.sort_unstable();
    assert_eq!(listed, submitted);

    // The nodes are back in the cluster's list by themselves, and a node
    // that joins now gets every resource and package, those from before
    // the kill and those after it.
    common::eventually(Duration::from_secs(30), || {
        (node_names(&a) == ["a", "b"]).then_some(())
    });
    let c = next_node(&cluster, "c", &key, &a, &keys.path().join("c"));
    assert_eq!(c.get("/fn/slow/sleep?ms=1").text().unwrap(), "slept");
    let echoed = common::http()
        .post(format!("{}/fn/after", c.router))
        .body("still here")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(echoed.contains("still here"), "{echoed}");
    cluster.restart(0);
}

/// The slots of timer firings in `function`'s log lines on `node` (mq.py
/// prints each body it gets), in the order logged.
fn fired_slots(node: &common::Server, function: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    let out = node.ok(&[
        "fn", "logs", "--name", function, "--limit", "10000", "-o", "json",
    ]);
    let lines: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    lines
        .iter()
        .filter_map(|l| {
            let line = l["line"].as_str()?;
            let body = line
                .strip_prefix("got ")?
                .split(" dev.flare.timer")
                .next()?;
            let body: serde_json::Value = serde_json::from_str(body).ok()?;
            chrono::DateTime::parse_from_rfc3339(body["scheduled"].as_str()?)
                .ok()
                .map(|t| t.to_utc())
        })
        .collect()
}

#[test]
fn a_one_second_timer_fires_each_slot_once_across_nodes_and_a_kill() {
    let cluster = NatsCluster::start(1);
    let (_keys, _, a, mut b, c) = three_nodes(&cluster);
    a.python_env("1");
    a.create_python("ticker", "mq.py", &[]);
    a.ok(&[
        "tt",
        "create",
        "--name",
        "tick",
        "--function",
        "ticker",
        "--cron",
        "* * * * * *",
    ]);
    let started = common::eventually(Duration::from_secs(30), || {
        fired_slots(&a, "ticker").first().copied()
    });

    // Halfway, kill -9 of b, early in a second (just after a slot's line
    // is seen, so the kill never falls between a slot's claim and its run:
    // that run would be lost with the node).
    common::eventually(Duration::from_secs(60), || {
        let slots = fired_slots(&a, "ticker");
        let seconds: std::collections::BTreeSet<i64> =
            slots.iter().map(|s| s.timestamp()).collect();
        let (first, last) = (*seconds.first()?, *seconds.last()?);
        let no_gaps = seconds.len() as i64 == last - first + 1;
        let since = chrono::Utc::now().timestamp_millis() - last * 1000;
        (last - started.timestamp() >= 30 && no_gaps && since < 500).then_some(())
    });
    b.kill9();
    let killed = chrono::Utc::now();

    // 30 s more: every slot from the first to the last fired exactly once,
    // those after the kill too (whichever node claimed each).
    let slots = common::eventually(Duration::from_secs(60), || {
        let slots = fired_slots(&a, "ticker");
        (*slots.iter().max()? - killed >= chrono::Duration::seconds(30)).then_some(slots)
    });
    a.ok(&["tt", "delete", "--name", "tick"]);
    let mut counts = std::collections::BTreeMap::new();
    for slot in &slots {
        *counts.entry(slot.timestamp()).or_insert(0) += 1;
    }
    let (first, last) = (
        *counts.keys().next().unwrap(),
        *counts.keys().last().unwrap(),
    );
    assert!(last - first >= 60, "{first}..{last}");
    for second in first..=last {
        assert_eq!(
            counts.get(&second),
            Some(&1),
            "slot {second} (the kill was at {}): {counts:?}",
            killed.timestamp()
        );
    }
    // c is still serving; it and a shared the slots after the kill.
    assert_eq!(c.get("/fn/ticker").status(), 200);
}

/// `fn get` of `name` on `node`: the function and this node's status.
fn function_view(node: &common::Server, name: &str) -> serde_json::Value {
    serde_json::from_str(&node.ok(&["fn", "get", "--name", name, "-o", "json"])).unwrap()
}

/// What `node` serves of its share: `(max concurrency of hello, warm
/// instances of py)`.
fn shares(node: &common::Server) -> (u64, u64) {
    let hello = function_view(node, "hello");
    let py = function_view(node, "py");
    let instances = &py["status"]["instances"];
    (
        hello["status"]["maxConcurrency"].as_u64().unwrap_or(0),
        instances["warm"].as_u64().unwrap_or(0) + instances["busy"].as_u64().unwrap_or(0),
    )
}

#[test]
fn each_node_serves_its_share_of_a_functions_limits() {
    let cluster = NatsCluster::start(1);
    let (_keys, _, a, b, mut c) = three_nodes(&cluster);
    common::eventually(Duration::from_secs(10), || {
        (node_names(&a) == ["a", "b", "c"]).then_some(())
    });
    a.create("hello", "hello_rust", &["--concurrency", "30"]);
    a.python_env("0");
    a.create_python("py", "probe.py", &["--minscale", "3", "--maxscale", "4"]);

    // Three nodes: a third each of the concurrency; minscale 3 spread one
    // warm instance per node.
    for node in [&a, &b, &c] {
        common::eventually(Duration::from_secs(30), || {
            (shares(node) == (10, 1)).then_some(())
        });
    }
    // The cluster-wide values are what the function says.
    let py = function_view(&b, "py");
    assert_eq!(py["spec"]["limits"]["minScale"], 3, "{py}");

    // c dies: once it has left the list, a and b share what it had (a,
    // first by name, keeps the odd warm instance).
    c.kill9();
    common::eventually(Duration::from_secs(40), || {
        (shares(&a) == (15, 2) && shares(&b) == (15, 1)).then_some(())
    });
}

/// What `node`'s adaptive keep-alive of `name` has learned.
fn keep_alive(node: &common::Server, name: &str) -> serde_json::Value {
    function_view(node, name)["status"]["keepAlive"].clone()
}

#[test]
fn an_adaptive_keep_alive_learns_from_every_nodes_idle_times() {
    let cluster = NatsCluster::start(1);
    let (_keys, _, a, b, c) = three_nodes(&cluster);
    common::eventually(Duration::from_secs(10), || {
        (node_names(&a) == ["a", "b", "c"]).then_some(())
    });
    a.python_env("0");
    a.create_python("py", "probe.py", &["--keepalive", "adaptive"]);
    // Six calls one after another on b and on c: five idle times each
    // (the first call follows no idle time); none on a.
    for node in [&b, &c] {
        common::eventually(Duration::from_secs(30), || {
            function_view(node, "py")["status"]["ready"]
                .as_bool()
                .filter(|&ready| ready)
        });
        for _ in 0..6 {
            let response = node.get("/fn/py/id");
            assert_eq!(response.status(), 200, "{:?}", response.text());
        }
    }
    assert_eq!(
        keep_alive(&b, "py")["samples"],
        5,
        "{}",
        keep_alive(&b, "py")
    );
    // a learns from both: ten short gaps, enough to keep an instance
    // loaded for the minute after each call and never to unload it first.
    let learned = serde_json::json!({
        "samples": 10,
        "fromOtherNodes": 10,
        "learned": true,
        "prewarmSeconds": 0,
        "keepAliveSeconds": 60,
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = keep_alive(&a, "py");
        if seen == learned {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a learned {seen}, not {learned}; b {}, c {}",
            keep_alive(&b, "py"),
            keep_alive(&c, "py")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // b counts its own five once and c's five: nothing echoes back.
    common::eventually(Duration::from_secs(60), || {
        let k = keep_alive(&b, "py");
        (k["samples"] == 10 && k["fromOtherNodes"] == 5).then_some(())
    });
    let shown = a.ok(&["fn", "get", "--name", "py"]);
    assert!(
        shown.contains(
            "adaptive (learned from 10 idle times, 10 from other nodes: prewarm 0s, keep 1m)"
        ),
        "{shown}"
    );
    // A new generation goes on from what each node learned.
    a.ok(&["fn", "update", "--name", "py", "--timeout", "20s"]);
    common::eventually(Duration::from_secs(60), || {
        let py = function_view(&b, "py");
        let k = &py["status"]["keepAlive"];
        (py["status"]["generation"] == 2 && k["samples"] == 10 && k["fromOtherNodes"] == 5)
            .then_some(())
    });
}

#[test]
fn a_node_joins_with_nats_credentials_and_nothing_outside_its_account_reaches_its_state() {
    use futures::StreamExt;
    // NATS with accounts: Flare's own, and a tenant's.
    let accounts = common::nats::Accounts::new(&["flare", "tenant"]);
    let cluster = NatsCluster::start_configured(1, &accounts.server_config());
    let keys = tempfile::tempdir().unwrap();
    let key = secrets_key(keys.path());
    let creds = keys.path().join("flare.creds");
    std::fs::write(&creds, accounts.creds("flare")).unwrap();
    let url = cluster.url(0);

    // Without credentials, or with a file that holds none, a clear error.
    let (err, untouched) =
        failed_start(&["--cluster", &url, "--node-name", "a", "--secrets-key", &key]);
    assert!(
        err.contains(&format!("cannot reach NATS at {url}")),
        "{err}"
    );
    assert!(untouched);
    let junk = keys.path().join("junk.creds");
    std::fs::write(&junk, "not credentials").unwrap();
    let (err, _) = failed_start(&[
        "--cluster",
        &url,
        "--nats-creds",
        junk.to_str().unwrap(),
        "--node-name",
        "a",
        "--secrets-key",
        &key,
    ]);
    assert!(
        err.contains(&format!(
            "cannot read the NATS credentials {}",
            junk.display()
        )),
        "{err}"
    );

    // With its account's credentials the node keeps its state there.
    let a = common::Server::start_with(&[
        "--cluster",
        &url,
        "--nats-creds",
        creds.to_str().unwrap(),
        "--node-name",
        "a",
        "--secrets-key",
        &key,
    ]);
    a.create("hello", "hello_rust", &[]);
    assert_eq!(a.get("/fn/hello").status(), 200);
    assert_eq!(node_names(&a), ["a"]);

    // A tenant on the same server, in its own account, sees none of it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tenant_creds = keys.path().join("tenant.creds");
    std::fs::write(&tenant_creds, accounts.creds("tenant")).unwrap();
    let streams: Vec<String> = runtime.block_on(async {
        let client = async_nats::ConnectOptions::with_credentials_file(&tenant_creds)
            .await
            .unwrap()
            .connect(&url)
            .await
            .unwrap();
        let js = jetstream::new(client);
        js.stream_names()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .map(|name| name.unwrap())
            .collect()
    });
    assert!(streams.is_empty(), "the tenant sees {streams:?}");
    // And a trigger on that server, which carries no credentials, is
    // refused by NATS itself (Flare's own guard is for a NATS without
    // accounts).
    let refused = snooping_trigger(&a, "hello", &url);
    assert!(refused.to_lowercase().contains("authoriz"), "{refused}");
}

#[test]
fn a_nats_trigger_shares_its_messages_across_nodes_and_survives_a_kill() {
    use futures::StreamExt;
    let cluster = NatsCluster::start(1);
    let broker = NatsCluster::start(1);
    let (_keys, _, a, b, c) = three_nodes(&cluster);
    a.python_env("1");
    a.create_python("worker", "mq.py", &[]);
    worker_trigger(&a, "jobs", &broker, &["--concurrency", "2"]);
    let mut nodes = vec![a, b, c];
    // Not ordered: every node consumes (one durable, shared).
    for node in &nodes {
        common::eventually(Duration::from_secs(30), || {
            (mq_status(node, "jobs")["connected"] == true).then_some(())
        });
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let js = jetstream_of(&broker, &runtime);
    let client = js.client();
    let mut answers = runtime.block_on(client.subscribe("jobs.out")).unwrap();
    runtime.block_on(client.flush()).unwrap();
    const N: usize = 120;
    runtime.block_on(async {
        for i in 0..N {
            js.publish("jobs.in.all", format!("slow-{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let mut answered = std::collections::HashSet::new();
    let mut next = |answered: &mut std::collections::HashSet<String>| {
        let m = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(90), answers.next()).await })
            .expect("answers keep coming")
            .unwrap();
        answered.insert(String::from_utf8(m.payload.to_vec()).unwrap());
    };

    // More than one node takes messages; then one that did is killed.
    let processed =
        |node: &common::Server| mq_status(node, "jobs")["processed"].as_u64().unwrap_or(0);
    let busy = common::eventually(Duration::from_secs(60), || {
        next(&mut answered);
        let busy: Vec<usize> = (0..3).filter(|i| processed(&nodes[*i]) > 0).collect();
        (busy.len() >= 2).then_some(busy)
    });
    nodes.remove(busy[0]).kill9();

    // Every message is answered (what the dead node held comes back after
    // the ack wait).
    while answered.len() < N {
        next(&mut answered);
    }
    for i in 0..N {
        assert!(
            answered.contains(&format!("processed:slow-{i}")),
            "{i} lost"
        );
    }
}

#[test]
fn a_redis_trigger_shares_its_entries_across_nodes_and_claims_a_dead_nodes() {
    use std::io::Write;
    let cluster = NatsCluster::start(1);
    let (_keys, mut nodes, queues) = worker_on_three_nodes(&cluster, "redis", &[], |_| {});
    let Queues {
        input,
        output,
        trigger,
    } = queues;
    const N: usize = 300;
    let mut cli = std::process::Command::new("redis-cli")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = cli.stdin.take().unwrap();
    for i in 0..N {
        writeln!(stdin, "XADD {input} * payload slow-{i}").unwrap();
    }
    drop(stdin);
    assert!(cli.wait().unwrap().success());

    // Each node is its own consumer of the group; kill -9 one that holds
    // entries it has read and not acknowledged.
    let group = format!("flare-{trigger}");
    let holding = common::eventually(Duration::from_secs(30), || {
        let pending = common::redis(&["--raw", "XPENDING", &input, &group]);
        let lines: Vec<&str> = pending.lines().collect();
        // total, first id, last id, then consumer / count pairs.
        let holders: Vec<&str> = lines.get(3..)?.chunks(2).map(|pair| pair[0]).collect();
        let consumers: std::collections::HashSet<&str> = holders.iter().copied().collect();
        (consumers.len() >= 2).then(|| holders[0].rsplit('-').next().unwrap().to_string())
    });
    let index = ["a", "b", "c"].iter().position(|n| *n == holding).unwrap();
    nodes.remove(index).kill9();
    // What it held stays pending under its name: only a claim moves it.
    let pending = common::redis(&["--raw", "XPENDING", &input, &group]);
    let lines: Vec<&str> = pending.lines().collect();
    let dead = format!("{group}-{holding}");
    let held = lines[3..]
        .chunks(2)
        .find(|pair| pair[0] == dead)
        .map_or(0, |pair| pair[1].parse::<u64>().unwrap());
    assert!(held > 0, "the killed node held nothing: {pending}");

    // Every entry is answered: the dead node's after they have been idle
    // for 30 s, claimed by a live node.
    let answered = common::eventually(Duration::from_secs(120), || {
        let out = common::redis(&["--raw", "XRANGE", &output, "-", "+"]);
        let answered: std::collections::HashSet<String> = out
            .lines()
            .filter(|l| l.starts_with("processed:"))
            .map(str::to_string)
            .collect();
        (answered.len() == N).then_some(answered)
    });
    for i in 0..N {
        assert!(
            answered.contains(&format!("processed:slow-{i}")),
            "{i} lost"
        );
    }
    common::redis(&["DEL", &input, &output]);
}

#[test]
fn an_amqp_trigger_has_a_competing_consumer_on_every_node_and_survives_a_kill() {
    use lapin::options::QueueDeleteOptions;
    let cluster = NatsCluster::start(1);
    let (_keys, mut nodes, queues) = worker_on_three_nodes(&cluster, "amqp", &[], |_| {});
    let Queues {
        input,
        output,
        trigger,
    } = queues;

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let (_connection, channel) = runtime.block_on(common::amqp_channel());
    const N: usize = 200;
    runtime.block_on(async {
        for i in 0..N {
            common::amqp_publish(&channel, "", &input, &format!("slow-{i}")).await;
        }
    });

    // More than one node takes messages; one that did is killed while
    // messages remain (RabbitMQ requeues what its connection held).
    let processed =
        |node: &common::Server| mq_status(node, &trigger)["processed"].as_u64().unwrap_or(0);
    let busy = common::eventually(Duration::from_secs(30), || {
        let busy: Vec<usize> = (0..3).filter(|i| processed(&nodes[*i]) > 0).collect();
        (busy.len() >= 2).then_some(busy)
    });
    nodes.remove(busy[0]).kill9();

    let answered = runtime.block_on(async {
        let got = common::amqp_take(&channel, &output, |got| {
            got.iter().collect::<std::collections::HashSet<_>>().len() >= N
        })
        .await;
        for queue in [&input, &output] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        got
    });
    for i in 0..N {
        assert!(
            answered.contains(&format!("processed:slow-{i}")),
            "{i} lost"
        );
    }
}

#[test]
fn a_kafka_trigger_splits_its_partitions_across_nodes_and_survives_a_kill() {
    use rdkafka::consumer::Consumer;
    let (mock, kafka) = common::kafka::Kafka::start(&[]);
    let cluster = NatsCluster::start(1);
    let url = kafka.url();
    let (_keys, mut nodes, queues) =
        worker_on_three_nodes(&cluster, "kafka", &["--broker", &url], |queues| {
            mock.create_topic(&queues.input, 6, 1).unwrap();
            mock.create_topic(&queues.output, 1, 1).unwrap();
        });
    let Queues {
        input,
        output,
        trigger,
    } = queues;
    let answers = kafka.reader("cluster-test", &output);
    const N: usize = 120;
    for i in 0..N {
        kafka.send(
            &input,
            &format!("k{i}"),
            Some((i % 6) as i32),
            &format!("slow-{i}"),
        );
    }

    // The group shares the partitions out: more than one node processes;
    // one that did is killed, and the group gives its partitions to the
    // others, from their last committed offsets.
    let processed =
        |node: &common::Server| mq_status(node, &trigger)["processed"].as_u64().unwrap_or(0);
    let busy = common::eventually(Duration::from_secs(60), || {
        let busy: Vec<usize> = (0..3).filter(|i| processed(&nodes[*i]) > 0).collect();
        (busy.len() >= 2).then_some(busy)
    });
    nodes.remove(busy[0]).kill9();
    for i in 0..N {
        kafka.send(
            &input,
            &format!("k{i}"),
            Some((i % 6) as i32),
            &format!("slow-after-{i}"),
        );
    }
    let mut answered = std::collections::HashSet::new();
    while answered.len() < 2 * N {
        answered.extend(kafka.read(&answers, 1));
    }
    for i in 0..N {
        assert!(
            answered.contains(&format!("processed:slow-{i}")),
            "{i} lost"
        );
        assert!(
            answered.contains(&format!("processed:slow-after-{i}")),
            "after-{i} lost"
        );
    }
    answers.unsubscribe();
}
