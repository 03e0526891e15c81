//! A shard with no batch waiting passivates the instances beyond `max_resident` ahead of its
//! checkpoint, into the interval's transaction: nothing is lost, their timers still fire, and
//! their next events find them in redb.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use common::{example_with, Workdir};

const ORDERS: usize = 400;

/// Runs the example on 2 shards, fed over stdin in groups of 20 lines with a pause after
/// each (so that each shard has no batch waiting after each of its batches): ORDERS orders
/// created, then a parcel shipped for the even ones, then one more order two days later,
/// whose watermark passes the others' 24 h deadlines. Returns the alerts, the events and the
/// summary `vigil run` printed.
fn run_paced(state: &str) -> (String, String, String) {
    let work = Workdir::new();
    let topology = example_with(&[
        (
            "kind = \"file\"\npath = \"${VIGIL_DATA:-data}/events-*.jsonl\"",
            "kind = \"stdin\"",
        ),
        // Event time must not follow the wall clock during the pauses.
        ("idle_timeout = \"5s\"", "idle_timeout = \"1h\""),
        ("checkpoint_interval = \"1s\"", state),
        ("shards = 8", "shards = 2"),
    ]);
    let mut child = work.spawn_run(&topology, Stdio::piped(), Stdio::inherit());
    let created = |i: usize| {
        format!(
            r#"{{"type":"ORDER_CREATED","event_id":"c-{i}","order_number":"ORD-{i:04}","occurred_at":"2026-11-02T10:{:02}:{:02}Z","customer_id":"C-{i}","country":"DE","amount":5.0,"payment_method":"paypal","parcels":1}}"#,
            i / 60,
            i % 60
        )
    };
    let shipped = |i: usize| {
        format!(
            r#"{{"type":"PARCEL_SHIPPED","event_id":"s-{i}","order_number":"ORD-{i:04}","occurred_at":"2026-11-02T12:{:02}:{:02}Z","parcel_id":"P-{i}","carrier":"dhl"}}"#,
            i / 60,
            i % 60
        )
    };
    let mut lines: Vec<String> = (0..ORDERS).map(created).collect();
    lines.extend((0..ORDERS).step_by(2).map(shipped));
    lines.push(
        r#"{"type":"ORDER_CREATED","event_id":"c-last","order_number":"ORD-LAST","occurred_at":"2026-11-04T12:00:00Z","customer_id":"C-0","country":"DE","amount":5.0,"payment_method":"paypal","parcels":1}"#
            .to_owned(),
    );
    let mut stdin = child.stdin.take().unwrap();
    for group in lines.chunks(20) {
        writeln!(stdin, "{}", group.join("\n")).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(3));
    }
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let read = |name: &str| std::fs::read_to_string(work.out().join(name)).unwrap_or_default();
    let summary = String::from_utf8(output.stdout).unwrap();
    (read("alerts.jsonl"), read("events.jsonl"), summary)
}

/// The orders of the lines that contain `what`, sorted.
fn orders_with(text: &str, what: &str) -> Vec<String> {
    let mut orders: Vec<String> = text
        .lines()
        .filter(|line| line.contains(what))
        .map(|line| {
            let at = line.find("ORD-").expect("an order number");
            line[at..at + 8].to_owned()
        })
        .collect();
    orders.sort();
    orders
}

/// From `vigil run`'s summary: how many instances it read back from redb.
fn reactivated(summary: &str) -> usize {
    let before = summary
        .split(" reactivated from redb")
        .next()
        .expect("a summary");
    let number = before.rsplit(' ').next().unwrap();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no count in {summary}"))
}

#[test]
fn instances_passivated_ahead_of_the_checkpoint_lose_nothing() {
    // At most 8 instances per shard, checkpoints every hour, and one brought forward only past
    // 500 more per shard: only passivating ahead takes instances out of memory before the
    // end. Without a bound on the overshoot it is off, and all stay in memory.
    let ahead = "checkpoint_interval = \"1h\"\nmax_resident = 16\nmax_resident_overshoot = 1000";
    let (alerts, events, summary) = run_paced(ahead);
    let off = "checkpoint_interval = \"1h\"\nmax_resident = 16\nmax_resident_overshoot = 0";
    let (alerts_off, events_off, summary_off) = run_paced(off);

    let even: Vec<String> = (0..ORDERS)
        .step_by(2)
        .map(|i| format!("ORD-{i:04}"))
        .collect();
    let odd: Vec<String> = (1..ORDERS)
        .step_by(2)
        .map(|i| format!("ORD-{i:04}"))
        .collect();
    assert_eq!(orders_with(&events, "ALL_PARCELS_SHIPPED"), even);
    assert_eq!(orders_with(&alerts, "SLA_BREACHED"), odd);
    assert_eq!(events.lines().count(), even.len(), "{events}");
    assert_eq!(alerts.lines().count(), odd.len(), "{alerts}");
    // Most were passivated before their parcel was shipped or their deadline passed.
    assert!(
        reactivated(&summary) > ORDERS * 3 / 4,
        "passivated ahead and read back: {summary}"
    );
    assert_eq!(reactivated(&summary_off), 0, "{summary_off}");
    let sorted = |text: &str| {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        lines.join("\n")
    };
    assert_eq!(sorted(&events), sorted(&events_off));
    assert_eq!(sorted(&alerts), sorted(&alerts_off));
}
