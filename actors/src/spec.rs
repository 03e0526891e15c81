//! The compiled, validated description of a job: what `vigil-topology` produces from TOML and
//! what the runtime runs. Plain data; every name in it has been checked to resolve.

use std::path::PathBuf;
use std::time::Duration;

use crate::time::Millis;

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
    pub processes: Vec<ProcessSpec>,
    pub sinks: Vec<SinkSpec>,
    /// Where dead-lettered input and failed events go.
    pub dead_letter: SinkKind,
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
#[derive(Debug, Clone)]
pub struct SlaSpec {
    pub name: String,
    pub step: String,
    pub within: Millis,
    pub from: Option<String>,
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
}
