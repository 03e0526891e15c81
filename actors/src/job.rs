//! Running a job: start the shard actors, recover them, read and decode the input, hand each
//! shard its part in order, and at the end of finite input advance the watermark to the
//! largest event time seen and checkpoint.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, warn};

use crate::enrich::Enricher;
use crate::event::{DeadLetter, Decoder, Event};
use crate::gate::Gate;
use crate::hash::shard_of;
use crate::registry::{Registry, RegistryError};
use crate::shard::{
    dispose_on_own_thread, Batch, Checkpoint, Deliver, Faults, Finish, Item, JobContext, Layout,
    Position, Recover, Shard, ShardCounts, ShardStatus,
};
use crate::sink::Sinks;
use crate::source::{self, Cursor, SourceMessage};
use crate::spec::{JobSpec, SourceKind};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};
use crate::template::{DynTemplate, KeyPart};
use crate::time::{Millis, MIN_TIME};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot open sinks: {0}")]
    Sinks(std::io::Error),
    #[error("source `{source_name}`: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("shard state: {0}")]
    Shard(String),
    #[error("the state in {dir} does not fit this topology: {message}")]
    Incompatible { dir: String, message: String },
    #[error("cannot start worker threads: {0}")]
    Runtime(String),
    #[error(transparent)]
    Template(#[from] RegistryError),
    #[error("enrichment: {0}")]
    Enrichment(String),
}

/// How to run, beyond the topology.
#[derive(Default)]
pub struct RunOptions {
    /// Templates to run instead of the built-in ones, one per process of the spec, in order
    /// (user-written templates, tests).
    pub templates: Option<Vec<Box<dyn DynTemplate>>>,
    /// The registry that builds each process's template (unless `templates` is given):
    /// [`Registry::builtin`] when `None`. Give the one the topology was compiled with when it
    /// uses custom templates.
    pub registry: Option<Registry>,
    /// Set to stop reading: the shards checkpoint and the run returns (for endless sources).
    pub stop: Option<Arc<AtomicBool>>,
    /// Incremented for every line read, for progress displays.
    pub lines_read: Option<Arc<AtomicU64>>,
    pub faults: Faults,
}

/// What a run did, totals across restarts of the same state.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub job: String,
    pub counts: ShardCounts,
    /// Lines read by this run (a resumed run re-reads from its oldest shard checkpoint).
    pub lines_this_run: u64,
    pub resumed_at: Option<u64>,
    pub watermark: Millis,
    pub live_instances: u64,
    pub tombstones: u64,
    pub pending_timers: u64,
    /// Records written by this run per sink (dead letters last).
    pub sinks: Vec<(String, u64)>,
    pub elapsed: Duration,
    pub shard_restarts: u32,
    /// Whether the input ended (as opposed to a requested stop).
    pub finished: bool,
}

/// For each event type: the templates it goes to and what keys them there (empty: the event
/// type's correlation key).
pub struct Router {
    routes: Vec<Vec<(u16, Vec<KeyPart>)>>,
}

/// The instance key an event gets from a subscription's key parts; `None` when a field part is
/// missing or neither a string nor a number (the event is then not delivered there).
fn route_key(event: &Event, parts: &[KeyPart]) -> Option<Arc<str>> {
    fn part(event: &Event, part: &KeyPart) -> Option<String> {
        match part {
            KeyPart::EventType => Some(event.type_name.to_string()),
            KeyPart::Constant(text) => Some(text.clone()),
            KeyPart::Field(path) => Some(event.field(path)?.key_text()?.into_owned()),
        }
    }
    match parts {
        [] => Some(event.key.clone()),
        [one] => part(event, one).map(|k| Arc::from(k.as_str())),
        _ => {
            let values = parts
                .iter()
                .map(|p| part(event, p))
                .collect::<Option<Vec<_>>>()?;
            Some(Arc::from(values.join("|").as_str()))
        }
    }
}

impl Router {
    /// Where `event` goes: `(template, instance key)` for each subscription that keys it, in
    /// subscription order (the first is the event's primary delivery).
    pub fn targets(&self, event: &Event) -> Vec<(u16, Arc<str>)> {
        self.routes[event.type_index as usize]
            .iter()
            .filter_map(|(template, parts)| Some((*template, route_key(event, parts)?)))
            .collect()
    }

