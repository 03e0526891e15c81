//! The structural pass: reads each section of the file into the parts of a [`JobSpec`],
//! reporting every missing field, wrong type, bad value and unknown field, and recording the
//! names used (event types, steps, fields, processes) for the semantic pass in [`crate::check`].

use std::collections::HashSet;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::Spanned;
use vigil_actors::registry::Registry;
use vigil_actors::spec::{
    EventTypeSpec, FieldPath, FieldSpec, FieldType, JobSpec, ProcessSpec, ReferenceSpec, SinkKind,
    SinkSpec, SourceKind, SourceSpec,
};

use crate::check::{Output, Target};
use crate::custom;
use crate::diagnostics::Span;
use crate::enrich;
use crate::kafka;
use crate::reader::{a, in_file_order, Ctx, Table};
use crate::suggest;
use crate::templates;

/// A job read from the file, with what the semantic pass needs besides the spec.
pub(crate) struct Model {
    /// Complete when no error was reported; otherwise holds placeholders where values were
    /// wrong.
    pub spec: JobSpec,
    /// Every process declared, including those whose configuration failed to read.
    pub process_names: Vec<String>,
}

const SOURCE_KINDS: &[&str] = &["file", "stdin", "generator", "kafka"];
const SINK_KINDS: &[&str] = &["file", "stdout", "kafka"];
/// The kinds of records processes emit, which sinks may filter on.
const RECORD_KINDS: &[&str] = &["alert", "event", "window", "pattern", "dead_letter"];
/// Where dead letters go when the topology has no `[dead_letter]` section.
const DEFAULT_DEAD_LETTER: &str = "dead_letters.jsonl";

pub(crate) fn structure(
    root: &Spanned<DeTable<'_>>,
    ctx: &mut Ctx<'_>,
    registry: &Registry,
) -> Model {
    let mut root = Table::root(root);

    let mut job = root.required_table(
        ctx,
        "job",
        "every topology starts with a `[job]` section and its `name`",
    );
    let name = job.required_str(ctx, "name");
    if let Some(name) = &name {
        ctx.check_name(name, "job");
    }
    let name = name.map(Spanned::into_inner).unwrap_or_default();
    let shards = job.integer_or(ctx, "shards", 8, 1..=4096) as u32;
    let workers = job.integer_or(ctx, "workers", 0, 0..=1024) as usize;
    let max_retries = job.integer_or(ctx, "max_retries", 3, 0..=1000) as u32;
    job.finish(ctx);

    let mut state = root.table(ctx, "state");
    let state_dir = PathBuf::from(state.str_or(ctx, "dir", "state"));
    let checkpoint_interval = state.std_duration_or(ctx, "checkpoint_interval", "1s");
    let passivate_after = state.std_duration_or(ctx, "passivate_after", "30s");
    let max_resident = state.integer_or(ctx, "max_resident", 300_000, 1..=1_000_000_000) as usize;
    let max_resident_overshoot =
        state.integer_or(ctx, "max_resident_overshoot", 65_536, 0..=1_000_000_000) as usize;
    state.finish(ctx);

    let mut time = root.table(ctx, "time");
    let max_out_of_orderness = time.duration_or(ctx, "max_out_of_orderness", "5m");
    let idle_timeout = time.std_duration_or(ctx, "idle_timeout", "5s");
    let dedup_retention = time.duration_or(ctx, "dedup_retention", "1h");
    time.finish(ctx);

    let mut kafka_uses = kafka::Uses::default();
    let sources = sources(&mut root, ctx, &mut kafka_uses);
    let reference = enrich::reference(&mut root, ctx);
    let event_types = event_types(&mut root, ctx, &reference);
    let (processes, process_names) = processes(&mut root, ctx, registry);
    let sinks = sinks(&mut root, ctx, &mut kafka_uses);

    let mut dead_letter_table = root.table(ctx, "dead_letter");
    let dead_letter = if dead_letter_table.is_present() {
        let kind = sink_kind(
            &mut dead_letter_table,
            ctx,
            "`[dead_letter]`",
            &mut kafka_uses,
        );
        dead_letter_table.finish(ctx);
        kind.unwrap_or(SinkKind::Stdout)
    } else {
        ctx.outputs.push(Output {
            path: DEFAULT_DEAD_LETTER.into(),
            span: 0..0,
            owner: "the default `[dead_letter]`".into(),
        });
        SinkKind::File {
            path: DEFAULT_DEAD_LETTER.into(),
        }
    };

    let kafka_section = kafka::section(&mut root, ctx, &name);
    kafka::check(ctx, kafka_uses, kafka_section.as_ref());

    root.finish(ctx);

    Model {
        spec: JobSpec {
            name,
            shards,
            workers,
            state_dir,
            checkpoint_interval,
            passivate_after,
            max_resident,
            log_compaction_bytes: vigil_actors::spec::DEFAULT_LOG_COMPACTION_BYTES,
            max_resident_overshoot,
            max_out_of_orderness,
            idle_timeout,
            dedup_retention,
            max_retries,
            sources,
            event_types,
            reference,
            processes,
            sinks,
            dead_letter,
            kafka: kafka_section.and_then(|section| section.spec),
        },
        process_names,
    }
}

