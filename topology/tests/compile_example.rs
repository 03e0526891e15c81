//! The shipped example compiles into the job it describes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_actors::spec::{
    FieldPath, FieldType, JobSpec, SinkKind, SourceKind, StepSpec, TemplateSpec,
};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/order-fulfilment/topology.toml")
}

fn compile_with(vars: &[(&str, &str)]) -> JobSpec {
    let text = std::fs::read_to_string(example_path()).expect("example exists");
    let env = |name: &str| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.to_string())
    };
    vigil_topology::compile_str(&text, "topology.toml", &env).unwrap_or_else(|d| panic!("{d}"))
}

fn path(dotted: &str) -> FieldPath {
    FieldPath::parse(dotted)
}

#[test]
fn job_state_and_time_settings_with_their_defaults() {
    let job = compile_with(&[]);
    assert_eq!(job.name, "order-fulfilment");
    assert_eq!(job.shards, 8);
    assert_eq!(job.workers, 0, "default: one worker per core");
    assert_eq!(job.max_retries, 3, "default");
    assert_eq!(job.state_dir, PathBuf::from("state"));
    assert_eq!(job.checkpoint_interval, Duration::from_secs(1));
    assert_eq!(job.passivate_after, Duration::from_secs(30), "default");
    assert_eq!(job.max_resident, 300_000, "default");
    assert_eq!(job.max_resident_overshoot, 65_536, "default");
    assert_eq!(job.max_out_of_orderness, 300_000);
    assert_eq!(job.idle_timeout, Duration::from_secs(5));
    assert_eq!(job.dedup_retention, 7_200_000);
}

#[test]
fn sources_and_event_types_keep_file_order() {
    let job = compile_with(&[]);
    assert_eq!(job.sources.len(), 1);
    assert_eq!(job.sources[0].name, "shop");
    assert_eq!(job.sources[0].type_field, "type");
    assert!(
        matches!(&job.sources[0].kind, SourceKind::File { path } if path == "data/events-*.jsonl")
    );

    let names: Vec<&str> = job.event_types.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "ORDER_CREATED",
            "PAYMENT_AUTHORIZED",
            "PAYMENT_FAILED",
            "PARCEL_SHIPPED",
            "PARCEL_DELIVERED",
            "ORDER_CANCELLED",
            "CART_ITEM_ADDED",
        ]
    );
    let created = &job.event_types[0];
    assert_eq!(created.key, path("order_number"));
    assert_eq!(created.time, path("occurred_at"));
    assert_eq!(created.id, Some(path("event_id")));
    let fields: Vec<(String, FieldType, bool)> = created
        .fields
        .iter()
        .map(|f| (f.path.to_string(), f.ty, f.required))
        .collect();
    assert_eq!(
        fields,
        [
            ("customer_id".to_string(), FieldType::String, true),
            ("country".to_string(), FieldType::String, true),
            ("amount".to_string(), FieldType::Number, true),
            ("payment_method".to_string(), FieldType::String, true),
            ("parcels".to_string(), FieldType::Integer, true),
        ]
    );
    let cancelled = &job.event_types[5];
    assert!(cancelled.fields.is_empty());
}

#[test]
fn the_order_process_has_its_steps_and_sla() {
    let job = compile_with(&[]);
    assert_eq!(job.processes.len(), 1);
    assert_eq!(job.processes[0].name, "order");
    let TemplateSpec::Process(order) = &job.processes[0].template else {
        panic!("a process template")
    };
    assert_eq!(order.start, "ORDER_CREATED");
    assert_eq!(order.cancel, ["ORDER_CANCELLED"]);
    assert_eq!(order.complete.as_deref(), Some("delivered"));
    assert_eq!(order.expire_after, Some(30 * 86_400_000));

    let steps: Vec<&str> = order.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["paid", "shipped", "delivered"]);
    let StepSpec {
        on,
        expect,
        distinct,
        emit,
        ..
    } = &order.steps[1];
    assert_eq!(on, "PARCEL_SHIPPED");
    assert_eq!(expect.as_ref(), Some(&path("parcels")));
    assert_eq!(distinct.as_ref(), Some(&path("parcel_id")));
    assert_eq!(emit.as_deref(), Some("ALL_PARCELS_SHIPPED"));
    assert_eq!(order.steps[0].expect, None);

    assert_eq!(order.slas.len(), 1);
    let sla = &order.slas[0];
    assert_eq!(sla.name, "SLA_BREACHED");
    assert_eq!(sla.step, "shipped");
    assert_eq!(sla.within, 86_400_000);
    assert_eq!(sla.from, None);
}

