//! The shard actor: hosts the virtual process instances of one key group.
//!
//! A shard owns one redb file. Between two checkpoints every change goes into one write
//! transaction; instances live in an in-memory cache in front of it. What a batch of events
//! changed is appended to the shard's instance log after the batch, idle instances are
//! passivated into redb's tables at the checkpoint, and the checkpoint commits. Events arrive
//! in batches from the reader, in input order, each with the source watermark before it, so that replaying the same input from a checkpoint fires the same
//! timers at the same places and produces the same records with the same sequence numbers.

use foldhash::HashMap;
use hashbrown::hash_map::Entry;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use tracing::{debug, debug_span, warn};
use vigil_storage::{
    codec, InstanceId, Passivation, PinnedCheckpoint, ShardStore, ShardTxn, StorageError, TimerKey,
    TimerRef,
};

use crate::event::{DeadLetter, Event, EventId, Reason};
use crate::gate::Gate;
use crate::prefetch::{prefetch, prefetch_lines};
use crate::record::Record;
use crate::sink::Sinks;
use crate::source::Cursor;
use crate::sync::{lock, Mutex};
use crate::template::{
    AnyState, Context as InstanceContext, DynTemplate, TemplateError, TimerChanges, Timers,
};
use crate::time::{Millis, MIN_TIME};

/// Why a shard stopped. Each makes the shard roll back to its last checkpoint and restart;
/// after [`MAX_RESTARTS`] the job fails with it.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("sink: {0}")]
    Sink(#[from] std::io::Error),
    #[error("state: {0}")]
    Codec(#[from] vigil_storage::CodecError),
    #[error("injected fault")]
    Injected,
    #[error("checkpoint commit did not finish: {0}")]
    CommitLost(String),
    #[error("incompatible state: {0}")]
    Incompatible(String),
    #[error("handler of process `{process}` failed on the state itself: {message}")]
    FailedInPlace { process: String, message: String },
}

/// Restarts of one shard actor before the job gives up.
pub const MAX_RESTARTS: u32 = 3;

/// A checkpoint compacts the log (see [`vigil_storage::ShardTxn::compact_log`]) once it holds
/// more than `JobContext::log_compaction_bytes` and more than this many times what is live in
/// it.
const LOG_COMPACTION_FACTOR: u64 = 4;

/// Encodes an instance's record (what [`StoredInstance`] decodes) into `out`; its state goes
/// through `state_bytes` first (both buffers are reused, so this allocates nothing).
fn encode_record(
    job: &JobContext,
    id: &InstanceId,
    instance: &Instance,
    out: &mut Vec<u8>,
    state_bytes: &mut Vec<u8>,
) -> Result<(), vigil_storage::CodecError> {
    let template = &job.templates[id.template as usize];
    let state = instance.state.as_ref().map(|s| {
        state_bytes.clear();
        template.encode_state(s, state_bytes);
        state_bytes.as_slice()
    });
    let stored = StoredInstanceRef {
        meta: &instance.meta,
        state,
    };
    out.clear();
    codec::encode_into(&stored, out)
}

/// Appends an instance's encoded `record` to the log: it is clean and logged now.
fn log_instance(
    txn: &mut ShardTxn,
    id: &InstanceId,
    instance: &mut Instance,
    record: &[u8],
) -> Result<(), StorageError> {
    instance.logged_seq = txn.log_instance(id, record, instance.stored, &instance.meta.timers)?;
    instance.logged_len = logged_len(id, record);
    instance.dirty = false;
    Ok(())
}

/// What an instance's record adds to the log (the record framing is a few bytes more).
fn logged_len(id: &InstanceId, record: &[u8]) -> u32 {
    (record.len() + id.encoded_len()) as u32
}

/// The timer that deletes a tombstone once duplicates can no longer arrive.
const PURGE_TIMER: &str = "__purge";

/// Where the job's reader is: enough to resume reading exactly after the last line consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Lines consumed from the merged input; the next line gets this sequence number.
    pub seq: u64,
    /// The largest event time read so far (the source watermark derives from it).
    pub max_event_time: Option<Millis>,
    /// One cursor per source, in the order of the job's sources.
    pub cursors: Vec<Cursor>,
    /// The source the reader takes its next chunk from.
    pub next_source: usize,
    /// Kafka runner: the upstream partitions seen through this shard's repartition log.
    pub upstream: Vec<Upstream>,
}

/// One partition of an input topic as the Kafka runner's repartition log reports it to a
/// shard: how far it has been forwarded, its largest event time, and whether it ran dry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// `topic/partition`.
    pub name: String,
    /// The next offset not yet forwarded to this shard (earlier ones are duplicates).
    pub next_offset: i64,
    pub max_event_time: Option<Millis>,
    /// Set while the partition is at its end: the watermark it allows (largest event time,
    /// then following the wall clock).
    pub idle_watermark: Option<Millis>,
}

/// What the reader hands a shard.
pub enum Item {
    /// An event for the instance `(template, key)`. `primary` marks the first delivery of an
    /// input event (an event routed to several templates counts once).
    Event {
        event: Arc<Event>,
        template: u16,
        key: Arc<str>,
        primary: bool,
        watermark: Millis,
        /// The W3C trace context the event came with; records it causes carry it.
        traceparent: Option<Arc<str>>,
    },
    /// An event no template subscribes to; counted, nothing else.
    Unrouted { seq: u64, watermark: Millis },
    DeadLetter {
        seq: u64,
        letter: Box<DeadLetter>,
        watermark: Millis,
    },
}

impl Item {
    fn seq(&self) -> u64 {
        match self {
            Item::Event { event, .. } => event.seq,
            Item::Unrouted { seq, .. } | Item::DeadLetter { seq, .. } => *seq,
        }
    }

    /// The instance an event item is for.
    fn id(&self) -> Option<IdRef<'_>> {
        match self {
            Item::Event { template, key, .. } => Some(IdRef {
                template: *template,
                key,
            }),
            Item::Unrouted { .. } | Item::DeadLetter { .. } => None,
        }
    }

    fn watermark(&self) -> Millis {
        match self {
            Item::Event { watermark, .. }
            | Item::Unrouted { watermark, .. }
            | Item::DeadLetter { watermark, .. } => *watermark,
        }
    }
}

/// Everything of one input chunk that belongs to a shard, and where the reader is after it.
pub struct Batch {
    pub items: Vec<Item>,
    pub position: Position,
    /// The source watermark after the chunk.
    pub watermark: Millis,
}

#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct Deliver(pub Arc<Batch>);

/// Opens the shard's state and reports where it is.
#[derive(Message)]
#[rtype(result = "Result<ShardStatus, String>")]
pub struct Recover;

/// The input is exhausted: advance the watermark to `watermark`, fire due timers, checkpoint.
#[derive(Message)]
#[rtype(result = "Result<ShardStatus, String>")]
pub struct Finish {
    pub watermark: Millis,
}

/// Commit a checkpoint now.
#[derive(Message)]
#[rtype(result = "Result<ShardStatus, String>")]
pub struct Checkpoint;

/// Checkpoint and close the state file: this process gives the shard up (Kafka revoked its
/// partition). A later [`Recover`] opens it again.
#[derive(Message)]
#[rtype(result = "Result<ShardStatus, String>")]
pub struct Release;

/// Checkpoint, then export the checkpoint to `path` (a snapshot others can restore from).
#[derive(Message)]
#[rtype(result = "Result<SnapshotTaken, String>")]
pub struct Snapshot {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct SnapshotTaken {
    pub shard: u32,
    /// The position the snapshot resumes from (`None`: the shard never checkpointed).
    pub position: Option<Position>,
    pub bytes: u64,
    pub took: Duration,
}

/// Counts a shard keeps in its checkpoint, so totals survive restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardCounts {
    /// Input lines this shard accounted for (each line is accounted by exactly one shard).
    pub read: u64,
    pub processed: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
    /// Events and timers whose handler kept failing; the events among them are also
    /// counted in `dead_lettered`.
    pub handler_failures: u64,
    pub records: u64,
    pub timers_fired: u64,
    pub instances_started: u64,
    pub instances_ended: u64,
    /// Activations of passivated instances from redb.
    pub instances_loaded: u64,
}

impl ShardCounts {
    pub fn add(&mut self, other: &ShardCounts) {
        self.read += other.read;
        self.processed += other.processed;
        self.duplicates += other.duplicates;
        self.dead_lettered += other.dead_lettered;
        self.handler_failures += other.handler_failures;
        self.records += other.records;
        self.timers_fired += other.timers_fired;
        self.instances_started += other.instances_started;
        self.instances_ended += other.instances_ended;
        self.instances_loaded += other.instances_loaded;
    }
}

#[derive(Debug, Clone, Default)]
pub struct ShardStatus {
    pub shard: u32,
    /// `None` for a shard that has never checkpointed.
    pub position: Option<Position>,
    pub watermark: Millis,
    pub counts: ShardCounts,
    /// Instances in the last checkpoint: live ones and tombstones.
    pub live_instances: u64,
    pub tombstones: u64,
    pub pending_timers: u64,
    pub restarts: u32,
    /// The shard's state file was created by this run.
    pub created: bool,
}

/// A shard's instances as [`ShardStatus`] reports them: live ones, tombstones and their
/// timers. Kept as instances start, end, are purged and set or drop timers, and stored with
/// each checkpoint, so the summary at the end of a run reads it instead of every instance's
/// record (with 10 M instances, 1.9 GB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Census {
    live: u64,
    tombstones: u64,
    timers: u64,
}

/// Applies a change to a census being kept (`None`: not kept, see [`Shard::census`]).
fn tally(census: &mut Option<Census>, live: i64, tombstones: i64, timers: i64) {
    if let Some(census) = census {
        for (count, change) in [
            (&mut census.live, live),
            (&mut census.tombstones, tombstones),
            (&mut census.timers, timers),
        ] {
            debug_assert!(
                count.checked_add_signed(change).is_some(),
                "census below zero"
            );
            *count = count.saturating_add_signed(change);
        }
    }
}

/// Faults injected by tests of supervision and recovery.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// The shard actor fails (as on a storage error) at its first input line at or after
    /// this one, `fail_times` times in a row (each time after restarting).
    pub fail_shard_at: Option<(u32, u64)>,
    pub fail_times: u32,
    /// The first periodic checkpoint of this shard that has a passivation to write fails
    /// in its commit on the blocking pool, after the instances left the cache: the
    /// transaction is dropped uncommitted.
    pub fail_commit: Option<u32>,
    /// Every shard passivates ahead after every batch, as if it never had one waiting (see
    /// `Shard::passivate_ahead`): the tests cannot make a shard wait for its input.
    pub passivate_ahead_always: bool,
}

impl Faults {
    /// Shard `shard` fails at its first input line at or after `line`, `times` times in a row.
    pub fn shard_fails(shard: u32, line: u64, times: u32) -> Faults {
        Faults {
            fail_shard_at: Some((shard, line)),
            fail_times: times,
            ..Faults::default()
        }
    }
}

/// What a shard's state was written for. A state directory is only reused by the same job
/// with the same shards, processes and sources (in the same order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub job: String,
    pub shards: u32,
    pub processes: Vec<String>,
    pub sources: Vec<String>,
}

