//! `flare node list`.

use clap::{Args, Subcommand};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Subcommand, Debug)]
enum NodeCommand {
    /// The live nodes: name, router address, version, functions served
    /// without a cold start, requests in flight, last heartbeat. A node
    /// whose heartbeats stop is gone within 10 s.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        NodeCommand::List { output } => {
            let nodes = client.list_nodes().await?;
            let rows = || {
                nodes
                    .iter()
                    .map(|n| {
                        vec![
                            n.name.clone(),
                            n.address.clone(),
                            n.version.clone(),
                            n.functions_warm.to_string(),
                            n.busy.to_string(),
                            n.heartbeat.clone(),
                        ]
                    })
                    .collect()
            };
            print_resources(
                output.format,
                &nodes,
                false,
                &["NAME", "ADDRESS", "VERSION", "WARM", "BUSY", "HEARTBEAT"],
                rows,
            )
        }
    }
}
