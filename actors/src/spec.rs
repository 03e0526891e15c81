//! The compiled, validated description of a job: what `vigil-topology` produces from TOML and
//! what the runtime runs. Plain data; every name in it has been checked to resolve.

use std::path::PathBuf;
use std::time::Duration;

use crate::time::Millis;

/// The default of [`JobSpec::log_compaction_bytes`]: 16 MiB per shard.
pub const DEFAULT_LOG_COMPACTION_BYTES: u64 = 16 << 20;

/// A whole job: sources, how to decode each event type, the process templates, the sinks.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Job name; part of every output id and of the state directory layout.
    pub name: String,
    /// Fixed number of shards (key groups). Never changes for the life of the state.
    pub shards: u32,
    /// Worker threads (actix arbiters) hosting the shard actors; 0 means one per core.
    pub workers: usize,
    /// Directory holding one redb file per shard.
    pub state_dir: PathBuf,
    /// How often each shard commits a checkpoint (wall clock).
    pub checkpoint_interval: Duration,
    /// Instances idle this long (wall clock) are passivated: dropped from memory, kept in redb.
    pub passivate_after: Duration,
    /// Instances kept in memory across all shards; above it the least recently used are
    /// passivated at each checkpoint.
    pub max_resident: usize,
    /// A checkpoint compacts a shard's instance log once the log holds more than this many
    /// bytes and more than 4 times what is live in it ([`DEFAULT_LOG_COMPACTION_BYTES`]; not a
    /// topology setting, tests lower it).
    pub log_compaction_bytes: u64,
    /// How far the instances in memory, all shards together, may exceed `max_resident`
    /// between checkpoints: a shard holding more than its share of both checkpoints before
    /// its interval is over. Instances are passivated only at a checkpoint, and an interval's
    /// events are kept until then for a replay, so with many new keys memory stays bounded
    /// however fast the input comes; a few hot keys never reach it. 0: only at the interval.
    pub max_resident_overshoot: usize,
    /// Bounded out-of-orderness: the watermark trails the largest event time by this much.
    pub max_out_of_orderness: Millis,
    /// With no input for this long, the watermark advances with the wall clock.
    pub idle_timeout: Duration,
    /// How long a completed instance is remembered (event time) to ignore duplicates of its
    /// events; after that its tombstone is deleted.
    pub dedup_retention: Millis,
    /// How often a failing event is retried against its instance before it is dead-lettered.
    pub max_retries: u32,
    pub sources: Vec<SourceSpec>,
    pub event_types: Vec<EventTypeSpec>,
    /// Reference tables (`[reference.NAME]`) the event types' `derive` rules look up.
    pub reference: Vec<ReferenceSpec>,
    pub processes: Vec<ProcessSpec>,
    pub sinks: Vec<SinkSpec>,
    /// Where dead-lettered input and failed events go.
    pub dead_letter: SinkKind,
    /// How to reach Kafka (`[kafka]`): required when a source or sink is of kind `kafka`.
    pub kafka: Option<KafkaSpec>,
}

/// The `[kafka]` section: the cluster, the consumer groups, the job's repartition topic and
/// where shard snapshots go. See `docs/exactly-once.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSpec {
    /// `bootstrap.servers`: comma-separated `host:port` list.
    pub brokers: String,
    /// The consumer group of the job's nodes. The repartitioner uses `<group>.ingest`.
    pub group: String,
    /// The job-owned topic events are re-keyed through; its partitions are the job's shards.
    /// Default `<job>.repartition`.
    pub repartition_topic: String,
    /// Replication factor for topics the job creates (repartition, outputs, dead letters).
    pub replication_factor: i32,
    /// `group.instance.id` (static membership): set it from the pod name so a restarted pod
    /// keeps its shards. `None`: dynamic membership.
    pub instance_id: Option<String>,
    /// Extra librdkafka properties for every client (SASL, TLS, timeouts), in TOML order.
    pub properties: Vec<(String, String)>,
    /// Directory of shard snapshots shared by the nodes (a volume or a mounted bucket).
    pub snapshot_dir: Option<PathBuf>,
    /// How often each owned shard exports a snapshot (wall clock); `None`: only on demand.
    pub snapshot_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub kind: SourceKind,
    /// Name of the JSON field holding the event type (default `type`).
    pub type_field: String,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    /// Newline-delimited JSON files: a path or a glob; matched files are read in name order.
    File { path: String },
    /// Newline-delimited JSON on standard input (cannot be replayed after a crash).
    Stdin,
    /// The built-in synthetic online shop (`vigil generate`), produced in-process.
    Generator { seed: u64, orders: u64 },
    /// Kafka topics (JSON values): a list, or every topic matching a regular expression.
    /// Needs the `[kafka]` section; run by `vigil_kafka`.
    Kafka {
        topics: Vec<String>,
        pattern: Option<String>,
    },
}

