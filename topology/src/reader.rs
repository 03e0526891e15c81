//! A small typed reader over the spanned TOML tree that records every error and keeps going.
//!
//! [`Ctx`] holds what the whole compile shares: the source text, the environment for `${VAR}`
//! substitution, the errors found so far and the references the semantic pass will resolve.
//! [`Table`] reads one TOML table: each `required_*`/`optional_*`/`*_or` call converts one
//! field (reporting a missing field or a wrong type at the right place) and remembers that the
//! field is known; [`Table::finish`] then reports every other key as an unknown field.

use std::borrow::Cow;
use std::ops::RangeInclusive;
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;
use vigil_actors::spec::FieldPath;
use vigil_actors::time::{parse_duration, Millis};

use crate::check::{Output, Reference, Target};
use crate::diagnostics::{Class, Problem, Span};
use crate::env;
use crate::suggest;

/// A TOML value with its span.
pub(crate) type Value<'i> = Spanned<DeValue<'i>>;
/// A TOML key with its span.
pub(crate) type Key<'i> = Spanned<Cow<'i, str>>;

/// What the whole compile shares.
pub(crate) struct Ctx<'s> {
    source: &'s str,
    env: &'s dyn Fn(&str) -> Option<String>,
    pub problems: Vec<Problem>,
    /// Names used in the file that the semantic pass must resolve.
    pub references: Vec<Reference>,
    /// Files written by sinks and the dead-letter sink, to check that no two share one.
    pub outputs: Vec<Output>,
}

impl<'s> Ctx<'s> {
    pub fn new(source: &'s str, env: &'s dyn Fn(&str) -> Option<String>) -> Ctx<'s> {
        Ctx {
            source,
            env,
            problems: Vec::new(),
            references: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// Records an error; chain `.hint(...)` to say how to fix it.
    pub fn error(&mut self, span: Span, message: impl Into<String>) -> &mut Problem {
        self.report(Class::Invalid, span, message.into())
    }

    /// Records that something is missing or does not resolve.
    pub fn absence(&mut self, span: Span, message: impl Into<String>) -> &mut Problem {
        self.report(Class::Absence, span, message.into())
    }

    /// Records a TOML syntax error.
    pub fn syntax_error(&mut self, span: Span, message: String) -> &mut Problem {
        self.report(Class::Syntax, span, message)
    }

    fn report(&mut self, class: Class, span: Span, message: String) -> &mut Problem {
        self.problems.push(Problem {
            span,
            message,
            hint: None,
            class,
        });
        self.problems.last_mut().expect("just pushed")
    }

    /// Records a name that must resolve to a declaration (checked by the semantic pass).
    pub fn refer(&mut self, target: Target, name: &Spanned<String>, role: &'static str) {
        self.references.push(Reference {
            target,
            name: name.get_ref().clone(),
            span: name.span(),
            role,
        });
    }

    /// Checks that a process, step, SLA, sink, source or job name is `[A-Za-z0-9_-]+`.
    pub fn check_name(&mut self, name: &Spanned<String>, what: &str) -> bool {
        let valid = !name.get_ref().is_empty()
            && name
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            self.error(
                name.span(),
                format!("invalid {what} name `{}`", name.get_ref()),
            )
            .hint("names may contain only ASCII letters, digits, `_` and `-`");
        }
        valid
    }

    /// A string value after `${VAR}` substitution; empty strings are an error.
    pub fn string(&mut self, value: &Value<'_>, what: &str) -> Option<Spanned<String>> {
        let DeValue::String(text) = value.get_ref() else {
            self.wrong_type(value, what, "a string");
            return None;
        };
        let text = self.substitute(text, value.span())?;
        if text.is_empty() {
            self.error(value.span(), format!("`{what}` must not be empty"));
            return None;
        }
        Some(Spanned::new(value.span(), text))
    }

