//! The `pattern` template: complex event processing (CEP) per key, as a small NFA whose state
//! is a list of partial matches ("runs").
//!
//! A pattern is a sequence of steps. Each step takes events of one type that satisfy its
//! optional CEL condition, a number of times (`once`, `times = n`, `times_from` a field of an
//! earlier matched event, `one_or_more`, `optional`), and relates to the event matched before
//! it by strict (`next`: no other event of the key in between) or relaxed (`followed_by`: events
//! that do not fit are skipped) contiguity. The last step may be an absence (`never`): the
//! match then completes at the deadline, if no such event came.
//!
//! Semantics (all per key, events in the order they arrive for the key):
//! - every event that fits the first step starts a run; a run ends `within` after its first
//!   event (event time): an event at or after the deadline no longer reaches it;
//! - a run offers each event to its current step first (while that step may take more), then
//!   to the following steps, as far as the steps before them have their minimum: the first
//!   step that fits takes it. Loops are greedy. An event no step takes is skipped (a *gap*); a
//!   strict step cannot take an event after a gap, and a run that can only go on through strict
//!   steps after a gap is dropped. An event that fits the absent step, once the run has reached
//!   it, drops the run;
//! - a run completes when its last step has taken its count (records `name` at the time of
//!   the last event), or, for an absence, at the deadline (records `name` at the deadline);
//! - a run that expires otherwise emits the `timeout` record, if configured, at the deadline;
//! - after a match, `skip_past_last_event` drops every other run (and the last event starts no
//!   new run); `no_skip` keeps them.
//!
//! Expired runs are handled, in deadline order, when the timer at the earliest deadline fires or
//! when a later event arrives first. The instance ends (its state is deleted) as soon as no run
//! is pending. The template also runs several patterns side by side (`fraud`,
//! `customer_contact`), each with its own key field and timer.
//!
//! Conditions see only what they read: when a pattern is compiled, each condition's member
//! accesses (`created.customer.id`) tell which fields of `event` and of each earlier step it
//! reads, and a run keeps of a matched event only the fields later conditions and `times_from`
//! read (the whole payload when a condition uses the event in another way). A condition is
//! evaluated with `event` and the earlier steps bound to objects with just those fields.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value as CelValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::{smallvec, SmallVec};

use crate::event::Event;
use crate::expr::{to_cel, Expr, Vars};
use crate::payload::Payload;
use crate::record::{push_json_str, Record, RecordKind};
use crate::spec::{
    Contiguity, FieldPath, Occurs, PatternSpec, PatternTemplateSpec, ProcessSpec, SkipStrategy,
    TemplateSpec,
};
use crate::template::{Context, Subscription, Template, TemplateError};
use crate::time::{format_rfc3339, Millis, Rfc3339};

/// At most this many runs per pattern and key; beyond it the oldest run is dropped.
pub const MAX_RUNS: usize = 1024;

/// Runs patterns per key. Built from a [`PatternTemplateSpec`] with [`PatternTemplate::new`].
pub struct PatternTemplate {
    process: String,
    patterns: Vec<Compiled>,
}

struct Compiled {
    spec: PatternSpec,
    steps: Vec<Step>,
    timer: String,
    /// Index of the absent (`never`) last step.
    absent: Option<usize>,
}

struct Step {
    condition: Option<Expr>,
    /// What the condition reads of `event`.
    event: Reads,
    /// The steps the condition refers to (indices), and what it reads of their events.
    refers: Vec<(usize, Reads)>,
    /// What later conditions and `times_from` read of the events this step matched (`None`:
    /// nothing, they are not kept).
    keep: Option<Reads>,
    /// For `times_from`: the step and field giving the count.
    times_from: Option<(usize, FieldPath)>,
}

/// What a condition reads of an event's payload: all of it, or some fields of an object, each
/// in part or whole. Reading a field of a value that is not an object reads all of the value.
#[derive(Debug, Clone)]
enum Reads {
    Whole,
    Fields(Vec<(Arc<String>, Reads)>),
}

impl Reads {
    /// The reads of `paths` (as [`Expr::field_paths`] gives them; `None`: the whole value).
    fn of(paths: Option<Vec<Vec<String>>>) -> Reads {
        let mut reads = Reads::Fields(Vec::new());
        match paths {
            Some(paths) => paths.iter().for_each(|path| reads.add(path)),
            None => reads = Reads::Whole,
        }
        reads
    }

    /// Adds the field at `path` (the whole value if `path` is empty).
    fn add(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            *self = Reads::Whole;
            return;
        };
        let Reads::Fields(fields) = self else {
            return;
        };
        let i = match fields.iter().position(|(name, _)| **name == *first) {
            Some(i) => i,
            None => {
                fields.push((Arc::new(first.clone()), Reads::Fields(Vec::new())));
                fields.len() - 1
            }
        };
        fields[i].1.add(rest);
    }

    /// Adds everything `other` reads.
    fn merge(&mut self, other: &Reads) {
        match other {
            Reads::Whole => *self = Reads::Whole,
            Reads::Fields(fields) => {
                for (name, reads) in fields {
                    if let Reads::Fields(own) = self {
                        match own.iter_mut().find(|(own, _)| *own == *name) {
                            Some((_, own)) => own.merge(reads),
                            None => own.push((name.clone(), reads.clone())),
                        }
                    }
                }
            }
        }
    }
}

/// The state of one key: the pending runs of each pattern. This is what redb stores.
///
/// Its lists are inline up to a typical length (one pattern, one run, two events taken; a heap
/// list beyond), so that a new key's state is one allocation: with many keys each allocation
/// touches memory no cache holds. They encode as `Vec`s do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PatternState {
    /// The last event handled, to handle an event routed twice to the same key only once.
    last_seq: Option<u64>,
    pub patterns: SmallVec<[Runs; 1]>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Runs {
    pub runs: SmallVec<[Run; 1]>,
}

