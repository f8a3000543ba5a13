//! Asynchronous invocations in a cluster: a JetStream work queue that every
//! node takes from, and a KV bucket of their records.
//!
//! Submitting publishes the request to the stream `FLARE_INVOCATIONS`
//! (work-queue retention, so a message is gone once acknowledged), then
//! writes its record (queued) to the bucket `flare-invocations`; the
//! caller's 202 comes after both. The message is the invocation: a node
//! that takes one whose record is missing (its submitter died between the
//! two writes) writes the record itself, and a submitter killed before the
//! publish leaves nothing behind. Every node pulls from
//! the one durable consumer `flare-async`, so an invocation is taken by one
//! node at a time. The taker marks the record running and tells JetStream
//! it is still working every [`PROGRESS`]; a node that dies stops saying
//! so and, [`ACK_WAIT`] later, JetStream hands the invocation to another.
//!
//! The message is acknowledged only after the outcome is in the record.
//! Each write to a record names the revision it read, so when two nodes
//! have run one invocation (the first was only slow), the second finds the
//! outcome stored and stores nothing: one result per invocation id.
//!
//! A retry is the message negatively acknowledged with the backoff as its
//! delay; the attempt count lives in the record. A request too large for
//! one NATS message (its `max_payload`) keeps its body in the object store
//! `flare-invocation-bodies` until the invocation is finished.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, kv, object_store, stream};
use flare_model::{Error, ErrorCode, Result, now_us};
use flare_store::invocations::{
    Attempt, Claimed, Invocation, InvocationFilter, InvocationQueue, InvocationStatus,
    NewInvocation, outcome,
};
use futures::StreamExt;
use tokio::io::AsyncReadExt;

const STREAM: &str = "FLARE_INVOCATIONS";
const SUBJECT: &str = "flare.invocations";
const CONSUMER: &str = "flare-async";
const RECORDS_BUCKET: &str = "flare-invocations";
const BODIES_BUCKET: &str = "flare-invocation-bodies";
/// How long a taken invocation stays with its taker without word from it;
/// after that JetStream gives it to another node.
pub const ACK_WAIT: Duration = Duration::from_secs(6);
/// How often a taker says it is still running an invocation.
const PROGRESS: Duration = Duration::from_secs(2);
/// The request (method, path, headers, ...) of a message, as JSON.
const REQUEST_HEADER: &str = "Flare-Request";
/// Set when the body is in the bodies bucket rather than the message.
const BODY_HEADER: &str = "Flare-Body";
/// Room left in a message for its headers.
const HEADROOM: usize = 64 << 10;
/// Records listed at once.
const READS_AT_ONCE: usize = 64;

/// The cluster's queue of asynchronous invocations.
pub struct NatsQueue {
    js: jetstream::Context,
    consumer: PullConsumer,
    records: kv::Store,
    /// The stream under `records`, for reads its leader answers.
    records_stream: stream::Stream,
    bodies: object_store::ObjectStore,
    max_payload: usize,
    servers: String,
}

fn unavailable(servers: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Unavailable,
        format!("NATS at {servers}: cannot {what}: {e}"),
    )
}

fn json<T: serde::Serialize>(value: &T) -> Result<bytes::Bytes> {
    serde_json::to_vec(value)
        .map(Into::into)
        .map_err(|e| Error::internal(format!("invocation record: {e}")))
}

fn is_finished(status: InvocationStatus) -> bool {
    matches!(
        status,
        InvocationStatus::Succeeded | InvocationStatus::Failed
    )
}

impl NatsQueue {
    /// Writes the queued record of `request` unless a record exists;
    /// `false` when its record was removed (its namespace was deleted), so
    /// it must not run.
    ///
    /// Not `kv::Store::create`: when the key exists it reads it back from
    /// any replica (a direct get), and a replica that has not seen the
    /// record yet made it fail. An update from revision 0 fails when the
    /// record exists, and also while another node's write of it is in
    /// flight (nats-server 2.11+ answers both with an error code the client
    /// does not name); whether the record exists is then asked of the
    /// stream's leader, a few times while such a write lands.
    async fn create_record(&self, request: &NewInvocation) -> Result<bool> {
        let subject = format!("$KV.{RECORDS_BUCKET}.{}", request.id);
        let mut tries = 0;
        loop {
            let Err(e) = self
                .records
                .update(&request.id, json(&queued(request))?, 0)
                .await
            else {
                return Ok(true);
            };
            let last = self
                .records_stream
                .get_last_raw_message_by_subject(&subject)
                .await;
            if let Ok(last) = last {
                // A delete or purge marker: forgotten with its namespace.
                let removed = last
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
                return Ok(!removed);
            }
            tries += 1;
            if tries == 5 {
                return Err(self.unavailable("store an invocation", e));
            }
            tokio::time::sleep(Duration::from_millis(20 * tries)).await;
        }
    }

