//! NATS JetStream: a durable pull consumer per trigger (`flare-<trigger>`)
//! on the stream that holds the topic (created as `FLARE_<TRIGGER>` when no
//! stream does). Answers are published to the response / error subjects;
//! then the message is acknowledged. Unacknowledged messages are redelivered
//! by JetStream after the ack wait. With `ordered`, messages of one subject
//! run one at a time and different subjects side by side.

use std::sync::Arc;
use std::time::Duration;

use async_nats::PublishErrorKind;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;

use super::{
    Context, MAX_EXTRA_DELIVERIES, MAX_HEADER_TEXT, Message, Outcome, TraceContext, dispatch,
    one_line,
};

/// How long JetStream waits for an ack before redelivering; a message being
/// worked on is kept alive with progress acks (see [`handle`]).
const ACK_WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn consume(context: Arc<Context>) -> Result<(), String> {
    let context: &Context = &context;
    let spec = &context.spec;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(spec.broker_url())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", spec.broker_url()))?;
    if context
        .reserved
        .as_ref()
        .is_some_and(|reserved| reserved.holds(&client.server_info()))
    {
        return Err(format!(
            "{} is the NATS that holds this Flare cluster's own state, which no trigger may use; use another NATS, or give Flare an account of its own (--nats-creds)",
            spec.broker_url()
        ));
    }
    let js = jetstream::new(client.clone());
    let stream = match js.stream_by_subject(&spec.topic).await {
        Ok(name) => js.get_stream(name).await.map_err(|e| e.to_string())?,
        Err(_) => {
            let name = stream_name(&context.broker_name());
            let mut stream = js
                .get_or_create_stream(stream::Config {
                    name,
                    subjects: vec![spec.topic.clone()],
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create a stream for {}: {e}", spec.topic))?;
            // Ours, and made for an earlier trigger of this name on
            // another topic: it follows the topic, or nothing would arrive
            // (and the old topic's messages would pile up unread).
            let name = stream.cached_info().config.name.clone();
            let mut config = stream
                .info()
                .await
                .map_err(|e| format!("cannot read stream {name}: {e}"))?
                .config
                .clone();
            if config.subjects != [spec.topic.clone()] {
                config.subjects = vec![spec.topic.clone()];
                js.update_stream(&config).await.map_err(|e| {
                    format!("cannot move stream {} to {}: {e}", config.name, spec.topic)
                })?;
            }
            stream
        }
    };
    let durable = format!("flare-{}", context.broker_name());
    // A durable left by an earlier trigger of this name filters another
    // topic: it goes, since what it had read is of no use to this one.
    if let Ok(mut old) = stream
        .get_consumer::<consumer::pull::Config>(&durable)
        .await
        && let Ok(info) = old.info().await
        && info.config.filter_subject != spec.topic
    {
        stream
            .delete_consumer(&durable)
            .await
            .map_err(|e| format!("cannot replace consumer {durable}: {e}"))?;
    }
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: spec.topic.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                // Bounded redelivery: Flare gives a message up (to the error
                // topic) after maxretries + MAX_EXTRA_DELIVERIES deliveries;
                // JetStream's own bound, a little above, is the backstop.
                max_deliver: i64::from(spec.maxretries)
                    + i64::try_from(MAX_EXTRA_DELIVERIES).unwrap_or(5)
                    + 2,
                max_ack_pending: i64::from(spec.concurrency),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("cannot create consumer: {e}"))?;
    if spec.ordered {
        wait_for_redeliveries(context, &consumer).await?;
    }
    let messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot consume: {e}"))?
        .map(|next| next.map_err(|e| format!("receiving: {e}")));
    context.connected();
    dispatch(
        spec.ordered,
        spec.concurrency,
        messages,
        |message| message.subject.to_string(),
        |message| handle(context, &client, message),
    )
    .await
}

/// Before an ordered trigger consumes: messages an earlier session took
/// and never acknowledged (a node that died, this one before it
/// reconnected) come back only once their ack wait is over, and JetStream
/// then delivers them before any newer one. Consuming before that would
/// run a newer message of a key before an older one, so wait for it.
async fn wait_for_redeliveries(
    context: &Context,
    consumer: &consumer::Consumer<consumer::pull::Config>,
) -> Result<(), String> {
    let mut consumer = consumer.clone();
    let info = consumer
        .info()
        .await
        .map_err(|e| format!("cannot read the consumer: {e}"))?;
    if info.num_ack_pending > 0 {
        tracing::info!(
            trigger = %context.name,
            pending = info.num_ack_pending,
            "waiting for the messages an earlier session left unacknowledged to come back first"
        );
        // The last progress ack of the earlier session was at most
        // ACK_WAIT / 3 before it ended, which is before now; a second of
        // slack for the server's redelivery timer.
        tokio::time::sleep(ACK_WAIT + Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Runs one message, publishes its outcome, then acknowledges it. While the
/// function runs, a progress ack every `ACK_WAIT / 3` keeps JetStream from
/// redelivering a message that is still being worked on, however long the
/// function's timeout.
async fn handle(
    context: &Context,
    client: &async_nats::Client,
    message: jetstream::Message,
) -> Result<(), String> {
    let spec = &context.spec;
    let info = message.info().ok();
    let input = Message {
        key: message.subject.to_string(),
        payload: message.payload.clone(),
        identity: info.as_ref().map_or_else(
            || Message::digest(&message.subject, &message.payload),
            |info| format!("{}:{}", info.stream, info.stream_sequence),
        ),
        delivered: info.map(|info| u64::try_from(info.delivered).unwrap_or(0)),
        trace: message
            .headers
            .as_ref()
            .map(|headers| {
                TraceContext::from_headers(|name| headers.get(name).map(|v| v.as_str().as_bytes()))
            })
            .unwrap_or_default(),
    };
    let handled = context.handle(&input);
    tokio::pin!(handled);
    let mut heartbeat =
        tokio::time::interval_at(tokio::time::Instant::now() + ACK_WAIT / 3, ACK_WAIT / 3);
    let outcome = loop {
        tokio::select! {
            outcome = &mut handled => break outcome,
            _ = heartbeat.tick() => {
                message
                    .ack_with(AckKind::Progress)
                    .await
                    .map_err(|e| format!("extending the ack wait: {e}"))?;
            }
        }
    };
    let outcome = match (outcome, &spec.resptopic) {
        (Outcome::Answered(body), Some(topic)) => {
            match client.publish(topic.clone(), body.clone()).await {
                Ok(()) => Outcome::Answered(body),
                // An answer the broker cannot carry is a failure of this
                // message, not of the connection: redelivering it would
                // fail the same way for ever.
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    Outcome::Failed(format!(
                        "the answer of {} bytes is over the broker's message size limit",
                        body.len()
                    ))
                }
                Err(e) => return Err(format!("publishing the answer: {e}")),
            }
        }
        (outcome, _) => outcome,
    };
    if let (Outcome::Failed(error), Some(topic)) = (&outcome, &spec.errortopic) {
        let mut headers = async_nats::HeaderMap::new();
        // Header values are one line: a multi-line error (a trap's
        // backtrace) would otherwise make the client refuse the header.
        headers.insert("x-flare-error", one_line(error, MAX_HEADER_TEXT).as_str());
        headers.insert(
            "x-flare-source-subject",
            one_line(&message.subject, MAX_HEADER_TEXT).as_str(),
        );
        let published = client
            .publish_with_headers(topic.clone(), headers.clone(), message.payload.clone())
            .await;
        match published {
            Ok(()) => {}
            // The input with the error headers is over the limit: the
            // headers alone still say what failed.
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                headers.insert(
                    "x-flare-payload-dropped",
                    message.payload.len().to_string().as_str(),
                );
                client
                    .publish_with_headers(topic.clone(), headers, bytes::Bytes::new())
                    .await
                    .map_err(|e| format!("publishing the failure: {e}"))?;
            }
            Err(e) => return Err(format!("publishing the failure: {e}")),
        }
    }
    // The ack travels on the same connection after the publish: if the
    // server has the ack, it has the answer.
    message
        .ack()
        .await
        .map_err(|e| format!("acknowledging: {e}"))?;
    context.settle(&input, &outcome);
    Ok(())
}

/// The JetStream stream made for a trigger whose topic no stream holds yet.
pub(crate) fn stream_name(broker_name: &str) -> String {
    format!("FLARE_{}", broker_name.to_uppercase().replace('-', "_"))
}