fn sources(
    root: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    kafka_uses: &mut kafka::Uses,
) -> Vec<SourceSpec> {
    let errors_before = ctx.problems.len();
    let (span, tables) = root.named_tables(ctx, "sources");
    if tables.is_empty() && ctx.problems.len() == errors_before {
        ctx.absence(span, "the topology declares no source")
            .hint("add one, e.g. `[sources.input]` with `kind = \"stdin\"`");
    }
    let mut sources = Vec::new();
    let mut stdin: Option<String> = None;
    // The first Kafka source, and every other source (by name, where its kind is, and kind).
    let mut first_kafka: Option<String> = None;
    let mut not_kafka: Vec<(String, Span, String)> = Vec::new();
    for (name, mut table) in tables {
        ctx.check_name(&name, "source");
        let kind = table.required_choice(ctx, "kind", "source kind", SOURCE_KINDS);
        match kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
            Some(("kafka", _)) => {
                first_kafka.get_or_insert_with(|| name.get_ref().clone());
            }
            Some((other, span)) => not_kafka.push((name.get_ref().clone(), span, other.to_owned())),
            None => {}
        }
        let kind = match kind.as_ref().map(|k| k.get_ref().as_str()) {
            Some("file") => table
                .required_str(ctx, "path")
                .map(|path| SourceKind::File {
                    path: path.into_inner(),
                }),
            Some("stdin") => {
                if let (Some(first), Some(kind)) = (&stdin, &kind) {
                    ctx.error(
                        kind.span(),
                        format!("source `{first}` already reads standard input"),
                    )
                    .hint("standard input can be read by one source only");
                }
                stdin.get_or_insert_with(|| name.get_ref().clone());
                Some(SourceKind::Stdin)
            }
            Some("generator") => Some(SourceKind::Generator {
                seed: table.integer_or(ctx, "seed", 1, 0..=i64::MAX) as u64,
                orders: table.integer_or(ctx, "orders", 1000, 1..=i64::MAX) as u64,
            }),
            Some("kafka") => {
                let at = kind.as_ref().map_or(0..0, Spanned::span);
                kafka::source(&mut table, ctx, name.get_ref(), at, kafka_uses)
            }
            _ => {
                table.ignore_unknown();
                None
            }
        };
        let type_field = table.str_or(ctx, "type_field", "type");
        table.finish(ctx);
        if let Some(kind) = kind {
            sources.push(SourceSpec {
                name: name.into_inner(),
                kind,
                type_field,
            });
        }
    }
    if let Some(first_kafka) = first_kafka {
        for (name, at, kind) in not_kafka {
            ctx.error(
                at,
                format!(
                    "source `{name}` (kind `{kind}`) cannot be combined with the Kafka source \
                     `{first_kafka}`"
                ),
            )
            .hint(
                "a job with Kafka sources is run by the Kafka runner, which reads only Kafka: \
                 produce these events to a topic, or monitor them in another job",
            );
        }
    }
    sources
}

