//! A node of a Kafka job: hosts the shards whose repartition partitions Kafka assigns it.
//!
//! On assignment a shard's state is put in place (local file or newer snapshot), the shard
//! actor recovers it (sinks read back what they already hold of the shard) and the partition
//! is consumed from the checkpoint's position. On revocation the shard checkpoints and closes
//! before the partition is given up, inside the rebalance callback. Each shard's input is one
//! ordered log, so replaying it from a checkpoint is deterministic: the same records with the
//! same sequence numbers, of which the sinks skip those already delivered.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, RebalanceProtocol};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{error, info, warn};
use vigil_actors::enrich::Enricher;
use vigil_actors::event::{DeadLetter, Decoder};
use vigil_actors::hash::shard_of;
use vigil_actors::job::{build_templates, Router, RunOptions, RunSummary, ShardHost};
use vigil_actors::shard::{
    Batch, Deliver, Item, JobContext, Position, Recover, Release, Shard, ShardCounts, ShardStatus,
    Snapshot,
};
use vigil_actors::sink::{Sink, Sinks};
use vigil_actors::spec::{JobSpec, KafkaSpec, SinkKind};
use vigil_actors::time::{Millis, MIN_TIME};

use crate::client;
use crate::ingest::Ingest;
use crate::protocol::{
    apply_marks, parse_source, take_record, watermark, Mark, MARKS_HEADER, SOURCE_HEADER,
    TRACEPARENT_HEADER,
};
use crate::sink::KafkaSink;
use crate::snapshot::{self, Origin};
use crate::KafkaError;

/// Messages taken from the consumer per batch.
const BATCH: usize = 1024;

/// A shard this node hosts now.
struct Owned {
    position: Position,
    watermark: Millis,
    /// Until the shard has read its log up to where it stood when it was taken: when it was
    /// taken, from which offset, and that end.
    catching_up: Option<(Instant, u64, Option<i64>)>,
}

/// What the rebalance callback and the loop share.
struct Hosted {
    job: Arc<JobContext>,
    addrs: Vec<Addr<Shard>>,
    kafka: KafkaSpec,
    bound: Millis,
    owned: Mutex<HashMap<u32, Owned>>,
    /// Counts of the shards this node gave up (their totals live on with their next owner).
    released: Mutex<Vec<ShardStatus>>,
    failure: Mutex<Option<String>>,
}

impl Hosted {
    fn fail(&self, message: String) {
        error!("{message}");
        self.failure
            .lock()
            .expect("not poisoned")
            .get_or_insert(message);
    }

    /// Puts the shard's state in place, recovers it, and returns the offset to resume from.
    fn take(&self, shard: u32) -> Result<Offset, String> {
        let started = Instant::now();
        let origin = snapshot::prepare(
            &self.job.state_dir,
            self.kafka.snapshot_dir.as_deref(),
            &self.job.job,
            shard,
        )
        .map_err(|e| format!("shard {shard}: restoring its state: {e}"))?;
        let status = futures_executor::block_on(self.addrs[shard as usize].send(Recover))
            .map_err(|e| format!("shard {shard} unreachable: {e}"))??;
        let position = status.position.unwrap_or_default();
        let offset = position.seq;
        let took = started.elapsed();
        info!(
            shard,
            from = origin.name(),
            offset,
            took_ms = took.as_millis() as u64,
            "shard restored"
        );
        let watermark = status.watermark;
        self.owned.lock().expect("ok").insert(
            shard,
            Owned {
                position,
                watermark,
                catching_up: Some((started, offset, None)),
            },
        );
        Ok(if offset == 0 && origin == Origin::Empty {
            Offset::Beginning
        } else {
            Offset::Offset(offset as i64)
        })
    }

    /// Checkpoints and closes the shard: this node gives it up.
    fn release(&self, shard: u32) -> Result<(), String> {
        if self.owned.lock().expect("ok").remove(&shard).is_none() {
            return Ok(());
        }
        let status = futures_executor::block_on(self.addrs[shard as usize].send(Release))
            .map_err(|e| format!("shard {shard} unreachable: {e}"))??;
        info!(
            shard,
            offset = status.position.as_ref().map_or(0, |p| p.seq),
            "shard released"
        );
        self.released.lock().expect("ok").push(status);
        Ok(())
    }
}

struct NodeContext {
    hosted: Arc<Hosted>,
}

impl ClientContext for NodeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::client::log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        warn!("kafka: {error}: {reason}");
    }
}

