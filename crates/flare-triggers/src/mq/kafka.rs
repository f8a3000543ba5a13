//! Kafka: a consumer group (`flare-<trigger>`) that commits a message's
//! offset only after its outcome is produced to the response / error topic,
//! so a crash replays from the last committed offset. A partition's messages
//! are handled one at a time in order (so its offsets commit in order, and
//! `ordered` holds for every partition key); partitions go side by side, up
//! to `concurrency`. The broker URL is
//! `kafka://host:port[,host:port...]`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::{Context, Message, Outcome, TraceContext, dispatch, failure_document};

pub(crate) async fn consume(context: Arc<Context>) -> Result<(), String> {
    let context: &Context = &context;
    let spec = &context.spec;
    let brokers = spec
        .broker_url()
        .trim_start_matches("kafka://")
        .trim_end_matches('/');
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("flare-{}", context.broker_name()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .map_err(|e| format!("kafka consumer: {e}"))?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .map_err(|e| format!("kafka producer: {e}"))?;
    // librdkafka connects lazily: ask for metadata to know the broker is there.
    let probe = producer.clone();
    let topic = spec.topic.clone();
    tokio::task::spawn_blocking(move || {
        probe
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(5))
            .map(|_| ())
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot reach {brokers}: {e}"))?;
    consumer
        .subscribe(&[spec.topic.as_str()])
        .map_err(|e| format!("cannot subscribe to {}: {e}", spec.topic))?;
    context.connected();
    // Lanes by partition, always ordered: a partition's offsets commit in
    // order, and partitions run side by side up to `concurrency`.
    let records = consumer
        .stream()
        .map(|next| next.map_err(|e| format!("receiving: {e}")));
    dispatch(
        true,
        spec.concurrency,
        records,
        |record| record.partition().to_string(),
        |record| handle(context, &consumer, &producer, record),
    )
    .await
}

/// Runs one record, produces its outcome, then commits its offset.
async fn handle(
    context: &Context,
    consumer: &StreamConsumer,
    producer: &FutureProducer,
    record: BorrowedMessage<'_>,
) -> Result<(), String> {
    let spec = &context.spec;
    let key = record
        .key()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_else(|| format!("partition-{}", record.partition()));
    let payload = record.payload().unwrap_or_default().to_vec();
    let message = Message {
        key: key.clone(),
        payload: payload.clone().into(),
        identity: format!("{}:{}", record.partition(), record.offset()),
        delivered: None,
        trace: record
            .headers()
            .map(|headers| {
                TraceContext::from_headers(|name| {
                    headers
                        .iter()
                        .find(|h| h.key.eq_ignore_ascii_case(name))
                        .and_then(|h| h.value)
                })
            })
            .unwrap_or_default(),
    };
    let failure =
        |error: &str| failure_document(&[("topic", &spec.topic), ("key", &key)], &payload, error);
    let mut outcome = context.handle(&message).await;
    if let Outcome::Answered(body) = &outcome
        && let Some(topic) = &spec.resptopic
    {
        let sent = producer
            .send(
                FutureRecord::to(topic).key(&key).payload(body.as_ref()),
                Duration::from_secs(10),
            )
            .await;
        match sent {
            Ok(_) => {}
            // An answer the broker cannot carry fails this message; it
            // would fail the same way on every redelivery.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => {
                outcome = Outcome::Failed(format!(
                    "the answer of {} bytes is over the broker's message size limit",
                    body.len()
                ));
            }
            Err((e, _)) => return Err(format!("producing to {topic}: {e}")),
        }
    }
    if let Outcome::Failed(error) = &outcome
        && let Some(topic) = &spec.errortopic
    {
        producer
            .send(
                FutureRecord::to(topic).key(&key).payload(&failure(error)),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| format!("producing to {topic}: {e}"))?;
    }
    // An asynchronous commit: a synchronous one would block a runtime thread
    // for a broker round trip, now that partitions run side by side. The
    // outcome is already produced, so a commit lost to a crash only means the
    // message runs again (at least once), never that it is lost.
    consumer
        .commit_message(&record, CommitMode::Async)
        .map_err(|e| format!("committing: {e}"))?;
    context.settle(&message, &outcome);
    Ok(())
}
