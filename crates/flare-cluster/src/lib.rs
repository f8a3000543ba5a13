//! Cluster mode: Flare nodes that find each other on NATS JetStream.
//!
//! Every node runs the whole of Flare and joins the cluster by connecting
//! to NATS. What must be single is a JetStream primitive, never a protocol
//! of ours: a node's membership is a key in the `flare-nodes` KV bucket,
//! written every [`HEARTBEAT`] and dropped by the bucket itself
//! ([`NODE_TTL`], the bucket's `max_age`) once its node stops writing. A
//! node that is killed is gone from the list within [`NODE_TTL`]; one that
//! stops cleanly deletes its key on the way out.

pub mod idle;
pub mod invocations;
pub mod leases;
pub mod logs;
pub mod metrics;
pub mod packages;
pub mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use flare_model::{Error, ErrorCode};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// How often a node says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a node that stopped saying so stays in the list.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// The bucket that holds one key per live node.
const NODES_BUCKET: &str = "flare-nodes";
/// How long joining may wait for NATS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Replicas of the cluster's buckets when the NATS cluster has the servers
/// for them (a single server holds one).
const REPLICAS: usize = 3;

/// One node as the others see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub name: String,
    /// Where its router serves functions.
    pub address: String,
    /// Where its API answers.
    pub api: String,
    pub version: String,
    /// Functions it serves without a cold start, and requests in flight.
    pub functions_warm: u64,
    pub busy: u64,
    /// When it started and when it last said it is alive (RFC 3339, UTC).
    pub started: String,
    pub heartbeat: String,
}

/// What a node reports of itself with each heartbeat.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub functions_warm: u64,
    pub busy: u64,
}

impl NodeView {
    /// This node, starting now.
    pub fn new(name: &str, address: String, api: String) -> NodeView {
        let started = now_text();
        NodeView {
            name: name.to_string(),
            address,
            api,
            version: env!("CARGO_PKG_VERSION").to_string(),
            functions_warm: 0,
            busy: 0,
            heartbeat: started.clone(),
            started,
        }
    }

    /// This node as of now, under `load`.
    fn now(&self, load: Load) -> NodeView {
        NodeView {
            functions_warm: load.functions_warm,
            busy: load.busy,
            heartbeat: now_text(),
            ..self.clone()
        }
    }
}

/// Who a node serves with: itself alone (the embedded store), or a cluster.
pub enum Membership {
    Alone(NodeView),
    Cluster(Arc<Cluster>),
}

impl Membership {
    /// The live nodes, by name; `load` is this node's own, for a node alone.
    pub async fn nodes(&self, load: Load) -> Result<Vec<NodeView>, Error> {
        match self {
            Membership::Alone(me) => Ok(vec![me.now(load)]),
            Membership::Cluster(cluster) => cluster.nodes().await,
        }
    }

    /// This node's name in its cluster; `None` for a node alone.
    pub fn node_name(&self) -> Option<&str> {
        match self {
            Membership::Alone(_) => None,
            Membership::Cluster(cluster) => Some(cluster.name()),
        }
    }
}

/// This node's membership of a cluster.
pub struct Cluster {
    js: jetstream::Context,
    nodes: kv::Store,
    me: NodeView,
    servers: String,
    replicas: usize,
}

fn unavailable(message: String) -> Error {
    Error::new(ErrorCode::Unavailable, message)
}

/// Whether `name` can name a node: the rule every Flare name follows (a
/// DNS label, so it fits a host name and a KV key).
pub fn check_node_name(name: &str) -> Result<(), Error> {
    flare_model::validate_name("node name", name)
}

/// The NATS servers in `servers` (comma-separated URLs).
fn server_addrs(servers: &str) -> Result<Vec<async_nats::ServerAddr>, Error> {
    let addrs: Vec<_> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| Error::invalid(format!("invalid NATS URL {url:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(Error::invalid(
            "--cluster needs at least one NATS URL (nats://host:4222)",
        ));
    }
    Ok(addrs)
}

