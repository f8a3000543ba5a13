//! `flare env ...`

use clap::{Args, Subcommand, ValueEnum};
use flare_api::EnvironmentView;
use flare_model::{EnvironmentRuntime, EnvironmentSpec, Resource};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct EnvironmentArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: EnvironmentCommand,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Runtime {
    Python,
    Node,
    Custom,
}

impl From<Runtime> for EnvironmentRuntime {
    fn from(r: Runtime) -> Self {
        match r {
            Runtime::Python => EnvironmentRuntime::Python,
            Runtime::Node => EnvironmentRuntime::Node,
            Runtime::Custom => EnvironmentRuntime::Custom,
        }
    }
}

#[derive(Subcommand, Debug)]
enum EnvironmentCommand {
    /// Create a language environment: a pool of sandboxed workers.
    Create {
        #[arg(long)]
        name: String,
        /// python and node use Flare's workers; custom runs --command.
        #[arg(long, value_enum)]
        runtime: Runtime,
        /// custom: the worker program (absolute path) and its arguments,
        /// which must speak environments/PROTOCOL.md.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
        /// Generic workers kept started, ready to specialize. [default: 3]
        #[arg(long)]
        poolsize: Option<u32>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show an environment and its idle workers.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List environments.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Change the pool size or command; running instances are kept.
    Update {
        #[arg(long)]
        name: String,
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
        #[arg(long)]
        poolsize: Option<u32>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete an environment (refused while functions use it).
    Delete {
        #[arg(long)]
        name: String,
    },
}

fn show(output: OutputFlag, envs: &[EnvironmentView], single: bool) -> anyhow::Result<()> {
    let rows = || {
        envs.iter()
            .map(|v| {
                let e = &v.environment;
                vec![
                    e.metadata.name.clone(),
                    format!("{:?}", e.spec.runtime).to_lowercase(),
                    e.spec.poolsize.to_string(),
                    v.idle_workers.map_or("-".into(), |n| n.to_string()),
                    e.spec.command.join(" "),
                ]
            })
            .collect()
    };
    let headers = ["NAME", "RUNTIME", "POOLSIZE", "IDLE", "COMMAND"];
    print_resources(output.format, envs, single, &headers, rows)
}

pub async fn run(args: EnvironmentArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        EnvironmentCommand::Create {
            name,
            runtime,
            command,
            poolsize,
            output,
        } => {
            let env = Resource::new(
                name,
                EnvironmentSpec {
                    runtime: runtime.into(),
                    command,
                    poolsize: poolsize.unwrap_or(EnvironmentSpec::DEFAULT_POOLSIZE),
                },
            );
            let created = client.create_environment(&env).await?;
            show(output, &[created], true)
        }
        EnvironmentCommand::Get { name, output } => {
            let env = client.get_environment(&name).await?;
            show(output, &[env], true)
        }
        EnvironmentCommand::List { output } => {
            let envs = client.list_environments().await?;
            show(output, &envs, false)
        }
        EnvironmentCommand::Update {
            name,
            command,
            poolsize,
            output,
        } => {
            let mut env = client.get_environment(&name).await?.environment;
            if !command.is_empty() {
                env.spec.command = command;
            }
            if let Some(poolsize) = poolsize {
                env.spec.poolsize = poolsize;
            }
            let updated = client.update_environment(&env).await?;
            show(output, &[updated], true)
        }
        EnvironmentCommand::Delete { name } => {
            client.delete_environment(&name).await?;
            println!("environment \"{name}\" deleted");
            Ok(())
        }
    }
}
