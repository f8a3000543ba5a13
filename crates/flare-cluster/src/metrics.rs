//! A function's recent metric points from every node, so that its charts
//! show the cluster rather than the node that was asked. Every node
//! answers requests on [`SUBJECT`] with its own points of the function the
//! request names; the asking node gathers the answers of the live nodes
//! (its own included) and adds them up. Points stay in each node's memory:
//! nothing is written to NATS but the question and the answers.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

const SUBJECT: &str = "flare.metrics";
/// How long the asking node waits for the others' answers.
pub const GATHER: Duration = Duration::from_secs(1);

/// One node's side of the exchange: it answers while this lives.
pub struct MetricsExchange {
    client: async_nats::Client,
    answering: tokio::task::JoinHandle<()>,
}

impl Drop for MetricsExchange {
    fn drop(&mut self) {
        self.answering.abort();
    }
}

impl MetricsExchange {
    /// Answers every node's requests with `points(function)`, this node's
    /// points of that function, encoded.
    pub async fn new(
        client: async_nats::Client,
        points: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static,
    ) -> Result<MetricsExchange, String> {
        let mut requests = client
            .subscribe(SUBJECT)
            .await
            .map_err(|e| format!("cannot subscribe to {SUBJECT}: {e}"))?;
        let answerer = client.clone();
        let answering = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let (Some(reply), Ok(function)) =
                    (request.reply, std::str::from_utf8(&request.payload))
                else {
                    continue;
                };
                if let Err(e) = answerer.publish(reply, points(function).into()).await {
                    tracing::debug!("cannot answer a metrics request: {e}");
                }
            }
        });
        Ok(MetricsExchange { client, answering })
    }

    /// The answers about `function` of up to `nodes` nodes (this one's
    /// included), as many as came within [`GATHER`].
    pub async fn gather(&self, function: &str, nodes: usize) -> Result<Vec<Bytes>, String> {
        let inbox = self.client.new_inbox();
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("cannot subscribe to {inbox}: {e}"))?;
        self.client
            .publish_with_reply(SUBJECT, inbox, function.to_string().into())
            .await
            .map_err(|e| format!("cannot ask the nodes for metrics: {e}"))?;
        let deadline = tokio::time::Instant::now() + GATHER;
        let mut got = Vec::new();
        while got.len() < nodes {
            match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(answer)) => got.push(answer.payload),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(got)
    }
}
