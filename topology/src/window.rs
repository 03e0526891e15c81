//! The `window` template's configuration: event types, groups, size, slide, lateness, emit
//! mode and aggregates.

use toml::de::DeValue;
use toml::Spanned;
use vigil_actors::spec::{
    AggregateFn, AggregateSpec, FieldPath, GroupBy, TemplateSpec, WindowEmit, WindowTemplateSpec,
};
use vigil_actors::time::{format_duration, Millis};

use crate::check::Target;
use crate::reader::{a, in_file_order, Ctx, Table, DURATION_HINT};
use crate::suggest;

/// At most this many panes per window (`size / gcd(size, slide)`): a week by the minute.
pub(crate) const MAX_PANES: i64 = 10_080;
const EMIT_MODES: &[&str] = &["on_close", "on_update"];
/// Detail fields every result carries; aggregates may not take these names.
const RESERVED: &[&str] = &[
    "id",
    "kind",
    "name",
    "key",
    "event_time",
    "window_start",
    "window_end",
    "count",
    "firing",
    "process",
];

/// Reads `[processes.NAME]` for `template = "window"`.
pub(crate) fn read(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let process = name.get_ref().as_str();
    let output = table.output_name(ctx, process);
    let events = table
        .required_strings(
            ctx,
            "events",
            "name the event types the window counts, e.g. `events = [\"ORDER_CREATED\"]`",
        )
        .unwrap_or_default();
    for event_type in &events {
        ctx.refer(Target::EventType, event_type, "events");
    }
    let group_by = read_group_by(table, ctx, &events);
    let size = table.required_positive_duration(ctx, "size");
    let slide = table.optional_duration(ctx, "slide");
    let slide = match (size, slide) {
        (_, Some(slide)) if *slide.get_ref() <= 0 => {
            ctx.error(slide.span(), "`slide` must be greater than zero")
                .hint(DURATION_HINT);
            None
        }
        (Some(size), Some(slide)) if *slide.get_ref() > size => {
            ctx.error(
                slide.span(),
                format!(
                    "`slide` ({}) is longer than `size` ({})",
                    format_duration(*slide.get_ref()),
                    format_duration(size)
                ),
            )
            .hint("windows would leave gaps; use a slide at most the size, or leave `slide` out for tumbling windows");
            None
        }
        (Some(size), Some(slide)) => {
            let panes = size / gcd(size, *slide.get_ref());
            if panes > MAX_PANES {
                ctx.error(
                    slide.span(),
                    format!(
                        "a window of {} sliding by {} has {panes} panes, more than {MAX_PANES}",
                        format_duration(size),
                        format_duration(*slide.get_ref())
                    ),
                )
                .hint("choose a slide that divides the size into fewer panes, e.g. a longer slide");
                None
            } else {
                Some(*slide.get_ref())
            }
        }
        (size, None) => size,
        (None, Some(slide)) => Some(*slide.get_ref()),
    };
    let allowed_lateness = table.duration_or(ctx, "allowed_lateness", "0s");
    let emit = match table.optional_str(ctx, "emit") {
        None => Some(WindowEmit::OnClose),
        Some(mode) => match mode.get_ref().as_str() {
            "on_close" => Some(WindowEmit::OnClose),
            "on_update" => Some(WindowEmit::OnUpdate),
            other => {
                let hint = suggest::hint(other, EMIT_MODES, "");
                ctx.error(mode.span(), format!("unknown emit mode `{other}`"))
                    .hint(hint);
                None
            }
        },
    };
    let aggregates = read_aggregates(table, ctx, &events);
    Some(TemplateSpec::Window(WindowTemplateSpec {
        name: output,
        events: events.into_iter().map(Spanned::into_inner).collect(),
        group_by,
        size: size.unwrap_or(60_000),
        slide: slide.unwrap_or(60_000),
        allowed_lateness,
        emit: emit.unwrap_or(WindowEmit::OnClose),
        aggregates,
    }))
}

