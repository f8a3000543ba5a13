pub mod alias;
pub mod canary;
pub mod context;
pub mod environment;
pub mod function;
pub mod httptrigger;
pub mod invocations;
pub mod mqtrigger;
pub mod namespace;
pub mod node;
pub mod package;
pub mod project;
pub mod secret;
pub mod server;
pub mod spec;
pub mod timetrigger;
pub mod token;

use clap::Args;

/// The API the CLI talks to when nothing says otherwise.
pub const DEFAULT_API: &str = "http://127.0.0.1:8081";

/// Where the CLI finds the API and the token it sends.
#[derive(Args, Clone)]
pub struct ApiFlag {
    /// URL of the Flare API. [default: the current context's, else
    /// http://127.0.0.1:8081]
    #[arg(long = "api", env = "FLARE_API", global = true)]
    pub api: Option<String>,
    /// API token. [default: the current context's, when its API is the
    /// one in use (`flare login` stores it)]
    #[arg(
        long = "token",
        env = "FLARE_TOKEN",
        global = true,
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Trust the certificates in this PEM file too (a server with a
    /// self-signed or private certificate). [default: the current
    /// context's, for its own API]
    #[arg(long = "ca-cert", env = "FLARE_CA_CERT", global = true)]
    pub ca_cert: Option<std::path::PathBuf>,
    /// The namespace to work in ('*' lists every namespace); for `token
    /// create`, the one the token is bound to. [default: default]
    #[arg(
        long = "namespace",
        short = 'n',
        env = "FLARE_NAMESPACE",
        global = true
    )]
    pub namespace: Option<String>,
}

/// The token left out.
impl std::fmt::Debug for ApiFlag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiFlag")
            .field("api", &self.api)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl ApiFlag {
    /// The API in use and its token: the flags (or FLARE_API and
    /// FLARE_TOKEN) first, then the current context. A context's token is
    /// sent only to the context's own API, never to another one named
    /// with --api.
    pub fn resolve(&self) -> anyhow::Result<Resolved> {
        let config = context::Config::load()?;
        let current = config.current();
        let api = match (&self.api, current) {
            (Some(api), _) => api.clone(),
            (None, Some(context)) => context.api.clone(),
            (None, None) => DEFAULT_API.to_string(),
        };
        let own = current.filter(|context| same_api(&context.api, &api));
        let token = match (&self.token, own) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(context)) => Some(context.token.clone()),
            (None, None) => None,
        };
        let ca_cert = match (&self.ca_cert, own) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(context)) => context.ca_cert.clone(),
            (None, None) => None,
        };
        Ok(Resolved {
            api,
            token,
            ca_cert,
            namespace: self.namespace.clone(),
        })
    }

    pub fn client(&self) -> anyhow::Result<flare_api::Client> {
        self.resolve()?.client()
    }
}

/// The API in use and how to talk to it.
pub struct Resolved {
    pub api: String,
    pub token: Option<String>,
    pub ca_cert: Option<std::path::PathBuf>,
    pub namespace: Option<String>,
}

impl Resolved {
    pub fn client(&self) -> anyhow::Result<flare_api::Client> {
        use anyhow::Context;
        let pem = match &self.ca_cert {
            Some(path) => Some(
                std::fs::read(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?,
            ),
            None => None,
        };
        Ok(
            flare_api::Client::build(&self.api, self.token.as_deref(), pem.as_deref())?
                .in_namespace(self.namespace.clone())
                .watch_uploads(crate::progress::uploads()),
        )
    }
}

fn same_api(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A stored resource of `S`'s kind, through the API's document calls.
pub async fn get_resource<S: flare_model::Spec>(
    client: &flare_api::Client,
    name: &str,
) -> anyhow::Result<flare_model::Resource<S>> {
    let doc = client
        .get_document(S::KIND, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{} \"{name}\" not found", S::KIND.noun()))?;
    decode(doc)
}

/// Every stored resource of `S`'s kind in the client's namespace.
pub async fn list_resources<S: flare_model::Spec>(
    client: &flare_api::Client,
) -> anyhow::Result<Vec<flare_model::Resource<S>>> {
    client
        .list_documents(S::KIND)
        .await?
        .into_iter()
        .map(decode)
        .collect()
}

/// Creates (`existing` false) or replaces `resource`; what was stored.
pub async fn put_resource<S: flare_model::Spec>(
    client: &flare_api::Client,
    resource: &flare_model::Resource<S>,
    existing: bool,
) -> anyhow::Result<flare_model::Resource<S>> {
    let doc = resource.to_document()?;
    decode(client.put_document(&doc, existing, None).await?)
}

fn decode<S: flare_model::Spec>(
    doc: serde_json::Value,
) -> anyhow::Result<flare_model::Resource<S>> {
    use anyhow::Context;
    serde_json::from_value(doc).context("unexpected answer from the API")
}
