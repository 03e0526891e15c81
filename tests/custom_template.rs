//! The extension API end to end: a custom template (`examples/custom-template/template.rs`)
//! registered in a `Registry`, referenced from TOML, its configuration checked by the topology
//! compiler (errors at their line and column), and run on the example's input.

#[path = "../examples/custom-template/template.rs"]
mod template;

mod common;

use std::path::Path;

use serde_json::Value;
use vigil_actors::job::{self, RunError, RunOptions};
use vigil_actors::registry::Registry;

const EXAMPLE: &str = include_str!("../examples/custom-template/topology.toml");

fn registry() -> Registry {
    let mut registry = Registry::builtin();
    template::register(&mut registry);
    registry
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Compiles the example with `from` replaced by `to`, and returns its diagnostics as
/// `(line, column, message, hint)`.
fn errors_of(replacements: &[(&str, &str)]) -> Vec<(usize, usize, String, Option<String>)> {
    let mut text = EXAMPLE.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "the example has no `{from}`");
        text = text.replace(from, to);
    }
    let diagnostics =
        vigil_topology::compile_str_with(&text, "topology.toml", &no_env, &registry())
            .expect_err("the topology has mistakes");
    diagnostics
        .errors
        .into_iter()
        .map(|d| (d.line, d.column, d.message, d.hint))
        .collect()
}

fn line_of(needle: &str) -> usize {
    EXAMPLE
        .lines()
        .position(|l| l.starts_with(needle))
        .expect("line in the example")
        + 1
}

#[test]
fn the_example_compiles_with_the_template_registered_and_not_without() {
    let spec = vigil_topology::compile_str_with(EXAMPLE, "topology.toml", &no_env, &registry())
        .unwrap_or_else(|d| panic!("{d}"));
    let vigil_actors::spec::TemplateSpec::Custom { template, config } = &spec.processes[0].template
    else {
        panic!("a custom template");
    };
    assert_eq!(template, "repeat_customer");
    assert_eq!(
        config,
        &serde_json::json!({"event": "ORDER_CREATED", "customer": "customer_id", "orders": 3, "within": "7d"})
    );

    let errors = vigil_topology::compile_str(EXAMPLE, "topology.toml", &no_env).unwrap_err();
    assert_eq!(
        errors.errors[0].message,
        "unknown template `repeat_customer`"
    );
    assert_eq!(errors.errors[0].line, line_of("template = "));
}

#[test]
fn every_config_mistake_is_reported_at_its_line_and_column() {
    let errors = errors_of(&[
        ("orders = 3", "orders = 1"),
        ("within = \"7d\"", "withn = \"7d\""),
    ]);
    let process = line_of("[processes.loyal]");
    let orders = line_of("orders = ");
    let within = line_of("within = ");
    assert_eq!(
        errors,
        vec![
            (
                process,
                1,
                "missing field `within` in process `loyal`".to_string(),
                Some("write a duration such as `500ms`, `90s`, `5m`, `24h` or `1h30m`".to_string())
            ),
            (
                orders,
                10,
                "`orders` must be between 2 and 1000".to_string(),
                None
            ),
            (
                within,
                1,
                "unknown field `withn` in process `loyal`".to_string(),
                Some("did you mean `within`?".to_string())
            ),
        ]
    );
}

#[test]
fn wrong_types_and_env_variables_are_checked_before_the_factory() {
    let errors = errors_of(&[("within = \"7d\"", "within = 7")]);
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].2,
        "expected a duration string for `within`, found a number"
    );
    assert_eq!((errors[0].0, errors[0].1), (line_of("within = "), 10));

    let errors = errors_of(&[("within = \"7d\"", "within = \"${WINDOW}\"")]);
    assert_eq!(errors[0].2, "environment variable `WINDOW` is not set");
    assert_eq!((errors[0].0, errors[0].1), (line_of("within = "), 11));
}

#[test]
fn the_event_types_it_subscribes_to_must_be_declared() {
    let errors = errors_of(&[("event = \"ORDER_CREATED\"", "event = \"ORDER_CREATD\"")]);
    assert_eq!(
        errors,
        vec![(
            line_of("event = "),
            9,
            "unknown event type `ORDER_CREATD`".to_string(),
            Some("did you mean `ORDER_CREATED`?".to_string())
        )]
    );
}

fn run_example(registry: Option<Registry>) -> Result<Vec<Value>, RunError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples/custom-template");
    let work = tempfile::tempdir().unwrap();
    let env = |var: &str| match var {
        "VIGIL_OUT" => Some(work.path().join("out").display().to_string()),
        "VIGIL_STATE" => Some(work.path().join("state").display().to_string()),
        "VIGIL_DATA" => Some(example.join("input").display().to_string()),
        _ => None,
    };
    let spec = vigil_topology::compile_str_with(EXAMPLE, "topology.toml", &env, &self::registry())
        .unwrap_or_else(|d| panic!("{d}"));
    job::run(
        spec,
        RunOptions {
            registry,
            ..RunOptions::default()
        },
    )?;
    let mut records = Vec::new();
    for file in common::jsonl_files(&work.path().join("out")) {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let mut record: Value = serde_json::from_str(line).unwrap();
            record.as_object_mut().unwrap().remove("id");
            records.push(record);
        }
    }
    records.sort_by_key(|r| r["key"].as_str().map(str::to_owned));
    Ok(records)
}

#[test]
fn the_example_runs_and_emits_exactly_its_expected_records() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let expected: Vec<Value> =
        std::fs::read_to_string(root.join("examples/custom-template/expected.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    assert_eq!(run_example(Some(registry())).unwrap(), expected);
}

#[test]
fn running_without_the_template_registered_is_an_error() {
    let error = run_example(None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "process `loyal`: template `repeat_customer` is not registered"
    );
}