/// A partial match.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Time of the first event; the run ends at `started + within`.
    pub started: Millis,
    pub start_seq: u64,
    /// The step being filled, and how many events it has taken.
    pub step: u16,
    pub count: u32,
    /// An event was skipped since the last one taken.
    pub gap: bool,
    pub taken: SmallVec<[Taken; 2]>,
}

/// An event a run matched: its step, time and (when a later condition or `times_from` reads
/// it) what they read of its payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Taken {
    pub step: u16,
    pub time: Millis,
    pub payload: Option<Kept>,
}

/// What a run keeps of a payload: a JSON value, with objects reduced to the fields read. (The
/// codec cannot decode a `serde_json::Value`.) Numbers are classified as [`to_cel`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Kept {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
    List(Vec<Kept>),
    /// Fields by name; a name read by a condition is shared with the template, not copied.
    Object(Vec<(Arc<String>, Kept)>),
}

impl Kept {
    /// What `reads` reads of `value`.
    fn of(value: &Value, reads: &Reads) -> Kept {
        match (reads, value) {
            (Reads::Fields(fields), Value::Object(map)) => Kept::Object(
                fields
                    .iter()
                    .filter_map(|(name, reads)| {
                        let field = map.get(name.as_str())?;
                        Some((name.clone(), Kept::of(field, reads)))
                    })
                    .collect(),
            ),
            _ => Kept::from(value),
        }
    }

    /// What `reads` reads of an event's payload.
    fn of_payload(payload: &Payload, reads: &Reads) -> Kept {
        match reads {
            Reads::Fields(fields) => Kept::Object(
                fields
                    .iter()
                    .filter_map(|(name, reads)| {
                        let field = payload.get(name)?.to_value();
                        Some((name.clone(), Kept::of(&field, reads)))
                    })
                    .collect(),
            ),
            _ => Kept::from(&payload.to_value()),
        }
    }

    /// The value at `path` (through objects), like [`FieldPath::lookup`].
    fn lookup(&self, path: &FieldPath) -> Option<&Kept> {
        path.0.iter().try_fold(self, |v, segment| v.field(segment))
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Kept::Int(i) => u64::try_from(*i).ok(),
            Kept::UInt(u) => Some(*u),
            _ => None,
        }
    }
}

impl From<&Value> for Kept {
    fn from(value: &Value) -> Kept {
        match value {
            Value::Null => Kept::Null,
            Value::Bool(b) => Kept::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Kept::Int(i),
                (None, Some(u)) => Kept::UInt(u),
                _ => Kept::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Kept::String(s.clone()),
            Value::Array(items) => Kept::List(items.iter().map(Kept::from).collect()),
            Value::Object(map) => Kept::Object(
                map.iter()
                    .map(|(k, v)| (Arc::new(k.clone()), Kept::from(v)))
                    .collect(),
            ),
        }
    }
}

/// A payload, or what a run kept of one, as a condition's variable.
trait Source {
    /// The field `name` of an object (`None` if missing or not an object).
    fn field(&self, name: &str) -> Option<&Self>;
    fn is_object(&self) -> bool;
    /// The whole value.
    fn to_cel(&self) -> CelValue;

    /// What `reads` reads of the value: an object with just the fields read.
    fn project(&self, reads: &Reads) -> CelValue {
        match reads {
            Reads::Fields(fields) if self.is_object() => {
                let map: HashMap<Key, CelValue> = fields
                    .iter()
                    .filter_map(|(name, reads)| {
                        Some((Key::String(name.clone()), self.field(name)?.project(reads)))
                    })
                    .collect();
                CelValue::Map(Map { map: Arc::new(map) })
            }
            _ => self.to_cel(),
        }
    }
}

impl Source for Value {
    fn field(&self, name: &str) -> Option<&Value> {
        self.as_object()?.get(name)
    }

    fn is_object(&self) -> bool {
        self.is_object()
    }

    fn to_cel(&self) -> CelValue {
        to_cel(self)
    }
}

/// What `reads` reads of an event's payload, as a condition's `event`.
fn project_payload(payload: &Payload, reads: &Reads) -> CelValue {
    match reads {
        Reads::Fields(fields) => {
            let map: HashMap<Key, CelValue> = fields
                .iter()
                .filter_map(|(name, reads)| {
                    let field = payload.get(name)?.to_value();
                    Some((Key::String(name.clone()), field.project(reads)))
                })
                .collect();
            CelValue::Map(Map { map: Arc::new(map) })
        }
        _ => to_cel(&payload.to_value()),
    }
}

