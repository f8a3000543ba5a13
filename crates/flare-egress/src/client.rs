//! Outbound HTTP(S) over a connection to a checked address: what a wasm
//! function's `wasi:http/outgoing-handler` calls end up as.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::{EgressError, EgressPolicy};

/// How long a target may take to accept a connection (and TLS, and the
/// HTTP handshake), when the caller sets no limit of its own.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may wait for its response head, likewise.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an outbound request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("outbound request refused: {0}")]
    Denied(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the request URI has no host")]
    NoHost,
    #[error("TLS with {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl From<EgressError> for SendError {
    fn from(e: EgressError) -> Self {
        match e {
            EgressError::Denied(why) => SendError::Denied(why),
            EgressError::Unreachable(why) => SendError::Unreachable(why),
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The TLS client settings: the Mozilla roots webpki-roots ships, built once.
fn tls() -> TlsConnector {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        Arc::new(
            ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    TlsConnector::from(config.clone())
}

/// Sends `request` (its URI absolute: scheme, host, path) to an address
/// `policy` allows. Returns the response and the future that drives the
/// connection until its body is read; the caller polls it alongside the
/// body. `connect_timeout` bounds connecting, TLS and the handshake;
/// `first_byte_timeout` the wait for the response head.
pub async fn send<B>(
    policy: &EgressPolicy,
    mut request: Request<B>,
    connect_timeout: Duration,
    first_byte_timeout: Duration,
) -> Result<
    (
        Response<Incoming>,
        impl Future<Output = Result<(), hyper::Error>> + Send + 'static,
    ),
    SendError,
>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let uri = request.uri().clone();
    let host = uri.host().ok_or(SendError::NoHost)?.to_string();
    let https = uri.scheme() == Some(&Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = policy.connect(&host, port, connect_timeout).await?;
    let stream: Box<dyn Stream> = if https {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(bare.to_string()).map_err(|e| SendError::Tls {
            host: host.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        let tls = tokio::time::timeout(connect_timeout, tls().connect(name, tcp))
            .await
            .map_err(|_| SendError::Timeout)?
            .map_err(|source| SendError::Tls {
                host: host.clone(),
                source,
            })?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| SendError::Timeout)??;
    // On the wire to an origin server the request line holds the path only.
    *request.uri_mut() = uri
        .path_and_query()
        .map(|p| Uri::from(p.clone()))
        .unwrap_or_else(|| Uri::from_static("/"));
    // The host is the one that was checked, whatever Host the caller sent
    // (RFC 9112: a proxy replaces it with the target's authority).
    if let Some(authority) = uri.authority()
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }

    // The connection must be driven while the response is awaited; it is
    // handed back to be driven while the body is read.
    let mut conn = Box::pin(conn);
    let mut conn_done = false;
    let response = sender.send_request(request);
    tokio::pin!(response);
    let deadline = tokio::time::sleep(first_byte_timeout);
    tokio::pin!(deadline);
    let response = loop {
        tokio::select! {
            response = &mut response => break response?,
            ended = &mut conn, if !conn_done => {
                conn_done = true;
                ended?;
            }
            () = &mut deadline => return Err(SendError::Timeout),
        }
    };
    Ok((response, async move {
        if conn_done { Ok(()) } else { conn.await }
    }))
}