impl ConsumerContext for NodeContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr::*;
        match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assignment = TopicPartitionList::new();
                for element in tpl.elements() {
                    let shard = element.partition() as u32;
                    match self.hosted.take(shard) {
                        Ok(offset) => {
                            let _ = assignment.add_partition_offset(
                                element.topic(),
                                element.partition(),
                                offset,
                            );
                        }
                        Err(e) => self.hosted.fail(e),
                    }
                }
                let taken = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_assign(&assignment),
                    _ => consumer.assign(&assignment),
                };
                if let Err(e) = taken {
                    self.hosted.fail(format!("cannot take partitions: {e}"));
                }
            }
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                for element in tpl.elements() {
                    if let Err(e) = self.hosted.release(element.partition() as u32) {
                        self.hosted.fail(e);
                    }
                }
                let given_up = match consumer.rebalance_protocol() {
                    RebalanceProtocol::Cooperative => consumer.incremental_unassign(tpl),
                    _ => consumer.unassign(),
                };
                if let Err(e) = given_up {
                    warn!("giving up partitions: {e}");
                }
            }
            other => warn!("rebalance error: {other:?}"),
        }
    }

    fn pre_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {}
}

/// Runs a Kafka job on this node until `options.stop` is set (or a shard fails for good).
pub fn run(spec: JobSpec, options: RunOptions) -> Result<RunSummary, KafkaError> {
    let started = Instant::now();
    let mut options = options;
    let kafka = spec
        .kafka
        .clone()
        .ok_or_else(|| KafkaError::Topology("a Kafka job needs a [kafka] section".into()))?;
    let shards = spec.shards.max(1);
    client::ensure_topic(&kafka, &kafka.repartition_topic, shards as i32, true)?;
    let templates = build_templates(&spec, &mut options)?;
    let router = Arc::new(Router::new(&spec, &templates));
    let process_names: Vec<String> = spec.processes.iter().map(|p| p.name.clone()).collect();
    let open_kafka = |name: &str, kind: &SinkKind| -> Option<io::Result<Box<dyn Sink>>> {
        let SinkKind::Kafka { topic } = kind else {
            return None;
        };
        Some(
            KafkaSink::open(name, topic, &spec.name, shards, &kafka)
                .map(|s| Box::new(s) as Box<dyn Sink>)
                .map_err(io::Error::other),
        )
    };
    let sinks = Sinks::open_with(
        &spec.name,
        &process_names,
        &spec.sinks,
        &spec.dead_letter,
        &open_kafka,
    )?;
    let host = ShardHost::start(&spec, templates, sinks, options.faults.clone());
    let hosted = Arc::new(Hosted {
        job: host.job.clone(),
        addrs: host.addrs.clone(),
        kafka: kafka.clone(),
        bound: spec.max_out_of_orderness,
        owned: Mutex::new(HashMap::new()),
        released: Mutex::new(Vec::new()),
        failure: Mutex::new(None),
    });
    let stop = options
        .stop
        .clone()
        .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));

    let spec = Arc::new(spec);
    let ingest_stop = Arc::new(AtomicBool::new(false));
    let ingest = {
        let ingest = Ingest {
            spec: spec.clone(),
            router: router.clone(),
            stop: ingest_stop.clone(),
        };
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || ingest.run())?
    };

    let result = consume(&spec, &kafka, &hosted, &router, &stop, &ingest);
    ingest_stop.store(true, Ordering::Relaxed);
    let ingest_result = ingest
        .join()
        .unwrap_or_else(|_| Err(KafkaError::Shard("the ingest thread panicked".into())));
    let shards_now: Vec<u32> = hosted.owned.lock().expect("ok").keys().copied().collect();
    for shard in shards_now {
        if let Err(e) = hosted.release(shard) {
            hosted.fail(e);
        }
    }
    drop(host);
    result?;
    ingest_result?;
    if let Some(failure) = hosted.failure.lock().expect("ok").clone() {
        return Err(KafkaError::Shard(failure));
    }
    let statuses = hosted.released.lock().expect("ok").clone();
    let mut summary = RunSummary {
        job: spec.name.clone(),
        counts: ShardCounts::default(),
        lines_this_run: 0,
        resumed_at: None,
        watermark: statuses
            .iter()
            .map(|s| s.watermark)
            .max()
            .unwrap_or(MIN_TIME),
        live_instances: 0,
        tombstones: 0,
        pending_timers: 0,
        sinks: hosted.job.sinks.written(),
        elapsed: started.elapsed(),
        shard_restarts: 0,
        finished: false,
    };
    for status in &statuses {
        summary.add(status);
    }
    Ok(summary)
}

