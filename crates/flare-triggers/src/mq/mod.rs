//! Message-queue triggers: consume a topic, invoke the function for each
//! message, publish its answer, acknowledge.
//!
//! Invariants, whatever the broker:
//! - a message is acknowledged only after its outcome has been published
//!   (response topic on success, error topic after the last retry), so a
//!   crash before that redelivers it: at-least-once;
//! - a failure (5xx, trap, timeout, function missing) is retried with
//!   exponential backoff up to `maxretries`; a 4xx is the function refusing
//!   the message and goes to the error topic at once;
//! - up to `concurrency` messages are handled at once; with `ordered`,
//!   messages with the same key (NATS subject, AMQP routing key, MQTT topic,
//!   Kafka partition, Redis stream) are handled one at a time in arrival
//!   order while different keys go side by side ([`dispatch`]).
//!
//! - redelivery is bounded: a message delivered more than `maxretries` + 5
//!   times (its handling or its outcome keeps failing, or it keeps taking
//!   the connection down) goes to the error topic with the reason and is
//!   acknowledged, instead of looping for ever;
//! - what goes to an error topic is bounded (the input's first 64 KiB, the
//!   reason's first 16 KiB), so it always fits the broker.
//!
//! A broker that is down or goes away is reported in the trigger's status
//! and retried with backoff; the rest of the server is unaffected.
//!
//! In a cluster every node runs every trigger, and the broker shares the
//! messages out (a JetStream durable, a Kafka group, AMQP competing
//! consumers, a Redis group with a consumer per node), except where one
//! consumer must be alone: an `ordered` trigger (per-key order) and an
//! MQTT trigger (one session). Those consume on the node that holds the trigger's
//! lease ([`Leases`]) and on no other; when that node dies, its lease
//! expires and another node takes over, resuming where the broker says
//! the dead one stopped ([`while_held`]).

mod amqp;
mod kafka;
mod mqtt;
mod nats;
mod redis;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use flare_executor::Executor;
use flare_model::{
    Document, ErrorCode, Kind, MessageQueueTriggerSpec, MqKind, Resource, qualified,
};
use flare_store::leases::Leases;
use flare_store::{Change, Follower, Revision, Store, Update, advance};
use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use http_body_util::{BodyExt, Limited};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One message as a connector hands it over.
pub(crate) struct Message {
    /// The ordering key: NATS subject, AMQP routing key, MQTT topic, Kafka
    /// partition key, Redis stream.
    pub key: String,
    pub payload: Bytes,
    /// What names this message across redeliveries: a stream sequence, an
    /// offset, an entry id; where the broker gives none, a digest of key
    /// and payload ([`Message::digest`]).
    pub identity: String,
    /// How many times the broker says it has delivered it, when it says.
    pub delivered: Option<u64>,
    /// The W3C trace context it carries (`traceparent`, `tracestate`),
    /// for brokers whose messages have headers: the function's trace
    /// continues it.
    pub trace: TraceContext,
}

/// A message's W3C trace context, as its headers carried it.
#[derive(Debug, Default, Clone)]
pub(crate) struct TraceContext {
    pub traceparent: Option<http::HeaderValue>,
    pub tracestate: Option<http::HeaderValue>,
}

/// The longest trace header taken from a message: W3C's `tracestate`
/// limit (32 members) fits well within; a longer one is not a trace
/// context but a payload smuggled into the function's headers.
const MAX_TRACE_HEADER: usize = 1024;

impl TraceContext {
    /// From a message's headers, looked up by name: values that fit in an
    /// HTTP header and [`MAX_TRACE_HEADER`], the others dropped.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a [u8]>) -> Self {
        let value = |name| {
            get(name)
                .filter(|v| v.len() <= MAX_TRACE_HEADER)
                .and_then(|v| http::HeaderValue::from_bytes(v).ok())
        };
        TraceContext {
            traceparent: value("traceparent"),
            tracestate: value("tracestate"),
        }
    }

    fn apply(&self, headers: &mut http::HeaderMap) {
        for (name, value) in [
            ("traceparent", &self.traceparent),
            ("tracestate", &self.tracestate),
        ] {
            if let Some(value) = value {
                headers.insert(name, value.clone());
            }
        }
    }
}

