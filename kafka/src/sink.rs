//! The Kafka sink: records produced by an idempotent producer, exactly once across crashes
//! and rebalances without Kafka transactions.
//!
//! Shard `s` writes to partition `s % partitions` of the topic, in sequence order. At a
//! checkpoint the shard flushes the producer (every record up to its checkpoint is
//! acknowledged) and keeps, as its mark, the offset of its last acknowledged record. Whoever
//! takes the shard over later (this process after a crash, another node after a rebalance)
//! reads the partition back from that mark to its end and learns the highest sequence of the
//! shard already there; replaying from the checkpoint regenerates the same records with the
//! same sequences, and those are not produced again.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError as RdKafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use vigil_actors::record::{json_escaped, RecordId};
use vigil_actors::sink::Sink;
use vigil_actors::spec::KafkaSpec;

use crate::client::{self, REQUEST_TIMEOUT};
use crate::KafkaError;

/// Acknowledgements from the broker: the last offset per shard, and the first failure.
#[derive(Default)]
pub struct Acks {
    last_offset: Mutex<HashMap<u32, i64>>,
    failure: Mutex<Option<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<u32>;

    fn delivery(&self, result: &DeliveryResult<'_>, shard: Box<u32>) {
        match result {
            Ok(message) => {
                let mut last = self.last_offset.lock().expect("not poisoned");
                let offset = last.entry(*shard).or_insert(message.offset());
                *offset = (*offset).max(message.offset());
            }
            Err((error, _)) => {
                self.failure
                    .lock()
                    .expect("not poisoned")
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// The idempotent producer settings every Vigil producer uses.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("linger.ms", "5"),
    ("message.timeout.ms", "120000"),
];

/// Output records go one per batch. Reading a shard's outputs back relies on the partition's
/// high watermark, and tansu (0.6) reports it as the last *batch's* base offset + 1: with
/// several records per batch, the last ones would not be seen. Outputs are few compared with
/// inputs, so this costs little; `[kafka.properties]` can override it on other brokers.
pub const ONE_RECORD_PER_BATCH: &[(&str, &str)] = &[("batch.num.messages", "1")];

/// Sends a record, waiting while the producer's queue is full.
pub fn send<C: ProducerContext>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> io::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((RdKafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(2));
            }
            Err((e, _)) => return Err(io::Error::other(format!("produce: {e}"))),
        }
    }
}

pub struct KafkaSink {
    name: String,
    topic: String,
    /// The job name as it appears in record ids.
    job: String,
    partitions: i32,
    kafka: KafkaSpec,
    producer: ThreadedProducer<Acks>,
    /// Highest sequence per shard the topic holds (read back) or was given.
    delivered: Mutex<HashMap<u32, u64>>,
    /// Offsets of the last record per shard found when reading back.
    restored_marks: Mutex<HashMap<u32, i64>>,
    /// The consumer that reads partitions back, made on first use.
    reader: Mutex<Option<BaseConsumer>>,
    written: AtomicU64,
}

impl KafkaSink {
    /// Opens the sink, creating the topic with `shards` partitions if it does not exist.
    pub fn open(
        name: &str,
        topic: &str,
        job: &str,
        shards: u32,
        kafka: &KafkaSpec,
    ) -> Result<KafkaSink, KafkaError> {
        let partitions = client::ensure_topic(kafka, topic, shards as i32, false)?;
        Ok(KafkaSink {
            name: name.to_owned(),
            topic: topic.to_owned(),
            job: json_escaped(job),
            partitions,
            kafka: kafka.clone(),
            producer: client::config(kafka, &[PRODUCER_DEFAULTS, ONE_RECORD_PER_BATCH].concat())
                .create_with_context(Acks::default())?,
            delivered: Mutex::new(HashMap::new()),
            restored_marks: Mutex::new(HashMap::new()),
            reader: Mutex::new(None),
            written: AtomicU64::new(0),
        })
    }

    fn partition_of(&self, shard: u32) -> i32 {
        (shard % self.partitions as u32) as i32
    }

