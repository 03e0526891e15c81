//! The `process` template's handler: the example's `order` process on one real order, created
//! then two parcels shipped then both delivered, through the same `Template` trait a user
//! implements (no runtime around it: no storage, dedup or retries).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use vigil_actors::record::Record;
use vigil_actors::template::{Context, Template, Timers};
use vigil_actors::templates::process::ProcessState;
use vigil_benches::{example_spec, order_template, run_events, shop_lines, two_parcel_order};

const STEPS: [&str; 5] = [
    "created",
    "shipped_1",
    "shipped_2",
    "delivered_1",
    "delivered_2",
];

fn bench_process(c: &mut Criterion) {
    let spec = example_spec();
    let template = order_template(&spec);
    let order = two_parcel_order(&spec, &shop_lines(20_000));
    assert_eq!(order.len(), STEPS.len());

    let mut group = c.benchmark_group("process");
    // The whole life of the order, from a new instance; timers carried from event to event.
    group.throughput(Throughput::Elements(order.len() as u64));
    group.bench_function("order_sequence", |b| {
        let mut outputs: Vec<Record> = Vec::new();
        let mut timers = Timers::new();
        b.iter(|| {
            let mut state = ProcessState::default();
            outputs.clear();
            timers.clear();
            for event in &order {
                let mut cx = Context::for_test(&event.key, event.time, &mut outputs, &mut timers);
                template
                    .on_event(&mut state, black_box(event), &mut cx)
                    .unwrap();
            }
            assert!(state.ended);
            state
        })
    });

    // Each step alone, from the state the previous events left.
    group.throughput(Throughput::Elements(1));
    for (i, step) in STEPS.iter().enumerate() {
        let (before, _, timers_before) = run_events(&template, &order[..i]);
        let event = &order[i];
        group.bench_function(BenchmarkId::new("step", step), |b| {
            b.iter_batched(
                || (before.clone(), timers_before.clone(), Vec::<Record>::new()),
                |(mut state, mut timers, mut outputs)| {
                    let mut cx =
                        Context::for_test(&event.key, event.time, &mut outputs, &mut timers);
                    template
                        .on_event(&mut state, black_box(event), &mut cx)
                        .unwrap();
                    (state, timers, outputs)
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_process
}
criterion_main!(benches);
