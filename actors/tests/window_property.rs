//! Property: the pane-based `window` template emits, for every group and window, exactly what a
//! naive recomputation gets by scanning all events in `[end - size, end)`.
//!
//! Random events (times out of order, groups by event type and country, amounts, customers) go
//! through the template's trait with the runtime's rules simulated: the watermark before each
//! event is the largest time read so far minus the out-of-orderness bound; due timers fire, in
//! time order, before the event; an instance whose `is_complete` is true is deleted. At the end
//! the watermark passes everything. The reference knows nothing of panes: for each event it
//! decides from the watermark whether it is late (all its windows expired) and which windows it
//! still counts in, and for each window it recomputes every emission from the events alone.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use vigil_actors::event::Event;
use vigil_actors::record::{Record, RecordKind};
use vigil_actors::spec::{
    AggregateFn, AggregateSpec, FieldPath, GroupBy, WindowEmit, WindowTemplateSpec,
};
use vigil_actors::template::{Context, Template, Timers};
use vigil_actors::templates::window::{WindowState, WindowTemplate, LATE_EVENT};
use vigil_actors::time::{Millis, MIN_TIME};

const MIN: Millis = 60_000;
/// Not a multiple of anything in particular: windows are aligned to the epoch, not the data.
const BASE: Millis = 1_700_000_123_456;
const TYPES: [&str; 2] = ["ORDER_CREATED", "ORDER_UPDATED"];
const COUNTRIES: [&str; 3] = ["DE", "FR", "IT"];

#[derive(Debug, Clone)]
struct Input {
    time: Millis,
    ty: usize,
    country: usize,
    amount: Option<i64>,
    customer: usize,
}

impl Input {
    fn key(&self) -> String {
        format!("{}|{}", TYPES[self.ty], COUNTRIES[self.country])
    }
    fn event(&self, seq: u64) -> Event {
        let mut payload = serde_json::json!({
            "country": COUNTRIES[self.country],
            "customer_id": format!("C{}", self.customer),
        });
        if let Some(amount) = self.amount {
            payload["amount"] = Value::from(amount);
        }
        Event {
            seq,
            type_index: self.ty as u16,
            type_name: Arc::from(TYPES[self.ty]),
            key: Arc::from(format!("O-{seq}").as_str()),
            time: self.time,
            id: Some(format!("E-{seq}").into()),
            payload: payload.into(),
        }
    }
}

fn spec(size: Millis, slide: Millis, lateness: Millis) -> WindowTemplateSpec {
    let agg = |name: &str, function, field: Option<&str>| AggregateSpec {
        name: name.into(),
        function,
        field: field.map(FieldPath::parse),
    };
    WindowTemplateSpec {
        name: "VELOCITY".into(),
        events: TYPES.iter().map(|t| t.to_string()).collect(),
        group_by: vec![
            GroupBy::EventType,
            GroupBy::Field(FieldPath::parse("country")),
        ],
        size,
        slide,
        allowed_lateness: lateness,
        emit: WindowEmit::OnClose,
        aggregates: vec![
            agg("orders", AggregateFn::Count, None),
            agg("revenue", AggregateFn::Sum, Some("amount")),
            agg("smallest", AggregateFn::Min, Some("amount")),
            agg("largest", AggregateFn::Max, Some("amount")),
            agg("average", AggregateFn::Avg, Some("amount")),
            agg("customers", AggregateFn::DistinctCount, Some("customer_id")),
        ],
    }
}

/// What one emission of a window says, comparable between the template and the reference.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    firing: String,
    start: String,
    count: u64,
    orders: u64,
    revenue: f64,
    smallest: Option<f64>,
    largest: Option<f64>,
    average: Option<f64>,
    customers: u64,
}

fn detail(record: &Record, field: &str) -> Value {
    record
        .details()
        .into_iter()
        .find(|(k, _)| k == field)
        .unwrap_or_else(|| panic!("no `{field}` in {record:?}"))
        .1
}

fn snapshot_of(record: &Record) -> Snapshot {
    Snapshot {
        firing: detail(record, "firing").as_str().unwrap().to_owned(),
        start: detail(record, "window_start").as_str().unwrap().to_owned(),
        count: detail(record, "count").as_u64().unwrap(),
        orders: detail(record, "orders").as_u64().unwrap(),
        revenue: detail(record, "revenue").as_f64().unwrap(),
        smallest: detail(record, "smallest").as_f64(),
        largest: detail(record, "largest").as_f64(),
        average: detail(record, "average").as_f64(),
        customers: detail(record, "customers").as_u64().unwrap(),
    }
}