impl Message {
    /// An identity for brokers that give messages none of their own.
    pub fn digest(key: &str, payload: &[u8]) -> String {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        payload.hash(&mut hasher);
        format!("{key}#{:016x}", hasher.finish())
    }
}

/// Deliveries a message gets beyond its trigger's retries (which run inside
/// one delivery) before it is given up: room for a few reconnections.
pub(crate) const MAX_EXTRA_DELIVERIES: u64 = 5;
/// Messages whose deliveries are counted at once; beyond, counting starts
/// over (a bound on memory, not on correctness).
const MAX_COUNTED: usize = 100_000;
/// Bytes of the input an error-topic document carries.
const MAX_ERROR_PAYLOAD: usize = 64 << 10;
/// Bytes of the reason an error-topic document carries.
pub(crate) const MAX_ERROR_TEXT: usize = 16 << 10;

/// The document a failed message becomes on an error topic: where it came
/// from (`source`), its payload (as text; the first [`MAX_ERROR_PAYLOAD`]
/// bytes, with its full size) and why it failed. Bounded whatever came in.
pub(crate) fn failure_document(source: &[(&str, &str)], payload: &[u8], error: &str) -> Vec<u8> {
    let mut doc = serde_json::Map::new();
    for (k, v) in source {
        doc.insert((*k).into(), (*v).into());
    }
    let kept = &payload[..payload.len().min(MAX_ERROR_PAYLOAD)];
    doc.insert("payload".into(), String::from_utf8_lossy(kept).into());
    if kept.len() < payload.len() {
        doc.insert("payload_bytes".into(), payload.len().into());
        doc.insert("payload_truncated".into(), true.into());
    }
    doc.insert("error".into(), truncated(error, MAX_ERROR_TEXT).into());
    serde_json::Value::Object(doc).to_string().into_bytes()
}

/// The first `max` bytes of `text` at most, cut at a character boundary.
pub(crate) fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What became of a message.
pub(crate) enum Outcome {
    Answered(Bytes),
    Failed(String),
}

/// What `flare mqt get` shows.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct MqStatus {
    pub connected: bool,
    /// Why it is not connected now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why its last session ended, kept after it reconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// In a cluster: another node consumes this trigger now (it runs on
    /// one node at a time); this one takes over if that node goes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// Sessions restarted after one ended (a broker outage, a dropped
    /// connection, a failure inside the connector).
    #[serde(default)]
    pub restarts: u64,
    pub processed: u64,
    pub failed: u64,
}

/// Shared by a trigger's connector and the component.
pub(crate) struct Context {
    /// The trigger's qualified name (`name.namespace` outside the default
    /// namespace).
    pub name: String,
    /// The qualified name of the function it runs.
    pub function: String,
    pub spec: MessageQueueTriggerSpec,
    executor: Arc<Executor>,
    status: Arc<Mutex<HashMap<String, MqStatus>>>,
    /// Deliveries seen per message identity, until it is settled.
    deliveries: Mutex<HashMap<String, u64>>,
    /// The cluster's own NATS, which is no broker for a trigger.
    pub reserved: Option<ReservedNats>,
    /// This node's name, in a cluster.
    pub node: Option<String>,
}

impl Context {
    /// What names the trigger at its broker (consumer groups, durable
    /// consumers, client ids, NATS streams).
    pub(crate) fn broker_name(&self) -> String {
        broker_name(&self.name)
    }
}

/// A trigger's qualified name as brokers take it: `~` for the dot of a
/// namespace (NATS allows no dot in a name). No name holds a `~`, and the
/// NATS stream name maps `-` to `_`, so a `__` separator could meet a name
/// with `--` in another namespace; `~` cannot. Unchanged in the default
/// namespace, so existing consumers keep their place.
pub(crate) fn broker_name(qualified: &str) -> String {
    qualified.replace('.', "~")
}

pub(crate) const MAX_RESPONSE: usize = 16 << 20;
/// Longest text put in a message header (an error, a subject).
pub(crate) const MAX_HEADER_TEXT: usize = 1024;

