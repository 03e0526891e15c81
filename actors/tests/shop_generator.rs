//! The synthetic shop: determinism, arrival order, duplicates, noise, and the ground truth
//! recounted independently from the generated lines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use vigil_actors::shop::{generate, lines, GenerateSummary, ShopConfig};
use vigil_actors::time::{format_rfc3339, parse_rfc3339, Millis};

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const MAX_DELAY: Millis = 4 * MINUTE;

const REASONS: [&str; 8] = [
    "MALFORMED_JSON",
    "MISSING_TYPE",
    "UNKNOWN_TYPE",
    "MISSING_KEY",
    "MISSING_TIME",
    "BAD_TIME",
    "WRONG_FIELD_TYPE",
    "MISSING_FIELD",
];

struct Generated {
    cfg: ShopConfig,
    dir: PathBuf,
    summary: GenerateSummary,
    lines: Vec<String>,
    expected: Vec<String>,
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("shop_generator")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// One generated day shared by the tests (12 000 orders in files of 20 000 lines).
fn day() -> &'static Generated {
    static DAY: OnceLock<Generated> = OnceLock::new();
    DAY.get_or_init(|| {
        let cfg = ShopConfig {
            seed: 20_261_102,
            orders: 12_000,
            files_lines: 20_000,
            ..ShopConfig::default()
        };
        let dir = scratch("day");
        let mut calls = Vec::new();
        let summary = generate(&cfg, &dir, &mut |done, total| calls.push((done, total))).unwrap();
        assert_eq!(calls.last(), Some(&(cfg.orders, cfg.orders)));
        assert!(
            calls.windows(2).all(|w| w[0].0 <= w[1].0),
            "progress is monotone"
        );
        let lines = summary.files.iter().flat_map(|f| read_lines(f)).collect();
        let expected = read_lines(&dir.join("expected.jsonl"));
        Generated {
            cfg,
            dir,
            summary,
            lines,
            expected,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// An independent validator and reference model, written from the rules, not from the generator.

#[derive(Clone, Copy)]
enum FieldType {
    Str,
    Number,
    Integer,
}

fn declared(ty: &str) -> Option<(&'static str, Vec<(&'static str, FieldType)>)> {
    use FieldType::*;
    Some(match ty {
        "ORDER_CREATED" => (
            "order_number",
            vec![
                ("customer_id", Str),
                ("country", Str),
                ("amount", Number),
                ("payment_method", Str),
                ("parcels", Integer),
            ],
        ),
        "PAYMENT_AUTHORIZED" => (
            "order_number",
            vec![("amount", Number), ("payment_method", Str)],
        ),
        "PAYMENT_FAILED" => ("order_number", vec![("reason", Str)]),
        "PARCEL_SHIPPED" => ("order_number", vec![("parcel_id", Str), ("carrier", Str)]),
        "PARCEL_DELIVERED" => ("order_number", vec![("parcel_id", Str)]),
        "ORDER_CANCELLED" => ("order_number", vec![]),
        "CART_ITEM_ADDED" => ("customer_id", vec![("sku", Str), ("price", Number)]),
        _ => return None,
    })
}

fn accepts(t: FieldType, v: &Value) -> bool {
    match t {
        FieldType::Str => v.is_string(),
        FieldType::Number => v.is_number(),
        FieldType::Integer => v.is_i64() || v.is_u64(),
    }
}

/// A record as a comparable tuple: (kind, name, key, event_time).
type Record = (String, String, Option<String>, Option<String>);

enum Class {
    Valid {
        ty: String,
        key: String,
        time: Millis,
        obj: serde_json::Map<String, Value>,
    },
    Dead(Record),
}

fn dead(reason: &str, key: Option<&str>, time: Option<Millis>) -> Class {
    Class::Dead((
        "dead_letter".into(),
        reason.into(),
        key.map(str::to_string),
        time.map(format_rfc3339),
    ))
}

fn classify(line: &str) -> Class {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
        return dead("MALFORMED_JSON", None, None);
    };
    let Some(Value::String(ty)) = obj.get("type") else {
        return dead("MISSING_TYPE", None, None);
    };
    let Some((key_field, fields)) = declared(ty) else {
        return dead("UNKNOWN_TYPE", None, None);
    };
    let key = match obj.get(key_field) {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return dead("MISSING_KEY", None, None),
    };
    let time = match obj.get("occurred_at") {
        None => return dead("MISSING_TIME", Some(&key), None),
        Some(v) => match v.as_str().and_then(parse_rfc3339) {
            Some(t) => t,
            None => return dead("BAD_TIME", Some(&key), None),
        },
    };
    for (name, t) in fields {
        match obj.get(name) {
            None => return dead("MISSING_FIELD", Some(&key), Some(time)),
            Some(v) if !accepts(t, v) => return dead("WRONG_FIELD_TYPE", Some(&key), Some(time)),
            Some(_) => {}
        }
    }
    Class::Valid {
        ty: ty.clone(),
        key,
        time,
        obj,
    }
}

#[derive(Default)]
struct Order {
    created: Option<(Millis, u64)>,
    shipped: BTreeMap<String, Millis>,
    cancelled: Option<Millis>,
}

/// Recounts the ground truth from the lines alone; returns the records and W.
fn recount(lines: &[String]) -> (Vec<Record>, Millis) {
    let mut records = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut orders: BTreeMap<String, Order> = BTreeMap::new();
    let mut w = Millis::MIN;
    for line in lines {
        match classify(line) {
            Class::Dead(record) => records.push(record),
            Class::Valid { ty, key, time, obj } => {
                w = w.max(time);
                let id = obj["event_id"].as_str().unwrap().to_string();
                if !seen.insert(id) {
                    continue;
                }
                match ty.as_str() {
                    "ORDER_CREATED" => {
                        let n = obj["parcels"].as_u64().unwrap();
                        orders.entry(key).or_default().created = Some((time, n));
                    }
                    "PARCEL_SHIPPED" => {
                        let parcel = obj["parcel_id"].as_str().unwrap().to_string();
                        let o = orders.entry(key).or_default();
                        let at = o.shipped.entry(parcel).or_insert(time);
                        *at = (*at).min(time);
                    }
                    "ORDER_CANCELLED" => {
                        let o = orders.entry(key).or_default();
                        o.cancelled = Some(o.cancelled.map_or(time, |c| c.min(time)));
                    }
                    _ => {}
                }
            }
        }
    }
    for (key, o) in &orders {
        let Some((t0, n)) = o.created else { continue };
        let all_shipped = o.shipped.len() as u64 == n;
        let last = o.shipped.values().copied().max();
        if all_shipped && o.cancelled.is_none() {
            records.push((
                "event".into(),
                "ALL_PARCELS_SHIPPED".into(),
                Some(key.clone()),
                last.map(format_rfc3339),
            ));
        }
        let deadline = t0 + 24 * HOUR;
        let on_time = all_shipped && last.is_some_and(|t| t <= deadline);
        let cancelled = o.cancelled.is_some_and(|t| t <= deadline);
        if deadline <= w && !on_time && !cancelled {
            records.push((
                "alert".into(),
                "SLA_BREACHED".into(),
                Some(key.clone()),
                Some(format_rfc3339(deadline)),
            ));
        }
    }
    records.sort();
    (records, w)
}

fn parse_record(line: &str) -> Record {
    let v: Value = serde_json::from_str(line).unwrap();
    let obj = v.as_object().unwrap();
    for field in ["kind", "name", "key", "event_time"] {
        assert!(obj.contains_key(field), "{line} lacks {field}");
    }
    let opt = |f: &str| match &obj[f] {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => panic!("{f} is {other} in {line}"),
    };
    (
        obj["kind"].as_str().unwrap().to_string(),
        obj["name"].as_str().unwrap().to_string(),
        opt("key"),
        opt("event_time"),
    )
}

fn expected_records(g: &Generated) -> Vec<Record> {
    let mut records: Vec<Record> = g.expected.iter().map(|l| parse_record(l)).collect();
    records.sort();
    records
}

// ---------------------------------------------------------------------------------------------

fn dir_contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let cfg = ShopConfig {
        seed: 5,
        orders: 1_500,
        files_lines: 3_000,
        ..ShopConfig::default()
    };
    let (a, b, c) = (scratch("det-a"), scratch("det-b"), scratch("det-c"));
    let sa = generate(&cfg, &a, &mut |_, _| {}).unwrap();
    let sb = generate(&cfg, &b, &mut |_, _| {}).unwrap();
    assert_eq!(sa.lines, sb.lines);
    assert!(sa.files.len() > 1, "several files: {:?}", sa.files);
    let (ca, cb) = (dir_contents(&a), dir_contents(&b));
    assert_eq!(ca.keys().collect::<Vec<_>>(), cb.keys().collect::<Vec<_>>());
    for (name, bytes) in &ca {
        assert!(bytes == &cb[name], "{name} differs between two runs");
    }
    generate(&ShopConfig { seed: 6, ..cfg }, &c, &mut |_, _| {}).unwrap();
    let cc = dir_contents(&c);
    assert_ne!(ca["events-0000.jsonl"], cc["events-0000.jsonl"]);
    assert_ne!(ca["expected.jsonl"], cc["expected.jsonl"]);
}

#[test]
fn files_are_split_and_named_as_promised() {
    let g = day();
    let s = &g.summary;
    assert_eq!(s.lines as usize, g.lines.len());
    assert_eq!(s.lines, s.events + s.duplicates + s.malformed);
    assert_eq!(s.expected_records as usize, g.expected.len());
    let per_file = g.cfg.files_lines;
    assert_eq!(s.files.len() as u64, s.lines.div_ceil(per_file));
    for (i, f) in s.files.iter().enumerate() {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("events-{i:04}.jsonl"));
        assert_eq!(f.parent().unwrap(), g.dir);
        let n = read_lines(f).len() as u64;
        if i + 1 < s.files.len() {
            assert_eq!(n, per_file);
        }
    }
    // expected.jsonl sits beside the events but does not match `events-*.jsonl`.
    assert!(g.dir.join("expected.jsonl").is_file());
    let matching: Vec<_> = dir_contents(&g.dir)
        .into_keys()
        .filter(|n| n.starts_with("events-") && n.ends_with(".jsonl"))
        .collect();
    assert_eq!(matching.len(), s.files.len());
}

