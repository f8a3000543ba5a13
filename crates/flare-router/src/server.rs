//! The live router: the current table behind an atomic swap, kept in step
//! with the store, and the hyper server in front of the executor.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use flare_access::Tokens;
use flare_executor::accepted;
use flare_executor::{Executor, INVOCATION_HEADER};
use flare_executor::{ResponseBody, full_body};
use flare_model::{Error, ErrorCode, HttpTriggerSpec, InvokeAuth, Kind, Permission, Resource};
use flare_store::invocations::InvocationQueue;
use flare_store::{Follower, Revision, Store, Update, advance};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::RouteTable;

const PARAM_HEADER_PREFIX: &str = "x-flare-param-";

/// The HTTP ingress. One per process.
pub struct Router {
    table: ArcSwap<RouteTable>,
    executor: Arc<Executor>,
    applied: watch::Sender<Revision>,
    /// Where asynchronous invocations are queued, when enabled.
    queue: Option<Arc<dyn InvocationQueue>>,
    /// The valid tokens, for functions called with `auth: token`.
    tokens: Arc<Tokens>,
}

/// The JSON error response every router error uses, with the invocation id
/// when a function was started and `Retry-After` when retrying may help.
pub fn error_response(error: &Error, invocation: Option<&str>) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(full_body(Bytes::from(error.to_json())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if error.code == ErrorCode::Unavailable {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if error.code == ErrorCode::Unauthenticated {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    if let Some(value) = invocation.and_then(|id| HeaderValue::from_str(id).ok()) {
        headers.insert(INVOCATION_HEADER, value);
    }
    response
}

/// The one host a request names. Routing and the function must see the
/// same one, so two `Host` headers, a malformed one, or none on HTTP/1.1
/// (RFC 9112 §3.2) are refused rather than guessed at.
fn host_of<B>(request: &Request<B>) -> Result<Option<&str>, Error> {
    let mut hosts = request.headers().get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid("the request has more than one Host header"));
        }
        (one, None) => one,
        (None, Some(_)) => None,
    };
    let Some(header) = header else {
        if let Some(authority) = request.uri().authority() {
            return Ok(Some(authority.as_str()));
        }
        if request.version() >= http::Version::HTTP_11 {
            return Err(Error::invalid("an HTTP/1.1 request needs a Host header"));
        }
        return Ok(None);
    };
    // host[:port] as RFC 3986 spells an authority without userinfo,
    // checked byte by byte: no parse, no allocation on every request.
    let valid = header.to_str().ok().filter(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:[]%".contains(&b))
    });
    match valid {
        Some(host) => Ok(Some(host)),
        None => Err(Error::invalid(
            "the request's Host header is not a valid host[:port]",
        )),
    }
}

impl Router {
    pub fn new(
        executor: Arc<Executor>,
        queue: Option<Arc<dyn InvocationQueue>>,
        tokens: Arc<Tokens>,
    ) -> Arc<Self> {
        Arc::new(Router {
            table: ArcSwap::from_pointee(RouteTable::default()),
            executor,
            applied: watch::Sender::new(0),
            queue,
            tokens,
        })
    }

    /// For a function that takes only tokens: checks the bearer's and
    /// drops the header, which is Flare's, not the function's.
    fn authorize(&self, function: &str, headers: &mut http::HeaderMap) -> Result<(), Error> {
        // A version (`hello@3`) needs a token when it did or when its
        // function does now: closing a function closes its old versions.
        let (name, namespace) = flare_model::split_qualified(function);
        let latest = name
            .split_once('@')
            .map(|(base, _)| flare_model::qualified(base, namespace));
        let needs = [Some(function), latest.as_deref()]
            .into_iter()
            .flatten()
            .filter_map(|f| self.executor.auth(f))
            .find(|(auth, _)| *auth == InvokeAuth::Token);
        let Some((_, namespace)) = needs else {
            return Ok(());
        };
        let grant = self.tokens.authenticate(headers)?;
        grant.check(Permission::Invoke, &namespace, true)?;
        headers.remove(http::header::AUTHORIZATION);
        Ok(())
    }

    /// The store revision the route table reflects.
    pub fn applied(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Rebuilds the table whenever a trigger, an alias or a canary
    /// changes, until the store closes.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut follower = Follower::new(&*store);
        while let Some(update) = follower.next(&*store).await {
            let revision = update.revision();
            match update {
                Update::Change(event)
                    if !matches!(event.kind, Kind::HttpTrigger | Kind::Alias | Kind::Canary) => {}
                _ => self.rebuild(&*store),
            }
            advance(&self.applied, revision);
        }
    }

    fn rebuild(&self, store: &dyn Store) {
        let (Some(triggers), Some(aliases), Some(canaries)) = (
            all::<HttpTriggerSpec>(store),
            all::<flare_model::AliasSpec>(store),
            all::<flare_model::CanarySpec>(store),
        ) else {
            return;
        };
        self.table
            .store(Arc::new(RouteTable::new(triggers, aliases, canaries)));
    }

