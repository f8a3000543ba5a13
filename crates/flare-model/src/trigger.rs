//! The `HttpTrigger` resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Cron, Error, Kind, PathPattern, Result, Spec, parse_timezone, validate_name};

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// Routes requests matching methods + path (+ host) to a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpTriggerSpec {
    /// Upper-case methods; empty means every method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// A [`PathPattern`], e.g. `/greet/{name}`.
    pub path: String,
    /// Only requests for this host (the `Host` header, port ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub function: String,
    /// Serve the version this alias of the function names, not its latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Split requests between versions of the function: version to
    /// percent, summing to 100. Empty: its latest version.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub weights: BTreeMap<u64, u32>,
}

impl HttpTriggerSpec {
    pub fn pattern(&self) -> Result<PathPattern> {
        PathPattern::parse(&self.path)
    }

    pub fn allows_method(&self, method: &str) -> bool {
        self.methods.is_empty() || self.methods.iter().any(|m| m == method)
    }

    /// Whether two triggers would both claim some request.
    pub fn overlaps(&self, other: &HttpTriggerSpec) -> bool {
        let same_host = match (&self.host, &other.host) {
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            (None, None) => true,
            _ => false,
        };
        let methods_meet = self.methods.is_empty()
            || other.methods.is_empty()
            || self.methods.iter().any(|m| other.methods.contains(m));
        let same_shape = match (self.pattern(), other.pattern()) {
            (Ok(a), Ok(b)) => a.shape() == b.shape(),
            _ => false,
        };
        same_host && methods_meet && same_shape
    }
}

impl Spec for HttpTriggerSpec {
    const KIND: Kind = Kind::HttpTrigger;

    fn validate(&self) -> Result<()> {
        self.pattern()?;
        validate_name("function name", &self.function)?;
        for method in &self.methods {
            if !METHODS.contains(&method.as_str()) {
                return Err(Error::invalid(format!(
                    "unknown HTTP method \"{method}\" (use one of {})",
                    METHODS.join(", ")
                )));
            }
        }
        check_target(self.alias.as_deref(), &self.weights)?;
        if let Some(host) = &self.host {
            let valid = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !valid {
                return Err(Error::invalid(format!("invalid host \"{host}\"")));
            }
        }
        Ok(())
    }
}

/// At most this many versions share a route.
pub const MAX_WEIGHTED_VERSIONS: usize = 10;

/// A route names an alias or weighted versions, not both; weights are
/// versions (from 1) to percents summing to 100.
fn check_target(alias: Option<&str>, weights: &BTreeMap<u64, u32>) -> Result<()> {
    if let Some(alias) = alias {
        validate_name("alias name", alias)?;
        if !weights.is_empty() {
            return Err(Error::invalid(
                "a trigger names an alias or weighted versions, not both",
            ));
        }
    }
    if weights.is_empty() {
        return Ok(());
    }
    if weights.len() > MAX_WEIGHTED_VERSIONS {
        return Err(Error::invalid(format!(
            "at most {MAX_WEIGHTED_VERSIONS} versions share a route"
        )));
    }
    if weights.contains_key(&0) {
        return Err(Error::invalid("versions start at 1"));
    }
    let sum: u64 = weights.values().map(|&w| u64::from(w)).sum();
    if sum != 100 {
        let shown: Vec<String> = weights.iter().map(|(v, w)| format!("{v}={w}")).collect();
        return Err(Error::invalid(format!(
            "weights must sum to 100, not {sum} ({})",
            shown.join(",")
        )));
    }
    Ok(())
}

/// A name for one version of a function: `prod` -> version 3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AliasSpec {
    pub function: String,
    pub version: u64,
}

impl Spec for AliasSpec {
    const KIND: Kind = Kind::Alias;

    fn validate(&self) -> Result<()> {
        validate_name("function name", &self.function)?;
        if self.version == 0 {
            return Err(Error::invalid("versions start at 1"));
        }
        Ok(())
    }
}

/// Runs a function on a cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerTriggerSpec {
    /// 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds
    /// first).
    pub cron: String,
    /// IANA time zone the schedule is read in; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub function: String,
}

