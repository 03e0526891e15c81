//! Bad input goes to the dead-letter sink with the reason, the raw line and where it came
//! from; nothing stops the run and the counts add up.

mod common;

use common::{Workdir, EXAMPLE};
use serde_json::Value;
use vigil_actors::job::{self, RunOptions};

#[test]
fn every_kind_of_bad_line_is_dead_lettered_with_its_reason_and_raw_line() {
    let work = Workdir::new();
    std::fs::create_dir_all(work.data()).unwrap();
    let t = r#""occurred_at":"2026-11-02T10:00:00Z""#;
    let lines = [
        format!(r#"{{"type":"ORDER_CREATED","event_id":"e1","order_number":"ORD-1",{t},"customer_id":"C-1","country":"DE","amount":10.5,"payment_method":"paypal","parcels":1}}"#),
        r#"{"type":"ORDER_CREATED","order_number":"#.to_string(),
        "[1,2,3]".to_string(),
        format!(r#"{{"event":"ORDER_CREATED",{t}}}"#),
        format!(r#"{{"type":"WISHLIST_VIEWED","order_number":"ORD-2",{t}}}"#),
        format!(r#"{{"type":"PARCEL_SHIPPED","event_id":"e2",{t},"parcel_id":"P1","carrier":"dhl"}}"#),
        r#"{"type":"PARCEL_SHIPPED","event_id":"e3","order_number":"ORD-1","parcel_id":"P1","carrier":"dhl"}"#.to_string(),
        r#"{"type":"PARCEL_SHIPPED","event_id":"e4","order_number":"ORD-1","occurred_at":"yesterday","parcel_id":"P1","carrier":"dhl"}"#.to_string(),
        format!(r#"{{"type":"PARCEL_SHIPPED","event_id":"e5","order_number":"ORD-1",{t},"parcel_id":17,"carrier":"dhl"}}"#),
        format!(r#"{{"type":"PARCEL_SHIPPED","event_id":"e6","order_number":"ORD-1",{t},"parcel_id":"P1"}}"#),
        format!(r#"{{"type":"PARCEL_SHIPPED","event_id":"e7","order_number":"ORD-1",{t},"parcel_id":"P1","carrier":"dhl"}}"#),
        format!(r#"{{"type":"PARCEL_SHIPPED","event_id":"e7","order_number":"ORD-1",{t},"parcel_id":"P1","carrier":"dhl"}}"#),
    ];
    std::fs::write(
        work.data().join("events-0000.jsonl"),
        lines.join("\n") + "\n",
    )
    .unwrap();
    let summary = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();

    let text = std::fs::read_to_string(work.out().join("dead_letters.jsonl")).unwrap();
    let letters: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut by_line: Vec<(u64, String, Value, String)> = letters
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["name"].as_str().unwrap().to_owned(),
                l["key"].clone(),
                l["raw"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    by_line.sort_by_key(|l| l.0);
    let names: Vec<(u64, &str)> = by_line
        .iter()
        .map(|(n, name, _, _)| (*n, name.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![
            (2, "MALFORMED_JSON"),
            (3, "MALFORMED_JSON"),
            (4, "MISSING_TYPE"),
            (5, "UNKNOWN_TYPE"),
            (6, "MISSING_KEY"),
            (7, "MISSING_TIME"),
            (8, "BAD_TIME"),
            (9, "WRONG_FIELD_TYPE"),
            (10, "MISSING_FIELD"),
        ]
    );
    for (line, _, key, raw) in &by_line {
        assert_eq!(raw, &lines[*line as usize - 1], "the raw line is kept");
        if *line >= 7 {
            assert_eq!(key, "ORD-1", "the key is reported once it could be read");
        }
    }
    assert!(letters
        .iter()
        .all(|l| l["kind"] == "dead_letter" && l["source"] == "shop"));
    let wrong_type = letters
        .iter()
        .find(|l| l["name"] == "WRONG_FIELD_TYPE")
        .unwrap();
    assert!(
        wrong_type["reason"].as_str().unwrap().contains("parcel_id"),
        "{wrong_type}"
    );
    assert_eq!(wrong_type["event_time"], "2026-11-02T10:00:00.000Z");

    let c = &summary.counts;
    assert_eq!(
        (c.read, c.processed, c.dead_lettered, c.duplicates),
        (12, 2, 9, 1)
    );
    // The valid order shipped its one parcel.
    let events = std::fs::read_to_string(work.out().join("events.jsonl")).unwrap();
    assert_eq!(events.lines().count(), 1);
    assert!(events.contains("ALL_PARCELS_SHIPPED") && events.contains("ORD-1"));
}
