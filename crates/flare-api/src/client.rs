//! The typed client of the API, used by the CLI and the tests.

use std::path::Path;

use bytes::Bytes;
use flare_model::{
    Document, EnvironmentSpec, Error, ErrorCode, HttpTriggerSpec, LogEntry, NamespaceSpec,
    PackageRef, Resource, Result, TimerTriggerSpec,
};
use futures::StreamExt;
use reqwest::multipart::{Form, Part};
use serde::de::DeserializeOwned;

use crate::access::{CreatedToken, NewToken, TokenView};
use crate::{EnvironmentView, FunctionView};

/// A client of one Flare API endpoint.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// The namespace of functions, triggers and invocations; the server's
    /// default (`default`) when none.
    namespace: Option<String>,
    /// Told how uploads go (a progress bar).
    uploads: Option<UploadWatcher>,
}

/// How an upload goes, as a [`Client::watch_uploads`] hook hears it.
#[derive(Debug, Clone, Copy)]
pub enum Upload<'a> {
    /// A file of `size` bytes starts.
    Started { file: &'a str, size: u64 },
    /// `bytes` more were handed to the connection.
    Sent { bytes: u64 },
    /// Its last byte was handed over.
    Finished,
}

/// A hook on uploads.
#[derive(Clone)]
pub struct UploadWatcher(pub std::sync::Arc<dyn Fn(Upload<'_>) + Send + Sync>);

impl std::fmt::Debug for UploadWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UploadWatcher")
    }
}

/// A function's answer to `invoke`, whatever its status.
#[derive(Debug, Clone)]
pub struct InvokeResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub invocation: Option<String>,
    pub body: Bytes,
}

/// Filters of a log query; see `GET /v1/functions/{name}/logs`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub invocation: Option<String>,
    pub contains: Option<String>,
    pub stream: Option<String>,
    pub limit: Option<usize>,
}

impl LogFilter {
    fn pairs(&self, follow: bool) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        let mut push = |k, v: &Option<String>| {
            if let Some(v) = v {
                pairs.push((k, v.clone()));
            }
        };
        push("since", &self.since);
        push("until", &self.until);
        push("invocation", &self.invocation);
        push("contains", &self.contains);
        push("stream", &self.stream);
        push("limit", &self.limit.map(|l| l.to_string()));
        if follow {
            pairs.push(("follow", "true".into()));
        }
        pairs
    }
}