/// The reference aggregate of a list of events, computed directly.
fn naive(firing: &str, start: Millis, events: &[&Input]) -> Snapshot {
    let amounts: Vec<i64> = events.iter().filter_map(|e| e.amount).collect();
    let customers: HashSet<usize> = events.iter().map(|e| e.customer).collect();
    let sum: i64 = amounts.iter().sum();
    Snapshot {
        firing: firing.into(),
        start: vigil_actors::time::format_rfc3339(start),
        count: events.len() as u64,
        orders: events.len() as u64,
        revenue: sum as f64,
        smallest: amounts.iter().min().map(|&m| m as f64),
        largest: amounts.iter().max().map(|&m| m as f64),
        average: (!amounts.is_empty()).then(|| as_read_back(sum as f64 / amounts.len() as f64)),
        customers: customers.len() as u64,
    }
}

/// `x` written as JSON and read back, as a record's details are: serde_json's reader (without
/// its `float_roundtrip` feature) may land one unit in the last place away from what was
/// written, e.g. 9.777777777777779 reads as 9.77777777777778.
fn as_read_back(x: f64) -> f64 {
    serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap()
}

struct Instance {
    state: WindowState,
    timers: Timers,
}

/// Runs the template as the runtime would; returns (key, record) in emission order and the
/// largest number of panes an instance held.
fn run_template(
    template: &WindowTemplate,
    inputs: &[Input],
    out_of_orderness: Millis,
    pane_bound: usize,
) -> Vec<(String, Record)> {
    let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
    let mut out: Vec<(String, Record)> = Vec::new();
    let fire_due = |instances: &mut BTreeMap<String, Instance>,
                    out: &mut Vec<(String, Record)>,
                    watermark: Millis| loop {
        let due = instances
            .iter()
            .flat_map(|(k, i)| {
                i.timers
                    .iter()
                    .map(move |(n, at)| (*at, k.clone(), n.clone()))
            })
            .filter(|(at, _, _)| *at <= watermark)
            .min();
        let Some((at, key, name)) = due else { break };
        let instance = instances.get_mut(&key).unwrap();
        instance.timers.retain(|(n, t)| !(*n == name && *t == at));
        let mut records = Vec::new();
        let mut cx = Context::for_test(&key, at, &mut records, &mut instance.timers)
            .with_watermark(watermark);
        template
            .on_timer(&mut instance.state, &name, &mut cx)
            .unwrap();
        out.extend(records.into_iter().map(|r| (key.clone(), r)));
        if template.is_complete(&instance.state) {
            instances.remove(&key);
        }
    };
    let mut max_time: Option<Millis> = None;
    for (seq, input) in inputs.iter().enumerate() {
        let watermark = max_time.map_or(MIN_TIME, |m| m - out_of_orderness);
        fire_due(&mut instances, &mut out, watermark);
        let key = input.key();
        let instance = instances.entry(key.clone()).or_insert_with(|| Instance {
            state: WindowState::default(),
            timers: Timers::new(),
        });
        let event = input.event(seq as u64);
        let mut records = Vec::new();
        let mut cx = Context::for_test(&key, event.time, &mut records, &mut instance.timers)
            .with_watermark(watermark);
        template
            .on_event(&mut instance.state, &event, &mut cx)
            .unwrap();
        out.extend(records.into_iter().map(|r| (key.clone(), r)));
        assert!(
            instance.state.panes.len() <= pane_bound,
            "{} panes, bound {pane_bound}",
            instance.state.panes.len()
        );
        if template.is_complete(&instance.state) {
            instances.remove(&key);
        }
        max_time = Some(max_time.map_or(input.time, |m| m.max(input.time)));
    }
    fire_due(&mut instances, &mut out, Millis::MAX / 4);
    assert!(
        instances.is_empty(),
        "state left behind: {:?}",
        instances.keys().collect::<Vec<_>>()
    );
    out
}

type WindowEmissions = BTreeMap<(String, Millis), Vec<Snapshot>>;

