//! `flare login` and `flare context`: the servers (and tokens) the CLI
//! knows, kept in `$XDG_CONFIG_HOME/flare/config.toml` (or
//! `~/.config/flare/config.toml`), readable only by its owner.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{ApiFlag, DEFAULT_API};
use crate::output::{self, OutputFlag};

/// One server and the token the CLI sends it.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub api: String,
    pub token: String,
    /// A PEM file of certificates to trust for this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// The token left out.
impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("api", &self.api)
            .field("ca_cert", &self.ca_cert)
            .finish_non_exhaustive()
    }
}

/// The CLI's configuration file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

fn path() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("flare/config.toml"));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".config/flare/config.toml")),
        None => bail!("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep contexts"),
    }
}

impl Config {
    /// The file's contents; empty when there is no file (or no home).
    pub fn load() -> anyhow::Result<Config> {
        let Ok(path) = path() else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn current(&self) -> Option<&Context> {
        self.current.as_ref().and_then(|c| self.contexts.get(c))
    }

    /// Writes the file whole (a new file renamed into place), mode 0600.
    fn save(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let path = path()?;
        let dir = path.parent().context("config path has no directory")?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string(self).context("cannot encode the config")?;
        flare_access::write_private(&path, text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }
}

/// Checks a token against a server and keeps both as a context (made
/// current).
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Name of the context. [default: the API's host and port]
    #[arg(long)]
    context: Option<String>,
    #[command(flatten)]
    api: ApiFlag,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let api = args.api.api.clone().unwrap_or_else(|| DEFAULT_API.into());
    let Some(token) = args.api.token.clone() else {
        bail!("give the token with --token (or FLARE_TOKEN)");
    };
    // Kept as an absolute path: the context is used from anywhere.
    let ca_cert = match &args.api.ca_cert {
        Some(path) => Some(
            std::fs::canonicalize(path)
                .with_context(|| format!("cannot find the CA file {}", path.display()))?,
        ),
        None => None,
    };
    let resolved = super::Resolved {
        api: api.clone(),
        token: Some(token.clone()),
        ca_cert: ca_cert.clone(),
        namespace: None,
    };
    let me = resolved
        .client()?
        .whoami()
        .await
        .with_context(|| format!("cannot log in to {api}"))?;
    let name = args.context.unwrap_or_else(|| {
        let authority = api.split_once("://").map_or(api.as_str(), |(_, a)| a);
        authority.trim_end_matches('/').to_string()
    });
    let mut config = Config::load()?;
    config.contexts.insert(
        name.clone(),
        Context {
            api: api.trim_end_matches('/').to_string(),
            token,
            ca_cert,
        },
    );
    config.current = Some(name.clone());
    let path = config.save()?;
    let namespaces = match me.namespace.as_str() {
        flare_model::ALL_NAMESPACES => "every namespace".to_string(),
        namespace => format!("namespace {namespace}"),
    };
    println!(
        "logged in to {api} with token \"{}\" ({}, {namespaces}); context \"{name}\" saved in {}",
        me.name,
        me.role,
        path.display()
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct ContextArgs {
    #[command(subcommand)]
    command: ContextCommand,
    #[command(flatten)]
    output: OutputFlag,
}

#[derive(Subcommand, Debug)]
enum ContextCommand {
    /// The contexts `flare login` saved; * marks the current one.
    List,
    /// Make a context current.
    Use { name: String },
    /// Forget a context (its token stays valid on the server; revoke it
    /// there with `flare token revoke`).
    Delete { name: String },
}

#[derive(Serialize)]
struct ContextRow<'a> {
    name: &'a str,
    api: &'a str,
    current: bool,
}

pub async fn run(args: ContextArgs) -> anyhow::Result<()> {
    let mut config = Config::load()?;
    match args.command {
        ContextCommand::List => {
            let rows: Vec<ContextRow> = config
                .contexts
                .iter()
                .map(|(name, c)| ContextRow {
                    name,
                    api: &c.api,
                    current: config.current.as_deref() == Some(name),
                })
                .collect();
            output::print(
                args.output.format,
                &rows,
                &["CURRENT", "NAME", "API"],
                || {
                    rows.iter()
                        .map(|r| {
                            let mark = if r.current { "*" } else { "" };
                            vec![mark.into(), r.name.into(), r.api.into()]
                        })
                        .collect()
                },
            )
        }
        ContextCommand::Use { name } => {
            if !config.contexts.contains_key(&name) {
                bail!("no context \"{name}\" (see `flare context list`; `flare login` adds one)");
            }
            config.current = Some(name.clone());
            config.save()?;
            println!("now using context \"{name}\"");
            Ok(())
        }
        ContextCommand::Delete { name } => {
            if config.contexts.remove(&name).is_none() {
                bail!("no context \"{name}\" (see `flare context list`)");
            }
            if config.current.as_deref() == Some(&name) {
                config.current = None;
            }
            config.save()?;
            println!("context \"{name}\" deleted");
            Ok(())
        }
    }
}