    /// Opens the cluster's queue on `js`, creating its stream, consumer
    /// and buckets with `replicas` where they are missing. Finished
    /// records are kept for `retention` after their last change.
    pub async fn open(
        js: jetstream::Context,
        replicas: usize,
        retention: Duration,
        servers: &str,
    ) -> Result<Arc<NatsQueue>> {
        let failed = |what: &str, e: &dyn std::fmt::Display| unavailable(servers, what, e);
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                description: Some("Flare asynchronous invocations waiting to run".into()),
                subjects: vec![SUBJECT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                num_replicas: replicas,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| failed("open the invocation stream", &e))?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(
                CONSUMER,
                pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: ACK_WAIT,
                    // Retries are counted in the record, not here.
                    max_deliver: -1,
                    max_ack_pending: -1,
                    num_replicas: replicas,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| failed("open the invocation consumer", &e))?;
        let records = crate::kv_bucket(
            &js,
            RECORDS_BUCKET,
            "Flare asynchronous invocations and their outcomes",
            replicas,
            Some(retention),
        )
        .await
        .map_err(|e| failed("open the invocation records", &e))?;
        let records_stream = js
            .get_stream(format!("KV_{RECORDS_BUCKET}"))
            .await
            .map_err(|e| failed("open the invocation records", &e))?;
        let bodies = match js.get_object_store(BODIES_BUCKET).await {
            Ok(bodies) => bodies,
            Err(_) => js
                .create_object_store(object_store::Config {
                    bucket: BODIES_BUCKET.into(),
                    description: Some(
                        "Bodies of queued invocations too large for a message".into(),
                    ),
                    max_age: retention,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| failed("open the invocation bodies", &e))?,
        };
        let max_payload = js.client().server_info().max_payload;
        Ok(Arc::new(NatsQueue {
            records_stream,
            js,
            consumer,
            records,
            bodies,
            max_payload,
            servers: servers.to_string(),
        }))
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> Error {
        unavailable(&self.servers, what, e)
    }

    async fn record(&self, id: &str) -> Result<Option<(Invocation, u64)>> {
        let entry = self
            .records
            .entry(id)
            .await
            .map_err(|e| self.unavailable("read an invocation record", e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&entry.value)
            .map_err(|e| Error::internal(format!("corrupt invocation record {id}: {e}")))?;
        Ok(Some((record, entry.revision)))
    }

    /// Every record, newest first.
    async fn all(&self) -> Result<Vec<Invocation>> {
        let keys: Vec<String> = self
            .records
            .keys()
            .await
            .map_err(|e| self.unavailable("list invocations", e))?
            .filter_map(|key| async move { key.ok() })
            .collect()
            .await;
        let mut all: Vec<Invocation> = futures::stream::iter(keys)
            .map(|key| async move { self.record(&key).await })
            .buffer_unordered(READS_AT_ONCE)
            .filter_map(|read| async move {
                match read {
                    Ok(Some((record, _))) => Some(record),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!("{e}");
                        None
                    }
                }
            })
            .collect()
            .await;
        all.sort_by(|a, b| (b.created_us, &b.request.id).cmp(&(a.created_us, &a.request.id)));
        Ok(all)
    }

    /// Marks what `message` asks for running, for this node; `None` when
    /// it needs no run (it is finished already).
    async fn claim(&self, message: jetstream::Message) -> Result<Option<Box<dyn Claimed>>> {
        let headers = message.headers.clone().unwrap_or_default();
        let request = headers
            .get(REQUEST_HEADER)
            .map(|v| v.as_str().to_string())
            .unwrap_or_default();
        let Ok(mut request) = serde_json::from_str::<NewInvocation>(&request) else {
            tracing::error!("a message in {STREAM} is not an invocation; dropped");
            let _ = message.ack_with(AckKind::Term).await;
            return Ok(None);
        };
        let id = request.id.clone();
        let big_body = headers.get(BODY_HEADER).is_some();
        let body = if big_body {
            self.body(&id).await?
        } else {
            message.payload.to_vec()
        };
        // Reads may come from a replica a write has not reached yet: each
        // retry waits a little longer, and a few are enough.
        let mut retries = 0u64;
        let mut retry = || {
            retries += 1;
            (retries <= 10).then(|| Duration::from_millis(10 * retries))
        };
        loop {
            let Some((record, revision)) = self.record(&id).await? else {
                // Its submitter died before writing the record (or has not
                // written it yet).
                if !self.create_record(&request).await? {
                    tracing::info!(invocation = %id, "its namespace was deleted; dropped");
                    let _ = message.ack_with(AckKind::Term).await;
                    return Ok(None);
                }
                match retry() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => {
                        return Err(
                            self.unavailable("read an invocation record", "it stays unreadable")
                        );
                    }
                }
                continue;
            };
            if is_finished(record.status) {
                // Run and recorded by a node that died before its ack.
                let _ = message.double_ack().await;
                return Ok(None);
            }
            let running = Invocation {
                status: InvocationStatus::Running,
                updated_us: now_us(),
                ..record
            };
            match self.records.update(&id, json(&running)?, revision).await {
                Ok(revision) => {
                    request.body = body;
                    let message = Arc::new(message);
                    let progress = tokio::spawn(say_progress(message.clone()));
                    return Ok(Some(Box::new(NatsClaim {
                        invocation: Invocation { request, ..running },
                        revision,
                        message,
                        progress,
                        records: self.records.clone(),
                        bodies: self.bodies.clone(),
                        servers: self.servers.clone(),
                        big_body,
                    })));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => match retry() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => return Err(self.unavailable("mark an invocation running", e)),
                },
                Err(e) => return Err(self.unavailable("mark an invocation running", e)),
            }
        }
    }

    async fn body(&self, id: &str) -> Result<Vec<u8>> {
        let mut object = self
            .bodies
            .get(id)
            .await
            .map_err(|e| self.unavailable("fetch an invocation's body", e))?;
        let mut body = Vec::new();
        object
            .read_to_end(&mut body)
            .await
            .map_err(|e| self.unavailable("fetch an invocation's body", e))?;
        Ok(body)
    }
}

/// The messages of one pull.
async fn drain(mut batch: pull::Batch) -> Vec<jetstream::Message> {
    let mut messages = Vec::new();
    while let Some(message) = batch.next().await {
        match message {
            Ok(message) => messages.push(message),
            Err(e) => tracing::debug!("pulling invocations: {e}"),
        }
    }
    messages
}

/// The record of `request`, just queued.
fn queued(request: &NewInvocation) -> Invocation {
    let now = now_us();
    Invocation {
        request: NewInvocation {
            body: Vec::new(),
            ..request.clone()
        },
        status: InvocationStatus::Queued,
        attempts: 0,
        created_us: now,
        updated_us: now,
        result_status: None,
        result_body: None,
        error: None,
    }
}

/// Tells JetStream, until aborted, that `message` is still being run.
async fn say_progress(message: Arc<jetstream::Message>) {
    loop {
        tokio::time::sleep(PROGRESS).await;
        if let Err(e) = message.ack_with(AckKind::Progress).await {
            tracing::warn!("cannot extend a running invocation: {e}");
        }
    }
}

#[async_trait::async_trait]
impl InvocationQueue for NatsQueue {
    /// A finished invocation's record holds no body (it may be far bigger
    /// than a record; the bodies bucket lets it go at the end).
    fn keeps_bodies(&self) -> bool {
        false
    }