impl TimerTriggerSpec {
    pub fn schedule(&self) -> Result<(Cron, chrono_tz::Tz)> {
        Ok((
            self.cron.parse()?,
            parse_timezone(self.timezone.as_deref())?,
        ))
    }
}

impl Spec for TimerTriggerSpec {
    const KIND: Kind = Kind::TimerTrigger;

    fn validate(&self) -> Result<()> {
        self.schedule()?;
        validate_name("function name", &self.function)
    }
}

/// The brokers a message-queue trigger can consume from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MqKind {
    /// NATS JetStream: a durable pull consumer on a stream.
    Nats,
    /// Redis Streams: a consumer group.
    Redis,
    /// MQTT 3.1.1, QoS 1, a persistent session.
    Mqtt,
    /// AMQP 0.9.1 (RabbitMQ): a durable queue, manual acks.
    Amqp,
    /// Kafka: a consumer group, offsets committed after each message.
    Kafka,
}

impl MqKind {
    pub fn default_broker(self) -> &'static str {
        match self {
            MqKind::Nats => "nats://127.0.0.1:4222",
            MqKind::Redis => "redis://127.0.0.1:6379",
            MqKind::Mqtt => "mqtt://127.0.0.1:1883",
            MqKind::Amqp => "amqp://127.0.0.1:5672/%2f",
            MqKind::Kafka => "kafka://127.0.0.1:9092",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MqKind::Nats => "nats",
            MqKind::Redis => "redis",
            MqKind::Mqtt => "mqtt",
            MqKind::Amqp => "amqp",
            MqKind::Kafka => "kafka",
        }
    }
}

/// Runs a function for every message on a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueueTriggerSpec {
    pub mqtype: MqKind,
    /// NATS: a subject; MQTT: a topic filter (wildcards allowed for both);
    /// Redis: a stream key; AMQP: a queue; Kafka: a topic.
    pub topic: String,
    /// Where a successful response body is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resptopic: Option<String>,
    /// Where a message that failed every retry is published (dead letter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errortopic: Option<String>,
    #[serde(default = "default_retries")]
    pub maxretries: u32,
    /// Messages with the same key (NATS subject, Kafka partition, AMQP
    /// routing key, MQTT topic, Redis stream) are processed one at a time, in
    /// order; different keys run side by side.
    #[serde(default)]
    pub ordered: bool,
    /// Messages in flight at once (across keys when ordered).
    #[serde(default = "default_mq_concurrency")]
    pub concurrency: u32,
    /// Broker URL; default: the local one for the type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    pub function: String,
}

