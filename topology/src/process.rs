//! The `process` template's configuration: start and cancel events, steps and SLAs.

use std::collections::HashSet;

use toml::Spanned;
use vigil_actors::spec::{EscalationSpec, ProcessTemplateSpec, SlaSpec, StepSpec, TemplateSpec};
use vigil_actors::time::format_duration;

use crate::check::Target;
use crate::reader::{Ctx, Table};

/// Reads `[processes.NAME]` for `template = "process"`.
pub(crate) fn read(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let process = name.get_ref().as_str();
    let start = table.required_str(ctx, "start");
    if let Some(start) = &start {
        ctx.refer(Target::EventType, start, "start");
    }
    let cancel = table.optional_strings(ctx, "cancel").unwrap_or_default();
    for event_type in &cancel {
        ctx.refer(Target::EventType, event_type, "cancel");
        if start.as_ref().map(Spanned::get_ref) == Some(event_type.get_ref()) {
            ctx.error(
                event_type.span(),
                format!(
                    "`{}` both starts and cancels process `{process}`",
                    event_type.get_ref()
                ),
            )
            .hint("a cancel event must differ from the start event");
        }
    }
    let complete = table.optional_str(ctx, "complete");
    if let Some(complete) = &complete {
        let target = Target::Step {
            process: process.to_owned(),
        };
        ctx.refer(target, complete, "complete");
    }
    let expire_after = table.optional_positive_duration(ctx, "expire_after");

    let errors_before = ctx.problems.len();
    let (steps_span, step_tables) = table.array_of_tables(ctx, "steps");
    if step_tables.is_empty() && ctx.problems.len() == errors_before {
        ctx.absence(steps_span, format!("process `{process}` has no steps"))
            .hint(format!(
                "add a `[[processes.{process}.steps]]` with a `name` and the event type it is `on`"
            ));
    }
    let mut names = Names::new("step", process);
    let mut steps = Vec::new();
    for mut step in step_tables {
        if let Some(step) = read_step(start.as_ref(), &mut step, ctx, &mut names) {
            steps.push(step);
        }
        step.finish(ctx);
    }

    let (_, sla_tables) = table.array_of_tables(ctx, "slas");
    let mut names = Names::new("SLA", process);
    let mut slas = Vec::new();
    for mut sla in sla_tables {
        if let Some(sla) = read_sla(process, &mut sla, ctx, &mut names) {
            slas.push(sla);
        }
        sla.finish(ctx);
    }

    Some(TemplateSpec::Process(ProcessTemplateSpec {
        start: start.map(Spanned::into_inner).unwrap_or_default(),
        cancel: cancel.into_iter().map(Spanned::into_inner).collect(),
        complete: complete.map(Spanned::into_inner),
        expire_after,
        steps,
        slas,
    }))
}

fn read_step(
    start: Option<&Spanned<String>>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    names: &mut Names,
) -> Option<StepSpec> {
    let name = table.required_str(ctx, "name");
    let on = table.required_str(ctx, "on");
    if let Some(on) = &on {
        ctx.refer(Target::EventType, on, "on");
    }
    let expect = table.optional_path(ctx, "expect");
    if let (Some(expect), Some(start)) = (&expect, start) {
        let target = Target::Field {
            event_type: start.get_ref().clone(),
            integer: true,
        };
        ctx.refer(target, &spanned_string(expect), "expect");
    }
    let distinct = table.optional_path(ctx, "distinct");
    if let (Some(distinct), Some(on)) = (&distinct, &on) {
        let target = Target::Field {
            event_type: on.get_ref().clone(),
            integer: false,
        };
        ctx.refer(target, &spanned_string(distinct), "distinct");
    }
    match (&expect, &distinct, &on) {
        (None, Some(distinct), _) => {
            ctx.error(
                distinct.span(),
                "`distinct` only applies together with `expect`",
            )
            .hint("add `expect = \"<integer field of the start event>\"`, or remove `distinct`");
        }
        (Some(expect), None, Some(on)) => {
            let target = Target::EventId {
                event_type: on.get_ref().clone(),
            };
            ctx.refer(target, &spanned_string(expect), "expect");
        }
        _ => {}
    }
    let emit = table.optional_str(ctx, "emit");
    let name = name?;
    if ctx.check_name(&name, "step") {
        names.declare(ctx, &name);
    }
    Some(StepSpec {
        name: name.into_inner(),
        on: on.map(Spanned::into_inner).unwrap_or_default(),
        expect: expect.map(Spanned::into_inner),
        distinct: distinct.map(Spanned::into_inner),
        emit: emit.map(Spanned::into_inner),
    })
}

