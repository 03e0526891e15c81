//! The configuration of the CEP templates: `pattern` (steps, quantifiers, contiguity,
//! `within`, skip strategy, timeout), and the ready-made `fraud` and `customer_contact`, which
//! compile to patterns. Conditions (`where`) are CEL, compiled here so that syntax errors and
//! unknown variables are reported at their place in the file.

use toml::Spanned;
use vigil_actors::record::RecordKind;
use vigil_actors::spec::{
    Contiguity, FieldPath, Occurs, PatternSpec, PatternStepSpec, PatternTemplateSpec, SkipStrategy,
    TemplateSpec,
};
use vigil_actors::templates::contact::{CartAbandoned, DeliveryLate};
use vigil_actors::templates::fraud::{FailedPayments, SharedAddress};
use vigil_actors::templates::pattern;

use crate::check::Target;
use crate::diagnostics::Span;
use crate::reader::{Ctx, Table};
use crate::suggest;

const OCCURS: &[&str] = &["once", "optional", "one_or_more", "never"];
const CONTIGUITY: &[&str] = &["followed_by", "next"];
const SKIP: &[&str] = &["skip_past_last_event", "no_skip"];

/// Where a step's fields are, to report what [`pattern::check`] finds.
#[derive(Default)]
struct StepSpans {
    table: Span,
    condition: Option<Spanned<String>>,
    occurs: Option<Span>,
}

/// Reads `[processes.NAME]` for `template = "pattern"`.
pub(crate) fn read(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let process = name.get_ref().as_str();
    let output = table.output_name(ctx, process);
    let key = table.optional_path(ctx, "key");
    let within = table.required_positive_duration(ctx, "within");
    let skip = match choice(table, ctx, "skip", "skip strategy", SKIP).as_deref() {
        Some("no_skip") => SkipStrategy::NoSkip,
        _ => SkipStrategy::SkipPastLastEvent,
    };
    let timeout = table.optional_str(ctx, "timeout").map(Spanned::into_inner);

    let errors_before = ctx.problems.len();
    let (steps_span, step_tables) = table.array_of_tables(ctx, "steps");
    if step_tables.is_empty() && ctx.problems.len() == errors_before {
        ctx.absence(steps_span, format!("pattern `{process}` has no steps"))
            .hint(format!(
                "add a `[[processes.{process}.steps]]` with a `name` and the event type it is `on`"
            ));
    }
    let mut steps = Vec::new();
    let mut spans = Vec::new();
    let mut complete = true;
    for mut step_table in step_tables {
        match read_step(&mut step_table, ctx, &steps, key.as_ref()) {
            Some((step, span)) => {
                if steps.iter().any(|s: &PatternStepSpec| s.name == step.name) {
                    ctx.error(
                        span.table.clone(),
                        format!("duplicate step `{}` in pattern `{process}`", step.name),
                    )
                    .hint("step names must be unique within a pattern");
                }
                steps.push(step);
                spans.push(span);
            }
            None => complete = false,
        }
        step_table.finish(ctx);
    }
    let spec = PatternSpec {
        name: output,
        kind: RecordKind::Pattern,
        key: key.map(Spanned::into_inner),
        within: within.unwrap_or(1),
        skip,
        timeout,
        steps,
    };
    if complete && !spec.steps.is_empty() {
        report(ctx, &spec, &spans, table.span());
    }
    Some(TemplateSpec::Pattern(PatternTemplateSpec {
        template: "pattern".into(),
        patterns: vec![spec],
    }))
}