impl Source for Kept {
    fn field(&self, name: &str) -> Option<&Kept> {
        match self {
            Kept::Object(fields) => fields.iter().find(|(n, _)| **n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_object(&self) -> bool {
        matches!(self, Kept::Object(_))
    }

    fn to_cel(&self) -> CelValue {
        match self {
            Kept::Null => CelValue::Null,
            Kept::Bool(b) => CelValue::Bool(*b),
            Kept::Int(i) => CelValue::Int(*i),
            Kept::UInt(u) => CelValue::UInt(*u),
            Kept::Float(f) => CelValue::Float(*f),
            Kept::String(s) => CelValue::String(Arc::new(s.clone())),
            Kept::List(items) => CelValue::List(Arc::new(items.iter().map(Kept::to_cel).collect())),
            Kept::Object(fields) => {
                let map: HashMap<Key, CelValue> = fields
                    .iter()
                    .map(|(k, v)| (Key::String(k.clone()), v.to_cel()))
                    .collect();
                CelValue::Map(Map { map: Arc::new(map) })
            }
        }
    }
}

enum Outcome {
    Continue,
    Dead,
    Complete,
}

/// Why a pattern is not valid; the topology compiler reports these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatternError {
    /// The step the problem is in (`None`: the pattern as a whole).
    pub step: Option<usize>,
    /// `where`, `occurs`, `times_from`, ...
    pub field: &'static str,
    pub message: String,
    pub hint: String,
    /// For expression errors: the byte offset in the expression.
    pub offset: Option<usize>,
}

/// Checks a pattern's structure and compiles its conditions. Reports every problem.
pub fn check(spec: &PatternSpec) -> Vec<PatternError> {
    compile(spec).err().unwrap_or_default()
}

fn compile(spec: &PatternSpec) -> Result<Compiled, Vec<PatternError>> {
    let mut errors = Vec::new();
    let mut error = |step: Option<usize>, field, message: String, hint: &str| {
        errors.push(PatternError {
            step,
            field,
            message,
            hint: hint.to_owned(),
            offset: None,
        })
    };
    let n = spec.steps.len();
    if n == 0 {
        error(
            None,
            "steps",
            format!("pattern `{}` has no steps", spec.name),
            "add a `[[processes.NAME.steps]]` with a `name` and the event type it is `on`",
        );
    }
    let index = |name: &str| spec.steps.iter().position(|s| s.name == name);
    let mut steps: Vec<Step> = Vec::new();
    let mut expr_errors = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let last = i + 1 == n;
        match &step.occurs {
            Occurs::Optional | Occurs::Never if i == 0 => error(
                Some(i),
                "occurs",
                "the first step must take an event".into(),
                "a pattern starts with an event that happened: use `once`, `times` or `one_or_more`",
            ),
            Occurs::Never if !last => error(
                Some(i),
                "occurs",
                "only the last step can be an absence (`never`)".into(),
                "move this step to the end, or write two patterns",
            ),
            Occurs::Optional | Occurs::OneOrMore if last => error(
                Some(i),
                "occurs",
                "the last step must take a fixed number of events (or be `never`)".into(),
                "a match completes when its last step is done: use `once`, `times` or `times_from`",
            ),
            Occurs::Times(0) => error(
                Some(i),
                "times",
                "`times` must be at least 1".into(),
                "use `occurs = \"optional\"` for a step that may be left out",
            ),
            _ => {}
        }
        let times_from = match &step.occurs {
            Occurs::TimesFrom { step: from, field } => match index(from) {
                Some(j) if j < i => Some((j, field.clone())),
                _ => {
                    error(
                        Some(i),
                        "times_from",
                        format!("`times_from` must name an earlier step, not `{from}`"),
                        "write `times_from = \"<earlier step>.<integer field>\"`",
                    );
                    None
                }
            },
            _ => None,
        };
        let condition = match &step.condition {
            Some(source) => match Expr::compile(source) {
                Ok(expr) => Some(expr),
                Err(e) => {
                    expr_errors.push(PatternError {
                        step: Some(i),
                        field: "where",
                        message: format!("invalid condition: {}", e.message),
                        hint: "conditions are CEL, e.g. `event.amount > 100.0 && event.customer_id == first.customer_id`".into(),
                        offset: e.offset,
                    });
                    None
                }
            },
            None => None,
        };
        let mut refers = Vec::new();
        let mut event = Reads::Fields(Vec::new());
        if let Some(expr) = &condition {
            for var in expr.variables() {
                if var == "event" {
                    event = Reads::of(expr.field_paths(var));
                    continue;
                }
                match index(var) {
                    Some(j) if j < i || (j == i && is_loop(&step.occurs)) => {
                        let paths = if is_loop(&spec.steps[j].occurs) {
                            expr.element_paths(var)
                        } else {
                            expr.field_paths(var)
                        };
                        refers.push((j, Reads::of(paths)));
                    }
                    _ => {
                        let earlier: Vec<&str> =
                            spec.steps[..i].iter().map(|s| s.name.as_str()).collect();
                        error(
                            Some(i),
                            "where",
                            format!("the condition refers to `{var}`, which is not `event` or an earlier step"),
                            &format!("a condition can use `event` and the earlier steps: {}", if earlier.is_empty() { "none here".to_owned() } else { earlier.join(", ") }),
                        );
                    }
                }
            }
        }
        steps.push(Step {
            condition,
            event,
            refers,
            keep: None,
            times_from,
        });
    }
    for i in 0..steps.len() {
        let mut used: Vec<(usize, Reads)> = steps[i].refers.clone();
        if let Some((j, field)) = &steps[i].times_from {
            let mut reads = Reads::Fields(Vec::new());
            reads.add(&field.0);
            used.push((*j, reads));
        }
        for (j, reads) in used {
            steps[j]
                .keep
                .get_or_insert(Reads::Fields(Vec::new()))
                .merge(&reads);
        }
    }
    errors.extend(expr_errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let absent = spec.steps.iter().position(|s| s.occurs == Occurs::Never);
    Ok(Compiled {
        spec: spec.clone(),
        steps,
        timer: String::new(),
        absent,
    })
}

fn is_loop(occurs: &Occurs) -> bool {
    matches!(
        occurs,
        Occurs::Times(_) | Occurs::TimesFrom { .. } | Occurs::OneOrMore
    )
}

/// The key an event has for a pattern: the field `key` (a string, or a number's text), else
/// the event's correlation key.
fn key_of<'e>(event: &'e Event, key: &Option<FieldPath>) -> Option<Cow<'e, str>> {
    match key {
        None => Some(Cow::Borrowed(&event.key)),
        Some(path) => event.field(path)?.key_text(),
    }
}

/// The registry's factory for `pattern`, `fraud` and `customer_contact`: builds the process's
/// patterns if it runs `template`.
pub fn build(
    process: &ProcessSpec,
    template: &str,
) -> Option<Box<dyn crate::template::DynTemplate>> {
    match &process.template {
        TemplateSpec::Pattern(spec) if spec.template == template => {
            Some(Box::new(PatternTemplate::new(&process.name, spec.clone())))
        }
        _ => None,
    }
}

