pub mod context;
pub mod environment;
pub mod function;
pub mod httptrigger;
pub mod invocations;
pub mod mqtrigger;
pub mod server;
pub mod timetrigger;
pub mod token;

use clap::Args;

/// The API the CLI talks to when nothing says otherwise.
pub const DEFAULT_API: &str = "http://127.0.0.1:8081";

/// Where the CLI finds the API and the token it sends.
#[derive(Args, Debug, Clone)]
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
}

impl ApiFlag {
    /// The API in use and its token: the flags (or FLARE_API and
    /// FLARE_TOKEN) first, then the current context. A context's token is
    /// sent only to the context's own API, never to another one named
    /// with --api.
    pub fn resolve(&self) -> anyhow::Result<(String, Option<String>)> {
        let config = context::Config::load()?;
        let current = config.current();
        let api = match (&self.api, current) {
            (Some(api), _) => api.clone(),
            (None, Some(context)) => context.api.clone(),
            (None, None) => DEFAULT_API.to_string(),
        };
        let token = match (&self.token, current) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(context)) if same_api(&context.api, &api) => Some(context.token.clone()),
            (None, _) => None,
        };
        Ok((api, token))
    }

    pub fn client(&self) -> anyhow::Result<flare_api::Client> {
        let (api, token) = self.resolve()?;
        Ok(match token {
            Some(token) => flare_api::Client::with_token(&api, &token)?,
            None => flare_api::Client::new(&api),
        })
    }
}

fn same_api(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}