/// The consuming loop: messages → per-shard batches → shard actors; snapshots on schedule
/// and on request.
fn consume(
    spec: &JobSpec,
    kafka: &KafkaSpec,
    hosted: &Arc<Hosted>,
    router: &Router,
    stop: &AtomicBool,
    ingest: &std::thread::JoinHandle<Result<(), KafkaError>>,
) -> Result<(), KafkaError> {
    let mut defaults = vec![
        ("group.id", kafka.group.as_str()),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
        client::ASSIGNMENT_STRATEGY,
        ("session.timeout.ms", "20000"),
        ("heartbeat.interval.ms", "1000"),
    ];
    if let Some(instance) = &kafka.instance_id {
        defaults.push(("group.instance.id", instance.as_str()));
    }
    let consumer: BaseConsumer<NodeContext> = client::config(kafka, &defaults)
        .create_with_context(NodeContext {
            hosted: hosted.clone(),
        })?;
    consumer.subscribe(&[kafka.repartition_topic.as_str()])?;
    let decoder = Decoder::new(&spec.event_types);
    let enricher = Enricher::new(spec).map_err(KafkaError::Topology)?;
    let type_field = spec
        .sources
        .first()
        .map_or("type", |s| s.type_field.as_str())
        .to_owned();
    let source_name = spec.sources.first().map_or("kafka", |s| s.name.as_str());
    let shards = spec.shards.max(1);
    let mut last_snapshot = Instant::now();
    let mut last_request = kafka
        .snapshot_dir
        .as_deref()
        .and_then(|d| snapshot::requested_at(d, &spec.name));
    let mut last_request_check = Instant::now();
    let mut last_catch_up_check = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        if let Some(failure) = hosted.failure.lock().expect("ok").clone() {
            return Err(KafkaError::Shard(failure));
        }
        if let Some(fatal) = hosted.job.fatal() {
            return Err(KafkaError::Shard(fatal));
        }
        if ingest.is_finished() {
            return Err(KafkaError::Shard("the ingest stopped".into()));
        }
        let mut per_shard: HashMap<u32, Vec<Item>> = HashMap::new();
        let mut wait = Duration::from_millis(100);
        for _ in 0..BATCH {
            let Some(message) = consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = message?;
            let shard = message.partition() as u32;
            let mut owned = hosted.owned.lock().expect("ok");
            let Some(state) = owned.get_mut(&shard) else {
                continue; // a partition given up in this poll's rebalance
            };
            let items = per_shard.entry(shard).or_default();
            read_record(
                state,
                &message,
                shard,
                shards,
                hosted.bound,
                router,
                &decoder,
                &enricher,
                &type_field,
                source_name,
                items,
            );
        }
        for (shard, items) in per_shard {
            let owned = hosted.owned.lock().expect("ok");
            let Some(state) = owned.get(&shard) else {
                continue;
            };
            if !hosted.job.gate.acquire(shard) {
                break;
            }
            hosted.addrs[shard as usize].do_send(Deliver(Arc::new(Batch {
                items,
                position: state.position.clone(),
                watermark: state.watermark,
            })));
        }
        if last_catch_up_check.elapsed() >= Duration::from_millis(250) {
            report_catch_up(hosted, &consumer, &kafka.repartition_topic);
            last_catch_up_check = Instant::now();
        }
        if let Some(dir) = kafka.snapshot_dir.as_deref() {
            let scheduled = kafka
                .snapshot_interval
                .is_some_and(|every| last_snapshot.elapsed() >= every);
            let mut requested = false;
            if last_request_check.elapsed() >= Duration::from_millis(500) {
                let at = snapshot::requested_at(dir, &spec.name);
                requested = at.is_some() && at != last_request;
                last_request = at;
                last_request_check = Instant::now();
            }
            if scheduled || requested {
                take_snapshots(hosted, dir, &spec.name);
                last_snapshot = Instant::now();
            }
        }
    }
    hosted.job.gate.wait_idle();
    consumer.unsubscribe();
    Ok(())
}

