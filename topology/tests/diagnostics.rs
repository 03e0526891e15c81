//! Every mistake is reported at once, at its line and column, with a hint.

use std::path::Path;

use vigil_topology::{compile_str, Diagnostic, Diagnostics};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).expect("fixture exists")
}

fn errors_of(text: &str) -> Diagnostics {
    match compile_str(text, "topology.toml", &|_| None) {
        Ok(job) => panic!("expected errors, compiled {job:?}"),
        Err(errors) => errors,
    }
}

/// (line, column, message) of each error.
fn positions(errors: &Diagnostics) -> Vec<(usize, usize, &str)> {
    errors
        .errors
        .iter()
        .map(|e| (e.line, e.column, e.message.as_str()))
        .collect()
}

fn hint(error: &Diagnostic) -> &str {
    error.hint.as_deref().unwrap_or("")
}

#[test]
fn six_mistakes_in_six_sections_are_all_reported_at_their_place() {
    let errors = errors_of(&fixture("several_mistakes.toml"));
    assert_eq!(
        positions(&errors),
        [
            (4, 10, "expected an integer for `shards`, found a boolean"),
            (7, 8, "environment variable `VIGIL_TEST_UNSET` is not set"),
            (
                10,
                24,
                "invalid duration for `max_out_of_orderness`: `5 min` needs a unit (ms, s, m, h or d)"
            ),
            (15, 1, "unknown field `formt` in [sources.shop]"),
            (34, 6, "unknown event type `PARCEL_SHIPED`"),
            (38, 8, "process `order` has no step `shiped`"),
        ],
        "{errors}"
    );
    let e = &errors.errors;
    assert_eq!(
        hint(&e[1]),
        "set VIGIL_TEST_UNSET or write ${VIGIL_TEST_UNSET:-default}"
    );
    assert!(hint(&e[2]).contains("`1h30m`"));
    assert_eq!(
        hint(&e[3]),
        "expected one of `kind`, `path` or `type_field`"
    );
    assert_eq!(hint(&e[4]), "did you mean `PARCEL_SHIPPED`?");
    assert_eq!(hint(&e[5]), "did you mean `shipped`?");
    assert!(errors.to_string().ends_with("\n6 errors\n"));
}

#[test]
fn errors_render_like_rustc() {
    let errors = errors_of(&fixture("several_mistakes.toml"));
    let rendered = errors.to_string();
    let expected = "\
error: unknown event type `PARCEL_SHIPED`
  --> topology.toml:34:6
   |
34 | on = \"PARCEL_SHIPED\"
   |      ^^^^^^^^^^^^^^^
   = hint: did you mean `PARCEL_SHIPPED`?
";
    assert!(rendered.contains(expected), "{rendered}");
    let expected = "\
error: expected an integer for `shards`, found a boolean
 --> topology.toml:4:10
  |
4 | shards = true
  |          ^^^^
";
    assert!(rendered.starts_with(expected), "{rendered}");
    // one block per error, separated by blank lines
    assert_eq!(rendered.matches("\n\nerror: ").count(), 5);
    let as_error: &dyn std::error::Error = &errors;
    assert_eq!(as_error.to_string(), rendered);
}

#[test]
fn names_that_do_not_resolve_are_all_reported_with_suggestions() {
    let errors = errors_of(&fixture("bad_references.toml"));
    assert_eq!(
        positions(&errors),
        [
            (25, 11, "unknown event type `ORDER_CANCELED`"),
            (26, 12, "process `order` has no step `delivered`"),
            (
                31,
                10,
                "`expect` needs an integer field, but field `parcels` of `ORDER_CREATED` is declared `string`"
            ),
            (
                32,
                12,
                "`distinct` names field `parcel`, which the event `PARCEL_SHIPPED` does not declare"
            ),
            (37, 8, "process `order` has no step `paid`"),
            (43, 11, "unknown process `orders`"),
            (44, 10, "unknown record kind `alerts`"),
            (
                48,
                8,
                "sink `audit` writes `./out/alerts.jsonl`, which sink `alerts` already writes"
            ),
        ],
        "{errors}"
    );
    let hints: Vec<&str> = errors.errors.iter().map(hint).collect();
    assert_eq!(hints[0], "did you mean `ORDER_CANCELLED`?");
    assert_eq!(hints[1], "expected `shipped`");
    assert_eq!(hints[3], "did you mean `parcel_id`?");
    assert_eq!(hints[5], "did you mean `order`?");
    assert_eq!(hints[6], "did you mean `alert`?");
}

#[test]
fn a_syntax_error_is_reported_at_its_location_with_the_certain_errors() {
    let errors = errors_of(&fixture("syntax_error.toml"));
    assert_eq!(
        positions(&errors),
        [
            (4, 10, "`shards` must be between 1 and 4096"),
            (8, 21, "TOML syntax: invalid basic string, expected `\"`"),
            (13, 1, "unknown field `colour` in [events.ORDER_CREATED]"),
        ],
        "{errors}"
    );
}

#[test]
fn a_duplicate_key_is_a_syntax_error_with_a_hint() {
    let errors = errors_of("[job]\nname = \"a\"\nname = \"b\"\n");
    assert_eq!(
        positions(&errors),
        [(3, 1, "TOML syntax: duplicate key")],
        "{errors}"
    );
    assert!(hint(&errors.errors[0]).contains("only once"));
}