/// Everything the shards of a job share.
pub struct JobContext {
    pub job: String,
    pub layout: Layout,
    pub state_dir: PathBuf,
    /// Process names, in the order of `templates`.
    pub process_names: Vec<String>,
    pub templates: Vec<Box<dyn DynTemplate>>,
    pub sinks: Sinks,
    pub gate: Gate,
    pub checkpoint_interval: Duration,
    pub passivate_after: Duration,
    /// Resident instances per shard above which the idlest are passivated at a checkpoint.
    pub max_resident: usize,
    /// See [`crate::spec::JobSpec::log_compaction_bytes`].
    pub log_compaction_bytes: u64,
    /// This shard's share of [`crate::spec::JobSpec::max_resident_overshoot`] (`usize::MAX`
    /// for none).
    pub max_resident_overshoot: usize,
    pub dedup_retention: Millis,
    pub max_retries: u32,
    pub faults: Faults,
    /// Set by a shard that failed for good; the reader stops and the run returns it.
    pub fatal: Mutex<Option<String>>,
    /// Where a checkpoint hands what it no longer needs (the batches of its interval, the
    /// instances it passivated), to be freed on a thread of their own (see
    /// [`dispose_on_own_thread`]).
    pub disposal: Sender<Garbage>,
}

/// Memory a checkpoint is done with, freed by the `vigil-free` thread.
pub type Garbage = Box<dyn Send>;

/// A sender whose garbage is freed on a thread of its own. Freeing a second's worth of parsed
/// events (many small allocations) took 8 % of the worker thread, inside the checkpoint, where
/// it held up every shard on that thread; freeing the instances a checkpoint passivates took
/// 2–8 ms of its commit (8 200 instances), which the shard waits for. The thread ends when
/// every sender is dropped. If it cannot be started, the receiver is dropped with it, sends
/// fail, and each checkpoint frees its garbage itself.
pub fn dispose_on_own_thread() -> Sender<Garbage> {
    let (sender, garbage) = std::sync::mpsc::channel::<Garbage>();
    let _ = std::thread::Builder::new()
        .name("vigil-free".into())
        .spawn(move || {
            lower_this_threads_priority();
            garbage.into_iter().for_each(drop)
        });
    sender
}

/// Makes the calling thread yield to the others when the cores are busy (nice 10): freeing
/// can wait, while the worker and commit threads hold up events. With the `vigil-free` thread
/// at nice 0, it took a tenth of the CPU in the latency benchmark beside a shard's commit,
/// which the shard's events wait for. Fails silently where not allowed.
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain system call; `who` 0 is the calling thread on Linux.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
}

impl JobContext {
    /// Has `garbage` freed on the `vigil-free` thread, or here if that thread is gone.
    fn dispose(&self, garbage: impl Send + 'static) {
        if let Err(returned) = self.disposal.send(Box::new(garbage)) {
            drop(returned.0);
        }
    }

    /// Fails the job: records why and wakes a reader waiting for credits.
    pub fn fail(&self, message: String) {
        lock(&self.fatal).get_or_insert(message);
        self.gate.close();
    }

    pub fn fatal(&self) -> Option<String> {
        lock(&self.fatal).clone()
    }
}

/// What the runtime keeps of an instance besides its template state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct InstanceMeta {
    /// The event ids seen, to ignore duplicates.
    seen: SeenIds,
    /// The instance's timers (name, time).
    timers: Timers,
    /// Set once the instance has ended: it is a tombstone until its purge timer.
    ended_at: Option<Millis>,
}

/// An instance as stored in redb.
#[derive(Deserialize)]
struct StoredInstance {
    meta: InstanceMeta,
    /// The template's encoded state; `None` for a tombstone.
    #[serde(with = "serde_bytes")]
    state: Option<Vec<u8>>,
}

/// What the census reads of a stored record: whether it is a tombstone, and how many timers
/// it has. The same layout as [`StoredInstance`], decoded in place: nothing is allocated or
/// copied.
#[derive(Deserialize)]
struct CensusRecord<'a> {
    #[serde(borrow)]
    meta: CensusMeta<'a>,
    #[serde(borrow, with = "serde_bytes")]
    state: Option<&'a [u8]>,
}

/// [`InstanceMeta`]'s fields, read past.
#[derive(Deserialize)]
struct CensusMeta<'a> {
    _seen: CensusSeen,
    #[serde(borrow)]
    timers: Counted<(&'a str, Millis)>,
    _ended_at: Option<Millis>,
}

/// [`SeenIds`]' fields, read past.
#[derive(Deserialize)]
struct CensusSeen {
    _hashes: Counted<u64>,
    _older: u32,
    _since: Millis,
}

/// A sequence decoded element by element, counted and not kept.
struct Counted<T>(u64, std::marker::PhantomData<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Counted<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Elements<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Elements<T> {
            type Value = Counted<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut count = 0;
                while seq.next_element::<T>()?.is_some() {
                    count += 1;
                }
                Ok(Counted(count, std::marker::PhantomData))
            }
        }
        deserializer.deserialize_seq(Elements(std::marker::PhantomData))
    }
}

/// What a checkpoint writes: the same bytes as [`StoredInstance`], from borrowed parts.
#[derive(Serialize)]
struct StoredInstanceRef<'a> {
    meta: &'a InstanceMeta,
    #[serde(with = "serde_bytes")]
    state: Option<&'a [u8]>,
}

struct Instance {
    meta: InstanceMeta,
    state: Option<AnyState>,
    /// Changed since it was last logged.
    dirty: bool,
    /// Activated since the shard last logged what changed (it is in `Shard::touched`).
    touched: bool,
    /// Whether redb's instance table holds a record of it (it was activated from there):
    /// only then does ending it delete one there.
    stored: bool,
    /// The size of its record in the log; 0 if the log has none.
    logged_len: u32,
    /// The log chunk that holds that record.
    logged_seq: u64,
    /// The checkpoint interval (`Shard::interval`) in which a batch last logged it.
    logged_in: u64,
    /// When it was last activated: `Shard::uses` then.
    last_used: u64,
}

impl Instance {
    /// An instance not in the log; `dirty` if redb does not have it either (a new one).
    fn new(meta: InstanceMeta, state: Option<AnyState>, dirty: bool) -> Instance {
        Instance {
            meta,
            state,
            dirty,
            touched: false,
            stored: false,
            logged_len: 0,
            logged_seq: 0,
            logged_in: 0,
            last_used: 0,
        }
    }

    /// An instance from its stored record (in the instance table or the log).
    fn decode(job: &JobContext, template: u16, record: &[u8]) -> Result<Instance, StorageError> {
        let stored: StoredInstance = codec::decode(record)?;
        let state = stored
            .state
            .map(|s| job.templates[template as usize].decode_state(&s))
            .transpose()?;
        Ok(Instance::new(stored.meta, state, false))
    }

    fn logged(&self) -> bool {
        self.logged_len > 0
    }

    /// Its latest record is in a log chunk below `cut`, which a compaction drops.
    fn logged_below(&self, cut: Option<u64>) -> bool {
        self.logged() && cut.is_some_and(|cut| self.logged_seq < cut)
    }

    /// The order in which instances beyond `max_resident` are passivated, lowest first:
    /// tombstones before live instances (a tombstone usually waits only for its purge timer,
    /// which deletes it from redb without reading it back; a live instance is read back for
    /// its next event), each by least recent use.
    fn eviction_rank(&self) -> u64 {
        let live = u64::from(self.state.is_some());
        live << 63 | self.last_used
    }
}

/// A checkpoint written and not yet committed (see [`Shard::prepare_checkpoint`]).
struct Prepared {
    txn: ShardTxn,
    /// Instances taken out of the cache, not yet encoded nor written to redb's tables: the
    /// commit does both, off the worker thread.
    evicted: Vec<(InstanceId, Box<Instance>)>,
    /// How many its transaction passivates (for the log line and a fault injection): those
    /// in `evicted`, and those passivated ahead of it in the interval.
    passivated: usize,
    /// Of those, passivated ahead ([`Shard::passivate_ahead`]).
    passivated_ahead: usize,
    /// The log compaction's cut, if it compacts the log: what was logged below it is gone
    /// from the log (see [`Instance::logged_below`]).
    compacted_below: Option<u64>,
    /// Syncing the sinks, in the commit.
    sink_sync_us: u64,
    /// On the worker thread: everything before the commit.
    prepare_us: u64,
    /// Syncing the sinks, encoding and writing the passivated instances and committing
    /// (`sink_sync_us` included).
    commit_us: u64,
}

/// The hashes of an instance's event ids, to ignore duplicates, in two generations. A new
/// generation starts when the current one began more than `dedup_retention` of watermark
/// before, and the older one is then forgotten: an id is kept for at least `dedup_retention`
/// of watermark after it came, and about twice that at most. So a long-lived instance keeps
/// the ids of that span, not every id it ever had (it did: its record grew with every event,
/// and each event searched them all). A duplicate later than that is taken as a new event.
/// A tombstone keeps its ids until it is purged; it takes a new one only as it is revived.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct SeenIds {
    /// The older generation's hashes, then the current one's; two inline, in the space of a
    /// `Vec` (a new instance is then an allocation fewer).
    hashes: SmallVec<[u64; 2]>,
    /// How many of `hashes` are the older generation's.
    older: u32,
    /// The watermark when the current generation started.
    since: Millis,
}

impl SeenIds {
    /// Remembers `hash` unless it is known: `false` if it was (a duplicate).
    fn take(&mut self, hash: u64, watermark: Millis, retention: Millis) -> bool {
        if self.hashes.contains(&hash) {
            return false;
        }
        self.insert(hash, watermark, retention);
        true
    }

    /// Remembers `hash`, at `watermark`; first, if the current generation began more than
    /// `retention` before, forgets the older one and starts a new one.
    fn insert(&mut self, hash: u64, watermark: Millis, retention: Millis) {
        if self.hashes.len() == self.older as usize {
            self.since = watermark; // the first id of all
        } else if self.since < watermark.saturating_sub(retention) {
            self.hashes.drain(..self.older as usize);
            self.older = self.hashes.len() as u32;
            self.since = watermark;
        }
        self.hashes.push(hash);
    }
}

/// Asks the CPU to load, while item `i` is handled, what the items after it will read first:
/// the event and key of item `i + 4`, and the text and field table of item `i + 2`'s event (its
/// header, asked for two items before, is there by then). The reader thread wrote all of it on
/// the other core; read when its item's turn comes, each was a cache miss on the shard thread.
fn prefetch_ahead(items: &[Item], i: usize) {
    if let Some(Item::Event { event, key, .. }) = items.get(i + 4) {
        prefetch(Arc::as_ptr(event));
        prefetch(Arc::as_ptr(key).cast::<u8>());
    }
    if let Some(Item::Event { event, .. }) = items.get(i + 2) {
        // Once per event, not per route.
        let same =
            |item: &Item| matches!(item, Item::Event { event: e, .. } if Arc::ptr_eq(e, event));
        if !items.get(i + 1).is_some_and(same) {
            event.payload.prefetch();
        }
    }
}

/// Called at position `i` of a list of instances to handle in turn (a batch's items, the
/// instances it changed, those a checkpoint logs again or passivates): at every
/// [`LOOKAHEAD`]-th one, finds the instances one and two groups ahead and asks the CPU to load
/// them, the instance for the farther group, its state for the nearer (whose instance was asked
/// for a group before). Where finding one is a look-up in the cache, the look-ups run back to
/// back, so their cache misses (the table's slot, the key, the instance) overlap instead of
/// coming one at a time; each instance is loaded when its turn comes.
fn prefetch_instances<'a, T>(
    list: &'a [T],
    i: usize,
    instance_of: impl Fn(&'a T) -> Option<&'a Instance>,
) {
    if !i.is_multiple_of(LOOKAHEAD) {
        return;
    }
    let group = |n: usize| {
        let from = (i + n * LOOKAHEAD).min(list.len());
        list[from..].iter().take(LOOKAHEAD).filter_map(&instance_of)
    };
    group(2).for_each(|instance| prefetch_instance(instance));
    group(1).for_each(prefetch_state);
}