impl PatternTemplate {
    /// Builds the template. Panics on a pattern [`check`] rejects (the topology compiler
    /// reports those first).
    pub fn new(process: &str, spec: PatternTemplateSpec) -> PatternTemplate {
        let patterns = spec
            .patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut compiled = compile(p).unwrap_or_else(|errors| {
                    panic!("invalid pattern `{}`: {}", p.name, errors[0].message)
                });
                compiled.timer = format!("within:{i}");
                compiled
            })
            .collect();
        PatternTemplate {
            process: process.to_owned(),
            patterns,
        }
    }

    fn deadline(&self, p: &Compiled, run: &Run) -> Millis {
        run.started.saturating_add(p.spec.within)
    }

    /// Expires, in deadline order, the runs of pattern `pi` whose deadline is at or before
    /// `now`.
    fn expire(&self, pi: usize, runs: &mut SmallVec<[Run; 1]>, now: Millis, cx: &mut Context<'_>) {
        let p = &self.patterns[pi];
        loop {
            let Some(next) = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| self.deadline(p, r) <= now)
                .min_by_key(|(_, r)| (self.deadline(p, r), r.start_seq))
                .map(|(i, _)| i)
            else {
                return;
            };
            let run = runs.remove(next);
            let deadline = self.deadline(p, &run);
            if p.absent.is_some() && self.at_absent(p, &run) {
                cx.emit(self.record(p, &p.spec.name, deadline, &run, cx.key()));
                if p.spec.skip == SkipStrategy::SkipPastLastEvent {
                    runs.clear();
                }
            } else if let Some(timeout) = &p.spec.timeout {
                cx.emit(self.record(p, timeout, deadline, &run, cx.key()));
            }
        }
    }

    /// Whether every positive step of the run has its minimum: it waits only for the deadline.
    fn at_absent(&self, p: &Compiled, run: &Run) -> bool {
        let absent = p.absent.expect("absence pattern");
        (run.step as usize..absent).all(|j| {
            let count = if j == run.step as usize { run.count } else { 0 };
            self.bounds(p, run, j).is_some_and(|(min, _)| count >= min)
        })
    }

    /// The (min, max) events step `j` takes in this run; `None` if a `times_from` count is
    /// missing or not a positive integer.
    fn bounds(&self, p: &Compiled, run: &Run, j: usize) -> Option<(u32, u32)> {
        Some(match &p.spec.steps[j].occurs {
            Occurs::Once => (1, 1),
            Occurs::Times(n) => (*n, *n),
            Occurs::OneOrMore => (1, u32::MAX),
            Occurs::Optional => (0, 1),
            Occurs::Never => (0, 0),
            Occurs::TimesFrom { .. } => {
                let (from, field) = p.steps[j].times_from.as_ref()?;
                let taken = run.taken.iter().find(|t| t.step as usize == *from)?;
                let n = taken.payload.as_ref()?.lookup(field)?.as_u64()?;
                let n = u32::try_from(n).ok().filter(|&n| n > 0)?;
                (n, n)
            }
        })
    }

    /// Whether step `j` accepts `event` given what the run matched (type and condition; a
    /// condition that fails to evaluate does not hold).
    fn fits(&self, p: &Compiled, run: &Run, j: usize, event: &Event) -> bool {
        let spec = &p.spec.steps[j];
        if *event.type_name != spec.on {
            return false;
        }
        let Some(condition) = &p.steps[j].condition else {
            return true;
        };
        if let Some(comparison) = condition.comparison() {
            let number =
                |variable: &str, path: &[String]| self.number(p, run, j, event, variable, path);
            if let Some(holds) = comparison.decide(number) {
                return holds;
            }
        }
        let mut vars = Vars::new();
        vars.bind("event", project_payload(&event.payload, &p.steps[j].event));
        for (k, reads) in &p.steps[j].refers {
            let mut payloads = run
                .taken
                .iter()
                .filter(|t| t.step as usize == *k)
                .filter_map(|t| t.payload.as_ref())
                .map(|kept| kept.project(reads));
            let value = if is_loop(&p.spec.steps[*k].occurs) {
                CelValue::List(Arc::new(payloads.collect()))
            } else {
                payloads.next().unwrap_or(CelValue::Null)
            };
            vars.bind(&p.spec.steps[*k].name, value);
        }
        condition.eval_bool(&vars).unwrap_or(false)
    }

    /// The number at `path` in a variable of step `j`'s condition, as [`Self::fits`] binds
    /// them: a step the condition refers to (its first match), or the event. `None` if it is
    /// not there or not a number.
    fn number(
        &self,
        p: &Compiled,
        run: &Run,
        j: usize,
        event: &Event,
        variable: &str,
        path: &[String],
    ) -> Option<CelValue> {
        let referred = p.steps[j]
            .refers
            .iter()
            .find(|(k, _)| p.spec.steps[*k].name == variable);
        match referred {
            Some((k, _)) if is_loop(&p.spec.steps[*k].occurs) => None,
            Some((k, _)) => {
                let taken = run.taken.iter().find(|t| t.step as usize == *k)?;
                let kept = path
                    .iter()
                    .try_fold(taken.payload.as_ref()?, |v, name| v.field(name))?;
                match kept {
                    Kept::Int(_) | Kept::UInt(_) | Kept::Float(_) => Some(kept.to_cel()),
                    _ => None,
                }
            }
            None if variable == "event" => {
                let number = event.payload.get_path(path)?.number()?;
                Some(to_cel(&Value::Number(number)))
            }
            None => None,
        }
    }

    /// Offers `event` to a run.
    fn advance(&self, p: &Compiled, run: &mut Run, event: &Event) -> Outcome {
        let n = p.steps.len();
        let mut viable = false;
        let mut j = run.step as usize;
        while j < n {
            let spec = &p.spec.steps[j];
            if spec.occurs == Occurs::Never {
                if self.fits(p, run, j, event) {
                    return Outcome::Dead;
                }
                viable = true;
                break;
            }
            let Some((min, max)) = self.bounds(p, run, j) else {
                return Outcome::Dead;
            };
            let count = if j == run.step as usize { run.count } else { 0 };
            let relaxed = spec.contiguity == Contiguity::FollowedBy;
            if count < max {
                viable |= relaxed;
                if (relaxed || !run.gap) && self.fits(p, run, j, event) {
                    run.step = j as u16;
                    run.count = count + 1;
                    run.gap = false;
                    run.taken.push(Taken {
                        step: j as u16,
                        time: event.time,
                        payload: p.steps[j]
                            .keep
                            .as_ref()
                            .map(|reads| Kept::of_payload(&event.payload, reads)),
                    });
                    return if j + 1 == n && run.count == max {
                        Outcome::Complete
                    } else {
                        Outcome::Continue
                    };
                }
            }
            if count < min {
                break;
            }
            j += 1;
        }
        run.gap = true;
        if viable {
            Outcome::Continue
        } else {
            Outcome::Dead
        }
    }

    fn record(&self, p: &Compiled, name: &str, at: Millis, run: &Run, key: &str) -> Record {
        let kind = if name == p.spec.name {
            p.spec.kind
        } else {
            RecordKind::Pattern
        };
        // `[{"at":…,"step":…},…]`, written straight as JSON (the fields in the order
        // `serde_json`'s objects have them): a list of objects built to be written once
        // was a third of the template's cost.
        Record::new(kind, name, key, at)
            .with("process", &self.process)
            .with_json("matched", |out| {
                out.push(b'[');
                for (i, t) in run.taken.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"at\":\"");
                    Rfc3339(t.time).append_to(out);
                    out.extend_from_slice(b"\",\"step\":");
                    push_json_str(out, &p.spec.steps[t.step as usize].name);
                    out.push(b'}');
                }
                out.push(b']');
            })
    }

    /// Handles an event for pattern `pi`.
    fn on_pattern_event(
        &self,
        pi: usize,
        runs: &mut SmallVec<[Run; 1]>,
        event: &Event,
        cx: &mut Context<'_>,
    ) {
        let p = &self.patterns[pi];
        self.expire(pi, runs, event.time, cx);
        let mut i = 0;
        while i < runs.len() {
            match self.advance(p, &mut runs[i], event) {
                Outcome::Continue => i += 1,
                Outcome::Dead => {
                    runs.remove(i);
                }
                Outcome::Complete => {
                    let run = runs.remove(i);
                    cx.emit(self.record(p, &p.spec.name, event.time, &run, cx.key()));
                    if p.spec.skip == SkipStrategy::SkipPastLastEvent {
                        runs.clear();
                        return;
                    }
                }
            }
        }
        let mut run = Run {
            started: event.time,
            start_seq: event.seq,
            step: 0,
            count: 0,
            gap: false,
            taken: SmallVec::new(),
        };
        if !self.fits(p, &run, 0, event) {
            return;
        }
        match self.advance(p, &mut run, event) {
            Outcome::Continue => {
                if runs.len() == MAX_RUNS {
                    runs.remove(0);
                }
                runs.push(run);
            }
            Outcome::Complete => {
                cx.emit(self.record(p, &p.spec.name, event.time, &run, cx.key()));
            }
            Outcome::Dead => {}
        }
    }

    fn set_timer(&self, pi: usize, runs: &[Run], cx: &mut Context<'_>) {
        let p = &self.patterns[pi];
        match runs.iter().map(|r| self.deadline(p, r)).min() {
            Some(at) => cx.set_timer(&p.timer, at),
            None => cx.cancel_timer(&p.timer),
        }
    }

    fn init(&self, state: &mut PatternState) {
        if state.patterns.len() != self.patterns.len() {
            state.patterns = smallvec![Runs::default(); self.patterns.len()];
        }
    }
}

