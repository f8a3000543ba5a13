//! MQTT 3.1.1: a persistent session (client id `flare-<trigger>`, clean
//! session off) subscribed at QoS 1 with manual acknowledgements: the
//! broker redelivers what was not acknowledged when the session resumes.
//! Answers are published at QoS 1; the PUBACK of the input goes after, and
//! PUBACKs leave in the order the messages arrived ([`AcksInOrder`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::Mutex;

use super::{Context, Message, Outcome, dispatch, failure_document};

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

/// MQTT 3.1.1 wants PUBACKs in the order the PUBLISHes arrived
/// [MQTT-4.6.0-2], but messages that run side by side finish in any order:
/// a finished message is acknowledged once every earlier one is.
#[derive(Default)]
struct AcksInOrder {
    /// Packet ids in arrival order, with the message once it is finished.
    pending: VecDeque<(u16, Option<Publish>)>,
}

impl AcksInOrder {
    fn arrived(&mut self, publish: &Publish) {
        if publish.qos != QoS::AtMostOnce {
            self.pending.push_back((publish.pkid, None));
        }
    }

    /// Records `publish` as finished; returns what may be acknowledged now.
    fn finished(&mut self, publish: Publish) -> Vec<Publish> {
        if let Some(slot) = self
            .pending
            .iter_mut()
            .find(|(pkid, done)| *pkid == publish.pkid && done.is_none())
        {
            slot.1 = Some(publish);
        }
        let mut ready = Vec::new();
        while let Some((_, Some(_))) = self.pending.front() {
            if let Some((_, Some(publish))) = self.pending.pop_front() {
                ready.push(publish);
            }
        }
        ready
    }
}

/// Runs one message, publishes its outcome; the caller acknowledges and
/// settles it.
async fn handle(
    context: &Context,
    client: &AsyncClient,
    publish: &Publish,
) -> Result<(Message, Outcome), String> {
    let spec = &context.spec;
    let message = Message {
        key: publish.topic.clone(),
        payload: publish.payload.clone(),
        identity: Message::digest(&publish.topic, &publish.payload),
        // MQTT says only whether it was delivered before (DUP).
        delivered: None,
        // MQTT 3.1.1 messages have no headers to carry a trace context.
        trace: Default::default(),
    };
    let outcome = context.handle(&message).await;
    match (&outcome, &spec.resptopic, &spec.errortopic) {
        (Outcome::Answered(body), Some(topic), _) => client
            .publish(topic.clone(), QoS::AtLeastOnce, false, body.to_vec())
            .await
            .map_err(|e| e.to_string())?,
        (Outcome::Failed(error), _, Some(topic)) => {
            let document = failure_document(&[("topic", &publish.topic)], &publish.payload, error);
            client
                .publish(topic.clone(), QoS::AtLeastOnce, false, document)
                .await
                .map_err(|e| e.to_string())?
        }
        _ => {}
    }
    Ok((message, outcome))
}

/// The largest packet a session takes in: the protocol's own limit, so no
/// message the broker accepted can take the session down (rumqttc's default
/// of 10 KiB did, and the broker then redelivered it for ever). What is
/// held at once is bounded by [`MAX_HELD_BYTES`].
const MAX_INCOMING_PACKET: usize = 268_435_455;
/// The largest packet a session sends: the largest answer Flare publishes
/// (failure documents are far smaller), plus room for the topic.
const MAX_OUTGOING_PACKET: usize = super::MAX_RESPONSE + (64 << 10);

/// Messages a session may hold unacknowledged.
const MAX_UNACKED: usize = 1024;
/// Bytes of messages a session may hold unacknowledged (QoS 0 messages are
/// not bounded by the broker's in-flight window): past it the session is
/// dropped and what was not acknowledged is redelivered. One message is
/// always taken, however large, so none can stall the topic.
const MAX_HELD_BYTES: usize = 64 << 20;

