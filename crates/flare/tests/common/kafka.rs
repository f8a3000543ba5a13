//! Kafka for the tests: librdkafka's mock cluster, in the test's process,
//! on loopback.
#![allow(dead_code)]

use std::time::Duration;

/// librdkafka's built-in mock cluster on loopback, with a producer and
/// readers for the tests.
pub type MockCluster =
    rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

pub struct Kafka {
    runtime: tokio::runtime::Runtime,
    brokers: String,
    producer: rdkafka::producer::FutureProducer,
}

impl Kafka {
    /// A cluster with these topics and partition counts, and a client of it.
    /// The cluster lives as long as the first value is held (it is not
    /// `Sync`, so it cannot sit in the client that producer threads share).
    pub fn start(topics: &[(&str, i32)]) -> (MockCluster, Kafka) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cluster = {
            let _context = runtime.enter();
            rdkafka::mocking::MockCluster::new(1).unwrap()
        };
        for (topic, partitions) in topics {
            cluster.create_topic(topic, *partitions, 1).unwrap();
        }
        let brokers = cluster.bootstrap_servers();
        let producer = {
            let _context = runtime.enter();
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap()
        };
        let kafka = Kafka {
            runtime,
            brokers,
            producer,
        };
        (cluster, kafka)
    }

    /// The broker URL for `--broker`.
    pub fn url(&self) -> String {
        format!("kafka://{}", self.brokers)
    }

    /// Produces `text` to `topic` with `key` (to `partition`, if given).
    pub fn send(&self, topic: &str, key: &str, partition: Option<i32>, text: &str) {
        self.send_with_headers(topic, key, partition, &[], text);
    }

    /// [`Kafka::send`] with these record headers.
    pub fn send_with_headers(
        &self,
        topic: &str,
        key: &str,
        partition: Option<i32>,
        headers: &[(&str, &str)],
        text: &str,
    ) {
        let mut owned = rdkafka::message::OwnedHeaders::new();
        for (name, value) in headers {
            owned = owned.insert(rdkafka::message::Header {
                key: name,
                value: Some(*value),
            });
        }
        let mut record = rdkafka::producer::FutureRecord::to(topic)
            .key(key)
            .payload(text)
            .headers(owned);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        self.runtime.block_on(async {
            self.producer
                .send(record, Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        });
    }

    /// A consumer of `topic` from its start, in its own group.
    pub fn reader(&self, group: &str, topic: &str) -> rdkafka::consumer::StreamConsumer {
        use rdkafka::consumer::Consumer;
        let _context = self.runtime.enter();
        let consumer: rdkafka::consumer::StreamConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }

    /// The next `count` payloads `consumer` gets, as text.
    pub fn read(&self, consumer: &rdkafka::consumer::StreamConsumer, count: usize) -> Vec<String> {
        use rdkafka::message::Message as _;
        self.runtime.block_on(async {
            let mut got = Vec::new();
            while got.len() < count {
                let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
                    .await
                    .expect("a message arrives")
                    .unwrap();
                got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
            }
            got
        })
    }
}
