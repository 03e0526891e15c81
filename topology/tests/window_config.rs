//! The `window` template's TOML: the documented shape compiles to its spec, and every mistake
//! in it is reported at once, at its place.

use vigil_actors::spec::{AggregateFn, FieldPath, GroupBy, TemplateSpec, WindowEmit};
use vigil_topology::{compile_str, Diagnostics};

const HEAD: &str = r#"
[job]
name = "velocity"

[sources.shop]
kind = "stdin"

[events.ORDER_CREATED]
key = "order_number"
time = "occurred_at"
fields = { customer_id = "string", country = "string", amount = "number" }

[sinks.out]
kind = "stdout"
inputs = ["order_velocity"]
"#;

fn compile(process: &str) -> Result<vigil_actors::spec::JobSpec, Diagnostics> {
    compile_str(&format!("{HEAD}\n{process}"), "topology.toml", &|_| None)
}

fn messages(process: &str) -> Vec<String> {
    match compile(process) {
        Ok(spec) => panic!("expected errors, compiled {spec:?}"),
        Err(d) => d.errors.iter().map(|e| e.message.clone()).collect(),
    }
}

#[test]
fn the_documented_shape_compiles() {
    let spec = compile(
        r#"
[processes.order_velocity]
template = "window"
events = ["ORDER_CREATED"]
group_by = ["country", "type"]
size = "1h"
slide = "5m"
allowed_lateness = "1m"
emit = "on_update"
[processes.order_velocity.aggregates]
orders = "count"
revenue = { sum = "amount" }
customers = { distinct_count = "customer_id" }
"#,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let TemplateSpec::Window(window) = &spec.processes[0].template else {
        panic!("not a window: {:?}", spec.processes[0].template);
    };
    assert_eq!(window.name, "ORDER_VELOCITY");
    assert_eq!(
        window.group_by,
        [
            GroupBy::Field(FieldPath::parse("country")),
            GroupBy::EventType
        ]
    );
    assert_eq!(
        (window.size, window.slide, window.allowed_lateness),
        (3_600_000, 300_000, 60_000)
    );
    assert_eq!(window.emit, WindowEmit::OnUpdate);
    let aggregates: Vec<_> = window
        .aggregates
        .iter()
        .map(|a| (a.name.as_str(), a.function))
        .collect();
    assert_eq!(
        aggregates,
        [
            ("orders", AggregateFn::Count),
            ("revenue", AggregateFn::Sum),
            ("customers", AggregateFn::DistinctCount)
        ]
    );
}

#[test]
fn without_slide_windows_tumble() {
    let spec = compile(
        "[processes.order_velocity]\ntemplate = \"window\"\nevents = [\"ORDER_CREATED\"]\nsize = \"1m\"\n",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let TemplateSpec::Window(window) = &spec.processes[0].template else {
        panic!("not a window");
    };
    assert_eq!((window.size, window.slide), (60_000, 60_000));
    assert!(window.group_by.is_empty() && window.aggregates.is_empty());
}

#[test]
fn every_mistake_is_reported_at_once() {
    let errors = messages(
        r#"
[processes.order_velocity]
template = "window"
events = ["ORDER_CREATD"]
group_by = ["country", "country", "brand"]
size = "1 hour"
slide = "2h"
allowed_lateness = "5"
emit = "on_closed"
windw = "x"
[processes.order_velocity.aggregates]
count = "count"
revenue = { summ = "amount" }
average = "avg"
names = { max = "customer_id" }  # not checked: the event type is unknown
orders = { count = "amount" }
"#,
    );
    let expected = [
        "unknown event type `ORDER_CREATD`",
        "`country` appears twice in `group_by`",
        "invalid duration for `size`",
        "invalid duration for `allowed_lateness`",
        "unknown emit mode `on_closed`",
        "`count` is a field of every window result",
        "unknown aggregate function `summ`",
        "`avg` needs a field",
        "`count` counts events and takes no field",
        "unknown field `windw`",
    ];
    for message in expected {
        assert!(
            errors.iter().any(|e| e.contains(message)),
            "no error `{message}` in {errors:#?}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn fields_must_be_declared_and_numeric_where_summed() {
    let errors = messages(
        r#"
[processes.order_velocity]
template = "window"
events = ["ORDER_CREATED"]
group_by = ["brand"]
size = "1h"
slide = "7m"
[processes.order_velocity.aggregates]
largest = { max = "customer_id" }
total = { sum = "amont" }
"#,
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors[0].contains("`group_by` names field `brand`"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("needs a number, but field `customer_id`"),
        "{errors:#?}"
    );
    assert!(errors[2].contains("names field `amont`"), "{errors:#?}");
}

#[test]
fn a_slide_longer_than_the_size_or_too_many_panes_is_refused() {
    let longer = messages(
        "[processes.order_velocity]\ntemplate = \"window\"\nevents = [\"ORDER_CREATED\"]\nsize = \"1h\"\nslide = \"2h\"\n",
    );
    assert!(longer[0].contains("longer than `size`"), "{longer:#?}");
    let fine = messages(
        "[processes.order_velocity]\ntemplate = \"window\"\nevents = [\"ORDER_CREATED\"]\nsize = \"48h\"\nslide = \"1s\"\n",
    );
    assert!(fine[0].contains("172800 panes"), "{fine:#?}");
}
