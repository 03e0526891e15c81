//! The `window` template's per-event cost: a 48 h window sliding every minute against a 1 minute
//! tumbling window, on the same events (8 groups, count + sum + distinct_count), through the
//! same `Template` trait the runtime calls.
//!
//! - `window/on_event/*`: one event into a group whose state already holds 48 h of panes (the
//!   steady state of the sliding window), on the state itself, as the runtime runs the window's
//!   handlers (`Template::handles_in_place`). This is the per-event cost that counts. Target:
//!   sliding within 1.5x of tumbling, because an event updates exactly one pane either way;
//!   the bench prints the ratio, through `DynTemplate` as the runtime calls it.
//! - `window/close/*`: emitting one window result, which combines `size / pane` panes (2880
//!   for 48 h / 1 min, 1 for tumbling): work per emitted window, not per event.
//! - `window/clone_state/*`: cloning one group's state, which the runtime does before every
//!   handler call of a careful template (so that a failed attempt leaves nothing behind).
//! - `window/on_event_cloned/*`: `on_event` as the runtime runs it once the window has failed
//!   in place in a shard and is careful there (`Shard::run_handler`): through `DynTemplate`,
//!   `clone_state` then the handler on the clone, which replaces the state. The bench prints
//!   its ratio too.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use vigil_actors::event::Event;
use vigil_actors::record::Record;
use vigil_actors::spec::{
    AggregateFn, AggregateSpec, FieldPath, GroupBy, WindowEmit, WindowTemplateSpec,
};
use vigil_actors::template::{AnyState, Context, Template, Timers};
use vigil_actors::templates::window::{WindowState, WindowTemplate, TIMER};
use vigil_actors::time::Millis;

const MINUTE: Millis = 60_000;
const HOUR: Millis = 60 * MINUTE;
const GROUPS: usize = 8;
/// One event every 2.5 s over all groups: 3 events per group per minute.
const STEP: Millis = 2_500;
const START: Millis = 1_790_000_000_000;

fn template(size: Millis, slide: Millis) -> WindowTemplate {
    let agg = |name: &str, function, field: Option<&str>| AggregateSpec {
        name: name.into(),
        function,
        field: field.map(FieldPath::parse),
    };
    WindowTemplate::new(
        "velocity",
        WindowTemplateSpec {
            name: "ORDER_VELOCITY".into(),
            events: vec!["ORDER_CREATED".into()],
            group_by: vec![GroupBy::Field(FieldPath::parse("country"))],
            size,
            slide,
            allowed_lateness: 0,
            emit: WindowEmit::OnClose,
            aggregates: vec![
                agg("orders", AggregateFn::Count, None),
                agg("revenue", AggregateFn::Sum, Some("amount")),
                agg("customers", AggregateFn::DistinctCount, Some("customer_id")),
            ],
        },
    )
}

/// The i-th event: groups round robin, amounts and customers from a small LCG.
fn event(i: u64) -> Event {
    let mix = i
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    Event {
        seq: i,
        type_index: 0,
        type_name: Arc::from("ORDER_CREATED"),
        key: Arc::from(format!("ORD-{i}").as_str()),
        time: START + i as Millis * STEP,
        id: None,
        payload: serde_json::json!({
            "country": format!("C{}", i as usize % GROUPS),
            "customer_id": format!("CUS-{}", (mix >> 33) % 5_000),
            "amount": ((mix >> 20) % 20_000) as f64 / 100.0,
        })
        .into(),
    }
}

/// Every group's state after `events` events, in the steady state: due timers fired (windows
/// emitted, expired panes dropped) with the watermark at each event's time.
fn steady(template: &WindowTemplate, events: u64) -> Vec<(WindowState, Timers)> {
    let mut groups: Vec<_> = (0..GROUPS)
        .map(|_| (WindowState::default(), Timers::new()))
        .collect();
    let mut outputs: Vec<Record> = Vec::new();
    for i in 0..events {
        let e = event(i);
        let (state, timers) = &mut groups[i as usize % GROUPS];
        while let Some(at) = timers.first().map(|(_, at)| *at).filter(|&at| at <= e.time) {
            timers.clear();
            let mut cx = Context::for_test("g", at, &mut outputs, timers).with_watermark(e.time);
            template.on_timer(state, TIMER, &mut cx).unwrap();
            outputs.clear();
        }
        let mut cx = Context::for_test("g", e.time, &mut outputs, timers).with_watermark(e.time);
        template.on_event(state, &e, &mut cx).unwrap();
    }
    groups
}