    /// An integer in `range`: a TOML integer, or a string that is one after substitution
    /// (so that `shards = "${SHARDS:-8}"` works).
    pub fn integer(
        &mut self,
        value: &Value<'_>,
        what: &str,
        range: RangeInclusive<i64>,
    ) -> Option<i64> {
        let number = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            DeValue::String(text) => {
                let text = self.substitute(text, value.span())?;
                match text.trim().parse::<i64>() {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.error(
                            value.span(),
                            format!("expected an integer for `{what}`, found `\"{text}\"`"),
                        )
                        .hint(format!("write a whole number, e.g. `{what} = 8`"));
                        return None;
                    }
                }
            }
            _ => {
                self.wrong_type(value, what, "an integer");
                return None;
            }
        };
        match number {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                let bounds = if *range.end() == i64::MAX {
                    format!("at least {}", range.start())
                } else {
                    format!("between {} and {}", range.start(), range.end())
                };
                self.error(value.span(), format!("`{what}` must be {bounds}"));
                None
            }
        }
    }

    /// A duration string such as `90s` or `1h30m`, in milliseconds.
    pub fn duration(&mut self, value: &Value<'_>, what: &str) -> Option<Spanned<Millis>> {
        if let DeValue::Integer(i) = value.get_ref() {
            self.error(
                value.span(),
                format!("expected a duration string for `{what}`, found an integer"),
            )
            .hint(format!(
                "durations carry a unit: write `\"{}s\"` or `\"{}ms\"`",
                i.as_str(),
                i.as_str()
            ));
            return None;
        }
        let text = self.string(value, what)?;
        match parse_duration(text.get_ref()) {
            Ok(millis) => Some(Spanned::new(value.span(), millis)),
            Err(reason) => {
                self.error(
                    value.span(),
                    format!("invalid duration for `{what}`: {reason}"),
                )
                .hint(DURATION_HINT);
                None
            }
        }
    }

    /// A dotted field path such as `customer.address.zip`.
    pub fn path(&mut self, value: &Value<'_>, what: &str) -> Option<Spanned<FieldPath>> {
        let text = self.string(value, what)?;
        let path = FieldPath::parse(text.get_ref());
        if path.0.iter().any(|segment| segment.is_empty()) {
            self.error(
                value.span(),
                format!("`{}` is not a field path", text.get_ref()),
            )
            .hint("write a JSON field name, or a dotted path like `customer.address.zip`");
            return None;
        }
        Some(Spanned::new(value.span(), path))
    }

    /// An array of strings (each substituted).
    pub fn strings(&mut self, value: &Value<'_>, what: &str) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            let wrapped = match value.get_ref() {
                DeValue::String(s) => format!("write `{what} = [\"{s}\"]`"),
                _ => format!("write `{what} = [\"...\", \"...\"]`"),
            };
            self.wrong_type(value, what, "an array of strings")
                .hint(wrapped);
            return None;
        };
        Some(
            items
                .iter()
                .filter_map(|item| self.string(item, what))
                .collect(),
        )
    }

    pub fn wrong_type(&mut self, value: &Value<'_>, what: &str, expected: &str) -> &mut Problem {
        let found = a(value.get_ref().type_str());
        self.error(
            value.span(),
            format!("expected {expected} for `{what}`, found {found}"),
        )
    }

    /// `${VAR}` substitution; errors point at the `${...}` inside the string when the string
    /// is written without escapes, else at the whole value.
    fn substitute(&mut self, text: &str, span: Span) -> Option<String> {
        match env::substitute(text, self.env) {
            Ok(text) => Some(text),
            Err(unresolved) => {
                for u in unresolved {
                    let at = self.inner_span(&span, text, u.range);
                    self.error(at, u.message).hint(u.hint);
                }
                None
            }
        }
    }

    /// Maps a byte range of a decoded string back to the source, if the string's source text
    /// (between its quotes) is the decoded text itself.
    fn inner_span(&self, value: &Span, decoded: &str, range: Span) -> Span {
        let Some(raw) = self.source.get(value.clone()) else {
            return value.clone();
        };
        for quote in ["\"\"\"", "'''", "\"", "'"] {
            if raw.len() >= 2 * quote.len() && raw.starts_with(quote) && raw.ends_with(quote) {
                let inner = &raw[quote.len()..raw.len() - quote.len()];
                let newline = ["\r\n", "\n"]
                    .into_iter()
                    .find(|nl| quote.len() == 3 && inner.starts_with(nl))
                    .map_or(0, str::len);
                if &inner[newline..] == decoded {
                    let base = value.start + quote.len() + newline;
                    return base + range.start..base + range.end;
                }
                break;
            }
        }
        value.clone()
    }
}

pub(crate) const DURATION_HINT: &str =
    "write a duration such as `500ms`, `90s`, `5m`, `24h`, `14d` or `1h30m`";

