//! Completed and cancelled orders leave no state behind: their instance is deleted, and the
//! small tombstone that ignores late duplicates is purged after `dedup_retention`.

mod common;

use common::{Workdir, EXAMPLE};
use vigil_actors::job::{self, RunOptions};
use vigil_actors::shard::Shard;
use vigil_storage::ShardStore;

fn line(ty: &str, id: &str, order: &str, time: &str, extra: &str) -> String {
    format!(
        r#"{{"type":"{ty}","event_id":"{id}","order_number":"{order}","occurred_at":"{time}"{extra}}}"#
    )
}

fn created(id: &str, order: &str, time: &str) -> String {
    line(
        "ORDER_CREATED",
        id,
        order,
        time,
        r#","customer_id":"C-1","country":"DE","amount":1.0,"payment_method":"paypal","parcels":1"#,
    )
}

fn cancelled(id: &str, order: &str, time: &str) -> String {
    line("ORDER_CANCELLED", id, order, time, "")
}

/// The order paid (1.0 by paypal).
fn paid(id: &str, order: &str, time: &str) -> String {
    line(
        "PAYMENT_AUTHORIZED",
        id,
        order,
        time,
        r#","amount":1.0,"payment_method":"paypal""#,
    )
}

/// The order's one parcel (`P1`) shipped.
fn shipped(id: &str, order: &str, time: &str) -> String {
    line(
        "PARCEL_SHIPPED",
        id,
        order,
        time,
        r#","parcel_id":"P1","carrier":"dhl""#,
    )
}

