//! Redis Streams: one consumer group per trigger (`flare-<trigger>`).
//!
//! Entries are read with XREADGROUP; the payload is the entry's `payload`
//! field (or its first field). On start the consumer first re-reads its own
//! pending entries (read but never acknowledged: a crash), then new ones.
//! Answers go to the response / error streams with XADD, then XACK.

use std::sync::Arc;

use bytes::Bytes;
use redis::AsyncCommands;
use redis::streams::{StreamReadOptions, StreamReadReply};

use super::{Context, MAX_ERROR_TEXT, Message, Outcome, truncated};

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
    // "0": our pending entries first (redelivery after a crash); then ">".
    let mut cursor = "0".to_string();
    loop {
        let options = StreamReadOptions::default()
            .group(&group, &group)
            .count(count)
            .block(1000);
        let reply: StreamReadReply = conn
            .xread_options(&[&spec.topic], &[&cursor], &options)
            .await
            .map_err(|e| format!("reading {}: {e}", spec.topic))?;
        let entries: Vec<_> = reply.keys.into_iter().flat_map(|k| k.ids).collect();
        if entries.is_empty() {
            cursor = ">".into();
            continue;
        }
        let handled = futures::future::join_all(entries.iter().map(|entry| async {
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
            };
            let outcome = context.handle(&message).await;
            (message, outcome)
        }))
        .await;
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
