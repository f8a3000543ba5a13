//! OpenTelemetry spans, exported to OTLP receivers written for these tests
//! (OTLP/HTTP with protobuf bodies, and OTLP/gRPC), which decode what
//! arrives: one span per invocation, the caller's trace continued and
//! passed on to the function, its phases as children, its attributes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::kafka::Kafka;
use common::{Server, eventually, http};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;

type Spans = Arc<Mutex<Vec<Span>>>;

/// An OTLP receiver on a free loopback port, keeping every span it gets.
struct Receiver {
    url: String,
    spans: Spans,
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    /// OTLP/HTTP: `POST /v1/traces` with an `ExportTraceServiceRequest`
    /// protobuf body, answered with an empty `ExportTraceServiceResponse`.
    fn http() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Spans::default();
        let kept = spans.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || serve_http(stream, &kept));
            }
        });
        Receiver {
            url,
            spans,
            _runtime: None,
        }
    }

    /// OTLP/gRPC, served by tonic.
    fn grpc() -> Receiver {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans = Spans::default();
        let service = TraceServiceServer::new(Grpc(spans.clone()));
        runtime.spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Receiver {
            url,
            spans,
            _runtime: Some(runtime),
        }
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The first span `check` accepts, waiting for it to arrive.
    fn span(&self, what: &str, check: impl Fn(&Span) -> bool) -> Span {
        let found = eventually(Duration::from_secs(60), || {
            self.spans().into_iter().find(|s| check(s))
        });
        eprintln!("received {what}: {}", found.name);
        found
    }
}

/// One connection of the HTTP receiver: requests one after another.
fn serve_http(stream: std::net::TcpStream, spans: &Spans) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push(line),
            }
        }
        let length: usize = head
            .iter()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request_line = head.first().cloned().unwrap_or_default();
        let content_type_is_protobuf = head.iter().any(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-type: application/x-protobuf")
        });
        let status = match ExportTraceServiceRequest::decode(body.as_slice()) {
            Ok(export)
                if request_line.starts_with("POST /v1/traces ") && content_type_is_protobuf =>
            {
                keep(spans, export);
                "200 OK"
            }
            _ => "400 Bad Request",
        };
        let answer = ExportTraceServiceResponse::default().encode_to_vec();
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(head.as_bytes()).is_err() || writer.write_all(&answer).is_err() {
            return;
        }
    }
}

fn keep(spans: &Spans, export: ExportTraceServiceRequest) {
    let mut kept = spans.lock().unwrap();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
            .and_then(|a| a.value.clone());
        assert!(
            matches!(service.and_then(|v| v.value), Some(Value::StringValue(s)) if s == "flare"),
            "spans come from service.name=flare"
        );
        for scope in resource.scope_spans {
            kept.extend(scope.spans);
        }
    }
}