impl Client {
    /// A client that sends no token (health, the API description).
    pub fn new(base: &str) -> Self {
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            namespace: None,
            uploads: None,
        }
    }

    /// A client that sends `token` as its bearer with every request.
    pub fn with_token(base: &str, token: &str) -> Result<Self> {
        Client::build(base, Some(token), None)
    }

    /// A client sending `token` (if any) that also trusts the certificates
    /// of `ca_pem` (a server with a self-signed or private certificate).
    pub fn build(base: &str, token: Option<&str>, ca_pem: Option<&[u8]>) -> Result<Self> {
        let mut builder = reqwest::Client::builder();
        if let Some(token) = token {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| Error::invalid("the token has characters a header cannot carry"))?;
            value.set_sensitive(true);
            builder = builder.default_headers(http::HeaderMap::from_iter([(
                http::header::AUTHORIZATION,
                value,
            )]));
        }
        if let Some(pem) = ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::invalid(format!("not a PEM certificate bundle: {e}")))?;
            if certificates.is_empty() {
                return Err(Error::invalid("the CA file holds no certificate"));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::internal(format!("cannot build an HTTP client: {e}")))?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            http,
            namespace: None,
            uploads: None,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// This client, telling `watcher` how each file upload goes.
    pub fn watch_uploads(mut self, watcher: UploadWatcher) -> Self {
        self.uploads = Some(watcher);
        self
    }

    /// This client, working in `namespace` (`*`: every one, to list).
    pub fn in_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `resource` in this client's namespace, when one is set (and is not
    /// `*`): documents built with [`Resource::new`] say `default`.
    fn placed<S: Clone>(&self, resource: &Resource<S>) -> Resource<S> {
        let mut resource = resource.clone();
        if let Some(namespace) = &self.namespace
            && namespace != flare_model::ALL_NAMESPACES
        {
            resource.metadata.namespace = namespace.clone();
        }
        resource
    }

    /// The URL of a namespaced endpoint, with `?namespace=` when one is set.
    fn scoped(&self, path: &str) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}{path}?namespace={namespace}", self.base),
            None => self.url(path),
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        // reqwest's message leaves out why (refused, a certificate no root
        // vouches for): that is in its sources.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            why.push_str(": ");
            why.push_str(&cause.to_string());
            source = cause.source();
        }
        Error::new(
            ErrorCode::Unavailable,
            format!(
                "cannot reach the Flare API at {} ({why}); is `flare server` running? (set --api or FLARE_API; --ca-cert for a server with its own certificate)",
                self.base
            ),
        )
    }

    /// Sends, and turns a non-2xx answer into its error.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        Err(Error::from_response(status, &body))
    }

    async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| self.unreachable(e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::internal(format!("unexpected answer from the API: {e}")))
    }

    async fn file_part(&self, path: &Path) -> Result<Part> {
        use futures::StreamExt;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::invalid(format!("cannot open {}: {e}", path.display())))?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "code".into());
        let stream = tokio_util::io::ReaderStream::new(file);
        let body = match self.uploads.clone() {
            None => reqwest::Body::wrap_stream(stream),
            Some(UploadWatcher(hook)) => {
                hook(Upload::Started {
                    file: &name,
                    size: len,
                });
                let end = hook.clone();
                let stream = stream
                    .inspect(move |chunk| {
                        if let Ok(chunk) = chunk {
                            hook(Upload::Sent {
                                bytes: chunk.len() as u64,
                            });
                        }
                    })
                    .chain(futures::stream::poll_fn(move |_| {
                        end(Upload::Finished);
                        std::task::Poll::Ready(None)
                    }));
                reqwest::Body::wrap_stream(stream)
            }
        };
        Ok(Part::stream_with_length(body, len).file_name(name))
    }

    async fn submit<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        doc: &Document,
        code: Option<&Path>,
    ) -> Result<T> {
        self.submit_part(request, doc, code.map(|c| ("code", c)))
            .await
    }

    /// A document, alone (JSON) or with the file `part` (multipart).
    async fn submit_part<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        doc: &Document,
        part: Option<(&'static str, &Path)>,
    ) -> Result<T> {
        let doc = &self.placed(doc);
        match part {
            None => self.json(request.json(doc)).await,
            Some((part, path)) => {
                let spec =
                    serde_json::to_string(doc).map_err(|e| Error::internal(e.to_string()))?;
                let form = Form::new()
                    .part(
                        "spec",
                        Part::text(spec)
                            .mime_str("application/json")
                            .map_err(|e| Error::internal(e.to_string()))?,
                    )
                    .part(part, self.file_part(path).await?);
                self.json(request.multipart(form)).await
            }
        }
    }

    /// The API path of a kind's collection, for kinds a spec file holds.
    fn collection(kind: flare_model::Kind) -> Result<&'static str> {
        use flare_model::Kind;
        Ok(match kind {
            Kind::Function => "/v1/functions",
            Kind::HttpTrigger => "/v1/httptriggers",
            Kind::Environment => "/v1/environments",
            Kind::TimerTrigger => "/v1/timertriggers",
            Kind::MessageQueueTrigger => "/v1/mqtriggers",
            Kind::Alias => "/v1/aliases",
            Kind::Canary => "/v1/canaries",
            Kind::Package => "/v1/packages",
            Kind::Secret => "/v1/secrets",
            Kind::Config => "/v1/configs",
            other => {
                return Err(Error::invalid(format!(
                    "a {} is not managed through documents",
                    other.noun()
                )));
            }
        })
    }

    /// The stored document of `kind` named `name`, or `None`.
    pub async fn get_document(
        &self,
        kind: flare_model::Kind,
        name: &str,
    ) -> Result<Option<serde_json::Value>> {
        let url = self.scoped(&format!("{}/{name}", Self::collection(kind)?));
        match self.json(self.http.get(url)).await {
            Ok(doc) => Ok(Some(doc)),
            Err(e) if e.code == ErrorCode::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The stored documents of `kind` in this client's namespace.
    pub async fn list_documents(&self, kind: flare_model::Kind) -> Result<Vec<serde_json::Value>> {
        self.json(self.http.get(self.scoped(Self::collection(kind)?)))
            .await
    }

    /// Creates (`existing` false) or replaces `doc`; a function's `code`
    /// goes with it when given.
    pub async fn put_document(
        &self,
        doc: &Document,
        existing: bool,
        code: Option<&Path>,
    ) -> Result<serde_json::Value> {
        let collection = Self::collection(doc.kind)?;
        let request = if existing {
            let url = self.scoped(&format!("{collection}/{}", doc.metadata.name));
            self.http.put(url)
        } else {
            self.http.post(self.scoped(collection))
        };
        self.submit(request, doc, code).await
    }

    /// Deletes the document of `kind` named `name`.
    pub async fn delete_document(&self, kind: flare_model::Kind, name: &str) -> Result<()> {
        let url = self.scoped(&format!("{}/{name}", Self::collection(kind)?));
        self.send(self.http.delete(url)).await.map(drop)
    }

    pub async fn whoami(&self) -> Result<TokenView> {
        self.json(self.http.get(self.url("/v1/whoami"))).await
    }

    pub async fn list_nodes(&self) -> Result<Vec<flare_cluster::NodeView>> {
        self.json(self.http.get(self.url("/v1/nodes"))).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<TokenView>> {
        self.json(self.http.get(self.url("/v1/tokens"))).await
    }

    pub async fn create_token(&self, new: &NewToken) -> Result<CreatedToken> {
        self.json(self.http.post(self.url("/v1/tokens")).json(new))
            .await
    }

    pub async fn revoke_token(&self, name: &str) -> Result<TokenView> {
        self.json(self.http.delete(self.url(&format!("/v1/tokens/{name}"))))
            .await
    }

    pub async fn audit(
        &self,
        since: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<flare_store::audit::AuditEntry>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.json(self.http.get(self.url("/v1/audit")).query(&query))
            .await
    }

    pub async fn list_functions(&self) -> Result<Vec<FunctionView>> {
        self.json(self.http.get(self.scoped("/v1/functions"))).await
    }

    pub async fn get_function(&self, name: &str) -> Result<FunctionView> {
        self.json(self.http.get(self.scoped(&format!("/v1/functions/{name}"))))
            .await
    }

    /// Creates a function from a document whose spec may lack `package`
    /// when `code` is given.
    pub async fn create_function(
        &self,
        doc: &Document,
        code: Option<&Path>,
    ) -> Result<FunctionView> {
        self.submit(self.http.post(self.scoped("/v1/functions")), doc, code)
            .await
    }

    pub async fn update_function(
        &self,
        doc: &Document,
        code: Option<&Path>,
    ) -> Result<FunctionView> {
        let url = self.scoped(&format!("/v1/functions/{}", doc.metadata.name));
        self.submit(self.http.put(url), doc, code).await
    }

    /// Creates (or with `update`, updates) a function from `doc` and the
    /// source archive `source`, which the server builds: the build's
    /// record, at once (see [`Client::get_package`]).
    pub async fn build_function(
        &self,
        doc: &Document,
        source: &Path,
        update: bool,
    ) -> Result<crate::builds::Package> {
        let request = if update {
            self.http
                .put(self.scoped(&format!("/v1/functions/{}", doc.metadata.name)))
        } else {
            self.http.post(self.scoped("/v1/functions"))
        };
        self.submit_part(request, doc, Some(("source", source)))
            .await
    }

    pub async fn list_packages(&self) -> Result<Vec<crate::builds::Package>> {
        self.json(self.http.get(self.scoped("/v1/packages"))).await
    }

    pub async fn get_package(&self, name: &str) -> Result<crate::builds::Package> {
        self.json(self.http.get(self.scoped(&format!("/v1/packages/{name}"))))
            .await
    }

    /// The log of build `name`.
    pub async fn package_log(&self, name: &str) -> Result<String> {
        let response = self
            .send(
                self.http
                    .get(self.scoped(&format!("/v1/packages/{name}/log"))),
            )
            .await?;
        response.text().await.map_err(|e| self.unreachable(e))
    }

    /// Function `name`'s points on the server's node over the last hour.
    pub async fn function_metrics(&self, name: &str) -> Result<crate::MetricsView> {
        self.json(
            self.http
                .get(self.scoped(&format!("/v1/functions/{name}/metrics"))),
        )
        .await
    }

    /// The versions of function `name`, oldest first.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<crate::versions::VersionView>> {
        self.json(
            self.http
                .get(self.scoped(&format!("/v1/functions/{name}/versions"))),
        )
        .await
    }

    /// Makes function `name` serve its version `version` again.
    pub async fn rollback(&self, name: &str, version: u64) -> Result<FunctionView> {
        let url = self.scoped(&format!("/v1/functions/{name}/rollback"));
        self.json(
            self.http
                .post(url)
                .json(&serde_json::json!({ "version": version })),
        )
        .await
    }

    pub async fn delete_function(&self, name: &str) -> Result<FunctionView> {
        self.json(
            self.http
                .delete(self.scoped(&format!("/v1/functions/{name}"))),
        )
        .await
    }

    pub async fn upload_package(&self, path: &Path) -> Result<PackageRef> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| Error::invalid(format!("cannot read {}: {e}", path.display())))?;
        self.json(self.http.post(self.scoped("/v1/packages")).body(bytes))
            .await
    }

    /// Calls a function through the API; any status is an answer.
    pub async fn invoke(
        &self,
        name: &str,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> Result<InvokeResponse> {
        let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .map_err(|_| Error::invalid(format!("invalid HTTP method \"{method}\"")))?;
        // `/invoke` + the path the function sees; axum's catch-all needs a
        // non-empty rest, so the root path (with or without a query) goes
        // to `/invoke` itself.
        let name = match &self.namespace {
            Some(namespace) => flare_model::qualified(name, namespace),
            None => name.to_string(),
        };
        let url = match path.strip_prefix('/').unwrap_or(path) {
            rest if rest.is_empty() || rest.starts_with('?') => {
                self.url(&format!("/v1/functions/{name}/invoke{rest}"))
            }
            rest => self.url(&format!("/v1/functions/{name}/invoke/{rest}")),
        };
        let mut request = self.http.request(method, url).body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request.send().await.map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let invocation = headers
            .iter()
            .find(|(k, _)| k == flare_executor::INVOCATION_HEADER)
            .map(|(_, v)| v.clone());
        let body = response.bytes().await.map_err(|e| self.unreachable(e))?;
        Ok(InvokeResponse {
            status,
            headers,
            invocation,
            body,
        })
    }

    pub async fn logs(&self, name: &str, filter: &LogFilter) -> Result<Vec<LogEntry>> {
        let url = self.scoped(&format!("/v1/functions/{name}/logs"));
        self.json(self.http.get(url).query(&filter.pairs(false)))
            .await
    }

    /// Streams a function's log, calling `on_line` for each entry, until
    /// the server goes away.
    pub async fn follow_logs(
        &self,
        name: &str,
        filter: &LogFilter,
        mut on_line: impl FnMut(LogEntry),
    ) -> Result<()> {
        let url = self.scoped(&format!("/v1/functions/{name}/logs"));
        let response = self
            .send(self.http.get(url).query(&filter.pairs(true)))
            .await?;
        let mut stream = response.bytes_stream();
        let mut buffer = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.unreachable(e))?;
            buffer.extend_from_slice(&chunk);
            while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buffer.drain(..=end).collect();
                if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line) {
                    on_line(entry);
                }
            }
        }
        Ok(())
    }

    pub async fn list_triggers(&self) -> Result<Vec<Resource<HttpTriggerSpec>>> {
        self.json(self.http.get(self.scoped("/v1/httptriggers")))
            .await
    }

    pub async fn get_trigger(&self, name: &str) -> Result<Resource<HttpTriggerSpec>> {
        self.json(
            self.http
                .get(self.scoped(&format!("/v1/httptriggers/{name}"))),
        )
        .await
    }

    pub async fn create_trigger(
        &self,
        trigger: &Resource<HttpTriggerSpec>,
    ) -> Result<Resource<HttpTriggerSpec>> {
        self.json(
            self.http
                .post(self.scoped("/v1/httptriggers"))
                .json(&self.placed(trigger)),
        )
        .await
    }

    pub async fn update_trigger(
        &self,
        trigger: &Resource<HttpTriggerSpec>,
    ) -> Result<Resource<HttpTriggerSpec>> {
        let url = self.scoped(&format!("/v1/httptriggers/{}", trigger.metadata.name));
        self.json(self.http.put(url).json(&self.placed(trigger)))
            .await
    }

    pub async fn delete_trigger(&self, name: &str) -> Result<Resource<HttpTriggerSpec>> {
        self.json(
            self.http
                .delete(self.scoped(&format!("/v1/httptriggers/{name}"))),
        )
        .await
    }

    pub async fn list_namespaces(&self) -> Result<Vec<Resource<NamespaceSpec>>> {
        self.json(self.http.get(self.url("/v1/namespaces"))).await
    }

    pub async fn get_namespace(&self, name: &str) -> Result<Resource<NamespaceSpec>> {
        self.json(self.http.get(self.url(&format!("/v1/namespaces/{name}"))))
            .await
    }

    pub async fn create_namespace(
        &self,
        namespace: &Resource<NamespaceSpec>,
    ) -> Result<Resource<NamespaceSpec>> {
        self.json(self.http.post(self.url("/v1/namespaces")).json(namespace))
            .await
    }

    pub async fn update_namespace(
        &self,
        namespace: &Resource<NamespaceSpec>,
    ) -> Result<Resource<NamespaceSpec>> {
        let url = self.url(&format!("/v1/namespaces/{}", namespace.metadata.name));
        self.json(self.http.put(url).json(namespace)).await
    }

    pub async fn delete_namespace(&self, name: &str) -> Result<Resource<NamespaceSpec>> {
        self.json(
            self.http
                .delete(self.url(&format!("/v1/namespaces/{name}"))),
        )
        .await
    }

    pub async fn list_secrets(&self) -> Result<Vec<crate::KeysView>> {
        self.json(self.http.get(self.scoped("/v1/secrets"))).await
    }

    pub async fn get_secret(&self, name: &str) -> Result<crate::KeysView> {
        self.json(self.http.get(self.scoped(&format!("/v1/secrets/{name}"))))
            .await
    }

    /// Creates (or with `replace`, replaces) secret `name` with `values`.
    pub async fn put_secret(
        &self,
        name: &str,
        values: &std::collections::BTreeMap<String, Vec<u8>>,
        replace: bool,
    ) -> Result<crate::KeysView> {
        use base64::Engine;
        let data: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(v);
                (k.clone(), serde_json::Value::String(encoded))
            })
            .collect();
        let mut metadata = serde_json::json!({ "name": name });
        if let Some(namespace) = self
            .namespace
            .as_ref()
            .filter(|n| *n != flare_model::ALL_NAMESPACES)
        {
            metadata["namespace"] = namespace.clone().into();
        }
        let body = serde_json::json!({
            "apiVersion": flare_model::API_VERSION,
            "kind": "Secret",
            "metadata": metadata,
            "data": data,
        });
        let request = if replace {
            self.http.put(self.scoped(&format!("/v1/secrets/{name}")))
        } else {
            self.http.post(self.scoped("/v1/secrets"))
        };
        self.json(request.json(&body)).await
    }

    pub async fn delete_secret(&self, name: &str) -> Result<crate::KeysView> {
        self.json(
            self.http
                .delete(self.scoped(&format!("/v1/secrets/{name}"))),
        )
        .await
    }

    pub async fn list_configs(&self) -> Result<Vec<crate::KeysView>> {
        self.json(self.http.get(self.scoped("/v1/configs"))).await
    }

    pub async fn get_config(&self, name: &str) -> Result<crate::KeysView> {
        self.json(self.http.get(self.scoped(&format!("/v1/configs/{name}"))))
            .await
    }

    /// Creates (or with `replace`, replaces) a config.
    pub async fn put_config(
        &self,
        config: &Resource<flare_model::ConfigSpec>,
        replace: bool,
    ) -> Result<crate::KeysView> {
        let request = if replace {
            let url = self.scoped(&format!("/v1/configs/{}", config.metadata.name));
            self.http.put(url)
        } else {
            self.http.post(self.scoped("/v1/configs"))
        };
        self.json(request.json(&self.placed(config))).await
    }

    pub async fn delete_config(&self, name: &str) -> Result<crate::KeysView> {
        self.json(
            self.http
                .delete(self.scoped(&format!("/v1/configs/{name}"))),
        )
        .await
    }

    pub async fn list_environments(&self) -> Result<Vec<EnvironmentView>> {
        self.json(self.http.get(self.url("/v1/environments"))).await
    }

    pub async fn get_environment(&self, name: &str) -> Result<EnvironmentView> {
        self.json(self.http.get(self.url(&format!("/v1/environments/{name}"))))
            .await
    }

    pub async fn create_environment(
        &self,
        env: &Resource<EnvironmentSpec>,
    ) -> Result<EnvironmentView> {
        self.json(self.http.post(self.url("/v1/environments")).json(env))
            .await
    }

    pub async fn update_environment(
        &self,
        env: &Resource<EnvironmentSpec>,
    ) -> Result<EnvironmentView> {
        let url = self.url(&format!("/v1/environments/{}", env.metadata.name));
        self.json(self.http.put(url).json(env)).await
    }

    pub async fn delete_environment(&self, name: &str) -> Result<EnvironmentView> {
        self.json(
            self.http
                .delete(self.url(&format!("/v1/environments/{name}"))),
        )
        .await
    }

    pub async fn list_timers(&self) -> Result<Vec<Resource<TimerTriggerSpec>>> {
        self.json(self.http.get(self.scoped("/v1/timertriggers")))
            .await
    }

    pub async fn get_timer(&self, name: &str) -> Result<Resource<TimerTriggerSpec>> {
        self.json(
            self.http
                .get(self.scoped(&format!("/v1/timertriggers/{name}"))),
        )
        .await
    }

    pub async fn create_timer(
        &self,
        trigger: &Resource<TimerTriggerSpec>,
    ) -> Result<Resource<TimerTriggerSpec>> {
        self.json(
            self.http
                .post(self.scoped("/v1/timertriggers"))
                .json(&self.placed(trigger)),
        )
        .await
    }

    pub async fn update_timer(
        &self,
        trigger: &Resource<TimerTriggerSpec>,
    ) -> Result<Resource<TimerTriggerSpec>> {
        let url = self.scoped(&format!("/v1/timertriggers/{}", trigger.metadata.name));
        self.json(self.http.put(url).json(&self.placed(trigger)))
            .await
    }

    pub async fn delete_timer(&self, name: &str) -> Result<Resource<TimerTriggerSpec>> {
        self.json(
            self.http
                .delete(self.scoped(&format!("/v1/timertriggers/{name}"))),
        )
        .await
    }

    pub async fn list_invocations(
        &self,
        status: Option<&str>,
        function: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<flare_store::invocations::Invocation>> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(status) = status {
            query.push(("status", status.to_string()));
        }
        if let Some(function) = function {
            query.push(("function", function.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        self.json(self.http.get(self.scoped("/v1/invocations")).query(&query))
            .await
    }

    pub async fn get_invocation(&self, id: &str) -> Result<flare_store::invocations::Invocation> {
        self.json(self.http.get(self.scoped(&format!("/v1/invocations/{id}"))))
            .await
    }

    /// Submits a failed invocation's request again; the new invocation's id.
    pub async fn retry_invocation(&self, id: &str) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Accepted {
            invocation: String,
        }
        let accepted: Accepted = self
            .json(
                self.http
                    .post(self.scoped(&format!("/v1/invocations/{id}/retry"))),
            )
            .await?;
        Ok(accepted.invocation)
    }

    pub async fn list_mq(&self) -> Result<Vec<crate::MqTriggerView>> {
        self.json(self.http.get(self.scoped("/v1/mqtriggers")))
            .await
    }

    pub async fn get_mq(&self, name: &str) -> Result<crate::MqTriggerView> {
        self.json(
            self.http
                .get(self.scoped(&format!("/v1/mqtriggers/{name}"))),
        )
        .await
    }

    pub async fn create_mq(
        &self,
        trigger: &Resource<flare_model::MessageQueueTriggerSpec>,
    ) -> Result<crate::MqTriggerView> {
        self.json(
            self.http
                .post(self.scoped("/v1/mqtriggers"))
                .json(&self.placed(trigger)),
        )
        .await
    }

    pub async fn update_mq(
        &self,
        trigger: &Resource<flare_model::MessageQueueTriggerSpec>,
    ) -> Result<crate::MqTriggerView> {
        let url = self.scoped(&format!("/v1/mqtriggers/{}", trigger.metadata.name));
        self.json(self.http.put(url).json(&self.placed(trigger)))
            .await
    }

    pub async fn delete_mq(&self, name: &str) -> Result<crate::MqTriggerView> {
        self.json(
            self.http
                .delete(self.scoped(&format!("/v1/mqtriggers/{name}"))),
        )
        .await
    }
}
