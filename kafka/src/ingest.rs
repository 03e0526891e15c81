//! The ingest: reads the input topics (consumer group `<group>.ingest`) and forwards every
//! record, unchanged, to the repartition partition of each shard it goes to, with its source
//! coordinates; writes the marks that carry watermarks and idleness (see [`crate::protocol`]).
//!
//! Input offsets are committed only after the producer has flushed what was forwarded, so a
//! crash or rebalance forwards some records again, never loses one; shards recognise records
//! forwarded again by their source offsets.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, DefaultConsumerContext};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};
use vigil_actors::enrich::Enricher;
use vigil_actors::event::Decoder;
use vigil_actors::hash::{shard_of, stable_hash64};
use vigil_actors::job::Router;
use vigil_actors::spec::{JobSpec, SourceKind};
use vigil_actors::time::{Millis, MIN_TIME};

use crate::client::{self, REQUEST_TIMEOUT};
use crate::protocol::{Mark, MARKS_HEADER, SOURCE_HEADER, TRACEPARENT_HEADER};
use crate::sink::{send, PRODUCER_DEFAULTS};
use crate::KafkaError;

/// How often marks are written.
const MARK_INTERVAL: Duration = Duration::from_millis(200);
/// How often forwarded records are flushed and input offsets committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// How often the input topics' partitions are looked up again.
const METADATA_INTERVAL: Duration = Duration::from_secs(10);

/// The input topics: a list, or a pattern.
#[derive(Clone)]
pub enum Inputs {
    Topics(Vec<String>),
    Pattern(regex::Regex),
}

impl Inputs {
    pub fn of(spec: &JobSpec) -> Result<(Inputs, String), KafkaError> {
        let mut topics = Vec::new();
        let mut pattern = None;
        let mut type_field = "type".to_owned();
        for source in &spec.sources {
            match &source.kind {
                SourceKind::Kafka {
                    topics: t,
                    pattern: p,
                } => {
                    topics.extend(t.iter().cloned());
                    if let Some(p) = p {
                        pattern = Some(p.clone());
                    }
                    type_field = source.type_field.clone();
                }
                _ => {
                    return Err(KafkaError::Topology(format!(
                        "source `{}` is not a Kafka source; a Kafka job reads only Kafka",
                        source.name
                    )))
                }
            }
        }
        let inputs = match pattern {
            // Anchored at the start, as librdkafka subscribes `^…` patterns.
            Some(p) => Inputs::Pattern(
                regex::Regex::new(&format!("^(?:{})", p.trim_start_matches('^')))
                    .map_err(|e| KafkaError::Topology(format!("topic pattern: {e}")))?,
            ),
            None if !topics.is_empty() => Inputs::Topics(topics),
            None => return Err(KafkaError::Topology("no Kafka source topics".into())),
        };
        Ok((inputs, type_field))
    }

    fn subscription(&self) -> Vec<String> {
        match self {
            Inputs::Topics(t) => t.clone(),
            Inputs::Pattern(p) => vec![p.as_str().to_owned()],
        }
    }

    /// Every partition of the input topics, as `topic/partition`.
    fn partitions(
        &self,
        consumer: &BaseConsumer<DefaultConsumerContext>,
    ) -> Result<BTreeSet<String>, KafkaError> {
        let topics = match self {
            Inputs::Topics(topics) => {
                let mut found = Vec::new();
                for topic in topics {
                    if let Some(n) = client::partitions(consumer, topic)? {
                        found.push((topic.clone(), n));
                    }
                }
                found
            }
            Inputs::Pattern(p) => client::topics_matching(consumer, p)?,
        };
        Ok(topics
            .into_iter()
            .flat_map(|(t, n)| (0..n).map(move |p| format!("{t}/{p}")))
            .collect())
    }
}

/// What the ingest knows of an input partition it owns.
struct Owned {
    max: Option<Millis>,
    last_message: Instant,
}

pub struct Ingest {
    pub spec: Arc<JobSpec>,
    pub router: Arc<Router>,
    pub stop: Arc<AtomicBool>,
}