fn read_step(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    earlier: &[PatternStepSpec],
    key: Option<&Spanned<FieldPath>>,
) -> Option<(PatternStepSpec, StepSpans)> {
    let name = table.required_str(ctx, "name");
    let on = table.required_str(ctx, "on");
    if let Some(on) = &on {
        ctx.refer(Target::EventType, on, "on");
        if let Some(key) = key {
            refer_field(ctx, on.get_ref(), key, "key", false);
        }
    }
    let condition = table.optional_str(ctx, "where");
    let contiguity = match choice(table, ctx, "contiguity", "contiguity", CONTIGUITY).as_deref() {
        Some("next") => Contiguity::Next,
        _ => Contiguity::FollowedBy,
    };
    let occurs_value = choice(table, ctx, "occurs", "quantifier", OCCURS);
    let times_from = table.optional_str(ctx, "times_from");
    // `times` has no span here: 0 when absent (or invalid, which is reported).
    let times = table.integer_or(ctx, "times", 0, 1..=1_000_000);
    let mut given: Vec<Span> = [
        occurs_value.as_ref().map(|o| o.1.clone()),
        times_from.as_ref().map(Spanned::span),
    ]
    .into_iter()
    .flatten()
    .collect();
    if times > 0 {
        given.push(table.span());
    }
    if given.len() > 1 {
        ctx.error(
            given[0].clone(),
            "a step takes one of `occurs`, `times` and `times_from`",
        )
        .hint("`times = 3` takes exactly three events; `times_from = \"order.parcels\"` as many as that field says");
    }
    let occurs = if times > 0 {
        Occurs::Times(times as u32)
    } else if let Some(from) = &times_from {
        let (step, field) = match from.get_ref().split_once('.') {
            Some((step, field)) if !step.is_empty() && !field.is_empty() => {
                (step.to_owned(), FieldPath::parse(field))
            }
            _ => {
                ctx.error(
                    from.span(),
                    format!("`{}` is not `<step>.<field>`", from.get_ref()),
                )
                .hint("write `times_from = \"<earlier step>.<integer field>\"`, e.g. `\"order.parcels\"`");
                return None;
            }
        };
        match earlier.iter().find(|s| s.name == step) {
            Some(s) => {
                let field_name = Spanned::new(from.span(), field.to_string());
                ctx.refer(
                    Target::Field {
                        event_type: s.on.clone(),
                        integer: true,
                    },
                    &field_name,
                    "times_from",
                );
            }
            None => {
                let names: Vec<&str> = earlier.iter().map(|s| s.name.as_str()).collect();
                let hint = suggest::hint(&step, &names, "name a step before this one");
                ctx.absence(
                    from.span(),
                    format!("`times_from` names `{step}`, which is not an earlier step"),
                )
                .hint(hint);
                return None;
            }
        }
        Occurs::TimesFrom { step, field }
    } else {
        match occurs_value.as_ref().map(|o| o.0.as_str()) {
            Some("optional") => Occurs::Optional,
            Some("one_or_more") => Occurs::OneOrMore,
            Some("never") => Occurs::Never,
            _ => Occurs::Once,
        }
    };
    let name = name?;
    ctx.check_name(&name, "step");
    let spans = StepSpans {
        table: table.span(),
        occurs: given.first().cloned(),
        condition: condition.clone(),
    };
    Some((
        PatternStepSpec {
            name: name.into_inner(),
            on: on?.into_inner(),
            condition: condition.map(Spanned::into_inner),
            contiguity,
            occurs,
        },
        spans,
    ))
}

/// Reports what the pattern compiler finds: structure, CEL syntax, unknown variables.
fn report(ctx: &mut Ctx<'_>, spec: &PatternSpec, spans: &[StepSpans], table: Span) {
    for error in pattern::check(spec) {
        let span = match error.step.and_then(|i| spans.get(i)) {
            None => table.clone(),
            Some(step) => match error.field {
                "where" => match &step.condition {
                    Some(text) => expression_span(text, error.offset),
                    None => step.table.clone(),
                },
                _ => step.occurs.clone().unwrap_or_else(|| step.table.clone()),
            },
        };
        ctx.error(span, error.message).hint(error.hint);
    }
}

/// The place of an expression error: the character at `offset` when the TOML string is a
/// plain one-line string (its text is the expression itself), else the whole string.
pub(crate) fn expression_span(text: &Spanned<String>, offset: Option<usize>) -> Span {
    let span = text.span();
    match offset {
        Some(offset) if span.len() == text.get_ref().len() + 2 => {
            let at = span.start + 1 + offset.min(text.get_ref().len());
            at..(at + 1).min(span.end - 1).max(at)
        }
        _ => span,
    }
}

fn refer_field(
    ctx: &mut Ctx<'_>,
    event_type: &str,
    field: &Spanned<FieldPath>,
    role: &'static str,
    integer: bool,
) {
    let name = Spanned::new(field.span(), field.get_ref().to_string());
    ctx.refer(
        Target::Field {
            event_type: event_type.to_owned(),
            integer,
        },
        &name,
        role,
    );
}

/// An optional string that must be one of `choices`, with its span.
fn choice(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    key: &'static str,
    what: &str,
    choices: &[&str],
) -> Option<(String, Span)> {
    let value = table.optional_str(ctx, key)?;
    if choices.contains(&value.get_ref().as_str()) {
        let span = value.span();
        return Some((value.into_inner(), span));
    }
    let hint = suggest::hint(
        value.get_ref(),
        choices,
        format!("expected one of {}", suggest::list(choices)),
    );
    ctx.error(
        value.span(),
        format!("unknown {what} `{}`", value.get_ref()),
    )
    .hint(hint);
    None
}

trait ChoiceStr {
    fn as_deref(&self) -> Option<&str>;
}

impl ChoiceStr for Option<(String, Span)> {
    fn as_deref(&self) -> Option<&str> {
        self.as_ref().map(|(s, _)| s.as_str())
    }
}

/// A string field naming an event type, with a default; recorded for the semantic pass.
fn event_type(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    key: &'static str,
    default: &str,
) -> String {
    match table.optional_str(ctx, key) {
        Some(value) => {
            ctx.refer(Target::EventType, &value, key);
            value.into_inner()
        }
        None => {
            let implied = Spanned::new(table.span(), default.to_owned());
            ctx.refer(Target::EventType, &implied, key);
            default.to_owned()
        }
    }
}