/// How to read one event type: where its correlation key, time and id are, and which fields
/// it must have (with their JSON types). Paths are dotted (`customer.address.zip`).
#[derive(Debug, Clone)]
pub struct EventTypeSpec {
    pub name: String,
    pub key: FieldPath,
    pub time: FieldPath,
    /// Field holding a unique event id, used to ignore duplicates.
    pub id: Option<FieldPath>,
    pub fields: Vec<FieldSpec>,
    /// Fields derived after decoding (CEL), in order; see [`crate::enrich`].
    pub derive: Vec<DerivedField>,
}

/// A field written into the payload after decoding: `name = "<CEL expression>"`.
#[derive(Debug, Clone)]
pub struct DerivedField {
    /// A top-level field name of the payload.
    pub name: String,
    pub expression: String,
}

/// A reference table loaded once at start from a CSV file (header row) or a JSON array of
/// objects, looked up by the string value of its `key` column.
#[derive(Debug, Clone)]
pub struct ReferenceSpec {
    pub name: String,
    pub path: PathBuf,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub path: FieldPath,
    pub ty: FieldType,
    /// A missing required field dead-letters the event; an optional one may be absent or null.
    pub required: bool,
}

/// A dotted path into a JSON object, split into its segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldPath(pub Vec<String>);

impl FieldPath {
    pub fn parse(dotted: &str) -> FieldPath {
        FieldPath(dotted.split('.').map(str::to_owned).collect())
    }

    pub fn lookup<'v>(&self, value: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        self.0.iter().try_fold(value, |v, segment| v.get(segment))
    }
}

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Integer,
    Number,
    Boolean,
    Timestamp,
    Object,
    Array,
}

impl FieldType {
    pub fn parse(name: &str) -> Option<FieldType> {
        Some(match name {
            "string" => FieldType::String,
            "integer" => FieldType::Integer,
            "number" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "timestamp" => FieldType::Timestamp,
            "object" => FieldType::Object,
            "array" => FieldType::Array,
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] = &[
        "string",
        "integer",
        "number",
        "boolean",
        "timestamp",
        "object",
        "array",
    ];

    pub fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Integer => "integer",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Timestamp => "timestamp",
            FieldType::Object => "object",
            FieldType::Array => "array",
        }
    }
}

/// One instance of a template in the topology, e.g. the `order` process.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub template: TemplateSpec,
}

/// The template a process runs and its configuration.
#[derive(Debug, Clone)]
pub enum TemplateSpec {
    Process(ProcessTemplateSpec),
    /// A template registered in a [`Registry`](crate::registry::Registry) by the application
    /// (not built in): its registered name and its configuration, the process's TOML table
    /// without `template`, as JSON. The registry's factory checks and reads it.
    Custom {
        template: String,
        config: serde_json::Value,
    },
    /// Event-time windows (`template = "window"`).
    Window(WindowTemplateSpec),
    /// CEP patterns (`template = "pattern"`, and the ready-made `fraud` and
    /// `customer_contact`, which are sets of patterns).
    Pattern(PatternTemplateSpec),
    /// Several event types into one stream of records (`template = "union"`).
    Union(UnionTemplateSpec),
    /// Two event types correlated by key within a time bound (`template = "join"`).
    Join(JoinTemplateSpec),
}