#[test]
fn the_lazy_lines_equal_the_files() {
    let g = day();
    let mut it = lines(&g.cfg);
    for (i, line) in g.lines.iter().enumerate() {
        assert_eq!(it.next().as_ref(), Some(line), "line {i}");
    }
    assert_eq!(it.next(), None);
}

#[test]
fn no_line_arrives_four_minutes_or_more_after_a_newer_one() {
    let g = day();
    let start = g.cfg.start;
    let mut newest = Millis::MIN;
    for (i, line) in g.lines.iter().enumerate() {
        let own = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("occurred_at")?.as_str().and_then(parse_rfc3339));
        if let Some(own) = own {
            assert!(newest < own + MAX_DELAY, "line {i} is late: {line}");
            assert!(own >= start && own <= start + 48 * HOUR, "line {i}: {line}");
        }
        if let Class::Valid { time, .. } = classify(line) {
            newest = newest.max(time);
        }
    }
    assert_eq!(newest, g.summary.final_watermark);
}

#[test]
fn duplicates_are_identical_lines() {
    let g = day();
    let mut by_id: HashMap<String, &String> = HashMap::new();
    let mut duplicates = 0;
    for line in &g.lines {
        let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(Value::String(id)) = obj.get("event_id") else {
            continue;
        };
        assert!(id.starts_with("evt-") && id.len() == 20, "{id}");
        if let Some(first) = by_id.insert(id.clone(), line) {
            assert_eq!(first, line, "same event id, different line");
            duplicates += 1;
        }
    }
    assert_eq!(duplicates, g.summary.duplicates);
    let share = duplicates as f64 / g.summary.events as f64;
    assert!((0.006..0.014).contains(&share), "duplicates: {share}");
}

