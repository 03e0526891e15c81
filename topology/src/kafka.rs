//! Kafka: the `[kafka]` section, sources and sinks of kind `kafka`, and the checks between
//! them once the whole file is read (a `[kafka]` section where Kafka is used, no topic both
//! read and written by the job, no two sinks producing to one topic).

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use toml::de::{DeTable, DeValue};
use toml::Spanned;
use vigil_actors::spec::{KafkaSpec, SinkKind, SourceKind};

use crate::diagnostics::Span;
use crate::reader::{in_file_order, Ctx, Table, Value};

/// librdkafka properties that a field of `[kafka]` sets, so they may not be set in
/// `[kafka.properties]` too.
const SET_BY_FIELDS: &[(&str, &str)] = &[
    ("bootstrap.servers", "brokers"),
    ("metadata.broker.list", "brokers"),
    ("group.id", "group"),
    ("group.instance.id", "instance_id"),
];

const TOPIC_RULE: &str =
    "Kafka names are 1 to 249 ASCII letters, digits, `.`, `_` and `-` (and not `.` or `..`)";

const NO_SECTION_HINT: &str =
    "add a `[kafka]` section with the brokers to connect to: `[kafka]` then `brokers = \"localhost:9092\"`";

/// How the sources and sinks use Kafka, recorded while they are read and checked by [`check`].
#[derive(Default)]
pub(crate) struct Uses {
    /// Each `kind = "kafka"`: where, and who uses Kafka how (`source `shop` reads Kafka`).
    kinds: Vec<(Span, String)>,
    /// Topics read, with the source reading them.
    reads: Vec<(Spanned<String>, String)>,
    /// Patterns subscribed to, anchored at the start of the topic name, with their source.
    patterns: Vec<(Spanned<String>, Regex, String)>,
    /// Topics produced to, with the sink (`sink `alerts``, `` `[dead_letter]` ``).
    writes: Vec<(Spanned<String>, String)>,
}

/// The `[kafka]` section as read.
pub(crate) struct Section {
    /// `None` when the section has errors.
    pub spec: Option<KafkaSpec>,
    /// The repartition topic, at its value (or at the section when it is the default).
    repartition_topic: Spanned<String>,
    /// Whether `repartition_topic` is written in the file.
    repartition_written: bool,
}

/// `topics` or `pattern` of a source of kind `kafka`.
pub(crate) fn source(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    name: &str,
    kind: Span,
    uses: &mut Uses,
) -> Option<SourceKind> {
    let owner = format!("source `{name}`");
    uses.kinds.push((kind, format!("{owner} reads Kafka")));
    let raw = |key: &str| table.entries().and_then(|e| e.get(key)).map(Spanned::span);
    let (topics_at, pattern_at) = (raw("topics"), raw("pattern"));
    let topics = table.optional_strings(ctx, "topics");
    let pattern = table.optional_str(ctx, "pattern");
    let shape_hint = "list the topics, `topics = [\"shop.events\"]`, or match them with a regular \
                      expression, `pattern = \"shop\\\\..*\"`";
    match (&topics_at, &pattern_at) {
        (Some(_), Some(pattern_at)) => {
            ctx.error(
                pattern_at.clone(),
                format!("{owner} has both `topics` and `pattern`"),
            )
            .hint("read either a list of topics or the topics matching a pattern: remove one");
        }
        (None, None) => {
            ctx.absence(
                table.span(),
                format!("missing field `topics` or `pattern` in {}", table.label()),
            )
            .hint(shape_hint);
        }
        _ => {}
    }
    let mut ok = topics_at.is_some() != pattern_at.is_some();

    let mut listed = Vec::new();
    if let (Some(topics), Some(at)) = (topics, topics_at.clone()) {
        if topics.is_empty() {
            ctx.error(at, "`topics` must not be empty").hint(shape_hint);
            ok = false;
        }
        let mut seen = HashSet::new();
        for topic in topics {
            if !check_kafka_name(ctx, &topic, "topic") {
                ok = false;
            } else if !seen.insert(topic.get_ref().clone()) {
                ctx.error(
                    topic.span(),
                    format!("topic `{}` is listed twice", topic.get_ref()),
                )
                .hint("remove one");
                ok = false;
            } else {
                uses.reads.push((topic.clone(), owner.clone()));
                listed.push(topic.into_inner());
            }
        }
    } else if topics_at.is_some() {
        ok = false; // wrong type, reported
    }

    let mut regex = None;
    if let Some(pattern) = &pattern {
        // Checked as written, then anchored as Kafka's regex subscriptions are (`^...`).
        let checked = Regex::new(pattern.get_ref())
            .and_then(|_| Regex::new(&format!("^(?:{})", pattern.get_ref())));
        match checked {
            Ok(anchored) => {
                uses.patterns
                    .push((pattern.clone(), anchored.clone(), owner.clone()));
                regex = Some(pattern.get_ref().clone());
            }
            Err(error) => {
                ctx.error(
                    pattern.span(),
                    format!(
                        "invalid regular expression for `pattern`: {}",
                        regex_reason(&error)
                    ),
                )
                .hint(
                    "write a regular expression over topic names, e.g. `\"orders\\\\..*\"`; in a \
                     TOML basic string a `\\` is written `\\\\` (or use a literal string, \
                     `'orders\\..*'`)",
                );
                ok = false;
            }
        }
    } else if pattern_at.is_some() {
        ok = false;
    }

    ok.then_some(SourceKind::Kafka {
        topics: listed,
        pattern: regex,
    })
}