/// A field path with a default, which every event type in `on` must declare.
fn field(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    key: &'static str,
    default: &FieldPath,
    on: &[&str],
) -> FieldPath {
    let value = table
        .optional_path(ctx, key)
        .unwrap_or_else(|| Spanned::new(table.span(), default.clone()));
    for event_type in on {
        refer_field(ctx, event_type, &value, key, false);
    }
    value.into_inner()
}

/// Reads `[processes.NAME]` for `template = "fraud"`: the rules `failed_payments` and
/// `shared_address`, each a sub-table with its thresholds.
pub(crate) fn read_fraud(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let mut patterns = Vec::new();
    let mut rule = table.table(ctx, "failed_payments");
    if rule.is_present() {
        let d = FailedPayments::default();
        let failed = event_type(&mut rule, ctx, "failed", &d.failed);
        let authorized = event_type(&mut rule, ctx, "authorized", &d.authorized);
        let on = [failed.as_str(), authorized.as_str()];
        let rules = FailedPayments {
            name: rule.str_or(ctx, "name", &d.name),
            customer: field(&mut rule, ctx, "customer", &d.customer, &on),
            method: field(&mut rule, ctx, "method", &d.method, &on),
            min_failures: rule.integer_or(ctx, "min_failures", 3, 1..=1000) as u32,
            window: rule
                .optional_positive_duration(ctx, "window")
                .unwrap_or(d.window),
            failed,
            authorized,
        };
        patterns.push(rules.pattern());
    }
    rule.finish(ctx);
    let mut rule = table.table(ctx, "shared_address");
    if rule.is_present() {
        let d = SharedAddress::default();
        let orders = event_type(&mut rule, ctx, "orders", &d.orders);
        let on = [orders.as_str()];
        let rules = SharedAddress {
            name: rule.str_or(ctx, "name", &d.name),
            address: field(&mut rule, ctx, "address", &d.address, &on),
            customer: field(&mut rule, ctx, "customer", &d.customer, &on),
            max_customers: rule.integer_or(ctx, "max_customers", 3, 2..=100) as u32,
            window: rule
                .optional_positive_duration(ctx, "window")
                .unwrap_or(d.window),
            orders,
        };
        patterns.push(rules.pattern());
    }
    rule.finish(ctx);
    rules_or_error(
        name,
        table,
        ctx,
        "fraud",
        &["failed_payments", "shared_address"],
        patterns,
    )
}

/// Reads `[processes.NAME]` for `template = "customer_contact"`: the triggers
/// `cart_abandoned` and `delivery_late`.
pub(crate) fn read_contact(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let mut patterns = Vec::new();
    let mut rule = table.table(ctx, "cart_abandoned");
    if rule.is_present() {
        let d = CartAbandoned::default();
        let added = event_type(&mut rule, ctx, "added", &d.added);
        let ordered = event_type(&mut rule, ctx, "ordered", &d.ordered);
        let on = [added.as_str(), ordered.as_str()];
        let trigger = CartAbandoned {
            name: rule.str_or(ctx, "name", &d.name),
            customer: field(&mut rule, ctx, "customer", &d.customer, &on),
            after: rule
                .optional_positive_duration(ctx, "after")
                .unwrap_or(d.after),
            added,
            ordered,
        };
        patterns.push(trigger.pattern());
    }
    rule.finish(ctx);
    let mut rule = table.table(ctx, "delivery_late");
    if rule.is_present() {
        let d = DeliveryLate::default();
        let shipped = event_type(&mut rule, ctx, "shipped", &d.shipped);
        let delivered = event_type(&mut rule, ctx, "delivered", &d.delivered);
        let key = rule.optional_path(ctx, "key");
        let parcel = rule.optional_path(ctx, "parcel");
        for event_type in [&shipped, &delivered] {
            for path in [&key, &parcel].into_iter().flatten() {
                let role = if Some(path) == key.as_ref() {
                    "key"
                } else {
                    "parcel"
                };
                refer_field(ctx, event_type, path, role, false);
            }
        }
        let trigger = DeliveryLate {
            name: rule.str_or(ctx, "name", &d.name),
            within: rule
                .optional_positive_duration(ctx, "within")
                .unwrap_or(d.within),
            key: key.map(Spanned::into_inner),
            parcel: parcel.map(Spanned::into_inner),
            shipped,
            delivered,
        };
        patterns.push(trigger.pattern());
    }
    rule.finish(ctx);
    rules_or_error(
        name,
        table,
        ctx,
        "customer_contact",
        &["cart_abandoned", "delivery_late"],
        patterns,
    )
}

fn rules_or_error(
    name: &Spanned<String>,
    table: &Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    template: &str,
    rules: &[&str],
    patterns: Vec<PatternSpec>,
) -> Option<TemplateSpec> {
    if patterns.is_empty() {
        let process = name.get_ref();
        ctx.absence(
            table.span(),
            format!("process `{process}` (template `{template}`) has no rule"),
        )
        .hint(format!(
            "add at least one of {}, e.g. `[processes.{process}.{}]`",
            suggest::list(rules),
            rules[0]
        ));
    }
    Some(TemplateSpec::Pattern(PatternTemplateSpec {
        template: template.into(),
        patterns,
    }))
}