struct Grpc(Spans);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A span attribute as text.
fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .clone()?;
    Some(match value.value? {
        Value::StringValue(s) => s,
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

/// The invocation id Flare answered `response` with.
fn invocation_id(response: &reqwest::blocking::Response) -> String {
    response.headers()["x-flare-invocation-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn of_invocation(span: &Span, invocation: &str) -> bool {
    attribute(span, "faas.invocation_id").as_deref() == Some(invocation)
}

fn id(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A server exporting to `receiver`, batches sent every 100 ms.
fn traced_server(receiver: &Receiver, protocol: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "--otlp-endpoint",
        receiver.url.as_str(),
        "--otlp-protocol",
        protocol,
    ];
    args.extend_from_slice(extra);
    Server::start_with_env(&args, &[("OTEL_BSP_SCHEDULE_DELAY", "100")])
}

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER: &str = "b7ad6b7169203331";

/// The `traceparent` the echo function received: (trace id, parent id).
fn received_traceparent(answer: &serde_json::Value) -> (String, String, String) {
    let header = answer["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the function got no traceparent: {answer}"));
    let parts: Vec<&str> = header.split('-').collect();
    assert_eq!(parts.len(), 4, "{header}");
    assert_eq!(parts[0], "00", "{header}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

#[test]
fn an_invocation_is_one_span_that_continues_the_callers_trace_over_otlp_http() {
    let receiver = Receiver::http();
    let server = traced_server(&receiver, "http", &[]);
    server.create("echo", "echo", &[]);

    // A caller's trace is continued, and the function is handed the
    // invocation's span as its parent.
    let response = http()
        .get(format!("{}/fn/echo/hi", server.router))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .header("tracestate", "vendor=kept")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let invocation = invocation_id(&response);
    let answer: serde_json::Value = response.json().unwrap();
    let (trace, parent, flags) = received_traceparent(&answer);
    assert_eq!((trace.as_str(), flags.as_str()), (TRACE, "01"));
    assert_ne!(
        parent, CALLER,
        "the function's parent is the invocation's span"
    );
    assert_eq!(answer["headers"]["tracestate"], "vendor=kept");

    let span = receiver.span("the invocation span", |s| of_invocation(s, &invocation));
    assert_eq!(span.name, "echo");
    assert_eq!(id(&span.trace_id), TRACE);
    assert_eq!(id(&span.parent_span_id), CALLER);
    assert_eq!(id(&span.span_id), parent);
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert_eq!(attribute(&span, "faas.name").as_deref(), Some("echo"));
    assert_eq!(attribute(&span, "faas.version").as_deref(), Some("1"));
    assert_eq!(attribute(&span, "faas.trigger").as_deref(), Some("http"));
    assert_eq!(attribute(&span, "faas.coldstart").as_deref(), Some("false"));
    assert_eq!(
        attribute(&span, "flare.namespace").as_deref(),
        Some("default")
    );
    assert_eq!(
        attribute(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    let run = receiver.span("its function phase", |s| {
        s.name == "function" && s.parent_span_id == span.span_id
    });
    assert_eq!(run.trace_id, span.trace_id);
    assert!(run.start_time_unix_nano >= span.start_time_unix_nano);
    assert!(run.end_time_unix_nano <= span.end_time_unix_nano);

    // Without a caller's trace, a new one; a trap is an error span.
    server.create("misbehave", "misbehave", &[]);
    let response = http()
        .get(format!("{}/fn/misbehave/trap", server.router))
        .send()
        .unwrap();
    assert_eq!(response.status(), 500);
    let invocation = invocation_id(&response);
    let failed = receiver.span("the trap's span", |s| of_invocation(s, &invocation));
    assert!(
        failed.parent_span_id.is_empty(),
        "a new trace starts at Flare"
    );
    assert_ne!(id(&failed.trace_id), TRACE);
    assert_eq!(
        attribute(&failed, "http.response.status_code").as_deref(),
        Some("500")
    );
    let status = failed.status.clone().unwrap_or_default();
    assert_eq!(status.code, StatusCode::Error as i32, "{status:?}");

    // A caller's mistake (a body over the function's limit: 413) is
    // recorded, not marked an error.
    server.create("small", "echo", &["--max-body", "16"]);
    let response = http()
        .post(format!("{}/fn/small", server.router))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .body("x".repeat(100))
        .send()
        .unwrap();
    assert_eq!(response.status(), 413);
    let refused = receiver.span("the refused request's span", |s| {
        s.name == "small" && id(&s.trace_id) == TRACE
    });
    assert_eq!(
        attribute(&refused, "http.response.status_code").as_deref(),
        Some("413")
    );
    let status = refused.status.clone().unwrap_or_default();
    assert_ne!(status.code, StatusCode::Error as i32, "{status:?}");

    // A process function's first request starts an instance: a cold start
    // with its own phase before the function's.
    server.python_env("1");
    server.create_python("probe", "probe.py", &[]);
    let response = http()
        .get(format!("{}/fn/probe/", server.router))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let invocation = invocation_id(&response);
    let cold = receiver.span("the cold start's span", |s| of_invocation(s, &invocation));
    assert_eq!(attribute(&cold, "faas.coldstart").as_deref(), Some("true"));
    let start = receiver.span("its start phase", |s| {
        s.name == "start" && s.parent_span_id == cold.span_id
    });
    let run = receiver.span("its function phase", |s| {
        s.name == "function" && s.parent_span_id == cold.span_id
    });
    assert!(start.end_time_unix_nano <= run.start_time_unix_nano);

    // An asynchronous invocation continues its caller's trace when it runs.
    let queued = http()
        .post(format!("{}/async/fn/echo/later", server.router))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .unwrap();
    assert_eq!(queued.status(), 202);
    let invocation = invocation_id(&queued);
    let later = receiver.span("the asynchronous invocation's span", |s| {
        of_invocation(s, &invocation)
    });
    assert_eq!(id(&later.trace_id), TRACE);
    assert_eq!(id(&later.parent_span_id), CALLER);
}

#[test]
fn a_message_with_a_trace_context_continues_its_trace_and_spans_go_over_grpc() {
    let receiver = Receiver::grpc();
    let server = traced_server(&receiver, "grpc", &[]);
    server.create("echo", "echo", &[]);
    let response = http()
        .get(format!("{}/fn/echo", server.router))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let span = receiver.span("an HTTP invocation's span, over gRPC", |s| {
        s.name == "echo" && id(&s.parent_span_id) == CALLER
    });
    assert_eq!(id(&span.trace_id), TRACE);

    // A NATS message's headers carry a trace context: the trigger's
    // invocation continues it.
    let subject = format!("flare.test.traces.{}", std::process::id());
    server.ok(&[
        "mqt",
        "create",
        "--name",
        "traced",
        "--function",
        "echo",
        "--mqtype",
        "nats",
        "--topic",
        &format!("{subject}.in"),
    ]);
    eventually(Duration::from_secs(20), || {
        let view: serde_json::Value =
            serde_json::from_str(&server.ok(&["mqt", "get", "--name", "traced", "-o", "json"]))
                .unwrap();
        (view["status"]["connected"] == true).then_some(())
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let message_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let message_parent = "00f067aa0ba902b7";
    runtime.block_on(async {
        let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{message_trace}-{message_parent}-01").as_str(),
        );
        js.publish_with_headers(format!("{subject}.in"), headers, "traced".into())
            .await
            .unwrap()
            .await
            .unwrap();
    });
    let consumed = receiver.span("the message's span", |s| {
        s.name == "echo" && id(&s.trace_id) == message_trace
    });
    assert_eq!(id(&consumed.parent_span_id), message_parent);
    assert_eq!(
        attribute(&consumed, "faas.trigger").as_deref(),
        Some("pubsub")
    );
    assert_eq!(consumed.name, "echo");
}

#[test]
fn a_sample_rate_of_zero_exports_only_what_callers_sampled() {
    let receiver = Receiver::http();
    let server = traced_server(&receiver, "http", &["--trace-sample-rate", "0"]);
    server.create("echo", "echo", &[]);
    for _ in 0..20 {
        let response = http()
            .get(format!("{}/fn/echo", server.router))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        // Left out, yet the function still gets a trace context to pass on.
        let answer: serde_json::Value = response.json().unwrap();
        let (_, _, flags) = received_traceparent(&answer);
        assert_eq!(flags, "00");
    }
    // A caller that samples is followed: its span arrives, and being
    // exported after the others would have been, it shows none was.
    let response = http()
        .get(format!("{}/fn/echo", server.router))
        .header("traceparent", format!("00-{TRACE}-{CALLER}-01"))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    receiver.span("the sampled caller's span", |s| id(&s.trace_id) == TRACE);
    let names: Vec<(String, String)> = receiver
        .spans()
        .iter()
        .map(|s| (s.name.clone(), id(&s.trace_id)))
        .collect();
    assert!(
        names.iter().all(|(_, trace)| trace == TRACE),
        "only the sampled trace is exported: {names:?}"
    );
}

#[test]
fn without_an_exporter_a_callers_trace_context_reaches_the_function_untouched() {
    let server = Server::start();
    server.create("echo", "echo", &[]);
    let traceparent = format!("00-{TRACE}-{CALLER}-01");
    let answer: serde_json::Value = http()
        .get(format!("{}/fn/echo", server.router))
        .header("traceparent", &traceparent)
        .header("tracestate", "vendor=kept")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(answer["headers"]["traceparent"], traceparent.as_str());
    assert_eq!(answer["headers"]["tracestate"], "vendor=kept");
}

#[test]
fn bad_tracing_settings_are_refused_before_the_server_starts() {
    for (args, expected) in [
        (
            vec!["--otlp-endpoint", "ftp://127.0.0.1:4318"],
            "must be an http:// or https:// URL",
        ),
        (vec!["--otlp-endpoint", "not a url"], "is not a URL"),
        (
            vec![
                "--otlp-endpoint",
                "http://127.0.0.1:4318",
                "--otlp-protocol",
                "udp",
            ],
            "invalid value 'udp'",
        ),
        (
            vec![
                "--otlp-endpoint",
                "http://127.0.0.1:4318",
                "--trace-sample-rate",
                "2",
            ],
            "is not a fraction between 0 and 1",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_flare"))
            .args([
                "server",
                "--addr",
                "127.0.0.1:0",
                "--api-addr",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?} started");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(
            String::from_utf8_lossy(&output.stdout).is_empty(),
            "{args:?}: nothing listened"
        );
        assert!(
            !dir.path().join("admin.token").exists(),
            "{args:?}: nothing was written"
        );
    }
}

#[test]
fn a_request_that_waits_for_a_permit_has_a_queue_phase() {
    let receiver = Receiver::http();
    let server = traced_server(&receiver, "http", &[]);
    server.create("slow", "misbehave", &["--concurrency", "1", "--queue", "4"]);
    let router = server.router.clone();
    let first = std::thread::spawn(move || {
        http()
            .get(format!("{router}/fn/slow/sleep?ms=3000"))
            .send()
            .unwrap()
            .status()
    });
    // The first holds the only permit for 3 s (the timeout is 5 s): the
    // second waits for it.
    eventually(Duration::from_secs(20), || {
        let view: serde_json::Value =
            serde_json::from_str(&server.ok(&["fn", "get", "--name", "slow", "-o", "json"]))
                .unwrap();
        (view["status"]["inFlight"] == 1).then_some(())
    });
    let response = http()
        .get(format!("{}/fn/slow/sleep?ms=1", server.router))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let invocation = invocation_id(&response);
    assert_eq!(first.join().unwrap(), 200);

    let span = receiver.span("the queued request's span", |s| {
        of_invocation(s, &invocation)
    });
    let queue = receiver.span("its queue phase", |s| {
        s.name == "queue" && s.parent_span_id == span.span_id
    });
    let run = receiver.span("its function phase", |s| {
        s.name == "function" && s.parent_span_id == span.span_id
    });
    assert!(queue.end_time_unix_nano > queue.start_time_unix_nano);
    assert!(queue.start_time_unix_nano >= span.start_time_unix_nano);
    assert!(queue.end_time_unix_nano <= run.start_time_unix_nano);
}

#[test]
fn redis_amqp_and_kafka_messages_continue_the_trace_they_carry() {
    let receiver = Receiver::http();
    let server = traced_server(&receiver, "http", &[]);
    server.create("echo", "echo", &[]);
    let topic = format!("flare-traces-{}", std::process::id());
    let (_cluster, kafka) = Kafka::start(&[(&topic, 1)]);
    for (name, kind) in [
        ("traced-redis", "redis"),
        ("traced-amqp", "amqp"),
        ("traced-kafka", "kafka"),
    ] {
        let mut args = vec![
            "mqt",
            "create",
            "--name",
            name,
            "--function",
            "echo",
            "--mqtype",
            kind,
            "--topic",
            &topic,
        ];
        let url = kafka.url();
        if kind == "kafka" {
            args.extend(["--broker", &url]);
        }
        server.ok(&args);
        eventually(Duration::from_secs(20), || {
            let view: serde_json::Value =
                serde_json::from_str(&server.ok(&["mqt", "get", "--name", name, "-o", "json"]))
                    .unwrap();
            (view["status"]["connected"] == true).then_some(())
        });
    }
    let parent = "00f067aa0ba902b7";
    let redis_trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let amqp_trace = "6bf92f3577b34da6a3ce929d0e0e4736";
    let kafka_trace = "7bf92f3577b34da6a3ce929d0e0e4736";

    // A Redis entry's fields besides the payload are its headers.
    let added = Command::new("redis-cli")
        .args([
            "XADD",
            &topic,
            "*",
            "payload",
            "traced",
            "traceparent",
            &format!("00-{redis_trace}-{parent}-01"),
        ])
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    // An AMQP message's headers table.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_connection, channel) = runtime.block_on(common::amqp_channel());
    let mut headers = lapin::types::FieldTable::default();
    headers.insert(
        "traceparent".into(),
        lapin::types::AMQPValue::LongString(format!("00-{amqp_trace}-{parent}-01").into()),
    );
    runtime.block_on(async {
        channel
            .basic_publish(
                "".into(),
                topic.as_str().into(),
                lapin::options::BasicPublishOptions::default(),
                b"traced",
                lapin::BasicProperties::default().with_headers(headers),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    });

    // A Kafka record's headers.
    kafka.send_with_headers(
        &topic,
        "k",
        None,
        &[("traceparent", &format!("00-{kafka_trace}-{parent}-01"))],
        "traced",
    );

    for (broker, trace) in [
        ("redis", redis_trace),
        ("amqp", amqp_trace),
        ("kafka", kafka_trace),
    ] {
        let span = receiver.span(&format!("the {broker} message's span"), |s| {
            s.name == "echo" && id(&s.trace_id) == trace
        });
        assert_eq!(id(&span.parent_span_id), parent, "{broker}");
        assert_eq!(
            attribute(&span, "faas.trigger").as_deref(),
            Some("pubsub"),
            "{broker}"
        );
    }

    server.ok(&["mqt", "delete", "--name", "traced-redis"]);
    server.ok(&["mqt", "delete", "--name", "traced-amqp"]);
    server.ok(&["mqt", "delete", "--name", "traced-kafka"]);
    let _ = Command::new("redis-cli").args(["DEL", &topic]).output();
    runtime.block_on(async {
        let _ = channel
            .queue_delete(
                topic.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    });
}

#[test]
fn a_caller_that_goes_away_mid_request_still_leaves_a_span() {
    let receiver = Receiver::http();
    let server = traced_server(&receiver, "http", &[]);
    server.create("slow", "misbehave", &[]);
    let gone = "1af7651916cd43dd8448eb211c80319c";
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sent = impatient
        .get(format!("{}/fn/slow/sleep?ms=2000", server.router))
        .header("traceparent", format!("00-{gone}-{CALLER}-01"))
        .send();
    assert!(sent.is_err(), "the caller gave up before the answer");
    let span = receiver.span("the abandoned request's span", |s| {
        s.name == "slow" && id(&s.trace_id) == gone
    });
    assert_eq!(id(&span.parent_span_id), CALLER);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    // The server goes on serving, traced.
    assert_eq!(server.get("/fn/slow/ok").status(), 200);
}
