//! Moving newline-delimited JSON in and out of topics: `vigil produce` and `vigil consume`,
//! and the Kafka tests.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use vigil_actors::spec::KafkaSpec;

use crate::client::{self, REQUEST_TIMEOUT};
use crate::protocol::TRACEPARENT_HEADER;
use crate::sink::{send, ONE_RECORD_PER_BATCH, PRODUCER_DEFAULTS};
use crate::KafkaError;

/// A client configuration for `brokers` with nothing else set.
pub fn cluster(brokers: &str) -> KafkaSpec {
    KafkaSpec {
        brokers: brokers.to_owned(),
        group: "vigil-tools".into(),
        repartition_topic: String::new(),
        replication_factor: 1,
        instance_id: None,
        properties: Vec::new(),
        snapshot_dir: None,
        snapshot_interval: None,
    }
}

/// Produces each line as one record, keyed by the first of `key_fields` the line's JSON
/// object has (lines without one get no key), creating the topic with `partitions` if it does
/// not exist. Returns the records produced.
pub fn produce_lines<'a>(
    kafka: &KafkaSpec,
    topic: &str,
    partitions: i32,
    key_fields: &[&str],
    lines: impl IntoIterator<Item = &'a str>,
) -> Result<u64, KafkaError> {
    produce_traced(
        kafka,
        topic,
        partitions,
        key_fields,
        lines.into_iter().map(|line| (line, None)),
    )
}

/// [`produce_lines`], each line with the W3C `traceparent` header it should carry, if any.
pub fn produce_traced<'a>(
    kafka: &KafkaSpec,
    topic: &str,
    partitions: i32,
    key_fields: &[&str],
    lines: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Result<u64, KafkaError> {
    client::ensure_topic(kafka, topic, partitions, false)?;
    // One record per batch: the ingest tells a partition's end by its high watermark, which
    // tansu misreports after multi-record batches (see `sink::ONE_RECORD_PER_BATCH`).
    let producer: ThreadedProducer<DefaultProducerContext> =
        client::config(kafka, &[PRODUCER_DEFAULTS, ONE_RECORD_PER_BATCH].concat()).create()?;
    let mut produced = 0;
    for (line, traceparent) in lines {
        let key = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|value| {
                key_fields.iter().find_map(|f| match value.get(*f)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            });
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(line.as_bytes());
        if let Some(key) = &key {
            record = record.key(key.as_bytes());
        }
        if let Some(traceparent) = traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: TRACEPARENT_HEADER,
                value: Some(traceparent),
            }));
        }
        send(&producer, record)?;
        produced += 1;
    }
    producer.flush(Duration::from_secs(600))?;
    Ok(produced)
}

/// Every value in `topic`, partition by partition: read past each partition's high watermark
/// until nothing more arrives for `quiet` (tansu reports high watermarks below the end).
pub fn read_topic(
    kafka: &KafkaSpec,
    topic: &str,
    quiet: Duration,
) -> Result<Vec<String>, KafkaError> {
    Ok(read_traced(kafka, topic, quiet)?
        .into_iter()
        .map(|(value, _)| value)
        .collect())
}

/// [`read_topic`], with each record's `traceparent` header.
pub fn read_traced(
    kafka: &KafkaSpec,
    topic: &str,
    quiet: Duration,
) -> Result<Vec<(String, Option<String>)>, KafkaError> {
    let consumer: BaseConsumer = client::config(
        kafka,
        &[("group.id", "vigil-tools"), ("enable.auto.commit", "false")],
    )
    .create()?;
    let Some(partitions) = client::partitions(&consumer, topic)? else {
        return Ok(Vec::new());
    };
    let mut tpl = TopicPartitionList::new();
    let mut next = vec![0i64; partitions.max(0) as usize];
    let mut high = vec![0i64; partitions.max(0) as usize];
    for p in 0..partitions {
        let (low, end) = consumer.fetch_watermarks(topic, p, REQUEST_TIMEOUT)?;
        tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        next[p as usize] = low;
        high[p as usize] = end;
    }
    consumer.assign(&tpl)?;
    let mut values: Vec<Vec<(String, Option<String>)>> = vec![Vec::new(); next.len()];
    let started = std::time::Instant::now();
    loop {
        let behind = next.iter().zip(&high).any(|(n, h)| n < h);
        let wait = if behind { REQUEST_TIMEOUT } else { quiet };
        let Some(message) = consumer.poll(wait) else {
            if behind {
                return Err(KafkaError::Topology(format!(
                    "{topic}: nothing arrived in {:?} below the partitions' ends",
                    started.elapsed()
                )));
            }
            break;
        };
        let message = message?;
        let p = message.partition() as usize;
        if p >= next.len() || message.offset() < next[p] {
            continue;
        }
        next[p] = message.offset() + 1;
        if let Some(value) = message.payload() {
            let traceparent = message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|h| h.key == TRACEPARENT_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            values[p].push((String::from_utf8_lossy(value).into_owned(), traceparent));
        }
    }
    Ok(values.into_iter().flatten().collect())
}
