//! The synthetic online shop: a realistic day of a fashion shop as a stream of JSON event
//! lines, and the ground truth a correct run of the example topologies emits on it.
//!
//! Orders are placed over 24 h from `start` along a diurnal curve (quiet at night, peak in the
//! evening). Each order has carts before it, a payment (sometimes failing first), maybe a
//! cancellation, one shipment per parcel and deliveries. Anomalies are planted: a parcel shipped
//! late or never, abandoned carts, fraud attempts (3–4 stolen cards fail within minutes, then
//! another instrument succeeds), ring blocks whose drop address receives orders of several
//! customers, parcels delivered days late. The stream is what was captured from `start` to
//! `start + 48h`, delivered slightly out of order (never by 4 minutes or more), with ~1%
//! duplicate lines and ~0.3% malformed lines.
//!
//! Everything is a function of `(seed, orders)`: the same configuration gives byte-identical
//! files. Lines are produced in arrival order from a priority queue of compact entries, and each
//! order's scenario is re-derived from a per-order generator, so memory stays small even for
//! millions of orders.
//!
//! Two ground truths, one record per line: `{"kind","name","key","event_time"}`, computed from
//! the scenarios by small reference models of each rule (`truth`), not by running Vigil:
//! - `expected.jsonl` (`examples/order-fulfilment`): every `ALL_PARCELS_SHIPPED` event,
//!   `SLA_BREACHED` alert and dead letter a correct run emits;
//! - `expected-shop-day.jsonl` (`examples/shop-day`): the same, plus `FRAUD_SUSPECTED` and
//!   `ADDRESS_SHARED` alerts, `CART_ABANDONED` and `CONTACT_CUSTOMER` events and
//!   `ORDER_VELOCITY` windows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::time::{parse_rfc3339, Millis, MIN_TIME};

mod noise;
mod scenario;
mod stream;
mod truth;

pub use stream::Lines;

use scenario::{HORIZON, MAX_DELAY, MAX_ORDERS};
use stream::{Produced, Stream};

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShopConfig {
    /// The seed: same seed and orders, same bytes.
    pub seed: u64,
    /// How many orders are placed during the day.
    pub orders: u64,
    /// The start of the day (and of the observation window), ms since the epoch.
    pub start: Millis,
    /// Lines per output file (`0`: everything in one file).
    pub files_lines: u64,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            seed: 42,
            orders: 10_000,
            start: parse_rfc3339("2026-11-02T00:00:00Z").expect("a valid start time"),
            files_lines: 1_000_000,
        }
    }
}

/// What `generate` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateSummary {
    /// All lines written to the event files.
    pub lines: u64,
    /// Real events (first deliveries).
    pub events: u64,
    /// Duplicate deliveries of real events.
    pub duplicates: u64,
    /// Malformed lines (each one must be dead-lettered).
    pub malformed: u64,
    /// Records in `expected.jsonl`.
    pub expected_records: u64,
    /// Records in `expected-shop-day.jsonl`.
    pub shop_day_records: u64,
    /// The event files, in order.
    pub files: Vec<PathBuf>,
    /// The largest occurred_at of any valid line (the final watermark of a correct run;
    /// `MIN_TIME` when there are no events).
    pub final_watermark: Millis,
}

/// The ground truth of `examples/shop-day/topology.toml`, beside `expected.jsonl` (the ground
/// truth of `examples/order-fulfilment/topology.toml`).
pub const SHOP_DAY_FILE: &str = "expected-shop-day.jsonl";

/// The name of the `index`th event file.
fn event_file(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("events-{index:04}.jsonl"))
}