/// [`prefetch_instances`] for a list of ids of the cache's instances, one group farther
/// ahead first: the stored keys of the group after the two it looks up are asked for (a
/// [`KeyProbe`] each), so that its look-ups compare keys already loaded.
fn prefetch_cached<'a, T>(
    cache: &'a InstanceCache,
    list: &'a [T],
    i: usize,
    id_of: impl Fn(&'a T) -> Option<IdRef<'a>>,
) {
    if !i.is_multiple_of(LOOKAHEAD) {
        return;
    }
    let from = (i + 3 * LOOKAHEAD).min(list.len());
    for id in list[from..].iter().take(LOOKAHEAD).filter_map(&id_of) {
        cache.get(&KeyProbe(id));
    }
    prefetch_instances(list, i, |item| cache.get(&id_of(item)?).map(Box::as_ref));
}

/// Asks the CPU to load an instance, all of it.
fn prefetch_instance(instance: *const Instance) {
    prefetch_lines(instance, size_of::<Instance>());
}

/// Asks the CPU to load the start of an instance's state, if it has one, and its lists of
/// event ids and timers where they outgrew the instance (this reads the instance: ask for it
/// first). A delivery searches the ids first thing (unless it has so many that their
/// [`IdFilter`] answers).
fn prefetch_state(instance: &Instance) {
    if let Some(state) = &instance.state {
        prefetch_lines(&**state as *const (dyn std::any::Any + Send), 128);
    }
    let (seen, timers) = (&instance.meta.seen.hashes, &instance.meta.timers);
    // Searched only up to a filter's threshold; beyond it the filter is.
    if seen.spilled() && seen.len() <= IdFilter::FROM {
        prefetch_lines(seen.as_ptr(), size_of_val(seen.as_slice()));
    }
    if timers.spilled() {
        prefetch_lines(timers.as_ptr(), size_of_val(timers.as_slice()));
    }
}

/// Instances [`Shard::passivate_ahead`] passivates at a time: about a tenth of a
/// millisecond of the worker thread, which a batch that comes meanwhile waits for.
const PASSIVATE_AHEAD: usize = 64;

/// The timers due next whose instances [`Shard::prefetch_upcoming_timers`] asks for, and of
/// those how many it looks up (the others' keys only).
const UPCOMING_TIMERS: usize = 6;
const UPCOMING_LOOKED_UP: usize = 2;

/// Instances [`prefetch_instances`] looks up at a time.
const LOOKAHEAD: usize = 16;

/// An [`InstanceId`] borrowed from an item, to look it up without counting a reference to the
/// key. Hashes as the id does (the derived `Hash` of the same fields in the same order).
#[derive(Hash)]
struct IdRef<'a> {
    template: u16,
    key: &'a str,
}

impl IdRef<'_> {
    fn of(id: &InstanceId) -> IdRef<'_> {
        IdRef {
            template: id.template,
            key: &id.key,
        }
    }
}

impl hashbrown::Equivalent<InstanceId> for IdRef<'_> {
    fn equivalent(&self, id: &InstanceId) -> bool {
        self.template == id.template && self.key == &*id.key
    }
}

/// An id to look up that matches no instance: the look-up asks the CPU to load the key of
/// each instance it would compare with (the one with this id, if there is one, and rarely
/// another), and reads none of them. A look-up of the id a little later then finds its key
/// loaded. Hashes as the id does (its one field's hash).
#[derive(Hash)]
struct KeyProbe<'a>(IdRef<'a>);

impl hashbrown::Equivalent<InstanceId> for KeyProbe<'_> {
    fn equivalent(&self, id: &InstanceId) -> bool {
        prefetch(Arc::as_ptr(&id.key).cast::<u8>());
        false
    }
}

/// A Bloom filter over the event ids of an instance that has many (two bits of 8 192 an id,
/// 1 KiB), so that a new id, the usual case, is known new without searching them all. A key
/// with a steady stream of events keeps every id of `dedup_retention`, a thousand or more, and
/// each event searched them (14 % of a run's samples with 1 000 events a key). Kept beside the
/// instance table, for the few instances that need one: a pointer in every instance made
/// each 8 bytes larger, for a filter few need.
struct IdFilter {
    bits: [u64; 128],
    /// The ids it has: `SeenIds::since` and the number of hashes then. An instance's ids can
    /// change without the filter (it takes ids without one while it has at most
    /// [`IdFilter::FROM`], after a new generation; a purged key starts again); these two differ
    /// then, and the filter is made again.
    of: (Millis, usize),
}

impl IdFilter {
    /// Ids an instance has before it gets a filter: fewer are searched as fast.
    const FROM: usize = 32;

    fn of(seen: &SeenIds) -> IdFilter {
        let mut filter = IdFilter {
            bits: [0; 128],
            of: (seen.since, seen.hashes.len()),
        };
        for &hash in &seen.hashes {
            filter.set(hash);
        }
        filter
    }

    /// [`SeenIds::take`], through the filter; made again first if `seen` changed without it.
    fn take(
        &mut self,
        seen: &mut SeenIds,
        hash: u64,
        watermark: Millis,
        retention: Millis,
    ) -> bool {
        if self.of != (seen.since, seen.hashes.len()) {
            *self = IdFilter::of(seen);
        }
        if self.may_contain(hash) && seen.hashes.contains(&hash) {
            return false;
        }
        seen.insert(hash, watermark, retention);
        if self.of == (seen.since, seen.hashes.len() - 1) {
            self.set(hash);
            self.of.1 += 1;
        } else {
            *self = IdFilter::of(seen); // a new generation: the older's ids went
        }
        true
    }

    /// The two bits of `hash`, from its top 26 (FNV-1a mixes its high bits the most).
    fn bits(hash: u64) -> [usize; 2] {
        [(hash >> 51) as usize, (hash >> 38) as usize & 8191]
    }

    fn set(&mut self, hash: u64) {
        for bit in IdFilter::bits(hash) {
            self.bits[bit / 64] |= 1 << (bit % 64);
        }
    }

    fn may_contain(&self, hash: u64) -> bool {
        IdFilter::bits(hash)
            .iter()
            .all(|&bit| self.bits[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// Lowers the shard's bound on the earliest timer (`Shard::next_timer`) to `time`: a timer
/// at `time` is now in memory.
fn lower_to(next_timer: &mut Option<Millis>, time: Millis) {
    *next_timer = Some(next_timer.map_or(time, |t| t.min(time)));
}

/// Sets a timer of a resident instance in the transaction's index and lowers the shard's
/// bound on the earliest timer to it. It takes the shard's fields, not the shard: the handler
/// path calls it while it holds the instance borrowed from the cache.
fn set_timer(
    txn: &mut ShardTxn,
    next_timer: &mut Option<Millis>,
    timer: TimerRef<'_>,
) -> Result<(), StorageError> {
    lower_to(next_timer, timer.time);
    txn.set_timer(timer)
}

/// The timer `name` of instance `id`, at `time`.
fn timer_of<'a>(id: &'a InstanceId, name: &'a str, time: Millis) -> TimerRef<'a> {
    TimerRef {
        time,
        template: id.template,
        key: &id.key,
        name,
    }
}

/// An instance passivated by a checkpoint, as [`ShardTxn::passivate`] takes it.
struct Passivated {
    /// Where in the commit's buffer of records its encoded id is.
    encoded_id: std::ops::Range<usize>,
    /// Where in that buffer its record is, if it changed since it was stored.
    record: Option<std::ops::Range<usize>>,
    logged: bool,
    timers: Timers,
}

impl Prepared {
    /// Syncs the sinks and keeps their marks in the checkpoint, encodes the passivated
    /// instances and writes them to the instance and timer tables, then commits. The sink
    /// syncs (fsyncs, or waits for a broker's acknowledgements), the encoding and the B-tree
    /// inserts are most of a checkpoint's cost: the periodic checkpoint does them off the
    /// worker thread, which the worker's other shards would otherwise wait for. The shard
    /// emits nothing until the commit is done, so the marks are where it was when prepared.
    fn commit(&mut self, job: &JobContext, shard: u32) -> Result<(), ShardError> {
        let started = Instant::now();
        // What the checkpoint covers is durable in the sinks before the checkpoint says so.
        job.sinks.sync()?;
        self.txn
            .put_meta("sink_marks", &codec::encode(&job.sinks.marks(shard)))?;
        self.sink_sync_us = started.elapsed().as_micros() as u64;
        let evicted = std::mem::take(&mut self.evicted);
        passivate(job, &mut self.txn, evicted, self.compacted_below)?;
        self.txn.commit()?;
        self.commit_us = started.elapsed().as_micros() as u64;
        Ok(())
    }
}

/// Encodes instances taken out of the cache and writes them to the instance and timer tables
/// ([`ShardTxn::passivate`]); they are then freed on `vigil-free` (while a checkpoint's commit
/// writes and fsyncs). `compacted_below`: the cut of a log compaction in the same transaction.
fn passivate(
    job: &JobContext,
    txn: &mut ShardTxn,
    mut evicted: Vec<(InstanceId, Box<Instance>)>,
    compacted_below: Option<u64>,
) -> Result<(), ShardError> {
    let (passivated, records) = encode_passivated(job, &mut evicted, compacted_below)?;
    let passivations: Vec<Passivation> = (passivated.iter())
        .map(|instance| Passivation {
            encoded_id: &records[instance.encoded_id.clone()],
            record: instance.record.clone().map(|r| &records[r]),
            logged: instance.logged,
            timers: &instance.timers,
        })
        .collect();
    txn.passivate(&passivations)?;
    drop(passivations);
    job.dispose((evicted, passivated));
    Ok(())
}

/// Where each instance of the cache is, in the order of its table, which every pass over it
/// follows: a pass asks for the instance [`LOOKAHEAD`] ahead of the one it reads (the
/// addresses only steer the CPU's loads; nothing reads through them). Valid until the cache
/// changes.
struct CacheOrder(Vec<*const Instance>);

impl CacheOrder {
    fn of(cache: &InstanceCache) -> CacheOrder {
        CacheOrder(cache.values().map(|i| &**i as *const Instance).collect())
    }

    fn prefetch_ahead_of(&self, at: usize) {
        if let Some(&ahead) = self.0.get(at + LOOKAHEAD) {
            prefetch_instance(ahead);
        }
    }

    /// The `excess`-th lowest [`Instance::eviction_rank`] (`excess` below the cache's size):
    /// the instances ranked below it are the `excess` to passivate.
    fn rank_cutoff(&self, cache: &InstanceCache, excess: usize) -> u64 {
        let mut ranks: Vec<u64> = (cache.values().enumerate())
            .map(|(at, i)| {
                self.prefetch_ahead_of(at);
                i.eviction_rank()
            })
            .collect();
        *ranks.select_nth_unstable(excess).1
    }
}

/// About the `excess`-th lowest [`Instance::eviction_rank`] (`excess` at least 1 and below the
/// cache's size), from the ranks of [`RANK_SAMPLE`] of the instances: the first in the
/// table's order, which is their keys' hashes', not their ranks'. Exact for a cache no larger
/// than the sample. A pass over the cache less than [`CacheOrder::rank_cutoff`], for
/// passivating ahead, where the number passivated need not be exact. Above the sample's
/// lowest rank, so that at least one instance ranks below it (none would leave the next batch
/// to pass over the cache again).
fn sampled_rank_cutoff(cache: &InstanceCache, excess: usize) -> u64 {
    let mut ranks: Vec<u64> = (cache.values().take(RANK_SAMPLE))
        .map(|i| i.eviction_rank())
        .collect();
    let at = (excess as u128 * ranks.len() as u128 / cache.len() as u128) as usize;
    let at = at.clamp(1, ranks.len() - 1);
    *ranks.select_nth_unstable(at).1
}

/// Instances [`sampled_rank_cutoff`] reads the ranks of.
const RANK_SAMPLE: usize = 1024;

/// The instances a checkpoint passivates, in key order (`InstanceId`'s order is its bytes'
/// order: they land on the same or neighbouring B-tree pages), as [`ShardTxn::passivate`]
/// takes them: each one's encoded id, and its record if it changed since it was stored, end
/// to end in one buffer. Their timers move out of them.
fn encode_passivated(
    job: &JobContext,
    evicted: &mut [(InstanceId, Box<Instance>)],
    compacted_below: Option<u64>,
) -> Result<(Vec<Passivated>, Vec<u8>), ShardError> {
    evicted.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut passivated = Vec::with_capacity(evicted.len());
    let (mut records, mut record, mut state_bytes) = (Vec::new(), Vec::new(), Vec::new());
    for at in 0..evicted.len() {
        prefetch_instances(evicted, at, |(_, instance)| Some(instance));
        let (id, instance) = &mut evicted[at];
        // The stored record (if any) is not the instance's latest.
        let changed = instance.dirty || instance.logged();
        if changed {
            encode_record(job, id, instance, &mut record, &mut state_bytes)?;
        }
        if records.is_empty() {
            let each = id.encoded_len() + if changed { record.len() } else { 0 };
            records.reserve(passivated.capacity() * (each + 16));
        }
        let at = records.len();
        id.encode_into(&mut records);
        let encoded_id = at..records.len();
        let record = changed.then(|| {
            records.extend_from_slice(&record);
            records.len() - record.len()..records.len()
        });
        passivated.push(Passivated {
            // Nothing to forget in a dropped chunk.
            logged: instance.logged() && !instance.logged_below(compacted_below),
            timers: std::mem::take(&mut instance.meta.timers),
            encoded_id,
            record,
        });
    }
    Ok((passivated, records))
}

/// What a handler call is about.
#[derive(Clone, Copy)]
enum Trigger<'a> {
    Event(&'a Event),
    Timer(&'a str, Millis),
}

/// One handler call, tried in place or on copies by [`Shard::run_handler`].
struct HandlerCall<'a> {
    template: &'a dyn DynTemplate,
    key: &'a str,
    time: Millis,
    watermark: Millis,
    trigger: Trigger<'a>,
}

/// What a handler call that succeeded did besides changing the state.
struct Handled {
    outputs: Vec<Record>,
    /// Each timer it set or cancelled, with its time before the call.
    timers_before: TimerChanges,
}

/// Why a handler call failed.
struct HandlerFailure {
    message: String,
    /// A panic or a [`TemplateError::Retryable`].
    retryable: bool,
}

impl HandlerCall<'_> {
    /// Calls the handler on copies of `state` and `timers`, up to `1 + max_retries` times
    /// while it fails with a retryable failure; keeps the copies of the call that succeeds.
    /// Otherwise returns the last failure's message, leaving both as they were.
    fn attempt_on_copies(
        &self,
        state: &mut AnyState,
        timers: &mut Timers,
        max_retries: u32,
    ) -> Result<Handled, String> {
        let mut failure = String::new();
        for _attempt in 0..=max_retries {
            let mut attempt_timers = timers.clone();
            let mut attempt_state = self.template.clone_state(state);
            match self.attempt(&mut attempt_state, &mut attempt_timers) {
                Ok(handled) => {
                    *state = attempt_state;
                    *timers = attempt_timers;
                    return Ok(handled);
                }
                Err(f) if f.retryable => failure = f.message,
                Err(f) => return Err(f.message),
            }
        }
        Err(failure)
    }

    /// Calls the handler on `state` and `timers`, catching a panic. On failure they may be
    /// half changed.
    fn attempt(
        &self,
        state: &mut AnyState,
        timers: &mut Timers,
    ) -> Result<Handled, HandlerFailure> {
        let mut outputs = Vec::new();
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut cx =
                InstanceContext::new(self.key, self.time, self.watermark, &mut outputs, timers);
            let result = match self.trigger {
                Trigger::Event(event) => self.template.on_event(state, event, &mut cx),
                Trigger::Timer(name, _) => self.template.on_timer(state, name, &mut cx),
            };
            result.map(|()| cx.timers_before)
        }));
        let (message, retryable) = match result {
            Ok(Ok(timers_before)) => {
                return Ok(Handled {
                    outputs,
                    timers_before,
                })
            }
            Ok(Err(TemplateError::Permanent(message))) => (message, false),
            Ok(Err(TemplateError::Retryable(message))) => (message, true),
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".into());
                (format!("handler panicked: {message}"), true)
            }
        };
        Err(HandlerFailure { message, retryable })
    }
}