/// Whether NATS `pattern` (with `*` for one token and `>` for the rest)
/// matches `subject`.
fn nats_subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for token in pattern.split('.') {
        match (token, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (t, Some(s)) if t == s => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

/// Whether MQTT filter `filter` (`+` one level, `#` the rest) matches `topic`.
fn mqtt_topic_matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (p, Some(l)) if p == l => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

fn default_retries() -> u32 {
    3
}

fn default_mq_concurrency() -> u32 {
    8
}

impl MessageQueueTriggerSpec {
    pub fn broker_url(&self) -> &str {
        self.broker
            .as_deref()
            .unwrap_or(self.mqtype.default_broker())
    }
}

impl Spec for MessageQueueTriggerSpec {
    const KIND: Kind = Kind::MessageQueueTrigger;

    fn validate(&self) -> Result<()> {
        validate_name("function name", &self.function)?;
        let topic_ok = |t: &str| {
            !t.is_empty()
                && t.len() <= 255
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        for (what, topic) in [
            ("topic", Some(&self.topic)),
            ("resptopic", self.resptopic.as_ref()),
            ("errortopic", self.errortopic.as_ref()),
        ] {
            if let Some(topic) = topic
                && !topic_ok(topic)
            {
                return Err(Error::invalid(format!(
                    "invalid {what} \"{topic}\": use 1-255 characters without spaces"
                )));
            }
        }
        for out in [&self.resptopic, &self.errortopic].into_iter().flatten() {
            let loops = match self.mqtype {
                MqKind::Nats => nats_subject_matches(&self.topic, out),
                MqKind::Redis | MqKind::Amqp | MqKind::Kafka => *out == self.topic,
                MqKind::Mqtt => mqtt_topic_matches(&self.topic, out),
            };
            if loops {
                return Err(Error::invalid(format!(
                    "\"{out}\" is also consumed by the topic \"{}\": the trigger would loop on its own output",
                    self.topic
                )));
            }
        }
        if self.maxretries > 100 {
            return Err(Error::invalid("maxretries is over 100"));
        }
        if !(1..=1000).contains(&self.concurrency) {
            return Err(Error::invalid("concurrency must be 1..=1000"));
        }
        let scheme = match self.mqtype {
            MqKind::Nats => "nats://",
            MqKind::Redis => "redis://",
            MqKind::Mqtt => "mqtt://",
            MqKind::Amqp => "amqp://",
            MqKind::Kafka => "kafka://",
        };
        if !self.broker_url().starts_with(scheme) {
            return Err(Error::invalid(format!(
                "broker URL \"{}\" for {} must start with {scheme}",
                self.broker_url(),
                self.mqtype.as_str()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(methods: &[&str], path: &str) -> HttpTriggerSpec {
        HttpTriggerSpec {
            methods: methods.iter().map(|m| m.to_string()).collect(),
            path: path.into(),
            host: None,
            function: "hello".into(),
            alias: None,
            weights: BTreeMap::new(),
        }
    }

    #[test]
    fn a_route_names_an_alias_or_weights_that_sum_to_100() {
        let mut route = t(&["GET"], "/a");
        route.weights = BTreeMap::from([(3, 80), (4, 20)]);
        assert!(route.validate().is_ok());
        route.weights.insert(4, 30);
        let e = route.validate().unwrap_err();
        assert!(
            e.message
                .contains("weights must sum to 100, not 110 (3=80,4=30)"),
            "{e:?}"
        );
        route.weights = BTreeMap::from([(0, 100)]);
        assert!(
            route
                .validate()
                .unwrap_err()
                .message
                .contains("versions start at 1")
        );
        route.weights = BTreeMap::from([(1, 100)]);
        route.alias = Some("prod".into());
        assert!(route.validate().unwrap_err().message.contains("not both"));
        route.weights.clear();
        assert!(route.validate().is_ok());
        route.alias = Some("Prod!".into());
        assert!(route.validate().is_err());
    }

    #[test]
    fn mqtt_wildcards() {
        assert!(mqtt_topic_matches("a/#", "a/b/c"));
        assert!(mqtt_topic_matches("a/+/c", "a/b/c"));
        assert!(!mqtt_topic_matches("a/+", "a/b/c"));
        assert!(mqtt_topic_matches("a/b", "a/b"));
    }

    #[test]
    fn nats_wildcards() {
        assert!(nats_subject_matches("a.>", "a.b.c"));
        assert!(nats_subject_matches("a.*.c", "a.b.c"));
        assert!(!nats_subject_matches("a.*", "a.b.c"));
        assert!(!nats_subject_matches("a.>", "a"));
        assert!(nats_subject_matches("a.b", "a.b"));
        assert!(!nats_subject_matches("a.b", "a.c"));
    }

    #[test]
    fn overlap_needs_same_shape_host_and_a_shared_method() {
        assert!(t(&["GET"], "/u/{id}").overlaps(&t(&["GET"], "/u/{name}")));
        assert!(t(&[], "/u/{id}").overlaps(&t(&["POST"], "/u/{x}")));
        assert!(!t(&["GET"], "/u/{id}").overlaps(&t(&["POST"], "/u/{id}")));
        assert!(!t(&["GET"], "/u/{id}").overlaps(&t(&["GET"], "/u/me")));
        let mut other_host = t(&["GET"], "/u/{id}");
        other_host.host = Some("api.example.com".into());
        assert!(!t(&["GET"], "/u/{id}").overlaps(&other_host));
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(
            t(&["FETCH"], "/a")
                .validate()
                .unwrap_err()
                .message
                .contains("FETCH")
        );
        assert!(
            t(&["GET"], "a")
                .validate()
                .unwrap_err()
                .message
                .contains("URL pattern")
        );
        let mut bad_fn = t(&["GET"], "/a");
        bad_fn.function = "Bad_Name".into();
        assert!(
            bad_fn
                .validate()
                .unwrap_err()
                .message
                .contains("function name")
        );
        t(&["GET", "POST"], "/a/{b}").validate().unwrap();
    }
}
