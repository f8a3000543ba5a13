//! `flare canary ...`: move a function's traffic to a new version step by
//! step, back to the old one on failures.

use clap::{Args, Subcommand};
use flare_model::{CanarySpec, Kind, Resource};

use super::{ApiFlag, get_resource, list_resources, put_resource};
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct CanaryArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: CanaryCommand,
}

#[derive(Subcommand, Debug)]
enum CanaryCommand {
    /// Start shifting the function's unpinned traffic (/fn/NAME and
    /// triggers serving its latest version) from one version to another.
    /// Every interval: more than --failure-threshold percent of the new
    /// version's requests failed (5xx, timeouts) -> all traffic back to
    /// --from (failed); else --step percent more, until 100 (succeeded).
    /// No traffic, no step.
    Create {
        /// [default: <function>-<from>-to-<to>]
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        function: String,
        /// The version serving now.
        #[arg(long)]
        from: u64,
        /// The new version.
        #[arg(long)]
        to: u64,
        /// Percent of the traffic the new version gains per healthy interval.
        #[arg(long, default_value_t = 20)]
        step: u32,
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Percent of failed requests above which traffic goes back.
        #[arg(long, default_value_t = 10)]
        failure_threshold: u32,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a canary: its weight, what it observed, its state.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List canaries.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Stop a canary: unpinned traffic goes back to the version the
    /// function serves.
    Delete {
        #[arg(long)]
        name: String,
    },
}

fn show(output: OutputFlag, canaries: &[Resource<CanarySpec>], single: bool) -> anyhow::Result<()> {
    let rows = || {
        canaries
            .iter()
            .map(|c| {
                let s = &c.spec.status;
                vec![
                    c.metadata.name.clone(),
                    c.spec.function.clone(),
                    format!("{} -> {}", c.spec.from, c.spec.to),
                    format!("{}%", s.weight),
                    format!("{:?}", s.state).to_lowercase(),
                    s.failure_rate
                        .map(|r| format!("{r:.1}% of {}", s.requests))
                        .unwrap_or_else(|| "-".into()),
                    s.message.clone().unwrap_or_default(),
                ]
            })
            .collect()
    };
    let headers = [
        "NAME",
        "FUNCTION",
        "VERSIONS",
        "WEIGHT",
        "STATE",
        "FAILED",
        "LAST STEP",
    ];
    print_resources(output.format, canaries, single, &headers, rows)
}

pub async fn run(args: CanaryArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        CanaryCommand::Create {
            name,
            function,
            from,
            to,
            step,
            interval,
            failure_threshold,
            output,
        } => {
            let name = name.unwrap_or_else(|| format!("{function}-{from}-to-{to}"));
            let canary = Resource::new(
                name,
                CanarySpec {
                    function,
                    from,
                    to,
                    step,
                    interval,
                    failure_threshold,
                    status: Default::default(),
                },
            );
            let created = put_resource(&client, &canary, false).await?;
            show(output, &[created], true)
        }
        CanaryCommand::Get { name, output } => {
            let canary = get_resource::<CanarySpec>(&client, &name).await?;
            show(output, &[canary], true)
        }
        CanaryCommand::List { output } => {
            let canaries = list_resources::<CanarySpec>(&client).await?;
            show(output, &canaries, false)
        }
        CanaryCommand::Delete { name } => {
            client.delete_document(Kind::Canary, &name).await?;
            println!("canary \"{name}\" deleted");
            Ok(())
        }
    }
}