/// `text` as one line of at most `max` bytes: control characters (CR, LF,
/// NUL, escapes) become spaces, so it is safe as a header value whatever a
/// function printed.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

impl Context {
    pub fn report(&self, update: impl FnOnce(&mut MqStatus)) {
        if let Ok(mut all) = self.status.lock() {
            update(all.entry(self.name.clone()).or_default());
        }
    }

    pub fn connected(&self) {
        self.report(|s| {
            s.connected = true;
            s.standby = false;
            s.error = None;
        });
    }

    /// Another node holds the trigger's lease.
    fn standing_by(&self) {
        self.report(|s| {
            s.connected = false;
            s.standby = true;
            s.error = None;
        });
    }

    pub fn disconnected(&self, error: String) {
        tracing::warn!("mq trigger {}: {error}; retrying", self.name);
        self.report(|s| {
            s.connected = false;
            s.standby = false;
            s.last_error = Some(error.clone());
            s.error = Some(error);
            s.restarts += 1;
        });
    }

    /// Counts one delivery of `message`; how many it has had.
    fn delivery(&self, message: &Message) -> u64 {
        let Ok(mut seen) = self.deliveries.lock() else {
            return 1;
        };
        if seen.len() >= MAX_COUNTED && !seen.contains_key(&message.identity) {
            seen.clear();
        }
        let count = seen.entry(message.identity.clone()).or_default();
        *count += 1;
        (*count).max(message.delivered.unwrap_or(0))
    }

    /// `message` is done with: its outcome is with the broker and it is
    /// acknowledged. Counts it, once, as processed or failed.
    pub fn settle(&self, message: &Message, outcome: &Outcome) {
        if let Ok(mut seen) = self.deliveries.lock() {
            seen.remove(&message.identity);
        }
        match outcome {
            Outcome::Answered(_) => self.report(|s| s.processed += 1),
            Outcome::Failed(_) => self.report(|s| s.failed += 1),
        }
    }

