//! `flare alias ...`: names for versions of a function.

use clap::{Args, Subcommand};
use flare_model::{AliasSpec, Kind, Resource};

use super::{ApiFlag, get_resource, list_resources, put_resource};
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct AliasArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: AliasCommand,
}

#[derive(Subcommand, Debug)]
enum AliasCommand {
    /// Name a version of a function (`flare ht create --alias NAME`
    /// serves it).
    #[command(disable_version_flag = true)]
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        function: String,
        /// The version (see `flare fn versions`).
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show an alias.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List aliases.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Move an alias to another version of its function: the routes that
    /// serve it follow at once.
    #[command(disable_version_flag = true)]
    Update {
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete an alias (refused while an HTTP trigger serves it).
    Delete {
        #[arg(long)]
        name: String,
    },
}

fn show(output: OutputFlag, aliases: &[Resource<AliasSpec>], single: bool) -> anyhow::Result<()> {
    let rows = || {
        aliases
            .iter()
            .map(|a| {
                vec![
                    a.metadata.name.clone(),
                    a.spec.function.clone(),
                    a.spec.version.to_string(),
                ]
            })
            .collect()
    };
    print_resources(
        output.format,
        aliases,
        single,
        &["NAME", "FUNCTION", "VERSION"],
        rows,
    )
}

pub async fn run(args: AliasArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        AliasCommand::Create {
            name,
            function,
            version,
            output,
        } => {
            let alias = Resource::new(name, AliasSpec { function, version });
            let created = put_resource(&client, &alias, false).await?;
            show(output, &[created], true)
        }
        AliasCommand::Get { name, output } => {
            let alias = get_resource::<AliasSpec>(&client, &name).await?;
            show(output, &[alias], true)
        }
        AliasCommand::List { output } => {
            let aliases = list_resources::<AliasSpec>(&client).await?;
            show(output, &aliases, false)
        }
        AliasCommand::Update {
            name,
            version,
            output,
        } => {
            let mut alias = get_resource::<AliasSpec>(&client, &name).await?;
            alias.spec.version = version;
            let updated = put_resource(&client, &alias, true).await?;
            show(output, &[updated], true)
        }
        AliasCommand::Delete { name } => {
            client.delete_document(Kind::Alias, &name).await?;
            println!("alias \"{name}\" deleted");
            Ok(())
        }
    }
}