#[test]
fn the_expected_records_are_unique() {
    let g = day();
    let records = expected_records(g);
    let unique: BTreeSet<_> = records.iter().filter(|r| r.0 != "dead_letter").collect();
    assert_eq!(
        unique.len(),
        records.iter().filter(|r| r.0 != "dead_letter").count()
    );
    // Dead letters are one per malformed line; they are unique too (fresh keys and times are
    // not guaranteed, so compare whole records only for those with a key and a time).
    let keyed: Vec<_> = records
        .iter()
        .filter(|r| r.0 == "dead_letter" && r.2.is_some() && r.3.is_some())
        .collect();
    let keyed_unique: BTreeSet<_> = keyed.iter().collect();
    assert_eq!(keyed.len(), keyed_unique.len());
}

#[test]
fn an_independent_recount_equals_the_expected_records() {
    let g = day();
    let (recounted, w) = recount(&g.lines);
    assert_eq!(w, g.summary.final_watermark);
    let expected = expected_records(g);
    if recounted != expected {
        let a: BTreeSet<_> = recounted.iter().collect();
        let b: BTreeSet<_> = expected.iter().collect();
        let missing: Vec<_> = a.difference(&b).take(5).collect();
        let extra: Vec<_> = b.difference(&a).take(5).collect();
        panic!("recount differs: not expected {missing:?}; not recounted {extra:?}");
    }
    let count = |name: &str| expected.iter().filter(|r| r.1 == name).count();
    assert!(count("ALL_PARCELS_SHIPPED") > 10_000);
    assert!(count("SLA_BREACHED") > 200, "{}", count("SLA_BREACHED"));
}