fn gcd(a: Millis, b: Millis) -> Millis {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `group_by = ["country", "type"]`: payload fields every event type declares, or `type`.
fn read_group_by(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    events: &[Spanned<String>],
) -> Vec<GroupBy> {
    let mut group_by = Vec::new();
    for dimension in table.optional_strings(ctx, "group_by").unwrap_or_default() {
        let group = if dimension.get_ref() == "type" {
            GroupBy::EventType
        } else {
            let path = FieldPath::parse(dimension.get_ref());
            if path.0.iter().any(String::is_empty) {
                ctx.error(
                    dimension.span(),
                    format!("`{}` is not a field path", dimension.get_ref()),
                )
                .hint("write a JSON field name, a dotted path like `customer.address.zip`, or `type` for the event type");
                continue;
            }
            for event_type in events {
                let target = Target::Field {
                    event_type: event_type.get_ref().clone(),
                    integer: false,
                };
                ctx.refer(target, &dimension, "group_by");
            }
            GroupBy::Field(path)
        };
        if group_by.contains(&group) {
            ctx.error(
                dimension.span(),
                format!("`{}` appears twice in `group_by`", dimension.get_ref()),
            )
            .hint("list each dimension once");
            continue;
        }
        group_by.push(group);
    }
    group_by
}

/// `[processes.NAME.aggregates]`: `orders = "count"`, `revenue = { sum = "amount" }`, ...
fn read_aggregates(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    events: &[Spanned<String>],
) -> Vec<AggregateSpec> {
    let Some(raw) = table.raw_table(ctx, "aggregates") else {
        return Vec::new();
    };
    let mut aggregates = Vec::new();
    for (key, value) in in_file_order(raw) {
        let name = Spanned::new(key.span(), key.get_ref().to_string());
        let name_ok = ctx.check_name(&name, "aggregate");
        if name_ok && RESERVED.contains(&name.get_ref().as_str()) {
            ctx.error(
                name.span(),
                format!(
                    "`{}` is a field of every window result and cannot name an aggregate",
                    name.get_ref()
                ),
            )
            .hint(format!(
                "choose another name; reserved: {}",
                suggest::list(RESERVED)
            ));
        }
        let (function, field) = match value.get_ref() {
            DeValue::String(_) => {
                let Some(function) = ctx.string(value, name.get_ref()) else {
                    continue;
                };
                (function, None)
            }
            DeValue::Table(inner) => {
                let entries = in_file_order(inner);
                let [(function, field)] = entries.as_slice() else {
                    ctx.error(
                        value.span(),
                        format!(
                            "aggregate `{}` must name one function and its field",
                            name.get_ref()
                        ),
                    )
                    .hint(format!(
                        "write e.g. `{} = {{ sum = \"amount\" }}`",
                        name.get_ref()
                    ));
                    continue;
                };
                let function = Spanned::new(function.span(), function.get_ref().to_string());
                let Some(field) = ctx.path(field, function.get_ref()) else {
                    continue;
                };
                (function, Some(field))
            }
            other => {
                ctx.error(
                    value.span(),
                    format!(
                        "expected an aggregate for `{}`, found {}",
                        name.get_ref(),
                        a(other.type_str())
                    ),
                )
                .hint(format!(
                    "write `{} = \"count\"` or `{} = {{ sum = \"amount\" }}`",
                    name.get_ref(),
                    name.get_ref()
                ));
                continue;
            }
        };
        let Some(parsed) = AggregateFn::parse(function.get_ref()) else {
            let hint = suggest::hint(function.get_ref(), AggregateFn::NAMES, "");
            ctx.error(
                function.span(),
                format!("unknown aggregate function `{}`", function.get_ref()),
            )
            .hint(hint);
            continue;
        };
        match (parsed, &field) {
            (AggregateFn::Count, Some(field)) => {
                ctx.error(field.span(), "`count` counts events and takes no field")
                    .hint(format!("write `{} = \"count\"`", name.get_ref()));
                continue;
            }
            (AggregateFn::Count, None) => {}
            (_, None) => {
                ctx.error(
                    function.span(),
                    format!("`{}` needs a field", function.get_ref()),
                )
                .hint(format!(
                    "write `{} = {{ {} = \"<field>\" }}`",
                    name.get_ref(),
                    function.get_ref()
                ));
                continue;
            }
            (function, Some(field)) => {
                let text = Spanned::new(field.span(), field.get_ref().to_string());
                for event_type in events {
                    let target = if function == AggregateFn::DistinctCount {
                        Target::Field {
                            event_type: event_type.get_ref().clone(),
                            integer: false,
                        }
                    } else {
                        Target::NumberField {
                            event_type: event_type.get_ref().clone(),
                        }
                    };
                    ctx.refer(target, &text, "aggregates");
                }
            }
        }
        aggregates.push(AggregateSpec {
            name: name.into_inner(),
            function: parsed,
            field: field.map(Spanned::into_inner),
        });
    }
    aggregates
}