    pub fn new(spec: &JobSpec, templates: &[Box<dyn DynTemplate>]) -> Router {
        let mut routes = vec![Vec::new(); spec.event_types.len()];
        for (t, template) in templates.iter().enumerate() {
            for sub in template.subscriptions() {
                match spec
                    .event_types
                    .iter()
                    .position(|e| e.name == sub.event_type)
                {
                    Some(i) => routes[i].push((t as u16, sub.key)),
                    None => {
                        warn!(process = %spec.processes[t].name, event_type = %sub.event_type, "subscribes to an undeclared event type")
                    }
                }
            }
        }
        Router { routes }
    }
}

/// Runs `spec` until its sources end (or `options.stop` is set).
pub fn run(spec: JobSpec, options: RunOptions) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    let mut options = options;
    let templates = build_templates(&spec, &mut options)?;
    let router = Router::new(&spec, &templates);
    let process_names: Vec<String> = spec.processes.iter().map(|p| p.name.clone()).collect();
    let sinks = Sinks::open(&spec.name, &process_names, &spec.sinks, &spec.dead_letter)
        .map_err(RunError::Sinks)?;
    let host = ShardHost::start(&spec, templates, sinks, options.faults.clone());
    let (job, addrs) = (&host.job, &host.addrs);

    let statuses = host
        .block_on(ask_all(addrs, || Recover))
        .map_err(RunError::Shard)?;
    for status in statuses.iter().filter(|s| s.created) {
        let sinks = job.sinks.holding_records_of(status.shard);
        if !sinks.is_empty() {
            return Err(RunError::Incompatible {
                dir: spec.state_dir.display().to_string(),
                message: format!(
                    "shard {} starts with new state, but sink(s) {} already hold its records from an \
                     earlier run; restore that state directory, or delete those outputs to start over",
                    status.shard,
                    sinks.join(", ")
                ),
            });
        }
    }
    let (lines_this_run, resumed_at, final_watermark, finished) =
        read_input(&spec, &router, job, addrs, &statuses, &options)?;
    let statuses = if finished {
        host.block_on(ask_all(addrs, || Finish {
            watermark: final_watermark,
        }))
    } else {
        host.block_on(ask_all(addrs, || Checkpoint))
    };
    let sinks = job.sinks.written();
    drop(host);
    let statuses = statuses.map_err(RunError::Shard)?;

    let mut summary = RunSummary {
        job: spec.name.clone(),
        counts: ShardCounts::default(),
        lines_this_run,
        resumed_at,
        watermark: final_watermark,
        live_instances: 0,
        tombstones: 0,
        pending_timers: 0,
        sinks,
        elapsed: started.elapsed(),
        shard_restarts: 0,
        finished,
    };
    for status in &statuses {
        summary.add(status);
    }
    Ok(summary)
}

impl RunSummary {
    /// Adds a shard's counts and census to the totals.
    pub fn add(&mut self, status: &ShardStatus) {
        self.counts.add(&status.counts);
        self.live_instances += status.live_instances;
        self.tombstones += status.tombstones;
        self.pending_timers += status.pending_timers;
        self.shard_restarts += status.restarts;
    }
}

/// The shard actors of a job, one per shard, spread over worker threads (actix arbiters);
/// dropping it stops the workers.
pub struct ShardHost {
    system: actix::SystemRunner,
    arbiters: Vec<Arbiter>,
    pub addrs: Vec<Addr<Shard>>,
    pub job: Arc<JobContext>,
}

impl ShardHost {
    /// Starts every shard actor of `spec` (not yet recovered: send [`Recover`]).
    pub fn start(
        spec: &JobSpec,
        templates: Vec<Box<dyn DynTemplate>>,
        sinks: Sinks,
        faults: Faults,
    ) -> ShardHost {
        let shards = spec.shards.max(1);
        let workers = match spec.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .min(shards as usize);
        let job = Arc::new(JobContext {
            job: spec.name.clone(),
            state_dir: spec.state_dir.clone(),
            process_names: spec.processes.iter().map(|p| p.name.clone()).collect(),
            templates,
            sinks,
            gate: Gate::new(4 * shards as usize, shards),
            checkpoint_interval: spec.checkpoint_interval,
            passivate_after: spec.passivate_after,
            max_resident: (spec.max_resident / shards as usize).max(1),
            log_compaction_bytes: spec.log_compaction_bytes,
            max_resident_overshoot: match spec.max_resident_overshoot {
                0 => usize::MAX,
                overshoot => (overshoot / shards as usize).max(1),
            },
            dedup_retention: spec.dedup_retention,
            max_retries: spec.max_retries,
            faults,
            fatal: Mutex::new(None),
            disposal: dispose_on_own_thread(),
            layout: Layout {
                job: spec.name.clone(),
                shards,
                processes: spec.processes.iter().map(|p| p.name.clone()).collect(),
                sources: spec.sources.iter().map(|s| s.name.clone()).collect(),
            },
        });
        let system = System::new();
        let arbiters: Vec<Arbiter> = (0..workers).map(|_| Arbiter::new()).collect();
        let addrs = (0..shards)
            .map(|i| {
                let job = job.clone();
                Supervisor::start_in_arbiter(&arbiters[i as usize % workers].handle(), move |_| {
                    Shard::new(i, job)
                })
            })
            .collect();
        ShardHost {
            system,
            arbiters,
            addrs,
            job,
        }
    }

