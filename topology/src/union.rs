//! The `union` template's configuration: `events`, an optional `key` field, the record `name`
//! and the projected `fields`.

use toml::Spanned;
use vigil_actors::spec::{FieldPath, TemplateSpec, UnionTemplateSpec};

use crate::check::Target;
use crate::reader::{Ctx, Table};
use crate::suggest;

/// Detail names every union record has; a projected field may not take them.
const RESERVED: &[&str] = &["id", "kind", "name", "key", "event_time", "type"];

/// Reads `[processes.NAME]` for `template = "union"`.
pub(crate) fn read(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    let output = table.output_name(ctx, name.get_ref());
    let events = table
        .required_strings(
            ctx,
            "events",
            "name the event types to merge, e.g. `events = [\"ORDER_CREATED\", \"ORDER_CANCELLED\"]`",
        )
        .unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    for event_type in &events {
        if seen.contains(&event_type.get_ref().as_str()) {
            ctx.error(
                event_type.span(),
                format!("`{}` appears twice in `events`", event_type.get_ref()),
            )
            .hint("list each event type once");
            continue;
        }
        seen.push(event_type.get_ref());
        ctx.refer(Target::EventType, event_type, "events");
    }
    let key = table.optional_path(ctx, "key");
    if let Some(key) = &key {
        let text = Spanned::new(key.span(), key.get_ref().to_string());
        for event_type in &events {
            let target = Target::Field {
                event_type: event_type.get_ref().clone(),
                integer: false,
            };
            ctx.refer(target, &text, "key");
        }
    }
    let fields = read_fields(table, ctx, "fields", RESERVED);
    Some(TemplateSpec::Union(UnionTemplateSpec {
        name: output,
        events: events.into_iter().map(Spanned::into_inner).collect(),
        key: key.map(Spanned::into_inner),
        fields: fields.into_iter().map(Spanned::into_inner).collect(),
    }))
}

/// A list of field paths to project (`fields = ["amount", "customer.id"]`): valid paths, each
/// once, none of them `reserved`.
pub(crate) fn read_fields(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    key: &'static str,
    reserved: &[&str],
) -> Vec<Spanned<FieldPath>> {
    let mut fields: Vec<Spanned<FieldPath>> = Vec::new();
    for text in table.optional_strings(ctx, key).unwrap_or_default() {
        let path = FieldPath::parse(text.get_ref());
        if path.0.iter().any(String::is_empty) {
            ctx.error(
                text.span(),
                format!("`{}` is not a field path", text.get_ref()),
            )
            .hint("write a JSON field name, or a dotted path like `customer.address.zip`");
            continue;
        }
        if reserved.contains(&text.get_ref().as_str()) {
            ctx.error(
                text.span(),
                format!(
                    "`{}` is a field of every record and cannot be projected",
                    text.get_ref()
                ),
            )
            .hint(format!("reserved: {}", suggest::list(reserved)));
            continue;
        }
        if fields.iter().any(|f| *f.get_ref() == path) {
            ctx.error(
                text.span(),
                format!("`{}` appears twice in `{key}`", text.get_ref()),
            )
            .hint("list each field once");
            continue;
        }
        fields.push(Spanned::new(text.span(), path));
    }
    fields
}
