//! When an endless source goes quiet, event time follows the wall clock, so an SLA deadline
//! fires although no further event arrives — and an order that met its SLA stays quiet.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{example_with, Workdir};

#[test]
fn a_deadline_fires_on_a_quiet_stdin_stream() {
    let work = Workdir::new();
    let topology = example_with(&[
        (
            "kind = \"file\"\npath = \"${VIGIL_DATA:-data}/events-*.jsonl\"",
            "kind = \"stdin\"",
        ),
        ("within = \"24h\"", "within = \"2s\""),
        (
            "max_out_of_orderness = \"5m\"",
            "max_out_of_orderness = \"1s\"",
        ),
        ("idle_timeout = \"5s\"", "idle_timeout = \"300ms\""),
        (
            "checkpoint_interval = \"1s\"",
            "checkpoint_interval = \"100ms\"",
        ),
    ]);
    let mut child = work.spawn_run(&topology, Stdio::null(), Stdio::null());
    let created = |order: &str| {
        format!(
            r#"{{"type":"ORDER_CREATED","event_id":"c-{order}","order_number":"{order}","occurred_at":"2026-11-02T10:00:00Z","customer_id":"C-1","country":"DE","amount":5.0,"payment_method":"paypal","parcels":1}}"#
        )
    };
    let shipped = r#"{"type":"PARCEL_SHIPPED","event_id":"s-B","order_number":"ORD-B","occurred_at":"2026-11-02T10:00:00.500Z","parcel_id":"P1","carrier":"dhl"}"#;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        "{}\n{}\n{}",
        created("ORD-A"),
        created("ORD-B"),
        shipped
    )
    .unwrap();
    stdin.flush().unwrap();

    // No more input. ORD-A's deadline (10:00:02) must still pass, by the wall clock.
    let alerts = work.out().join("alerts.jsonl");
    let started = Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        text = std::fs::read_to_string(&alerts).unwrap_or_default();
        if text.contains("ORD-A") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let waited = started.elapsed();
    assert!(
        text.contains("ORD-A") && text.contains("2026-11-02T10:00:02.000Z"),
        "no alert after {waited:?}: {text:?}"
    );
    assert!(
        waited >= Duration::from_millis(1500),
        "the deadline cannot pass before ~2.5 s of quiet, fired after {waited:?}"
    );
    assert!(!text.contains("ORD-B"), "ORD-B shipped in time: {text}");

    drop(stdin); // end of input
    let status = child.wait().unwrap();
    assert!(status.success());
    let events = std::fs::read_to_string(work.out().join("events.jsonl")).unwrap();
    assert!(events.contains("ALL_PARCELS_SHIPPED") && events.contains("ORD-B"));
}
