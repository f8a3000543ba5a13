//! The adaptive keep-alive's samples, shared between nodes.
//!
//! Each node learns the gaps between its own invocations of a function
//! (an instance is warm for its own node's next request, so those are the
//! gaps that matter) and shares them: it puts its idle times of each
//! function in the `flare-idle` bucket under `<node>.<function>` and learns
//! the sum of the other nodes' keys. A key is written when its samples
//! changed, and at least every [`REFRESH`] while the node lives; a key
//! not written for [`KEPT`] (the histogram's horizon) no longer counts and
//! the bucket drops it, so a node that left stops counting then.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use flare_scaling::IdleTimes;
use futures::StreamExt;

/// How often a node shares its samples and learns the others'.
pub const EXCHANGE: Duration = Duration::from_secs(10);
/// An unchanged key is written again this often, to outlive [`KEPT`].
const REFRESH: Duration = Duration::from_secs(60 * 60);
/// How long a key outlives its last write: the histogram's four hours.
const KEPT: Duration = Duration::from_secs(4 * 60 * 60);
const BUCKET: &str = "flare-idle";

/// One node's side of the exchange.
pub struct IdleExchange {
    bucket: kv::Store,
    node: String,
    /// The latest value of every other node's key and when it was
    /// written (Unix seconds), kept by a watch.
    others: Arc<Mutex<Others>>,
    /// What this node last wrote of each function, and when.
    written: Mutex<HashMap<Arc<str>, (IdleTimes, Instant)>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for IdleExchange {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

type Others = HashMap<String, (IdleTimes, i64)>;

/// The node and the function a key names: node names have no dot.
fn split_key(key: &str) -> Option<(&str, &str)> {
    key.split_once('.')
}

impl IdleExchange {
    /// Joins the exchange as `node`, creating the bucket when missing.
    pub async fn new(
        js: &jetstream::Context,
        replicas: usize,
        node: &str,
    ) -> Result<IdleExchange, String> {
        let bucket = crate::kv_bucket(
            js,
            BUCKET,
            "Flare adaptive keep-alive: each node's idle times per function",
            replicas,
            Some(KEPT),
        )
        .await?;
        let others = Arc::new(Mutex::new(HashMap::new()));
        let watch = tokio::spawn(follow(bucket.clone(), node.to_string(), others.clone()));
        Ok(IdleExchange {
            bucket,
            node: node.to_string(),
            others,
            written: Mutex::default(),
            watch,
        })
    }

    /// Writes this node's samples (`own`, by function) where they changed,
    /// and returns, for each of those functions, the sum of the other
    /// nodes' samples. A write NATS refuses is tried at the next exchange.
    pub async fn share(&self, own: Vec<(Arc<str>, IdleTimes)>) -> Vec<(Arc<str>, IdleTimes)> {
        for (function, times) in &own {
            let due = match self.written.lock() {
                Ok(written) => match written.get(function) {
                    Some((last, at)) => last != times || at.elapsed() >= REFRESH,
                    None => true,
                },
                Err(_) => false,
            };
            if !due {
                continue;
            }
            let Ok(value) = serde_json::to_vec(times) else {
                continue;
            };
            let key = format!("{}.{function}", self.node);
            match self.bucket.put(&key, value.into()).await {
                Ok(_) => {
                    if let Ok(mut written) = self.written.lock() {
                        written.insert(function.clone(), (times.clone(), Instant::now()));
                    }
                }
                Err(e) => {
                    tracing::debug!("NATS did not take the idle times of {function}: {e}");
                    break;
                }
            }
        }
        let Ok(mut others) = self.others.lock() else {
            return Vec::new();
        };
        // Expiry by age leaves no mark in a watch: drop what aged out here.
        let oldest = chrono::Utc::now().timestamp() - KEPT.as_secs() as i64;
        others.retain(|_, (_, written)| *written >= oldest);
        own.into_iter()
            .map(|(function, _)| {
                let mut sum = IdleTimes::default();
                for (key, (times, _)) in others.iter() {
                    if split_key(key).is_some_and(|(_, f)| f == &*function) {
                        sum.add(times);
                    }
                }
                (function, sum)
            })
            .collect()
    }
}

/// Keeps `others` equal to the bucket's keys of nodes other than `node`,
/// watching again after NATS comes back.
async fn follow(bucket: kv::Store, node: String, others: Arc<Mutex<Others>>) {
    loop {
        match bucket.watch_all_from_revision(1).await {
            Ok(mut entries) => {
                while let Some(entry) = entries.next().await {
                    let Ok(entry) = entry else { break };
                    let Some((from, _)) = split_key(&entry.key) else {
                        continue;
                    };
                    if from == node {
                        continue;
                    }
                    let Ok(mut others) = others.lock() else {
                        return;
                    };
                    match entry.operation {
                        kv::Operation::Put => match serde_json::from_slice(&entry.value) {
                            Ok(times) => {
                                let written = entry.created.unix_timestamp();
                                others.insert(entry.key, (times, written));
                            }
                            Err(e) => {
                                tracing::warn!("idle times {:?} are not: {e}", entry.key);
                                others.remove(&entry.key);
                            }
                        },
                        kv::Operation::Delete | kv::Operation::Purge => {
                            others.remove(&entry.key);
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("cannot watch the idle times: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