/// "an integer", "a string"
pub(crate) fn a(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// The entries of a TOML table in file order.
pub(crate) fn in_file_order<'a, 'i>(table: &'a DeTable<'i>) -> Vec<(&'a Key<'i>, &'a Value<'i>)> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    entries
}

/// Reads one TOML table. Every key the reader asks for is a known field; `finish` reports the
/// others.
pub(crate) struct Table<'a, 'i> {
    /// `None` for a table that is absent from the file: every field takes its default and
    /// nothing is reported as missing (the absence itself was reported, if it matters).
    entries: Option<&'a DeTable<'i>>,
    span: Span,
    /// Dotted path from the root, for messages: `sources.shop`.
    path: String,
    array_item: bool,
    known: Vec<&'static str>,
    ignore_unknown: bool,
}

impl<'a, 'i> Table<'a, 'i> {
    pub fn root(table: &'a Spanned<DeTable<'i>>) -> Table<'a, 'i> {
        Table {
            entries: Some(table.get_ref()),
            span: 0..0,
            path: String::new(),
            array_item: false,
            known: Vec::new(),
            ignore_unknown: false,
        }
    }

    fn child(&self, key: &str, span: Span, entries: Option<&'a DeTable<'i>>) -> Table<'a, 'i> {
        let key = if is_bare_key(key) {
            key.to_owned()
        } else {
            format!("{key:?}")
        };
        Table {
            entries,
            span,
            path: if self.path.is_empty() {
                key
            } else {
                format!("{}.{key}", self.path)
            },
            array_item: false,
            known: Vec::new(),
            ignore_unknown: false,
        }
    }

    /// Where the table is: its `[header]`, its inline `{ ... }` or its first key.
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// `[sources.shop]`, `[[processes.order.steps]]`, or `the top level`.
    pub fn label(&self) -> String {
        match (self.path.is_empty(), self.array_item) {
            (true, _) => "the top level".into(),
            (false, false) => format!("[{}]", self.path),
            (false, true) => format!("[[{}]]", self.path),
        }
    }

    pub fn is_present(&self) -> bool {
        self.entries.is_some()
    }

    /// The table's raw entries (a custom template's free-form configuration).
    pub fn entries(&self) -> Option<&'a DeTable<'i>> {
        self.entries
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value<'i>> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        self.entries?.get(key)
    }

    fn missing<'c>(&self, ctx: &'c mut Ctx<'_>, key: &str) -> Option<&'c mut Problem> {
        self.entries?;
        Some(ctx.absence(
            self.span(),
            format!("missing field `{key}` in {}", self.label()),
        ))
    }