/// The resident instances by id.
type InstanceCache = hashbrown::HashMap<InstanceId, Box<Instance>, foldhash::fast::RandomState>;

pub struct Shard {
    id: u32,
    job: Arc<JobContext>,
    store: Option<ShardStore>,
    txn: Option<ShardTxn>,
    /// Boxed: the table holds 32 bytes per instance, not 200, so it grows (new pages, rehashes)
    /// and is passed over (eviction) in a sixth of the memory. A `hashbrown` map for look-ups
    /// by a borrowed id ([`IdRef`]), which std's maps do not offer.
    cache: InstanceCache,
    /// Instances taken out of the cache to be passivated while the shard has no batch waiting
    /// ([`Shard::passivate_ahead`]), not yet written: an event or a timer for one takes
    /// it back. A checkpoint passivates those still here, unless the shard [`Shard::keeps_up`].
    passivating: InstanceCache,
    /// The ids taken into `passivating`, in descending order: passivated from the end, so in
    /// key order, and keys that grow go in at the end of the instance table. (The ids of
    /// instances taken back stay here, and are skipped.)
    passivating_order: Vec<InstanceId>,
    /// Instances passivated ahead since the last checkpoint.
    passivated_ahead: usize,
    /// An average of how often the shard had no batch waiting after one: it passivates ahead
    /// only if at least half the time, so that a shard the input keeps busy passivates at its
    /// checkpoints only (passivating ahead now and then would add passes over its cache).
    idle_share: f64,
    /// Filters over the ids of resident instances with many (see [`IdFilter`]); emptied at
    /// each checkpoint, made again as those instances take ids.
    id_filters: HashMap<InstanceId, IdFilter>,
    /// Instances activated since the shard last logged what changed: the only ones that can
    /// have changed.
    touched: Vec<InstanceId>,
    /// Instances a batch found changed but had logged already in this interval: left for the
    /// checkpoint, which without passivation or a log compaction logs only these (possibly named
    /// more than once, or ended since) instead of looking through the whole cache.
    relog: Vec<InstanceId>,
    /// When a checkpoint last looked for idle instances to passivate.
    idle_looked_at: Option<Instant>,
    /// Instances logged since the last checkpoint (for its log line).
    logged_since: u64,
    /// Checkpoints so far (from 1): numbers the interval batches are logged in.
    interval: u64,
    /// The census of this shard's instances, as of its last checkpoint plus the changes
    /// since. `None` for a state file a build before it was kept last checkpointed: the end
    /// of the run then counts every instance's record.
    census: Option<Census>,
    /// The buffer instance records are encoded into.
    record: Vec<u8>,
    /// The buffer an instance's state is encoded into, before it goes into its record.
    state_bytes: Vec<u8>,
    watermark: Millis,
    position: Option<Position>,
    out_seq: u64,
    counts: ShardCounts,
    /// Batches since the last checkpoint, replayed if the actor restarts.
    journal: Vec<Arc<Batch>>,
    changed: bool,
    /// No timer is due before this time (a lower bound: a scan may still find none).
    next_timer: Option<Millis>,
    restarts: u32,
    /// Failed for good: the job is failing; batches are acknowledged and dropped.
    dead: bool,
    /// The state file did not exist before this run.
    created: bool,
    faults_fired: u32,
    commit_fault_fired: bool,
    /// The trace context of the event being handled, for the records it causes.
    traceparent: Option<Arc<str>>,
    /// Activations so far: orders the instances by last use, for passivating the least
    /// recently used.
    uses: u64,
    /// When each batch since `passivate_after` ago started, and `uses` then: an instance
    /// last used before one of these is idle since at least its time. (One clock read per
    /// batch, not per activation.)
    batch_starts: VecDeque<(Instant, u64)>,
    /// Per template: its handlers run on a copy of the state, with retries, because it does
    /// not handle in place or has failed in place (kept across restarts).
    careful: Vec<bool>,
}

impl Shard {
    pub fn new(id: u32, job: Arc<JobContext>) -> Shard {
        Shard {
            id,
            store: None,
            txn: None,
            cache: InstanceCache::default(),
            passivating: InstanceCache::default(),
            passivating_order: Vec::new(),
            passivated_ahead: 0,
            idle_share: 1.0,
            id_filters: HashMap::default(),
            touched: Vec::new(),
            relog: Vec::new(),
            idle_looked_at: None,
            logged_since: 0,
            interval: 1,
            census: Some(Census::default()),
            record: Vec::new(),
            state_bytes: Vec::new(),
            watermark: MIN_TIME,
            position: None,
            out_seq: 0,
            counts: ShardCounts::default(),
            journal: Vec::new(),
            changed: false,
            next_timer: None,
            restarts: 0,
            dead: false,
            created: false,
            faults_fired: 0,
            commit_fault_fired: false,
            traceparent: None,
            uses: 0,
            batch_starts: VecDeque::new(),
            careful: job
                .templates
                .iter()
                .map(|t| !t.handles_in_place())
                .collect(),
            job,
        }
    }

    pub fn path(state_dir: &std::path::Path, shard: u32) -> PathBuf {
        state_dir.join(format!("shard-{shard:04}.redb"))
    }

    /// Opens the store (once) and loads the last checkpoint: its metadata and the instances
    /// it had in memory.
    fn recover(&mut self) -> Result<(), ShardError> {
        self.txn = None; // redb has one write transaction at a time: roll this one back first
        self.note_batch_start();
        if self.store.is_none() {
            let path = Self::path(&self.job.state_dir, self.id);
            self.created = !path.exists();
            self.store = Some(ShardStore::open(&path)?);
        }
        let store = self.store.as_ref().expect("opened above");
        let (txn, logged) = store.begin()?;
        if let Some(bytes) = txn.meta("layout")? {
            let found: Layout = codec::decode(&bytes)?;
            if found != self.job.layout {
                return Err(ShardError::Incompatible(format!(
                    "{} was written for {found:?}, this topology is {:?}; use another state directory \
                     (or delete this one to start over)",
                    store.path().display(),
                    self.job.layout
                )));
            }
        }
        let meta = |name: &str| txn.meta(name);
        self.position = meta("position")?.map(|b| codec::decode(&b)).transpose()?;
        self.watermark = meta("watermark")?
            .map(|b| codec::decode(&b))
            .transpose()?
            .unwrap_or(MIN_TIME);
        self.out_seq = meta("out_seq")?
            .map(|b| codec::decode(&b))
            .transpose()?
            .unwrap_or(0);
        let counts = meta("counts")?;
        self.census = match meta("census")? {
            Some(bytes) => Some(codec::decode(&bytes)?),
            // No checkpoint yet, so no instances.
            None if counts.is_none() => Some(Census::default()),
            None => None,
        };
        self.counts = counts
            .map(|b| codec::decode(&b))
            .transpose()?
            .unwrap_or_default();
        self.next_timer = txn.next_timer()?;
        let marks: Vec<(String, Vec<u8>)> = meta("sink_marks")?
            .map(|b| codec::decode(&b))
            .transpose()?
            .unwrap_or_default();
        self.job.sinks.restore(self.id, &marks)?;
        self.txn = Some(txn);
        self.drop_resident();
        for logged in logged {
            let mut instance = Instance::decode(&self.job, logged.id.template, &logged.record)?;
            instance.stored = logged.stored;
            instance.logged_len = logged_len(&logged.id, &logged.record);
            instance.logged_seq = logged.seq;
            self.uses += 1;
            instance.last_used = self.uses;
            self.cache.insert(logged.id, Box::new(instance));
        }
        self.changed = false;
        Ok(())
    }