    /// Runs the function for one message, with retries; a message that has
    /// been delivered too often is given up without running.
    pub async fn handle(&self, message: &Message) -> Outcome {
        let deliveries = self.delivery(message);
        let most = u64::from(self.spec.maxretries) + MAX_EXTRA_DELIVERIES;
        if deliveries > most {
            return Outcome::Failed(format!(
                "given up after {deliveries} deliveries: its handling or its outcome kept failing"
            ));
        }
        let mut attempt = 0u32;
        loop {
            let request = crate::cloud_event(
                &format!("dev.flare.mq.{}", self.spec.mqtype.as_str()),
                &format!("{}/{}", self.spec.mqtype.as_str(), self.spec.topic),
                &self.name,
                Utc::now(),
                message.payload.clone(),
            );
            let mut request = request;
            if let Ok(subject) = http::HeaderValue::from_str(&message.key) {
                request.headers_mut().insert("ce-subject", subject);
            }
            message.trace.apply(request.headers_mut());
            let invoked = self.executor.invoke(&self.function, request).await;
            let (retry, error) = match invoked.result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body = Limited::new(response.into_body(), MAX_RESPONSE)
                        .collect()
                        .await;
                    match body {
                        Ok(body) if status < 400 => {
                            return Outcome::Answered(body.to_bytes());
                        }
                        Ok(body) => (
                            status >= 500,
                            format!(
                                "function answered {status}: {}",
                                String::from_utf8_lossy(&body.to_bytes())
                            ),
                        ),
                        Err(e) => (true, format!("cannot read the response: {e}")),
                    }
                }
                Err(e) => (e.code != ErrorCode::InvalidArgument, e.owner_message()),
            };
            if !retry || attempt >= self.spec.maxretries {
                return Outcome::Failed(error);
            }
            attempt += 1;
            let backoff = Duration::from_millis(100 << attempt.min(6)).min(Duration::from_secs(5));
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Which messages may run now. At most `limit` messages are held (running
/// or waiting); with `ordered`, a message whose key already has one running
/// waits behind it, in arrival order. Holding at most `limit` in all keeps
/// memory bounded and never runs more than `limit` at once; the price is
/// that a hot key can fill every slot and make other keys wait, as one slow
/// partition does in Kafka.
struct Lanes<T> {
    ordered: bool,
    limit: usize,
    held: usize,
    /// Keys with a message running, and what waits behind it.
    busy: HashMap<String, VecDeque<T>>,
}

impl<T> Lanes<T> {
    fn new(ordered: bool, limit: u32) -> Self {
        Lanes {
            ordered,
            limit: (limit as usize).max(1),
            held: 0,
            busy: HashMap::new(),
        }
    }

    fn has_room(&self) -> bool {
        self.held < self.limit
    }

    /// Takes a message in; gives it back if it may start now.
    fn admit(&mut self, key: &str, message: T) -> Option<T> {
        self.held += 1;
        if !self.ordered {
            return Some(message);
        }
        match self.busy.get_mut(key) {
            Some(waiting) => {
                waiting.push_back(message);
                None
            }
            None => {
                self.busy.insert(key.to_string(), VecDeque::new());
                Some(message)
            }
        }
    }

    /// A message of `key` is done; gives the next one of that key, if any.
    fn finish(&mut self, key: &str) -> Option<T> {
        self.held = self.held.saturating_sub(1);
        if !self.ordered {
            return None;
        }
        let next = self.busy.get_mut(key)?.pop_front();
        if next.is_none() {
            self.busy.remove(key);
        }
        next
    }
}

/// A connector's consume loop: takes messages from `incoming` while there is
/// room (see [`Lanes`]) and runs `handle` on each. `handle` records the
/// outcome and acknowledges; its error (the connection is gone) ends the
/// loop so the connector reconnects, and what was not acknowledged is
/// redelivered.
pub(crate) async fn dispatch<T, F>(
    ordered: bool,
    concurrency: u32,
    mut incoming: impl Stream<Item = Result<T, String>> + Unpin,
    key: impl Fn(&T) -> String,
    handle: impl Fn(T) -> F,
) -> Result<(), String>
where
    F: Future<Output = Result<(), String>>,
{
    let mut lanes = Lanes::new(ordered, concurrency);
    let mut running = FuturesUnordered::new();
    let start = |key: String, message: T| {
        let handled = handle(message);
        async move { (key, handled.await) }
    };
    loop {
        tokio::select! {
            next = incoming.next(), if lanes.has_room() => {
                let Some(message) = next else {
                    return Err("the consumer ended".into());
                };
                let message = message?;
                let key = key(&message);
                if let Some(message) = lanes.admit(&key, message) {
                    running.push(start(key, message));
                }
            }
            Some((key, handled)) = running.next(), if !running.is_empty() => {
                handled?;
                if let Some(message) = lanes.finish(&key) {
                    running.push(start(key, message));
                }
            }
        }
    }
}

/// A session that lasted this long was healthy: the next reconnection
/// starts again from the shortest delay.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Keeps a connector consuming: each failure is reported (`flare mqt get`,
/// the log) and followed by a reconnection after a backoff that grows while
/// attempts keep failing.
///
/// This is the one supervisor of every connector: a session that ends for
/// any reason, a panic included, is reported and restarted, so a trigger
/// never dies silently while `flare mqt get` still shows it healthy.
async fn keep_consuming<F, Fut>(context: Arc<Context>, consume: F)
where
    F: Fn(Arc<Context>) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut failures = 0u32;
    loop {
        let started = tokio::time::Instant::now();
        let mut session = AbortOnDrop(tokio::spawn(consume(context.clone())));
        let error = match (&mut session.0).await {
            Ok(Ok(())) => "the consumer ended".to_string(),
            Ok(Err(error)) => error,
            Err(join) if join.is_panic() => format!("the consumer failed: {join}"),
            // Cancelled: the server is shutting down.
            Err(_) => return,
        };
        context.disconnected(error);
        if started.elapsed() >= HEALTHY_SESSION {
            failures = 0;
        }
        let backoff = Duration::from_millis(200 << failures.min(5)).min(Duration::from_secs(5));
        tokio::time::sleep(backoff).await;
        failures += 1;
    }
}

/// A session task that ends with its supervisor (a trigger deleted or
/// replaced aborts the supervisor; its session must not live on).
struct AbortOnDrop(JoinHandle<Result<(), String>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether a trigger consumes on one node of a cluster at a time: an
/// ordered one keeps per-key order only with one consumer, and an MQTT
/// session (its client id) is one. (MQTT shared subscriptions would share
/// the messages, but a broker such as mosquitto keeps what it sent a
/// member that died for that member's return: nothing would take it
/// over.)
fn one_node_at_a_time(spec: &MessageQueueTriggerSpec) -> bool {
    spec.ordered || spec.mqtype == MqKind::Mqtt
}

/// A trigger's connector, kept consuming.
fn session(context: Arc<Context>) -> BoxFuture<'static, ()> {
    match context.spec.mqtype {
        MqKind::Nats => keep_consuming(context, nats::consume).boxed(),
        MqKind::Redis => keep_consuming(context, redis::consume).boxed(),
        MqKind::Mqtt => keep_consuming(context, mqtt::consume).boxed(),
        MqKind::Amqp => keep_consuming(context, amqp::consume).boxed(),
        MqKind::Kafka => keep_consuming(context, kafka::consume).boxed(),
    }
}

/// Consumes while this node holds the trigger's lease: waits for it,
/// renews it every quarter of its TTL, and stops consuming the moment it
/// is lost, or a quarter of the TTL before it would expire when renewals
/// do not get through (another node may take it at expiry). A lease is
/// counted from when its take or renewal was sent, not answered, and no
/// renewal is waited for past that point. What the stopped session had
/// not acknowledged, the broker hands to the next holder.
async fn while_held(leases: Arc<dyn Leases>, context: Arc<Context>) {
    use tokio::time::{Instant, sleep, sleep_until, timeout_at};
    let key = format!("mq/{}", context.name);
    let ttl = leases.ttl();
    let renew = ttl / 4;
    // Until when a lease sent at `sent` is surely still this node's.
    let valid = |sent: Instant| sent + ttl - renew;
    let mut failing = false;
    loop {
        let (mut held, mut until) = loop {
            let sent = Instant::now();
            match timeout_at(valid(sent), leases.hold(&key, None)).await {
                Ok(Ok(Some(revision))) => break (revision, valid(sent)),
                Ok(Ok(None)) => {
                    failing = false;
                    context.standing_by();
                }
                Ok(Err(e)) if !failing => {
                    failing = true;
                    context.disconnected(e.message);
                }
                _ => {}
            }
            sleep(renew).await;
        };
        failing = false;
        tracing::info!(trigger = %context.name, "this node consumes the trigger");
        let mut consuming = AbortOnDrop(tokio::spawn(session(context.clone()).map(Ok)));
        // A trigger updated or deleted aborts this task: its lease goes at
        // once rather than at expiry.
        let mut release = Release {
            leases: leases.clone(),
            key: key.clone(),
            held,
        };
        let lost = loop {
            tokio::select! {
                _ = sleep_until(until) => break "its lease could not be renewed in time".to_string(),
                _ = sleep(renew) => {}
                _ = &mut consuming.0 => break "its consumer stopped".to_string(),
            }
            let sent = Instant::now();
            match timeout_at(until, leases.hold(&key, Some(held))).await {
                Ok(Ok(Some(revision))) => {
                    held = revision;
                    release.held = revision;
                    until = valid(sent);
                }
                Ok(Ok(None)) => break "another node took the trigger over".to_string(),
                Ok(Err(_)) | Err(_) => {}
            }
        };
        drop(consuming);
        drop(release);
        context.disconnected(lost);
    }
}

/// Gives a lease up when dropped (the trigger's task ended or was
/// aborted).
struct Release {
    leases: Arc<dyn Leases>,
    key: String,
    held: u64,
}

impl Drop for Release {
    fn drop(&mut self) {
        let (leases, key, held) = (
            self.leases.clone(),
            std::mem::take(&mut self.key),
            self.held,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { leases.release(&key, held).await });
        }
    }
}

