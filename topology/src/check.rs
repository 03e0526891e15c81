//! The semantic pass: every name used in the file resolves to something declared, and no two
//! sinks write the same file.
//!
//! The structural pass ([`crate::compile`]) records each use of a name as a [`Reference`] with
//! its span; this pass resolves them all against what was declared. A name whose own
//! declaration failed to read is still declared (it is the table's key), so one mistake does not
//! cascade into a string of "unknown" errors.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use vigil_actors::spec::{EventTypeSpec, FieldPath, FieldType, JobSpec, TemplateSpec};

use crate::compile::Model;
use crate::diagnostics::Span;
use crate::reader::Ctx;
use crate::suggest;

/// What a name must resolve to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// A declared event type (`start`, `cancel`, a step's `on`).
    EventType,
    /// A step of the named process (`complete`, an SLA's `step` and `from`).
    Step { process: String },
    /// A declared field of an event type; `integer` when it must hold an integer.
    Field { event_type: String, integer: bool },
    /// A declared `number` or `integer` field of an event type (a window's `sum`, `avg`, ...).
    NumberField { event_type: String },
    /// The event type must declare an `id` (a step counting distinct events by id).
    EventId { event_type: String },
    /// A declared process (a sink's `inputs`).
    Process,
}

/// A name used in the file, where it is used, and in which role (`on`, `expect`, ...).
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    pub target: Target,
    pub name: String,
    pub span: Span,
    pub role: &'static str,
}

/// A file some sink writes.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub path: PathBuf,
    pub span: Span,
    /// `sink `alerts``, `[dead_letter]`.
    pub owner: String,
}

/// Resolves every reference and checks sink isolation.
pub(crate) fn check(model: &Model, ctx: &mut Ctx<'_>) {
    let spec = &model.spec;
    let event_types: Vec<&str> = spec.event_types.iter().map(|e| e.name.as_str()).collect();
    let processes: Vec<&str> = model.process_names.iter().map(String::as_str).collect();
    for reference in std::mem::take(&mut ctx.references) {
        let Reference {
            target,
            name,
            span,
            role,
        } = reference;
        match target {
            Target::EventType => {
                if !event_types.contains(&name.as_str()) {
                    let hint = suggest::hint(
                        &name,
                        &event_types,
                        format!("declare it as `[events.{name}]`"),
                    );
                    ctx.absence(span, format!("unknown event type `{name}`"))
                        .hint(hint);
                }
            }
            Target::Process => {
                if !processes.contains(&name.as_str()) {
                    let hint = suggest::hint(
                        &name,
                        &processes,
                        format!("declare it as `[processes.{name}]`"),
                    );
                    ctx.absence(span, format!("unknown process `{name}`"))
                        .hint(hint);
                }
            }
            Target::Step { process } => {
                let Some(steps) = steps_of(spec, &process) else {
                    continue;
                };
                if !steps.contains(&name.as_str()) {
                    let hint = suggest::hint(
                        &name,
                        &steps,
                        format!("add a `[[processes.{process}.steps]]` named `{name}`"),
                    );
                    ctx.absence(span, format!("process `{process}` has no step `{name}`"))
                        .hint(hint);
                }
            }
            Target::Field {
                event_type,
                integer,
            } => {
                let Some(event) = event_type_named(spec, &event_type) else {
                    continue;
                };
                check_field(ctx, event, &name, span, role, integer);
            }
            Target::NumberField { event_type } => {
                let Some(event) = event_type_named(spec, &event_type) else {
                    continue;
                };
                check_number_field(ctx, event, &name, span, role);
            }
            Target::EventId { event_type } => {
                let Some(event) = event_type_named(spec, &event_type) else {
                    continue;
                };
                if event.id.is_none() {
                    ctx.absence(
                        span,
                        format!(
                            "this step counts distinct `{event_type}` events by their id, but \
                             `[events.{event_type}]` declares no `id`"
                        ),
                    )
                    .hint(format!(
                        "add `distinct = \"<field>\"` to the step, or `id = \"<field>\"` to \
                         `[events.{event_type}]`"
                    ));
                }
            }
        }
    }
    check_outputs(ctx);
}