fn event_types(
    root: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    reference: &[ReferenceSpec],
) -> Vec<EventTypeSpec> {
    let errors_before = ctx.problems.len();
    let (span, tables) = root.named_tables(ctx, "events");
    if tables.is_empty() && ctx.problems.len() == errors_before {
        ctx.absence(span, "the topology declares no event type")
            .hint("declare each event type the sources carry, e.g. `[events.ORDER_CREATED]` with its `key` and `time` fields");
    }
    let mut event_types = Vec::new();
    for (name, mut table) in tables {
        let placeholder = || FieldPath(Vec::new());
        let key = table.required_path(ctx, "key");
        let time = table.required_path(ctx, "time");
        let id = table.optional_path(ctx, "id");
        let mut fields = Vec::new();
        if let Some(declared) = table.raw_table(ctx, "fields") {
            read_fields(ctx, declared, &[], &mut fields, &mut HashSet::new());
        }
        let derive = table
            .raw_table(ctx, "derive")
            .map(|rules| enrich::derive(ctx, rules, reference))
            .unwrap_or_default();
        table.finish(ctx);
        event_types.push(EventTypeSpec {
            name: name.into_inner(),
            key: key.map_or_else(placeholder, Spanned::into_inner),
            time: time.map_or_else(placeholder, Spanned::into_inner),
            id: id.map(Spanned::into_inner),
            fields,
            derive,
        });
    }
    event_types
}

/// `fields = { name = "type", ... }`; nested tables (`customer.zip = "string"`, or a
/// `[events.X.fields.customer]` section) declare dotted paths.
fn read_fields(
    ctx: &mut Ctx<'_>,
    table: &DeTable<'_>,
    prefix: &[String],
    out: &mut Vec<FieldSpec>,
    seen: &mut HashSet<FieldPath>,
) {
    for (key, value) in in_file_order(table) {
        let mut path = prefix.to_vec();
        path.extend(FieldPath::parse(key.get_ref()).0);
        let path = FieldPath(path);
        if path.0.iter().any(String::is_empty) {
            ctx.error(key.span(), format!("`{path}` is not a field path"))
                .hint("write a JSON field name, or a dotted path like `customer.address.zip`");
            continue;
        }
        if let DeValue::Table(nested) = value.get_ref() {
            read_fields(ctx, nested, &path.0, out, seen);
            continue;
        }
        if !matches!(value.get_ref(), DeValue::String(_)) {
            ctx.error(
                value.span(),
                format!(
                    "expected a type name for field `{path}`, found {}",
                    a(value.get_ref().type_str())
                ),
            )
            .hint(format!(
                "write `{key} = \"<type>\"` with one of {}",
                suggest::list(FieldType::NAMES)
            ));
            continue;
        }
        let Some(type_name) = ctx.string(value, &path.to_string()) else {
            continue;
        };
        let (base, required) = match type_name.get_ref().strip_suffix('?') {
            Some(base) => (base, false),
            None => (type_name.get_ref().as_str(), true),
        };
        let Some(ty) = FieldType::parse(base) else {
            let hint = suggest::hint(base, FieldType::NAMES, "");
            ctx.error(value.span(), format!("unknown field type `{base}`"))
                .hint(format!(
                    "{hint} (append `?` for an optional field: `\"string?\"`)"
                ));
            continue;
        };
        if !seen.insert(path.clone()) {
            ctx.error(key.span(), format!("field `{path}` is declared twice"));
            continue;
        }
        out.push(FieldSpec { path, ty, required });
    }
}