fn read_sla(
    process: &str,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    names: &mut Names,
) -> Option<SlaSpec> {
    let name = table.required_str(ctx, "name");
    let step = table.required_str(ctx, "step");
    let step_target = || Target::Step {
        process: process.to_owned(),
    };
    if let Some(step) = &step {
        ctx.refer(step_target(), step, "step");
    }
    let within = table.required_positive_duration(ctx, "within");
    let from = table.optional_str(ctx, "from");
    if let Some(from) = &from {
        ctx.refer(step_target(), from, "from");
        if step.as_ref().map(Spanned::get_ref) == Some(from.get_ref()) {
            ctx.error(
                from.span(),
                "an SLA cannot start and end at the same step",
            )
            .hint("`from` is the step the clock starts at; leave it out to start at the start event");
        }
    }
    let severity = table.optional_str(ctx, "severity");
    let resolve = table.bool_or(ctx, "resolve", false);
    let (_, escalation_tables) = table.array_of_tables(ctx, "escalate");
    let mut escalate = Vec::new();
    let mut previous = within.map(|w| (w, "`within`"));
    for mut level in escalation_tables {
        let level_name = level.optional_str(ctx, "name");
        if let Some(level_name) = &level_name {
            ctx.check_name(level_name, "alert");
        }
        let after = level.required_positive_duration(ctx, "after");
        let level_severity = level.optional_str(ctx, "severity");
        if let (Some(after), Some((before, what))) = (after, previous) {
            if after <= before {
                ctx.error(
                    level.span(),
                    format!(
                        "an escalation must come after {what} ({}), not at {}",
                        format_duration(before),
                        format_duration(after)
                    ),
                )
                .hint("escalation levels count from the same origin as `within`, in increasing `after` order");
            }
        }
        previous = after.map(|a| (a, "the previous level")).or(previous);
        level.finish(ctx);
        escalate.push(EscalationSpec {
            name: level_name.map(Spanned::into_inner).unwrap_or_default(),
            after: after.unwrap_or_default(),
            severity: level_severity.map(Spanned::into_inner),
        });
    }
    let name = name?;
    if ctx.check_name(&name, "SLA") {
        names.declare(ctx, &name);
    }
    for level in &mut escalate {
        if level.name.is_empty() {
            level.name = name.get_ref().clone();
        }
    }
    Some(SlaSpec {
        name: name.into_inner(),
        step: step?.into_inner(),
        within: within?,
        from: from.map(Spanned::into_inner),
        severity: severity.map(Spanned::into_inner),
        resolve,
        escalate,
    })
}

/// Step or SLA names of one process, to report duplicates.
struct Names {
    what: &'static str,
    process: String,
    seen: HashSet<String>,
}

impl Names {
    fn new(what: &'static str, process: &str) -> Names {
        Names {
            what,
            process: process.to_owned(),
            seen: HashSet::new(),
        }
    }

    fn declare(&mut self, ctx: &mut Ctx<'_>, name: &Spanned<String>) {
        if !self.seen.insert(name.get_ref().clone()) {
            let (what, process) = (self.what, &self.process);
            ctx.error(
                name.span(),
                format!(
                    "duplicate {what} `{}` in process `{process}`",
                    name.get_ref()
                ),
            )
            .hint(format!("{what} names must be unique within a process"));
        }
    }
}

fn spanned_string<T: ToString>(value: &Spanned<T>) -> Spanned<String> {
    Spanned::new(value.span(), value.get_ref().to_string())
}