    /// Drops what the shard holds in memory of its instances (the checkpoint has them).
    fn drop_resident(&mut self) {
        self.cache.clear();
        self.passivating.clear();
        self.passivating_order.clear();
        self.passivated_ahead = 0;
        self.id_filters.clear();
        self.touched.clear();
        self.relog.clear();
    }

    fn txn(&mut self) -> &mut ShardTxn {
        self.txn.as_mut().expect("shard recovered before use")
    }

    /// Where the shard is (without the census).
    fn status(&self) -> ShardStatus {
        ShardStatus {
            shard: self.id,
            position: self.position.clone(),
            watermark: self.watermark,
            counts: self.counts.clone(),
            restarts: self.restarts,
            created: self.created,
            ..ShardStatus::default()
        }
    }

    /// Checkpoints, then replies with the shard's status and the census of that checkpoint:
    /// the one the shard keeps ([`Shard::census`]), or for a state file it was not kept for, a
    /// scan of every instance's record, on a thread of the blocking pool (so the shards of a
    /// job count in parallel). A debug build scans always, and fails if the two differ.
    fn checkpoint_and_census(&mut self) -> ResponseFuture<Result<ShardStatus, String>> {
        let id = self.id;
        let pinned = self
            .checkpoint()
            .and_then(|()| {
                Ok(self
                    .store
                    .as_ref()
                    .map(ShardStore::last_checkpoint)
                    .transpose()?)
            })
            .map_err(|e| format!("shard {id}: {e}"));
        let mut status = self.status();
        let kept = self.census;
        Box::pin(async move {
            let Some(pinned) = pinned? else {
                return Ok(status);
            };
            let census = match kept {
                Some(kept) if !cfg!(debug_assertions) => kept,
                // A state file the census was not kept for; in a debug build (the tests)
                // every time, to check the kept census against the records.
                _ => {
                    let found = match actix_rt::task::spawn_blocking(move || census(pinned)).await {
                        Ok(result) => result.map_err(|e| format!("shard {id}: {e}"))?,
                        Err(e) => return Err(format!("shard {id}: census did not finish: {e}")),
                    };
                    if let Some(kept) = kept.filter(|kept| *kept != found) {
                        return Err(format!(
                            "shard {id}: the census kept, {kept:?}, is not the records' {found:?}"
                        ));
                    }
                    found
                }
            };
            status.live_instances = census.live;
            status.tombstones = census.tombstones;
            status.pending_timers = census.timers;
            Ok(status)
        })
    }

    fn process_batch(&mut self, batch: &Batch) -> Result<(), ShardError> {
        self.note_batch_start();
        let done = self.position.as_ref().map_or(0, |p| p.seq);
        if batch.position.seq < done {
            return Ok(()); // replayed input this shard already has in its checkpoint
        }
        // Items before `done` are replayed input this shard already has; a batch at `done`
        // itself carries no new line, only a newer watermark (the source was idle).
        for (i, item) in batch.items.iter().enumerate() {
            prefetch_ahead(&batch.items, i);
            prefetch_cached(&self.cache, &batch.items, i, Item::id);
            if item.seq() < done {
                continue;
            }
            if let Some((shard, seq)) = self.job.faults.fail_shard_at {
                if shard == self.id
                    && item.seq() >= seq
                    && self.faults_fired < self.job.faults.fail_times.max(1)
                {
                    self.faults_fired += 1;
                    return Err(ShardError::Injected);
                }
            }
            self.advance_watermark(item.watermark())?;
            // A line routed to several instances is read once, by its primary delivery.
            if !matches!(item, Item::Event { primary: false, .. }) {
                self.counts.read += 1;
            }
            match item {
                Item::Event {
                    event,
                    template,
                    key,
                    primary,
                    traceparent,
                    ..
                } => {
                    self.traceparent = traceparent.clone();
                    let delivered = self.deliver(event, *template, key, *primary);
                    self.traceparent = None;
                    delivered?;
                }
                Item::Unrouted { .. } => self.counts.processed += 1,
                Item::DeadLetter { letter, .. } => {
                    self.counts.dead_lettered += 1;
                    self.emit(None, Record::dead_letter(letter))?;
                }
            }
        }
        self.advance_watermark(batch.watermark)?;
        self.position = Some(batch.position.clone());
        self.changed = true;
        self.log_changes()
    }

    /// Appends the instances changed since the last call to the log entry the next
    /// checkpoint commits. Called after every batch, so that a checkpoint has little left to
    /// encode and holds up the worker thread only briefly; an instance changed by several
    /// events of one batch is written once. An instance already logged in this interval is
    /// left dirty for the checkpoint: a key that changes with every batch is then written
    /// twice per interval, not once per batch.
    fn log_changes(&mut self) -> Result<(), ShardError> {
        let txn = self.txn.as_mut().expect("recovered");
        let mut record = std::mem::take(&mut self.record);
        let state_bytes = &mut self.state_bytes;
        let mut touched = std::mem::take(&mut self.touched);
        for i in 0..touched.len() {
            prefetch_cached(&self.cache, &touched, i, |id| Some(IdRef::of(id)));
            let id = &touched[i];
            let Some(instance) = self.cache.get_mut(id) else {
                continue; // ended since
            };
            instance.touched = false;
            if !instance.dirty {
                continue;
            }
            if instance.logged_in == self.interval {
                self.relog.push(id.clone());
                continue;
            }
            instance.logged_in = self.interval;
            encode_record(&self.job, id, instance, &mut record, state_bytes)?;
            log_instance(txn, id, instance, &record)?;
            self.logged_since += 1;
        }
        touched.clear();
        self.touched = touched;
        self.record = record;
        Ok(())
    }

    fn emit(&mut self, process: Option<usize>, record: Record) -> Result<(), ShardError> {
        self.out_seq += 1;
        self.counts.records += 1;
        self.job.sinks.write(
            process,
            self.id,
            self.out_seq,
            &record,
            self.traceparent.as_deref(),
        )?;
        Ok(())
    }

    /// Loads an instance into the cache: from the cache, from redb, or new. (One lookup in
    /// the cache: it is the shard's largest table, and each delivery activates.)
    fn activate(&mut self, id: &InstanceId) -> Result<&mut Instance, StorageError> {
        let instance = match self.cache.entry(id.clone()) {
            Entry::Occupied(cached) => &mut **cached.into_mut(),
            // Taken out to be passivated, and not yet written: back into the cache.
            Entry::Vacant(vacant) if self.passivating.contains_key(id) => {
                let instance = self.passivating.remove(id).expect("contained");
                &mut **vacant.insert(instance)
            }
            Entry::Vacant(vacant) => {
                let txn = self.txn.as_mut().expect("recovered");
                let instance = match txn.instance(id)? {
                    Some(bytes) => {
                        self.counts.instances_loaded += 1;
                        let mut instance = Instance::decode(&self.job, id.template, &bytes)?;
                        instance.stored = true;
                        if let Some(earliest) = instance.meta.timers.iter().map(|(_, t)| *t).min() {
                            // Its timers move to memory: log them with it after this batch.
                            // Only the earliest was in the timer table: the others may be due
                            // before what the last scan found next.
                            txn.activate_timers(id, &instance.meta.timers)?;
                            lower_to(&mut self.next_timer, earliest);
                            instance.dirty = true;
                        }
                        instance
                    }
                    None => {
                        self.counts.instances_started += 1;
                        tally(&mut self.census, 1, 0, 0);
                        let state = self.job.templates[id.template as usize].new_state();
                        Instance::new(InstanceMeta::default(), Some(state), true)
                    }
                };
                &mut **vacant.insert(Box::new(instance))
            }
        };
        self.uses += 1;
        instance.last_used = self.uses;
        if !instance.touched {
            instance.touched = true;
            self.touched.push(id.clone());
        }
        Ok(instance)
    }