fn processes(
    root: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    registry: &Registry,
) -> (Vec<ProcessSpec>, Vec<String>) {
    let (_, tables) = root.named_tables(ctx, "processes");
    let mut processes = Vec::new();
    let mut names = Vec::new();
    for (name, mut table) in tables {
        ctx.check_name(&name, "process");
        names.push(name.get_ref().clone());
        let template = table
            .optional_str(ctx, "template")
            .unwrap_or_else(|| Spanned::new(table.span(), templates::DEFAULT.to_owned()));
        let spec = match templates::find(template.get_ref()) {
            Some(template) => (template.read)(&name, &mut table, ctx),
            None if registry.is_custom(template.get_ref()) => {
                custom::read(&template, &name, &mut table, registry, ctx)
            }
            None => {
                let mut known: Vec<&str> = templates::names();
                known.extend(
                    registry
                        .names()
                        .into_iter()
                        .filter(|n| registry.is_custom(n)),
                );
                let mut hint = format!("known templates: {}", suggest::list(&known));
                if let Some(best) = suggest::closest(template.get_ref(), known.iter().copied()) {
                    hint = format!("did you mean `{best}`? {hint}");
                }
                ctx.error(
                    template.span(),
                    format!("unknown template `{}`", template.get_ref()),
                )
                .hint(hint);
                table.ignore_unknown();
                None
            }
        };
        table.finish(ctx);
        if let Some(template) = spec {
            processes.push(ProcessSpec {
                name: name.into_inner(),
                template,
            });
        }
    }
    (processes, names)
}

fn sinks(
    root: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    kafka_uses: &mut kafka::Uses,
) -> Vec<SinkSpec> {
    let (_, tables) = root.named_tables(ctx, "sinks");
    let mut sinks = Vec::new();
    for (name, mut table) in tables {
        ctx.check_name(&name, "sink");
        let owner = format!("sink `{}`", name.get_ref());
        let kind = sink_kind(&mut table, ctx, &owner, kafka_uses);
        let inputs = table
            .required_strings(
                ctx,
                "inputs",
                "name the processes whose records this sink receives, e.g. `inputs = [\"order\"]`",
            )
            .unwrap_or_default();
        for input in &inputs {
            ctx.refer(Target::Process, input, "inputs");
        }
        let kinds = table.optional_strings(ctx, "kinds").unwrap_or_default();
        for kind in &kinds {
            if !RECORD_KINDS.contains(&kind.get_ref().as_str()) {
                let hint = suggest::hint(kind.get_ref(), RECORD_KINDS, "");
                ctx.error(
                    kind.span(),
                    format!("unknown record kind `{}`", kind.get_ref()),
                )
                .hint(hint);
            }
        }
        table.finish(ctx);
        if let Some(kind) = kind {
            sinks.push(SinkSpec {
                name: name.into_inner(),
                kind,
                inputs: inputs.into_iter().map(Spanned::into_inner).collect(),
                kinds: kinds.into_iter().map(Spanned::into_inner).collect(),
            });
        }
    }
    sinks
}

/// `kind` and, for files, `path` (for Kafka, `topic`) of a sink or of the dead-letter sink.
fn sink_kind(
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
    owner: &str,
    kafka_uses: &mut kafka::Uses,
) -> Option<SinkKind> {
    let kind = table.required_choice(ctx, "kind", "sink kind", SINK_KINDS);
    match kind.as_ref().map(|k| k.get_ref().as_str()) {
        Some("file") => {
            let path = table.required_str(ctx, "path")?;
            ctx.outputs.push(Output {
                path: PathBuf::from(path.get_ref()),
                span: path.span(),
                owner: owner.to_owned(),
            });
            Some(SinkKind::File {
                path: PathBuf::from(path.into_inner()),
            })
        }
        Some("stdout") => Some(SinkKind::Stdout),
        Some("kafka") => {
            let at = kind.as_ref().map_or(0..0, Spanned::span);
            kafka::sink(table, ctx, owner, at, kafka_uses)
        }
        _ => {
            table.ignore_unknown();
            None
        }
    }
}
