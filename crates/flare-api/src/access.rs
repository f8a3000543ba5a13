//! Who may call the API: every request but `/healthz` and the OpenAPI
//! document carries `Authorization: Bearer <token>`; [`authorize`] finds the
//! token, checks that its role and namespace allow what the route does, and
//! drops the header so it never travels further (a function invoked through
//! the API does not see its caller's API token).
//!
//! [`flare_access::Tokens`] is the table of valid tokens; it is one of the
//! components the API waits for after a write, so a revoked token stops
//! working as soon as the revoke is answered.
//!
//! `/healthz` answers without a token on loopback only (local probes and
//! supervisors); from elsewhere any valid token will do (a Kubernetes
//! probe sends it in `httpHeaders`). `/v1/openapi.json` is open: it holds
//! no data, and editors and clients read it first.
//!
//! `/metrics` needs a token that reads every namespace (an admin, or a
//! viewer made with `--namespace '*'`): metrics name every tenant's
//! functions, and "loopback only" would let every local user and anything
//! behind a local reverse proxy read them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flare_access::{hash, new_secret};
use flare_model::{
    ALL_NAMESPACES, DEFAULT_NAMESPACE, Error, Grant, Kind, Permission, Resource, Result, Role,
    TokenSpec, validate_name,
};
use flare_store::Store;
use flare_store::audit::AuditEntry;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::crud::Scope;
use crate::error::{ApiError, ApiResult};
use crate::{Api, crud};

/// The address a request came from, set by the server for each
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::IpAddr);

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Nothing: the API description.
    Open,
    /// Nothing from loopback, a token from anywhere else: health, which
    /// says only "ok", for local probes and supervisors without
    /// credentials.
    Health,
    /// Any valid token (who am I).
    Token,
    /// This permission, in the namespace the request is about.
    In(Permission),
    /// This permission in every namespace (metrics).
    Everywhere(Permission),
}

/// The one table of what each route needs; `path` is axum's matched route.
fn need(method: &Method, path: &str) -> Need {
    let reads = matches!(*method, Method::GET | Method::HEAD);
    match path {
        "/v1/openapi.json" | "/v1/spec.schema.json" => Need::Open,
        // The console's own files: what it shows needs a token.
        "/ui" | "/ui/" | "/ui/app.js" | "/ui/app.css" => Need::Open,
        "/healthz" => Need::Health,
        "/v1/whoami" => Need::Token,
        // Cluster-wide: anyone with a token may see them (a namespace
        // outside the token's reach is not found); only an admin changes
        // them.
        "/v1/environments"
        | "/v1/environments/{name}"
        | "/v1/namespaces"
        | "/v1/namespaces/{name}" => {
            if reads {
                Need::Token
            } else {
                Need::Everywhere(Permission::Manage)
            }
        }
        "/metrics" | "/v1/nodes" => Need::Everywhere(Permission::Read),
        "/v1/tokens" | "/v1/tokens/{name}" | "/v1/audit" => Need::Everywhere(Permission::Manage),
        "/v1/functions/{name}/invoke"
        | "/v1/functions/{name}/invoke/{*rest}"
        | "/v1/invocations/{id}/retry" => Need::In(Permission::Invoke),
        _ if reads => Need::In(Permission::Read),
        _ => Need::In(Permission::Write),
    }
}

/// The `{name}` segment of the request, as sent (still percent-encoded:
/// a valid name has nothing to encode).
fn name_of<'r>(request: &'r Request, path: &str) -> Option<&'r str> {
    let index = path.split('/').position(|segment| segment == "{name}")?;
    request.uri().path().split('/').nth(index)
}

/// The namespace a request is about, with its `{name}` checked: for
/// `invoke`, the namespace in the function's name (`name.namespace`; its
/// query is the function's); elsewhere the name is a plain name (a dot
/// would reach into another namespace through the qualified names the
/// executor and the logs use) and the namespace is `?namespace=`,
/// `default` when absent, `*` for all (to list; see [`Scope::one`]).
fn scope_of(request: &Request, path: &str) -> Result<Scope> {
    let name = name_of(request, path);
    if path.starts_with("/v1/functions/{name}/invoke") {
        let (name, namespace) = flare_model::split_qualified(name.unwrap_or_default());
        validate_name("function name", name)?;
        validate_name("namespace", namespace)?;
        return Ok(Scope(namespace.to_string()));
    }
    if let Some(name) = name {
        validate_name("name", name)?;
    }
    let mut named = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.strip_prefix("namespace="));
    let namespace = match (named.next(), named.next()) {
        (None, _) => return Ok(Scope(DEFAULT_NAMESPACE.into())),
        (Some(_), Some(_)) => return Err(Error::invalid("namespace is given more than once")),
        (Some(namespace), None) => namespace,
    };
    // `*` passes here; a handler that needs one namespace refuses it.
    if namespace == ALL_NAMESPACES || namespace.eq_ignore_ascii_case("%2A") {
        return Ok(Scope(ALL_NAMESPACES.into()));
    }
    validate_name("namespace", namespace)?;
    Ok(Scope(namespace.to_string()))
}

