//! `flare timetrigger ...` (alias `tt`)

use chrono::{SecondsFormat, Utc};
use clap::{Args, Subcommand};
use flare_model::{Cron, Resource, TimerTriggerSpec, parse_timezone};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct TimeTriggerArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: TimeTriggerCommand,
}

#[derive(Subcommand, Debug)]
enum TimeTriggerCommand {
    /// Run a function on a cron schedule.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        function: String,
        /// "*/30 * * * *" (minute hour day-of-month month day-of-week), or
        /// 6 fields with seconds first.
        #[arg(long)]
        cron: String,
        /// IANA time zone the schedule is read in. [default: UTC]
        #[arg(long)]
        timezone: Option<String>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a timer trigger and its next firings.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List timer triggers.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Change a timer trigger; what is not given is kept.
    Update {
        #[arg(long)]
        name: String,
        #[arg(long)]
        function: Option<String>,
        #[arg(long)]
        cron: Option<String>,
        #[arg(long)]
        timezone: Option<String>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete a timer trigger.
    Delete {
        #[arg(long)]
        name: String,
    },
    /// Print the next times a cron expression fires (no server needed).
    Showschedule {
        #[arg(long)]
        cron: String,
        #[arg(long)]
        timezone: Option<String>,
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

fn next_runs(cron: &str, timezone: Option<&str>, count: usize) -> anyhow::Result<Vec<String>> {
    let cron: Cron = cron.parse()?;
    let tz = parse_timezone(timezone)?;
    let mut at = Utc::now();
    let mut runs = Vec::new();
    for _ in 0..count {
        match cron.next_after(at, tz) {
            Some(next) => {
                runs.push(
                    next.with_timezone(&tz)
                        .to_rfc3339_opts(SecondsFormat::Secs, true),
                );
                at = next;
            }
            None => break,
        }
    }
    Ok(runs)
}

fn show(
    output: OutputFlag,
    triggers: &[Resource<TimerTriggerSpec>],
    single: bool,
) -> anyhow::Result<()> {
    let rows = || {
        triggers
            .iter()
            .map(|t| {
                let next = next_runs(&t.spec.cron, t.spec.timezone.as_deref(), 1)
                    .ok()
                    .and_then(|runs| runs.into_iter().next())
                    .unwrap_or_else(|| "never".into());
                vec![
                    t.metadata.name.clone(),
                    t.spec.cron.clone(),
                    t.spec.timezone.clone().unwrap_or_else(|| "UTC".into()),
                    t.spec.function.clone(),
                    next,
                ]
            })
            .collect()
    };
    let headers = ["NAME", "CRON", "TIMEZONE", "FUNCTION", "NEXT"];
    print_resources(output.format, triggers, single, &headers, rows)
}

pub async fn run(args: TimeTriggerArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        TimeTriggerCommand::Create {
            name,
            function,
            cron,
            timezone,
            output,
        } => {
            let trigger = Resource::new(
                name,
                TimerTriggerSpec {
                    cron,
                    timezone,
                    function,
                },
            );
            // Refuse a bad expression before reaching the server.
            trigger.spec.schedule()?;
            let created = client.create_timer(&trigger).await?;
            show(output, &[created], true)
        }
        TimeTriggerCommand::Get { name, output } => {
            let trigger = client.get_timer(&name).await?;
            show(output, &[trigger], true)
        }
        TimeTriggerCommand::List { output } => {
            let triggers = client.list_timers().await?;
            show(output, &triggers, false)
        }
        TimeTriggerCommand::Update {
            name,
            function,
            cron,
            timezone,
            output,
        } => {
            let mut trigger = client.get_timer(&name).await?;
            if let Some(function) = function {
                trigger.spec.function = function;
            }
            if let Some(cron) = cron {
                trigger.spec.cron = cron;
            }
            if timezone.is_some() {
                trigger.spec.timezone = timezone;
            }
            trigger.spec.schedule()?;
            let updated = client.update_timer(&trigger).await?;
            show(output, &[updated], true)
        }
        TimeTriggerCommand::Delete { name } => {
            client.delete_timer(&name).await?;
            println!("timer trigger \"{name}\" deleted");
            Ok(())
        }
        TimeTriggerCommand::Showschedule {
            cron,
            timezone,
            count,
        } => {
            let runs = next_runs(&cron, timezone.as_deref(), count)?;
            if runs.is_empty() {
                println!("\"{cron}\" never fires");
            }
            for run in runs {
                println!("{run}");
            }
            Ok(())
        }
    }
}
