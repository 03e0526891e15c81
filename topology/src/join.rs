//! The `join` template's configuration: `left`, `right`, `within`, `type`, an optional `key`
//! field, the record names (`name`, `timeout`) and each side's projected fields.

use toml::Spanned;
use vigil_actors::spec::{FieldPath, JoinKind, JoinTemplateSpec, TemplateSpec};

use crate::check::Target;
use crate::reader::{Ctx, Table};
use crate::suggest;
use crate::union::read_fields;

const TYPES: &[&str] = &["inner", "left", "outer"];

/// Reads `[processes.NAME]` for `template = "join"`.
pub(crate) fn read(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let output = table.output_name(ctx, name.get_ref());
    let left = table.required_str(ctx, "left");
    let right = table.required_str(ctx, "right");
    for side in [&left, &right].into_iter().flatten() {
        ctx.refer(Target::EventType, side, "join");
    }
    if let (Some(left), Some(right)) = (&left, &right) {
        if left.get_ref() == right.get_ref() {
            ctx.error(
                right.span(),
                format!("`right` is `{}`, like `left`", right.get_ref()),
            )
            .hint("a join correlates two different event types");
        }
    }
    let key = table.optional_path(ctx, "key");
    if let Some(key) = &key {
        let text = Spanned::new(key.span(), key.get_ref().to_string());
        for side in [&left, &right].into_iter().flatten() {
            let target = Target::Field {
                event_type: side.get_ref().clone(),
                integer: false,
            };
            ctx.refer(target, &text, "key");
        }
    }
    let within = table.required_positive_duration(ctx, "within");
    let kind = match table.optional_str(ctx, "type") {
        None => JoinKind::Inner,
        Some(kind) => match kind.get_ref().as_str() {
            "inner" => JoinKind::Inner,
            "left" => JoinKind::Left,
            "outer" => JoinKind::Outer,
            other => {
                let hint = suggest::hint(other, TYPES, "");
                ctx.error(kind.span(), format!("unknown join type `{other}`"))
                    .hint(hint);
                JoinKind::Inner
            }
        },
    };
    let timeout = table.optional_str(ctx, "timeout");
    let timeout = match timeout {
        Some(timeout) if kind == JoinKind::Inner => {
            ctx.error(timeout.span(), "an inner join emits no timeout records")
                .hint("use `type = \"left\"` or `type = \"outer\"`, or remove `timeout`");
            timeout.into_inner()
        }
        Some(timeout) => timeout.into_inner(),
        None => format!("{output}_TIMEOUT"),
    };
    let left_fields = read_fields(table, ctx, "left_fields", &[]);
    let right_fields = read_fields(table, ctx, "right_fields", &[]);
    for (side, fields) in [(&left, &left_fields), (&right, &right_fields)] {
        let Some(side) = side else { continue };
        for field in fields {
            let text = Spanned::new(field.span(), field.get_ref().to_string());
            let target = Target::Field {
                event_type: side.get_ref().clone(),
                integer: false,
            };
            ctx.refer(target, &text, "fields");
        }
    }
    let into =
        |fields: Vec<Spanned<FieldPath>>| fields.into_iter().map(Spanned::into_inner).collect();
    Some(TemplateSpec::Join(JoinTemplateSpec {
        name: output,
        timeout,
        left: left.map(Spanned::into_inner).unwrap_or_default(),
        right: right.map(Spanned::into_inner).unwrap_or_default(),
        key: key.map(Spanned::into_inner),
        within: within.unwrap_or(1),
        kind,
        left_fields: into(left_fields),
        right_fields: into(right_fields),
    }))
}
