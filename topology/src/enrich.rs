//! Enrichment: `[reference.NAME]` tables (loaded here once to check them) and the
//! `[events.TYPE.derive]` rules (CEL, compiled to report syntax errors and unknown names).
//! The runtime side is `vigil_actors::enrich`.

use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use vigil_actors::enrich::load_table;
use vigil_actors::expr::Expr;
use vigil_actors::spec::{DerivedField, ReferenceSpec};

use crate::pattern::expression_span;
use crate::reader::{a, in_file_order, Ctx, Table};
use crate::suggest;

/// The variable a derive rule sees the event as.
const EVENT: &str = "event";

/// Reads `[reference.NAME]` sections and checks that each file loads (every problem of a file is
/// reported at its `path`, with the file's line).
pub(crate) fn reference(root: &mut Table<'_, '_>, ctx: &mut Ctx<'_>) -> Vec<ReferenceSpec> {
    let (_, tables) = root.named_tables(ctx, "reference");
    let mut references = Vec::new();
    for (name, mut table) in tables {
        ctx.check_name(&name, "reference table");
        if name.get_ref() == EVENT {
            ctx.error(name.span(), "a reference table cannot be named `event`")
                .hint("`event` is the event in derive rules; choose another name");
        }
        let path = table.required_str(ctx, "path");
        let key = table.required_str(ctx, "key");
        table.finish(ctx);
        let (Some(path), Some(key)) = (path, key) else {
            continue;
        };
        if let Err(errors) = load_table(std::path::Path::new(path.get_ref()), key.get_ref()) {
            for error in errors {
                ctx.error(
                    path.span(),
                    format!("reference `{}`: {error}", name.get_ref()),
                )
                .hint(match error.line {
                    Some(_) => "fix the file at that line",
                    None => "a reference file is a `.csv` file with a header row, or a `.json` array of objects",
                });
            }
        }
        references.push(ReferenceSpec {
            name: name.into_inner(),
            path: PathBuf::from(path.into_inner()),
            key: key.into_inner(),
        });
    }
    references
}

/// Reads `derive = { field = "<CEL>", ... }` in file order. Expressions may use `event` and
/// the reference tables.
pub(crate) fn derive(
    ctx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    references: &[ReferenceSpec],
) -> Vec<DerivedField> {
    let mut names: Vec<&str> = references.iter().map(|r| r.name.as_str()).collect();
    names.push(EVENT);
    let mut derived = Vec::new();
    for (key, value) in in_file_order(table) {
        let name: &str = key.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            ctx.error(key.span(), format!("invalid derived field name `{name}`"))
                .hint("a derived field is a top-level field of the event: letters, digits, `_` and `-`");
            continue;
        }
        if !matches!(value.get_ref(), DeValue::String(_)) {
            ctx.error(
                value.span(),
                format!(
                    "expected a CEL expression (a string) for derived field `{name}`, found {}",
                    a(value.get_ref().type_str())
                ),
            )
            .hint(format!("write `{name} = \"event.amount * 1.19\"`"));
            continue;
        }
        let Some(text) = ctx.string(value, name) else {
            continue;
        };
        let expr = match Expr::compile(text.get_ref()) {
            Ok(expr) => expr,
            Err(error) => {
                ctx.error(
                    expression_span(&text, error.offset),
                    format!("derived field `{name}`: {}", error.message),
                )
                .hint("derive rules are CEL expressions, see docs/expressions.md");
                continue;
            }
        };
        let mut known = true;
        for variable in expr.variables() {
            if names.contains(&variable.as_str()) {
                continue;
            }
            known = false;
            let hint = match suggest::closest(variable, names.iter().copied()) {
                Some(best) => format!("did you mean `{best}`?"),
                None => format!(
                    "a derive rule sees {}; declare a table as `[reference.{variable}]`",
                    suggest::list(&names)
                ),
            };
            ctx.absence(
                text.span(),
                format!("derived field `{name}` uses `{variable}`, which is neither `event` nor a reference table"),
            )
            .hint(hint);
        }
        if known {
            derived.push(DerivedField {
                name: name.to_owned(),
                expression: text.into_inner(),
            });
        }
    }
    derived
}
