//! `flare secret ...` and `flare config ...`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use flare_model::{ConfigSpec, Resource};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

/// Where values come from.
#[derive(Args, Default)]
struct Sources {
    /// KEY=VALUE (repeatable).
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    literals: Vec<String>,
    /// A file whose contents become the value of the key named like the
    /// file, or KEY=PATH (repeatable).
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    files: Vec<String>,
}

/// Keys and paths only: the literals hold values.
impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self
            .literals
            .iter()
            .map(|l| l.split_once('=').map_or("?", |(k, _)| k))
            .collect();
        f.debug_struct("Sources")
            .field("literal_keys", &keys)
            .field("files", &self.files)
            .finish()
    }
}

impl Sources {
    fn values(&self) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
        let mut values = BTreeMap::new();
        let mut put = |key: String, value: Vec<u8>| {
            if values.insert(key.clone(), value).is_some() {
                bail!("key \"{key}\" is given twice");
            }
            Ok(())
        };
        for literal in &self.literals {
            let Some((key, value)) = literal.split_once('=') else {
                // Not quoted back: it may be the value itself.
                bail!("a --from-literal has no '=': give KEY=VALUE");
            };
            put(key.to_string(), value.as_bytes().to_vec())?;
        }
        for file in &self.files {
            let (key, path) = match file.split_once('=') {
                Some((key, path)) => (key.to_string(), PathBuf::from(path)),
                None => {
                    let path = PathBuf::from(file);
                    let key = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .with_context(|| format!("--from-file {file} names no file"))?;
                    (key, path)
                }
            };
            let value =
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
            put(key, value)?;
        }
        if values.is_empty() {
            bail!("give values with --from-literal KEY=VALUE or --from-file [KEY=]PATH");
        }
        Ok(values)
    }
}

#[derive(Args, Debug)]
pub struct SecretArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: SecretCommand,
}

#[derive(Subcommand, Debug)]
enum SecretCommand {
    /// Create a secret; its values are sealed and never shown again.
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        sources: Sources,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Replace a secret's values; functions using it get them in new
    /// instances.
    Update {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        sources: Sources,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a secret's keys (never its values).
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List secrets and their keys.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete a secret (refused while functions use it).
    Delete {
        #[arg(long)]
        name: String,
    },
}

/// Secrets and configs: names and keys, never values.
fn show_keys(
    output: OutputFlag,
    items: &[flare_api::KeysView],
    single: bool,
) -> anyhow::Result<()> {
    let rows = || {
        items
            .iter()
            .map(|s| vec![s.metadata.name.clone(), s.keys.join(",")])
            .collect()
    };
    print_resources(output.format, items, single, &["NAME", "KEYS"], rows)
}

pub async fn run(args: SecretArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        SecretCommand::Create {
            name,
            sources,
            output,
        } => {
            let created = client.put_secret(&name, &sources.values()?, false).await?;
            show_keys(output, &[created], true)
        }
        SecretCommand::Update {
            name,
            sources,
            output,
        } => {
            let updated = client.put_secret(&name, &sources.values()?, true).await?;
            show_keys(output, &[updated], true)
        }
        SecretCommand::Get { name, output } => {
            show_keys(output, &[client.get_secret(&name).await?], true)
        }
        SecretCommand::List { output } => show_keys(output, &client.list_secrets().await?, false),
        SecretCommand::Delete { name } => {
            client.delete_secret(&name).await?;
            println!("secret \"{name}\" deleted");
            Ok(())
        }
    }
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: ConfigCommand,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Create a config: settings functions get as environment variables
    /// and through wasi:config (sealed at rest, not shown again).
    Create {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        sources: Sources,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Replace a config's values; functions using it get them in new
    /// instances.
    Update {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        sources: Sources,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a config's keys (its values are not shown again).
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List configs.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete a config (refused while functions use it).
    Delete {
        #[arg(long)]
        name: String,
    },
}

fn config(name: String, sources: &Sources) -> anyhow::Result<Resource<ConfigSpec>> {
    let mut data = BTreeMap::new();
    for (key, value) in sources.values()? {
        let text = String::from_utf8(value).map_err(|_| {
            anyhow::anyhow!("the value of \"{key}\" is not UTF-8 text; a secret can hold bytes")
        })?;
        data.insert(key, text);
    }
    Ok(Resource::new(name, ConfigSpec { data }))
}

pub async fn run_config(args: ConfigArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        ConfigCommand::Create {
            name,
            sources,
            output,
        } => {
            let created = client.put_config(&config(name, &sources)?, false).await?;
            show_keys(output, &[created], true)
        }
        ConfigCommand::Update {
            name,
            sources,
            output,
        } => {
            let updated = client.put_config(&config(name, &sources)?, true).await?;
            show_keys(output, &[updated], true)
        }
        ConfigCommand::Get { name, output } => {
            show_keys(output, &[client.get_config(&name).await?], true)
        }
        ConfigCommand::List { output } => show_keys(output, &client.list_configs().await?, false),
        ConfigCommand::Delete { name } => {
            client.delete_config(&name).await?;
            println!("config \"{name}\" deleted");
            Ok(())
        }
    }
}
