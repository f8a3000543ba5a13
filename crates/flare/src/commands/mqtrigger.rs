//! `flare mqtrigger ...` (alias `mqt`)

use clap::{Args, Subcommand, ValueEnum};
use flare_api::MqTriggerView;
use flare_model::{MessageQueueTriggerSpec, MqKind, Resource};

use super::ApiFlag;
use crate::output::{OutputFlag, print_resources};

#[derive(Args, Debug)]
pub struct MqTriggerArgs {
    #[command(flatten)]
    api: ApiFlag,
    #[command(subcommand)]
    command: MqTriggerCommand,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum MqType {
    Nats,
    Redis,
    Mqtt,
    Amqp,
    Kafka,
}

#[derive(Subcommand, Debug)]
enum MqTriggerCommand {
    /// Run a function for every message on a topic.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        function: String,
        /// nats (JetStream), redis (Streams), mqtt (3.1.1, QoS 1), amqp
        /// (RabbitMQ) or kafka.
        #[arg(long, value_enum)]
        mqtype: MqType,
        /// NATS subject or MQTT topic filter (wildcards allowed), Redis
        /// stream, AMQP queue or Kafka topic.
        #[arg(long)]
        topic: String,
        /// Where successful responses are published.
        #[arg(long)]
        resptopic: Option<String>,
        /// Where messages go after their last failed retry.
        #[arg(long)]
        errortopic: Option<String>,
        #[arg(long, default_value_t = 3)]
        maxretries: u32,
        /// Handle messages with the same key (NATS subject, Kafka partition,
        /// AMQP routing key, MQTT topic, Redis stream) one at a time, in
        /// order; different keys still run side by side.
        #[arg(long)]
        ordered: bool,
        /// Messages in flight at once (across keys when ordered).
        #[arg(long, default_value_t = 8)]
        concurrency: u32,
        /// Broker URL. [default: nats://127.0.0.1:4222, redis://127.0.0.1:6379,
        /// mqtt://127.0.0.1:1883, amqp://127.0.0.1:5672/%2f,
        /// kafka://127.0.0.1:9092]
        #[arg(long)]
        broker: Option<String>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Show a trigger and its connection status.
    Get {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List message-queue triggers.
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Delete a trigger.
    Delete {
        #[arg(long)]
        name: String,
    },
}

fn show(output: OutputFlag, triggers: &[MqTriggerView], single: bool) -> anyhow::Result<()> {
    let rows = || {
        triggers
            .iter()
            .map(|v| {
                let t = &v.trigger.spec;
                let status = match &v.status {
                    Some(s) if s.connected => {
                        format!("connected ({} done, {} failed)", s.processed, s.failed)
                    }
                    Some(s) => format!(
                        "disconnected: {}",
                        s.error.as_deref().unwrap_or("connecting")
                    ),
                    None => "-".into(),
                };
                vec![
                    v.trigger.metadata.name.clone(),
                    t.mqtype.as_str().to_string(),
                    t.topic.clone(),
                    t.resptopic.clone().unwrap_or_default(),
                    t.errortopic.clone().unwrap_or_default(),
                    t.function.clone(),
                    status,
                ]
            })
            .collect()
    };
    let headers = [
        "NAME",
        "TYPE",
        "TOPIC",
        "RESPTOPIC",
        "ERRORTOPIC",
        "FUNCTION",
        "STATUS",
    ];
    print_resources(output.format, triggers, single, &headers, rows)
}

pub async fn run(args: MqTriggerArgs) -> anyhow::Result<()> {
    let client = args.api.client()?;
    match args.command {
        MqTriggerCommand::Create {
            name,
            function,
            mqtype,
            topic,
            resptopic,
            errortopic,
            maxretries,
            ordered,
            concurrency,
            broker,
            output,
        } => {
            let trigger = Resource::new(
                name,
                MessageQueueTriggerSpec {
                    mqtype: match mqtype {
                        MqType::Nats => MqKind::Nats,
                        MqType::Redis => MqKind::Redis,
                        MqType::Mqtt => MqKind::Mqtt,
                        MqType::Amqp => MqKind::Amqp,
                        MqType::Kafka => MqKind::Kafka,
                    },
                    topic,
                    resptopic,
                    errortopic,
                    maxretries,
                    ordered,
                    concurrency,
                    broker,
                    function,
                },
            );
            let created = client.create_mq(&trigger).await?;
            show(output, &[created], true)
        }
        MqTriggerCommand::Get { name, output } => {
            let trigger = client.get_mq(&name).await?;
            show(output, &[trigger], true)
        }
        MqTriggerCommand::List { output } => {
            let triggers = client.list_mq().await?;
            show(output, &triggers, false)
        }
        MqTriggerCommand::Delete { name } => {
            client.delete_mq(&name).await?;
            println!("message queue trigger \"{name}\" deleted");
            Ok(())
        }
    }
}