/// Writes the input file `events-NNNN.jsonl`.
fn write_events(work: &Workdir, file: u32, lines: &[String]) {
    std::fs::create_dir_all(work.data()).unwrap();
    let path = work.data().join(format!("events-{file:04}.jsonl"));
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// The example topology keeping at most 8 instances in memory: one per shard.
fn one_instance_per_shard() -> String {
    common::example_with(&[(
        "checkpoint_interval = \"1s\"",
        "checkpoint_interval = \"1s\"\nmax_resident = 8",
    )])
}

fn stored_keys(work: &Workdir) -> Vec<String> {
    let mut keys = Vec::new();
    for shard in 0..8 {
        let store = ShardStore::open(&Shard::path(&work.state(), shard)).unwrap();
        keys.extend(
            store
                .read()
                .unwrap()
                .instances()
                .unwrap()
                .into_iter()
                .map(|(id, _)| id.key.to_string()),
        );
    }
    keys.sort();
    keys
}

#[test]
fn ended_instances_are_deleted_and_their_tombstones_purged() {
    let work = Workdir::new();
    let lines = [
        created("a1", "ORD-DONE", "2026-11-02T10:00:00Z"),
        created("b1", "ORD-CANCELLED", "2026-11-02T10:01:00Z"),
        created("c1", "ORD-OPEN", "2026-11-02T10:02:00Z"),
        cancelled("b2", "ORD-CANCELLED", "2026-11-02T11:00:00Z"),
        shipped("a2", "ORD-DONE", "2026-11-02T12:00:00Z"),
        line(
            "PARCEL_DELIVERED",
            "a3",
            "ORD-DONE",
            "2026-11-03T09:00:00Z",
            r#","parcel_id":"P1""#,
        ),
        // A late duplicate of a completed order's event is ignored, not a new instance.
        line(
            "PARCEL_DELIVERED",
            "a3",
            "ORD-DONE",
            "2026-11-03T09:00:00Z",
            r#","parcel_id":"P1""#,
        ),
        // Time moves on: past the 2 h dedup retention of both ended orders.
        shipped("c2", "ORD-OPEN", "2026-11-03T11:30:00Z"),
    ];
    write_events(&work, 0, &lines);
    let summary = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();

    assert_eq!(summary.counts.instances_started, 3);
    assert_eq!(summary.counts.instances_ended, 2);
    assert_eq!(summary.counts.duplicates, 1);
    assert_eq!(
        summary.tombstones, 0,
        "tombstones are purged after dedup_retention"
    );
    assert_eq!(summary.live_instances, 1);
    assert_eq!(
        stored_keys(&work),
        vec!["ORD-OPEN".to_string()],
        "only the open order is in redb"
    );
    // ORD-OPEN shipped its parcel late: one alert, one complex event; nothing else.
    let alerts = std::fs::read_to_string(work.out().join("alerts.jsonl")).unwrap();
    assert_eq!(alerts.lines().count(), 1);
    assert!(alerts.contains("ORD-OPEN") && alerts.contains("2026-11-03T10:02:00.000Z"));
    // The open order keeps its expiry timer only (its SLA fired, its delivery is pending).
    assert_eq!(summary.pending_timers, 1);
}

#[test]
fn tombstones_stay_until_the_watermark_passes_their_retention() {
    let work = Workdir::new();
    let lines = [
        created("b1", "ORD-CANCELLED", "2026-11-02T10:00:00Z"),
        cancelled("b2", "ORD-CANCELLED", "2026-11-02T10:30:00Z"),
        created("c1", "ORD-OPEN", "2026-11-02T11:00:00Z"),
    ];
    write_events(&work, 0, &lines);
    let summary = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    assert_eq!((summary.live_instances, summary.tombstones), (1, 1));
    assert_eq!(
        stored_keys(&work),
        vec!["ORD-CANCELLED".to_string(), "ORD-OPEN".to_string()]
    );
}

#[test]
fn a_new_event_for_an_ended_instance_starts_its_next_incarnation() {
    let work = Workdir::new();
    let lines = [
        created("b1", "ORD-AGAIN", "2026-11-02T10:00:00Z"),
        cancelled("b2", "ORD-AGAIN", "2026-11-02T10:30:00Z"),
        // A duplicate of the cancellation: ignored.
        cancelled("b2", "ORD-AGAIN", "2026-11-02T10:30:00Z"),
        // The order number is used again: a new incarnation with its own SLA.
        created("b3", "ORD-AGAIN", "2026-11-02T11:00:00Z"),
        created("c1", "ORD-LATER", "2026-11-03T12:00:00Z"),
    ];
    write_events(&work, 0, &lines);
    let summary = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    assert_eq!(summary.counts.duplicates, 1);
    assert_eq!(summary.counts.instances_started, 3, "{:?}", summary.counts);
    let alerts = std::fs::read_to_string(work.out().join("alerts.jsonl")).unwrap();
    assert_eq!(alerts.lines().count(), 1, "{alerts}");
    assert!(
        alerts.contains("ORD-AGAIN") && alerts.contains("2026-11-03T11:00:00.000Z"),
        "{alerts}"
    );
}

#[test]
fn passivated_tombstones_are_purged_without_being_read_back() {
    // 40 orders cancelled; at most 8 instances in memory (1 per shard), so the checkpoint
    // at the end of the first run passivates most tombstones to redb. The second run's event
    // moves the watermark past their retention: each is deleted from redb by its purge timer,
    // without being activated.
    let work = Workdir::new();
    let mut lines = Vec::new();
    for i in 0..40 {
        let order = format!("ORD-{i:02}");
        lines.push(created(&format!("c{i}"), &order, "2026-11-02T10:00:00Z"));
        lines.push(cancelled(&format!("x{i}"), &order, "2026-11-02T10:30:00Z"));
    }
    write_events(&work, 0, &lines);
    let topology = one_instance_per_shard();
    let first = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    assert_eq!((first.live_instances, first.tombstones), (0, 40));
    assert_eq!(stored_keys(&work).len(), 40, "every tombstone is in redb");

    // A duplicate for the least recently used order reads its tombstone back (it was
    // passivated); the others are only purged.
    let second_lines = [
        cancelled("x0", "ORD-00", "2026-11-02T10:30:00Z"),
        created("late", "ORD-LATE", "2026-11-03T10:00:00Z"),
    ];
    write_events(&work, 1, &second_lines);
    let second = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    assert_eq!((second.live_instances, second.tombstones), (1, 0));
    assert_eq!(second.counts.duplicates, 1);
    assert_eq!(stored_keys(&work), vec!["ORD-LATE".to_string()]);
    assert_eq!(
        second.counts.instances_loaded,
        first.counts.instances_loaded + 1,
        "only the duplicate's tombstone was read back, none to be purged"
    );
    assert!(
        second.counts.timers_fired >= first.counts.timers_fired + 40,
        "{:?}",
        second.counts
    );
}

#[test]
fn beyond_max_resident_tombstones_leave_memory_before_live_instances() {
    // 80 orders, then 40 of them cancelled: the tombstones are the most recently used. With
    // one instance in memory per shard, the checkpoint passivates tombstones first, so each
    // shard keeps a live order, and a later event for it needs no read from redb.
    let work = Workdir::new();
    let order = |i: usize| format!("ORD-{i:02}");
    let mut lines: Vec<String> = (0..80)
        .map(|i| created(&format!("c{i}"), &order(i), "2026-11-02T10:00:00Z"))
        .collect();
    for i in 40..80 {
        lines.push(cancelled(
            &format!("x{i}"),
            &order(i),
            "2026-11-02T10:30:00Z",
        ));
    }
    write_events(&work, 0, &lines);
    let topology = one_instance_per_shard();
    let first = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    assert_eq!((first.live_instances, first.tombstones), (40, 40));

    let payments: Vec<String> = (0..40)
        .map(|i| paid(&format!("p{i}"), &order(i), "2026-11-02T10:40:00Z"))
        .collect();
    write_events(&work, 1, &payments);
    let second = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    let read_back = second.counts.instances_loaded - first.counts.instances_loaded;
    // The 40 open orders, less the one each of the 8 shards kept in memory.
    assert_eq!(read_back, 40 - 8, "{:?}", second.counts);
}

#[test]
fn every_timer_of_a_passivated_order_fires_when_one_watermark_step_passes_them() {
    // ORD-A (two SLAs and its expiry pending) is passivated: one instance in memory, and
    // ORD-B is used later. Only A's earliest timer is a row of the timer table. One event 55
    // days on passes all three: the first activates A, which must bring the other two back
    // and fire them too, though the next timer the scan saw (B's expiry) is later still.
    let work = Workdir::new();
    let topology = common::example_with(&[
        ("shards = 8", "shards = 1"),
        (
            "checkpoint_interval = \"1s\"",
            "checkpoint_interval = \"1s\"\nmax_resident = 1",
        ),
        ("expire_after = \"30d\"", "expire_after = \"50d\""),
        (
            "within = \"24h\"",
            "within = \"45d\"\n\n[[processes.order.slas]]\nname = \"PAYMENT_LATE\"\nstep = \"paid\"\nwithin = \"40d\"",
        ),
    ]);
    let first_lines = [
        created("a1", "ORD-A", "2026-11-01T10:00:00Z"),
        created("b1", "ORD-B", "2026-11-11T10:00:00Z"),
        paid("b2", "ORD-B", "2026-11-11T10:00:00Z"),
        shipped("b3", "ORD-B", "2026-11-11T10:00:00Z"),
    ];
    write_events(&work, 0, &first_lines);
    let first = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    assert_eq!(first.pending_timers, 4, "A: 2 SLAs and expiry; B: expiry");
    let store = ShardStore::open(&Shard::path(&work.state(), 0)).unwrap();
    let passivated: Vec<_> = store.read().unwrap().timers().unwrap();
    drop(store);
    assert_eq!(
        passivated.iter().filter(|t| &*t.key == "ORD-A").count(),
        1,
        "{passivated:?}"
    );

    write_events(
        &work,
        1,
        &[created("late", "ORD-LATE", "2026-12-26T10:00:00Z")],
    );
    let second = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    let alerts = std::fs::read_to_string(work.out().join("alerts.jsonl")).unwrap();
    let a_alerts: Vec<_> = alerts.lines().filter(|l| l.contains("ORD-A")).collect();
    for alert in ["PAYMENT_LATE", "SLA_BREACHED"] {
        assert!(
            a_alerts.iter().any(|l| l.contains(alert)),
            "{alert} missing: {alerts}"
        );
    }
    assert_eq!(
        (second.live_instances, second.tombstones),
        (2, 1),
        "A expired; B and ORD-LATE are open"
    );
}

#[test]
fn a_long_lived_instance_remembers_its_event_ids_for_the_retention_only() {
    // One open order with a payment event every minute for 10 h (event time), and
    // `dedup_retention = "2h"`: a duplicate of a payment 30 min old is ignored, one of a
    // payment 10 h old is a new event, and the order's record holds 2 to 4 h of ids, not 10.
    let work = Workdir::new();
    let start = 1_793_613_600_000_i64; // 2026-11-02T10:00:00Z
    let at = |minute: i64| vigil_actors::time::format_rfc3339(start + minute * 60_000);
    let mut lines = vec![created("c", "ORD-LONG", &at(0))];
    for minute in 1..=600 {
        lines.push(paid(&format!("p{minute}"), "ORD-LONG", &at(minute)));
    }
    lines.push(paid("p570", "ORD-LONG", &at(570)));
    lines.push(paid("p1", "ORD-LONG", &at(1)));
    write_events(&work, 0, &lines);
    let summary = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();

    assert_eq!(summary.counts.duplicates, 1, "{:?}", summary.counts);
    assert_eq!(summary.counts.processed, 602, "{:?}", summary.counts);
    let records: Vec<usize> = (0..8)
        .flat_map(|shard| {
            let store = ShardStore::open(&Shard::path(&work.state(), shard)).unwrap();
            let instances = store.read().unwrap().instances().unwrap();
            instances.into_iter().map(|(_, record)| record.len())
        })
        .collect();
    assert_eq!(records.len(), 1);
    // At most about 4 h of ids (two generations of 2 h) at 9 bytes each: under 2 500 bytes;
    // all 602 would be over 5 400.
    assert!(records[0] < 2_500, "record of {} bytes", records[0]);
}

/// The timers the end of the input fires (the watermark goes to the last event's time) change
/// their instances, and the final checkpoint has those changes: a later run over the same
/// state, with new input, does not fire them again. (It did: the instances the final
/// watermark changed were left out of the final checkpoint, and the next run emitted their
/// alerts a second time.)
#[test]
fn timers_the_end_of_the_input_fires_do_not_fire_again_in_the_next_run() {
    let work = Workdir::new();
    // ORD-1's SLA deadline (24 h) is 3 minutes before the last event: within the 5 minutes
    // of out-of-orderness, so only the end of the input passes it.
    write_events(
        &work,
        0,
        &[
            created("a1", "ORD-1", "2026-11-02T10:00:00Z"),
            created("b1", "ORD-2", "2026-11-03T10:03:00Z"),
        ],
    );
    let first = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    let alerts = || std::fs::read_to_string(work.out().join("alerts.jsonl")).unwrap();
    assert_eq!(alerts().lines().count(), 1, "{}", alerts());
    assert!(alerts().contains("ORD-1"));

    // A day later: ORD-2's SLA passes; ORD-1's fired already.
    write_events(&work, 1, &[created("c1", "ORD-3", "2026-11-04T10:10:00Z")]);
    job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    let alerts = alerts();
    let per_order = |order: &str| alerts.lines().filter(|l| l.contains(order)).count();
    assert_eq!((per_order("ORD-1"), per_order("ORD-2")), (1, 1), "{alerts}");
    // What the first run's checkpoint holds: ORD-1's expiry, ORD-2's SLA and expiry.
    assert_eq!(first.pending_timers, 3, "{first:?}");
}