impl Template for PatternTemplate {
    type State = PatternState;

    /// Its handlers return no errors; a panic is a bug, and the runtime recovers from it.
    fn handles_in_place(&self) -> bool {
        true
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        let mut subscriptions: Vec<Subscription> = Vec::new();
        for p in &self.patterns {
            for step in &p.spec.steps {
                let sub = match &p.spec.key {
                    None => Subscription::new(step.on.clone()),
                    Some(key) => Subscription::keyed_by(step.on.clone(), key.clone()),
                };
                if !subscriptions.contains(&sub) {
                    subscriptions.push(sub);
                }
            }
        }
        subscriptions
    }

    fn on_event(
        &self,
        state: &mut PatternState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if state.last_seq == Some(event.seq) {
            return Ok(());
        }
        state.last_seq = Some(event.seq);
        self.init(state);
        for (pi, p) in self.patterns.iter().enumerate() {
            let subscribed = p.spec.steps.iter().any(|s| *event.type_name == s.on);
            if !subscribed || key_of(event, &p.spec.key).as_deref() != Some(cx.key()) {
                continue;
            }
            let runs = &mut state.patterns[pi].runs;
            self.on_pattern_event(pi, runs, event, cx);
            self.set_timer(pi, runs, cx);
        }
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut PatternState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        self.init(state);
        if let Some(pi) = self.patterns.iter().position(|p| p.timer == timer) {
            let runs = &mut state.patterns[pi].runs;
            self.expire(pi, runs, cx.time(), cx);
            self.set_timer(pi, runs, cx);
        }
        Ok(())
    }

    fn is_complete(&self, state: &PatternState) -> bool {
        state.patterns.iter().all(|p| p.runs.is_empty())
    }

