//! `flare ns ...`

use clap::{Args, Subcommand};
use flare_model::{NamespaceSpec, Resource};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct NamespaceArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: NamespaceCommand,
}

/// Quotas, checked when a function is created or changed.
#[derive(Args, Debug, Default)]
struct Quotas {
    /// Functions it may hold.
    #[arg(long)]
    max_functions: Option<u32>,
    /// Memory (MiB) any one function may ask for.
    #[arg(long, value_name = "MIB")]
    max_memory: Option<u32>,
    /// Instances its functions may keep warm in all (the sum of --minscale).
    #[arg(long)]
    max_minscale: Option<u32>,
    /// Requests any one function may have in flight.
    #[arg(long)]
    max_concurrency: Option<u32>,
}

impl Quotas {
    /// Sets what was given; keeps the rest of `spec`.
    fn apply(&self, spec: &mut NamespaceSpec) {
        let set = |field: &mut Option<u32>, value: Option<u32>| {
            if value.is_some() {
                *field = value;
            }
        };
        set(&mut spec.max_functions, self.max_functions);
        set(&mut spec.max_memory_mb, self.max_memory);
        set(&mut spec.max_min_scale, self.max_minscale);
        set(&mut spec.max_concurrency, self.max_concurrency);
    }
}

#[derive(Subcommand, Debug)]
enum NamespaceCommand {
    /// Create a namespace (admin only).
    Create {
        name: String,
        #[command(flatten)]
        quotas: Quotas,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a namespace and its quotas.
    Get {
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// The namespaces this token reaches.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Change quotas (admin only); what is not given is kept.
    Update {
        name: String,
        #[command(flatten)]
        quotas: Quotas,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete an empty namespace (admin only).
    Delete { name: String },
}

fn show(
    output: OutputFlag,
    namespaces: &[Resource<NamespaceSpec>],
    single: bool,
) -> anyhow::Result<()> {
    let quota = |q: Option<u32>| q.map_or("-".to_string(), |q| q.to_string());
    let rows = || {
        namespaces
            .iter()
            .map(|n| {
                vec![
                    n.metadata.name.clone(),
                    quota(n.spec.max_functions),
                    quota(n.spec.max_memory_mb),
                    quota(n.spec.max_min_scale),
                    quota(n.spec.max_concurrency),
                ]
            })
            .collect()
    };
    let headers = [
        "NAME",
        "MAX-FUNCTIONS",
        "MAX-MEMORY",
        "MAX-MINSCALE",
        "MAX-CONCURRENCY",
    ];
    print_resources(output.format, namespaces, single, &headers, rows)
}

pub async fn run(args: NamespaceArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        NamespaceCommand::Create {
            name,
            quotas,
            output,
        } => {
            let mut spec = NamespaceSpec::default();
            quotas.apply(&mut spec);
            let created = client.create_namespace(&Resource::new(name, spec)).await?;
            show(output, &[created], true)
        }
        NamespaceCommand::Get { name, output } => {
            show(output, &[client.get_namespace(&name).await?], true)
        }
        NamespaceCommand::List { output } => show(output, &client.list_namespaces().await?, false),
        NamespaceCommand::Update {
            name,
            quotas,
            output,
        } => {
            let mut namespace = client.get_namespace(&name).await?;
            quotas.apply(&mut namespace.spec);
            // `default` exists without being stored: storing it is a create.
            let stored = if namespace.metadata.uid.is_empty() {
                client.create_namespace(&namespace).await?
            } else {
                client.update_namespace(&namespace).await?
            };
            show(output, &[stored], true)
        }
        NamespaceCommand::Delete { name } => {
            client.delete_namespace(&name).await?;
            println!("namespace \"{name}\" deleted");
            Ok(())
        }
    }
}