pub(crate) async fn consume(context: Arc<Context>) -> Result<(), String> {
    let spec = &context.spec;
    let (host, port) = endpoint(spec.broker_url())?;
    let mut options = MqttOptions::new(format!("flare-{}", context.broker_name()), host, port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_max_packet_size(MAX_INCOMING_PACKET, MAX_OUTGOING_PACKET);
    let (client, mut events) = AsyncClient::new(options, 64);
    client
        .subscribe(spec.topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| e.to_string())?;
    // The event loop must keep polling (it answers pings and takes acks
    // out), so messages go to a dispatcher task. The broker bounds what
    // reaches it (QoS 1 messages stay in flight until acknowledged); the
    // channel bounds it too, for a broker that does not: past it the
    // session is dropped and what was not acknowledged is redelivered.
    let (mut incoming, messages) = futures::channel::mpsc::channel::<Publish>(MAX_UNACKED);
    let acks = Arc::new(Mutex::new(AcksInOrder::default()));
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dispatcher = {
        let (context, client, acks, held) =
            (context.clone(), client.clone(), acks.clone(), held.clone());
        tokio::spawn(async move {
            let (context, client, acks, held) = (&context, &client, &acks, &held);
            dispatch(
                context.spec.ordered,
                context.spec.concurrency,
                messages.map(Ok),
                |publish| publish.topic.clone(),
                move |publish| async move {
                    let size = publish.payload.len();
                    let handled = handle(context, client, &publish).await;
                    held.fetch_sub(size, std::sync::atomic::Ordering::AcqRel);
                    let (message, outcome) = match handled {
                        Ok(handled) => handled,
                        Err(e) => {
                            // The session is going away; the broker redelivers.
                            tracing::warn!("mq trigger {}: {e}", context.name);
                            return Ok(());
                        }
                    };
                    // The lock is held while acking, so acks leave in order.
                    let mut acks = acks.lock().await;
                    for publish in acks.finished(publish) {
                        if let Err(e) = client.ack(&publish).await {
                            tracing::warn!("mq trigger {}: acknowledging: {e}", context.name);
                        }
                    }
                    context.settle(&message, &outcome);
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
                Event::Incoming(Packet::Publish(publish)) => {
                    let size = publish.payload.len();
                    let before = held.fetch_add(size, std::sync::atomic::Ordering::AcqRel);
                    if before > 0 && before + size > MAX_HELD_BYTES {
                        return Err(format!(
                            "the broker sent more than {MAX_HELD_BYTES} bytes of unacknowledged messages"
                        ));
                    }
                    acks.lock().await.arrived(&publish);
                    incoming.try_send(publish).map_err(|e| {
                        if e.is_full() {
                            format!(
                                "the broker sent more than {MAX_UNACKED} unacknowledged messages"
                            )
                        } else {
                            e.to_string()
                        }
                    })?
                }
                _ => {}
            }
        }
    }
    .await;
    dispatcher.abort();
    polled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(pkid: u16) -> Publish {
        let mut publish = Publish::new("t", QoS::AtLeastOnce, vec![]);
        publish.pkid = pkid;
        publish
    }

    fn pkids(ready: Vec<Publish>) -> Vec<u16> {
        ready.iter().map(|p| p.pkid).collect()
    }

    #[test]
    fn acks_leave_in_arrival_order() {
        let mut acks = AcksInOrder::default();
        for pkid in [1, 2, 3] {
            acks.arrived(&publish(pkid));
        }
        assert!(acks.finished(publish(2)).is_empty(), "1 is still running");
        assert!(acks.finished(publish(3)).is_empty());
        assert_eq!(pkids(acks.finished(publish(1))), [1, 2, 3]);
        acks.arrived(&publish(1));
        assert_eq!(
            pkids(acks.finished(publish(1))),
            [1],
            "packet ids are reused"
        );
    }

    #[test]
    fn qos_0_messages_need_no_ack() {
        let mut acks = AcksInOrder::default();
        acks.arrived(&Publish::new("t", QoS::AtMostOnce, vec![]));
        acks.arrived(&publish(7));
        assert_eq!(pkids(acks.finished(publish(7))), [7]);
    }
}