fn event_type_named<'s>(spec: &'s JobSpec, name: &str) -> Option<&'s EventTypeSpec> {
    spec.event_types.iter().find(|e| e.name == name)
}

fn steps_of<'s>(spec: &'s JobSpec, process: &str) -> Option<Vec<&'s str>> {
    let process = spec.processes.iter().find(|p| p.name == process)?;
    match &process.template {
        TemplateSpec::Process(p) => Some(p.steps.iter().map(|s| s.name.as_str()).collect()),
        _ => None,
    }
}

fn check_field(
    ctx: &mut Ctx<'_>,
    event: &EventTypeSpec,
    name: &str,
    span: Span,
    role: &str,
    integer: bool,
) {
    let path = FieldPath::parse(name);
    let event_type = &event.name;
    if event
        .derive
        .iter()
        .any(|d| FieldPath::parse(&d.name) == path)
    {
        return; // derived after decoding: present (its type is the rule's)
    }
    match event.fields.iter().find(|f| f.path == path) {
        Some(field) if integer && field.ty != FieldType::Integer => {
            ctx.error(
                span,
                format!(
                    "`{role}` needs an integer field, but field `{name}` of `{event_type}` is \
                     declared `{}`",
                    field.ty.name()
                ),
            )
            .hint(format!(
                "`{role}` reads from the start event how many events to wait for; declare \
                 `{name} = \"integer\"` in `[events.{event_type}]`"
            ));
        }
        Some(_) => {}
        None => {
            let candidates: Vec<String> = event
                .fields
                .iter()
                .filter(|f| !integer || f.ty == FieldType::Integer)
                .map(|f| f.path.to_string())
                .collect();
            let candidates: Vec<&str> = candidates.iter().map(String::as_str).collect();
            let ty = if integer { "integer" } else { "string" };
            let hint = match suggest::closest(name, candidates.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!(
                    "declare it in the `fields` of `[events.{event_type}]`, e.g. \
                     `{name} = \"{ty}\"`"
                ),
            };
            let which = if integer { "start event" } else { "event" };
            ctx.absence(
                span,
                format!("`{role}` names field `{name}`, which the {which} `{event_type}` does not declare"),
            )
            .hint(hint);
        }
    }
}

/// A field a window aggregates numerically: declared, as `number` or `integer`.
fn check_number_field(
    ctx: &mut Ctx<'_>,
    event: &EventTypeSpec,
    name: &str,
    span: Span,
    role: &str,
) {
    let path = FieldPath::parse(name);
    let event_type = &event.name;
    match event.fields.iter().find(|f| f.path == path) {
        Some(field) if !matches!(field.ty, FieldType::Number | FieldType::Integer) => {
            ctx.error(
                span,
                format!(
                    "`{role}` needs a number, but field `{name}` of `{event_type}` is declared `{}`",
                    field.ty.name()
                ),
            )
            .hint(format!(
                "aggregate a `number` or `integer` field, or use `distinct_count` for `{name}`"
            ));
        }
        Some(_) => {}
        None => check_field(ctx, event, name, span, role, false),
    }
}

/// Sink isolation: no two sinks (the dead-letter sink included) append to the same file.
fn check_outputs(ctx: &mut Ctx<'_>) {
    let mut outputs = std::mem::take(&mut ctx.outputs);
    outputs.sort_by_key(|o| o.span.start);
    let mut seen: HashMap<PathBuf, String> = HashMap::new();
    for output in outputs {
        let path = normalize(&output.path);
        match seen.get(&path) {
            Some(first) => {
                ctx.error(
                    output.span,
                    format!(
                        "{} writes `{}`, which {first} already writes",
                        output.owner,
                        output.path.display()
                    ),
                )
                .hint("each sink must write its own file; choose another path");
            }
            None => {
                seen.insert(path, output.owner);
            }
        }
    }
}

/// `./out/a.jsonl` and `out/a.jsonl` are the same file.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}