    fn deliver(
        &mut self,
        event: &Arc<Event>,
        template: u16,
        key: &Arc<str>,
        primary: bool,
    ) -> Result<(), ShardError> {
        let _span =
            debug_span!("event", seq = event.seq, r#type = %event.type_name, key = %key).entered();
        let id = InstanceId::new(template, key.clone());
        let id_hash = event
            .id
            .as_ref()
            .filter(|_| self.job.templates[template as usize].dedup_by_event_id())
            .map(EventId::stable_hash);
        let (watermark, retention) = (self.watermark, self.job.dedup_retention);
        let instance = self.activate(&id)?;
        let ended = instance.state.is_none();
        if let Some(hash) = id_hash {
            let new = if instance.meta.seen.hashes.len() > IdFilter::FROM {
                self.take_with_filter(&id, hash, watermark, retention)
            } else {
                let new = instance.meta.seen.take(hash, watermark, retention);
                instance.dirty |= new;
                new
            };
            if !new {
                if primary {
                    self.counts.duplicates += 1;
                }
                return Ok(());
            }
        }
        if ended {
            self.revive(&id)?;
        }
        let handled = self.run_handler(&id, Trigger::Event(event))?;
        if primary {
            if handled {
                self.counts.processed += 1;
            } else {
                self.counts.dead_lettered += 1;
            }
        }
        Ok(())
    }

    /// [`SeenIds::take`] for an instance with many ids, through its filter in
    /// `Shard::id_filters` (made again if the ids changed without it). Out of line: most
    /// instances never come here.
    #[cold]
    #[inline(never)]
    fn take_with_filter(
        &mut self,
        id: &InstanceId,
        hash: u64,
        watermark: Millis,
        retention: Millis,
    ) -> bool {
        let instance = self.cache.get_mut(id).expect("activated");
        let seen = &mut instance.meta.seen;
        let filter = self
            .id_filters
            .entry(id.clone())
            .or_insert_with(|| IdFilter::of(seen));
        let new = filter.take(seen, hash, watermark, retention);
        instance.dirty |= new;
        new
    }

    /// A new (not duplicate) event for an ended instance starts the key's next incarnation:
    /// a customer places another order, a cart fills again. The tombstone's event ids stay, so
    /// duplicates of the earlier incarnation's events are still ignored.
    fn revive(&mut self, id: &InstanceId) -> Result<(), ShardError> {
        let template = &self.job.templates[id.template as usize];
        let instance = self.cache.get_mut(id).expect("activated");
        instance.state = Some(template.new_state());
        instance.meta.ended_at = None;
        let purge: Timers = instance
            .meta
            .timers
            .iter()
            .filter(|(n, _)| n == PURGE_TIMER)
            .cloned()
            .collect();
        instance.meta.timers.retain(|(n, _)| n != PURGE_TIMER);
        instance.dirty = true;
        self.counts.instances_started += 1;
        tally(&mut self.census, 1, -1, -(purge.len() as i64));
        for (name, time) in &purge {
            self.txn().remove_timer(timer_of(id, name, *time))?;
        }
        Ok(())
    }

    /// Calls the template's handler, then applies the outcome: records, timer changes,
    /// completion. A template that [handles in place](DynTemplate::handles_in_place) gets the
    /// instance's state itself; if its handler fails there, the shard restarts from its last
    /// checkpoint and handles that template's events like any other's from then on: on a copy
    /// of the state, with bounded retries. A handler that keeps failing leaves the instance as
    /// it was and dead-letters the event (or drops the timer) with the reason; then returns
    /// `false`.
    fn run_handler(&mut self, id: &InstanceId, trigger: Trigger<'_>) -> Result<bool, ShardError> {
        let job = self.job.clone();
        let template = &job.templates[id.template as usize];
        let _span = debug_span!("instance", process = %job.process_names[id.template as usize], key = %id.key).entered();
        let time = match trigger {
            Trigger::Event(event) => event.time,
            Trigger::Timer(_, at) => at,
        };
        let call = HandlerCall {
            template: template.as_ref(),
            key: &id.key,
            time,
            watermark: self.watermark,
            trigger,
        };
        let in_place = !self.careful[id.template as usize];
        let instance = self.cache.get_mut(id).expect("activated");
        let Some(state) = instance.state.as_mut() else {
            return Ok(true);
        };
        let handled = if in_place {
            match call.attempt(state, &mut instance.meta.timers) {
                Ok(handled) => handled,
                Err(failure) => {
                    self.careful[id.template as usize] = true;
                    return Err(ShardError::FailedInPlace {
                        process: job.process_names[id.template as usize].clone(),
                        message: failure.message,
                    });
                }
            }
        } else {
            match call.attempt_on_copies(state, &mut instance.meta.timers, job.max_retries) {
                Ok(handled) => handled,
                Err(failure) => {
                    self.give_up(id, trigger, &failure)?;
                    return Ok(false);
                }
            }
        };
        instance.dirty = true;
        let complete = template.is_complete(state);
        // Only the timers that changed touch the timer index (usually none).
        let txn = self.txn.as_mut().expect("recovered");
        let mut timers_added = 0;
        for (name, before) in &handled.timers_before {
            let after = instance
                .meta
                .timers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, at)| *at);
            if *before == after {
                continue;
            }
            if let Some(at) = *before {
                txn.remove_timer(timer_of(id, name, at))?;
                timers_added -= 1;
            }
            if let Some(at) = after {
                set_timer(txn, &mut self.next_timer, timer_of(id, name, at))?;
                timers_added += 1;
            }
        }
        tally(&mut self.census, 0, 0, timers_added);
        for record in handled.outputs {
            self.emit(Some(id.template as usize), record)?;
        }
        if complete {
            self.end_instance(id, time)?;
        }
        Ok(true)
    }

    /// A careful handler failed on every attempt: the instance stays as it was, and the
    /// event is dead-lettered (or the timer dropped) with the reason.
    fn give_up(
        &mut self,
        id: &InstanceId,
        trigger: Trigger<'_>,
        failure: &str,
    ) -> Result<(), ShardError> {
        let process = &self.job.process_names[id.template as usize];
        warn!(shard = self.id, key = %id.key, "{failure}; gave up after {} attempts", self.job.max_retries + 1);
        self.counts.handler_failures += 1;
        let (what, event_time, raw) = match trigger {
            Trigger::Event(event) => ("event", event.time, event.payload.text().to_owned()),
            Trigger::Timer(name, at) => ("timer", at, name.to_owned()),
        };
        let letter = DeadLetter {
            reason: Reason::HandlerFailed,
            detail: format!("{what} failed in process `{process}`: {failure}"),
            key: Some(id.key.to_string()),
            time: Some(event_time),
            raw,
            source: process.clone(),
            file: None,
            line: None,
        };
        self.emit(None, Record::dead_letter(&letter))
    }

    /// Deletes an ended instance's state and timers; a tombstone remembers its event ids
    /// until `dedup_retention` after the end.
    fn end_instance(&mut self, id: &InstanceId, at: Millis) -> Result<(), ShardError> {
        if !self.job.templates[id.template as usize].dedup_by_event_id() {
            // Nothing to remember: delete the instance and its timers now, no tombstone.
            let instance = self.cache.remove(id).expect("activated");
            self.counts.instances_ended += 1;
            tally(
                &mut self.census,
                -1,
                0,
                -(instance.meta.timers.len() as i64),
            );
            for (name, time) in &instance.meta.timers {
                self.txn().remove_timer(timer_of(id, name, *time))?;
            }
            self.forget(id, &instance)?;
            return Ok(());
        }
        let retention = self.job.dedup_retention;
        let instance = self.cache.get_mut(id).expect("activated");
        let timers = std::mem::take(&mut instance.meta.timers);
        instance.state = None;
        instance.meta.ended_at = Some(at);
        let purge_at = at.max(self.watermark).saturating_add(retention);
        instance.meta.timers.push((PURGE_TIMER.into(), purge_at));
        instance.dirty = true;
        self.counts.instances_ended += 1;
        tally(&mut self.census, -1, 1, 1 - timers.len() as i64);
        for (name, time) in &timers {
            self.txn().remove_timer(timer_of(id, name, *time))?;
        }
        let txn = self.txn.as_mut().expect("recovered");
        Ok(set_timer(
            txn,
            &mut self.next_timer,
            timer_of(id, PURGE_TIMER, purge_at),
        )?)
    }

    fn advance_watermark(&mut self, watermark: Millis) -> Result<(), ShardError> {
        if watermark <= self.watermark {
            return Ok(());
        }
        self.watermark = watermark;
        // One scan per round: the due timers and the next one. Firing may set earlier timers
        // (`set_timer` lowers `next_timer`), even due ones: then another round.
        let mut fired = false;
        while self.next_timer.is_some_and(|next| next <= watermark) {
            let due = self.txn().due_timers(watermark, 256)?;
            self.next_timer = due.next;
            for timer in &due.timers {
                self.txn().remove_timer(timer)?;
                self.fire(timer)?;
            }
            fired = true;
        }
        if fired {
            self.prefetch_upcoming_timers();
        }
        Ok(())
    }

    /// Asks the CPU for the instances of the timers due next, a few events from now (a scan
    /// finds one timer due, mostly: the list it fires has nothing to look ahead in). The first
    /// [`UPCOMING_LOOKED_UP`] are looked up and their instances loaded; the stored keys of
    /// the next few are asked for ([`KeyProbe`]), for the look-ups of later scans. Each scan
    /// asks again for those still ahead, found in the cache by then.
    fn prefetch_upcoming_timers(&self) {
        let Some(txn) = self.txn.as_ref() else {
            return;
        };
        for (i, (template, key)) in txn.upcoming_timers(UPCOMING_TIMERS).enumerate() {
            let id = IdRef { template, key };
            if i < UPCOMING_LOOKED_UP {
                if let Some(instance) = self.cache.get(&id) {
                    prefetch_instance(&**instance);
                }
            } else {
                self.cache.get(&KeyProbe(id));
            }
        }
    }

    fn fire(&mut self, timer: &TimerKey) -> Result<(), ShardError> {
        let id = InstanceId::new(timer.template, timer.key.clone());
        if timer.name == PURGE_TIMER {
            // A tombstone's purge (only a tombstone has this timer): deleted without being
            // activated. One still to be passivated goes back into the cache first.
            if let Some(instance) = self.passivating.remove(&id) {
                self.cache.insert(id.clone(), instance);
            }
            match self.cache.get(&id) {
                None => {
                    // Passivated (the timer table has the timers of the record it passivated):
                    // deleted without reading it. The purge is a tombstone's only timer.
                    self.counts.timers_fired += 1;
                    tally(&mut self.census, 0, -1, -1);
                    self.txn().remove_instance(&id, false, true)?;
                    return Ok(());
                }
                Some(instance) if instance.state.is_none() => {
                    let due = instance
                        .meta
                        .timers
                        .iter()
                        .any(|(n, t)| n == PURGE_TIMER && *t == timer.time);
                    if due {
                        let instance = self.cache.remove(&id).expect("found");
                        self.counts.timers_fired += 1;
                        tally(
                            &mut self.census,
                            0,
                            -1,
                            -(instance.meta.timers.len() as i64),
                        );
                        self.forget(&id, &instance)?;
                    }
                    return Ok(()); // else stale: revived and ended again since
                }
                Some(_) => {}
            }
        }
        let instance = self.activate(&id)?;
        let Some(index) = instance
            .meta
            .timers
            .iter()
            .position(|(n, t)| *n == timer.name && *t == timer.time)
        else {
            return Ok(()); // stale: the instance moved or cancelled it
        };
        instance.meta.timers.remove(index);
        instance.dirty = true;
        tally(&mut self.census, 0, 0, -1);
        self.counts.timers_fired += 1;
        self.run_handler(&id, Trigger::Timer(&timer.name, timer.time))?;
        Ok(())
    }

    /// Deletes an instance removed from the cache from where redb keeps it.
    fn forget(&mut self, id: &InstanceId, instance: &Instance) -> Result<(), StorageError> {
        if instance.logged() || instance.stored {
            self.txn()
                .remove_instance(id, instance.logged(), instance.stored)?;
        }
        Ok(())
    }

    /// The checkpoint, on the calling thread: [`Shard::prepare_checkpoint`], the commit,
    /// [`Shard::checkpoint_committed`].
    fn checkpoint(&mut self) -> Result<(), ShardError> {
        let Some(mut prepared) = self.prepare_checkpoint()? else {
            return Ok(());
        };
        prepared.commit(&self.job, self.id)?;
        self.checkpoint_committed(prepared);
        Ok(())
    }

    /// The periodic checkpoint: prepared on the worker thread; the passivated instances
    /// written and the transaction committed on a thread of the blocking pool. Until that is
    /// done the shard handles no message (its batches wait in its mailbox), but the worker
    /// thread goes on with its other shards instead of waiting for the B-tree inserts and the
    /// fsync.
    fn checkpoint_in_background(&mut self, ctx: &mut Context<Self>) {
        let mut prepared = match self.prepare_checkpoint() {
            Ok(Some(prepared)) => prepared,
            Ok(None) => return,
            Err(e) => return self.fail(ctx, e),
        };
        let fault = self.job.faults.fail_commit == Some(self.id)
            && !self.commit_fault_fired
            && prepared.passivated > 0;
        self.commit_fault_fired |= fault;
        let (job, shard) = (self.job.clone(), self.id);
        let commit = actix_rt::task::spawn_blocking(move || {
            if fault {
                return Err(ShardError::Injected); // drops the transaction uncommitted
            }
            prepared.commit(&job, shard)?;
            Ok(prepared)
        });
        ctx.wait(commit.into_actor(self).map(|joined, shard, ctx| {
            let committed = joined
                .map_err(|e| ShardError::CommitLost(e.to_string()))
                .and_then(|result| result);
            match committed {
                Ok(prepared) => shard.checkpoint_committed(prepared),
                Err(e) => shard.fail(ctx, e),
            }
        }));
    }

    /// What a checkpoint does before its commit: logs what changed since the batches logged
    /// it, takes the instances to passivate out of the cache (their encoding and writes are
    /// left to [`Prepared::commit`]) and writes the metadata. Takes the shard's transaction;
    /// `None` if nothing changed since the last checkpoint.
    fn prepare_checkpoint(&mut self) -> Result<Option<Prepared>, ShardError> {
        if !self.changed {
            return Ok(None);
        }
        let started = Instant::now();
        let mut txn = self.txn.take().expect("recovered");
        let keeps_up = self.keeps_up();
        let (idle_before, excess) = self.eviction_cutoffs(keeps_up);
        // The log has grown well past what is live in it: its oldest chunks are dropped, and
        // the instances whose records were in them are logged again.
        let compacted_below = if txn.log_bytes() > self.job.log_compaction_bytes {
            self.compact_log(&mut txn)?
        } else {
            None
        };
        let passivated_ahead = std::mem::take(&mut self.passivated_ahead);
        let record = &mut self.record;
        let state_bytes = &mut self.state_bytes;
        // Those taken out to be passivated ahead and not written yet: a shard that keeps up
        // passivates them ahead of the next checkpoint, and logs those that changed since a
        // batch logged them; else (or if the log is compacted, which counts only the cache's
        // instances as live) they are passivated now.
        let mut evicted: Vec<(InstanceId, Box<Instance>)> = Vec::new();
        if keeps_up && compacted_below.is_none() {
            for (id, instance) in self.passivating.iter_mut().filter(|(_, i)| i.dirty) {
                self.logged_since += 1;
                encode_record(&self.job, id, instance, record, state_bytes)?;
                log_instance(&mut txn, id, instance, record)?;
            }
        } else {
            evicted.extend(self.passivating.drain());
            self.passivating_order.clear();
        }
        if idle_before.is_none() && excess == 0 && compacted_below.is_none() {
            // Nothing to passivate or write again: only the instances in `relog` changed since
            // a batch logged them.
            let mut relog = std::mem::take(&mut self.relog);
            for (i, id) in relog.iter().enumerate() {
                prefetch_cached(&self.cache, &relog, i, |id| Some(IdRef::of(id)));
                let Some(instance) = self.cache.get_mut(id).filter(|i| i.dirty) else {
                    continue; // named twice, or ended since
                };
                self.logged_since += 1;
                encode_record(&self.job, id, instance, record, state_bytes)?;
                log_instance(&mut txn, id, instance, record)?;
            }
            relog.clear();
            self.relog = relog;
        } else {
            // The cutoff by rank first (a pass over the cache's table, reading two fields of
            // each), then one more pass that takes the instances chosen out of the cache
            // without looking each up again, and logs the others that changed. It finds what
            // `relog` names.
            self.relog.clear();
            let order = CacheOrder::of(&self.cache);
            let rank_below = (excess > 0).then(|| order.rank_cutoff(&self.cache, excess));
            let mut at = 0;
            let evict = |i: &Instance| {
                idle_before.is_some_and(|cutoff| i.last_used < cutoff)
                    || rank_below.is_some_and(|cutoff| i.eviction_rank() < cutoff)
            };
            let logged_since = &mut self.logged_since;
            let job = &self.job;
            let mut failed = None;
            evicted.reserve(excess);
            evicted.extend(self.cache.extract_if(|id, instance| {
                order.prefetch_ahead_of(at);
                at += 1;
                if evict(instance) {
                    return true;
                }
                if failed.is_none() && (instance.dirty || instance.logged_below(compacted_below)) {
                    *logged_since += u64::from(instance.dirty);
                    let logged = encode_record(job, id, instance, record, state_bytes)
                        .map_err(ShardError::from)
                        .and_then(|()| Ok(log_instance(&mut txn, id, instance, record)?));
                    failed = logged.err();
                }
                false
            }));
            if let Some(error) = failed {
                return Err(error);
            }
        }
        if let Some(position) = &self.position {
            txn.put_meta("position", &codec::encode(position))?;
        }
        txn.put_meta("layout", &codec::encode(&self.job.layout))?;
        txn.put_meta("watermark", &codec::encode(&self.watermark))?;
        txn.put_meta("out_seq", &codec::encode(&self.out_seq))?;
        txn.put_meta("counts", &codec::encode(&self.counts))?;
        if let Some(census) = &self.census {
            txn.put_meta("census", &codec::encode(census))?;
        }
        Ok(Some(Prepared {
            txn,
            passivated: evicted.len() + passivated_ahead,
            passivated_ahead,
            evicted,
            compacted_below,
            prepare_us: started.elapsed().as_micros() as u64,
            sink_sync_us: 0,
            commit_us: 0,
        }))
    }

    /// Called with no batch of the shard waiting, if it mostly has none (`idle_share`):
    /// passivates up to [`PASSIVATE_AHEAD`] instances into the interval's transaction, so that
    /// the checkpoint's commit, which the shard's batches wait for, has that much less to
    /// encode and write. Once the instances in memory exceed `max_resident` by
    /// [`Shard::passivate_ahead_slack`], it first takes the excess and half the slack more, of
    /// lowest [`Instance::eviction_rank`], out of the cache (a pass over it), to passivate in
    /// the next calls.
    ///
    /// Only with a bound on the excess (`max_resident_overshoot`): without one, instances are
    /// passivated only at checkpoints. A shard that mostly has a batch waiting (the input comes
    /// faster than it handles it) does not call this, and its checkpoints passivate as before.
    fn passivate_ahead(&mut self) -> Result<(), ShardError> {
        if self.job.max_resident_overshoot == usize::MAX {
            return Ok(());
        }
        if self.passivating.is_empty() {
            let excess = self.cache.len().saturating_sub(self.job.max_resident);
            let slack = self.passivate_ahead_slack();
            if excess < slack {
                return Ok(());
            }
            // Down to half the slack below `max_resident`: the next pass comes after one and a
            // half slacks of new instances, not one.
            let take = (excess + slack / 2).min(self.cache.len() - 1);
            let cutoff = sampled_rank_cutoff(&self.cache, take);
            let order = CacheOrder::of(&self.cache);
            let mut at = 0;
            self.passivating_order.clear();
            for (id, instance) in self.cache.extract_if(|_, instance| {
                order.prefetch_ahead_of(at);
                at += 1;
                instance.eviction_rank() < cutoff
            }) {
                self.passivating_order.push(id.clone());
                self.passivating.insert(id, instance);
            }
            self.passivating_order.sort_unstable_by(|a, b| b.cmp(a));
        }
        let mut chunk = Vec::with_capacity(PASSIVATE_AHEAD.min(self.passivating.len()));
        while chunk.len() < PASSIVATE_AHEAD {
            let Some(id) = self.passivating_order.pop() else {
                break;
            };
            if let Some(instance) = self.passivating.remove(&id) {
                chunk.push((id, instance));
            }
        }
        self.passivated_ahead += chunk.len();
        let txn = self.txn.as_mut().expect("recovered");
        passivate(&self.job, txn, chunk, None)
    }

    /// Whether the shard passivates ahead and keeps up: since the last checkpoint it
    /// passivated ahead at least as many instances as it has taken out and not passivated.
    fn keeps_up(&self) -> bool {
        self.passivated_ahead > 0 && self.passivated_ahead >= self.passivating.len()
    }

    /// How far beyond `max_resident` the instances in memory may go before
    /// [`Shard::passivate_ahead`] takes the excess out: half the overshoot that brings a
    /// checkpoint forward (so that a shard passivating ahead does not reach it), and at most a
    /// quarter of `max_resident`. Each time is a pass over the cache.
    fn passivate_ahead_slack(&self) -> usize {
        let job = &self.job;
        (job.max_resident_overshoot / 2)
            .min(job.max_resident / 4)
            .max(1)
    }

    /// After the commit: the shard has its transaction back, and the batches it no longer
    /// needs to replay are freed.
    fn checkpoint_committed(&mut self, prepared: Prepared) {
        self.id_filters.clear();
        debug!(
            target: "vigil::checkpoint",
            shard = self.id,
            logged = std::mem::take(&mut self.logged_since),
            passivated = prepared.passivated,
            ahead = prepared.passivated_ahead,
            compacted = prepared.compacted_below.is_some(),
            log_bytes = prepared.txn.log_bytes(),
            sink_sync_us = prepared.sink_sync_us,
            prepare_us = prepared.prepare_us,
            commit_us = prepared.commit_us,
            "checkpoint"
        );
        self.txn = Some(prepared.txn);
        self.job.dispose(std::mem::take(&mut self.journal));
        self.changed = false;
        self.interval += 1;
    }

    /// Notes the start of a batch, or of a recovery: `Shard::uses` now.
    fn note_batch_start(&mut self) {
        self.batch_starts.push_back((Instant::now(), self.uses));
        self.drop_old_batch_starts();
    }

    /// Keeps of `batch_starts` only the latest start at least `passivate_after` ago and the
    /// later ones; returns that moment (`None` if the process is younger).
    fn drop_old_batch_starts(&mut self) -> Option<Instant> {
        let idle_since = Instant::now().checked_sub(self.job.passivate_after)?;
        while self.batch_starts.len() > 1 && self.batch_starts[1].0 <= idle_since {
            self.batch_starts.pop_front();
        }
        Some(idle_since)
    }

    /// Compacts the log if it holds more than [`LOG_COMPACTION_FACTOR`] times what is live in
    /// it (a pass over the cache): returns the sequence number below which the instances'
    /// records are dropped and must be logged again.
    fn compact_log(&self, txn: &mut ShardTxn) -> Result<Option<u64>, StorageError> {
        let first = txn.log_first_seq();
        let mut live_in: Vec<u64> = Vec::new();
        for instance in self.cache.values().filter(|i| i.logged()) {
            let at = instance.logged_seq.saturating_sub(first) as usize;
            if at >= live_in.len() {
                live_in.resize(at + 1, 0);
            }
            live_in[at] += u64::from(instance.logged_len);
        }
        let live: u64 = live_in.iter().sum();
        if txn.log_bytes() <= LOG_COMPACTION_FACTOR * live {
            return Ok(None);
        }
        Ok(Some(txn.compact_log(&live_in)?))
    }

    /// Which instances a checkpoint passivates: those last used before the cutoff (a
    /// `Shard::uses`; idle for `passivate_after`), and beyond `max_resident` the excess (the
    /// second) of lowest [`Instance::eviction_rank`] (beyond `max_resident` and
    /// [`Shard::passivate_ahead_slack`] for a shard that [`Shard::keeps_up`]).
    ///
    /// Passivating idle instances takes a pass over the whole cache, so the first cutoff is
    /// given at most every eighth of `passivate_after`: an instance is passivated after at
    /// most 1.125 times that idle (and a checkpoint interval).
    fn eviction_cutoffs(&mut self, keeps_up: bool) -> (Option<u64>, usize) {
        let idle_since = self.drop_old_batch_starts();
        let looked = self
            .idle_looked_at
            .is_some_and(|at| at.elapsed() < self.job.passivate_after / 8);
        let idle = idle_since
            .filter(|_| !looked)
            .and_then(|idle_since| self.batch_starts.front().filter(|s| s.0 <= idle_since))
            .map(|&(_, uses)| uses);
        if idle.is_some() {
            self.idle_looked_at = Some(Instant::now());
        }
        // A shard that passivates ahead and keeps up keeps the slack it does that in: its
        // checkpoint, which its batches wait for, passivates only what is beyond. One that does
        // not keep up passivates down to `max_resident` here, as one that never passivates
        // ahead (so each checkpoint brought forward by new instances passivates the whole
        // overshoot, not half of it).
        let slack = if keeps_up {
            self.passivate_ahead_slack()
        } else {
            0
        };
        let excess = self
            .cache
            .len()
            .saturating_sub(self.job.max_resident.saturating_add(slack));
        (idle, excess)
    }

    /// Restarts the actor from its last checkpoint, or, past [`MAX_RESTARTS`], fails the job.
    fn fail(&mut self, ctx: &mut Context<Self>, error: ShardError) {
        self.restarts += 1;
        // A failure in place turns its template careful: it restarts a shard once per
        // template, and does not count towards the limit.
        let careful_now = self
            .job
            .templates
            .iter()
            .zip(&self.careful)
            .filter(|(t, careful)| **careful && t.handles_in_place())
            .count() as u32;
        if self.restarts > MAX_RESTARTS + careful_now {
            let message = format!(
                "shard {} failed {} times, last: {error}",
                self.id, self.restarts
            );
            tracing::error!("{message}");
            self.dead = true;
            self.job.fail(message);
            return;
        }
        tracing::error!(
            shard = self.id,
            restarts = self.restarts,
            "shard failed: {error}; restarting from its last checkpoint"
        );
        ctx.stop();
    }

    fn dead_error(&self) -> String {
        self.job
            .fatal()
            .unwrap_or_else(|| format!("shard {} has failed", self.id))
    }
}

