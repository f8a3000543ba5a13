//! MQTT 3.1.1: a persistent session (client id `flare-<trigger>`, clean
//! session off) subscribed at QoS 1 with manual acknowledgements: the
//! broker redelivers what was not acknowledged when the session resumes.
//! Answers are published at QoS 1; the PUBACK of the input goes after.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{Context, Message, Outcome, dispatch, reconnect_delay};

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

fn endpoint(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| format!("not an mqtt:// URL: {url}"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) => Ok((
            host.to_string(),
            port.parse().map_err(|_| format!("bad port in {url}"))?,
        )),
        None => Ok((rest.to_string(), 1883)),
    }
}

async fn handle(
    context: &Context,
    client: &AsyncClient,
    publish: rumqttc::Publish,
) -> Result<(), String> {
    let spec = &context.spec;
    let message = Message {
        key: publish.topic.clone(),
        payload: publish.payload.clone(),
    };
    match (
        context.handle(&message).await,
        &spec.resptopic,
        &spec.errortopic,
    ) {
        (Outcome::Answered(body), Some(topic), _) => client
            .publish(topic.clone(), QoS::AtLeastOnce, false, body.to_vec())
            .await
            .map_err(|e| e.to_string())?,
        (Outcome::Failed(error), _, Some(topic)) => {
            let payload = serde_json::json!({
                "topic": publish.topic,
                "payload": String::from_utf8_lossy(&publish.payload),
                "error": error,
            });
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, payload.to_string())
                .await
                .map_err(|e| e.to_string())?
        }
        _ => {}
    }
    client.ack(&publish).await.map_err(|e| e.to_string())
}

async fn consume(context: &Arc<Context>) -> Result<(), String> {
    let spec = &context.spec;
    let (host, port) = endpoint(spec.broker_url())?;
    let mut options = MqttOptions::new(format!("flare-{}", context.name), host, port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(15));
    let (client, mut events) = AsyncClient::new(options, 64);
    client
        .subscribe(spec.topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    // The event loop must keep polling (it answers pings and takes acks
    // out), so messages go to a dispatcher task. The broker bounds what
    // reaches it: QoS 1 messages stay in flight until acknowledged.
    let (incoming, messages) = futures::channel::mpsc::unbounded::<rumqttc::Publish>();
    let dispatcher = {
        let (context, client) = (context.clone(), client.clone());
        tokio::spawn(async move {
            let (context, client) = (&context, &client);
            dispatch(
                context.spec.ordered,
                context.spec.concurrency,
                messages.map(Ok),
                |publish| publish.topic.clone(),
                move |publish| async move {
                    if let Err(e) = handle(context, client, publish).await {
                        // The session is going away; the broker redelivers.
                        tracing::warn!("mq trigger {}: {e}", context.name);
                    }
                    Ok(())
                },
            )
            .await
        })
    };
    let polled = async {
        loop {
            let event = events
                .poll()
                .await
                .map_err(|e| format!("connection to {}: {e}", spec.broker_url()))?;
            match event {
                Event::Incoming(Packet::SubAck(_)) => context.connected(),
                Event::Incoming(Packet::Publish(publish)) => incoming
                    .unbounded_send(publish)
                    .map_err(|e| e.to_string())?,
                _ => {}
            }
        }
    }
    .await;
    dispatcher.abort();
    polled
}
