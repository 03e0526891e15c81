//! librdkafka clients configured from the topology's `[kafka]` section, and the topics the
//! job owns.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use vigil_actors::spec::KafkaSpec;

use crate::KafkaError;

/// How long metadata and admin requests may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Eager rebalancing for both consumer groups: every rebalance revokes all partitions and
/// assigns all in one round. A cooperative rebalance that moves a partition needs a second
/// round to assign it, and a broker that never completes that round leaves the partition
/// unowned (seen with tansu). `partition.assignment.strategy = "cooperative-sticky"` in
/// `[kafka.properties]` switches to incremental rebalancing; the node handles both.
pub const ASSIGNMENT_STRATEGY: (&str, &str) = ("partition.assignment.strategy", "roundrobin");

/// A client configuration: the brokers, then the topology's `[kafka.properties]` (SASL, TLS,
/// timeouts), which may override anything Vigil sets.
pub fn config(kafka: &KafkaSpec, vigil_defaults: &[(&str, &str)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in vigil_defaults {
        config.set(*key, *value);
    }
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// The number of partitions of `topic`, `None` if it does not exist, asked through any
/// consumer of the cluster.
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
) -> Result<Option<i32>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Every topic of the cluster whose name `pattern` matches, with its partition count.
pub fn topics_matching<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    pattern: &regex::Regex,
) -> Result<Vec<(String, i32)>, KafkaError> {
    let metadata = consumer.fetch_metadata(None, REQUEST_TIMEOUT)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| pattern.is_match(t.name()) && t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().len() as i32))
        .collect())
}

/// Makes sure `topic` exists; creates it with `partitions` partitions if not. With
/// `exact`, an existing topic must have exactly that many (the repartition topic: its
/// partitions are the shards).
pub fn ensure_topic(
    kafka: &KafkaSpec,
    topic: &str,
    partitions: i32,
    exact: bool,
) -> Result<i32, KafkaError> {
    let metadata: BaseConsumer = config(kafka, &[]).create()?;
    if let Some(found) = self::partitions(&metadata, topic)? {
        if exact && found != partitions {
            return Err(KafkaError::Topology(format!(
                "topic `{topic}` has {found} partitions, but the job has {partitions} shards; \
                 its partitions are the shards: delete it or set `shards = {found}`"
            )));
        }
        return Ok(found);
    }
    let admin: AdminClient<DefaultClientContext> = config(kafka, &[]).create()?;
    let new = NewTopic::new(
        topic,
        partitions,
        TopicReplication::Fixed(kafka.replication_factor),
    );
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics([&new], &options))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Topology(format!(
                    "cannot create topic `{name}`: {code}"
                )))
            }
        }
    }
    // Metadata catches up with a new topic after a moment.
    for _ in 0..100 {
        if let Some(found) = self::partitions(&metadata, topic)? {
            return Ok(found);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(KafkaError::Topology(format!(
        "topic `{topic}` was created but does not show in the cluster's metadata"
    )))
}

/// librdkafka's log lines, through `tracing` (target `librdkafka`).
pub fn log(level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
    use rdkafka::config::RDKafkaLogLevel::*;
    match level {
        Emerg | Alert | Critical | Error => {
            tracing::error!(target: "librdkafka", facility, "{message}")
        }
        Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        Notice | Info => tracing::info!(target: "librdkafka", facility, "{message}"),
        Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}