    /// Runs `future` (typically asking shards) to completion on this thread.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.system.block_on(future)
    }
}

impl Drop for ShardHost {
    fn drop(&mut self) {
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            let _ = arbiter.join();
        }
    }
}

/// The templates of the job's processes, in order: `options.templates` if given, else built
/// by `options.registry` (or the built-in one).
pub fn build_templates(
    spec: &JobSpec,
    options: &mut RunOptions,
) -> Result<Vec<Box<dyn DynTemplate>>, RunError> {
    let templates = match options.templates.take() {
        Some(t) => t,
        None => {
            let registry = options.registry.take().unwrap_or_else(Registry::builtin);
            spec.processes
                .iter()
                .map(|p| registry.build(p))
                .collect::<Result<_, _>>()?
        }
    };
    assert_eq!(
        templates.len(),
        spec.processes.len(),
        "one template per process"
    );
    Ok(templates)
}

async fn ask_all<M, F>(addrs: &[Addr<Shard>], message: F) -> Result<Vec<ShardStatus>, String>
where
    M: Message<Result = Result<ShardStatus, String>> + Send + 'static,
    Shard: Handler<M>,
    F: Fn() -> M,
{
    let mut statuses = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let status = addr
            .send(message())
            .await
            .map_err(|e| format!("shard unreachable: {e}"))??;
        statuses.push(status);
    }
    Ok(statuses)
}