/// The `union` template: one `event` record named `name` per input event of any of `events`,
/// keyed by the event's key (its correlation key, or the field `key`), at the event's time,
/// with the event type as `type` and the projected `fields` as details.
#[derive(Debug, Clone)]
pub struct UnionTemplateSpec {
    pub name: String,
    pub events: Vec<String>,
    pub key: Option<FieldPath>,
    pub fields: Vec<FieldPath>,
}

/// The `join` template: see `actors/src/templates/join.rs` for the semantics.
#[derive(Debug, Clone)]
pub struct JoinTemplateSpec {
    /// The `name` of joined records; timeouts are named `timeout`.
    pub name: String,
    pub timeout: String,
    pub left: String,
    pub right: String,
    /// Keys both sides; `None`: each event type's correlation key.
    pub key: Option<FieldPath>,
    /// A left and a right event join when their event times differ by at most this.
    pub within: Millis,
    pub kind: JoinKind,
    /// Fields of each side copied into the records' `left` / `right` objects.
    pub left_fields: Vec<FieldPath>,
    pub right_fields: Vec<FieldPath>,
}

/// Which unmatched events produce a timeout record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// None.
    Inner,
    /// Left events.
    Left,
    /// Left and right events.
    Outer,
}

/// The `window` template: event-time tumbling or sliding windows per group, with aggregates.
///
/// Windows are `[end - size, end)` for every `end` that is a multiple of `slide` (tumbling when
/// `slide == size`). A result is emitted when the watermark reaches a window's end; events up
/// to `allowed_lateness` after the end still update it (and re-emit it); later ones are late.
#[derive(Debug, Clone)]
pub struct WindowTemplateSpec {
    /// The `name` of the result records, e.g. `ORDER_VELOCITY`.
    pub name: String,
    /// The event types counted.
    pub events: Vec<String>,
    /// The dimensions of a group; empty: one group, keyed `*`.
    pub group_by: Vec<GroupBy>,
    pub size: Millis,
    /// Equal to `size` for tumbling windows; at most `size`.
    pub slide: Millis,
    pub allowed_lateness: Millis,
    pub emit: WindowEmit,
    pub aggregates: Vec<AggregateSpec>,
}

/// A dimension of a window group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// The event type's name (`"type"` in the topology).
    EventType,
    Field(FieldPath),
}

/// When window results are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEmit {
    /// Once when the watermark passes the window's end, again for each late update.
    OnClose,
    /// As `OnClose`, plus an early partial result of the next window to close on every event.
    OnUpdate,
}

/// One aggregate of a window result, named `name` in its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSpec {
    pub name: String,
    pub function: AggregateFn,
    /// The field aggregated; `None` only for `Count`.
    pub field: Option<FieldPath>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggregateFn {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    DistinctCount,
}

impl AggregateFn {
    pub const NAMES: &'static [&'static str] =
        &["count", "sum", "min", "max", "avg", "distinct_count"];

    pub fn parse(name: &str) -> Option<AggregateFn> {
        Some(match name {
            "count" => AggregateFn::Count,
            "sum" => AggregateFn::Sum,
            "min" => AggregateFn::Min,
            "max" => AggregateFn::Max,
            "avg" => AggregateFn::Avg,
            "distinct_count" => AggregateFn::DistinctCount,
            _ => return None,
        })
    }
}

/// The `process` template: a keyed business process with steps and SLAs.
///
/// An instance is keyed by the correlation key of its events. It starts with `start`, ends
/// when the step `complete` is reached, is cancelled by any `cancel` event, and is deleted
/// `expire_after` its start (event time) whatever happened.
#[derive(Debug, Clone)]
pub struct ProcessTemplateSpec {
    pub start: String,
    pub cancel: Vec<String>,
    pub complete: Option<String>,
    pub expire_after: Option<Millis>,
    pub steps: Vec<StepSpec>,
    pub slas: Vec<SlaSpec>,
}

/// A step is reached by an event of type `on`; with `expect`, only once as many distinct
/// events (by `distinct`, else by event id) have arrived as the start event's field `expect`
/// says. Reaching it may emit a complex event named `emit`.
#[derive(Debug, Clone)]
pub struct StepSpec {
    pub name: String,
    pub on: String,
    pub expect: Option<FieldPath>,
    pub distinct: Option<FieldPath>,
    pub emit: Option<String>,
}