fn file_path(kind: &SinkKind) -> PathBuf {
    match kind {
        SinkKind::File { path } => path.clone(),
        other => panic!("expected a file sink, found {other:?}"),
    }
}

#[test]
fn sink_paths_follow_vigil_out_and_stay_relative_by_default() {
    let job = compile_with(&[]);
    let sinks: Vec<(&str, PathBuf)> = job
        .sinks
        .iter()
        .map(|s| (s.name.as_str(), file_path(&s.kind)))
        .collect();
    assert_eq!(
        sinks,
        [
            ("alerts", PathBuf::from("out/alerts.jsonl")),
            ("events", PathBuf::from("out/events.jsonl")),
        ]
    );
    assert_eq!(job.sinks[0].inputs, ["order"]);
    assert_eq!(job.sinks[0].kinds, ["alert"]);
    assert_eq!(job.sinks[1].kinds, ["event"]);
    assert_eq!(
        file_path(&job.dead_letter),
        PathBuf::from("out/dead_letters.jsonl")
    );

    let job = compile_with(&[
        ("VIGIL_OUT", "/var/vigil/out"),
        ("VIGIL_STATE", "/var/vigil/state"),
        ("VIGIL_DATA", "/srv/events"),
    ]);
    assert_eq!(
        file_path(&job.sinks[0].kind),
        PathBuf::from("/var/vigil/out/alerts.jsonl")
    );
    assert_eq!(
        file_path(&job.sinks[1].kind),
        PathBuf::from("/var/vigil/out/events.jsonl")
    );
    assert_eq!(
        file_path(&job.dead_letter),
        PathBuf::from("/var/vigil/out/dead_letters.jsonl")
    );
    assert_eq!(job.state_dir, PathBuf::from("/var/vigil/state"));
    assert!(
        matches!(&job.sources[0].kind, SourceKind::File { path } if path == "/srv/events/events-*.jsonl")
    );
}

#[test]
fn compile_file_reads_the_example_from_disk() {
    let job = vigil_topology::compile_file(&example_path()).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(job.name, "order-fulfilment");
}

#[test]
fn an_unreadable_file_is_one_diagnostic_without_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let errors = vigil_topology::compile_file(&missing).unwrap_err();
    assert_eq!(errors.errors.len(), 1);
    assert_eq!((errors.errors[0].line, errors.errors[0].column), (0, 0));
    assert!(errors.errors[0].message.starts_with("cannot read"));
    assert!(errors.to_string().ends_with("\n1 error\n"));
}

#[test]
fn a_minimal_topology_gets_every_default() {
    let text = r#"
[job]
name = "tiny"

[sources.input]
kind = "generator"

[events.E]
key = "k"
time = "t"
fields = { "n" = "integer?", customer.zip = "string" }

[processes.p]
start = "E"

[[processes.p.steps]]
name = "seen"
on = "E"
"#;
    let job =
        vigil_topology::compile_str(text, "tiny.toml", &|_| None).unwrap_or_else(|d| panic!("{d}"));
    assert!(matches!(
        job.sources[0].kind,
        SourceKind::Generator {
            seed: 1,
            orders: 1000
        }
    ));
    assert_eq!(job.shards, 8);
    assert_eq!(job.state_dir, PathBuf::from("state"));
    assert_eq!(job.max_out_of_orderness, 300_000);
    assert_eq!(job.dedup_retention, 3_600_000);
    assert_eq!(
        file_path(&job.dead_letter),
        PathBuf::from("dead_letters.jsonl")
    );
    assert!(job.sinks.is_empty());
    let fields = &job.event_types[0].fields;
    assert_eq!(
        (fields[0].path.to_string(), fields[0].required),
        ("n".into(), false)
    );
    assert_eq!(
        fields[1].path,
        FieldPath(vec!["customer".into(), "zip".into()])
    );
    let TemplateSpec::Process(p) = &job.processes[0].template else {
        panic!("a process template")
    };
    assert!(p.cancel.is_empty() && p.complete.is_none() && p.expire_after.is_none());
}