/// The reply of a `Finish` or `Checkpoint` that failed before checkpointing.
fn failed(error: String) -> ResponseFuture<Result<ShardStatus, String>> {
    Box::pin(std::future::ready(Err(error)))
}

/// Counts the live instances, tombstones and timers of a checkpoint.
fn census(pinned: PinnedCheckpoint) -> Result<Census, StorageError> {
    let read = pinned.read()?;
    let mut census = Census::default();
    read.for_each_instance(|bytes| {
        let stored: CensusRecord = codec::decode_borrowed(bytes)?;
        if stored.state.is_some() {
            census.live += 1;
        } else {
            census.tombstones += 1;
        }
        // Counted from the records: the timer table has only a passivated instance's earliest.
        census.timers += stored.meta.timers.0;
        Ok(())
    })?;
    Ok(census)
}

impl Actor for Shard {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Staggered: the shards of a worker thread checkpoint one after another through the
        // interval, not all at once, so a record waits behind at most one shard's checkpoint
        // (its preparation; the commit runs off the worker thread).
        let interval = self.job.checkpoint_interval;
        let shards = self.job.layout.shards.max(1);
        let offset = interval.mul_f64(f64::from(self.id % shards) / f64::from(shards));
        ctx.run_later(offset, move |_, ctx| {
            ctx.run_interval(interval, |shard, ctx| {
                if shard.txn.is_some() && !shard.dead {
                    shard.checkpoint_in_background(ctx);
                }
            });
        });
        // After a restart: roll back to the checkpoint and replay what came since.
        if self.store.is_some() && !self.dead {
            let journal = std::mem::take(&mut self.journal);
            let replay = self.recover().and_then(|_| {
                for batch in &journal {
                    self.process_batch(batch)?;
                }
                Ok(())
            });
            self.journal = journal;
            if let Err(e) = replay {
                self.fail(ctx, e);
            }
        }
    }
}

