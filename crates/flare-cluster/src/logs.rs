//! Function logs in a cluster: one JetStream stream, `FLARE_LOGS`, that
//! every node writes its lines to and every node keeps a replica of.
//!
//! A node's log writer ships its lines ([`StreamShip`]), grouped by
//! function, as JSON arrays on `flare.logs.<namespace>.<function>`, and
//! every node stores what the stream holds in its own database, its own
//! lines included ([`apply`]), remembering the stream position it has
//! reached in the same transaction. So `flare fn logs` on any node sees
//! the lines of every node, `--follow` streams them live as they arrive,
//! and the lines of a node that died are still there: they were in the
//! stream before they were anywhere else. Queries stay local and indexed;
//! nothing of the request path waits for NATS.
//!
//! While NATS does not take lines, a node stores its own lines locally
//! (and only there) rather than lose them, and tries the stream again
//! after [`PAUSE`]. A deleted namespace's lines are purged from the stream
//! and a mark, `flare.forget.<namespace>`, tells every node to remove its
//! copies: in stream order, so a node that was away applies it too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use flare_model::{Error, ErrorCode, LogRecord, Result};
use flare_store::logs::{LogApplier, Ship};
use futures::StreamExt;

const STREAM: &str = "FLARE_LOGS";
const LINES: &str = "flare.logs";
const FORGET: &str = "flare.forget";
/// How long a publish may wait for the stream's acknowledgement.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// After the stream refused lines, how long this node keeps its lines to
/// itself before it tries again.
const PAUSE: Duration = Duration::from_secs(5);
/// Largest message of lines (each line is at most 16 KiB).
const MAX_MESSAGE: usize = 256 << 10;

/// The subject of `function`'s lines (a qualified name: `name` or
/// `name.namespace`; names are DNS labels, so they are subject tokens).
fn subject(function: &str) -> String {
    let (name, namespace) = flare_model::split_qualified(function);
    format!("{LINES}.{namespace}.{name}")
}

fn unavailable(servers: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorCode::Unavailable,
        format!("NATS at {servers}: cannot {what}: {e}"),
    )
}

/// The cluster's log stream.
pub struct LogStream {
    js: jetstream::Context,
    stream: stream::Stream,
    servers: String,
}

