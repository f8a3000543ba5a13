//! The egress proxy of a sandbox.
//!
//! A sandbox's network namespace holds nothing but its own loopback. A
//! process function that may call out gets a Unix socket bound into its
//! sandbox; its worker forwards a loopback port to that socket and points
//! `HTTP_PROXY`/`HTTPS_PROXY` at the port. What arrives on the socket is
//! an HTTP/1 proxy conversation, answered here on the host:
//!
//! - `CONNECT host:port` (HTTPS): the host is checked against the
//!   function's list, the address against the [`EgressPolicy`]; then bytes
//!   are tunnelled both ways (the TLS stays end to end).
//! - `GET http://host/path` (absolute form): checked the same way, then
//!   forwarded with [`send`](crate::send).
//!
//! Anything else is refused with a status and a one-line reason the
//! function can print: 403 for what the policy refuses, 502 for a target
//! that cannot be reached, 400 for what is not a proxy request.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flare_model::FunctionSpec;
use http::{HeaderName, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixListener};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::{CONNECT_TIMEOUT, EgressError, EgressPolicy, FIRST_BYTE_TIMEOUT, SendError};

/// Connections one sandbox may hold open through its proxy at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one sandbox's proxy lets through.
#[derive(Debug, Clone)]
pub struct Rules {
    pub policy: Arc<EgressPolicy>,
    /// The function's `allowedHosts`: `name`, `name:port`, `*.domain`, `*`.
    pub allowed_hosts: Arc<[String]>,
}

type Body = BoxBody<Bytes, hyper::Error>;

/// A CONNECT that was allowed: the client's side, once the 200 is out, and
/// the target already connected.
struct Tunnel {
    client: OnUpgrade,
    target: TcpStream,
}

/// Serves the proxy on `listener` until this future is dropped (with the
/// worker), which also ends every session it started.
pub async fn serve(listener: UnixListener, rules: Arc<Rules>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut sessions = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("egress proxy: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while sessions.try_join_next().is_some() {}
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            // Over the limit: the client sees its connection closed.
            continue;
        };
        let rules = rules.clone();
        sessions.spawn(async move {
            session(stream, rules).await;
            drop(permit);
        });
    }
}

