//! AMQP 0.9.1 (RabbitMQ): consumes a durable queue with manual acks and a
//! prefetch of the trigger's concurrency; with `ordered`, deliveries with
//! the same routing key run one at a time in order. Answers are
//! published persistently to the response / error queues through the
//! default exchange, then the delivery is acknowledged; RabbitMQ requeues
//! what was delivered but not acknowledged when the connection drops.

use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

use super::{Context, Message, Outcome, TraceContext, dispatch, failure_document};

pub(crate) async fn consume(context: Arc<Context>) -> Result<(), String> {
    let context: &Context = &context;
    let spec = &context.spec;
    let connection = Connection::connect(spec.broker_url(), ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", spec.broker_url()))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    // With confirms, awaiting a publish means the broker has the outcome
    // before we acknowledge the input.
    channel
        .confirm_select(ConfirmSelectOptions::default())
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
    channel
        .basic_qos(
            u16::try_from(spec.concurrency).unwrap_or(u16::MAX),
            BasicQosOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let deliveries = channel
        .basic_consume(
            spec.topic.as_str().into(),
            format!("flare-{}", context.broker_name()).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("cannot consume {}: {e}", spec.topic))?;
    context.connected();
    let deliveries = deliveries.map(|next| next.map_err(|e| format!("receiving: {e}")));
    dispatch(
        spec.ordered,
        spec.concurrency,
        deliveries,
        |delivery| delivery.routing_key.to_string(),
        |delivery| handle(context, &channel, delivery),
    )
    .await
}

/// Runs one delivery, publishes its outcome persistently, then acknowledges.
async fn handle(
    context: &Context,
    channel: &lapin::Channel,
    delivery: lapin::message::Delivery,
) -> Result<(), String> {
    let spec = &context.spec;
    let key = delivery.routing_key.to_string();
    let message = Message {
        identity: delivery.properties.message_id().as_ref().map_or_else(
            || Message::digest(&key, &delivery.data),
            |id| id.to_string(),
        ),
        key,
        payload: delivery.data.clone().into(),
        // AMQP says only whether it was delivered before, not how often.
        delivered: None,
        trace: trace_of(&delivery.properties),
    };
    let outcome = context.handle(&message).await;
    let (queue, body) = match &outcome {
        Outcome::Answered(body) => (spec.resptopic.as_ref(), body.to_vec()),
        Outcome::Failed(error) => (
            spec.errortopic.as_ref(),
            failure_document(
                &[("queue", &spec.topic), ("routing_key", &message.key)],
                &delivery.data,
                error,
            ),
        ),
    };
    if let Some(queue) = queue {
        let persistent = BasicProperties::default().with_delivery_mode(2);
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                persistent,
            )
            .await
            .map_err(|e| format!("publishing an outcome: {e}"))?
            .await
            .map_err(|e| format!("publishing an outcome: {e}"))?;
    }
    delivery
        .ack(BasicAckOptions::default())
        .await
        .map_err(|e| format!("acknowledging: {e}"))?;
    context.settle(&message, &outcome);
    Ok(())
}

/// The trace context in a delivery's headers table, as text.
fn trace_of(properties: &lapin::BasicProperties) -> TraceContext {
    let Some(headers) = properties.headers() else {
        return TraceContext::default();
    };
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().as_bytes()),
        _ => None,
    };
    TraceContext::from_headers(text)
}
