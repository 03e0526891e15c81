//! `${VAR}` and `${VAR:-default}` inside string values.

use std::path::PathBuf;

use vigil_actors::spec::{JobSpec, SinkKind};
use vigil_topology::{compile_str, Diagnostics};

const TOPOLOGY: &str = r#"[job]
name = "${JOB_NAME:-orders}"
shards = "${SHARDS:-16}"

[state]
dir = "${STATE_DIR}"

[sources.input]
kind = "stdin"

[events."${NOT_A_VARIABLE}"]
key = "k"
time = "t"

[processes.p]
start = "$${NOT_A_VARIABLE}"

[[processes.p.steps]]
name = "seen"
on = "$${NOT_A_VARIABLE}"

[sinks.out]
kind = "file"
path = "${OUT:-out}/$$HOME/a.jsonl"
inputs = ["p"]
"#;

fn compile(text: &str, vars: &[(&str, &str)]) -> Result<JobSpec, Diagnostics> {
    let env = |name: &str| {
        vars.iter()
            .find(|(var, _)| *var == name)
            .map(|(_, value)| value.to_string())
    };
    compile_str(text, "env.toml", &env)
}

fn sink_path(job: &JobSpec) -> PathBuf {
    match &job.sinks[0].kind {
        SinkKind::File { path } => path.clone(),
        other => panic!("file sink expected, found {other:?}"),
    }
}

#[test]
fn defaults_apply_when_variables_are_unset_and_values_when_set() {
    let job = compile(TOPOLOGY, &[("STATE_DIR", "/data/state")]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(job.name, "orders");
    assert_eq!(
        job.shards, 16,
        "an integer field may come from a string after substitution"
    );
    assert_eq!(job.state_dir, PathBuf::from("/data/state"));
    assert_eq!(
        sink_path(&job),
        PathBuf::from("out/$HOME/a.jsonl"),
        "`$$` is a literal `$`"
    );

    let job = compile(
        TOPOLOGY,
        &[
            ("STATE_DIR", "s"),
            ("JOB_NAME", "returns"),
            ("SHARDS", "64"),
            ("OUT", "/tmp/o"),
        ],
    )
    .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(job.name, "returns");
    assert_eq!(job.shards, 64);
    assert_eq!(sink_path(&job), PathBuf::from("/tmp/o/$HOME/a.jsonl"));
}

#[test]
fn an_empty_variable_takes_the_default_as_in_the_shell() {
    let job =
        compile(TOPOLOGY, &[("STATE_DIR", "s"), ("OUT", "")]).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(sink_path(&job), PathBuf::from("out/$HOME/a.jsonl"));
}

#[test]
fn keys_are_not_substituted() {
    let job = compile(TOPOLOGY, &[("STATE_DIR", "s")]).unwrap_or_else(|d| panic!("{d}"));
    // `[events."${NOT_A_VARIABLE}"]` declares an event type with exactly that name, which the
    // values `start` and `on` name by escaping the `$` as `$$`.
    assert_eq!(job.event_types[0].name, "${NOT_A_VARIABLE}");
    let vigil_actors::spec::TemplateSpec::Process(p) = &job.processes[0].template else {
        panic!("a process template")
    };
    assert_eq!(p.start, "${NOT_A_VARIABLE}");
    assert_eq!(p.steps[0].on, "${NOT_A_VARIABLE}");
}

#[test]
fn an_unset_variable_is_reported_at_its_reference_inside_the_string() {
    let errors = compile(TOPOLOGY, &[]).unwrap_err();
    let found: Vec<(usize, usize, usize, &str)> = errors
        .errors
        .iter()
        .map(|e| (e.line, e.column, e.width, e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [(6, 8, 12, "environment variable `STATE_DIR` is not set")],
        "{errors}"
    );
    assert_eq!(
        errors.errors[0].hint.as_deref(),
        Some("set STATE_DIR or write ${STATE_DIR:-default}")
    );
}

#[test]
fn every_unset_variable_of_a_string_is_reported() {
    let text = TOPOLOGY.replace(
        r#"path = "${OUT:-out}/$$HOME/a.jsonl""#,
        r#"path = "${OUT}/${FILE}.jsonl""#,
    );
    let errors = compile(&text, &[("STATE_DIR", "s")]).unwrap_err();
    let found: Vec<(usize, usize, &str)> = errors
        .errors
        .iter()
        .map(|e| (e.line, e.column, e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (24, 9, "environment variable `OUT` is not set"),
            (24, 16, "environment variable `FILE` is not set"),
        ],
        "{errors}"
    );
}

#[test]
fn a_string_with_escapes_reports_at_the_whole_value() {
    let text = TOPOLOGY.replace(
        r#"path = "${OUT:-out}/$$HOME/a.jsonl""#,
        r#"path = "out\\${FILE}""#,
    );
    let errors = compile(&text, &[("STATE_DIR", "s")]).unwrap_err();
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let e = &errors.errors[0];
    assert_eq!((e.line, e.column, e.width), (24, 8, 14), "{errors}");
}

#[test]
fn a_malformed_reference_is_an_error() {
    let text = TOPOLOGY.replace(r#"dir = "${STATE_DIR}""#, r#"dir = "${STATE DIR}/${oops""#);
    let errors = compile(&text, &[]).unwrap_err();
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`${STATE DIR}` is not a variable reference",
            "unterminated `${` in string",
        ],
        "{errors}"
    );
}