impl Supervised for Shard {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Drop uncommitted changes: state goes back to the last checkpoint.
        self.txn = None;
        self.drop_resident();
    }
}

impl Handler<Deliver> for Shard {
    type Result = ();

    fn handle(&mut self, Deliver(batch): Deliver, ctx: &mut Self::Context) {
        if self.dead {
            self.job.gate.release(self.id);
            return;
        }
        let result = self.process_batch(&batch);
        self.journal.push(batch);
        let waiting = self.job.gate.release(self.id);
        // Of the last 32 batches or so, the share the shard had none waiting after.
        let idle = if waiting == 0 { 1.0 } else { 0.0 };
        self.idle_share += (idle - self.idle_share) / 32.0;
        let result = result.and_then(|()| match waiting {
            _ if self.job.faults.passivate_ahead_always => self.passivate_ahead(),
            0 if self.idle_share >= 0.5 => self.passivate_ahead(),
            _ => Ok(()),
        });
        if let Err(e) = result {
            self.fail(ctx, e);
        } else if self.cache.len() + self.passivating.len()
            > (self.job.max_resident).saturating_add(self.job.max_resident_overshoot)
        {
            // Many new keys: checkpoint before the interval is over, to bound memory.
            self.checkpoint_in_background(ctx);
        }
    }
}

impl Handler<Recover> for Shard {
    type Result = Result<ShardStatus, String>;

    fn handle(&mut self, _: Recover, _ctx: &mut Self::Context) -> Self::Result {
        self.recover().map_err(|e| e.to_string())?;
        Ok(self.status())
    }
}

impl Handler<Finish> for Shard {
    type Result = ResponseFuture<Result<ShardStatus, String>>;

    fn handle(&mut self, finish: Finish, _ctx: &mut Self::Context) -> Self::Result {
        if self.dead {
            return failed(self.dead_error());
        }
        // The timers the final watermark fires change their instances: logged like a
        // batch's changes, so that the final checkpoint has them.
        let advanced = self
            .advance_watermark(finish.watermark)
            .and_then(|()| self.log_changes());
        if let Err(e) = advanced {
            return failed(format!("shard {}: {e}", self.id));
        }
        self.changed = true;
        self.checkpoint_and_census()
    }
}

impl Handler<Checkpoint> for Shard {
    type Result = ResponseFuture<Result<ShardStatus, String>>;

    fn handle(&mut self, _: Checkpoint, _ctx: &mut Self::Context) -> Self::Result {
        if self.dead {
            return failed(self.dead_error());
        }
        self.checkpoint_and_census()
    }
}

impl Handler<Release> for Shard {
    type Result = Result<ShardStatus, String>;

    fn handle(&mut self, _: Release, _ctx: &mut Self::Context) -> Self::Result {
        if self.dead {
            return Err(self.dead_error());
        }
        if self.txn.is_some() {
            self.checkpoint()
                .map_err(|e| format!("shard {}: {e}", self.id))?;
        }
        let status = Ok(self.status());
        self.txn = None;
        self.store = None;
        self.drop_resident();
        self.journal.clear();
        self.restarts = 0;
        status
    }
}

impl Handler<Snapshot> for Shard {
    type Result = Result<SnapshotTaken, String>;

    fn handle(&mut self, snapshot: Snapshot, _ctx: &mut Self::Context) -> Self::Result {
        if self.dead {
            return Err(self.dead_error());
        }
        let started = Instant::now();
        let mut export = || -> Result<u64, ShardError> {
            self.checkpoint()?;
            let store = self.store.as_ref().ok_or_else(|| {
                ShardError::Incompatible(format!("shard {} is not open here", self.id))
            })?;
            Ok(store.read()?.export_to(&snapshot.path)?)
        };
        let bytes = export().map_err(|e| format!("shard {}: snapshot: {e}", self.id))?;
        Ok(SnapshotTaken {
            shard: self.id,
            position: self.position.clone(),
            bytes,
            took: started.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The look-ahead finds instances by a borrowed id: it must hash and compare as the id
    /// does, or it would find nothing (and prefetch nothing) without any error.
    #[test]
    fn a_borrowed_id_finds_the_instance_of_its_id() {
        let keys = ["ORD-1", "ORD-2", "", "ü-7"];
        let mut cache: hashbrown::HashMap<InstanceId, u32, foldhash::fast::RandomState> =
            hashbrown::HashMap::default();
        for (n, key) in keys.iter().enumerate() {
            for template in 0..3u16 {
                let value = n as u32 * 3 + template as u32;
                cache.insert(InstanceId::new(template, *key), value);
            }
        }
        for (n, key) in keys.iter().enumerate() {
            for template in 0..3u16 {
                let id = IdRef { template, key };
                assert_eq!(cache.get(&id), Some(&(n as u32 * 3 + template as u32)));
            }
        }
        let (template, key) = (3, "ORD-1");
        assert_eq!(cache.get(&IdRef { template, key }), None);
        let (template, key) = (0, "ORD-3");
        assert_eq!(cache.get(&IdRef { template, key }), None);
    }

    /// Garbage handed to the disposal is dropped on the `vigil-free` thread, which yields to
    /// the others (nice 10 or more), not on the thread that handed it over.
    #[test]
    #[cfg(target_os = "linux")]
    fn garbage_is_freed_on_the_low_priority_freeing_thread() {
        struct Probe(std::sync::mpsc::Sender<(Option<String>, i32)>);
        impl Drop for Probe {
            fn drop(&mut self) {
                let thread = std::thread::current().name().map(str::to_owned);
                // SAFETY: a plain system call; `who` 0 is the calling thread on Linux.
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                let _ = self.0.send((thread, nice));
            }
        }
        let (dropped, on) = std::sync::mpsc::channel();
        let disposal = dispose_on_own_thread();
        disposal
            .send(Box::new(Probe(dropped)))
            .expect("the freeing thread runs");
        let (thread, nice) = on
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("dropped");
        assert_eq!(thread.as_deref(), Some("vigil-free"));
        assert!(nice >= 10, "nice {nice}");
    }

    /// An id is kept for at least the retention of watermark after it came, in two
    /// generations; the older goes when the current one is older than the retention.
    #[test]
    fn event_ids_are_kept_for_the_retention_in_two_generations() {
        let mut seen = SeenIds::default();
        seen.insert(1, Millis::MIN, 100); // before any watermark
        seen.insert(2, 0, 100); // the first generation becomes the older one
        assert_eq!(
            (seen.hashes.as_slice(), seen.older, seen.since),
            (&[1, 2][..], 1, 0)
        );
        seen.insert(3, 100, 100); // 100 after the current began: kept
        assert!([1, 2, 3].iter().all(|h| seen.hashes.contains(h)));
        seen.insert(4, 101, 100); // 101 after: 1 goes, 2 and 3 become the older
        assert_eq!(
            (seen.hashes.as_slice(), seen.older, seen.since),
            (&[2, 3, 4][..], 2, 101)
        );
        assert!(!seen.hashes.contains(&1));
        seen.insert(5, 150, 100);
        seen.insert(6, 202, 100); // 2 (came at 0) and 3 (at 100) go; 4 came at 101
        assert_eq!(
            (seen.hashes.as_slice(), seen.older, seen.since),
            (&[4, 5, 6][..], 2, 202)
        );
    }

    /// Through its filter an instance takes exactly the ids it takes without one: through new
    /// generations, ids taken without the filter in between, and ids it never had.
    #[test]
    fn the_id_filter_changes_no_answer() {
        use crate::hash::stable_hash64;
        let hash = |i: u64| stable_hash64(format!("evt-{i}").as_bytes());
        let (mut filtered, mut plain) = (SeenIds::default(), SeenIds::default());
        let mut filter = IdFilter::of(&filtered);
        for i in 0..6_000u64 {
            let watermark = i as Millis * 10;
            // Each id comes twice, and some ids come back after their generation went.
            let id = match i % 3 {
                0 => hash(i),
                1 => hash(i - 1),
                _ => hash(i.saturating_sub(1_500)),
            };
            let expected = plain.take(id, watermark, 10_000);
            // A stretch taken without the filter, as an instance with few ids does.
            let taken = match (i / 500) % 4 == 3 {
                true => filtered.take(id, watermark, 10_000),
                false => filter.take(&mut filtered, id, watermark, 10_000),
            };
            assert_eq!(taken, expected, "{i}");
            assert_eq!(filtered.hashes.as_slice(), plain.hashes.as_slice());
        }
        assert!(plain.hashes.len() > 1_000 && plain.older > 0);
        let strangers = (10_000..20_000)
            .filter(|&i| filter.may_contain(hash(i)))
            .count();
        assert!(
            strangers < 2_000,
            "{strangers} of 10 000 new ids need a search"
        );
    }

    /// The census reads the tombstone flag from the bytes a checkpoint writes, past any
    /// number of event ids and timers.
    #[test]
    fn census_record_reads_what_a_checkpoint_writes() {
        let meta = InstanceMeta {
            seen: SeenIds {
                hashes: smallvec::smallvec![1, u64::MAX, 300],
                older: 2,
                since: Millis::MIN,
            },
            timers: smallvec::smallvec![
                ("sla".into(), 1_700_000_000_000),
                (PURGE_TIMER.into(), -5)
            ],
            ended_at: None,
        };
        for state in [Some(vec![7u8; 300]), Some(Vec::new()), None] {
            let mut tombstone_meta = meta.clone();
            tombstone_meta.ended_at = state.is_none().then_some(42);
            let stored = StoredInstanceRef {
                meta: &tombstone_meta,
                state: state.as_deref(),
            };
            let mut bytes = Vec::new();
            codec::encode_into(&stored, &mut bytes).unwrap();
            let census: CensusRecord = codec::decode_borrowed(&bytes).unwrap();
            assert_eq!(census.state, state.as_deref());
            let full: StoredInstance = codec::decode(&bytes).unwrap();
            assert_eq!(full.state, state);
        }
        let truncated = {
            let mut bytes = Vec::new();
            let stored = StoredInstanceRef {
                meta: &meta,
                state: Some(&[1]),
            };
            codec::encode_into(&stored, &mut bytes).unwrap();
            bytes.truncate(bytes.len() - 3);
            bytes
        };
        assert!(codec::decode_borrowed::<CensusRecord>(&truncated).is_err());
    }
}