/// The last line of a regex error: `unclosed group`, without the echo of the pattern.
fn regex_reason(error: &regex::Error) -> String {
    let text = error.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    last.trim().trim_start_matches("error: ").to_owned()
}

/// `topic` of a sink, or of the dead-letter sink, of kind `kafka`.
pub(crate) fn sink(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    owner: &str,
    kind: Span,
    uses: &mut Uses,
) -> Option<SinkKind> {
    uses.kinds
        .push((kind, format!("{owner} produces to Kafka")));
    let topic = table.required_str_hinted(
        ctx,
        "topic",
        "name the topic to produce to, e.g. `topic = \"vigil.alerts\"`",
    )?;
    if !check_kafka_name(ctx, &topic, "topic") {
        return None;
    }
    uses.writes.push((topic.clone(), owner.to_owned()));
    Some(SinkKind::Kafka {
        topic: topic.into_inner(),
    })
}

/// The `[kafka]` section, if the file has one.
pub(crate) fn section(root: &mut Table<'_, '_>, ctx: &mut Ctx<'_>, job: &str) -> Option<Section> {
    let mut table = root.table(ctx, "kafka");
    if !table.is_present() {
        return None;
    }
    let errors_before = ctx.problems.len();
    let brokers = table.required_str_hinted(
        ctx,
        "brokers",
        "write the bootstrap servers, e.g. `brokers = \"kafka-0:9092,kafka-1:9092\"`",
    );
    if let Some(brokers) = &brokers {
        check_brokers(ctx, brokers);
    }
    let group = table.str_or(ctx, "group", job);
    let written = table.optional_str(ctx, "repartition_topic");
    let repartition_written = written.is_some();
    let repartition_topic = written
        .filter(|topic| check_kafka_name(ctx, topic, "topic"))
        .unwrap_or_else(|| Spanned::new(table.span(), format!("{job}.repartition")));
    let replication_factor =
        table.integer_or(ctx, "replication_factor", 1, 1..=i64::from(i16::MAX)) as i32;
    let instance_id = table
        .optional_str_unless_empty(ctx, "instance_id")
        .filter(|id| check_kafka_name(ctx, id, "`instance_id`"));
    let snapshot_dir = table
        .optional_str(ctx, "snapshot_dir")
        .map(|dir| PathBuf::from(dir.into_inner()));
    let snapshot_interval = table
        .optional_positive_duration(ctx, "snapshot_interval")
        .map(|millis| Duration::from_millis(millis.unsigned_abs()));
    let properties = table
        .raw_table(ctx, "properties")
        .map(|raw| properties(ctx, raw))
        .unwrap_or_default();
    table.finish(ctx);

    let spec = match brokers {
        Some(brokers) if ctx.problems.len() == errors_before => Some(KafkaSpec {
            brokers: brokers.into_inner(),
            group,
            repartition_topic: repartition_topic.get_ref().clone(),
            replication_factor,
            instance_id: instance_id.map(Spanned::into_inner),
            properties,
            snapshot_dir,
            snapshot_interval,
        }),
        _ => None,
    };
    Some(Section {
        spec,
        repartition_topic,
        repartition_written,
    })
}