#[test]
fn the_noise_covers_every_reason_and_never_touches_a_real_order() {
    let g = day();
    let dead: Vec<Record> = expected_records(g)
        .into_iter()
        .filter(|r| r.0 == "dead_letter")
        .collect();
    assert_eq!(dead.len() as u64, g.summary.malformed);
    let share = dead.len() as f64 / g.summary.lines as f64;
    assert!((0.002..0.004).contains(&share), "noise share {share}");
    let reasons: BTreeSet<&str> = dead.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(reasons, REASONS.into_iter().collect::<BTreeSet<_>>());
    for r in &dead {
        if let Some(key) = &r.2 {
            assert!(key.starts_with("ORD-9") || key.starts_with("C-9"), "{key}");
        }
    }
    // No noise line carries the event id of a real event.
    let mut real_ids = std::collections::HashSet::new();
    let mut noise_ids = Vec::new();
    for line in &g.lines {
        let id = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| Some(v.get("event_id")?.as_str()?.to_string()));
        match (classify(line), id) {
            (Class::Valid { .. }, Some(id)) => {
                real_ids.insert(id);
            }
            (Class::Dead(_), Some(id)) => noise_ids.push(id),
            _ => {}
        }
    }
    assert!(noise_ids.iter().all(|id| !real_ids.contains(id)));
}

