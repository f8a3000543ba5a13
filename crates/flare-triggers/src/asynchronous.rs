//! Asynchronous invocations: run what callers left in the queue.
//!
//! At-least-once: an invocation is marked running while it runs and its
//! outcome is recorded after; one whose taker crashed runs again (on the
//! node's restart alone, on another node in a cluster). A 5xx or a failure
//! to run is retried with exponential backoff (1 s, 2 s, 4 s, ... up to 60 s) until the invocation's max retries; then
//! it stays failed, the dead letter listed by `flare invocations list
//! --failed`. A 503 (the function is at capacity) is not a failure: the
//! invocation waits and is tried again without spending a retry. When a
//! callback URL was given, the outcome is POSTed to it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use flare_egress::EgressPolicy;
use flare_executor::Executor;
use flare_model::ErrorCode;
use flare_store::invocations::{Attempt, Claimed, InvocationQueue, InvocationStatus};
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::Semaphore;

/// Invocations run at once.
const CONCURRENCY: usize = 16;
/// How long a saturated function's invocation waits before it is tried again.
const SATURATED_DELAY: Duration = Duration::from_millis(200);

pub struct AsyncInvoker {
    queue: Arc<dyn InvocationQueue>,
    executor: Arc<Executor>,
    slots: Arc<Semaphore>,
    egress: Arc<EgressPolicy>,
}

fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(6)).min(Duration::from_secs(60))
}

impl AsyncInvoker {
    /// Callbacks go only where `egress` allows: a caller of the router
    /// must not reach, through Flare, what it cannot reach itself.
    pub fn new(
        queue: Arc<dyn InvocationQueue>,
        executor: Arc<Executor>,
        egress: Arc<EgressPolicy>,
    ) -> Arc<Self> {
        Arc::new(AsyncInvoker {
            queue,
            executor,
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            egress,
        })
    }

    /// Runs queued invocations until the process ends, once the executor
    /// has deployed the resources up to `revision` (nothing runs before
    /// the stored functions are deployed).
    pub async fn run(self: Arc<Self>, revision: flare_store::Revision) {
        let mut deployed = self.executor.applied();
        let _ = deployed.wait_for(|r| *r >= revision).await;
        // A queue that cannot be read (NATS away) is said once per outage.
        let mut failing = false;
        loop {
            // Take only what can start now (what waits in the queue can be
            // taken by another node): wait for a free slot first. Only this
            // loop takes slots, so the room seen stays free.
            if self.slots.acquire().await.is_err() {
                return;
            }
            let room = self.slots.available_permits();
            let claimed = match self.queue.take(room).await {
                Ok(claimed) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("the invocation queue can be read again");
                    }
                    claimed
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::error!("cannot take from the invocation queue: {e}; retrying");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            for claim in claimed {
                let Ok(slot) = self.slots.clone().acquire_owned().await else {
                    return;
                };
                let me = self.clone();
                tokio::spawn(async move {
                    me.execute(claim).await;
                    drop(slot);
                });
            }
        }
    }