    fn describe(&self, state: &PatternState) -> Value {
        let patterns: Vec<Value> = self
            .patterns
            .iter()
            .zip(&state.patterns)
            .map(|(p, runs)| {
                let runs: Vec<Value> = runs
                    .runs
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "started_at": format_rfc3339(r.started),
                            "deadline": format_rfc3339(self.deadline(p, r)),
                            "step": p.spec.steps[r.step as usize].name,
                            "taken": r.taken.len(),
                        })
                    })
                    .collect();
                serde_json::json!({ "pattern": p.spec.name, "runs": runs })
            })
            .collect();
        serde_json::json!({ "patterns": patterns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::PatternStepSpec;
    use crate::template::Timers;
    use std::sync::Arc;

    fn step(name: &str, on: &str, occurs: Occurs) -> PatternStepSpec {
        PatternStepSpec {
            name: name.into(),
            on: on.into(),
            condition: None,
            contiguity: Contiguity::FollowedBy,
            occurs,
        }
    }

    fn pattern(steps: Vec<PatternStepSpec>, within: Millis) -> PatternSpec {
        PatternSpec {
            name: "MATCH".into(),
            kind: RecordKind::Pattern,
            key: None,
            within,
            skip: SkipStrategy::SkipPastLastEvent,
            timeout: Some("MATCH_TIMEOUT".into()),
            steps,
        }
    }

    fn template(p: PatternSpec) -> PatternTemplate {
        PatternTemplate::new(
            "p",
            PatternTemplateSpec {
                template: "pattern".into(),
                patterns: vec![p],
            },
        )
    }

    struct Harness {
        t: PatternTemplate,
        state: PatternState,
        out: Vec<Record>,
        timers: Timers,
        seq: u64,
    }

    impl Harness {
        fn new(p: PatternSpec) -> Harness {
            Harness {
                t: template(p),
                state: PatternState::default(),
                out: vec![],
                timers: Timers::new(),
                seq: 0,
            }
        }
        fn send(&mut self, ty: &str, time: Millis, payload: Value) {
            self.seq += 1;
            let e = Event {
                seq: self.seq,
                type_index: 0,
                type_name: Arc::from(ty),
                key: Arc::from("K"),
                time,
                id: None,
                payload: payload.into(),
            };
            let mut cx = Context::for_test("K", time, &mut self.out, &mut self.timers);
            self.t.on_event(&mut self.state, &e, &mut cx).unwrap();
        }
        fn fire_all(&mut self) {
            while let Some((name, at)) = self.timers.iter().min_by_key(|t| t.1).cloned() {
                self.timers.retain(|t| t.0 != name);
                let mut cx = Context::for_test("K", at, &mut self.out, &mut self.timers);
                self.t.on_timer(&mut self.state, &name, &mut cx).unwrap();
            }
        }
        fn names(&self) -> Vec<(String, Millis)> {
            self.out
                .iter()
                .map(|r| (r.name.clone(), r.event_time.unwrap()))
                .collect()
        }
    }

    #[test]
    fn parcels_counted_from_the_order_within_the_deadline() {
        let mut p = pattern(
            vec![
                step("created", "ORDER_CREATED", Occurs::Once),
                step(
                    "shipped",
                    "PARCEL_SHIPPED",
                    Occurs::TimesFrom {
                        step: "created".into(),
                        field: FieldPath::parse("parcels"),
                    },
                ),
            ],
            100,
        );
        p.name = "ALL_SHIPPED".into();
        let mut h = Harness::new(p);
        h.send("ORDER_CREATED", 0, serde_json::json!({"parcels": 2}));
        h.send("PARCEL_SHIPPED", 10, serde_json::json!({}));
        assert!(h.out.is_empty() && !h.t.is_complete(&h.state));
        h.send("PARCEL_SHIPPED", 20, serde_json::json!({}));
        assert_eq!(h.names(), vec![("ALL_SHIPPED".to_string(), 20)]);
        assert!(h.t.is_complete(&h.state) && h.timers.is_empty());
    }

    #[test]
    fn absence_fires_at_the_deadline_and_a_late_partner_cancels_it() {
        let p = pattern(
            vec![
                step("added", "CART_ITEM_ADDED", Occurs::Once),
                step("ordered", "ORDER_CREATED", Occurs::Never),
            ],
            100,
        );
        let mut h = Harness::new(p.clone());
        h.send("CART_ITEM_ADDED", 0, serde_json::json!({}));
        h.send("CART_ITEM_ADDED", 50, serde_json::json!({}));
        assert_eq!(h.timers[..], [("within:0".into(), 100)]);
        h.fire_all();
        assert_eq!(h.names(), vec![("MATCH".to_string(), 100)]);
        assert!(
            h.t.is_complete(&h.state),
            "skip past: the second run went too"
        );

        let mut h = Harness::new(p);
        h.send("CART_ITEM_ADDED", 0, serde_json::json!({}));
        h.send("ORDER_CREATED", 99, serde_json::json!({}));
        assert!(h.t.is_complete(&h.state));
        h.fire_all();
        assert!(h.out.is_empty());
    }

    #[test]
    fn conditions_refer_to_earlier_steps_and_partial_matches_time_out() {
        let mut second = step("second", "PAYMENT_AUTHORIZED", Occurs::Once);
        second.condition = Some("failed.all(f, f.method != event.method)".into());
        let p = pattern(
            vec![step("failed", "PAYMENT_FAILED", Occurs::Times(2)), second],
            600,
        );
        let mut h = Harness::new(p);
        h.send("PAYMENT_FAILED", 0, serde_json::json!({"method": "card"}));
        h.send("PAYMENT_FAILED", 10, serde_json::json!({"method": "card"}));
        h.send(
            "PAYMENT_AUTHORIZED",
            20,
            serde_json::json!({"method": "card"}),
        );
        assert!(h.out.is_empty());
        h.send(
            "PAYMENT_AUTHORIZED",
            30,
            serde_json::json!({"method": "paypal"}),
        );
        assert_eq!(h.names(), vec![("MATCH".to_string(), 30)]);
        assert_eq!(h.out[0].details()[1].1[2]["step"], "second");
        h.send("PAYMENT_FAILED", 40, serde_json::json!({"method": "card"}));
        h.fire_all();
        assert_eq!(h.names()[1], ("MATCH_TIMEOUT".to_string(), 640));
        assert!(h.t.is_complete(&h.state));
    }

    #[test]
    fn strict_contiguity_drops_a_run_after_a_gap() {
        let mut b = step("b", "B", Occurs::Once);
        b.contiguity = Contiguity::Next;
        let mut h = Harness::new(pattern(vec![step("a", "A", Occurs::Once), b], 100));
        h.send("A", 0, serde_json::json!({}));
        h.send("A", 1, serde_json::json!({}));
        assert_eq!(
            h.state.patterns[0].runs.len(),
            1,
            "the first run was dropped"
        );
        h.send("B", 3, serde_json::json!({}));
        assert_eq!(h.names(), vec![("MATCH".to_string(), 3)]);
        assert!(h.out[0].details()[1].1[0]["at"]
            .as_str()
            .unwrap()
            .ends_with("00.001Z"));
        assert!(h.t.is_complete(&h.state));
    }

    #[test]
    fn state_round_trips_through_the_codec() {
        let mut h = Harness::new(pattern(
            vec![
                step("a", "A", Occurs::OneOrMore),
                step("b", "B", Occurs::Once),
            ],
            100,
        ));
        h.send("A", 0, serde_json::json!({"x": 1}));
        let bytes = vigil_storage::codec::encode(&h.state);
        let back: PatternState = vigil_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back.patterns[0].runs.len(), 1);
    }

    /// A pattern of an order (`created`) then its payment (`paid`, with `condition`).
    fn order_paid(condition: &str) -> Harness {
        let mut paid = step("paid", "PAYMENT_AUTHORIZED", Occurs::Once);
        paid.condition = Some(condition.into());
        Harness::new(pattern(
            vec![step("created", "ORDER_CREATED", Occurs::Once), paid],
            100,
        ))
    }

    fn kept(h: &Harness) -> Option<Kept> {
        h.state.patterns[0].runs[0].taken[0].payload.clone()
    }

    #[test]
    fn a_condition_reads_a_nested_field_of_an_earlier_step() {
        let mut h = order_paid("event.customer.id == created.customer.id");
        let order = serde_json::json!({"customer": {"id": "C-1", "name": "Ann"}, "amount": 10});
        h.send("ORDER_CREATED", 0, order);
        let customer = Kept::Object(vec![(Arc::new("id".into()), Kept::String("C-1".into()))]);
        assert_eq!(
            kept(&h),
            Some(Kept::Object(vec![(Arc::new("customer".into()), customer)])),
            "only the field read is kept"
        );
        let bytes = vigil_storage::codec::encode(&h.state);
        let back: PatternState = vigil_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back.patterns[0].runs[0].taken[0].payload, kept(&h));
        h.state = back;
        h.send(
            "PAYMENT_AUTHORIZED",
            10,
            serde_json::json!({"customer": {"id": "C-2"}}),
        );
        h.send(
            "PAYMENT_AUTHORIZED",
            20,
            serde_json::json!({"customer": "C-1"}),
        );
        assert!(h.out.is_empty());
        h.send(
            "PAYMENT_AUTHORIZED",
            30,
            serde_json::json!({"customer": {"id": "C-1", "name": "Bob"}}),
        );
        assert_eq!(h.names(), vec![("MATCH".to_string(), 30)]);
    }

    /// The inline lists encode as the `Vec`s that state written before them had: the same
    /// bytes, inline or spilled to the heap (two patterns, two runs, three events taken).
    #[test]
    fn inline_lists_encode_as_vecs() {
        #[derive(Serialize)]
        struct RunAsVecs {
            started: Millis,
            start_seq: u64,
            step: u16,
            count: u32,
            gap: bool,
            taken: Vec<Taken>,
        }
        #[derive(Serialize)]
        struct AsVecs {
            last_seq: Option<u64>,
            patterns: Vec<Vec<RunAsVecs>>,
        }
        let taken = |step: u16| Taken {
            step,
            time: 10 * i64::from(step),
            payload: Some(Kept::Object(vec![(
                Arc::new("amount".into()),
                Kept::Int(7),
            )])),
        };
        let run = |taken_count: u16| Run {
            started: 5,
            start_seq: 9,
            step: taken_count,
            count: 1,
            gap: true,
            taken: (0..taken_count).map(taken).collect(),
        };
        let inline = PatternState {
            last_seq: Some(3),
            patterns: smallvec![Runs {
                runs: smallvec![run(2)]
            }],
        };
        let spilled = PatternState {
            last_seq: None,
            patterns: smallvec![
                Runs {
                    runs: smallvec![run(3), run(1)]
                },
                Runs::default()
            ],
        };
        for state in [inline, spilled] {
            let as_vecs = AsVecs {
                last_seq: state.last_seq,
                patterns: state
                    .patterns
                    .iter()
                    .map(|runs| {
                        runs.runs
                            .iter()
                            .map(|r| RunAsVecs {
                                started: r.started,
                                start_seq: r.start_seq,
                                step: r.step,
                                count: r.count,
                                gap: r.gap,
                                taken: r.taken.to_vec(),
                            })
                            .collect()
                    })
                    .collect(),
            };
            assert_eq!(
                vigil_storage::codec::encode(&state),
                vigil_storage::codec::encode(&as_vecs)
            );
        }
    }

    #[test]
    fn a_condition_using_a_whole_earlier_event_keeps_all_of_it() {
        let mut h = order_paid("'amount' in created && event.amount >= created.amount");
        let order = serde_json::json!({"amount": 10, "lines": [{"sku": "A"}], "id": "O-1"});
        h.send("ORDER_CREATED", 0, order.clone());
        assert_eq!(kept(&h), Some(Kept::from(&order)));
        h.send("PAYMENT_AUTHORIZED", 10, serde_json::json!({"amount": 9.5}));
        assert!(h.out.is_empty());
        h.send(
            "PAYMENT_AUTHORIZED",
            20,
            serde_json::json!({"amount": 10.0}),
        );
        assert_eq!(h.names(), vec![("MATCH".to_string(), 20)]);

        let mut h = order_paid("'amount' in created && event.amount >= created.amount");
        h.send("ORDER_CREATED", 0, serde_json::json!({"total": 10}));
        h.send("PAYMENT_AUTHORIZED", 10, serde_json::json!({"amount": 10}));
        assert!(h.out.is_empty() && !h.t.is_complete(&h.state));
    }

    #[test]
    fn a_condition_on_a_missing_field_does_not_hold() {
        let mut h = order_paid("event.amount >= created.amount");
        h.send("ORDER_CREATED", 0, serde_json::json!({"amount": 10}));
        h.send("PAYMENT_AUTHORIZED", 10, serde_json::json!({"total": 20}));
        assert!(h.out.is_empty() && !h.t.is_complete(&h.state));
        h.send("PAYMENT_AUTHORIZED", 20, serde_json::json!({"amount": 20}));
        assert_eq!(h.names(), vec![("MATCH".to_string(), 20)]);

        let mut h = order_paid("event.amount >= created.amount");
        h.send("ORDER_CREATED", 0, serde_json::json!({"total": 10}));
        assert_eq!(kept(&h), Some(Kept::Object(vec![])));
        h.send("PAYMENT_AUTHORIZED", 10, serde_json::json!({"amount": 20}));
        assert!(h.out.is_empty());

        let mut h = order_paid("!has(event.coupon) || event.coupon == created.coupon");
        h.send("ORDER_CREATED", 0, serde_json::json!({"coupon": "X"}));
        h.send("PAYMENT_AUTHORIZED", 10, serde_json::json!({"coupon": "Y"}));
        assert!(h.out.is_empty());
        h.send("PAYMENT_AUTHORIZED", 20, serde_json::json!({}));
        assert_eq!(h.names(), vec![("MATCH".to_string(), 20)]);
    }

    #[test]
    fn times_from_reads_a_kept_nested_field() {
        let mut shipped = step(
            "shipped",
            "PARCEL_SHIPPED",
            Occurs::TimesFrom {
                step: "created".into(),
                field: FieldPath::parse("delivery.parcels"),
            },
        );
        shipped.condition = Some("event.order == created.id".into());
        let mut h = Harness::new(pattern(
            vec![step("created", "ORDER_CREATED", Occurs::Once), shipped],
            100,
        ));
        let order = serde_json::json!({"id": "O-1", "delivery": {"parcels": 2, "to": "DE"}});
        h.send("ORDER_CREATED", 0, order);
        h.send("PARCEL_SHIPPED", 10, serde_json::json!({"order": "O-1"}));
        h.send("PARCEL_SHIPPED", 20, serde_json::json!({"order": "O-2"}));
        assert!(h.out.is_empty());
        h.send("PARCEL_SHIPPED", 30, serde_json::json!({"order": "O-1"}));
        assert_eq!(h.names(), vec![("MATCH".to_string(), 30)]);
    }

    /// The values a condition sees are the whole payloads cut down to what it reads: it gives
    /// the same result (or fails) either way.
    #[test]
    fn conditions_on_what_they_read_agree_with_whole_payloads() {
        let created = serde_json::json!({"amount": 10, "big": 18446744073709551615u64,
            "customer": {"id": "C-1", "tags": ["vip"]}, "note": "x", "price": 2.5});
        let events = [
            serde_json::json!({"amount": 10.0, "customer": {"id": "C-1"}, "tags": ["vip"]}),
            serde_json::json!({"amount": 9, "customer": "C-1", "coupon": null}),
            serde_json::json!({}),
            serde_json::json!([1, 2]),
        ];
        let conditions = [
            "event.amount >= created.amount",
            "event.customer.id == created.customer.id",
            "created.customer.tags.exists(t, t in event.tags)",
            "has(event.coupon) ? event.coupon == null : created.note == 'x'",
            "created.big > 0u && created.price * 2.0 == 5.0",
            "created.customer == event.customer",
            "size(event) > 1 && 'note' in created",
        ];
        for source in conditions {
            let expr = Expr::compile(source).unwrap();
            let on_event = Reads::of(expr.field_paths("event"));
            let on_created = Reads::of(expr.field_paths("created"));
            let kept = Kept::of(&created, &on_created);
            for event in &events {
                let mut whole = Vars::new();
                whole.bind_json("event", event);
                whole.bind_json("created", &created);
                let mut read = Vars::new();
                read.bind("event", event.project(&on_event));
                read.bind("created", kept.project(&on_created));
                assert_eq!(
                    expr.eval_bool(&read).ok(),
                    expr.eval_bool(&whole).ok(),
                    "{source} on {event}"
                );
            }
        }
    }

    #[test]
    fn check_reports_structural_mistakes_and_bad_conditions() {
        let mut b = step("b", "B", Occurs::OneOrMore);
        b.condition = Some("event.x == c.x".into());
        let mut c = step("c", "C", Occurs::Once);
        c.condition = Some("event.x ==".into());
        let errors = check(&pattern(vec![step("a", "A", Occurs::Optional), b, c], 10));
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["occurs", "where", "where"]);
        assert!(errors[2].offset.is_some());
    }
}
