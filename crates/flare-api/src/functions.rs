//! `/v1/functions` and `/v1/packages`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use flare_executor::{DeploymentStatus, INVOCATION_HEADER};
use flare_model::{
    DEFAULT_NAMESPACE, Document, Error, ErrorCode, FunctionSpec, Kind, PackageRef, Resource,
    Result, validate_name,
};
use flare_store::Staged;
use futures::TryStreamExt;
use http::{HeaderValue, StatusCode, Uri};
use serde::{Deserialize, Serialize};

use crate::crud::Scope;
use crate::error::{ApiError, ApiResult};
use crate::{Api, crud};

/// A function as the API shows it: the stored resource plus what the
/// executor reports about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FunctionView {
    #[serde(flatten)]
    pub function: Resource<FunctionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

impl Api {
    pub(crate) fn view(&self, function: Resource<FunctionSpec>) -> FunctionView {
        let status = self.executor.status(&function.qualified_name());
        FunctionView { function, status }
    }

    pub(crate) fn load(&self, scope: &Scope, name: &str) -> Result<Resource<FunctionSpec>> {
        Resource::from_document(self.store.get(Kind::Function, scope.one()?, name)?)
    }

    /// The namespace's quotas admit `function` beside its other functions.
    pub(crate) fn check_quota(&self, function: &Resource<FunctionSpec>) -> Result<()> {
        let namespace = &function.metadata.namespace;
        let quota = self.namespace(namespace)?;
        let others: Vec<FunctionSpec> = crud::all::<FunctionSpec>(&*self.store)?
            .into_iter()
            .filter(|f| &f.metadata.namespace == namespace && f.name() != function.name())
            .map(|f| f.spec)
            .collect();
        quota.admit(namespace, function.name(), &function.spec, &others)
    }

    /// A process function's environment must exist.
    pub(crate) fn check_environment(&self, spec: &FunctionSpec) -> Result<()> {
        let Some(environment) = &spec.environment else {
            return Ok(());
        };
        match self
            .store
            .get(Kind::Environment, DEFAULT_NAMESPACE, environment)
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == flare_model::ErrorCode::NotFound => Err(Error::invalid(format!(
                "environment \"{environment}\" does not exist; create it first (flare env create)"
            ))),
            Err(e) => Err(e),
        }
    }

    async fn stage(&self, field: axum::extract::multipart::Field<'_>) -> Result<Staged> {
        let stream = field.map_err(|e| e.body_text());
        self.packages
            .stage(Box::pin(stream), self.max_package_bytes)
            .await
    }
}

/// What a multipart upload carries after its `spec`.
enum Upload {
    /// `code`: the package itself.
    Code(Staged),
    /// `source`: an archive Flare builds into the package.
    Source(Staged),
}

impl Upload {
    fn package(&self) -> &PackageRef {
        match self {
            Upload::Code(staged) | Upload::Source(staged) => staged.package(),
        }
    }
}

/// The `spec` part, then the optional `code` or `source` part, of a
/// multipart upload.
async fn read_multipart(
    api: &Arc<Api>,
    scope: &Scope,
    multipart: &mut Multipart,
    check_name: impl FnOnce(&str) -> Result<()>,
) -> Result<(Document, Option<Upload>)> {
    let spec_field = multipart
        .next_field()
        .await
        .map_err(|e| Error::invalid(e.body_text()))?
        .ok_or_else(|| Error::invalid("multipart body has no \"spec\" part"))?;
    if spec_field.name() != Some("spec") {
        return Err(Error::invalid(
            "the first multipart part must be \"spec\" (the function document)",
        ));
    }
    let bytes = read_part(spec_field, MAX_SPEC_BYTES, "spec").await?;
    let doc = parse_spec(&bytes, scope)?;
    validate_name("function name", &doc.metadata.name)?;
    check_name(&doc.metadata.name)?;
    let staged = match multipart
        .next_field()
        .await
        .map_err(|e| Error::invalid(e.body_text()))?
    {
        Some(code) if code.name() == Some("code") => Some(Upload::Code(api.stage(code).await?)),
        Some(source) if source.name() == Some("source") => {
            Some(Upload::Source(api.stage(source).await?))
        }
        Some(_) => {
            return Err(Error::invalid(
                "the second multipart part must be \"code\" (a package) or \"source\" (to build)",
            ));
        }
        None => None,
    };
    Ok((doc, staged))
}