/// `host:port` entries separated by commas, each optionally prefixed with `protocol://`.
fn check_brokers(ctx: &mut Ctx<'_>, brokers: &Spanned<String>) {
    for entry in brokers.get_ref().split(',') {
        let entry = entry.trim();
        let address = entry.split_once("://").map_or(entry, |(_, rest)| rest);
        let v6 = address.starts_with('[');
        let (host, port) = if v6 {
            // `[::1]:9092`: the port, if any, follows `]:`
            match address[1..].split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, rest)) => (host, Some(rest.strip_prefix(':').unwrap_or(rest))),
                None => ("", None),
            }
        } else {
            match address.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (address, None),
            }
        };
        let valid_host = !host.is_empty()
            && host.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') || (v6 && c == ':')
            });
        let valid_port = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
        if !(valid_host && valid_port) {
            let message = if entry.is_empty() {
                "empty broker address in `brokers`".to_owned()
            } else {
                format!("invalid broker address `{entry}` in `brokers`")
            };
            ctx.error(brokers.span(), message).hint(
                "write `host:port` addresses separated by commas, e.g. \
                 `brokers = \"kafka-0:9092,kafka-1:9092\"`",
            );
            return;
        }
    }
}

/// `[kafka.properties]`: every value as a string, in file order. Dotted keys
/// (`security.protocol = "SSL"`, which TOML reads as nested tables) are property names.
fn properties(ctx: &mut Ctx<'_>, table: &DeTable<'_>) -> Vec<(String, String)> {
    let mut leaves = Vec::new();
    flatten(ctx, table, "", &mut leaves);
    leaves.sort_by_key(|(name, _)| name.span().start);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (name, value) in leaves {
        if let Some((_, field)) = SET_BY_FIELDS.iter().find(|(p, _)| *p == name.get_ref()) {
            ctx.error(
                name.span(),
                format!("`{}` is set by `{field}` in `[kafka]`", name.get_ref()),
            )
            .hint(format!(
                "remove it from `[kafka.properties]` and write `{field} = ...` in `[kafka]`"
            ));
            continue;
        }
        if !seen.insert(name.get_ref().clone()) {
            ctx.error(
                name.span(),
                format!("property `{}` is set twice", name.get_ref()),
            )
            .hint("remove one");
            continue;
        }
        out.push((name.into_inner(), value));
    }
    out
}

fn flatten(
    ctx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    prefix: &str,
    out: &mut Vec<(Spanned<String>, String)>,
) {
    for (key, value) in in_file_order(table) {
        let name = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        if let DeValue::Table(nested) = value.get_ref() {
            flatten(ctx, nested, &name, out);
            continue;
        }
        if let Some(text) = property_value(ctx, value, &name) {
            out.push((Spanned::new(key.span(), name), text));
        }
    }
}

/// A property value as librdkafka takes it: a string (substituted), or an integer, a float or
/// a boolean written as one.
fn property_value(ctx: &mut Ctx<'_>, value: &Value<'_>, name: &str) -> Option<String> {
    match value.get_ref() {
        DeValue::String(_) => ctx.string(value, name).map(Spanned::into_inner),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .ok()
            .map(|i| i.to_string()),
        DeValue::Float(f) => match f.as_str().parse::<f64>() {
            Ok(f) if f.is_finite() => Some(f.to_string()),
            _ => {
                ctx.error(value.span(), format!("`{name}` must be a finite number"));
                None
            }
        },
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => {
            ctx.wrong_type(value, name, "a string, a number or a boolean")
                .hint(format!(
                    "librdkafka properties are single values; write `\"{name}\" = \"...\"`"
                ));
            None
        }
    }
}

