//! `flare httptrigger ...` (alias `ht`)

use clap::{Args, Subcommand};
use flare_model::{HttpTriggerSpec, Resource};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct HttpTriggerArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: HttpTriggerCommand,
}

#[derive(Subcommand, Debug)]
enum HttpTriggerCommand {
    /// Route requests matching a URL pattern (and methods) to a function.
    Create {
        /// Trigger name. [default: <function>-<random>]
        #[arg(long)]
        name: Option<String>,
        /// URL pattern: /greet/{name} for a parameter, /static/{*rest} for
        /// the rest of the path.
        #[arg(long)]
        url: String,
        /// HTTP method (repeatable). [default: every method]
        #[arg(long = "method")]
        methods: Vec<String>,
        /// The function to run.
        #[arg(long)]
        function: String,
        /// Only requests for this Host.
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        target: TargetFlags,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a trigger.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List triggers.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Change a trigger; what is not given is kept.
    Update {
        #[arg(long)]
        name: String,
        #[arg(long)]
        url: Option<String>,
        /// HTTP method (repeatable); replaces the old set.
        #[arg(long = "method")]
        methods: Vec<String>,
        #[arg(long)]
        function: Option<String>,
        #[arg(long)]
        host: Option<String>,
        #[command(flatten)]
        target: TargetFlags,
        /// Serve the function's latest version again (drop --alias and
        /// --weights).
        #[arg(long, conflicts_with_all = ["alias", "weights"])]
        latest: bool,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete a trigger.
    Delete {
        #[arg(long)]
        name: String,
    },
}

/// Which version of the function a route serves. [default: its latest]
#[derive(Args, Debug)]
struct TargetFlags {
    /// Serve the version this alias names (`flare alias create`).
    #[arg(long, conflicts_with = "weights")]
    alias: Option<String>,
    /// Split requests between versions: VERSION=PERCENT,... summing to
    /// 100, e.g. 3=80,4=20.
    #[arg(long, value_parser = parse_weights)]
    weights: Option<std::collections::BTreeMap<u64, u32>>,
}

fn parse_weights(s: &str) -> Result<std::collections::BTreeMap<u64, u32>, String> {
    s.split(',')
        .map(|pair| {
            let (version, weight) = pair
                .split_once('=')
                .ok_or_else(|| format!("\"{pair}\" is not VERSION=PERCENT"))?;
            let version = version
                .trim()
                .parse()
                .map_err(|_| format!("\"{version}\" is not a version number"))?;
            let weight = weight
                .trim()
                .parse()
                .map_err(|_| format!("\"{weight}\" is not a percent"))?;
            Ok((version, weight))
        })
        .collect()
}

/// What a trigger serves, for the table.
fn target(spec: &HttpTriggerSpec) -> String {
    match (&spec.alias, spec.weights.is_empty()) {
        (Some(alias), _) => format!("{} (alias {alias})", spec.function),
        (None, false) => {
            let weights: Vec<String> = spec
                .weights
                .iter()
                .map(|(v, w)| format!("v{v} {w}%"))
                .collect();
            format!("{} ({})", spec.function, weights.join(", "))
        }
        (None, true) => spec.function.clone(),
    }
}

fn show(
    output: OutputFlag,
    triggers: &[Resource<HttpTriggerSpec>],
    single: bool,
) -> anyhow::Result<()> {
    let rows = || {
        triggers
            .iter()
            .map(|t| {
                vec![
                    t.metadata.name.clone(),
                    if t.spec.methods.is_empty() {
                        "*".into()
                    } else {
                        t.spec.methods.join(",")
                    },
                    t.spec.path.clone(),
                    t.spec.host.clone().unwrap_or_else(|| "*".into()),
                    target(&t.spec),
                ]
            })
            .collect()
    };
    let headers = ["NAME", "METHOD", "URL", "HOST", "FUNCTION"];
    print_resources(output.format, triggers, single, &headers, rows)
}

pub async fn run(args: HttpTriggerArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        HttpTriggerCommand::Create {
            name,
            url,
            methods,
            function,
            host,
            target,
            output,
        } => {
            let name = name.unwrap_or_else(|| {
                let suffix: u32 = rand::random();
                let mut base: String = function.chars().take(50).collect();
                base = base.trim_end_matches('-').to_string();
                format!("{base}-{:06x}", suffix & 0xff_ffff)
            });
            let trigger = Resource::new(
                name,
                HttpTriggerSpec {
                    methods,
                    path: url,
                    host,
                    function,
                    alias: target.alias,
                    weights: target.weights.unwrap_or_default(),
                },
            );
            let created = client.create_trigger(&trigger).await?;
            show(output, &[created], true)
        }
        HttpTriggerCommand::Get { name, output } => {
            let trigger = client.get_trigger(&name).await?;
            show(output, &[trigger], true)
        }
        HttpTriggerCommand::List { output } => {
            let triggers = client.list_triggers().await?;
            show(output, &triggers, false)
        }
        HttpTriggerCommand::Update {
            name,
            url,
            methods,
            function,
            host,
            target,
            latest,
            output,
        } => {
            let mut trigger = client.get_trigger(&name).await?;
            if latest {
                trigger.spec.alias = None;
                trigger.spec.weights.clear();
            }
            if let Some(alias) = target.alias {
                trigger.spec.alias = Some(alias);
                trigger.spec.weights.clear();
            }
            if let Some(weights) = target.weights {
                trigger.spec.weights = weights;
                trigger.spec.alias = None;
            }
            if let Some(url) = url {
                trigger.spec.path = url;
            }
            if !methods.is_empty() {
                trigger.spec.methods = methods;
            }
            if let Some(function) = function {
                trigger.spec.function = function;
            }
            if host.is_some() {
                trigger.spec.host = host;
            }
            let updated = client.update_trigger(&trigger).await?;
            show(output, &[updated], true)
        }
        HttpTriggerCommand::Delete { name } => {
            client.delete_trigger(&name).await?;
            println!("http trigger \"{name}\" deleted");
            Ok(())
        }
    }
}