/// What `/healthz` needs from a request from `peer` (unknown: not local).
fn health(peer: Option<&Peer>) -> Need {
    if peer.is_some_and(|peer| peer.0.is_loopback()) {
        Need::Open
    } else {
        Need::Token
    }
}

/// Answers `error` to `request` after reading (and dropping) up to 1 MiB
/// of its body for 5 s: refused before any handler, so its body is no
/// upload worth waiting for.
pub(crate) async fn refuse(request: Request, error: Error) -> Response {
    let body = request.into_body().into_data_stream();
    crate::error::drain(body, 1 << 20, std::time::Duration::from_secs(5)).await;
    ApiError(error).into_response()
}

/// Longest path kept in an audit entry.
const MAX_AUDIT_PATH: usize = 1024;

/// The middleware every route but the fallback sits behind.
pub(crate) async fn authorize(
    State(api): State<Arc<Api>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(path) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let path = path.as_str();
    let mut need = need(request.method(), path);
    if need == Need::Health {
        need = health(request.extensions().get::<Peer>());
    }
    // Open routes, and methods no route but invoke takes (axum answers
    // 405 for those, before anything is read or written).
    let invoke = need == Need::In(Permission::Invoke);
    let routed = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::POST | Method::PUT | Method::DELETE
    );
    if need == Need::Open || (!invoke && !routed) {
        return next.run(request).await;
    }
    let grant = api.tokens.authenticate(request.headers()).map_err(|e| {
        // The API's callers are operators: say where a token comes from
        // (the router's callers are the public, who are told less).
        if request.headers().contains_key(http::header::AUTHORIZATION) {
            e
        } else {
            Error::new(
                e.code,
                "this API needs a token: send Authorization: Bearer <token> (flare login, --token or FLARE_TOKEN); the server's first start wrote an admin token to admin.token in its data directory",
            )
        }
    });
    let scope = scope_of(&request, path);
    // Every request with a valid token that would change something goes
    // in the audit trail, allowed or not; reads and invocations do not,
    // nor requests without a valid token (nobody to name, and anyone on
    // the network could fill the trail with them).
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) && !invoke;
    let audit = match (&grant, changes) {
        (Ok(grant), true) => Some(
            AuditEntry::now(
                &grant.token,
                request.method().as_str(),
                &request
                    .uri()
                    .path()
                    .chars()
                    .take(MAX_AUDIT_PATH)
                    .collect::<String>(),
                0,
            )
            .in_namespace(match (&scope, need) {
                (Ok(scope), Need::In(_)) => &scope.0,
                _ => "",
            }),
        ),
        _ => None,
    };
    let checked = grant.and_then(|grant| {
        let scope = scope?;
        let named = path.contains("{name}") || path.contains("{id}");
        match need {
            Need::In(permission) => grant.check(permission, &scope.0, named)?,
            Need::Everywhere(permission) => grant.check(permission, ALL_NAMESPACES, false)?,
            Need::Open | Need::Health | Need::Token => {}
        }
        Ok((grant, scope))
    });
    let (grant, scope) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            let response = refuse(request, e).await;
            if let Some(entry) = audit {
                record(&api, entry, response.status().as_u16()).await;
            }
            return response;
        }
    };
    request.headers_mut().remove(http::header::AUTHORIZATION);
    request.extensions_mut().insert(grant);
    request.extensions_mut().insert(scope);
    let Some(entry) = audit else {
        return next.run(request).await;
    };
    // A change and its entry run on a task of their own: a client that
    // goes away mid-request cancels neither, so no change is stored
    // without its entry.
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        record(&api, entry, response.status().as_u16()).await;
        response
    });
    match task.await {
        Ok(response) => response,
        Err(e) => ApiError(Error::internal(format!("request task failed: {e}"))).into_response(),
    }
}