    async fn submit(&self, mut new: NewInvocation) -> Result<()> {
        let body = std::mem::take(&mut new.body);
        let request = serde_json::to_string(&new)
            .map_err(|e| Error::internal(format!("invocation request: {e}")))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", new.id.as_str());
        headers.insert(REQUEST_HEADER, request.as_str());
        let payload = if request.len() + body.len() + HEADROOM > self.max_payload {
            headers.insert(BODY_HEADER, "object");
            self.bodies
                .put(new.id.as_str(), &mut body.as_slice())
                .await
                .map_err(|e| self.unavailable("store an invocation's body", e))?;
            bytes::Bytes::new()
        } else {
            bytes::Bytes::from(body)
        };
        self.js
            .publish_with_headers(SUBJECT, headers, payload)
            .await
            .map_err(|e| self.unavailable("queue an invocation", e))?
            .await
            .map_err(|e| self.unavailable("queue an invocation", e))?;
        // A node may have taken it, and written its record, already.
        self.create_record(&new).await.map(|_| ())
    }

    async fn take(&self, limit: usize) -> Result<Vec<Box<dyn Claimed>>> {
        let failed = |e: &dyn std::fmt::Display| self.unavailable("take invocations", e);
        let waiting = self.consumer.fetch().max_messages(limit).messages();
        let mut messages = drain(waiting.await.map_err(|e| failed(&e))?).await;
        if messages.is_empty() {
            // Nothing waits: wait a while for the next one.
            let next = self
                .consumer
                .batch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages();
            messages = drain(next.await.map_err(|e| failed(&e))?).await;
        }
        let mut claimed = Vec::with_capacity(messages.len());
        for message in messages {
            // One that cannot be marked is left to be delivered again.
            match self.claim(message).await {
                Ok(Some(claim)) => claimed.push(claim),
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        Ok(claimed)
    }

    async fn invocation(&self, id: &str) -> Result<Invocation> {
        match self.record(id).await? {
            Some((record, _)) => Ok(record),
            None => Err(Error::not_found("invocation", id)),
        }
    }

    async fn invocations(&self, filter: InvocationFilter) -> Result<Vec<Invocation>> {
        Ok(self
            .all()
            .await?
            .into_iter()
            .filter(|i| filter.matches(i))
            .take(filter.limit)
            .collect())
    }

    async fn forget_namespace(&self, namespace: &str) -> Result<u64> {
        let of_namespace = InvocationFilter {
            namespace: Some(namespace.to_string()),
            ..Default::default()
        };
        let mut forgotten = 0;
        for record in self.all().await? {
            if of_namespace.matches(&record) {
                self.records
                    .purge(&record.request.id)
                    .await
                    .map_err(|e| self.unavailable("forget an invocation", e))?;
                forgotten += 1;
            }
        }
        Ok(forgotten)
    }

    /// A record is one KV value: the result must fit in a message.
    fn max_result(&self) -> usize {
        (self.max_payload / 2).min(1 << 20)
    }
}

/// An invocation this node runs.
struct NatsClaim {
    invocation: Invocation,
    /// The record's revision when this node marked it running.
    revision: u64,
    message: Arc<jetstream::Message>,
    progress: tokio::task::JoinHandle<()>,
    records: kv::Store,
    bodies: object_store::ObjectStore,
    servers: String,
    big_body: bool,
}

impl Drop for NatsClaim {
    fn drop(&mut self) {
        self.progress.abort();
    }
}

impl NatsClaim {
    /// Writes `record` over the one this node read, unless another node
    /// has finished the invocation meanwhile: then that outcome stands,
    /// and is returned.
    async fn write(&self, record: &Invocation) -> Result<InvocationStatus> {
        let id = &record.request.id;
        let mut revision = self.revision;
        loop {
            match self.records.update(id, json(record)?, revision).await {
                Ok(_) => return Ok(record.status),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let entry =
                        self.records.entry(id).await.map_err(|e| {
                            unavailable(&self.servers, "read an invocation record", e)
                        })?;
                    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
                        // Forgotten with its namespace: nothing to record.
                        return Ok(InvocationStatus::Failed);
                    };
                    let stored: Invocation = serde_json::from_slice(&entry.value).map_err(|e| {
                        Error::internal(format!("corrupt invocation record {id}: {e}"))
                    })?;
                    if is_finished(stored.status) {
                        return Ok(stored.status);
                    }
                    revision = entry.revision;
                }
                Err(e) => {
                    return Err(unavailable(
                        &self.servers,
                        "record an invocation's outcome",
                        e,
                    ));
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Claimed for NatsClaim {
    fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    fn take_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.invocation.request.body)
    }

    async fn finish(
        mut self: Box<Self>,
        attempt: &Attempt,
        backoff: Duration,
    ) -> Result<InvocationStatus> {
        self.progress.abort();
        // The record holds no body.
        self.invocation.request.body = Vec::new();
        let record = Invocation {
            status: outcome(&self.invocation, attempt),
            attempts: self.invocation.attempts + 1,
            updated_us: now_us(),
            result_status: attempt.status,
            result_body: Some(String::from_utf8_lossy(&attempt.body).into_owned()),
            error: attempt.error.clone(),
            ..self.invocation.clone()
        };
        // Only once the outcome is stored is the message let go.
        let status = self.write(&record).await?;
        let acked = if status == InvocationStatus::Queued {
            self.message.ack_with(AckKind::Nak(Some(backoff))).await
        } else {
            self.message.double_ack().await
        };
        if let Err(e) = acked {
            // It comes back, finds its outcome stored and is let go then.
            tracing::warn!("invocation {}: ack not confirmed: {e}", record.request.id);
        }
        if is_finished(status) && self.big_body {
            let _ = self.bodies.delete(&record.request.id).await;
        }
        Ok(status)
    }

    async fn defer(mut self: Box<Self>, delay: Duration) -> Result<()> {
        self.progress.abort();
        self.invocation.request.body = Vec::new();
        let record = Invocation {
            status: InvocationStatus::Queued,
            updated_us: now_us(),
            ..self.invocation.clone()
        };
        let acked = if is_finished(self.write(&record).await?) {
            // Another node finished it meanwhile.
            self.message.double_ack().await
        } else {
            self.message.ack_with(AckKind::Nak(Some(delay))).await
        };
        acked.map_err(|e| unavailable(&self.servers, "put an invocation back", e))
    }
}
