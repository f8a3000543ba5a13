//! Publishes N messages to a NATS JetStream subject and times until all
//! their answers arrive on the response subject (run by
//! bench/mq-throughput.sh against a Flare server with a NATS trigger).
//!
//!   mq_bench SUBJECT RESPONSE_SUBJECT N
//!
//!   mq_bench --cleanup      (after the trigger is gone: drop its stream)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--cleanup") {
        return cleanup().await;
    }
    let (subject, response, n) = (&args[1], &args[2], args[3].parse::<usize>().unwrap());
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut answers = client.subscribe(response.clone()).await.unwrap();
    client.flush().await.unwrap();
    let started = Instant::now();
    let publish = async {
        let mut acks = futures::stream::FuturesUnordered::new();
        for i in 0..n {
            acks.push(std::future::IntoFuture::into_future(
                js.publish(subject.clone(), format!("m{i}").into())
                    .await
                    .unwrap(),
            ));
            // Keep a bounded number of publish acks outstanding.
            while acks.len() >= 1024 {
                acks.next().await.unwrap().unwrap();
            }
        }
        while let Some(ack) = acks.next().await {
            ack.unwrap();
        }
        started.elapsed()
    };
    let receive = async {
        let mut received = 0;
        while received < n {
            match tokio::time::timeout(Duration::from_secs(60), answers.next()).await {
                Ok(Some(_)) => received += 1,
                _ => break,
            }
        }
        (received, started.elapsed())
    };
    let (published, (received, elapsed)) = tokio::join!(publish, receive);
    println!(
        "  published {n} messages in {:.2} s",
        published.as_secs_f64()
    );
    println!(
        "  {received}/{n} answers in {:.2} s: {:.0} messages/s end to end (target >= 10,000/s)",
        elapsed.as_secs_f64(),
        received as f64 / elapsed.as_secs_f64()
    );
}

/// Deletes the streams Flare created for benchmark triggers, so repeated
/// runs do not pile up messages in JetStream.
async fn cleanup() {
    let client = async_nats::connect("nats://127.0.0.1:4222").await.unwrap();
    let js = async_nats::jetstream::new(client);
    let names: Vec<String> = js
        .stream_names()
        .filter_map(|name| async move { name.ok() })
        .collect()
        .await;
    for name in names.iter().filter(|n| n.starts_with("FLARE_BENCH")) {
        js.delete_stream(name).await.unwrap();
    }
}