    /// Reads the shard's partition from `from` to its end: the highest sequence of `shard`
    /// and the offset of its record.
    fn read_back(&self, shard: u32, from: i64) -> Result<Option<(u64, i64)>, KafkaError> {
        let partition = self.partition_of(shard);
        let mut reader = self.reader.lock().expect("not poisoned");
        if reader.is_none() {
            *reader = Some(
                client::config(
                    &self.kafka,
                    &[
                        ("group.id", "vigil-read-back"),
                        ("enable.auto.commit", "false"),
                        ("enable.partition.eof", "false"),
                        // Reading back is on the takeover's critical path: no batching waits.
                        ("fetch.wait.max.ms", "10"),
                        ("fetch.queue.backoff.ms", "0"),
                    ],
                )
                .create()?,
            );
        }
        let consumer = reader.as_ref().expect("created above");
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, REQUEST_TIMEOUT)?;
        let start = from.max(low);
        if start >= high {
            return Ok(None);
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
        consumer.assign(&assignment)?;
        let mut found: Option<(u64, i64)> = None;
        let mut next = start;
        while next < high {
            match consumer.poll(REQUEST_TIMEOUT) {
                Some(Ok(message)) => {
                    if message.partition() != partition || message.offset() < next {
                        continue; // left over from reading another partition back
                    }
                    next = message.offset() + 1;
                    let line = message
                        .payload()
                        .and_then(|p| std::str::from_utf8(p).ok())
                        .unwrap_or("");
                    if let Some((s, seq)) = RecordId::parse_line(line, &self.job) {
                        if s == shard && found.is_none_or(|(max, _)| seq > max) {
                            found = Some((seq, message.offset()));
                        }
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    return Err(KafkaError::Topology(format!(
                        "reading back `{}` partition {partition}: no record at offset {next} below the end {high}",
                        self.topic
                    )))
                }
            }
        }
        Ok(found)
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&self, shard: u32, seq: u64, line: &str) -> io::Result<()> {
        self.write_record(shard, seq, None, line, None)
    }

    fn write_record(
        &self,
        shard: u32,
        seq: u64,
        key: Option<&str>,
        line: &str,
        traceparent: Option<&str>,
    ) -> io::Result<()> {
        {
            let mut delivered = self.delivered.lock().expect("not poisoned");
            if delivered.get(&shard).is_some_and(|&max| seq <= max) {
                return Ok(());
            }
            delivered.insert(shard, seq);
        }
        let mut record = BaseRecord::with_opaque_to(&self.topic, Box::new(shard))
            .partition(self.partition_of(shard))
            .payload(line.as_bytes());
        if let Some(key) = key {
            record = record.key(key.as_bytes());
        }
        if let Some(traceparent) = traceparent {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "traceparent",
                value: Some(traceparent),
            }));
        }
        send(&self.producer, record)?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until the broker acknowledged every record sent so far.
    fn sync(&self) -> io::Result<()> {
        self.producer
            .flush(REQUEST_TIMEOUT)
            .map_err(|e| io::Error::other(format!("sink `{}`: flush: {e}", self.name)))?;
        if let Some(failure) = self.producer.context().failure.lock().expect("ok").clone() {
            return Err(io::Error::other(format!(
                "sink `{}`: a record was not delivered: {failure}",
                self.name
            )));
        }
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn delivered(&self, shard: u32) -> Option<u64> {
        self.delivered.lock().expect("ok").get(&shard).copied()
    }

    fn restore(&self, shard: u32, mark: Option<&[u8]>) -> io::Result<()> {
        let mark = mark
            .and_then(|m| <[u8; 8]>::try_from(m).ok())
            .map(i64::from_le_bytes);
        // Settle what this process still has in flight (after a failure, some of it may
        // never arrive): then the partition tells exactly what is there.
        let _ = self.producer.flush(REQUEST_TIMEOUT);
        self.producer.context().failure.lock().expect("ok").take();
        let found = self
            .read_back(shard, mark.map_or(0, |m| m + 1))
            .map_err(|e| io::Error::other(format!("sink `{}`: {e}", self.name)))?;
        let mut delivered = self.delivered.lock().expect("ok");
        match found {
            Some((seq, _)) => delivered.insert(shard, seq),
            None => delivered.remove(&shard),
        };
        if let Some(offset) = found.map(|(_, offset)| offset).or(mark) {
            self.restored_marks
                .lock()
                .expect("ok")
                .insert(shard, offset);
        }
        Ok(())
    }

    fn mark(&self, shard: u32) -> Option<Vec<u8>> {
        let acked = self
            .producer
            .context()
            .last_offset
            .lock()
            .expect("ok")
            .get(&shard)
            .copied();
        let restored = self.restored_marks.lock().expect("ok").get(&shard).copied();
        acked
            .max(restored)
            .map(|offset| offset.to_le_bytes().to_vec())
    }
}
