//! `flare env ...`

use clap::{Args, Subcommand, ValueEnum};
use flare_api::EnvironmentView;
use flare_model::{EnvironmentRuntime, EnvironmentSpec, Isolation, Resource};

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
    Java,
    Custom,
}

impl From<Runtime> for EnvironmentRuntime {
    fn from(r: Runtime) -> Self {
        match r {
            Runtime::Python => EnvironmentRuntime::Python,
            Runtime::Node => EnvironmentRuntime::Node,
            Runtime::Java => EnvironmentRuntime::Java,
            Runtime::Custom => EnvironmentRuntime::Custom,
        }
    }
}

/// How strongly the workers are walled off from the host.
#[derive(ValueEnum, Debug, Clone, Copy)]
enum Level {
    /// Namespaces, seccomp and cgroups on the host kernel.
    Namespace,
    /// The same walls inside gVisor's user-space kernel (needs runsc).
    Gvisor,
    /// A lightweight VM per worker, with its own kernel (needs KVM).
    Microvm,
}

impl From<Level> for Isolation {
    fn from(level: Level) -> Self {
        match level {
            Level::Namespace => Isolation::Namespace,
            Level::Gvisor => Isolation::Gvisor,
            Level::Microvm => Isolation::Microvm,
        }
    }
}

#[derive(Subcommand, Debug)]
enum EnvironmentCommand {
    /// Create a language environment: a pool of sandboxed workers.
    Create {
        #[arg(long)]
        name: String,
        /// python, node and java use Flare's workers; custom runs --command.
        #[arg(long, value_enum)]
        runtime: Runtime,
        /// custom: the worker program (absolute path) and its arguments,
        /// which must speak environments/PROTOCOL.md.
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
        /// Generic workers kept started, ready to specialize. [default: 3]
        #[arg(long)]
        poolsize: Option<u32>,
        /// The wall around each worker; a level this host cannot provide
        /// is refused with what is missing.
        #[arg(long, value_enum, default_value = "namespace")]
        isolation: Level,
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
    /// Change the pool size, command or isolation; running instances are
    /// kept, new workers start with the change.
    Update {
        #[arg(long)]
        name: String,
        #[arg(long, num_args = 1.., allow_hyphen_values = true)]
        command: Vec<String>,
        #[arg(long)]
        poolsize: Option<u32>,
        #[arg(long, value_enum)]
        isolation: Option<Level>,
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
                    e.spec.isolation.as_str().to_string(),
                    v.idle_workers.map_or("-".into(), |n| n.to_string()),
                    e.spec.command.join(" "),
                ]
            })
            .collect()
    };
    let headers = [
        "NAME",
        "RUNTIME",
        "POOLSIZE",
        "ISOLATION",
        "IDLE",
        "COMMAND",
    ];
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
            isolation,
            output,
        } => {
            let env = Resource::new(
                name,
                EnvironmentSpec {
                    runtime: runtime.into(),
                    command,
                    poolsize: poolsize.unwrap_or(EnvironmentSpec::DEFAULT_POOLSIZE),
                    isolation: isolation.into(),
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
            isolation,
            output,
        } => {
            let mut env = client.get_environment(&name).await?.environment;
            if !command.is_empty() {
                env.spec.command = command;
            }
            if let Some(poolsize) = poolsize {
                env.spec.poolsize = poolsize;
            }
            if let Some(isolation) = isolation {
                env.spec.isolation = isolation.into();
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