    /// Serves HTTP/1.1 on `listener` (over TLS when `tls` is given)
    /// until `shutdown` completes.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<TlsAcceptor>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        crate::listen::accept_loop(listener, tls, shutdown, move |stream| {
            let router = self.clone();
            async move {
                let service = hyper::service::service_fn(move |request| {
                    let router = router.clone();
                    async move { Ok::<_, Infallible>(router.handle(request).await) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!("connection ended: {e}");
                }
            }
        })
        .await
    }

    /// Routes one request and runs it.
    pub async fn handle(&self, mut request: Request<Incoming>) -> Response<ResponseBody> {
        let host = match host_of(&request) {
            Ok(host) => host,
            Err(e) => return error_response(&e, None),
        };
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        // /async/fn/{name}/... is /fn/{name}/..., queued.
        let (path, queued) = match path
            .strip_prefix("/async")
            .filter(|p| p.starts_with("/fn/"))
        {
            Some(rest) => (rest, true),
            None => (path, false),
        };
        let resolved = match self.table.load().resolve(
            request.method().as_str(),
            host,
            path,
            rand::random::<u32>() % 100,
        ) {
            Ok(resolved) => resolved,
            Err(e) => return error_response(&e, None),
        };
        // A version a route serves is prepared on its first request, before
        // its own auth setting is checked.
        if let Err(e) = self.executor.ensure(&resolved.function).await {
            return error_response(&e, None);
        }
        if let Err(e) = self.authorize(&resolved.function, request.headers_mut()) {
            return error_response(&e, None);
        }
        let queued = queued
            || request
                .headers()
                .get(flare_executor::ASYNC_HEADER)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));

        // Parameter headers come only from the router, never the client.
        let headers = request.headers_mut();
        if headers
            .keys()
            .any(|k| k.as_str().starts_with(PARAM_HEADER_PREFIX))
        {
            let spoofed: Vec<HeaderName> = headers
                .keys()
                .filter(|k| k.as_str().starts_with(PARAM_HEADER_PREFIX))
                .cloned()
                .collect();
            for name in spoofed {
                headers.remove(name);
            }
        }
        for (name, value) in &resolved.params {
            let name = HeaderName::try_from(format!(
                "{PARAM_HEADER_PREFIX}{}",
                name.to_ascii_lowercase()
            ));
            if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(value)) {
                headers.insert(name, value);
            }
        }
        if let Some(rewritten) = &resolved.rewritten {
            match rewritten.parse::<Uri>() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(e) => return error_response(&Error::invalid(format!("bad path: {e}")), None),
            }
        }

        if queued {
            let Some(queue) = &self.queue else {
                let e = Error::new(
                    ErrorCode::Unavailable,
                    "asynchronous invocation is not enabled",
                );
                return error_response(&e, None);
            };
            return match self
                .executor
                .submit(&**queue, &resolved.function, request)
                .await
            {
                Ok(id) => accepted(&id).map(full_body),
                Err(e) => error_response(&e, None),
            };
        }
        let invoked = self.executor.invoke(&resolved.function, request).await;
        match invoked.result {
            Ok(response) => response,
            Err(e) => error_response(&e, invoked.invocation.as_deref()),
        }
    }
}

/// Every stored resource of `S`'s kind that decodes; `None` (logged)
/// when the store cannot list them, so the table in use stays.
fn all<S: flare_model::Spec>(store: &dyn Store) -> Option<Vec<Resource<S>>> {
    match store.list(S::KIND) {
        Ok(docs) => Some(
            docs.into_iter()
                .filter_map(|doc| Resource::<S>::from_document(doc).ok())
                .collect(),
        ),
        Err(e) => {
            tracing::error!("cannot list {}s: {e}", S::KIND.noun());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;
    use http::{Request, Version};

    fn request(version: Version, hosts: &[&str]) -> Request<()> {
        let mut builder = Request::get("/fn/x").version(version);
        for host in hosts {
            builder = builder.header("host", *host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn one_valid_host_is_the_only_one_accepted() {
        assert_eq!(
            host_of(&request(Version::HTTP_11, &["a.example:8080"])).unwrap(),
            Some("a.example:8080")
        );
        assert_eq!(host_of(&request(Version::HTTP_10, &[])).unwrap(), None);
        for hosts in [
            &["a.example", "b.example"][..],
            &[][..],
            &["a b"][..],
            &["user@a.example"][..],
            &[""][..],
            &["a.example/path"][..],
        ] {
            let err = host_of(&request(Version::HTTP_11, hosts)).unwrap_err();
            assert_eq!(err.status(), 400, "{hosts:?}");
        }
    }
}