/// Writes DIR/events-0000.jsonl, events-0001.jsonl, ... (files_lines lines each),
/// DIR/expected.jsonl and DIR/expected-shop-day.jsonl.
///
/// `progress(done, total)` is called about every 1% with an estimate of the orders done (by how
/// far the stream has advanced through its 48 h), and once with `(total, total)` at the end.
pub fn generate(
    cfg: &ShopConfig,
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> std::io::Result<GenerateSummary> {
    if cfg.orders > MAX_ORDERS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("at most {MAX_ORDERS} orders can be generated"),
        ));
    }
    std::fs::create_dir_all(dir)?;
    let mut stream = Stream::new(cfg);
    let mut summary = GenerateSummary {
        lines: 0,
        events: 0,
        duplicates: 0,
        malformed: 0,
        expected_records: 0,
        shop_day_records: 0,
        files: vec![event_file(dir, 0)],
        final_watermark: MIN_TIME,
    };
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&summary.files[0])?);
    let mut in_file = 0u64;
    let mut dead_letters = String::new();
    let mut line = String::with_capacity(1024);
    let total = cfg.orders;
    let span = (HORIZON + MAX_DELAY) as u128;
    let step = (total / 100).max(1);
    let mut reported = 0u64;
    let mut shop_day = BufWriter::with_capacity(1 << 20, File::create(dir.join(SHOP_DAY_FILE))?);
    let mut keyed = truth::Keyed::default();
    let mut records = String::with_capacity(1 << 17);

    while let Some(produced) = stream.next_line(&mut line) {
        if cfg.files_lines > 0 && in_file == cfg.files_lines {
            out.flush()?;
            let path = event_file(dir, summary.files.len());
            out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
            summary.files.push(path);
            in_file = 0;
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        in_file += 1;
        summary.lines += 1;
        match produced {
            Produced::Event | Produced::Duplicate => {
                if matches!(produced, Produced::Event) {
                    summary.events += 1;
                } else {
                    summary.duplicates += 1;
                }
                if let Some((entry, s, time)) = stream.last_event() {
                    summary.shop_day_records +=
                        keyed.event(stream.ctx(), entry, s, time, &mut records);
                }
            }
            Produced::Noise(dl) => {
                summary.malformed += 1;
                truth::dead_letter_record(&dl, &mut dead_letters);
            }
        }
        if records.len() > 1 << 16 {
            shop_day.write_all(records.as_bytes())?;
            records.clear();
        }
        let elapsed = (stream.position() - cfg.start).max(0) as u128;
        let done = ((elapsed * total as u128) / span).min(total as u128) as u64;
        if done >= reported + step && done < total {
            reported = done;
            progress(done, total);
        }
    }
    out.flush()?;
    drop(out);

    // The ground truth: what is still due at the end, a second, cheap pass over the
    // scenarios, then the dead letters.
    let watermark = stream.max_valid();
    summary.final_watermark = watermark;
    summary.shop_day_records += keyed.finish(watermark, &mut records);
    shop_day.write_all(records.as_bytes())?;
    records.clear();
    drop(keyed);
    let ctx = stream.ctx();
    let mut expected = BufWriter::with_capacity(1 << 20, File::create(dir.join("expected.jsonl"))?);
    let mut contact = String::with_capacity(4096);
    let mut velocity = truth::Velocity::default();
    for i in 0..cfg.orders {
        let s = ctx.scenario(i);
        let n = truth::order_records(&s, ctx.horizon, watermark, &mut records);
        summary.expected_records += n;
        summary.shop_day_records += n;
        summary.shop_day_records += truth::delivery_records(ctx, &s, watermark, &mut contact);
        velocity.order(&s);
        if records.len() > 1 << 16 {
            expected.write_all(records.as_bytes())?;
            shop_day.write_all(records.as_bytes())?;
            records.clear();
        }
        if contact.len() > 1 << 16 {
            shop_day.write_all(contact.as_bytes())?;
            contact.clear();
        }
    }
    expected.write_all(records.as_bytes())?;
    shop_day.write_all(records.as_bytes())?;
    expected.write_all(dead_letters.as_bytes())?;
    summary.expected_records += summary.malformed;
    expected.flush()?;
    records.clear();
    summary.shop_day_records += velocity.records(watermark, &mut records);
    shop_day.write_all(records.as_bytes())?;
    shop_day.write_all(contact.as_bytes())?;
    shop_day.write_all(dead_letters.as_bytes())?;
    summary.shop_day_records += summary.malformed;
    shop_day.flush()?;
    progress(total, total);
    Ok(summary)
}

/// The same lines as `generate` writes, in the same order, lazily (for an in-process source).
///
/// Panics if `cfg.orders` exceeds `u32::MAX`.
pub fn lines(cfg: &ShopConfig) -> Lines {
    Lines::new(cfg)
}