/// One client connection: requests until it closes, or one CONNECT whose
/// tunnel then runs here, inside the session (so the limit counts it).
async fn session(stream: tokio::net::UnixStream, rules: Arc<Rules>) {
    let (tunnel_tx, tunnel_rx) = oneshot::channel::<Tunnel>();
    let tunnel_tx = Arc::new(Mutex::new(Some(tunnel_tx)));
    let service = hyper::service::service_fn(move |request| {
        let (rules, tunnel_tx) = (rules.clone(), tunnel_tx.clone());
        async move {
            let response = match route(&rules, request).await {
                Ok(Routed::Forwarded(response)) => response,
                Ok(Routed::Tunnel(tunnel)) => {
                    if let Ok(mut slot) = tunnel_tx.lock()
                        && let Some(tx) = slot.take()
                    {
                        let _ = tx.send(tunnel);
                    }
                    Response::new(empty())
                }
                Err((status, why)) => refusal(status, &why),
            };
            Ok::<_, Infallible>(response)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!("egress proxy session ended: {e}");
    }
    if let Ok(Tunnel { client, mut target }) = tunnel_rx.await
        && let Ok(upgraded) = client.await
    {
        let mut client = TokioIo::new(upgraded);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut target).await;
    }
}

enum Routed {
    Forwarded(Response<Body>),
    Tunnel(Tunnel),
}

type Refusal = (StatusCode, String);

fn denied(why: EgressError) -> Refusal {
    match why {
        EgressError::Denied(why) => (StatusCode::FORBIDDEN, why),
        EgressError::Unreachable(why) => (StatusCode::BAD_GATEWAY, why),
    }
}

/// Checks the target of `request` and opens the way to it.
async fn route(rules: &Rules, mut request: Request<Incoming>) -> Result<Routed, Refusal> {
    let uri = request.uri().clone();
    let Some(authority) = uri.authority() else {
        return Err((
            StatusCode::BAD_REQUEST,
            "not a proxy request: use an absolute http:// URL or CONNECT host:port".into(),
        ));
    };
    if !FunctionSpec::allows_host(&rules.allowed_hosts, authority.as_str()) {
        return Err((
            StatusCode::FORBIDDEN,
            format!(
                "{} is not among the function's allowed hosts",
                authority.as_str()
            ),
        ));
    }
    if request.method() == Method::CONNECT {
        let Some(port) = authority.port_u16() else {
            return Err((StatusCode::BAD_REQUEST, "CONNECT needs host:port".into()));
        };
        let target = rules
            .policy
            .connect(authority.host(), port, CONNECT_TIMEOUT)
            .await
            .map_err(denied)?;
        let client = hyper::upgrade::on(&mut request);
        return Ok(Routed::Tunnel(Tunnel { client, target }));
    }
    strip_hop_by_hop(request.headers_mut());
    let (response, conn) = crate::send(&rules.policy, request, CONNECT_TIMEOUT, FIRST_BYTE_TIMEOUT)
        .await
        .map_err(|e| match e {
            SendError::Denied(why) => (StatusCode::FORBIDDEN, why),
            SendError::Timeout => (StatusCode::GATEWAY_TIMEOUT, e.to_string()),
            other => (StatusCode::BAD_GATEWAY, other.to_string()),
        })?;
    // Ends when the body is read or the client goes away.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut response = response.map(BodyExt::boxed);
    strip_hop_by_hop(response.headers_mut());
    Ok(Routed::Forwarded(response))
}

/// Removes what belongs to one hop (this proxy's connection) rather than
/// to the message, including the headers `Connection` names.
fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn refusal(status: StatusCode, why: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(format!("flare egress: {why}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A target that answers every request with `ok` and closes.
    async fn target() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
                        .await;
                });
            }
        });
        addr
    }

    /// A proxy with `rules` on a fresh socket; the directory keeps it alive.
    fn proxy(policy: EgressPolicy, allowed: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let rules = Arc::new(Rules {
            policy: Arc::new(policy),
            allowed_hosts: allowed.iter().map(|h| h.to_string()).collect(),
        });
        tokio::spawn(serve(listener, rules));
        (dir, path)
    }

    async fn exchange(path: &std::path::Path, request: &str) -> String {
        let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn private() -> EgressPolicy {
        EgressPolicy {
            allow_private: true,
            own_ports: vec![],
        }
    }

    #[tokio::test]
    async fn forwards_plain_http_to_an_allowed_host() {
        let target = target().await;
        let (_dir, path) = proxy(private(), &[&target]);
        let got = exchange(
            &path,
            &format!(
                "GET http://{target}/x HTTP/1.1\r\nhost: {target}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("ok\n"), "{got}");
    }

    #[tokio::test]
    async fn tunnels_a_connect_to_an_allowed_host() {
        let target = target().await;
        let (_dir, path) = proxy(private(), &["*"]);
        let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut head = [0; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        // The rest of the proxy's head, then the target's own answer.
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        let rest = String::from_utf8_lossy(&rest);
        assert!(rest.contains("\r\n\r\nHTTP/1.1 200 OK"), "{rest}");
        assert!(rest.ends_with("ok\n"), "{rest}");
    }

    #[tokio::test]
    async fn refuses_what_the_rules_refuse() {
        let target = target().await;
        let port: u16 = target.rsplit_once(':').unwrap().1.parse().unwrap();
        let cases = [
            // Not among the function's hosts (refused before any lookup).
            (private(), "other.example:80", "403", "allowed hosts"),
            // Loopback, without the operator's leave.
            (EgressPolicy::default(), target.as_str(), "403", "loopback"),
            // One of Flare's own ports, even with private addresses allowed.
            (
                EgressPolicy {
                    allow_private: true,
                    own_ports: vec![port],
                },
                target.as_str(),
                "403",
                "own ports",
            ),
        ];
        for (policy, host, status, why) in cases {
            let (_dir, path) = proxy(policy, &[&target]);
            for request in [
                format!("GET http://{host}/ HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
                format!("CONNECT {host} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"),
            ] {
                let got = exchange(&path, &request).await;
                assert!(got.starts_with(&format!("HTTP/1.1 {status}")), "{got}");
                assert!(got.contains(why), "{why}: {got}");
            }
        }
        // An ordinary request is not a proxy request.
        let (_dir, path) = proxy(private(), &["*"]);
        let got = exchange(
            &path,
            "GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    }
}
