//! `examples/shop-day` (order fulfilment, fraud, customer contact and order velocity on one
//! generated day) emits exactly the generator's `expected-shop-day.jsonl`, and the generator
//! writes the same bytes for the same seed.

mod common;

use std::collections::BTreeMap;

use common::{identities, jsonl_files, Identity, Workdir};
use vigil_actors::job::{self, RunOptions};
use vigil_actors::shop::SHOP_DAY_FILE;

const SHOP_DAY: &str = include_str!("../examples/shop-day/topology.toml");

/// Records per (kind, name).
fn by_name(records: &BTreeMap<Identity, usize>) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for ((kind, name, _, _), n) in records {
        *out.entry((kind.clone(), name.clone())).or_insert(0) += n;
    }
    out
}

fn assert_exactly(expected: &BTreeMap<Identity, usize>, actual: &BTreeMap<Identity, usize>) {
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, n)| actual.get(*k) != Some(n))
        .map(|(k, n)| (k, *n, actual.get(k).copied().unwrap_or(0)))
        .take(10)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(k, _)| !expected.contains_key(*k))
        .take(10)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "outputs differ from the ground truth (record, expected, actual):\n missing or miscounted {missing:#?}\n extra {extra:#?}\n expected {:?}\n actual {:?}",
        by_name(expected),
        by_name(actual)
    );
}

#[test]
fn shop_day_topology_emits_exactly_its_ground_truth() {
    let work = Workdir::new();
    let generated = work.generate(17, 3_000);
    let expected = identities(&[work.data().join(SHOP_DAY_FILE)]);
    assert_eq!(
        expected.values().sum::<usize>() as u64,
        generated.shop_day_records
    );

    // The ground truth has every kind of finding, so the comparison below tests each rule.
    let names = by_name(&expected);
    for (kind, name) in [
        ("event", "ALL_PARCELS_SHIPPED"),
        ("alert", "SLA_BREACHED"),
        ("alert", "FRAUD_SUSPECTED"),
        ("alert", "ADDRESS_SHARED"),
        ("event", "CART_ABANDONED"),
        ("event", "CONTACT_CUSTOMER"),
        ("window", "ORDER_VELOCITY"),
    ] {
        let n = names
            .get(&(kind.to_owned(), name.to_owned()))
            .copied()
            .unwrap_or(0);
        assert!(n > 0, "no {kind} {name} in the ground truth: {names:?}");
    }
    // The order-fulfilment ground truth (and the dead letters) are part of it, unchanged.
    let order_fulfilment = identities(&[work.data().join("expected.jsonl")]);
    for (record, n) in &order_fulfilment {
        assert_eq!(expected.get(record), Some(n), "{record:?}");
    }

    let summary = job::run(work.compile(SHOP_DAY), RunOptions::default()).unwrap();
    assert!(summary.finished);
    assert_eq!(summary.counts.dead_lettered, generated.malformed);
    let actual = identities(&jsonl_files(&work.out()));
    assert_exactly(&expected, &actual);
}

#[test]
fn shop_day_results_do_not_depend_on_the_number_of_shards() {
    let work = Workdir::new();
    work.generate(23, 1_500);
    let one_shard = SHOP_DAY.replace("shards = 8", "shards = 1\nworkers = 1");
    assert_ne!(one_shard, SHOP_DAY);
    job::run(work.compile(&one_shard), RunOptions::default()).unwrap();
    let expected = identities(&[work.data().join(SHOP_DAY_FILE)]);
    let actual = identities(&jsonl_files(&work.out()));
    assert_exactly(&expected, &actual);
}

#[test]
fn the_generator_writes_the_same_bytes_for_the_same_seed() {
    let read_all = |work: &Workdir| -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(work.data()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(&path).unwrap());
        }
        files
    };
    let (a, b, c) = (Workdir::new(), Workdir::new(), Workdir::new());
    a.generate(9, 800);
    b.generate(9, 800);
    c.generate(10, 800);
    let (a, b, c) = (read_all(&a), read_all(&b), read_all(&c));
    assert!(a.contains_key("events-0000.jsonl") && a.contains_key(SHOP_DAY_FILE));
    assert!(a.contains_key("expected.jsonl"));
    assert_eq!(a, b, "same seed and orders, same bytes");
    assert_ne!(a["events-0000.jsonl"], c["events-0000.jsonl"]);
}
