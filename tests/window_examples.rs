//! The window examples, compared field by field: `examples_golden.rs` checks each record's
//! identity (kind, name, key, event time); this checks every detail too (window bounds,
//! aggregates, `firing`), numbers to a relative 1e-9, against `expected.jsonl` computed by the
//! naive `examples/order-velocity/reference.py`.

use std::path::Path;

use serde_json::Value;
use vigil_actors::job::{self, RunOptions};

/// The records of `dir`'s `*.jsonl` files, without their `id`.
fn records(files: &[std::path::PathBuf]) -> Vec<Value> {
    let mut out = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let mut value: Value = serde_json::from_str(line).unwrap();
            let object = value.as_object_mut().unwrap();
            object.remove("id");
            // Late events carry their reason and payload; the reference gives their identity.
            if object["kind"] == "dead_letter" {
                object.retain(|k, _| ["kind", "name", "key", "event_time"].contains(&k.as_str()));
            }
            out.push(value);
        }
    }
    out
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn check(name: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples").join(name);
    let text = std::fs::read_to_string(example.join("topology.toml")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let env = |var: &str| match var {
        "VIGIL_OUT" => Some(work.path().join("out").display().to_string()),
        "VIGIL_STATE" => Some(work.path().join("state").display().to_string()),
        "VIGIL_DATA" => Some(example.join("input").display().to_string()),
        _ => None,
    };
    let spec =
        vigil_topology::compile_str(&text, "topology.toml", &env).unwrap_or_else(|d| panic!("{d}"));
    let summary = job::run(spec, RunOptions::default()).unwrap();
    let mut expected = records(&[example.join("expected.jsonl")]);
    let mut files: Vec<_> = std::fs::read_dir(work.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let actual = records(&files);
    // Late events are dead letters: they are in the job's dead-letter sink.
    let late = |records: &[Value]| {
        records
            .iter()
            .filter(|r| r["name"] == "LATE_EVENT")
            .cloned()
            .collect::<Vec<_>>()
    };
    let dead_letters = records(&[work.path().join("out/dead_letters.jsonl")]);
    assert_eq!(late(&dead_letters).len(), late(&expected).len());
    let mut extra = Vec::new();
    for record in actual {
        match expected.iter().position(|e| same(e, &record)) {
            Some(i) => {
                expected.swap_remove(i);
            }
            None => extra.push(record),
        }
    }
    assert!(
        expected.is_empty() && extra.is_empty(),
        "{name}: expected but missing {expected:#?}\nproduced but not expected {extra:#?}"
    );
    // Windows that closed left nothing behind; only groups with an open window remain.
    assert_eq!(
        summary.tombstones, 0,
        "window instances leave no tombstones"
    );
}

#[test]
fn order_velocity_matches_the_naive_reference_in_every_field() {
    check("order-velocity");
}

#[test]
fn delivery_velocity_matches_the_naive_reference_in_every_field() {
    check("delivery-velocity");
}