/// A topic name or a `group.instance.id`: what Kafka accepts.
fn check_kafka_name(ctx: &mut Ctx<'_>, name: &Spanned<String>, what: &str) -> bool {
    let text = name.get_ref();
    let valid = text.len() <= 249
        && text != "."
        && text != ".."
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !valid {
        ctx.error(name.span(), format!("invalid {what} name `{text}`"))
            .hint(TOPIC_RULE);
    }
    valid
}

/// Once the whole file is read: Kafka is configured where it is used; the job reads no topic
/// it writes; no two sinks produce to one topic.
pub(crate) fn check(ctx: &mut Ctx<'_>, uses: Uses, section: Option<&Section>) {
    let Some(section) = section else {
        for (span, what) in uses.kinds {
            ctx.absence(
                span,
                format!("{what}, but the topology has no `[kafka]` section"),
            )
            .hint(NO_SECTION_HINT);
        }
        return;
    };
    if uses.kinds.is_empty() {
        return; // `[kafka]` for a job with only file sinks: nothing to check against
    }

    // A topic read by two sources would be read twice.
    let mut read_by: Vec<(&str, &str)> = Vec::new();
    for (topic, source) in &uses.reads {
        match read_by.iter().find(|(t, _)| *t == topic.get_ref()) {
            Some((_, first)) => {
                ctx.error(
                    topic.span(),
                    format!("topic `{}` is already read by {first}", topic.get_ref()),
                )
                .hint("each topic may be read by one source only; remove it here");
            }
            None => read_by.push((topic.get_ref(), source)),
        }
    }
    // Who reads `topic`, and where that is written.
    let reader_of = |topic: &str| -> Option<(String, Span)> {
        if let Some((read, source)) = uses.reads.iter().find(|(t, _)| t.get_ref() == topic) {
            return Some((format!("{source} reads it"), read.span()));
        }
        uses.patterns
            .iter()
            .find(|(_, regex, _)| regex.is_match(topic))
            .map(|(pattern, _, source)| {
                (
                    format!(
                        "the `pattern` `{}` of {source} matches it",
                        pattern.get_ref()
                    ),
                    pattern.span(),
                )
            })
    };

    // Sinks: one topic each, and not one the job reads.
    let mut written_by: Vec<(&Spanned<String>, &str)> = Vec::new();
    for (topic, sink) in &uses.writes {
        if let Some((_, first)) = written_by
            .iter()
            .find(|(t, _)| t.get_ref() == topic.get_ref())
        {
            ctx.error(
                topic.span(),
                format!(
                    "{sink} produces to topic `{}`, which {first} already produces to",
                    topic.get_ref()
                ),
            )
            .hint("each sink must produce to its own topic; choose another topic");
            continue;
        }
        written_by.push((topic, sink));
        if let Some((reader, _)) = reader_of(topic.get_ref()) {
            ctx.error(
                topic.span(),
                format!(
                    "{sink} produces to topic `{}`, but {reader}",
                    topic.get_ref()
                ),
            )
            .hint("the job would read its own output; choose another topic");
        }
    }

    // The repartition topic belongs to the job: neither a source nor a sink may use it. The
    // error is at `repartition_topic` when it is written, else at the source or sink.
    let repartition = &section.repartition_topic;
    let user = written_by
        .iter()
        .find(|(t, _)| t.get_ref() == repartition.get_ref())
        .map(|(topic, sink)| (format!("{sink} produces to it"), topic.span()))
        .or_else(|| reader_of(repartition.get_ref()));
    if let Some((user, at)) = user {
        let span = if section.repartition_written {
            repartition.span()
        } else {
            at
        };
        ctx.error(
            span,
            format!(
                "the repartition topic is `{}`, but {user}",
                repartition.get_ref()
            ),
        )
        .hint(
            "the repartition topic is the job's own (default `<job name>.repartition`): change \
             the source or sink, or set another `repartition_topic` in `[kafka]`",
        );
    }
}
