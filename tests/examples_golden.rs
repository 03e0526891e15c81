//! Golden tests: every example under `examples/<name>/` with a sample input runs on it and emits
//! exactly its `expected.jsonl` (compared on kind, name, key and event_time, as a multiset).
//!
//! Layout of an example: `topology.toml` reading `${VIGIL_DATA:-examples/<name>/input}` and
//! writing every sink under `${VIGIL_OUT:-out}`; `input/` with its sample events;
//! `expected.jsonl`. Add one `golden!` line per example. (`order-fulfilment` reads generated
//! input and is checked by `golden_order_fulfilment.rs`.)

mod common;

use std::path::Path;

use common::identities;
use vigil_actors::job::{self, RunOptions};

#[allow(dead_code)] // until the first `golden!` line
fn run_example(name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples").join(name);
    let text = std::fs::read_to_string(example.join("topology.toml")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let env = |var: &str| match var {
        "VIGIL_OUT" => Some(out.path().join("out").display().to_string()),
        "VIGIL_STATE" => Some(out.path().join("state").display().to_string()),
        "VIGIL_DATA" => Some(example.join("input").display().to_string()),
        other => std::env::var(other).ok(),
    };
    let spec = vigil_topology::compile_str(&text, &format!("examples/{name}/topology.toml"), &env)
        .unwrap_or_else(|d| panic!("{d}"));
    job::run(spec, RunOptions::default()).unwrap();
    let expected = identities(&[example.join("expected.jsonl")]);
    let actual = identities(&common::jsonl_files(&out.path().join("out")));
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, n)| actual.get(*k) != Some(n))
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(k, n)| expected.get(*k) != Some(n))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "example {name}:\n expected but not so: {missing:#?}\n got instead: {extra:#?}"
    );
}

#[allow(unused_macros)]
macro_rules! golden {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                run_example($name);
            }
        )*
    };
}

golden!(order_velocity => "order-velocity");
golden!(delivery_velocity => "delivery-velocity");
golden!(fraud => "fraud");
golden!(customer_contact => "customer-contact");
golden!(order_patterns => "order-patterns");
golden!(alert_escalation => "alert-escalation");
golden!(enrichment => "enrichment");
golden!(order_union => "order-union");
golden!(order_payment_join => "order-payment-join");
