//! The ground truth: what a correct run over the generated stream emits.
//!
//! A simple reference model over each order's scenario (not a simulation of the runtime):
//! only events inside the observation horizon count, and an SLA alert is due only when its
//! deadline is at or before `W`, the largest event time of any valid line.

use std::fmt::Write as _;

use super::noise::DeadLetter;
use super::scenario::{Scenario, SLA};
use crate::time::{format_rfc3339, Millis};

/// Appends one record line (with newline): `{"kind":..,"name":..,"key":..,"event_time":..}`.
pub(crate) fn record(
    out: &mut String,
    kind: &str,
    name: &str,
    key: Option<&str>,
    time: Option<Millis>,
) {
    let _ = write!(out, r#"{{"kind":"{kind}","name":"{name}","key":"#);
    match key {
        Some(key) => {
            out.push_str(&serde_json::Value::from(key).to_string());
        }
        None => out.push_str("null"),
    }
    out.push_str(r#","event_time":"#);
    match time {
        Some(t) => {
            out.push('"');
            out.push_str(&format_rfc3339(t));
            out.push('"');
        }
        None => out.push_str("null"),
    }
    out.push_str("}\n");
}

/// Appends the records order `s` must produce; returns how many.
pub(crate) fn order_records(
    s: &Scenario,
    horizon: Millis,
    watermark: Millis,
    out: &mut String,
) -> u64 {
    let key = s.order_number().to_string();
    let cancelled_at = s.cancel.map(|c| c.0).filter(|&t| t <= horizon);
    let shipped: Vec<Option<Millis>> = (0..s.parcels)
        .map(|p| s.ship[p].filter(|&t| t <= horizon))
        .collect();
    let all_shipped = shipped.iter().all(Option::is_some);
    let last_ship = shipped.iter().flatten().copied().max();
    let mut n = 0;
    if all_shipped && cancelled_at.is_none() {
        record(out, "event", "ALL_PARCELS_SHIPPED", Some(&key), last_ship);
        n += 1;
    }
    let deadline = s.t0 + SLA;
    let on_time = all_shipped && last_ship.is_some_and(|t| t <= deadline);
    let cancelled_in_time = cancelled_at.is_some_and(|t| t <= deadline);
    if deadline <= watermark && !on_time && !cancelled_in_time {
        record(out, "alert", "SLA_BREACHED", Some(&key), Some(deadline));
        n += 1;
    }
    n
}

/// Appends the dead-letter record of a noise line.
pub(crate) fn dead_letter_record(dl: &DeadLetter, out: &mut String) {
    record(out, "dead_letter", dl.reason, dl.key.as_deref(), dl.time);
}