#[test]
fn the_day_looks_like_a_fashion_shop() {
    let g = day();
    let mut created = 0u64;
    let mut by_hour = [0u64; 24];
    let mut customers = BTreeSet::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut cancel_reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    let mut order_times = Vec::new();
    for line in &g.lines {
        let Class::Valid { ty, key, time, obj } = classify(line) else {
            continue;
        };
        if !seen.insert(obj["event_id"].as_str().unwrap().to_string()) {
            continue;
        }
        *counts.entry(ty.clone()).or_default() += 1;
        match ty.as_str() {
            "ORDER_CREATED" => {
                created += 1;
                order_times.push(time);
                by_hour[((time - g.cfg.start) / HOUR) as usize] += 1;
                customers.insert(obj["customer_id"].as_str().unwrap().to_string());
                assert!(key.starts_with("ORD-") && key.len() == 14);
                let parcels = obj["parcels"].as_u64().unwrap();
                assert!((1..=4).contains(&parcels));
                let items = obj["items"].as_array().unwrap();
                assert!(items.len() as u64 >= parcels);
                let total: f64 = items
                    .iter()
                    .map(|i| i["price"].as_f64().unwrap() * i["quantity"].as_f64().unwrap())
                    .sum();
                let amount = obj["amount"].as_f64().unwrap();
                assert!(amount >= total - 0.001 && amount <= total + 4.951, "{line}");
                assert!(obj["shipping_address"]["city"].is_string());
                assert_eq!(obj["currency"], "EUR");
            }
            "ORDER_CANCELLED" => {
                *cancel_reasons
                    .entry(obj["reason"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            _ => {}
        }
    }
    assert_eq!(created, g.cfg.orders);
    assert!(order_times.iter().all(|&t| t < g.cfg.start + 24 * HOUR));
    assert!(by_hour[20] > 5 * by_hour[3], "evening peak: {by_hour:?}");
    assert!((customers.len() as u64) < created, "customers repeat");
    let share = |ty: &str| counts.get(ty).copied().unwrap_or(0) as f64 / created as f64;
    assert!((0.03..0.05).contains(&share("PAYMENT_FAILED")));
    assert!((0.02..0.045).contains(&share("ORDER_CANCELLED")));
    assert!(share("CART_ITEM_ADDED") > 1.5);
    assert!(share("PARCEL_SHIPPED") > 1.3);
    assert!(share("PARCEL_DELIVERED") > 0.03);
    assert!(cancel_reasons.contains_key("payment_failed"));
    // Some SLA deadlines lie beyond the last event, so those orders cannot alert.
    let last_deadline = order_times.iter().max().unwrap() + 24 * HOUR;
    assert!(last_deadline > g.summary.final_watermark);
}

#[test]
fn no_orders_make_an_empty_day() {
    let dir = scratch("empty");
    let cfg = ShopConfig {
        orders: 0,
        ..ShopConfig::default()
    };
    let s = generate(&cfg, &dir, &mut |_, _| {}).unwrap();
    assert_eq!((s.lines, s.expected_records), (0, 0));
    assert_eq!(s.files, vec![dir.join("events-0000.jsonl")]);
    assert!(s.files[0].is_file() && dir.join("expected.jsonl").is_file());
    assert_eq!(lines(&cfg).count(), 0);
}

#[test]
fn the_recount_holds_for_other_seeds_and_sizes() {
    for (seed, orders) in [(1, 1), (2, 37), (3, 2_500), (u64::MAX, 4_000)] {
        let cfg = ShopConfig {
            seed,
            orders,
            files_lines: 0,
            ..ShopConfig::default()
        };
        let dir = scratch(&format!("seed-{seed}"));
        let summary = generate(&cfg, &dir, &mut |_, _| {}).unwrap();
        assert_eq!(summary.files.len(), 1);
        let lines = read_lines(&summary.files[0]);
        let (recounted, w) = recount(&lines);
        assert_eq!(w, summary.final_watermark, "seed {seed}");
        let mut expected: Vec<Record> = read_lines(&dir.join("expected.jsonl"))
            .iter()
            .map(|l| parse_record(l))
            .collect();
        expected.sort();
        assert_eq!(recounted, expected, "seed {seed}, {orders} orders");
    }
}