/// Drops the oldest panes until `panes` are left, as expiry would.
fn trim(state: &mut WindowState, panes: usize) {
    while state.panes.len() > panes {
        let first = state.panes.first().expect("not empty");
        state.panes.remove(first);
    }
}

/// One event as `Shard::run_handler` delivers it: the timers and the state are cloned, the
/// handler runs on the clones, and they replace the originals.
fn run_cloned(
    template: &dyn vigil_actors::template::DynTemplate,
    (state, timers): &mut (AnyState, Timers),
    event: &Event,
    outputs: &mut Vec<Record>,
) {
    let mut attempt_timers = timers.clone();
    let mut attempt = template.clone_state(state);
    let mut cx = Context::for_test("g", event.time, outputs, &mut attempt_timers);
    template.on_event(&mut attempt, event, &mut cx).unwrap();
    *state = attempt;
    *timers = attempt_timers;
}

fn boxed(states: &[(WindowState, Timers)]) -> Vec<(AnyState, Timers)> {
    states
        .iter()
        .map(|(s, t)| (Box::new(s.clone()) as AnyState, t.clone()))
        .collect()
}

fn trim_boxed(states: &mut [(AnyState, Timers)], steady_panes: &[usize]) {
    for ((state, _), &panes) in states.iter_mut().zip(steady_panes) {
        trim(
            state.downcast_mut::<WindowState>().expect("window state"),
            panes,
        );
    }
}

/// Moves the events of `pool[at..at + len]` on by `round` days.
fn shift(pool: &mut [Event], base: &[Millis], at: usize, len: usize, round: Millis) {
    for (e, &t) in pool[at..at + len].iter_mut().zip(&base[at..]) {
        e.time = t + round * 24 * HOUR;
    }
}

/// One event as `Shard::run_handler` delivers it to a template that handles in place: the
/// handler runs on the state and timers themselves.
fn run_in_place(
    template: &dyn vigil_actors::template::DynTemplate,
    (state, timers): &mut (AnyState, Timers),
    event: &Event,
    outputs: &mut Vec<Record>,
) {
    let mut cx = Context::for_test("g", event.time, outputs, timers);
    template.on_event(state, event, &mut cx).unwrap();
}

/// How the runtime delivers an event: [`run_in_place`] or [`run_cloned`].
type Run =
    fn(&dyn vigil_actors::template::DynTemplate, &mut (AnyState, Timers), &Event, &mut Vec<Record>);

/// Nanoseconds per event of `run` over the first 4 hours of the pool (5760 events), best of
/// 3 passes after a warm-up pass, with expired panes trimmed (untimed) every 10 minutes.
fn ns_per_event(
    template: &WindowTemplate,
    states: &[(WindowState, Timers)],
    pool: &mut [Event],
    base: &[Millis],
    run: Run,
) -> f64 {
    const CHUNK: usize = 240;
    let steady_panes: Vec<usize> = states.iter().map(|(s, _)| s.panes.len()).collect();
    let mut states = boxed(states);
    let mut outputs: Vec<Record> = Vec::new();
    let mut best = f64::INFINITY;
    for round in 0..=3 {
        let mut elapsed = Duration::ZERO;
        let mut at = 0;
        while at + CHUNK <= pool.len().min(24 * CHUNK) {
            shift(pool, base, at, CHUNK, round);
            let started = Instant::now();
            for e in &pool[at..at + CHUNK] {
                let group = &mut states[e.seq as usize % GROUPS];
                run(template, group, black_box(e), &mut outputs);
            }
            elapsed += started.elapsed();
            outputs.clear();
            trim_boxed(&mut states, &steady_panes);
            at += CHUNK;
        }
        if round > 0 {
            best = best.min(elapsed.as_nanos() as f64 / at as f64);
        }
    }
    best
}

