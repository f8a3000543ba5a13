//! Exporting invocation spans over OTLP (`flare server --otlp-endpoint`).
//!
//! The executor makes the spans ([`flare_executor::Executor::set_tracer`]);
//! this builds the exporter they go to: OTLP over HTTP/protobuf (through
//! the reqwest client the rest of Flare uses, so `https://` works with the
//! same TLS stack) or gRPC (tonic), batched on the server's tokio runtime
//! so a slow collector never holds up a request.

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};

/// How spans travel to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies, POSTed to <endpoint>/v1/traces
    /// (a collector's port 4318).
    Http,
    /// OTLP/gRPC (a collector's port 4317).
    Grpc,
}

/// How long one export may take before it is given up (its spans are
/// dropped, the server goes on).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The tracer provider sending to `endpoint`, keeping `sample_rate` of the
/// traces Flare starts (a caller's sampled trace is always continued).
/// Shut it down at exit to send what is still batched.
pub fn provider(
    endpoint: &str,
    protocol: OtlpProtocol,
    sample_rate: f64,
    node: &str,
) -> anyhow::Result<SdkTracerProvider> {
    let url: http::Uri = endpoint
        .parse()
        .with_context(|| format!("--otlp-endpoint {endpoint:?} is not a URL"))?;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        anyhow::bail!(
            "--otlp-endpoint {endpoint:?} must be an http:// or https:// URL with a host \
             (a collector: http://127.0.0.1:4318 for --otlp-protocol http, :4317 for grpc)"
        );
    }
    let exporter = match protocol {
        OtlpProtocol::Http => {
            // The endpoint is the collector's; the traces path is OTLP's.
            let traces = match url.path() {
                "" | "/" => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
                _ => endpoint.to_string(),
            };
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_http_client(Client::new()?)
                .with_endpoint(traces)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
        }
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build(),
    }
    .with_context(|| format!("cannot export spans to {endpoint}"))?;
    let batches = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = Resource::builder()
        .with_service_name("flare")
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("service.instance.id", node.to_string()),
        ])
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_rate,
        ))))
        .with_resource(resource)
        .build())
}

/// The tracer invocations' spans come from.
pub fn tracer(provider: &SdkTracerProvider) -> SdkTracer {
    provider.tracer("flare")
}

/// A sample rate: a fraction in 0..=1.
pub fn parse_sample_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a fraction between 0 and 1 (0.01 keeps one trace in a hundred)"
        )),
    }
}

/// OTLP/HTTP through reqwest (async, on the server's runtime).
#[derive(Debug)]
struct Client(reqwest::Client);

impl Client {
    fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .context("cannot make the OTLP HTTP client")?;
        Ok(Client(client))
    }
}

/// The most of a collector's answer that is read.
const MAX_ANSWER: usize = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Client {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let mut response = self.0.execute(request).await?;
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = std::mem::take(response.headers_mut());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Err("the collector's answer is over 1 MiB".into());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(answer.body(Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_rates_are_fractions() {
        assert_eq!(parse_sample_rate("0.01"), Ok(0.01));
        assert_eq!(parse_sample_rate("1"), Ok(1.0));
        for bad in ["-0.1", "1.5", "half", "", "NaN"] {
            assert!(parse_sample_rate(bad).is_err(), "{bad}");
        }
    }
}