/// The message-queue component: one connector task per trigger.
pub struct MqTriggers {
    store: Arc<dyn Store>,
    executor: Arc<Executor>,
    status: Arc<Mutex<HashMap<String, MqStatus>>>,
    applied: watch::Sender<Revision>,
    /// What a node of a cluster shares with the others; `None` alone.
    cluster: Option<InCluster>,
}

/// What message-queue triggers need of a cluster.
pub struct InCluster {
    /// This node's name (a Redis consumer's, for one).
    pub node: String,
    /// Who consumes the triggers that run on one node at a time.
    pub leases: Arc<dyn Leases>,
    /// The cluster's own NATS, when triggers could reach its state.
    pub reserved: Option<ReservedNats>,
}

/// The NATS that holds a cluster's own state, when Flare reaches it as
/// anyone does (no credentials, so no account of its own). No trigger may
/// use it as its broker: a tenant's trigger would read every namespace's
/// logs and invocations there, or write into them. Known by the server
/// Flare is connected to and by its NATS cluster's name.
#[derive(Debug, Clone, Default)]
pub struct ReservedNats {
    pub server_id: String,
    pub cluster: Option<String>,
}

impl ReservedNats {
    /// Whether the server that answered `info` is one of the reserved.
    pub(crate) fn holds(&self, info: &async_nats::ServerInfo) -> bool {
        info.server_id == self.server_id
            || self
                .cluster
                .as_ref()
                .is_some_and(|c| !c.is_empty() && info.cluster.as_ref() == Some(c))
    }
}