impl LogStream {
    /// Opens the stream, creating it (lines kept `retention`, with
    /// `replicas`) when it is missing.
    pub async fn open(
        js: jetstream::Context,
        replicas: usize,
        retention: Duration,
        servers: &str,
    ) -> Result<LogStream> {
        let stream = js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                description: Some("Flare function logs, from every node".into()),
                subjects: vec![format!("{LINES}.>"), format!("{FORGET}.*")],
                max_age: retention,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(servers, "open the log stream", e))?;
        Ok(LogStream {
            js,
            stream,
            servers: servers.to_string(),
        })
    }

    /// When the stream was made (nanoseconds since the epoch): a stream
    /// made again starts its positions over.
    pub fn made(&self) -> i64 {
        let created = self.stream.cached_info().created.unix_timestamp_nanos();
        i64::try_from(created).unwrap_or(i64::MAX)
    }

    /// What ships this node's lines to the stream; runs on the log
    /// writer's thread and publishes on `runtime`.
    pub fn ship(&self, runtime: tokio::runtime::Handle) -> StreamShip {
        let max_payload = self.js.client().server_info().max_payload;
        StreamShip {
            js: self.js.clone(),
            runtime,
            max_message: MAX_MESSAGE.min(max_payload / 2).max(1),
            paused_until: None,
        }
    }

    /// Keeps this node's log a replica of the stream, from where it stopped
    /// (`position`, [`flare_store::logs::Logs::position`]), until the task
    /// is aborted. Reconnects on its own.
    pub fn apply(&self, applier: LogApplier, mut position: u64) -> tokio::task::JoinHandle<()> {
        let stream = self.stream.clone();
        let servers = self.servers.clone();
        tokio::spawn(async move {
            // The position it last failed at: a failure after progress is
            // a new outage, and said again.
            let mut failed_at = None;
            loop {
                match follow(&stream, &applier, &mut position).await {
                    Ok(()) => return,
                    Err(e) => {
                        if failed_at != Some(position) {
                            tracing::warn!("log stream on NATS at {servers}: {e}; retrying");
                        }
                        failed_at = Some(position);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    }

    /// Removes `namespace`'s lines from the stream and tells every node to
    /// remove its copies.
    pub async fn forget_namespace(&self, namespace: &str) -> Result<()> {
        self.stream
            .purge()
            .filter(format!("{LINES}.{namespace}.>"))
            .await
            .map_err(|e| unavailable(&self.servers, "purge a namespace's log lines", e))?;
        let deleted = flare_model::now_us().to_string();
        self.js
            .publish(format!("{FORGET}.{namespace}"), deleted.into())
            .await
            .map_err(|e| unavailable(&self.servers, "mark a namespace's log lines gone", &e))?
            .await
            .map_err(|e| unavailable(&self.servers, "mark a namespace's log lines gone", &e))?;
        Ok(())
    }
}

/// Applies the stream from `position` on; returns only when the writer has
/// stopped, and an error when the stream fails (to be followed again).
async fn follow(
    stream: &stream::Stream,
    applier: &LogApplier,
    position: &mut u64,
) -> std::result::Result<(), String> {
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: *position + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let at = message.info().map_err(|e| e.to_string())?.stream_sequence;
        let applier = applier.clone();
        let subject = message.subject.to_string();
        let payload = message.payload.clone();
        let applied = tokio::task::spawn_blocking(move || {
            match subject
                .strip_prefix(FORGET)
                .and_then(|s| s.strip_prefix('.'))
            {
                Some(namespace) => {
                    // The mark says when the namespace went.
                    let before_us = std::str::from_utf8(&payload)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(i64::MAX);
                    applier.forget(at, namespace.to_string(), before_us)
                }
                None => {
                    let records = serde_json::from_slice::<Vec<LogRecord>>(&payload)
                        .unwrap_or_else(|e| {
                            tracing::warn!("log stream message {at} is not log lines: {e}");
                            Vec::new()
                        });
                    applier.apply(at, records)
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        if applied.is_err() {
            // The writer is gone (it lives as long as the process, so
            // this is the process ending).
            return Ok(());
        }
        *position = at;
    }
    Err("the stream ended".into())
}

/// Ships a node's lines to the cluster's stream.
pub struct StreamShip {
    js: jetstream::Context,
    runtime: tokio::runtime::Handle,
    max_message: usize,
    paused_until: Option<Instant>,
}

impl StreamShip {
    /// `batch` as messages: per function, JSON arrays of at most
    /// `max_message` bytes (a line larger than that alone in one).
    fn messages(&self, batch: Vec<LogRecord>) -> Vec<(String, Vec<u8>, Vec<LogRecord>)> {
        let mut by_function: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
        for record in batch {
            by_function
                .entry(record.function.clone())
                .or_default()
                .push(record);
        }
        let mut messages = Vec::new();
        for (function, records) in by_function {
            let subject = subject(&function);
            let mut payload = vec![b'['];
            let mut held = Vec::new();
            for record in records {
                let Ok(encoded) = serde_json::to_vec(&record) else {
                    continue;
                };
                if !held.is_empty() && payload.len() + encoded.len() + 1 > self.max_message {
                    payload.push(b']');
                    messages.push((
                        subject.clone(),
                        std::mem::replace(&mut payload, vec![b'[']),
                        std::mem::take(&mut held),
                    ));
                }
                if !held.is_empty() {
                    payload.push(b',');
                }
                payload.extend_from_slice(&encoded);
                held.push(record);
            }
            if !held.is_empty() {
                payload.push(b']');
                messages.push((subject, payload, held));
            }
        }
        messages
    }
}

impl Ship for StreamShip {
    fn ship(&mut self, batch: Vec<LogRecord>) -> Vec<LogRecord> {
        if self
            .paused_until
            .is_some_and(|until| Instant::now() < until)
        {
            return batch;
        }
        let messages = self.messages(batch);
        let js = self.js.clone();
        let unshipped = self.runtime.block_on(async move {
            // Publish them all, then wait for the acknowledgements.
            let mut pending = Vec::new();
            for (subject, payload, records) in messages {
                let ack =
                    tokio::time::timeout(PUBLISH_TIMEOUT, js.publish(subject, payload.into()))
                        .await
                        .map_err(|_| "timed out".to_string())
                        .and_then(|sent| sent.map_err(|e| e.to_string()));
                pending.push((ack, records));
            }
            // One deadline for every acknowledgement, however many.
            let deadline = tokio::time::Instant::now() + PUBLISH_TIMEOUT;
            let mut unshipped = Vec::new();
            let mut failure = None;
            for (ack, records) in pending {
                let stored = match ack {
                    Ok(ack) => match tokio::time::timeout_at(deadline, ack).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("no acknowledgement".to_string()),
                    },
                    Err(e) => Err(e),
                };
                if let Err(e) = stored {
                    failure.get_or_insert(e);
                    unshipped.extend(records);
                }
            }
            (unshipped, failure)
        });
        let (unshipped, failure) = unshipped;
        match failure {
            Some(e) => {
                if self.paused_until.is_none() {
                    tracing::warn!(
                        "the log stream does not take lines ({e}); this node keeps its own until it does"
                    );
                }
                self.paused_until = Some(Instant::now() + PAUSE);
            }
            None if self.paused_until.take().is_some() => {
                tracing::info!("the log stream takes lines again");
            }
            None => {}
        }
        unshipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_namespace_then_function() {
        assert_eq!(subject("hello"), "flare.logs.default.hello");
        assert_eq!(subject("hello.team-a"), "flare.logs.team-a.hello");
    }
}