    pub fn optional_str(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Spanned<String>> {
        let value = self.get(key)?;
        ctx.string(value, key)
    }

    /// The `name` a template gives its records: as written, or the process name in upper case
    /// with `-` as `_`.
    pub fn output_name(&mut self, ctx: &mut Ctx<'_>, process: &str) -> String {
        self.optional_str(ctx, "name").map_or_else(
            || process.to_uppercase().replace('-', "_"),
            Spanned::into_inner,
        )
    }

    pub fn required_str(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Spanned<String>> {
        match self.get(key) {
            Some(value) => ctx.string(value, key),
            None => {
                self.missing(ctx, key);
                None
            }
        }
    }

    /// [`Table::required_str`] with a hint when the field is missing.
    pub fn required_str_hinted(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        hint: &str,
    ) -> Option<Spanned<String>> {
        match self.get(key) {
            Some(value) => ctx.string(value, key),
            None => {
                if let Some(problem) = self.missing(ctx, key) {
                    problem.hint(hint);
                }
                None
            }
        }
    }

    /// An optional string that may become empty through substitution, which means "not set"
    /// (`instance_id = "${POD_NAME:-}"`); written empty (`""`) it is still an error.
    pub fn optional_str_unless_empty(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Spanned<String>> {
        let value = self.get(key)?;
        let DeValue::String(text) = value.get_ref() else {
            ctx.wrong_type(value, key, "a string");
            return None;
        };
        if text.is_empty() {
            ctx.error(value.span(), format!("`{key}` must not be empty"))
                .hint(format!(
                    "remove `{key}` to leave it unset, or write `{key} = \"${{VAR:-}}\"` to take \
                     it from the environment when set"
                ));
            return None;
        }
        let text = ctx.substitute(text, value.span())?;
        (!text.is_empty()).then(|| Spanned::new(value.span(), text))
    }

    pub fn str_or(&mut self, ctx: &mut Ctx<'_>, key: &'static str, default: &str) -> String {
        self.optional_str(ctx, key)
            .map_or_else(|| default.to_owned(), Spanned::into_inner)
    }

    /// A string that must be one of `choices` (a `kind`, a `template`).
    pub fn required_choice(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        what: &str,
        choices: &[&str],
    ) -> Option<Spanned<String>> {
        let Some(value) = self.get(key) else {
            if let Some(problem) = self.missing(ctx, key) {
                problem.hint(format!("expected one of {}", suggest::list(choices)));
            }
            return None;
        };
        choice(ctx, value, key, what, choices)
    }

    pub fn integer_or(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> i64 {
        self.get(key)
            .and_then(|value| ctx.integer(value, key, range))
            .unwrap_or(default)
    }

    /// `true` or `false`; `default` when absent or wrong.
    pub fn bool_or(&mut self, ctx: &mut Ctx<'_>, key: &'static str, default: bool) -> bool {
        let Some(value) = self.get(key) else {
            return default;
        };
        match value.get_ref() {
            DeValue::Boolean(b) => *b,
            _ => {
                ctx.wrong_type(value, key, "`true` or `false`")
                    .hint(format!(
                        "write `{key} = true` or `{key} = false`, without quotes"
                    ));
                default
            }
        }
    }

    pub fn optional_duration(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Spanned<Millis>> {
        let value = self.get(key)?;
        ctx.duration(value, key)
    }

    /// A duration that must be greater than zero.
    pub fn optional_positive_duration(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Millis> {
        let value = self.get(key)?;
        positive_duration(ctx, value, key)
    }

    pub fn required_positive_duration(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Millis> {
        match self.get(key) {
            Some(value) => positive_duration(ctx, value, key),
            None => {
                if let Some(problem) = self.missing(ctx, key) {
                    problem.hint(DURATION_HINT);
                }
                None
            }
        }
    }

    /// A duration in milliseconds, `default` (a duration string) when absent or invalid.
    pub fn duration_or(&mut self, ctx: &mut Ctx<'_>, key: &'static str, default: &str) -> Millis {
        self.optional_duration(ctx, key)
            .map(Spanned::into_inner)
            .unwrap_or_else(|| parse_duration(default).expect("valid default duration"))
    }

    /// A wall-clock duration that must be greater than zero.
    pub fn std_duration_or(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        default: &str,
    ) -> Duration {
        let millis = self
            .optional_positive_duration(ctx, key)
            .unwrap_or_else(|| parse_duration(default).expect("valid default duration"));
        Duration::from_millis(millis.unsigned_abs())
    }

    pub fn required_path(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Spanned<FieldPath>> {
        match self.get(key) {
            Some(value) => ctx.path(value, key),
            None => {
                if let Some(problem) = self.missing(ctx, key) {
                    problem.hint("write a JSON field name or a dotted path");
                }
                None
            }
        }
    }

    pub fn optional_path(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Spanned<FieldPath>> {
        let value = self.get(key)?;
        ctx.path(value, key)
    }

    pub fn optional_strings(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> Option<Vec<Spanned<String>>> {
        let value = self.get(key)?;
        ctx.strings(value, key)
    }

    /// A non-empty array of strings; reports where it is missing or empty.
    pub fn required_strings(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        hint: &str,
    ) -> Option<Vec<Spanned<String>>> {
        let Some(value) = self.get(key) else {
            if let Some(problem) = self.missing(ctx, key) {
                problem.hint(hint);
            }
            return None;
        };
        let items = ctx.strings(value, key)?;
        if items.is_empty() && matches!(value.get_ref(), DeValue::Array(a) if a.is_empty()) {
            ctx.error(value.span(), format!("`{key}` must not be empty"))
                .hint(hint);
        }
        Some(items)
    }

    /// A sub-table; an absent table when the key is missing (or holds something else, which is
    /// reported).
    pub fn table(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Table<'a, 'i> {
        let Some(value) = self.get(key) else {
            return self.child(key, 0..0, None);
        };
        let entries = match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                ctx.wrong_type(value, key, "a table");
                None
            }
        };
        self.child(key, value.span(), entries)
    }

    /// A sub-table that must be there (`[job]`).
    pub fn required_table(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
        hint: &str,
    ) -> Table<'a, 'i> {
        if self.entries.is_some_and(|e| !e.contains_key(key)) {
            ctx.absence(self.span(), format!("missing section `[{key}]`"))
                .hint(hint);
        }
        self.table(ctx, key)
    }

    /// The raw sub-table under `key`, for free-form maps such as `fields`.
    pub fn raw_table(&mut self, ctx: &mut Ctx<'_>, key: &'static str) -> Option<&'a DeTable<'i>> {
        let value = self.get(key)?;
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                ctx.wrong_type(value, key, "a table");
                None
            }
        }
    }

    /// A table of named tables (`[sources.NAME]`), in file order, with the span of the
    /// whole map (or of this table when the key is absent).
    pub fn named_tables(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> (Span, Vec<(Spanned<String>, Table<'a, 'i>)>) {
        let Some(value) = self.get(key) else {
            return (self.span(), Vec::new());
        };
        let DeValue::Table(map) = value.get_ref() else {
            ctx.wrong_type(value, key, "a table");
            return (value.span(), Vec::new());
        };
        let map_table = self.child(key, value.span(), Some(map));
        let mut named = Vec::new();
        for (name, item) in in_file_order(map) {
            let name = Spanned::new(name.span(), name.get_ref().to_string());
            match item.get_ref() {
                DeValue::Table(t) => {
                    let child = map_table.child(name.get_ref(), item.span(), Some(t));
                    named.push((name, child));
                }
                _ => {
                    let what = format!("{key}.{}", name.get_ref());
                    ctx.wrong_type(item, &what, "a table")
                        .hint(format!("write it as a section: `[{what}]`"));
                }
            }
        }
        (value.span(), named)
    }

    /// An array of tables (`[[processes.order.steps]]`), with the span of the array (or of
    /// this table when the key is absent).
    pub fn array_of_tables(
        &mut self,
        ctx: &mut Ctx<'_>,
        key: &'static str,
    ) -> (Span, Vec<Table<'a, 'i>>) {
        let Some(value) = self.get(key) else {
            return (self.span(), Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            let what = format!("{}.{key}", self.path);
            ctx.wrong_type(value, key, "an array of tables")
                .hint(format!("write each one as `[[{what}]]`"));
            return (value.span(), Vec::new());
        };
        let mut tables = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(t) => {
                    let mut child = self.child(key, item.span(), Some(t));
                    child.array_item = true;
                    tables.push(child);
                }
                _ => {
                    ctx.wrong_type(item, key, "a table");
                }
            }
        }
        (value.span(), tables)
    }

    /// Stops `finish` from reporting unknown fields (when what is allowed depends on a value
    /// that was itself wrong, such as an unknown `kind`).
    pub fn ignore_unknown(&mut self) {
        self.ignore_unknown = true;
    }

    /// Reports every key of the table that no reader call asked for.
    pub fn finish(self, ctx: &mut Ctx<'_>) {
        let Some(entries) = self.entries else { return };
        if self.ignore_unknown {
            return;
        }
        let top = self.path.is_empty();
        for (key, _) in in_file_order(entries) {
            let name: &str = key.get_ref();
            if self.known.contains(&name) {
                continue;
            }
            let message = if top {
                format!("unknown section `{name}`")
            } else {
                format!("unknown field `{name}` in {}", self.label())
            };
            let hint = suggest::hint(name, &self.known, "remove it");
            ctx.error(key.span(), message).hint(hint);
        }
    }
}

fn positive_duration(ctx: &mut Ctx<'_>, value: &Value<'_>, key: &str) -> Option<Millis> {
    let duration = ctx.duration(value, key)?;
    if *duration.get_ref() <= 0 {
        ctx.error(
            duration.span(),
            format!("`{key}` must be greater than zero"),
        )
        .hint(DURATION_HINT);
        return None;
    }
    Some(duration.into_inner())
}

fn choice(
    ctx: &mut Ctx<'_>,
    value: &Value<'_>,
    key: &str,
    what: &str,
    choices: &[&str],
) -> Option<Spanned<String>> {
    let text = ctx.string(value, key)?;
    if choices.contains(&text.get_ref().as_str()) {
        return Some(text);
    }
    let hint = suggest::hint(text.get_ref(), choices, "");
    ctx.error(value.span(), format!("unknown {what} `{}`", text.get_ref()))
        .hint(hint);
    None
}

fn is_bare_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}