impl MqTriggers {
    pub fn new(
        store: Arc<dyn Store>,
        executor: Arc<Executor>,
        cluster: Option<InCluster>,
    ) -> Arc<Self> {
        Arc::new(MqTriggers {
            store,
            executor,
            status: Arc::default(),
            applied: watch::Sender::new(0),
            cluster,
        })
    }

    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    pub fn status(&self, name: &str) -> Option<MqStatus> {
        self.status.lock().ok()?.get(name).cloned()
    }

    fn start(&self, doc: flare_model::Document) -> Option<(u64, JoinHandle<()>)> {
        let generation = doc.metadata.generation;
        let trigger = Resource::<MessageQueueTriggerSpec>::from_document(doc).ok()?;
        let context = Arc::new(Context {
            name: trigger.qualified_name(),
            function: qualified(&trigger.spec.function, &trigger.metadata.namespace),
            spec: trigger.spec,
            executor: self.executor.clone(),
            status: self.status.clone(),
            deliveries: Mutex::default(),
            reserved: self.cluster.as_ref().and_then(|c| c.reserved.clone()),
            node: self.cluster.as_ref().map(|c| c.node.clone()),
        });
        context.report(|s| *s = MqStatus::default());
        let task = match &self.cluster {
            Some(cluster) if one_node_at_a_time(&context.spec) => {
                tokio::spawn(while_held(cluster.leases.clone(), context))
            }
            _ => tokio::spawn(session(context)),
        };
        Some((generation, task))
    }

    /// Keeps one connector per trigger until the store closes.
    pub async fn run(self: Arc<Self>) {
        let mut follower = Follower::new(&*self.store);
        let mut tasks: HashMap<String, (u64, JoinHandle<()>)> = HashMap::new();
        while let Some(update) = follower.next(&*self.store).await {
            let revision = update.revision();
            match update {
                Update::Reload { revision } => {
                    // Consume nothing before the functions are deployed.
                    let mut deployed = self.executor.applied();
                    let _ = deployed.wait_for(|r| *r >= revision).await;
                    match self.store.list(Kind::MessageQueueTrigger) {
                        Ok(docs) => {
                            let names: HashSet<String> = docs
                                .iter()
                                .map(|d| qualified(&d.metadata.name, &d.metadata.namespace))
                                .collect();
                            let gone: Vec<String> = tasks
                                .keys()
                                .filter(|name| !names.contains(*name))
                                .cloned()
                                .collect();
                            for name in gone {
                                self.stop(&mut tasks, &name);
                            }
                            for doc in docs {
                                self.put(&mut tasks, doc);
                            }
                        }
                        Err(e) => tracing::error!("cannot list message queue triggers: {e}"),
                    }
                }
                Update::Change(event) if event.kind == Kind::MessageQueueTrigger => {
                    match event.change {
                        Change::Put(doc) => self.put(&mut tasks, *doc),
                        Change::Deleted => {
                            self.stop(&mut tasks, &qualified(&event.name, &event.namespace))
                        }
                    }
                }
                Update::Change(_) => {}
            }
            advance(&self.applied, revision);
        }
    }

