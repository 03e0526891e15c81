//! The `union` and `join` templates' TOML: the documented shapes compile to their specs, and
//! every mistake is reported at once, at its line and column.

use vigil_actors::spec::{FieldPath, JoinKind, TemplateSpec};
use vigil_topology::{compile_str, Diagnostics};

const HEAD: &str = r#"[job]
name = "orders"

[sources.shop]
kind = "stdin"

[events.ORDER_CREATED]
key = "order_number"
time = "occurred_at"
fields = { customer_id = "string", amount = "number" }

[events.PAYMENT_AUTHORIZED]
key = "order_number"
time = "occurred_at"
fields = { customer_id = "string", payment_method = "string" }

[sinks.out]
kind = "stdout"
inputs = ["p"]
"#;

fn compile(process: &str) -> Result<vigil_actors::spec::JobSpec, Diagnostics> {
    compile_str(&format!("{HEAD}\n{process}"), "topology.toml", &|_| None)
}

/// (message, line, column) of every error; lines count from the process table's first line.
fn errors(process: &str) -> Vec<(String, usize, usize)> {
    let head_lines = HEAD.lines().count() + 1;
    match compile(process) {
        Ok(spec) => panic!("expected errors, compiled {spec:?}"),
        Err(d) => d
            .errors
            .iter()
            .map(|e| (e.message.clone(), e.line - head_lines, e.column))
            .collect(),
    }
}

#[test]
fn the_documented_union_compiles() {
    let spec = compile(
        r#"[processes.p]
template = "union"
name = "ORDER_ACTIVITY"
events = ["ORDER_CREATED", "PAYMENT_AUTHORIZED"]
key = "customer_id"
fields = ["amount", "channel.name"]
"#,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let TemplateSpec::Union(union) = &spec.processes[0].template else {
        panic!("not a union: {:?}", spec.processes[0].template);
    };
    assert_eq!(union.name, "ORDER_ACTIVITY");
    assert_eq!(union.events, ["ORDER_CREATED", "PAYMENT_AUTHORIZED"]);
    assert_eq!(union.key, Some(FieldPath::parse("customer_id")));
    assert_eq!(
        union.fields,
        [FieldPath::parse("amount"), FieldPath::parse("channel.name")]
    );
}

#[test]
fn union_mistakes_are_reported_at_their_place() {
    let found = errors(
        r#"[processes.p]
template = "union"
events = ["ORDER_CREATED", "ORDER_CREATD", "ORDER_CREATED"]
key = "customer"
fields = ["type", "a..b", "amount", "amount"]
feilds = []
"#,
    );
    let expected = [
        ("`ORDER_CREATED` appears twice in `events`", 3, 44),
        (
            "`type` is a field of every record and cannot be projected",
            5,
            11,
        ),
        ("`a..b` is not a field path", 5, 19),
        ("`amount` appears twice in `fields`", 5, 37),
        ("unknown field `feilds` in [processes.p]", 6, 1),
        ("unknown event type `ORDER_CREATD`", 3, 28),
        (
            "`key` names field `customer`, which the event `ORDER_CREATED` does not declare",
            4,
            7,
        ),
    ];
    for (message, line, column) in expected {
        assert!(
            found.contains(&(message.to_string(), line, column)),
            "missing {message:?} at {line}:{column} in {found:#?}"
        );
    }
}

#[test]
fn the_documented_join_compiles() {
    let spec = compile(
        r#"[processes.p]
template = "join"
name = "ORDER_PAID"
left = "ORDER_CREATED"
right = "PAYMENT_AUTHORIZED"
within = "30m"
type = "left"
left_fields = ["amount"]
right_fields = ["payment_method"]
"#,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let TemplateSpec::Join(join) = &spec.processes[0].template else {
        panic!("not a join: {:?}", spec.processes[0].template);
    };
    assert_eq!(
        (join.left.as_str(), join.right.as_str()),
        ("ORDER_CREATED", "PAYMENT_AUTHORIZED")
    );
    assert_eq!(join.within, 30 * 60_000);
    assert_eq!(join.kind, JoinKind::Left);
    assert_eq!(join.timeout, "ORDER_PAID_TIMEOUT");
    assert_eq!(join.key, None);
    assert_eq!(join.left_fields, [FieldPath::parse("amount")]);
    assert_eq!(join.right_fields, [FieldPath::parse("payment_method")]);
}

#[test]
fn join_mistakes_are_reported_at_their_place() {
    let found = errors(
        r#"[processes.p]
template = "join"
left = "ORDER_CREATED"
right = "ORDER_CREATED"
within = "0s"
type = "lefft"
timeout = "X"
right_fields = ["method"]
"#,
    );
    let expected = [
        ("`right` is `ORDER_CREATED`, like `left`", 4, 9),
        ("`within` must be greater than zero", 5, 10),
        ("unknown join type `lefft`", 6, 8),
        ("an inner join emits no timeout records", 7, 11),
        (
            "`fields` names field `method`, which the event `ORDER_CREATED` does not declare",
            8,
            17,
        ),
    ];
    for (message, line, column) in expected {
        assert!(
            found.contains(&(message.to_string(), line, column)),
            "missing {message:?} at {line}:{column} in {found:#?}"
        );
    }
    let missing = errors("[processes.p]\ntemplate = \"join\"\n");
    let messages: Vec<&str> = missing.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        messages,
        [
            "missing field `left` in [processes.p]",
            "missing field `right` in [processes.p]",
            "missing field `within` in [processes.p]",
        ]
    );
}
