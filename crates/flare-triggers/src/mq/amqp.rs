//! AMQP 0.9.1 (RabbitMQ): consumes a durable queue with manual acks and a
//! prefetch of the trigger's concurrency (1 when ordered). Answers are
//! published persistently to the response / error queues through the
//! default exchange, then the delivery is acknowledged; RabbitMQ requeues
//! what was delivered but not acknowledged when the connection drops.

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::{Context, Message, Outcome, reconnect_delay};

pub(crate) async fn run(context: Arc<Context>) {
    let mut failures = 0u32;
    loop {
        if let Err(e) = consume(&context).await {
            context.disconnected(e);
            tokio::time::sleep(reconnect_delay(failures)).await;
            failures += 1;
        }
    }
}

async fn consume(context: &Context) -> Result<(), String> {
    let spec = &context.spec;
    let connection = Connection::connect(spec.broker_url(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", spec.broker_url()))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    for queue in [
        Some(&spec.topic),
        spec.resptopic.as_ref(),
        spec.errortopic.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("cannot declare queue {queue}: {e}"))?;
    }
    let limit = if spec.ordered {
        1
    } else {
        spec.concurrency as usize
    };
    channel
        .basic_qos(
            u16::try_from(limit).unwrap_or(u16::MAX),
            BasicQosOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut deliveries = channel
        .basic_consume(
            spec.topic.as_str().into(),
            format!("flare-{}", context.name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume {}: {e}", spec.topic))?;
    context.connected();
    let persistent = BasicProperties::default().with_delivery_mode(2);
    let mut in_flight = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            next = deliveries.next(), if in_flight.len() < limit => {
                let Some(delivery) = next else { return Err("the consumer was cancelled".into()) };
                let delivery = delivery.map_err(|e| format!("receiving: {e}"))?;
                let (channel, persistent) = (channel.clone(), persistent.clone());
                in_flight.push(async move {
                    let message = Message { key: spec.topic.clone(), payload: delivery.data.clone().into() };
                    let (queue, body) = match context.handle(&message).await {
                        Outcome::Answered(body) => (spec.resptopic.as_ref(), body.to_vec()),
                        Outcome::Failed(error) => (
                            spec.errortopic.as_ref(),
                            serde_json::json!({
                                "queue": spec.topic,
                                "payload": String::from_utf8_lossy(&delivery.data),
                                "error": error,
                            })
                            .to_string()
                            .into_bytes(),
                        ),
                    };
                    if let Some(queue) = queue {
                        channel
                            .basic_publish("".into(), queue.as_str().into(), BasicPublishOptions::default(), &body, persistent)
                            .await
                            .map_err(|e| e.to_string())?
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    delivery.ack(BasicAckOptions::default()).await.map_err(|e| format!("acknowledging: {e}"))
                });
            }
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                done.map_err(|e| format!("publishing an outcome: {e}"))?;
            }
        }
    }
}