    /// Starts the connector of a new or changed trigger (replacing the old
    /// one); an unchanged trigger keeps its connector.
    fn put(&self, tasks: &mut HashMap<String, (u64, JoinHandle<()>)>, doc: Document) {
        let name = qualified(&doc.metadata.name, &doc.metadata.namespace);
        if tasks
            .get(&name)
            .is_some_and(|(g, _)| *g == doc.metadata.generation)
        {
            return;
        }
        if let Some((_, old)) = tasks.remove(&name) {
            old.abort();
        }
        if let Some(task) = self.start(doc) {
            tasks.insert(name, task);
        }
    }

    /// Stops a deleted trigger's connector and forgets its status.
    fn stop(&self, tasks: &mut HashMap<String, (u64, JoinHandle<()>)>, name: &str) {
        if let Some((_, old)) = tasks.remove(name) {
            old.abort();
        }
        if let Ok(mut status) = self.status.lock() {
            status.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn broker_names_differ_across_namespaces_even_as_nats_streams() {
        let stream = |q: &str| super::nats::stream_name(&super::broker_name(q));
        assert_eq!(super::broker_name("orders"), "orders");
        assert_ne!(stream("a--b"), stream("a.b"));
        assert_ne!(stream("a-b"), stream("a.b"));
        assert_ne!(stream("a.b-c"), stream("a-b.c"));
    }

    use super::{
        Lanes, MAX_ERROR_PAYLOAD, MAX_ERROR_TEXT, MAX_TRACE_HEADER, TraceContext, failure_document,
        one_line,
    };

    #[tokio::test]
    async fn a_message_delivered_too_often_is_given_up_without_running() {
        use super::{Context, Message, Outcome};
        let dir = tempfile::tempdir().unwrap();
        let store = flare_store::SqliteStore::open(dir.path()).unwrap();
        let (logs, _reader) = flare_store::logs::start(store.path()).unwrap();
        let packages = flare_store::PackageStore::open(&dir.path().join("p")).unwrap();
        let spec: flare_model::MessageQueueTriggerSpec = serde_json::from_value(
            serde_json::json!({"mqtype": "nats", "topic": "t", "function": "f", "maxretries": 0}),
        )
        .unwrap();
        let context = Context {
            name: "t".into(),
            function: "f".into(),
            spec,
            executor: flare_executor::Executor::new(
                Vec::new(),
                packages,
                logs,
                flare_executor::DEFAULT_BODY_TIMEOUT,
            ),
            status: Default::default(),
            deliveries: Default::default(),
            reserved: None,
            node: None,
        };
        let message = |delivered| Message {
            key: "k".into(),
            payload: bytes::Bytes::from_static(b"x"),
            identity: "s:1".into(),
            delivered,
            trace: Default::default(),
        };
        let given_up = |outcome: &Outcome| matches!(outcome, Outcome::Failed(why) if why.starts_with("given up after"));
        // maxretries 0: five deliveries run (here: "no such function"),
        // the sixth is given up.
        for _ in 0..5 {
            assert!(!given_up(&context.handle(&message(None)).await));
        }
        let sixth = context.handle(&message(None)).await;
        assert!(given_up(&sixth));
        // Settled, it counts from the start again.
        context.settle(&message(None), &sixth);
        assert!(!given_up(&context.handle(&message(None)).await));
        // The broker's own count is believed.
        assert!(given_up(&context.handle(&message(Some(9))).await));
        let status = context.status.lock().unwrap().get("t").cloned().unwrap();
        assert_eq!((status.processed, status.failed), (0, 1));
    }

    #[test]
    fn failure_documents_are_bounded_whatever_came_in() {
        let payload = vec![0xffu8; 1 << 20];
        let error = "é".repeat(MAX_ERROR_TEXT);
        let doc = failure_document(&[("topic", "in")], &payload, &error);
        assert!(
            doc.len() < 4 * MAX_ERROR_PAYLOAD + 2 * MAX_ERROR_TEXT,
            "{}",
            doc.len()
        );
        let doc: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc["topic"], "in");
        assert_eq!(doc["payload_bytes"], 1 << 20);
        assert_eq!(doc["payload_truncated"], true);
        assert!(doc["error"].as_str().unwrap().len() <= MAX_ERROR_TEXT);
        let small = failure_document(&[], b"hi", "why");
        let small: serde_json::Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(small, serde_json::json!({"payload": "hi", "error": "why"}));
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        let text = "trap:\n  0: wasm backtrace\r\n\u{1b}[31m\u{0}é";
        let line = one_line(text, 1024);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.starts_with("trap:   0: wasm backtrace"), "{line:?}");
        assert_eq!(
            one_line(&"é".repeat(100), 9).len(),
            8,
            "cut on a char boundary"
        );
    }

