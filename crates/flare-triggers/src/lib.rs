//! Flare's event triggers: they turn events into invocations.
//!
//! - [`mq::MqTriggers`] consumes NATS JetStream, Kafka, Redis Streams, MQTT
//!   and AMQP (RabbitMQ) at least once.
//!
//! Every event reaches its function as an HTTP request with CloudEvents
//! binary-mode headers ([`cloud_event`]), so a function has one contract
//! whatever calls it.
//!
//! - [`timer::Timers`] fires cron schedules ([`flare_model::Cron`]) in their
//!   time zones, keeps each trigger's last firing in the store, and after a
//!   restart fires a run that was missed while the server was down once,
//!   not once per missed slot.
//! - [`asynchronous::AsyncInvoker`] runs invocations callers queued with
//!   `POST /async/fn/{name}` (or `X-Flare-Async: true` on a trigger route),
//!   with retries, a dead-letter status and optional callbacks.

pub mod asynchronous;
pub mod mq;
pub mod timer;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};

/// A POST carrying an event in CloudEvents binary mode.
pub fn cloud_event(
    kind: &str,
    source: &str,
    trigger: &str,
    time: DateTime<Utc>,
    body: Bytes,
) -> http::Request<http_body_util::Full<Bytes>> {
    let id: [u8; 16] = rand::random();
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let mut request = http::Request::new(http_body_util::Full::new(body));
    *request.method_mut() = http::Method::POST;
    let headers = request.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("ce-specversion", "1.0");
    set("ce-id", &id);
    set("ce-type", kind);
    set("ce-source", source);
    set("ce-time", &time.to_rfc3339_opts(SecondsFormat::Secs, true));
    set("x-flare-trigger", trigger);
    set("content-type", "application/json");
    set("host", "localhost");
    request
}