/// The reference: per event, late or the windows it counts in; per window, its emissions.
fn reference(
    inputs: &[Input],
    size: Millis,
    slide: Millis,
    lateness: Millis,
    out_of_orderness: Millis,
) -> (WindowEmissions, Vec<(String, Millis)>) {
    // (key, end) -> events counted, each with the watermark it arrived at.
    let mut windows: BTreeMap<(String, Millis), Vec<(Millis, &Input)>> = BTreeMap::new();
    let mut late = Vec::new();
    let mut max_time: Option<Millis> = None;
    for input in inputs {
        let watermark = max_time.map_or(MIN_TIME, |m| m - out_of_orderness);
        let t = input.time;
        // Window ends e (multiples of slide) with e - size <= t < e.
        let ends: Vec<Millis> = (t.div_euclid(slide) + 1..)
            .map(|i| i * slide)
            .take_while(|&e| e - size <= t)
            .collect();
        assert!(!ends.is_empty());
        let live: Vec<Millis> = ends
            .into_iter()
            .filter(|&e| e + lateness > watermark)
            .collect();
        if live.is_empty() {
            late.push((input.key(), t));
        }
        for e in live {
            windows
                .entry((input.key(), e))
                .or_default()
                .push((watermark, input));
        }
        max_time = Some(max_time.map_or(t, |m| m.max(t)));
    }
    let mut emissions = BTreeMap::new();
    for ((key, end), events) in windows {
        let start = end - size;
        // Scan: the events of the window are those in [start, end).
        assert!(events.iter().all(|(_, e)| start <= e.time && e.time < end));
        let mut list = Vec::new();
        let on_time: Vec<&Input> = events
            .iter()
            .filter(|(w, _)| *w < end)
            .map(|(_, e)| *e)
            .collect();
        if !on_time.is_empty() {
            list.push(naive("final", start, &on_time));
        }
        let mut so_far = on_time;
        for (_, e) in events.iter().filter(|(w, _)| *w >= end) {
            so_far.push(e);
            list.push(naive("late", start, &so_far));
        }
        emissions.insert((key, end), list);
    }
    (emissions, late)
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    prop::collection::vec(
        (
            -600i64..120,
            0usize..2,
            0usize..3,
            prop::option::weighted(0.8, 0i64..50),
            0usize..5,
        ),
        1..80,
    )
    .prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (jitter_s, ty, country, amount, customer))| Input {
                // Drifting forward 30 s per event, up to 10 minutes early or 2 minutes ahead.
                time: BASE + i as Millis * 30_000 + jitter_s * 1_000,
                ty,
                country,
                amount,
                customer,
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn window_results_equal_a_naive_scan_of_each_window(
        slide_minutes in 1i64..=4,
        extra_minutes in 0i64..=9,
        lateness_minutes in 0i64..=3,
        out_of_orderness_minutes in 0i64..=4,
        events in inputs(),
    ) {
        let slide = slide_minutes * MIN;
        let size = slide + extra_minutes * MIN;
        let lateness = lateness_minutes * MIN;
        let ooo = out_of_orderness_minutes * MIN;
        let template = WindowTemplate::new("velocity", spec(size, slide, lateness));
        let pane = template.pane();
        let pane_bound = ((ooo + size + lateness) / pane + 3) as usize;
        let out = run_template(&template, &events, ooo, pane_bound);

        let mut actual: WindowEmissions = BTreeMap::new();
        let mut actual_late = Vec::new();
        for (key, record) in &out {
            prop_assert_eq!(record.key.as_deref(), Some(key.as_str()));
            match record.kind {
                RecordKind::Window => {
                    prop_assert_eq!(&record.name, "VELOCITY");
                    actual
                        .entry((key.clone(), record.event_time.unwrap()))
                        .or_default()
                        .push(snapshot_of(record));
                }
                RecordKind::DeadLetter => {
                    prop_assert_eq!(&record.name, LATE_EVENT);
                    actual_late.push((key.clone(), record.event_time.unwrap()));
                }
                other => prop_assert!(false, "unexpected record kind {:?}", other),
            }
        }
        let (expected, mut expected_late) = reference(&events, size, slide, lateness, ooo);
        actual_late.sort();
        expected_late.sort();
        prop_assert_eq!(actual_late, expected_late);
        let keys: Vec<_> = expected.keys().chain(actual.keys()).collect();
        for key in keys {
            prop_assert_eq!(actual.get(key), expected.get(key), "window {:?}", key);
        }
    }
}

/// A 48 h window sliding by 1 minute keeps one pane per minute with data, never one per event.
#[test]
fn a_48h_window_sliding_by_the_minute_keeps_panes_not_events() {
    let template = WindowTemplate::new("velocity", spec(48 * 60 * MIN, MIN, 0));
    let mut state = WindowState::default();
    let (mut records, mut timers) = (Vec::new(), Timers::new());
    // 10 events a minute for 3 hours, all in one group.
    for i in 0..1_800i64 {
        let input = Input {
            time: BASE + i * 6_000,
            ty: 0,
            country: 0,
            amount: Some(i % 50),
            customer: (i % 7) as usize,
        };
        let mut cx = Context::for_test("k", input.time, &mut records, &mut timers);
        template
            .on_event(&mut state, &input.event(i as u64), &mut cx)
            .unwrap();
    }
    assert!(state.panes.len() <= 181, "{} panes", state.panes.len());
    assert_eq!(timers.len(), 1, "one timer per instance");
}