/// Stores an audit entry with the status its request was answered with.
async fn record(api: &Api, mut entry: AuditEntry, status: u16) {
    entry.status = status;
    let recorded = api
        .local
        .off_thread(move |store| store.record_audit(&entry))
        .await;
    if let Err(e) = recorded {
        tracing::error!("cannot record an audit entry: {e}");
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// A duration back from now (`1h`) or an RFC 3339 time.
    since: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/audit`: who changed what, oldest first.
pub(crate) async fn audit(
    State(api): State<Arc<Api>>,
    axum::extract::Query(params): axum::extract::Query<AuditParams>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    const MAX_LIMIT: usize = 10_000;
    let limit = params.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(Error::invalid(format!("limit must be 1..={MAX_LIMIT}")).into());
    }
    let since = match params.since.as_deref() {
        Some(since) => crate::logs::parse_time("since", since)?,
        None => i64::MIN,
    };
    let entries = api
        .local
        .off_thread(move |store| store.audit(since, limit))
        .await?;
    Ok(Json(entries))
}

/// A token as the API shows it: never its secret nor the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub name: String,
    pub role: Role,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub expired: bool,
}

impl From<Resource<TokenSpec>> for TokenView {
    fn from(token: Resource<TokenSpec>) -> Self {
        let expired = token
            .spec
            .expires()
            .is_some_and(|at| at <= OffsetDateTime::now_utc());
        TokenView {
            name: token.metadata.name,
            role: token.spec.role,
            namespace: token.spec.namespace,
            created_at: token.metadata.created_at,
            expires_at: token.spec.expires_at,
            expired,
        }
    }
}

/// A token just made: the only answer that carries the secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub view: TokenView,
    pub token: String,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    /// A namespace, or `*` for all; admin tokens are always `*`, others
    /// default to `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// How long the token works ("30d", "12h"); forever when absent.
    #[serde(default)]
    pub expires: Option<String>,
}

impl NewToken {
    /// The stored token for `secret`.
    fn resource(&self, secret: &str) -> Result<Resource<TokenSpec>> {
        let role = Role::parse(&self.role)?;
        let namespace = match (&self.namespace, role) {
            (Some(namespace), _) => namespace.clone(),
            (None, Role::Admin) => ALL_NAMESPACES.to_string(),
            (None, _) => DEFAULT_NAMESPACE.to_string(),
        };
        let expires_at = match &self.expires {
            None => None,
            Some(text) => {
                let after = humantime::parse_duration(text).map_err(|e| {
                    Error::invalid(format!("invalid expiry \"{text}\": {e} (try 30d or 12h)"))
                })?;
                if after.is_zero() {
                    return Err(Error::invalid("a token's expiry must be after now"));
                }
                let at = time::Duration::try_from(after)
                    .ok()
                    .and_then(|d| OffsetDateTime::now_utc().checked_add(d))
                    .and_then(|at| at.format(&Rfc3339).ok())
                    .ok_or_else(|| Error::invalid(format!("expiry \"{text}\" is too far")))?;
                Some(at)
            }
        };
        let token = Resource::new(
            self.name.clone(),
            TokenSpec {
                role,
                namespace,
                hash: hash(secret),
                expires_at,
            },
        );
        token.validate()?;
        Ok(token)
    }
}

pub(crate) async fn list(State(api): State<Arc<Api>>) -> ApiResult<Json<Vec<TokenView>>> {
    let tokens = crud::all::<TokenSpec>(&*api.store)?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(
        crud::get::<TokenSpec>(&api, &Scope::cluster(), &name)?.into(),
    ))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    body: bytes::Bytes,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let new: NewToken = serde_json::from_slice(&body)
        .map_err(|e| Error::invalid(format!("invalid token request: {e}")))?;
    let secret = new_secret()?;
    let created = crud::create(&api, new.resource(&secret)?, |api, token| {
        match token.spec.namespace.as_str() {
            ALL_NAMESPACES => Ok(()),
            namespace => api.namespace(namespace).map(|_| ()),
        }
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            view: created.into(),
            token: secret,
        }),
    ))
}

