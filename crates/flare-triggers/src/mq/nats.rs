//! NATS JetStream: a durable pull consumer per trigger (`flare-<trigger>`)
//! on the stream that holds the topic (created as `FLARE_<TRIGGER>` when no
//! stream does). Answers are published to the response / error subjects;
//! then the message is acknowledged. Unacknowledged messages are redelivered
//! by JetStream after the ack wait.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::{Context, Message, Outcome, reconnect_delay};

pub(crate) async fn run(context: Arc<Context>) {
    let mut failures = 0u32;
    loop {
        match consume(&context).await {
            Ok(()) => return,
            Err(e) => {
                context.disconnected(e);
                tokio::time::sleep(reconnect_delay(failures)).await;
                failures += 1;
            }
        }
    }
}

async fn consume(context: &Context) -> Result<(), String> {
    let spec = &context.spec;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(spec.broker_url())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", spec.broker_url()))?;
    let js = jetstream::new(client.clone());
    let stream = match js.stream_by_subject(&spec.topic).await {
        Ok(name) => js.get_stream(name).await.map_err(|e| e.to_string())?,
        Err(_) => {
            let name = format!("FLARE_{}", context.name.to_uppercase().replace('-', "_"));
            js.get_or_create_stream(stream::Config {
                name,
                subjects: vec![spec.topic.clone()],
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create a stream for {}: {e}", spec.topic))?
        }
    };
    let durable = format!("flare-{}", context.name);
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: spec.topic.clone(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: if spec.ordered {
                    1
                } else {
                    i64::from(spec.concurrency)
                },
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("cannot create consumer: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("cannot consume: {e}"))?;
    context.connected();
    let limit = if spec.ordered {
        1
    } else {
        spec.concurrency as usize
    };
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            next = messages.next(), if in_flight.len() < limit => {
                let Some(next) = next else { return Err("the consumer ended".into()) };
                let message = next.map_err(|e| format!("receiving: {e}"))?;
                let client = client.clone();
                in_flight.push(async move {
                    let input = Message { key: message.subject.to_string(), payload: message.payload.clone() };
                    let outcome = context.handle(&input).await;
                    let published = match (&outcome, &spec.resptopic, &spec.errortopic) {
                        (Outcome::Answered(body), Some(topic), _) => client.publish(topic.clone(), body.clone()).await.map_err(|e| e.to_string()),
                        (Outcome::Failed(error), _, Some(topic)) => {
                            let mut headers = async_nats::HeaderMap::new();
                            headers.insert("x-flare-error", error.as_str());
                            headers.insert("x-flare-source-subject", message.subject.as_str());
                            client.publish_with_headers(topic.clone(), headers, message.payload.clone()).await.map_err(|e| e.to_string())
                        }
                        _ => Ok(()),
                    };
                    published?;
                    // The ack travels on the same connection after the
                    // publish: if the server has the ack, it has the answer.
                    message.ack().await.map_err(|e| format!("acknowledging: {e}"))
                });
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                done.map_err(|e| format!("publishing an outcome: {e}"))?;
            }
        }
    }
}