/// Now, as RFC 3339 in UTC with milliseconds.
fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Cluster {
    /// Joins the cluster on the NATS servers in `servers` as node `name`,
    /// with `creds` (a NATS credentials file) when given. An unreachable
    /// NATS is an error naming the servers.
    pub async fn join(
        servers: &str,
        creds: Option<&Path>,
        name: &str,
        address: String,
        api: String,
    ) -> Result<Cluster, Error> {
        check_node_name(name)?;
        let addrs = server_addrs(servers)?;
        let mut options = async_nats::ConnectOptions::new().connection_timeout(CONNECT_TIMEOUT);
        if let Some(creds) = creds {
            options = options.credentials_file(creds).await.map_err(|e| {
                Error::invalid(format!(
                    "cannot read the NATS credentials {}: {e}",
                    creds.display()
                ))
            })?;
        }
        let client = tokio::time::timeout(CONNECT_TIMEOUT * 2, options.connect(addrs))
            .await
            .map_err(|_| unavailable(format!("cannot reach NATS at {servers}: no answer")))?
            .map_err(|e| unavailable(format!("cannot reach NATS at {servers}: {e}")))?;
        let js = jetstream::new(client);
        let nodes = match js.get_key_value(NODES_BUCKET).await {
            Ok(nodes) => nodes,
            Err(_) => create_bucket(&js, servers).await?,
        };
        // Every bucket gets the replicas the nodes' bucket got.
        let replicas = match nodes.status().await {
            Ok(status) => status.info.config.num_replicas.max(1),
            Err(_) => 1,
        };
        Ok(Cluster {
            js,
            nodes,
            me: NodeView::new(name, address, api),
            servers: servers.to_string(),
            replicas,
        })
    }

    /// This node's name.
    pub fn name(&self) -> &str {
        &self.me.name
    }

    /// The cluster's JetStream, for its stores.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Replicas of each of the cluster's buckets.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The NATS servers, as given.
    pub fn servers(&self) -> &str {
        &self.servers
    }

    /// Writes this node's record now.
    pub async fn beat(&self, load: Load) -> Result<(), Error> {
        let me = self.me.now(load);
        let value = serde_json::to_vec(&me).map_err(|e| Error::internal(e.to_string()))?;
        self.nodes
            .put(&me.name, value.into())
            .await
            .map(|_| ())
            .map_err(|e| unavailable(format!("NATS at {} refused a heartbeat: {e}", self.servers)))
    }

    /// Says this node is alive every [`HEARTBEAT`] until the task is
    /// dropped or aborted; `load` is asked each time. A heartbeat NATS
    /// does not take is logged, and the next one tried.
    pub fn heartbeat(
        self: &Arc<Self>,
        load: impl Fn() -> Load + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                match cluster.beat(load()).await {
                    Ok(()) if failing => {
                        tracing::info!("heartbeats reach NATS again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!("{e}");
                        failing = true;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        })
    }

    /// The live nodes, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, Error> {
        let failed = |e: &dyn std::fmt::Display| {
            unavailable(format!(
                "cannot list nodes from NATS at {}: {e}",
                self.servers
            ))
        };
        let mut keys = self.nodes.keys().await.map_err(|e| failed(&e))?;
        let mut nodes = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| failed(&e))?;
            // A key may expire between the listing and the read.
            let Some(value) = self.nodes.get(&key).await.map_err(|e| failed(&e))? else {
                continue;
            };
            match serde_json::from_slice::<NodeView>(&value) {
                Ok(node) => nodes.push(node),
                Err(e) => tracing::warn!("node record {key:?} is not one: {e}"),
            }
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nodes)
    }

    /// Leaves the cluster: this node's record goes at once.
    pub async fn leave(&self) {
        if let Err(e) = self.nodes.delete(&self.me.name).await {
            tracing::warn!("cannot remove this node from the cluster's list: {e}");
        }
    }
}

/// The KV bucket `name`, created when it is missing: one value per key,
/// `replicas`, and with `max_age` a key goes that long after its last
/// write.
pub(crate) async fn kv_bucket(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
    max_age: Option<Duration>,
) -> Result<kv::Store, String> {
    if let Ok(bucket) = js.get_key_value(name).await {
        return Ok(bucket);
    }
    js.create_key_value(kv::Config {
        bucket: name.into(),
        description: description.into(),
        history: 1,
        num_replicas: replicas,
        max_age: max_age.unwrap_or_default(),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// Creates the nodes bucket, replicated where the NATS cluster can.
async fn create_bucket(js: &jetstream::Context, servers: &str) -> Result<kv::Store, Error> {
    let config = |replicas| kv::Config {
        bucket: NODES_BUCKET.into(),
        description: "Flare nodes: one key per live node".into(),
        history: 1,
        max_age: NODE_TTL,
        num_replicas: replicas,
        ..Default::default()
    };
    match js.create_key_value(config(REPLICAS)).await {
        Ok(bucket) => Ok(bucket),
        // A single server, or too few for three replicas: one.
        Err(first) => js.create_key_value(config(1)).await.map_err(|e| {
            unavailable(format!(
                "cannot create the {NODES_BUCKET} bucket on NATS at {servers}: {first}; with one replica: {e}"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_labels() {
        for good in ["a", "node-1", "n0"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a b", "0a", &"x".repeat(64)] {
            let e = check_node_name(bad).unwrap_err();
            assert!(e.message.contains("invalid node name"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn server_lists_are_checked() {
        assert_eq!(
            server_addrs("nats://127.0.0.1:4222, nats://127.0.0.1:4223")
                .unwrap()
                .len(),
            2
        );
        assert!(server_addrs("").is_err());
        let e = server_addrs("nats://127.0.0.1:notaport").unwrap_err();
        assert!(e.message.contains("notaport"), "{e:?}");
    }

    #[test]
    fn times_are_rfc3339() {
        let now = now_text();
        assert_eq!(now.len(), "2026-12-03T08:10:00.000Z".len(), "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
    }
}
