//! Kafka in the topology: the `[kafka]` section, sources and sinks of kind `kafka`, and the
//! checks between them. Every option compiles to its spec; every mistake is reported at once,
//! at its line and column, with a hint.

use std::path::PathBuf;
use std::time::Duration;

use vigil_actors::spec::{JobSpec, KafkaSpec, SinkKind, SourceKind};
use vigil_topology::{compile_str, Diagnostic, Diagnostics};

/// The parts of a topology around its sources, sinks and `[kafka]` section.
const EVENTS: &str = r#"
[events.ORDER_CREATED]
key = "order_number"
time = "occurred_at"
fields = { parcels = "integer" }

[events.PARCEL_SHIPPED]
key = "order_number"
time = "occurred_at"
fields = { parcel_id = "string" }

[processes.order]
start = "ORDER_CREATED"

[[processes.order.steps]]
name = "shipped"
on = "PARCEL_SHIPPED"
expect = "parcels"
distinct = "parcel_id"
"#;

const KAFKA_SOURCE: &str = r#"
[sources.shop]
kind = "kafka"
topics = ["shop.events"]
"#;

const KAFKA_SINKS: &str = r#"
[sinks.alerts]
kind = "kafka"
topic = "vigil.alerts"
inputs = ["order"]

[dead_letter]
kind = "kafka"
topic = "vigil.dead-letters"
"#;

const FILE_SINKS: &str = r#"
[sinks.alerts]
kind = "file"
path = "out/alerts.jsonl"
inputs = ["order"]
"#;

const KAFKA: &str = r#"
[kafka]
brokers = "localhost:9092"
"#;

fn topology(sources: &str, sinks: &str, kafka: &str) -> String {
    format!("[job]\nname = \"orders\"\n{sources}{EVENTS}{sinks}{kafka}")
}

fn compile_with(text: &str, vars: &[(&str, &str)]) -> Result<JobSpec, Diagnostics> {
    let env = |name: &str| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.to_string())
    };
    compile_str(text, "kafka.toml", &env)
}

fn compile(text: &str) -> Result<JobSpec, Diagnostics> {
    compile_with(text, &[])
}

fn errors_of(text: &str) -> Vec<Diagnostic> {
    match compile(text) {
        Ok(spec) => panic!("expected errors, compiled {spec:?}"),
        Err(d) => d.errors,
    }
}

/// 1-based (line, column) of the `nth` (0-based) occurrence of `needle` in `text`.
fn position(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("`{needle}` #{nth} not in:\n{text}"))
        .0;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// Where the value after `prefix` (its only occurrence) starts.
fn value_position(text: &str, prefix: &str) -> (usize, usize) {
    assert_eq!(text.matches(prefix).count(), 1, "`{prefix}` in:\n{text}");
    let (line, column) = position(text, prefix, 0);
    (line, column + prefix.len())
}

/// The one error with `message`, asserting there is exactly one.
fn the_error<'d>(errors: &'d [Diagnostic], message: &str) -> &'d Diagnostic {
    let matching: Vec<_> = errors.iter().filter(|e| e.message == message).collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one error `{message}` in {:#?}",
        errors
            .iter()
            .map(|e| (&e.message, e.line, e.column))
            .collect::<Vec<_>>()
    );
    matching[0]
}

fn at(error: &Diagnostic) -> (usize, usize) {
    (error.line, error.column)
}