/// The reader: merges the sources chunk by chunk (round robin), decodes, routes, batches.
/// Returns (lines read, resumed-at sequence, final watermark, whether the input ended).
fn read_input(
    spec: &JobSpec,
    router: &Router,
    job: &Arc<JobContext>,
    addrs: &[Addr<Shard>],
    statuses: &[ShardStatus],
    options: &RunOptions,
) -> Result<(u64, Option<u64>, Millis, bool), RunError> {
    let shards = addrs.len() as u32;
    // Resume from the oldest shard checkpoint; a shard that never checkpointed means the start.
    let mut position = match statuses
        .iter()
        .map(|s| s.position.clone())
        .collect::<Option<Vec<_>>>()
    {
        Some(positions) => positions
            .into_iter()
            .min_by_key(|p| p.seq)
            .unwrap_or_default(),
        None => Position::default(),
    };
    let resumed_at = (position.seq > 0).then_some(position.seq);
    if position.cursors.is_empty() {
        position.cursors = vec![Cursor::default(); spec.sources.len()];
    }
    if position.cursors.len() != spec.sources.len() {
        return Err(RunError::Incompatible {
            dir: spec.state_dir.display().to_string(),
            message: format!(
                "it was written with {} sources, the topology has {}",
                position.cursors.len(),
                spec.sources.len()
            ),
        });
    }
    if let Some(seq) = resumed_at {
        info!(seq, "resuming from the oldest shard checkpoint");
    }
    let mut running = Vec::new();
    for (spec_source, cursor) in spec.sources.iter().zip(&position.cursors) {
        // A finished file source is opened again: it checks its input is unchanged and reads
        // files added since. Other sources that ended stay ended.
        if cursor.done && !matches!(spec_source.kind, SourceKind::File { .. }) {
            running.push(None);
            continue;
        }
        let source = source::start(spec_source, cursor.clone()).map_err(|e| RunError::Source {
            source_name: spec_source.name.clone(),
            message: e.to_string(),
        })?;
        running.push(Some(source));
    }

    let decoder = Decoder::new(&spec.event_types);
    let enricher = Enricher::new(spec).map_err(RunError::Enrichment)?;
    let bound = spec.max_out_of_orderness;
    let mut watermark = MIN_TIME;
    let source_watermark = |max: Option<Millis>| max.map_or(MIN_TIME, |m| m.saturating_sub(bound));
    let mut lines_read = 0u64;
    let mut last_input = Instant::now();

    while running.iter().any(Option::is_some) {
        if options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            job.gate.wait_idle();
            return Ok((lines_read, resumed_at, watermark, false));
        }
        let index = position.next_source % running.len();
        let Some(source) = running[index].as_ref() else {
            position.next_source = index + 1;
            continue;
        };
        let message = if source.unbounded {
            match source.chunks.recv_timeout(spec.idle_timeout) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    // Idle: let event time follow the wall clock so deadlines still fire.
                    let idle = last_input.elapsed().as_millis() as Millis;
                    let advanced = source_watermark(position.max_event_time).saturating_add(idle);
                    if advanced > watermark && position.max_event_time.is_some() {
                        watermark = advanced;
                        if !broadcast(job, addrs, Vec::new(), &position, watermark) {
                            break;
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => SourceMessage::End,
            }
        } else {
            source.chunks.recv().unwrap_or(SourceMessage::End)
        };
        let chunk = match message {
            SourceMessage::Chunk(chunk) => chunk,
            SourceMessage::End => {
                position.cursors[index].done = true;
                running[index] = None;
                position.next_source = index + 1;
                continue;
            }
            SourceMessage::Failed(message) => {
                return Err(RunError::Source {
                    source_name: spec.sources[index].name.clone(),
                    message,
                });
            }
        };
        last_input = Instant::now();
        let type_field = spec.sources[index].type_field.as_str();
        let mut per_shard: Vec<Vec<Item>> = (0..shards).map(|_| Vec::new()).collect();
        for (i, line) in chunk.lines.into_iter().enumerate() {
            let seq = position.seq;
            position.seq += 1;
            lines_read += 1;
            let before = watermark;
            match enricher.decode(&decoder, &line, type_field, seq) {
                Ok(event) => {
                    if position.max_event_time.is_none_or(|m| event.time > m) {
                        position.max_event_time = Some(event.time);
                        watermark = watermark.max(source_watermark(position.max_event_time));
                    }
                    let routes = &router.routes[event.type_index as usize];
                    if routes.is_empty() {
                        per_shard[(seq % shards as u64) as usize].push(Item::Unrouted {
                            seq,
                            watermark: before,
                        });
                        continue;
                    }
                    let event = Arc::new(event);
                    let mut primary = true;
                    for (template, key_parts) in routes {
                        let Some(key) = route_key(&event, key_parts) else {
                            continue;
                        };
                        let shard = shard_of(&key, shards) as usize;
                        per_shard[shard].push(Item::Event {
                            event: event.clone(),
                            template: *template,
                            key,
                            primary,
                            watermark: before,
                            traceparent: None,
                        });
                        primary = false;
                    }
                    if primary {
                        per_shard[(seq % shards as u64) as usize].push(Item::Unrouted {
                            seq,
                            watermark: before,
                        });
                    }
                }
                Err(rejection) => {
                    let letter = DeadLetter {
                        reason: rejection.reason,
                        detail: rejection.detail,
                        key: rejection.key,
                        time: rejection.time,
                        raw: line,
                        source: spec.sources[index].name.clone(),
                        file: chunk.file.clone(),
                        line: Some(chunk.first_line + i as u64),
                    };
                    per_shard[(seq % shards as u64) as usize].push(Item::DeadLetter {
                        seq,
                        letter: Box::new(letter),
                        watermark: before,
                    });
                }
            }
        }
        if let Some(counter) = &options.lines_read {
            counter.store(lines_read, Ordering::Relaxed);
        }
        position.cursors[index] = chunk.cursor;
        position.next_source = index + 1;
        if !broadcast(job, addrs, per_shard, &position, watermark) {
            break;
        }
    }
    if let Some(message) = job.fatal() {
        return Err(RunError::Shard(message));
    }
    job.gate.wait_idle();
    Ok((
        lines_read,
        resumed_at,
        position.max_event_time.unwrap_or(MIN_TIME),
        true,
    ))
}

/// Hands every shard its items of a chunk (possibly none: the position and watermark still
/// move), waiting for a credit per batch. Returns `false` if the job has failed.
fn broadcast(
    job: &JobContext,
    addrs: &[Addr<Shard>],
    mut per_shard: Vec<Vec<Item>>,
    position: &Position,
    watermark: Millis,
) -> bool {
    if per_shard.is_empty() {
        per_shard = (0..addrs.len()).map(|_| Vec::new()).collect();
    }
    for ((shard, addr), items) in addrs.iter().enumerate().zip(per_shard) {
        if !job.gate.acquire(shard as u32) {
            return false; // a shard failed for good
        }
        addr.do_send(Deliver(Arc::new(Batch {
            items,
            position: position.clone(),
            watermark,
        })));
    }
    true
}
