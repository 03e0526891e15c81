//! The `pattern` template's handler, through the `Template` trait (no runtime around it):
//! the per-event cost of a fraud burst (CEL condition over the earlier failures), of an order
//! paid in full (CEL condition on a field of the earlier order), of an absence pattern's event
//! (the cart abandoned trigger), and of an event no run takes.

use std::hint::black_box;
use std::sync::Arc;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use serde_json::json;
use vigil_actors::event::Event;
use vigil_actors::record::{Record, RecordKind};
use vigil_actors::spec::{
    Contiguity, Occurs, PatternSpec, PatternStepSpec, PatternTemplateSpec, SkipStrategy,
};
use vigil_actors::template::{Context, Template, Timers};
use vigil_actors::templates::contact::CartAbandoned;
use vigil_actors::templates::fraud::FailedPayments;
use vigil_actors::templates::pattern::{PatternState, PatternTemplate};
use vigil_actors::time::Millis;

fn event(seq: u64, ty: &str, time: Millis, method: &str) -> Event {
    Event {
        seq,
        type_index: 0,
        type_name: Arc::from(ty),
        key: Arc::from("ORD-1"),
        time,
        id: None,
        payload: json!({ "customer_id": "C-1", "payment_method": method, "amount": 42.0,
                         "reason": "DECLINED", "order_number": "ORD-1" })
        .into(),
    }
}

fn template(spec: PatternSpec) -> PatternTemplate {
    PatternTemplate::new(
        "bench",
        PatternTemplateSpec {
            template: "pattern".into(),
            patterns: vec![spec],
        },
    )
}

/// Benchmarks feeding `events` to a fresh state of `pattern` for `key`, which must emit exactly
/// one record.
fn bench_one_match(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    pattern: &PatternTemplate,
    key: &str,
    events: &[Event],
) {
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function(name, |b| {
        let mut outputs: Vec<Record> = Vec::new();
        let mut timers = Timers::new();
        b.iter(|| {
            let mut state = PatternState::default();
            outputs.clear();
            timers.clear();
            for e in events {
                let mut cx = Context::for_test(key, e.time, &mut outputs, &mut timers);
                pattern.on_event(&mut state, black_box(e), &mut cx).unwrap();
            }
            assert_eq!(outputs.len(), 1);
            state
        })
    });
}

fn bench_pattern(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern");

    // Three failures then an authorisation with another method: FRAUD_SUSPECTED.
    let fraud = template(FailedPayments::default().pattern());
    let burst = [
        event(1, "PAYMENT_FAILED", 0, "card"),
        event(2, "PAYMENT_FAILED", 1_000, "card"),
        event(3, "PAYMENT_FAILED", 2_000, "card"),
        event(4, "PAYMENT_AUTHORIZED", 3_000, "paypal"),
    ];
    bench_one_match(&mut group, "fraud_burst", &fraud, "C-1", &burst);

    // An order, then its payment for at least the order's amount: ORDER_PAID.
    let step = |name: &str, on: &str, condition: Option<&str>| PatternStepSpec {
        name: name.into(),
        on: on.into(),
        condition: condition.map(Into::into),
        contiguity: Contiguity::FollowedBy,
        occurs: Occurs::Once,
    };
    let paid = template(PatternSpec {
        name: "ORDER_PAID".into(),
        kind: RecordKind::Pattern,
        key: None,
        within: 3_600_000,
        skip: SkipStrategy::SkipPastLastEvent,
        timeout: None,
        steps: vec![
            step("created", "ORDER_CREATED", None),
            step(
                "paid",
                "PAYMENT_AUTHORIZED",
                Some("event.amount >= created.amount"),
            ),
        ],
    });
    let order = [
        event(1, "ORDER_CREATED", 0, "card"),
        event(2, "PAYMENT_AUTHORIZED", 1_000, "card"),
    ];
    bench_one_match(&mut group, "earlier_step_field", &paid, "ORD-1", &order);

    // An item added: starts an absence run and sets its timer.
    let cart = template(CartAbandoned::default().pattern());
    let added = event(1, "CART_ITEM_ADDED", 0, "card");
    group.throughput(Throughput::Elements(1));
    group.bench_function("absence_start", |b| {
        let mut outputs: Vec<Record> = Vec::new();
        let mut timers = Timers::new();
        b.iter(|| {
            let mut state = PatternState::default();
            timers.clear();
            let mut cx = Context::for_test("C-1", 0, &mut outputs, &mut timers);
            cart.on_event(&mut state, black_box(&added), &mut cx)
                .unwrap();
            state
        })
    });

    // An event that neither starts nor advances a run.
    let unrelated = event(1, "PAYMENT_AUTHORIZED", 0, "card");
    group.bench_function("no_run", |b| {
        let mut outputs: Vec<Record> = Vec::new();
        let mut timers = Timers::new();
        b.iter(|| {
            let mut state = PatternState::default();
            let mut cx = Context::for_test("C-1", 0, &mut outputs, &mut timers);
            fraud
                .on_event(&mut state, black_box(&unrelated), &mut cx)
                .unwrap();
            state
        })
    });
    group.finish();
}

criterion_group!(benches, bench_pattern);
criterion_main!(benches);
