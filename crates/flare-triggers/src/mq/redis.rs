//! Redis Streams: one consumer group per trigger (`flare-<trigger>`).
//!
//! Entries are read with XREADGROUP; the payload is the entry's `payload`
//! field (or its first field). On start the consumer first re-reads its own
//! pending entries (read but never acknowledged: a crash), then new ones.
//! Answers go to the response / error streams with XADD, then XACK.
//!
//! In a cluster an unordered trigger is consumed by every node, each its
//! own consumer of the group (`flare-<trigger>-<node>`). What a node that
//! died had read and not acknowledged is claimed by another once it has
//! been idle [`CLAIM_IDLE`] (XAUTOCLAIM, tried every [`CLAIM_EVERY`]); a
//! node working on entries claims them to itself every [`TOUCH`], which
//! keeps them from looking idle however long the function runs. An
//! ordered trigger is one consumer named after the group, on one node at
//! a time (the trigger's lease), which resumes the pending entries of the
//! node before it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
};

use super::{Context, MAX_ERROR_TEXT, Message, Outcome, TraceContext, truncated};

/// How long an entry read and not acknowledged stays with its consumer
/// before another node's claims it (its consumer is gone).
const CLAIM_IDLE: Duration = Duration::from_secs(30);
/// How often a node looks for such entries.
const CLAIM_EVERY: Duration = Duration::from_secs(5);
/// How often a node working on entries says they are still its own.
const TOUCH: Duration = Duration::from_secs(10);

pub(crate) async fn consume(context: Arc<Context>) -> Result<(), String> {
    let context: &Context = &context;
    let spec = &context.spec;
    let client = redis::Client::open(spec.broker_url()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", spec.broker_url()))?;
    let group = format!("flare-{}", context.broker_name());
    let created: redis::RedisResult<()> =
        conn.xgroup_create_mkstream(&spec.topic, &group, "$").await;
    if let Err(e) = created
        && !e.to_string().contains("BUSYGROUP")
    {
        return Err(format!("cannot create consumer group: {e}"));
    }
    context.connected();
    let count = if spec.ordered {
        1
    } else {
        spec.concurrency as usize
    };
    // One consumer per node for an unordered trigger in a cluster; the
    // group's name otherwise (a node alone, or the lease holder of an
    // ordered trigger, which takes over its predecessor's pending entries).
    let (consumer, sharing) = match &context.node {
        Some(node) if !spec.ordered => (format!("{group}-{node}"), true),
        _ => (group.clone(), false),
    };
    // "0": our pending entries first (redelivery after a crash); then ">".
    let mut cursor = "0".to_string();
    let mut claimed_at = tokio::time::Instant::now();
    loop {
        // Entries a dead node left, when it is time to look for them.
        let mut entries = Vec::new();
        if sharing && claimed_at.elapsed() >= CLAIM_EVERY {
            claimed_at = tokio::time::Instant::now();
            let reply: StreamAutoClaimReply = conn
                .xautoclaim_options(
                    &spec.topic,
                    &group,
                    &consumer,
                    CLAIM_IDLE.as_millis() as u64,
                    "0-0",
                    StreamAutoClaimOptions::default().count(count),
                )
                .await
                .map_err(|e| format!("claiming idle entries of {}: {e}", spec.topic))?;
            entries = reply.claimed;
        }
        if entries.is_empty() {
            let options = StreamReadOptions::default()
                .group(&group, &consumer)
                .count(count)
                .block(1000);
            let reply: StreamReadReply = conn
                .xread_options(&[&spec.topic], &[&cursor], &options)
                .await
                .map_err(|e| format!("reading {}: {e}", spec.topic))?;
            entries = reply.keys.into_iter().flat_map(|k| k.ids).collect();
        }
        if entries.is_empty() {
            cursor = ">".into();
            continue;
        }
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        let handling = futures::future::join_all(entries.iter().map(|entry| async {
            let payload = entry
                .map
                .get("payload")
                .or_else(|| entry.map.values().next())
                .and_then(|v| redis::from_redis_value::<Vec<u8>>(v).ok())
                .unwrap_or_default();
            let message = Message {
                key: spec.topic.clone(),
                payload: Bytes::from(payload),
                identity: entry.id.clone(),
                delivered: None,
                // An entry's other fields are its headers.
                trace: TraceContext::from_headers(|name| match entry.map.get(name) {
                    Some(redis::Value::BulkString(bytes)) => Some(bytes.as_slice()),
                    _ => None,
                }),
            };
            let outcome = context.handle(&message).await;
            (message, outcome)
        }));
        tokio::pin!(handling);
        let mut touch = tokio::time::interval_at(tokio::time::Instant::now() + TOUCH, TOUCH);
        let handled = loop {
            tokio::select! {
                handled = &mut handling => break handled,
                _ = touch.tick(), if sharing => {
                    // Claimed to ourselves: idle again from now.
                    let _: redis::Value = redis::cmd("XCLAIM")
                        .arg(&spec.topic)
                        .arg(&group)
                        .arg(&consumer)
                        .arg(0)
                        .arg(&ids)
                        .arg("JUSTID")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| format!("keeping entries of {} claimed: {e}", spec.topic))?;
                }
            }
        };
        for (message, outcome) in handled {
            let id = &message.identity;
            let published: redis::RedisResult<()> =
                match (&outcome, &spec.resptopic, &spec.errortopic) {
                    (Outcome::Answered(body), Some(topic), _) => {
                        conn.xadd(
                            topic,
                            "*",
                            &[("payload", body.as_ref()), ("source-id", id.as_bytes())],
                        )
                        .await
                    }
                    (Outcome::Failed(error), _, Some(topic)) => {
                        conn.xadd(
                            topic,
                            "*",
                            &[
                                ("payload", message.payload.as_ref()),
                                ("error", truncated(error, MAX_ERROR_TEXT).as_bytes()),
                                ("source-id", id.as_bytes()),
                            ],
                        )
                        .await
                    }
                    _ => Ok(()),
                };
            published.map_err(|e| format!("publishing the outcome of {id}: {e}"))?;
            let _: i64 = conn
                .xack(&spec.topic, &group, &[id])
                .await
                .map_err(|e| format!("acknowledging {id}: {e}"))?;
            context.settle(&message, &outcome);
        }
    }
}