#[test]
fn an_empty_file_misses_its_job_sources_and_event_types() {
    let errors = errors_of("");
    let messages: Vec<&str> = errors.errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "missing section `[job]`",
            "the topology declares no source",
            "the topology declares no event type",
        ]
    );
    assert!(errors.errors.iter().all(|e| (e.line, e.column) == (1, 1)));
}

const VALID: &str = r#"[job]
name = "j"

[sources.input]
kind = "stdin"

[events.E]
key = "k"
time = "t"
id = "id"
fields = { n = "integer", label = "string" }

[processes.p]
start = "E"

[[processes.p.steps]]
name = "seen"
on = "E"

[sinks.out]
kind = "stdout"
inputs = ["p"]
"#;

fn with(replace: &str, by: &str) -> String {
    assert!(VALID.contains(replace), "{replace}");
    VALID.replacen(replace, by, 1)
}

#[test]
fn the_valid_base_compiles() {
    compile_str(VALID, "t.toml", &|_| None).unwrap_or_else(|d| panic!("{d}"));
}

#[test]
fn unknown_fields_and_sections_suggest_the_closest_known_one() {
    let errors = errors_of(&with(
        "name = \"j\"",
        "name = \"j\"\nshrads = 4\n\n[stat]\ndir = \"x\"",
    ));
    assert_eq!(
        positions(&errors),
        [
            (3, 1, "unknown field `shrads` in [job]"),
            (5, 2, "unknown section `stat`"),
        ],
        "{errors}"
    );
    assert_eq!(hint(&errors.errors[0]), "did you mean `shards`?");
    assert_eq!(hint(&errors.errors[1]), "did you mean `state`?");
}

#[test]
fn an_unknown_template_lists_the_known_ones() {
    let errors = errors_of(&with(
        "start = \"E\"",
        "template = \"sessionize\"\nstart = \"E\"",
    ));
    assert_eq!(
        positions(&errors),
        [(14, 12, "unknown template `sessionize`")],
        "{errors}"
    );
    let hint = hint(&errors.errors[0]);
    assert!(hint.starts_with("known templates: `process`"), "{hint}");
    assert!(hint.contains("`fraud`"), "{hint}");
}

#[test]
fn wrong_kinds_and_values_say_what_is_expected() {
    let errors = errors_of(&with(
        "kind = \"stdin\"",
        "kind = \"kinesis\"\nstream = \"orders\"",
    ));
    assert_eq!(
        positions(&errors),
        [(5, 8, "unknown source kind `kinesis`")],
        "{errors}"
    );
    assert_eq!(
        hint(&errors.errors[0]),
        "expected one of `file`, `stdin`, `generator` or `kafka`"
    );

    let errors = errors_of(&with("n = \"integer\"", "n = \"int\""));
    assert_eq!(
        positions(&errors),
        [(11, 16, "unknown field type `int`")],
        "{errors}"
    );

    let errors = errors_of(&with("inputs = [\"p\"]", "inputs = \"p\""));
    assert_eq!(
        positions(&errors),
        [(
            22,
            10,
            "expected an array of strings for `inputs`, found a string"
        )],
        "{errors}"
    );
    assert_eq!(hint(&errors.errors[0]), "write `inputs = [\"p\"]`");
}

#[test]
fn step_rules_are_checked() {
    let errors = errors_of(&with(
        "on = \"E\"",
        "on = \"E\"\nexpect = \"label\"\n\n[[processes.p.steps]]\nname = \"seen\"\non = \"E\"\ndistinct = \"n\"",
    ));
    assert_eq!(
        positions(&errors),
        [
            (
                19,
                10,
                "`expect` needs an integer field, but field `label` of `E` is declared `string`"
            ),
            (22, 8, "duplicate step `seen` in process `p`"),
            (24, 12, "`distinct` only applies together with `expect`"),
        ],
        "{errors}"
    );
}

#[test]
fn process_names_and_durations_are_validated() {
    let errors = errors_of(&with(
        "[processes.p]\nstart = \"E\"",
        "[processes.p]\nstart = \"E\"\nexpire_after = \"0s\"\n\n[processes.\"bad name\"]\nstart = \"E\"\n[[processes.\"bad name\".steps]]\nname = \"s\"\non = \"E\"",
    ));
    assert_eq!(
        positions(&errors),
        [
            (15, 16, "`expire_after` must be greater than zero"),
            (17, 12, "invalid process name `bad name`"),
        ],
        "{errors}"
    );
}

#[test]
fn a_process_needs_steps_and_a_sink_needs_inputs() {
    let errors = errors_of(&with(
        "[[processes.p.steps]]\nname = \"seen\"\non = \"E\"",
        "",
    ));
    assert_eq!(
        positions(&errors),
        [(13, 1, "process `p` has no steps")],
        "{errors}"
    );
    let errors = errors_of(&with("inputs = [\"p\"]", "inputs = []"));
    assert_eq!(
        positions(&errors),
        [(22, 10, "`inputs` must not be empty")],
        "{errors}"
    );
}