#[test]
fn every_option_compiles_to_the_kafka_spec() {
    let text = r#"[job]
name = "orders"

[sources.shop]
kind = "kafka"
topics = ["shop.events", "shop.returns"]
type_field = "event_type"

[sources.legacy]
kind = "kafka"
pattern = "legacy\\..*"
"#
    .to_owned()
        + EVENTS
        + r#"
[sinks.alerts]
kind = "kafka"
topic = "vigil.alerts"
inputs = ["order"]

[sinks.audit]
kind = "file"
path = "out/audit.jsonl"
inputs = ["order"]

[dead_letter]
kind = "kafka"
topic = "vigil.dead-letters"

[kafka]
brokers = "kafka-0:9092,kafka-1:9092"
group = "orders-eu"
repartition_topic = "orders-eu.repartition"
replication_factor = 3
instance_id = "vigil-0"
snapshot_dir = "/mnt/snapshots"
snapshot_interval = "1m30s"

[kafka.properties]
"security.protocol" = "SASL_SSL"
sasl.mechanism = "PLAIN"
"message.max.bytes" = 2_000_000
"enable.ssl.certificate.verification" = false
"queue.buffering.max.ms" = 0.5
"#;
    let job = compile(&text).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        job.kafka,
        Some(KafkaSpec {
            brokers: "kafka-0:9092,kafka-1:9092".into(),
            group: "orders-eu".into(),
            repartition_topic: "orders-eu.repartition".into(),
            replication_factor: 3,
            instance_id: Some("vigil-0".into()),
            properties: vec![
                ("security.protocol".into(), "SASL_SSL".into()),
                ("sasl.mechanism".into(), "PLAIN".into()),
                ("message.max.bytes".into(), "2000000".into()),
                ("enable.ssl.certificate.verification".into(), "false".into()),
                ("queue.buffering.max.ms".into(), "0.5".into()),
            ],
            snapshot_dir: Some(PathBuf::from("/mnt/snapshots")),
            snapshot_interval: Some(Duration::from_secs(90)),
        })
    );

    assert_eq!(job.sources.len(), 2);
    assert_eq!(job.sources[0].name, "shop");
    assert_eq!(job.sources[0].type_field, "event_type");
    match &job.sources[0].kind {
        SourceKind::Kafka { topics, pattern } => {
            assert_eq!(topics, &["shop.events", "shop.returns"]);
            assert_eq!(pattern, &None);
        }
        other => panic!("not a Kafka source: {other:?}"),
    }
    assert_eq!(job.sources[1].type_field, "type");
    match &job.sources[1].kind {
        SourceKind::Kafka { topics, pattern } => {
            assert!(topics.is_empty());
            assert_eq!(pattern.as_deref(), Some(r"legacy\..*"));
        }
        other => panic!("not a Kafka source: {other:?}"),
    }
    assert!(
        matches!(&job.sinks[0].kind, SinkKind::Kafka { topic } if topic == "vigil.alerts"),
        "{:?}",
        job.sinks[0].kind
    );
    assert!(
        matches!(&job.sinks[1].kind, SinkKind::File { path } if path == &PathBuf::from("out/audit.jsonl"))
    );
    assert!(
        matches!(&job.dead_letter, SinkKind::Kafka { topic } if topic == "vigil.dead-letters"),
        "{:?}",
        job.dead_letter
    );
}

#[test]
fn defaults_come_from_the_job_name() {
    let job =
        compile(&topology(KAFKA_SOURCE, KAFKA_SINKS, KAFKA)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        job.kafka,
        Some(KafkaSpec {
            brokers: "localhost:9092".into(),
            group: "orders".into(),
            repartition_topic: "orders.repartition".into(),
            replication_factor: 1,
            instance_id: None,
            properties: Vec::new(),
            snapshot_dir: None,
            snapshot_interval: None,
        })
    );
}

#[test]
fn a_kafka_section_is_allowed_with_only_file_sources_and_sinks() {
    let source = "\n[sources.input]\nkind = \"stdin\"\n";
    let job = compile(&topology(source, FILE_SINKS, KAFKA)).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        job.kafka.map(|k| k.brokers).as_deref(),
        Some("localhost:9092")
    );
    let job = compile(&topology(source, FILE_SINKS, "")).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(job.kafka, None);
}