    #[test]
    fn unordered_lanes_start_everything_up_to_the_limit() {
        let mut lanes = Lanes::new(false, 2);
        assert_eq!(lanes.admit("a", 1), Some(1));
        assert_eq!(lanes.admit("a", 2), Some(2));
        assert!(!lanes.has_room());
        assert_eq!(lanes.finish("a"), None);
        assert!(lanes.has_room());
    }

    #[test]
    fn ordered_lanes_serialize_a_key_and_run_keys_side_by_side() {
        let mut lanes = Lanes::new(true, 4);
        assert_eq!(lanes.admit("a", 1), Some(1));
        assert_eq!(lanes.admit("b", 2), Some(2), "another key runs at once");
        assert_eq!(lanes.admit("a", 3), None, "waits behind 1");
        assert_eq!(lanes.admit("a", 4), None, "waits behind 3");
        assert!(
            !lanes.has_room(),
            "waiting messages count against the limit"
        );
        assert_eq!(lanes.finish("a"), Some(3));
        assert_eq!(lanes.finish("b"), None);
        assert_eq!(lanes.finish("a"), Some(4));
        assert_eq!(lanes.finish("a"), None);
        // The key is free again: its next message starts at once.
        assert_eq!(lanes.admit("a", 5), Some(5));
    }

    #[test]
    fn a_zero_limit_still_lets_one_message_through() {
        let mut lanes = Lanes::new(true, 0);
        assert!(lanes.has_room());
        assert_eq!(lanes.admit("a", 1), Some(1));
        assert!(!lanes.has_room());
    }

    #[test]
    fn a_messages_trace_headers_reach_the_request_only_when_they_are_headers() {
        let parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".as_slice();
        let huge = vec![b'a'; MAX_TRACE_HEADER + 1];
        let broken = b"line\nbreak".as_slice();
        let cases: [(&[u8], &[u8], bool, bool); 3] = [
            (parent, b"vendor=1", true, true),
            (parent, &huge, true, false),
            (broken, b"vendor=\x7f", false, false),
        ];
        for (traceparent, tracestate, kept_parent, kept_state) in cases {
            let trace = TraceContext::from_headers(|name| match name {
                "traceparent" => Some(traceparent),
                "tracestate" => Some(tracestate),
                _ => None,
            });
            let mut headers = http::HeaderMap::new();
            trace.apply(&mut headers);
            assert_eq!(headers.contains_key("traceparent"), kept_parent);
            assert_eq!(headers.contains_key("tracestate"), kept_state);
            if kept_parent {
                assert_eq!(headers["traceparent"].as_bytes(), parent);
            }
        }
        // No trace context: nothing is added.
        let mut headers = http::HeaderMap::new();
        TraceContext::from_headers(|_| None).apply(&mut headers);
        assert!(headers.is_empty());
    }
}