/// Largest function document, as a JSON body or a multipart `spec` part.
const MAX_SPEC_BYTES: usize = 2 << 20;

fn spec_too_large(what: &str) -> Error {
    Error::new(
        ErrorCode::PayloadTooLarge,
        format!("the {what} is larger than the limit of {MAX_SPEC_BYTES} bytes"),
    )
}

/// A multipart part, refused (413) as soon as it passes `limit`: nothing
/// past the limit is buffered.
async fn read_part(
    mut field: axum::extract::multipart::Field<'_>,
    limit: usize,
    name: &str,
) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Error::invalid(e.body_text()))?
    {
        if bytes.len() + chunk.len() > limit {
            return Err(spec_too_large(&format!("\"{name}\" part")));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Bytes read and thrown away after refusing an upload, and for how long,
/// so the client can finish sending and read the error instead of seeing
/// a reset connection.
const DRAIN_LIMIT: usize = 1 << 30;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// `error`, once the request's body has been drained (an upload refused
/// before its code was read).
async fn drained(request: Request, error: Error) -> Error {
    let body = request.into_body().into_data_stream();
    crate::error::drain(body, DRAIN_LIMIT, DRAIN_TIME).await;
    error
}

async fn drain(multipart: &mut Multipart) {
    let mut drained = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    while let Ok(Ok(Some(mut field))) =
        tokio::time::timeout_at(deadline, multipart.next_field()).await
    {
        while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, field.chunk()).await {
            drained += chunk.len();
            if drained > DRAIN_LIMIT {
                return;
            }
        }
    }
}

pub(crate) fn decode_function(doc: Document) -> Result<Resource<FunctionSpec>> {
    let spec = serde_json::from_value(doc.spec)
        .map_err(|e| Error::invalid(format!("invalid function spec: {e}")))?;
    Ok(Resource {
        api_version: doc.api_version,
        kind: doc.kind,
        metadata: doc.metadata,
        spec,
    })
}

fn is_multipart(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"))
}

fn parse_spec(bytes: &[u8], scope: &Scope) -> Result<Document> {
    let invalid = |e: serde_json::Error| Error::invalid(format!("invalid function document: {e}"));
    let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    crud::place(&mut value, Kind::Function, scope.one()?)?;
    let mut doc: Document = serde_json::from_value(value).map_err(invalid)?;
    if doc.kind != Kind::Function {
        return Err(Error::invalid(format!(
            "expected kind Function, got {}",
            doc.kind.as_str()
        )));
    }
    if !doc.spec.is_object() {
        doc.spec = serde_json::json!({});
    }
    Ok(doc)
}

/// A function as submitted: ready to store, or (`build`) with its stored
/// source as `spec.package`, to be built first.
struct Submission {
    function: Resource<FunctionSpec>,
    build: bool,
}

/// Reads a function from a JSON body, or from a multipart body with a
/// `spec` part (JSON) followed by an optional `code` part (the package)
/// or `source` part (to build). Without either, the package is the one in
/// the spec, else `current`'s. `check_name` runs before any code is read,
/// so a doomed upload is refused before it is streamed.
async fn read_submission(
    api: &Arc<Api>,
    scope: &Scope,
    request: Request,
    current: Option<&Resource<FunctionSpec>>,
    check_name: impl FnOnce(&str) -> Result<()>,
) -> Result<Submission> {
    let (doc, staged) = if is_multipart(&request) {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| Error::invalid(format!("invalid multipart body: {}", e.body_text())))?;
        let read = read_multipart(api, scope, &mut multipart, check_name).await;
        if read.is_err() {
            drain(&mut multipart).await;
        }
        read?
    } else {
        use http_body_util::BodyExt;
        let bytes = http_body_util::Limited::new(request.into_body(), MAX_SPEC_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    spec_too_large("function document")
                } else {
                    Error::invalid(format!("cannot read body: {e}"))
                }
            })?
            .to_bytes();
        let doc = parse_spec(&bytes, scope)?;
        validate_name("function name", &doc.metadata.name)?;
        check_name(&doc.metadata.name)?;
        (doc, None)
    };
    let mut doc = doc;

    let package = match (&staged, doc.spec.get("package"), current) {
        (Some(staged), _, _) => Some(staged.package().clone()),
        (None, Some(_), _) => None,
        (None, None, Some(current)) => Some(current.spec.package.clone()),
        (None, None, None) => {
            return Err(Error::invalid(
                "a new function needs code: a \"code\" part or spec.package",
            ));
        }
    };
    if let (Some(package), Some(spec)) = (package, doc.spec.as_object_mut()) {
        let value = serde_json::to_value(package).map_err(|e| Error::internal(e.to_string()))?;
        spec.insert("package".into(), value);
    }
    let function = decode_function(doc)?;
    function.validate()?;
    api.check_environment(&function.spec)?;

    let build = matches!(staged, Some(Upload::Source(_)));
    match staged {
        Some(Upload::Code(staged)) => {
            // Nothing unservable is stored: wasm is compiled, archives
            // are unpacked under their limits.
            api.executor.check(&function.spec, staged.path()).await?;
            staged.commit()?;
        }
        Some(Upload::Source(staged)) => {
            // Checked when it is built; kept until then.
            staged.commit()?;
        }
        None => {
            // Touched: the retention pass leaves it alone while this
            // function is being created with it.
            if !api.packages.touch(&function.spec.package) {
                return Err(Error::invalid(format!(
                    "package {} is not stored; upload it (POST /v1/packages) or send code",
                    function.spec.package.digest
                )));
            }
            api.executor
                .check(&function.spec, &api.packages.path(&function.spec.package))
                .await?;
        }
    }
    // Before the function is stored: any node that sees it can fetch its
    // code.
    api.share_package(&function.spec.package).await?;
    Ok(Submission { function, build })
}

