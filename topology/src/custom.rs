//! Custom templates: a process whose `template` names a template the application registered in
//! its [`Registry`]. The process table (without `template`) becomes JSON, with `${VAR}`
//! substituted in every string; the registry's factory reads and checks it, and each
//! [`ConfigError`] it reports is located at its field (or key) in the file. The event types the
//! template subscribes to must be declared, like those of any other process.

use serde_json::{Map, Number, Value as Json};
use toml::de::{DeTable, DeValue};
use toml::Spanned;
use vigil_actors::registry::{ConfigError, Registry};
use vigil_actors::spec::TemplateSpec;

use crate::check::Target;
use crate::diagnostics::Span;
use crate::reader::{in_file_order, Ctx, Table, Value};

/// Reads `[processes.NAME]` for a custom `template`.
pub(crate) fn read(
    template: &Spanned<String>,
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    registry: &Registry,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec> {
    table.ignore_unknown(); // the factory reports unknown fields
    let entries = table.entries()?;
    let mut strings = Vec::new();
    let errors_before = ctx.problems.len();
    let mut config = Map::new();
    for (key, value) in in_file_order(entries) {
        if key.get_ref() == "template" {
            continue;
        }
        let json = to_json(value, key.get_ref(), ctx, &mut strings);
        config.insert(key.get_ref().to_string(), json);
    }
    if ctx.problems.len() > errors_before {
        return None; // a value could not be read: the factory would only see placeholders
    }
    let config = Json::Object(config);
    match registry.configure(template.get_ref(), name.get_ref(), &config) {
        Ok(built) => {
            for subscription in built.subscriptions() {
                let span = strings
                    .iter()
                    .find(|(text, _)| *text == subscription.event_type)
                    .map_or_else(|| template.span(), |(_, span)| span.clone());
                let event_type = Spanned::new(span, subscription.event_type);
                ctx.refer(Target::EventType, &event_type, "subscriptions");
            }
        }
        Err(errors) => {
            for error in errors {
                report(ctx, table, entries, error);
            }
        }
    }
    Some(TemplateSpec::Custom {
        template: template.get_ref().clone(),
        config,
    })
}

/// Reports a factory's error at its path in the process table.
fn report(ctx: &mut Ctx<'_>, table: &Table<'_, '_>, entries: &DeTable<'_>, error: ConfigError) {
    let span = locate(entries, &error.path, error.at_key).unwrap_or_else(|| table.span());
    let problem = if error.message.starts_with("missing field") {
        ctx.absence(span, error.message)
    } else {
        ctx.error(span, error.message)
    };
    if let Some(hint) = error.hint {
        problem.hint(hint);
    }
}

/// The span of `path` (`a`, `a.b`, `a[1].b`) in `table`: of its key, or of its value.
fn locate(table: &DeTable<'_>, path: &str, at_key: bool) -> Option<Span> {
    if path.is_empty() {
        return None;
    }
    let mut current: Option<&Value<'_>> = None;
    let mut key_span = None;
    for segment in path.split('.') {
        let (field, indices) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        let map = match current.map(Spanned::get_ref) {
            None => table,
            Some(DeValue::Table(t)) => t,
            Some(_) => return None,
        };
        let (key, value) = map.get_key_value(field)?;
        key_span = Some(key.span());
        current = Some(value);
        for index in indices.split('[').filter(|s| !s.is_empty()) {
            let index: usize = index.trim_end_matches(']').parse().ok()?;
            match current.map(Spanned::get_ref) {
                Some(DeValue::Array(items)) => current = Some(items.get(index)?),
                _ => return None,
            }
            key_span = None;
        }
    }
    match (at_key, key_span) {
        (true, Some(span)) => Some(span),
        _ => current.map(Spanned::span),
    }
}

/// A TOML value as JSON, strings substituted; errors go to `ctx` (and yield `null`). Every
/// string is remembered with its span, to locate the event types the template subscribes to.
fn to_json(
    value: &Value<'_>,
    what: &str,
    ctx: &mut Ctx<'_>,
    strings: &mut Vec<(String, Span)>,
) -> Json {
    match value.get_ref() {
        DeValue::String(_) => match ctx.string(value, what) {
            Some(text) => {
                strings.push((text.get_ref().clone(), value.span()));
                Json::String(text.into_inner())
            }
            None => Json::Null,
        },
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Json::from(n),
            Err(_) => {
                ctx.error(value.span(), format!("`{what}` is out of range"));
                Json::Null
            }
        },
        DeValue::Float(f) => match f.as_str().parse::<f64>().ok().and_then(Number::from_f64) {
            Some(n) => Json::Number(n),
            None => {
                ctx.error(value.span(), format!("`{what}` must be a finite number"));
                Json::Null
            }
        },
        DeValue::Boolean(b) => Json::Bool(*b),
        DeValue::Datetime(d) => Json::String(d.to_string()),
        DeValue::Array(items) => Json::Array(
            items
                .iter()
                .map(|item| to_json(item, what, ctx, strings))
                .collect(),
        ),
        DeValue::Table(t) => Json::Object(
            in_file_order(t)
                .into_iter()
                .map(|(k, v)| {
                    (
                        k.get_ref().to_string(),
                        to_json(v, k.get_ref(), ctx, strings),
                    )
                })
                .collect(),
        ),
    }
}
