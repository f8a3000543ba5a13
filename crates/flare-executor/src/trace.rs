//! OpenTelemetry spans for invocations.
//!
//! One span per invocation, named after the function, continuing the
//! caller's W3C `traceparent` (an HTTP header, or a message's, which the
//! triggers turn into one); its children mark the phases that took time:
//! `queue` (waiting for a concurrency permit), `start` (an instance started
//! and specialized for this request) and `function` (from the call to the
//! response head). The invocation span ends when the response body has
//! been sent or dropped. The function gets a `traceparent` naming the
//! invocation span, so its own spans join the trace.
//!
//! Off unless the server was given an exporter ([`Executor::set_tracer`]):
//! then no span is made and no header is touched. On, a request the
//! sampler leaves out costs one decision and one header.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::SystemTime;

use flare_runtime::{BodyError, ResponseBody};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;

/// The tracer and the W3C propagator, set once at start.
pub struct Tracing {
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    pub fn new(tracer: SdkTracer) -> Self {
        Tracing {
            tracer,
            propagator: TraceContextPropagator::new(),
        }
    }

    /// Starts the span of one invocation of `function` under the trace
    /// context `headers` carry (a new trace without one), and replaces
    /// that context in `headers` with the new span's, for the function.
    pub(crate) fn start(&self, function: &str, headers: &mut HeaderMap) -> Traced {
        let parent = self.propagator.extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(function.to_string())
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let context = parent.with_span(span);
        self.propagator
            .inject_context(&context, &mut HeadersMut(headers));
        Traced {
            recording: context.span().is_recording(),
            context: Some(context),
        }
    }
}

/// One invocation's span while it runs.
pub(crate) struct Traced {
    /// `None` once the response body carries it.
    context: Option<Context>,
    recording: bool,
}

impl Traced {
    /// Whether the sampler kept it: if not, nothing more is recorded.
    pub fn recording(&self) -> bool {
        self.recording
    }

    pub fn set(&self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(context) = self.context.as_ref().filter(|_| self.recording) {
            context.span().set_attributes(attributes());
        }
    }

    /// A finished phase, `name`, from `start` to `end`.
    pub fn phase(&self, tracer: &Tracing, name: &'static str, start: SystemTime, end: SystemTime) {
        let Some(context) = self.context.as_ref().filter(|_| self.recording) else {
            return;
        };
        let mut span = tracer
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .start_with_context(&tracer.tracer, context);
        span.end_with_timestamp(end);
    }

    /// The invocation was refused with `status` for `why`: an error of
    /// Flare's or the function's (5xx) marks the span failed; a caller's
    /// (4xx) does not, as OpenTelemetry's HTTP conventions have it.
    pub fn failed(&self, status: u16, why: &str) {
        if let Some(context) = self.context.as_ref().filter(|_| self.recording) {
            let span = context.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(why.to_string()));
            }
        }
    }

    /// The response's status; the span ends with its body (`response`
    /// then carries it), or now when there is no body to wait for.
    pub fn answered(mut self, status: u16, body: ResponseBody) -> ResponseBody {
        let Some(context) = self.context.take().filter(|_| self.recording) else {
            return body;
        };
        {
            let span = context.span();
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                span.set_status(Status::error(format!("status {status}")));
            }
        }
        Ending {
            body,
            context: Some(context),
        }
        .boxed_unsync()
    }
}

impl Drop for Traced {
    /// An invocation refused before it answered ends here.
    fn drop(&mut self) {
        if let Some(context) = self.context.take().filter(|_| self.recording) {
            context.span().end();
        }
    }
}

/// A response body that ends its invocation's span when it is done,
/// sent in full or dropped (the caller went away).
struct Ending {
    body: ResponseBody,
    context: Option<Context>,
}

impl Ending {
    fn end(&mut self) {
        if let Some(context) = self.context.take() {
            context.span().end();
        }
    }
}

impl Drop for Ending {
    fn drop(&mut self) {
        self.end();
    }
}

impl Body for Ending {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.end(),
            Poll::Ready(Some(Err(e))) => {
                if let Some(context) = &self.context {
                    context.span().set_status(Status::error(e.to_string()));
                }
                self.end();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// What kind of event started an invocation, as OpenTelemetry's FaaS
/// conventions name them, from the CloudEvents type a trigger sets.
pub(crate) fn trigger_of(headers: &HeaderMap) -> &'static str {
    match headers.get("ce-type").map(HeaderValue::as_bytes) {
        Some(t) if t.starts_with(b"dev.flare.mq.") => "pubsub",
        Some(t) if t.starts_with(b"dev.flare.timer") => "timer",
        Some(_) => "other",
        None => "http",
    }
}

/// The attributes every invocation span has.
pub(crate) fn attributes(
    function: &str,
    namespace: &str,
    version: u64,
    invocation: &Arc<str>,
    trigger: &'static str,
) -> Vec<KeyValue> {
    vec![
        KeyValue::new("faas.name", function.to_string()),
        KeyValue::new("faas.version", version.to_string()),
        KeyValue::new("faas.invocation_id", invocation.to_string()),
        KeyValue::new("faas.trigger", trigger),
        KeyValue::new("flare.namespace", namespace.to_string()),
    ]
}