impl Ingest {
    /// Runs until `stop` is set.
    pub fn run(self) -> Result<(), KafkaError> {
        let spec = &self.spec;
        let kafka = spec.kafka.as_ref().expect("a Kafka job");
        let shards = spec.shards.max(1);
        let (inputs, type_field) = Inputs::of(spec)?;
        let group = format!("{}.ingest", kafka.group);
        // Dynamic membership: the ingest keeps no state, so a restarted node need not get
        // the same input partitions back; a dead member's partitions move on after the
        // session timeout. (Shards use static membership: they have state.)
        let defaults = vec![
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
            ("auto.offset.reset", "earliest"),
            client::ASSIGNMENT_STRATEGY,
            ("topic.metadata.refresh.interval.ms", "5000"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "1000"),
        ];
        let consumer: BaseConsumer<DefaultConsumerContext> =
            client::config(kafka, &defaults).create()?;
        let subscription = inputs.subscription();
        let subscription: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer.subscribe(&subscription)?;
        let producer: ThreadedProducer<DefaultProducerContext> =
            client::config(kafka, PRODUCER_DEFAULTS).create()?;
        let decoder = Decoder::new(&spec.event_types);
        let enricher = Enricher::new(spec).map_err(KafkaError::Topology)?;
        let topic = kafka.repartition_topic.as_str();

        let mut owned: HashMap<String, Owned> = HashMap::new();
        let mut known = inputs.partitions(&consumer)?;
        let mut known_at = Instant::now();
        let mut last_marks = Instant::now() - MARK_INTERVAL;
        let mut last_commit = Instant::now();
        let mut uncommitted = false;
        let mut high_watermarks: HashMap<String, (i64, Instant)> = HashMap::new();
        info!(group, partitions = known.len(), "ingest started");

        while !self.stop.load(Ordering::Relaxed) {
            let message = match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(message)) => Some(message),
                Some(Err(e)) => {
                    warn!("ingest: {e}");
                    None
                }
                None => None,
            };
            let src = message
                .as_ref()
                .map(|m| format!("{}/{}", m.topic(), m.partition()));
            // Marks are due on schedule, and before the first record of a partition new to
            // this ingest: shards must learn of every input partition it reads before any of
            // its records.
            let new_partition = src.as_ref().is_some_and(|s| !owned.contains_key(s));
            if new_partition || last_marks.elapsed() >= MARK_INTERVAL {
                if known_at.elapsed() >= METADATA_INTERVAL {
                    known = inputs.partitions(&consumer)?;
                    known_at = Instant::now();
                }
                self.write_marks(
                    &consumer,
                    &producer,
                    &known,
                    &mut owned,
                    &mut high_watermarks,
                )?;
                last_marks = Instant::now();
            }
            if let (Some(message), Some(src)) = (message, src) {
                let time = self.forward(
                    &message,
                    &src,
                    &decoder,
                    &enricher,
                    &type_field,
                    shards,
                    &producer,
                    topic,
                )?;
                let state = owned.entry(src).or_insert(Owned {
                    max: None,
                    last_message: Instant::now(),
                });
                state.last_message = Instant::now();
                if let Some(time) = time {
                    state.max = Some(state.max.map_or(time, |m| m.max(time)));
                }
                uncommitted = true;
            }
            if last_commit.elapsed() >= COMMIT_INTERVAL && uncommitted {
                producer.flush(REQUEST_TIMEOUT)?;
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => uncommitted = false,
                    Err(e) => warn!("ingest: committing input offsets: {e}"),
                }
                last_commit = Instant::now();
            }
        }
        producer.flush(REQUEST_TIMEOUT)?;
        if uncommitted {
            consumer.commit_consumer_state(CommitMode::Sync)?;
        }
        info!("ingest stopped");
        Ok(())
    }

    /// Writes marks to every repartition partition: for each input partition, what this
    /// ingest knows of it (see [`crate::protocol`]).
    fn write_marks(
        &self,
        consumer: &BaseConsumer<DefaultConsumerContext>,
        producer: &ThreadedProducer<DefaultProducerContext>,
        known: &BTreeSet<String>,
        owned: &mut HashMap<String, Owned>,
        high_watermarks: &mut HashMap<String, (i64, Instant)>,
    ) -> Result<(), KafkaError> {
        let spec = &self.spec;
        let kafka = spec.kafka.as_ref().expect("a Kafka job");
        let topic = kafka.repartition_topic.as_str();
        let shards = spec.shards.max(1);
        let assignment = consumer.assignment()?;
        let positions = consumer.position()?;
        let mut marks = Vec::with_capacity(known.len());
        let mut assigned = BTreeSet::new();
        for element in assignment.elements() {
            assigned.insert(format!("{}/{}", element.topic(), element.partition()));
        }
        let before = owned.len();
        owned.retain(|src, _| assigned.contains(src));
        if owned.len() != before || assigned.iter().any(|src| !owned.contains_key(src)) {
            info!(partitions = ?assigned, "ingest reads");
        }
        for src in known.iter().chain(assigned.difference(known)) {
            if !assigned.contains(src) {
                marks.push(Mark {
                    src: src.clone(),
                    max: None,
                    idle: None,
                    owned: false,
                });
                continue;
            }
            let state = owned.entry(src.clone()).or_insert(Owned {
                max: None,
                last_message: Instant::now(),
            });
            let silent = state.last_message.elapsed();
            let idle = if silent >= spec.idle_timeout {
                let (t, p) = src.rsplit_once('/').expect("topic/partition");
                let p: i32 = p.parse().expect("a partition number");
                let position = positions
                    .find_partition(t, p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
                let high = match high_watermarks.get(src) {
                    Some((high, at)) if at.elapsed() < Duration::from_secs(1) => *high,
                    _ => {
                        let (low, high) = consumer.fetch_watermarks(t, p, REQUEST_TIMEOUT)?;
                        let high = if low == high { -1 } else { high };
                        high_watermarks.insert(src.clone(), (high, Instant::now()));
                        high
                    }
                };
                // Nothing read yet since the assignment: where the group left it.
                let position = match position {
                    Some(o) => Some(o),
                    None if high >= 0 => {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(t, p);
                        consumer
                            .committed_offsets(tpl, REQUEST_TIMEOUT)?
                            .find_partition(t, p)
                            .and_then(|e| match e.offset() {
                                Offset::Offset(o) => Some(o),
                                _ => None,
                            })
                    }
                    None => None,
                };
                let at_end = high < 0 || position.is_some_and(|o| o >= high);
                at_end.then(|| {
                    let beyond = (silent - spec.idle_timeout).as_millis() as Millis;
                    state.max.map_or(MIN_TIME, |m| m.saturating_add(beyond))
                })
            } else {
                None
            };
            marks.push(Mark {
                src: src.clone(),
                max: state.max,
                idle,
                owned: true,
            });
        }
        let body = serde_json::to_string(&marks).expect("marks serialize");
        for partition in 0..shards as i32 {
            let headers = OwnedHeaders::new().insert(Header {
                key: MARKS_HEADER,
                value: Some(&body),
            });
            let record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(partition)
                .headers(headers);
            send(producer, record)?;
        }
        Ok(())
    }

    /// Forwards one input record to the shards it goes to; its event time if it decodes.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        message: &BorrowedMessage<'_>,
        src: &str,
        decoder: &Decoder,
        enricher: &Enricher,
        type_field: &str,
        shards: u32,
        producer: &ThreadedProducer<DefaultProducerContext>,
        topic: &str,
    ) -> Result<Option<Millis>, KafkaError> {
        let payload = message.payload().unwrap_or_default();
        let line = String::from_utf8_lossy(payload);
        let offset = message.offset();
        // Lines no template takes (unrouted, rejected) go to one shard, which accounts them.
        let fallback = (stable_hash64(format!("{src}/{offset}").as_bytes()) % shards as u64) as u32;
        let (targets, time) = match enricher.decode(decoder, &line, type_field, offset as u64) {
            Ok(event) => {
                let mut targets: Vec<(u32, Option<String>)> = Vec::new();
                for (_, key) in self.router.targets(&event) {
                    let shard = shard_of(&key, shards);
                    if !targets.iter().any(|(s, _)| *s == shard) {
                        targets.push((shard, Some(key.to_string())));
                    }
                }
                if targets.is_empty() {
                    targets.push((fallback, None));
                }
                (targets, Some(event.time))
            }
            Err(_) => (vec![(fallback, None)], None),
        };
        let source = format!("{src}/{offset}");
        let traceparent = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == TRACEPARENT_HEADER)
                .and_then(|h| h.value)
                .map(<[u8]>::to_vec)
        });
        for (shard, key) in targets {
            let mut headers = OwnedHeaders::new().insert(Header {
                key: SOURCE_HEADER,
                value: Some(&source),
            });
            if let Some(tp) = &traceparent {
                headers = headers.insert(Header {
                    key: TRACEPARENT_HEADER,
                    value: Some(tp),
                });
            }
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(shard as i32)
                .payload(payload)
                .headers(headers);
            if let Some(key) = &key {
                record = record.key(key.as_bytes());
            }
            send(producer, record)?;
        }
        Ok(time)
    }
}