/// An SLA: the step `step` must be reached within `within` of the start event (or of the step
/// `from`), in event time; otherwise an alert named `name` fires at the deadline.
///
/// Alert state: the alert fires once per instance. With `escalate`, further alerts fire at
/// later deadlines (each once, unless the step was reached by then); with `resolve`, an
/// `ALERT_RESOLVED` record follows once the step is reached (or the instance ends) after an
/// alert fired. Without these options, the records are exactly those of a plain SLA.
#[derive(Debug, Clone, Default)]
pub struct SlaSpec {
    pub name: String,
    pub step: String,
    pub within: Millis,
    pub from: Option<String>,
    /// A `severity` detail on the first alert.
    pub severity: Option<String>,
    /// Emit `ALERT_RESOLVED` once the step is reached, or the instance ends, after an alert.
    pub resolve: bool,
    /// Escalation levels, by strictly increasing `after`, each later than `within`.
    pub escalate: Vec<EscalationSpec>,
}

/// An escalation level of an SLA: if the step is still not reached `after` the SLA's origin
/// (the start event or its `from` step), the alert `name` fires with this `severity`.
#[derive(Debug, Clone, Default)]
pub struct EscalationSpec {
    /// The alert's name; the SLA's name when not given.
    pub name: String,
    pub after: Millis,
    pub severity: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SinkSpec {
    pub name: String,
    pub kind: SinkKind,
    /// Names of the processes whose records this sink receives.
    pub inputs: Vec<String>,
    /// Only records of these kinds (`alert`, `event`, ...); empty means all.
    pub kinds: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum SinkKind {
    /// Append newline-delimited JSON to a file, exactly once across crashes.
    File { path: PathBuf },
    /// Write newline-delimited JSON to standard output (at least once).
    Stdout,
    /// Produce JSON records to a Kafka topic, exactly once (see `docs/exactly-once.md`).
    Kafka { topic: String },
}

/// A template made of CEP patterns: `pattern` (one), `fraud` and `customer_contact` (the
/// patterns their TOML configures). See `actors/src/templates/pattern.rs` for the semantics.
#[derive(Debug, Clone)]
pub struct PatternTemplateSpec {
    /// `pattern`, `fraud` or `customer_contact`: for messages and `describe`.
    pub template: String,
    pub patterns: Vec<PatternSpec>,
}

/// One pattern: a sequence of steps matched per key, within `within` of its first event.
#[derive(Debug, Clone)]
pub struct PatternSpec {
    /// The name of the record emitted on a match.
    pub name: String,
    /// The kind of the records emitted (`pattern` for the `pattern` template).
    pub kind: crate::record::RecordKind,
    /// The field keying instances, for every step's event type; `None`: each event type's
    /// correlation key.
    pub key: Option<FieldPath>,
    /// The whole match must complete within this long of its first event (event time).
    pub within: Millis,
    pub skip: SkipStrategy,
    /// The name of the record emitted when a partial match expires; `None`: no record.
    pub timeout: Option<String>,
    pub steps: Vec<PatternStepSpec>,
}

#[derive(Debug, Clone)]
pub struct PatternStepSpec {
    pub name: String,
    /// The event type the step takes.
    pub on: String,
    /// A CEL condition on `event` and the events earlier steps matched (by step name).
    pub condition: Option<String>,
    pub contiguity: Contiguity,
    pub occurs: Occurs,
}

/// How a step's event relates to the event matched before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contiguity {
    /// Strict: no other event of the key in between.
    Next,
    /// Relaxed: events that do not fit are skipped.
    FollowedBy,
}

/// How many events a step takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occurs {
    Once,
    Times(u32),
    /// As many as the integer field `field` of the first event matched by step `step` says.
    TimesFrom {
        step: String,
        field: FieldPath,
    },
    OneOrMore,
    Optional,
    /// Absence, the last step only: the match completes at the deadline if no such event came.
    Never,
}

/// Which partial matches survive a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipStrategy {
    /// Discard every partial match started before the match ended (one match per episode).
    SkipPastLastEvent,
    /// Keep them: overlapping matches are all reported.
    NoSkip,
}