#[test]
fn environment_variables_are_substituted_in_brokers_instance_id_and_properties() {
    let kafka = r#"
[kafka]
brokers = "${KAFKA_BROKERS:-127.0.0.1:9092}"
group = "${VIGIL_GROUP:-orders}"
instance_id = "${POD_NAME:-}"
snapshot_dir = "${VIGIL_SNAPSHOTS:-snapshots}"

[kafka.properties]
"sasl.password" = "${SASL_PASSWORD:-none}"
"#;
    let text = topology(KAFKA_SOURCE, KAFKA_SINKS, kafka);

    let unset = compile_with(&text, &[]).unwrap_or_else(|d| panic!("{d}"));
    let unset = unset.kafka.unwrap();
    assert_eq!(unset.brokers, "127.0.0.1:9092");
    assert_eq!(unset.group, "orders");
    assert_eq!(
        unset.instance_id, None,
        "an instance id that is empty after substitution means dynamic membership"
    );
    assert_eq!(unset.snapshot_dir, Some(PathBuf::from("snapshots")));
    assert_eq!(
        unset.properties,
        [("sasl.password".to_owned(), "none".to_owned())]
    );

    let set = compile_with(
        &text,
        &[
            ("KAFKA_BROKERS", "kafka-0.kafka:9092,kafka-1.kafka:9092"),
            ("POD_NAME", "vigil-2"),
            ("SASL_PASSWORD", "s3cret"),
            ("VIGIL_GROUP", "orders-eu"),
        ],
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let set = set.kafka.unwrap();
    assert_eq!(set.brokers, "kafka-0.kafka:9092,kafka-1.kafka:9092");
    assert_eq!(set.group, "orders-eu");
    assert_eq!(set.instance_id.as_deref(), Some("vigil-2"));
    assert_eq!(set.properties[0].1, "s3cret");

    // Set but empty: like unset, as in the shell.
    let empty = compile_with(&text, &[("POD_NAME", "")]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(empty.kafka.unwrap().instance_id, None);

    // Unset without a default: an error at the `${...}`.
    let strict = text.replace("${KAFKA_BROKERS:-127.0.0.1:9092}", "${KAFKA_BROKERS}");
    let errors = errors_of(&strict);
    let error = the_error(&errors, "environment variable `KAFKA_BROKERS` is not set");
    assert_eq!(at(error), position(&strict, "${KAFKA_BROKERS}", 0));
}

#[test]
fn kafka_without_a_kafka_section_is_an_error_at_each_use() {
    let text = topology(KAFKA_SOURCE, KAFKA_SINKS, "");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let source = the_error(
        &errors,
        "source `shop` reads Kafka, but the topology has no `[kafka]` section",
    );
    assert_eq!(at(source), position(&text, "\"kafka\"", 0));
    let hint = source.hint.as_deref().unwrap();
    assert!(
        hint.contains("[kafka]") && hint.contains("brokers"),
        "{hint}"
    );
    let sink = the_error(
        &errors,
        "sink `alerts` produces to Kafka, but the topology has no `[kafka]` section",
    );
    assert_eq!(at(sink), position(&text, "\"kafka\"", 1));
    let dead_letter = the_error(
        &errors,
        "`[dead_letter]` produces to Kafka, but the topology has no `[kafka]` section",
    );
    assert_eq!(at(dead_letter), position(&text, "\"kafka\"", 2));

    // A Kafka sink alone needs the section too.
    let text = topology(
        "\n[sources.input]\nkind = \"stdin\"\n",
        "\n[sinks.alerts]\nkind = \"kafka\"\ntopic = \"a\"\ninputs = [\"order\"]\n",
        "",
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(at(&errors[0]), position(&text, "\"kafka\"", 0));
}

#[test]
fn kafka_sources_cannot_be_mixed_with_other_sources() {
    let sources = r#"
[sources.files]
kind = "file"
path = "data/*.jsonl"

[sources.shop]
kind = "kafka"
topics = ["shop.events"]

[sources.input]
kind = "stdin"
"#;
    let text = topology(sources, KAFKA_SINKS, KAFKA);
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let file = the_error(
        &errors,
        "source `files` (kind `file`) cannot be combined with the Kafka source `shop`",
    );
    assert_eq!(at(file), position(&text, "\"file\"", 0));
    assert!(
        file.hint.as_deref().unwrap().contains("reads only Kafka"),
        "{:?}",
        file.hint
    );
    let stdin = the_error(
        &errors,
        "source `input` (kind `stdin`) cannot be combined with the Kafka source `shop`",
    );
    assert_eq!(at(stdin), position(&text, "\"stdin\"", 0));
}

#[test]
fn kafka_source_mistakes_are_all_reported() {
    let sources = r#"
[sources.neither]
kind = "kafka"

[sources.both]
kind = "kafka"
topics = ["a"]
pattern = "b.*"

[sources.empty]
kind = "kafka"
topics = []

[sources.regex]
kind = "kafka"
pattern = "orders\\.("

[sources.typo]
kind = "kafka"
topic = ["c"]

[sources.names]
kind = "kafka"
topics = ["shop events", "d", "d"]

[sources.wrong]
kind = "kafak"
"#;
    let text = topology(sources, KAFKA_SINKS, KAFKA);
    let errors = errors_of(&text);

    let neither = the_error(
        &errors,
        "missing field `topics` or `pattern` in [sources.neither]",
    );
    assert_eq!(at(neither), position(&text, "[sources.neither]", 0));
    assert!(neither.hint.as_deref().unwrap().contains("topics = ["));

    let both = the_error(&errors, "source `both` has both `topics` and `pattern`");
    assert_eq!(at(both), position(&text, "\"b.*\"", 0));

    let empty = the_error(&errors, "`topics` must not be empty");
    assert_eq!(at(empty), position(&text, "[]", 0));

    let regex = the_error(
        &errors,
        "invalid regular expression for `pattern`: unclosed group",
    );
    assert_eq!(at(regex), position(&text, r#""orders\\.(""#, 0));

    // `topic` (a sink's field) on a source: unknown, and the source has neither.
    let typo = the_error(&errors, "unknown field `topic` in [sources.typo]");
    assert_eq!(at(typo), position(&text, "topic = [\"c\"]", 0));
    assert_eq!(typo.hint.as_deref(), Some("did you mean `topics`?"));
    the_error(
        &errors,
        "missing field `topics` or `pattern` in [sources.typo]",
    );

    let name = the_error(&errors, "invalid topic name `shop events`");
    assert_eq!(at(name), position(&text, "\"shop events\"", 0));
    let twice = the_error(&errors, "topic `d` is listed twice");
    assert_eq!(at(twice), position(&text, "\"d\"", 1));

    let kind = the_error(&errors, "unknown source kind `kafak`");
    assert_eq!(kind.hint.as_deref(), Some("did you mean `kafka`?"));

    assert_eq!(errors.len(), 9, "{errors:#?}");
}

#[test]
fn kafka_sink_mistakes_are_all_reported() {
    let sinks = r#"
[sinks.alerts]
kind = "kafka"
inputs = ["order"]

[sinks.events]
kind = "kafka"
topic = "vigil.events"
path = "out/events.jsonl"
inputs = ["order"]

[sinks.copy]
kind = "kafka"
topic = "vigil.events"
inputs = ["order"]

[sinks.loop]
kind = "kafka"
topic = "shop.events"
inputs = ["order"]

[dead_letter]
kind = "kafka"
topics = "vigil.dead-letters"
"#;
    let text = topology(KAFKA_SOURCE, sinks, KAFKA);
    let errors = errors_of(&text);

    let missing = the_error(&errors, "missing field `topic` in [sinks.alerts]");
    assert_eq!(at(missing), position(&text, "[sinks.alerts]", 0));
    assert!(missing.hint.as_deref().unwrap().contains("topic = "));

    let path = the_error(&errors, "unknown field `path` in [sinks.events]");
    assert_eq!(at(path), position(&text, "path = ", 0));

    let copy = the_error(
        &errors,
        "sink `copy` produces to topic `vigil.events`, which sink `events` already produces to",
    );
    assert_eq!(at(copy), position(&text, "\"vigil.events\"", 1));

    let looped = the_error(
        &errors,
        "sink `loop` produces to topic `shop.events`, but source `shop` reads it",
    );
    assert_eq!(at(looped), position(&text, "\"shop.events\"", 1));

    let dead_letter = the_error(&errors, "unknown field `topics` in [dead_letter]");
    assert_eq!(dead_letter.hint.as_deref(), Some("did you mean `topic`?"));
    the_error(&errors, "missing field `topic` in [dead_letter]");

    assert_eq!(errors.len(), 6, "{errors:#?}");
}

#[test]
fn patterns_and_the_repartition_topic_are_checked_against_the_topics_written() {
    // `orders` matches the job's default repartition topic `orders.repartition`.
    let sources = r#"
[sources.shop]
kind = "kafka"
pattern = "orders\\..*"
"#;
    let sinks = r#"
[sinks.alerts]
kind = "kafka"
topic = "orders.alerts"
inputs = ["order"]
"#;
    let text = topology(sources, sinks, KAFKA);
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    let sink = the_error(
        &errors,
        r"sink `alerts` produces to topic `orders.alerts`, but the `pattern` `orders\..*` of source `shop` matches it",
    );
    assert_eq!(at(sink), position(&text, "\"orders.alerts\"", 0));
    let repartition = the_error(
        &errors,
        r"the repartition topic is `orders.repartition`, but the `pattern` `orders\..*` of source `shop` matches it",
    );
    assert_eq!(at(repartition), position(&text, r#""orders\\..*""#, 0));

    // The pattern is matched from the start of the name: `shop.orders.x` is not read.
    let sinks = sinks.replace("orders.alerts", "shop.orders.alerts");
    let kafka =
        "\n[kafka]\nbrokers = \"localhost:9092\"\nrepartition_topic = \"orders-repartition\"\n";
    compile(&topology(sources, &sinks, kafka)).unwrap_or_else(|d| panic!("{d}"));

    // A repartition topic written in `[kafka]` that a sink uses: the error is there.
    let kafka = "\n[kafka]\nbrokers = \"localhost:9092\"\nrepartition_topic = \"vigil.alerts\"\n";
    let text = topology(KAFKA_SOURCE, KAFKA_SINKS, kafka);
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0].message,
        "the repartition topic is `vigil.alerts`, but sink `alerts` produces to it"
    );
    assert_eq!(at(&errors[0]), position(&text, "\"vigil.alerts\"", 1));
}

#[test]
fn kafka_section_mistakes_are_all_reported() {
    let kafka = r#"
[kafka]
brokres = "localhost:9092"
replication_factor = 0
instance_id = ""
snapshot_interval = 60
group = 7

[kafka.properties]
"bootstrap.servers" = "elsewhere:9092"
"client.id" = ["a", "b"]
"#;
    let text = topology(KAFKA_SOURCE, KAFKA_SINKS, kafka);
    let errors = errors_of(&text);

    let missing = the_error(&errors, "missing field `brokers` in [kafka]");
    assert_eq!(at(missing), position(&text, "[kafka]", 0));
    assert!(missing.hint.as_deref().unwrap().contains("brokers = "));
    let typo = the_error(&errors, "unknown field `brokres` in [kafka]");
    assert_eq!(at(typo), position(&text, "brokres", 0));
    assert_eq!(typo.hint.as_deref(), Some("did you mean `brokers`?"));

    let factor = the_error(&errors, "`replication_factor` must be between 1 and 32767");
    assert_eq!(at(factor), value_position(&text, "replication_factor = "));
    let instance = the_error(&errors, "`instance_id` must not be empty");
    assert_eq!(at(instance), position(&text, "\"\"", 0));
    assert!(instance.hint.as_deref().unwrap().contains("${VAR:-}"));
    let interval = the_error(
        &errors,
        "expected a duration string for `snapshot_interval`, found an integer",
    );
    assert_eq!(at(interval), value_position(&text, "snapshot_interval = "));
    let group = the_error(&errors, "expected a string for `group`, found an integer");
    assert_eq!(at(group), value_position(&text, "group = "));

    let servers = the_error(
        &errors,
        "`bootstrap.servers` is set by `brokers` in `[kafka]`",
    );
    assert_eq!(at(servers), position(&text, "\"bootstrap.servers\"", 0));
    let array = the_error(
        &errors,
        "expected a string, a number or a boolean for `client.id`, found an array",
    );
    assert_eq!(at(array), position(&text, "[\"a\", \"b\"]", 0));

    // The sources and sinks use Kafka and there is a `[kafka]` section (with errors): no
    // "no `[kafka]` section" error on top.
    assert_eq!(errors.len(), 8, "{errors:#?}");
}

#[test]
fn kafka_values_are_checked() {
    let kafka = r#"
[kafka]
brokers = "localhost:90x2,,other"
repartition_topic = "orders/repartition"
instance_id = "${POD_NAME:-pod 0}"
snapshot_interval = "0s"
"#;
    let text = topology(KAFKA_SOURCE, KAFKA_SINKS, kafka);
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let brokers = the_error(
        &errors,
        "invalid broker address `localhost:90x2` in `brokers`",
    );
    assert_eq!(at(brokers), position(&text, "\"localhost:90x2", 0));
    let topic = the_error(&errors, "invalid topic name `orders/repartition`");
    assert_eq!(at(topic), position(&text, "\"orders/repartition\"", 0));
    the_error(&errors, "invalid `instance_id` name `pod 0`");
    let interval = the_error(&errors, "`snapshot_interval` must be greater than zero");
    assert_eq!(at(interval), position(&text, "\"0s\"", 0));

    for brokers in [
        "kafka:9092",
        "kafka-0:9092, kafka-1:9092",
        "SSL://kafka:9093",
        "[::1]:9092",
        "kafka",
    ] {
        let kafka = format!("\n[kafka]\nbrokers = \"{brokers}\"\n");
        let job = compile(&topology(KAFKA_SOURCE, KAFKA_SINKS, &kafka))
            .unwrap_or_else(|d| panic!("{brokers}: {d}"));
        assert_eq!(job.kafka.unwrap().brokers, brokers);
    }
    for brokers in ["kafka:0", "kafka:", ",kafka:9092", "kafka:9092;other:9092"] {
        let kafka = format!("\n[kafka]\nbrokers = \"{brokers}\"\n");
        let errors = errors_of(&topology(KAFKA_SOURCE, KAFKA_SINKS, &kafka));
        assert_eq!(errors.len(), 1, "{brokers}: {errors:#?}");
        assert!(errors[0].message.contains("broker address"), "{errors:#?}");
    }
}

#[test]
fn the_kafka_example_compiles() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/order-fulfilment/kafka.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let job = compile_with(&text, &[]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        job.kafka,
        Some(KafkaSpec {
            brokers: "127.0.0.1:9092".into(),
            group: "order-fulfilment".into(),
            repartition_topic: "vigil.repartition".into(),
            replication_factor: 1,
            instance_id: None,
            properties: Vec::new(),
            snapshot_dir: Some(PathBuf::from("snapshots")),
            snapshot_interval: Some(Duration::from_secs(60)),
        })
    );
    assert!(
        matches!(&job.sources[0].kind, SourceKind::Kafka { topics, pattern: None } if topics == &["shop.events"])
    );
    let topics: Vec<&str> = job
        .sinks
        .iter()
        .map(|s| &s.kind)
        .chain([&job.dead_letter])
        .map(|kind| match kind {
            SinkKind::Kafka { topic } => topic.as_str(),
            other => panic!("not a Kafka sink: {other:?}"),
        })
        .collect();
    assert_eq!(
        topics,
        ["vigil.alerts", "vigil.events", "vigil.dead-letters"]
    );

    let job = compile_with(
        &text,
        &[
            ("VIGIL_TOPIC_PREFIX", "shop-eu"),
            ("POD_NAME", "vigil-1"),
            ("KAFKA_BROKERS", "kafka:9092"),
        ],
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert!(
        matches!(&job.dead_letter, SinkKind::Kafka { topic } if topic == "shop-eu.dead-letters")
    );
    let kafka = job.kafka.unwrap();
    assert_eq!(kafka.repartition_topic, "shop-eu.repartition");
    assert_eq!(kafka.brokers, "kafka:9092");
    assert_eq!(kafka.instance_id.as_deref(), Some("vigil-1"));
}