/// Logs, once per takeover, when a shard has replayed its log up to the end it had when it
/// was taken over (restore throughput: records replayed per second since the takeover).
fn report_catch_up(hosted: &Hosted, consumer: &BaseConsumer<NodeContext>, topic: &str) {
    let mut owned = hosted.owned.lock().expect("ok");
    for (shard, state) in owned.iter_mut() {
        let Some((taken, from, end)) = state.catching_up.as_mut() else {
            continue;
        };
        if end.is_none() {
            match consumer.fetch_watermarks(topic, *shard as i32, Duration::from_secs(5)) {
                Ok((_, high)) => *end = Some(high),
                Err(_) => continue,
            }
        }
        let end = end.expect("set above");
        if state.position.seq as i64 >= end {
            let took = taken.elapsed();
            let replayed = (end as u64).saturating_sub(*from);
            info!(
                shard,
                replayed,
                took_ms = took.as_millis() as u64,
                per_second = (replayed as f64 / took.as_secs_f64().max(1e-3)) as u64,
                "shard caught up"
            );
            state.catching_up = None;
        }
    }
}

/// Exports every shard this node hosts to the snapshot directory.
fn take_snapshots(hosted: &Hosted, dir: &std::path::Path, job: &str) {
    let shards: Vec<u32> = hosted.owned.lock().expect("ok").keys().copied().collect();
    for shard in shards {
        let path = snapshot::path(dir, job, shard);
        let taken = futures_executor::block_on(
            hosted.addrs[shard as usize].send(Snapshot { path: path.clone() }),
        );
        match taken {
            Ok(Ok(taken)) => info!(
                shard,
                offset = taken.position.map_or(0, |p| p.seq),
                bytes = taken.bytes,
                took_ms = taken.took.as_millis() as u64,
                "snapshot taken"
            ),
            Ok(Err(e)) => warn!(shard, "snapshot failed: {e}"),
            Err(e) => warn!(shard, "snapshot failed: {e}"),
        }
    }
}

/// Turns one repartition record into the shard's items, advancing its position and
/// watermark exactly as a replay of the same log will.
#[allow(clippy::too_many_arguments)]
fn read_record(
    state: &mut Owned,
    message: &BorrowedMessage<'_>,
    shard: u32,
    shards: u32,
    bound: Millis,
    router: &Router,
    decoder: &Decoder,
    enricher: &Enricher,
    type_field: &str,
    source_name: &str,
    items: &mut Vec<Item>,
) {
    let offset = message.offset();
    state.position.seq = offset as u64 + 1;
    let header = |name: &str| -> Option<&[u8]> {
        message
            .headers()?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
    };
    if let Some(marks) = header(MARKS_HEADER) {
        match serde_json::from_slice::<Vec<Mark>>(marks) {
            Ok(marks) => apply_marks(&mut state.position.upstream, &marks),
            Err(e) => warn!(shard, offset, "ignoring unreadable marks: {e}"),
        }
        state.watermark = state
            .watermark
            .max(watermark(&state.position.upstream, bound));
        return;
    }
    let Some((src, src_offset)) = header(SOURCE_HEADER)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(parse_source)
    else {
        warn!(
            shard,
            offset, "ignoring a record without its source (not written by Vigil's ingest)"
        );
        return;
    };
    let traceparent: Option<Arc<str>> = header(TRACEPARENT_HEADER)
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(Arc::from);
    let line = String::from_utf8_lossy(message.payload().unwrap_or_default());
    let before = state.watermark;
    let seq = offset as u64;
    match enricher.decode(decoder, &line, type_field, seq) {
        Ok(event) => {
            if !take_record(
                &mut state.position.upstream,
                src,
                src_offset,
                Some(event.time),
            ) {
                return;
            }
            let targets = router.targets(&event);
            if targets.is_empty() {
                items.push(Item::Unrouted {
                    seq,
                    watermark: before,
                });
            } else {
                let event = Arc::new(event);
                for (i, (template, key)) in targets.into_iter().enumerate() {
                    if shard_of(&key, shards) != shard {
                        continue;
                    }
                    items.push(Item::Event {
                        event: event.clone(),
                        template,
                        key,
                        primary: i == 0,
                        watermark: before,
                        traceparent: traceparent.clone(),
                    });
                }
            }
        }
        Err(rejection) => {
            if !take_record(&mut state.position.upstream, src, src_offset, None) {
                return;
            }
            items.push(Item::DeadLetter {
                seq,
                letter: Box::new(DeadLetter {
                    reason: rejection.reason,
                    detail: rejection.detail,
                    key: rejection.key,
                    time: rejection.time,
                    raw: line.into_owned(),
                    source: source_name.to_owned(),
                    file: Some(src.to_owned()),
                    line: Some(src_offset as u64),
                }),
                watermark: before,
            });
        }
    }
    state.watermark = state
        .watermark
        .max(watermark(&state.position.upstream, bound));
}