    async fn execute(&self, mut claim: Box<dyn Claimed>) {
        // The body moves into the request: no copy of up to the largest
        // body a function takes.
        let body = claim.take_body();
        let r = &claim.invocation().request;
        let (id, callback_url) = (r.id.clone(), r.callback_url.clone());
        let attempts = claim.invocation().attempts;
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() =
            http::Method::from_bytes(r.method.as_bytes()).unwrap_or(http::Method::POST);
        if let Ok(uri) = r.path.parse() {
            *request.uri_mut() = uri;
        }
        for (name, value) in &r.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                request.headers_mut().append(name, value);
            }
        }
        if let Ok(value) = http::HeaderValue::from_str(&r.id) {
            request.headers_mut().insert("x-flare-async-id", value);
        }
        // The run carries the id its caller was given, so its logs are
        // found by it (every attempt's under the one id).
        let invoked = self
            .executor
            .invoke_as(&r.function, request, Some(r.id.as_str().into()))
            .await;
        if let Err(e) = &invoked.result
            && e.code == ErrorCode::Unavailable
        {
            // Saturated, not failed: wait for capacity without spending a
            // retry (the function's own queue and limits still apply).
            if let Err(e) = claim.defer(SATURATED_DELAY).await {
                tracing::error!("invocation {id}: cannot defer it: {e}");
            }
            return;
        }
        let attempt = match invoked.result {
            Ok(response) => {
                let status = response.status().as_u16();
                let body = match Limited::new(response.into_body(), self.queue.max_result())
                    .collect()
                    .await
                {
                    Ok(body) => body.to_bytes().to_vec(),
                    Err(e) => format!("[response body not kept: {e}]").into_bytes(),
                };
                Attempt {
                    status: Some(status),
                    body,
                    error: (status >= 500).then(|| format!("function answered {status}")),
                    retry: status >= 500,
                    fatal: false,
                }
            }
            Err(e) => Attempt {
                status: Some(e.status()),
                body: Vec::new(),
                fatal: e.code == ErrorCode::NotFound,
                retry: true,
                error: Some(e.owner_message()),
            },
        };
        let status = match claim.finish(&attempt, backoff(attempts)).await {
            Ok(status) => status,
            Err(e) => {
                tracing::error!("invocation {id}: cannot record its outcome: {e}");
                return;
            }
        };
        if status != InvocationStatus::Queued
            && let Some(url) = &callback_url
        {
            self.call_back(url, &id, status, attempt).await;
        }
    }

    /// POSTs the outcome to the caller's callback URL; best effort. The
    /// URL's host is resolved and checked against the egress policy, and
    /// the connection goes to exactly the checked addresses; redirects are
    /// not followed.
    async fn call_back(&self, url: &str, id: &str, status: InvocationStatus, attempt: Attempt) {
        let client = match callback_client(&self.egress, url).await {
            Ok(client) => client,
            Err(why) => {
                tracing::warn!("invocation {id}: callback to {url} refused: {why}");
                return;
            }
        };
        let sent = client
            .post(url)
            .header("x-flare-invocation-id", id)
            .header("x-flare-invocation-status", status.as_str())
            .header(
                "x-flare-function-status",
                attempt.status.unwrap_or(0).to_string(),
            )
            .body(attempt.body)
            .send()
            .await;
        if let Err(e) = sent {
            tracing::warn!("invocation {id}: callback to {url} failed: {e}");
        }
    }
}

/// A client for one callback: it connects only to the addresses of the
/// URL's host that `egress` allows (resolved once, here) and follows no
/// redirect.
async fn callback_client(egress: &EgressPolicy, url: &str) -> Result<reqwest::Client, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let host = parsed.host_str().ok_or("the URL has no host")?;
    let port = parsed
        .port_or_known_default()
        .ok_or("the URL has no port")?;
    let addrs = egress
        .resolve(host, port)
        .await
        .map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .resolve_to_addrs(host, &addrs)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `answer`, and counts them.
    async fn serve(answer: &'static str) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(answer.as_bytes()).await;
            }
        });
        (addr, hits)
    }

    #[tokio::test]
    async fn a_callback_follows_no_redirect() {
        let (elsewhere, hits) = serve("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let redirect: &'static str = Box::leak(
            format!(
                "HTTP/1.1 302 Found\r\nlocation: http://{elsewhere}/stolen\r\ncontent-length: 0\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (first, _) = serve(redirect).await;
        let egress = EgressPolicy {
            allow_private: true,
            own_ports: vec![],
        };
        let url = format!("http://{first}/done");
        let client = callback_client(&egress, &url).await.unwrap();
        let answer = client.post(&url).body("x").send().await.unwrap();
        assert_eq!(answer.status(), 302, "the redirect is the answer");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);
        // And without the operator's leave, loopback is refused outright.
        let err = callback_client(&EgressPolicy::default(), &url)
            .await
            .unwrap_err();
        assert!(err.contains("loopback"), "{err}");
    }
}
