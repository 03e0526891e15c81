//! Fixtures shared by the benchmarks in `benches/` (one file per area): realistic lines from
//! the synthetic shop, the event types and process of the order-fulfilment example, one order's
//! events, and instance records shaped like the ones a shard checkpoints.
//!
//! Run the benchmarks with `cargo bench -p vigil-benches` (or `make bench`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vigil_actors::event::{Decoder, Event};
use vigil_actors::record::Record;
use vigil_actors::shop::{self, ShopConfig};
use vigil_actors::spec::{JobSpec, TemplateSpec};
use vigil_actors::template::{Context, Template, Timers};
use vigil_actors::templates::process::{ProcessState, ProcessTemplate};
use vigil_actors::time::Millis;
use vigil_storage::codec;

/// The example topology every benchmark measures against.
pub const EXAMPLE: &str = include_str!("../../examples/order-fulfilment/topology.toml");

/// The example compiled with its defaults (no `VIGIL_*` variables needed).
pub fn example_spec() -> JobSpec {
    vigil_topology::compile_str(EXAMPLE, "examples/order-fulfilment/topology.toml", &|_| {
        None
    })
    .unwrap_or_else(|diagnostics| panic!("{diagnostics}"))
}

/// The field naming the event type in the example's source.
pub fn type_field(spec: &JobSpec) -> &str {
    &spec.sources[0].type_field
}

/// The example's decoder.
pub fn decoder(spec: &JobSpec) -> Decoder {
    Decoder::new(&spec.event_types)
}

/// The example's `order` process template.
pub fn order_template(spec: &JobSpec) -> ProcessTemplate {
    let process = spec
        .processes
        .iter()
        .find(|p| p.name == "order")
        .expect("the example has an `order` process");
    match &process.template {
        TemplateSpec::Process(config) => ProcessTemplate::new(&process.name, config.clone()),
        other => panic!("`order` runs the process template, not {other:?}"),
    }
}

/// The first lines of a day of the synthetic shop with `orders` orders (default seed), in
/// arrival order: valid events, ~1% duplicates and ~0.3% malformed lines.
pub fn shop_lines(orders: u64) -> Vec<String> {
    shop::lines(&ShopConfig {
        orders,
        ..ShopConfig::default()
    })
    .collect()
}

/// Up to `n` lines of `event_type` that decode without a rejection.
pub fn valid_lines_of(spec: &JobSpec, lines: &[String], event_type: &str, n: usize) -> Vec<String> {
    let decoder = decoder(spec);
    let field = type_field(spec);
    lines
        .iter()
        .filter(|line| {
            decoder
                .decode(line, field, 0)
                .is_ok_and(|e| &*e.type_name == event_type)
        })
        .take(n)
        .cloned()
        .collect()
}

/// One order's life from real shop lines: ORDER_CREATED with two parcels, then its two
/// PARCEL_SHIPPED and two PARCEL_DELIVERED events (first delivery of each, in arrival order).
///
/// Deliveries come one to three days after shipping and the stream covers 48 h, so only the
/// earliest orders are delivered within it: pass the lines of 20 000 orders or so.
pub fn two_parcel_order(spec: &JobSpec, lines: &[String]) -> Vec<Event> {
    let decoder = decoder(spec);
    let field = type_field(spec);
    let mut orders: HashMap<Arc<str>, [Vec<Event>; 3]> = HashMap::new();
    let mut created_order: Vec<Arc<str>> = Vec::new();
    for (seq, line) in lines.iter().enumerate() {
        let Ok(event) = decoder.decode(line, field, seq as u64) else {
            continue;
        };
        let slot = match &*event.type_name {
            "ORDER_CREATED" if event.payload.get("parcels").and_then(|p| p.as_u64()) == Some(2) => {
                0
            }
            "PARCEL_SHIPPED" => 1,
            "PARCEL_DELIVERED" => 2,
            _ => continue,
        };
        if slot == 0 && !orders.contains_key(&event.key) {
            created_order.push(event.key.clone());
        }
        let seen = &mut orders.entry(event.key.clone()).or_default()[slot];
        if !seen.iter().any(|e| e.id == event.id) {
            seen.push(event);
        }
    }
    for key in &created_order {
        let [created, shipped, delivered] = &orders[key];
        if created.len() == 1 && shipped.len() == 2 && delivered.len() == 2 {
            return created
                .iter()
                .chain(shipped)
                .chain(delivered)
                .cloned()
                .collect();
        }
    }
    panic!(
        "no two-parcel order both shipped and delivered in {} lines: generate more orders",
        lines.len()
    );
}

/// Runs `events` through `template` from a new instance, as the runtime does (timers carried
/// from one event to the next), and returns the state, the event ids seen and the timers.
pub fn run_events(
    template: &ProcessTemplate,
    events: &[Event],
) -> (ProcessState, Vec<u64>, Timers) {
    let mut state = ProcessState::default();
    let mut seen = Vec::new();
    let mut outputs: Vec<Record> = Vec::new();
    let mut timers = Timers::new();
    for event in events {
        if let Some(id) = &event.id {
            seen.push(id.stable_hash());
        }
        let mut cx = Context::for_test(&event.key, event.time, &mut outputs, &mut timers);
        template
            .on_event(&mut state, event, &mut cx)
            .expect("the process template accepts the example's events");
    }
    (state, seen, timers)
}

/// What a shard stores per instance: mirrors the runtime's private `StoredInstance` (in
/// `vigil_actors::shard`) field for field, so its encoded size and codec cost are a real one's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub meta: InstanceMeta,
    /// The template's encoded state; `None` for a tombstone.
    pub state: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    pub seen: SeenIds,
    pub timers: Timers,
    pub ended_at: Option<Millis>,
}

/// Mirrors the runtime's private `SeenIds`: the event ids' hashes in two generations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeenIds {
    pub hashes: Vec<u64>,
    /// How many of `hashes` are the older generation's.
    pub older: u32,
    /// The watermark when the current generation started.
    pub since: Millis,
}

/// An open order mid-process, as a shard checkpoints it: created and one of two parcels
/// shipped, its SLA and expiry timers pending. Returns the state and the whole record.
pub fn open_order(spec: &JobSpec, lines: &[String]) -> (ProcessState, InstanceRecord) {
    let template = order_template(spec);
    let order = two_parcel_order(spec, lines);
    let (state, seen, timers) = run_events(&template, &order[..2]);
    let record = InstanceRecord {
        meta: InstanceMeta {
            seen: SeenIds {
                hashes: seen,
                older: 0,
                since: order[0].time,
            },
            timers,
            ended_at: None,
        },
        state: Some(codec::encode(&state)),
    };
    (state, record)
}