pub(crate) async fn revoke(
    State(api): State<Arc<Api>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> ApiResult<Json<TokenView>> {
    let revoked = crud::delete::<TokenSpec>(&api, &Scope::cluster(), &name, |api: &Api| {
        let admins: Vec<_> = crud::all::<TokenSpec>(&*api.store)?
            .into_iter()
            .map(TokenView::from)
            .filter(|t| t.role == Role::Admin && !t.expired)
            .collect();
        if admins.len() == 1 && admins[0].name == name {
            return Err(Error::conflict(format!(
                "token \"{name}\" is the last admin token; create another admin token before revoking it"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(Json(revoked.into()))
}

/// `GET /v1/whoami`: the caller's own token.
pub(crate) async fn whoami(
    State(api): State<Arc<Api>>,
    axum::Extension(grant): axum::Extension<Grant>,
) -> ApiResult<Json<TokenView>> {
    Ok(Json(
        crud::get::<TokenSpec>(&api, &Scope::cluster(), &grant.token)?.into(),
    ))
}

/// On a store with no token at all (a first start, or a data dir from
/// before tokens), or when `again` (the operator lost theirs), makes an
/// admin token and writes its secret to `<data_dir>/admin.token` (0600).
/// The file is written first, so a crash in between leaves a file the next
/// start replaces, never a stored token nobody holds. Returns the file's
/// path when it made one.
pub fn bootstrap_admin(
    store: &dyn Store,
    data_dir: &Path,
    again: bool,
) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    let tokens = store.list(Kind::Token)?;
    if !tokens.is_empty() && !again {
        return Ok(None);
    }
    // "admin", or the first "admin-N" not taken.
    let taken = |name: &str| tokens.iter().any(|t| t.metadata.name == name);
    let name = std::iter::once("admin".to_string())
        .chain((2..).map(|n| format!("admin-{n}")))
        .find(|name| !taken(name))
        .unwrap_or_default();
    let secret = new_secret()?;
    let path = data_dir.join(flare_access::ADMIN_TOKEN_FILE);
    flare_access::write_private(&path, format!("{secret}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let admin = NewToken {
        name,
        role: "admin".into(),
        namespace: None,
        expires: None,
    };
    match store.create(admin.resource(&secret)?.to_document()?) {
        Ok(_) => Ok(Some(path)),
        // Another node of the cluster made the first admin token as this
        // one started: its holder logs in with that one.
        Err(e) if e.code == flare_model::ErrorCode::AlreadyExists && !again => {
            let _ = std::fs::remove_file(&path);
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_a_token_but_health_and_the_description() {
        let get = Method::GET;
        assert_eq!(need(&get, "/healthz"), Need::Health);
        assert_eq!(need(&get, "/v1/openapi.json"), Need::Open);
        assert_eq!(need(&get, "/ui/"), Need::Open);
        assert_eq!(need(&get, "/ui/app.js"), Need::Open);
        assert_eq!(need(&get, "/v1/whoami"), Need::Token);
        assert_eq!(need(&get, "/metrics"), Need::Everywhere(Permission::Read));
        assert_eq!(
            need(&get, "/v1/tokens"),
            Need::Everywhere(Permission::Manage)
        );
        assert_eq!(
            need(&Method::POST, "/v1/invocations/{id}/retry"),
            Need::In(Permission::Invoke)
        );
        assert_eq!(
            need(&get, "/v1/functions/{name}/invoke/{*rest}"),
            Need::In(Permission::Invoke)
        );
        assert_eq!(
            need(&get, "/v1/functions/{name}"),
            Need::In(Permission::Read)
        );
        assert_eq!(
            need(&Method::DELETE, "/v1/functions/{name}"),
            Need::In(Permission::Write)
        );
        assert_eq!(
            need(&Method::POST, "/v1/packages"),
            Need::In(Permission::Write)
        );
    }

    #[test]
    fn health_is_open_on_loopback_only() {
        let peer = |ip: &str| Peer(ip.parse().unwrap());
        assert_eq!(health(Some(&peer("127.0.0.1"))), Need::Open);
        assert_eq!(health(Some(&peer("::1"))), Need::Open);
        assert_eq!(health(Some(&peer("10.1.2.3"))), Need::Token);
        assert_eq!(health(Some(&peer("192.0.2.1"))), Need::Token);
        assert_eq!(health(None), Need::Token);
    }

    #[test]
    fn new_tokens_are_stored_only_as_hashes() {
        let a = new_secret().unwrap();
        let spec = NewToken {
            name: "ci".into(),
            role: "developer".into(),
            namespace: None,
            expires: Some("30d".into()),
        }
        .resource(&a)
        .unwrap()
        .spec;
        assert_eq!(spec.hash, hash(&a));
        assert!(!serde_json::to_string(&spec).unwrap().contains(&a));
        assert_eq!(spec.namespace, DEFAULT_NAMESPACE);
        assert!(spec.expires().unwrap() > OffsetDateTime::now_utc());
    }

    #[test]
    fn bad_token_requests_are_refused() {
        let make = |role: &str, namespace: Option<&str>, expires: Option<&str>| {
            NewToken {
                name: "t".into(),
                role: role.into(),
                namespace: namespace.map(str::to_string),
                expires: expires.map(str::to_string),
            }
            .resource("flr_x")
            .map(|_| ())
            .unwrap_err()
            .message
        };
        assert!(make("root", None, None).contains("unknown role"));
        assert!(make("admin", Some("team-a"), None).contains("every namespace"));
        assert!(make("viewer", None, Some("soon")).contains("invalid expiry"));
        assert!(make("viewer", None, Some("0s")).contains("after now"));
        assert!(make("viewer", Some("Team"), None).contains("namespace"));
    }
}