/// Stores a new function (checked against everything it refers to).
pub(crate) async fn store_create(
    api: &Arc<Api>,
    mut function: Resource<FunctionSpec>,
) -> Result<Resource<FunctionSpec>> {
    let written = {
        // The environment must not go away between the check and the
        // write, nor another function take the quota.
        let _guard = api.cross_checks.lock().await;
        api.check_environment(&function.spec)?;
        api.check_quota(&function)?;
        crate::secrets::check_references(api, &function)?;
        crate::versions::record(api, &mut function, None).await?;
        let doc = function.to_document()?;
        api.write(move |store| store.create(doc)).await?
    };
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}

/// Stores a changed function over `current`.
pub(crate) async fn store_update(
    api: &Arc<Api>,
    mut function: Resource<FunctionSpec>,
    current: &Resource<FunctionSpec>,
) -> Result<Resource<FunctionSpec>> {
    let written = {
        let _guard = api.cross_checks.lock().await;
        api.check_environment(&function.spec)?;
        api.check_quota(&function)?;
        crate::secrets::check_references(api, &function)?;
        crate::versions::record(api, &mut function, Some(current)).await?;
        let doc = function.to_document()?;
        api.write(move |store| store.update(doc)).await?
    };
    api.settle(written.revision).await;
    Resource::from_document(written.doc)
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
) -> ApiResult<Json<Vec<FunctionView>>> {
    let functions = crud::all_in::<FunctionSpec>(&*api.store, &scope)?;
    Ok(Json(functions.into_iter().map(|f| api.view(f)).collect()))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionView>> {
    Ok(Json(api.view(api.load(&scope, &name)?)))
}

pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    request: Request,
) -> ApiResult<Response> {
    let store = api.store.clone();
    let namespace = match scope
        .one()
        .and_then(|n| api.namespace(n).map(|_| n.to_string()))
    {
        Ok(namespace) => namespace,
        Err(e) => return Err(drained(request, e).await.into()),
    };
    let submission = read_submission(&api, &scope, request, None, |name| {
        match store.get(Kind::Function, &namespace, name) {
            Ok(_) => Err(Error::already_exists("function", name)),
            Err(e) if e.code == flare_model::ErrorCode::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await?;
    if submission.build {
        let package = crate::builds::submit(&api, submission.function, false).await?;
        return Ok(crate::builds::accepted(package));
    }
    let view = api.view(store_create(&api, submission.function).await?);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(crate) async fn update(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let current = match api.load(&scope, &name) {
        Ok(current) => current,
        Err(e) => return Err(drained(request, e).await.into()),
    };
    let submission = read_submission(&api, &scope, request, Some(&current), |submitted| {
        if submitted == name {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "the document names function \"{submitted}\" but the URL names \"{name}\""
            )))
        }
    })
    .await?;
    if submission.build {
        let package = crate::builds::submit(&api, submission.function, true).await?;
        return Ok(crate::builds::accepted(package));
    }
    let updated = store_update(&api, submission.function, &current).await?;
    Ok(Json(api.view(updated)).into_response())
}

pub(crate) async fn delete(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<FunctionView>> {
    let namespace = scope.one()?.to_string();
    let _guard = api.cross_checks.lock().await;
    // Triggers run functions of their own namespace.
    let mut users: Vec<String> = crud::all_in::<flare_model::HttpTriggerSpec>(&*api.store, &scope)?
        .into_iter()
        .filter(|t| t.spec.function == name)
        .map(|t| format!("http trigger {}", t.metadata.name))
        .collect();
    users.extend(
        crud::all_in::<flare_model::MessageQueueTriggerSpec>(&*api.store, &scope)?
            .into_iter()
            .filter(|t| t.spec.function == name)
            .map(|t| format!("message queue trigger {}", t.metadata.name)),
    );
    users.extend(
        crud::all_in::<flare_model::TimerTriggerSpec>(&*api.store, &scope)?
            .into_iter()
            .filter(|t| t.spec.function == name)
            .map(|t| format!("timer trigger {}", t.metadata.name)),
    );
    if !users.is_empty() {
        return Err(Error::conflict(format!(
            "function \"{name}\" is used by {}; delete them first",
            users.join(", ")
        ))
        .into());
    }
    let gone = name.clone();
    let written = api
        .write(move |store| store.delete(Kind::Function, &namespace, &gone))
        .await?;
    crate::versions::forget(&api, scope.one()?, &name).await;
    crate::builds::forget(&api, scope.one()?, &name).await;
    api.settle(written.revision).await;
    let function = Resource::from_document(written.doc)?;
    Ok(Json(FunctionView {
        function,
        status: None,
    }))
}

/// What `GET /v1/functions/{name}/metrics` answers: the function's
/// points over the last hour, one per step, oldest first, added up over
/// the `nodes` that answered (in a cluster, every live node within a
/// second; this node alone otherwise).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsView {
    pub step_seconds: u64,
    #[serde(default)]
    pub nodes: usize,
    pub points: Vec<flare_executor::MetricPoint>,
}

pub(crate) async fn metrics(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(name): Path<String>,
) -> ApiResult<Json<MetricsView>> {
    let function = api.load(&scope, &name)?;
    let name = function.qualified_name();
    let (nodes, points) = match &api.cluster_metrics {
        Some(exchange) => api.cluster_history(exchange, &name).await,
        None => (1, api.executor.history(&name)),
    };
    Ok(Json(MetricsView {
        step_seconds: flare_executor::HISTORY_STEP.as_secs(),
        nodes,
        points,
    }))
}

impl Api {
    /// `function`'s points from every live node that answers, added up;
    /// this node's own when none can be asked (NATS away).
    async fn cluster_history(
        &self,
        exchange: &flare_cluster::metrics::MetricsExchange,
        function: &str,
    ) -> (usize, Vec<flare_executor::MetricPoint>) {
        // Only their number: a cluster's list is its heartbeats, which
        // this node's own load does not enter.
        let live = self
            .membership
            .nodes(flare_cluster::Load::default())
            .await
            .map_or(1, |nodes| nodes.len().max(1));
        let answers = match exchange.gather(function, live).await {
            Ok(answers) => answers,
            Err(e) => {
                tracing::debug!("metrics of {function} from this node only: {e}");
                Vec::new()
            }
        };
        let shared: Vec<Vec<flare_executor::SharedPoint>> = answers
            .iter()
            .filter_map(|answer| serde_json::from_slice(answer).ok())
            .collect();
        if shared.is_empty() {
            return (1, self.executor.history(function));
        }
        let nodes = shared.len();
        (
            nodes,
            self.executor
                .combined_history(shared.into_iter().flatten().collect()),
        )
    }
}

/// Stores a wasm package after checking that it is a servable component;
/// functions can then refer to it by digest.
pub(crate) async fn upload_package(
    State(api): State<Arc<Api>>,
    body: Body,
) -> ApiResult<(StatusCode, Json<PackageRef>)> {
    let mut stream = body.into_data_stream();
    let staged = match api.packages.stage(&mut stream, api.max_package_bytes).await {
        Ok(staged) => staged,
        Err(e) => {
            crate::error::drain(&mut stream, DRAIN_LIMIT, DRAIN_TIME).await;
            return Err(e.into());
        }
    };
    let spec = FunctionSpec::wasm(staged.package().clone());
    api.executor.check(&spec, staged.path()).await?;
    let package = staged.commit()?;
    api.share_package(&package).await?;
    Ok((StatusCode::CREATED, Json(package)))
}

/// Runs the function with the request as sent, minus the API prefix:
/// `/v1/functions/hello/invoke/a?b` reaches `hello` as `/a?b`. The query
/// is the function's, so the namespace is in the name, as on the router:
/// `/v1/functions/hello.team-a/invoke`.
pub(crate) async fn invoke(
    State(api): State<Arc<Api>>,
    Extension(scope): Extension<Scope>,
    Path(params): Path<HashMap<String, String>>,
    request: Request,
) -> Response {
    // The namespace is the one the caller's token was checked against;
    // the name, checked there too, carries it as `name.namespace`.
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    let name = flare_model::qualified(flare_model::split_qualified(name).0, &scope.0);
    // What follows `/v1/functions/{name}/invoke`, as sent: still
    // percent-encoded, so any path a function can be called with (a space,
    // `%2F`) reaches it unchanged.
    let rest = request.uri().path().splitn(6, '/').nth(5).unwrap_or("");
    let target = match request.uri().query() {
        Some(query) => format!("/{rest}?{query}"),
        None => format!("/{rest}"),
    };
    let (mut parts, body) = request.into_parts();
    match target.parse::<Uri>() {
        Ok(uri) => parts.uri = uri,
        Err(e) => return ApiError(Error::invalid(format!("bad path: {e}"))).into_response(),
    }
    let queued = parts
        .headers
        .get(flare_executor::ASYNC_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    if queued {
        let request = http::Request::from_parts(parts, body);
        return match api.executor.submit(&*api.queue, &name, request).await {
            Ok(id) => flare_executor::accepted(&id).map(Body::from),
            Err(e) => ApiError(e).into_response(),
        };
    }
    let invoked = api
        .executor
        .invoke(&name, http::Request::from_parts(parts, body))
        .await;
    match invoked.result {
        Ok(response) => response.map(Body::new),
        Err(e) => {
            let mut response = ApiError(e).into_response();
            if let Some(value) = invoked
                .invocation
                .as_deref()
                .and_then(|id| HeaderValue::from_str(id).ok())
            {
                response.headers_mut().insert(INVOCATION_HEADER, value);
            }
            response
        }
    }
}
