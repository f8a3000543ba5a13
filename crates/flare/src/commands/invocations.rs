//! `flare invocations ...`: asynchronous invocations and the dead letters.

use clap::{Args, Subcommand};
use flare_store::invocations::Invocation;

use super::ApiFlag;
use crate::output::{OutputFlag, print};

#[derive(Args, Debug)]
pub struct InvocationArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: InvocationCommand,
}

#[derive(Subcommand, Debug)]
enum InvocationCommand {
    /// List asynchronous invocations, newest first.
    List {
        /// Only the failed ones (retries exhausted): the dead letters.
        #[arg(long)]
        failed: bool,
        /// Only this status: queued, running, succeeded, failed.
        #[arg(long, conflicts_with = "failed")]
        status: Option<String>,
        #[arg(long)]
        function: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show one invocation with its result.
    Get {
        #[arg(long)]
        id: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Run a failed invocation's request again, as a new invocation; prints
    /// its id. The failed one stays as it was.
    Retry {
        #[arg(long)]
        id: String,
    },
}

fn rows(invocations: &[Invocation]) -> Vec<Vec<String>> {
    invocations
        .iter()
        .map(|i| {
            vec![
                i.request.id.clone(),
                i.request.function.clone(),
                i.status.as_str().to_string(),
                i.attempts.to_string(),
                i.result_status.map_or("-".into(), |s| s.to_string()),
                i.error.clone().unwrap_or_default(),
            ]
        })
        .collect()
}

const HEADERS: [&str; 6] = ["ID", "FUNCTION", "STATUS", "ATTEMPTS", "RESULT", "ERROR"];

pub async fn run(args: InvocationArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        InvocationCommand::List {
            failed,
            status,
            function,
            limit,
            output,
        } => {
            let status = if failed {
                Some("failed".to_string())
            } else {
                status
            };
            let list = client
                .list_invocations(status.as_deref(), function.as_deref(), limit)
                .await?;
            print(output.format, &list, &HEADERS, || rows(&list))
        }
        InvocationCommand::Get { id, output } => {
            let invocation = client.get_invocation(&id).await?;
            print(output.format, &invocation, &HEADERS, || {
                rows(std::slice::from_ref(&invocation))
            })
        }
        InvocationCommand::Retry { id } => {
            let retried = client.retry_invocation(&id).await?;
            println!("{retried}");
            Ok(())
        }
    }
}