fn bench_window(c: &mut Criterion) {
    let configs = [
        ("tumbling_1m", template(MINUTE, MINUTE)),
        ("sliding_48h_by_1m", template(48 * HOUR, MINUTE)),
    ];
    let warm = (48 * HOUR / STEP) as u64;
    // A day of further events, reused with their times moved on by a day at each round.
    let day = (24 * HOUR / STEP) as u64;
    let mut pool: Vec<Event> = (warm..warm + day).map(event).collect();
    let base: Vec<Millis> = pool.iter().map(|e| e.time).collect();
    const CHUNK: usize = 240; // 10 minutes of events

    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(CHUNK as u64));
    for (name, template) in &configs {
        let states = steady(template, warm);
        let steady_panes: Vec<usize> = states.iter().map(|(s, _)| s.panes.len()).collect();
        group.bench_function(BenchmarkId::new("on_event", name), |b| {
            b.iter_custom(|iters| {
                let mut states = states.clone();
                let mut outputs: Vec<Record> = Vec::new();
                let mut elapsed = Duration::ZERO;
                let mut at = 0usize;
                let mut round: Millis = 0;
                for _ in 0..iters {
                    if at + CHUNK > pool.len() {
                        at = 0;
                        round += 1;
                    }
                    let chunk = &mut pool[at..at + CHUNK];
                    for (e, &t) in chunk.iter_mut().zip(&base[at..]) {
                        e.time = t + round * 24 * HOUR;
                    }
                    at += CHUNK;
                    let started = Instant::now();
                    for e in chunk.iter() {
                        let (state, timers) = &mut states[e.seq as usize % GROUPS];
                        let mut cx = Context::for_test("g", e.time, &mut outputs, timers);
                        template.on_event(state, black_box(e), &mut cx).unwrap();
                    }
                    elapsed += started.elapsed();
                    // Not timed: keep each state at its steady size, as expiry would (the
                    // emission work is measured by `close`).
                    outputs.clear();
                    for ((state, _), &panes) in states.iter_mut().zip(&steady_panes) {
                        trim(state, panes);
                    }
                }
                elapsed
            })
        });
    }
    for (name, template) in &configs {
        let states = steady(template, warm);
        let steady_panes: Vec<usize> = states.iter().map(|(s, _)| s.panes.len()).collect();
        group.bench_function(BenchmarkId::new("on_event_cloned", name), |b| {
            b.iter_custom(|iters| {
                let mut states = boxed(&states);
                let mut outputs: Vec<Record> = Vec::new();
                let mut elapsed = Duration::ZERO;
                let mut at = 0usize;
                let mut round: Millis = 0;
                for _ in 0..iters {
                    if at + CHUNK > pool.len() {
                        at = 0;
                        round += 1;
                    }
                    shift(&mut pool, &base, at, CHUNK, round);
                    let started = Instant::now();
                    for e in &pool[at..at + CHUNK] {
                        let group = &mut states[e.seq as usize % GROUPS];
                        run_cloned(template, group, black_box(e), &mut outputs);
                    }
                    elapsed += started.elapsed();
                    at += CHUNK;
                    outputs.clear();
                    trim_boxed(&mut states, &steady_panes);
                }
                elapsed
            })
        });
    }
    group.throughput(Throughput::Elements(1));
    for (name, template) in &configs {
        let (state, timers) = steady(template, warm).swap_remove(0);
        // The pending timer closes the next window: one result of `size / pane` panes.
        let end = timers[0].1;
        group.bench_function(BenchmarkId::new("close", name), |b| {
            b.iter_batched(
                || (state.clone(), timers.clone(), Vec::<Record>::new()),
                |(mut state, mut timers, mut outputs)| {
                    timers.clear();
                    let mut cx = Context::for_test("g", end, &mut outputs, &mut timers);
                    template.on_timer(&mut state, TIMER, &mut cx).unwrap();
                    assert_eq!(outputs.len(), 1);
                    (state, timers, outputs)
                },
                BatchSize::LargeInput,
            )
        });
        group.bench_function(BenchmarkId::new("clone_state", name), |b| {
            b.iter(|| black_box(&state).clone())
        });
    }
    group.finish();

    // The number that matters, printed outright: per-event cost as the runtime delivers an
    // event (in place), sliding over tumbling; and the same on the careful path.
    for (name, run, target) in [
        ("on_event", run_in_place as Run, " (target <= 1.5)"),
        (
            "on_event_cloned",
            run_cloned as Run,
            " (the careful path, after a failure)",
        ),
    ] {
        let ns: Vec<f64> = configs
            .iter()
            .map(|(_, template)| {
                let states = steady(template, warm);
                ns_per_event(template, &states, &mut pool, &base, run)
            })
            .collect();
        println!(
            "window/{name}: tumbling_1m {:.0} ns/event, sliding_48h_by_1m {:.0} ns/event, \
             ratio {:.2}{target}",
            ns[0],
            ns[1],
            ns[1] / ns[0]
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = bench_window
}
criterion_main!(benches);
