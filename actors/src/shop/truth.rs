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

// ---------------------------------------------------------------------------------------------
// The ground truth of `examples/shop-day/topology.toml`: the order process above, plus fraud,
// customer contact and order velocity. Each rule is a small reference model of what its
// template must emit, fed with the key's events in the order a run reads them: the first copy
// of each event in line order (the other copy is a duplicate the run ignores).
//
// Deadlines (absences, windows) are due once event time passes them: in a run, a key's deadline
// `D` is handled before the first of its events with a time at or after `D`, and after every
// event with a time before `D` (they all arrive before `D + MAX_DELAY`, when the watermark is
// still below `D`). At the end of the input, everything due by `W`, the largest event time.

/// The thresholds of `examples/shop-day/topology.toml`; a test checks the file says the same.
pub(crate) mod shop_day {
    use super::super::scenario::{HOUR, MINUTE};
    use crate::time::Millis;

    /// `[processes.fraud.failed_payments]`: `min_failures`, `window`.
    pub const FRAUD_FAILURES: usize = 3;
    pub const FRAUD_WINDOW: Millis = 10 * MINUTE;
    /// `[processes.fraud.shared_address]`: `max_customers`, `window`.
    pub const ADDRESS_CUSTOMERS: usize = 3;
    pub const ADDRESS_WINDOW: Millis = HOUR;
    /// `[processes.contact.cart_abandoned]`: `after`.
    pub const CART_AFTER: Millis = 2 * HOUR;
    /// `[processes.contact.delivery_late]`: `within`.
    pub const DELIVERY_WITHIN: Millis = 24 * HOUR;
    /// `[processes.order_velocity]`: `size`, `slide`.
    pub const VELOCITY_SIZE: Millis = HOUR;
    pub const VELOCITY_SLIDE: Millis = 15 * MINUTE;
}

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

use self::shop_day::*;
use super::scenario::{kind, AddressKey, Ctx, CustomerId, Instrument, COUNTRIES, MAX_DELAY};
use super::stream::{first_arrival, Entry};

/// A run of the failed-payments rule: the failures it took, from `started`.
struct PaymentRun {
    started: Millis,
    failed: Vec<Instrument>,
}

/// A run of the shared-address rule: the distinct customers it took, from `started`.
struct AddressRun {
    started: Millis,
    customers: Vec<u64>,
}

const CARTS: u8 = 0;
const PAYMENTS: u8 = 1;
const ADDRESSES: u8 = 2;

/// The rules keyed across orders (by customer or by address), fed in line order. Holds only
/// the keys with a pending deadline or window, so it stays small.
#[derive(Default)]
pub(crate) struct Keyed {
    /// Per customer with items in the cart: the earliest CART_ABANDONED deadline pending.
    carts: HashMap<u64, Millis>,
    payments: HashMap<u64, Vec<PaymentRun>>,
    addresses: HashMap<u64, Vec<AddressRun>>,
    /// (deadline, rule, key): when to look at a key again.
    due: BinaryHeap<Reverse<(Millis, u8, u64)>>,
}

impl Keyed {
    /// Feeds the event line `entry` of scenario `s` (occurring at `time`); appends the records
    /// due and returns how many.
    pub(crate) fn event(
        &mut self,
        ctx: &Ctx,
        entry: Entry,
        s: &Scenario,
        time: Millis,
        out: &mut String,
    ) -> u64 {
        if first_arrival(ctx, s.index, entry.kind, entry.sub, time) != Some(entry) {
            return 0; // the duplicate of a line already read
        }
        let mut n = self.due_by(entry.arrival - MAX_DELAY, out);
        match entry.kind {
            kind::CART | kind::ABANDONED => {
                let customer = if entry.kind == kind::CART {
                    s.customer.number
                } else {
                    s.abandoned_customer
                };
                n += self.cart_deadline(customer, time, out);
                let deadline = time + CART_AFTER;
                let pending = self.carts.entry(customer).or_insert(deadline);
                *pending = (*pending).min(deadline);
                self.due.push(Reverse((deadline, CARTS, customer)));
            }
            kind::CREATED => {
                let customer = s.customer.number;
                n += self.cart_deadline(customer, time, out);
                self.carts.remove(&customer);
                n += self.order_for_address(s, time, out);
            }
            kind::PAY_FAILED | kind::PAY_AUTH => {
                n += self.payment(s, entry.kind, entry.sub, time, out);
            }
            _ => {}
        }
        n
    }

    /// Handles everything due at or before `watermark` (the end of the input).
    pub(crate) fn finish(&mut self, watermark: Millis, out: &mut String) -> u64 {
        self.due_by(watermark, out)
    }

    fn due_by(&mut self, time: Millis, out: &mut String) -> u64 {
        let mut n = 0;
        while let Some(&Reverse((deadline, rule, key))) = self.due.peek() {
            if deadline > time {
                break;
            }
            self.due.pop();
            match rule {
                CARTS => n += self.cart_deadline(key, deadline, out),
                PAYMENTS => {
                    if let Some(runs) = self.payments.get_mut(&key) {
                        runs.retain(|r| r.started + FRAUD_WINDOW > deadline);
                        if runs.is_empty() {
                            self.payments.remove(&key);
                        }
                    }
                }
                _ => {
                    if let Some(runs) = self.addresses.get_mut(&key) {
                        runs.retain(|r| r.started + ADDRESS_WINDOW > deadline);
                        if runs.is_empty() {
                            self.addresses.remove(&key);
                        }
                    }
                }
            }
        }
        n
    }

    /// Cart abandoned at `now`: the customer's earliest pending deadline has passed. Once per
    /// cart: the other items' deadlines go with it.
    fn cart_deadline(&mut self, customer: u64, now: Millis, out: &mut String) -> u64 {
        match self.carts.get(&customer) {
            Some(&deadline) if deadline <= now => {
                self.carts.remove(&customer);
                let key = CustomerId(customer).to_string();
                record(out, "event", "CART_ABANDONED", Some(&key), Some(deadline));
                1
            }
            _ => 0,
        }
    }

    /// Failed payments of one customer, then a success with an instrument none of them used.
    fn payment(&mut self, s: &Scenario, k: u8, sub: u8, time: Millis, out: &mut String) -> u64 {
        let customer = s.customer.number;
        let runs = self.payments.entry(customer).or_default();
        runs.retain(|r| r.started + FRAUD_WINDOW > time);
        let mut n = 0;
        if k == kind::PAY_FAILED {
            let instrument = s.failures[sub as usize].2;
            for run in runs.iter_mut() {
                if run.failed.len() < FRAUD_FAILURES {
                    run.failed.push(instrument);
                }
            }
            runs.push(PaymentRun {
                started: time,
                failed: vec![instrument],
            });
            self.due
                .push(Reverse((time + FRAUD_WINDOW, PAYMENTS, customer)));
        } else if let Some((_, instrument)) = s.pay_auth {
            let matched = runs
                .iter()
                .any(|r| r.failed.len() == FRAUD_FAILURES && !r.failed.contains(&instrument));
            if matched {
                runs.clear();
                let key = CustomerId(customer).to_string();
                record(out, "alert", "FRAUD_SUSPECTED", Some(&key), Some(time));
                n = 1;
            }
        }
        if runs.is_empty() {
            self.payments.remove(&customer);
        }
        n
    }

    /// Orders of several different customers for one address.
    fn order_for_address(&mut self, s: &Scenario, time: Millis, out: &mut String) -> u64 {
        let address = s.address.id();
        let customer = s.customer.number;
        let runs = self.addresses.entry(address).or_default();
        runs.retain(|r| r.started + ADDRESS_WINDOW > time);
        let mut matched = false;
        for run in runs.iter_mut() {
            if !run.customers.contains(&customer) {
                run.customers.push(customer);
                if run.customers.len() == ADDRESS_CUSTOMERS {
                    matched = true;
                    break;
                }
            }
        }
        let mut n = 0;
        if matched {
            runs.clear();
            let key = AddressKey(s.address).to_string();
            record(out, "alert", "ADDRESS_SHARED", Some(&key), Some(time));
            n = 1;
        } else {
            runs.push(AddressRun {
                started: time,
                customers: vec![customer],
            });
            self.due
                .push(Reverse((time + ADDRESS_WINDOW, ADDRESSES, address)));
        }
        if runs.is_empty() {
            self.addresses.remove(&address);
        }
        n
    }
}

/// Appends the CONTACT_CUSTOMER record of order `s` if one of its parcels was shipped and not
/// delivered within `DELIVERY_WITHIN` (once per order); returns how many (0 or 1).
pub(crate) fn delivery_records(
    ctx: &Ctx,
    s: &Scenario,
    watermark: Millis,
    out: &mut String,
) -> u64 {
    // The order's parcel events in the order a run reads them: (line, shipped?, parcel, time).
    let mut events: Vec<(Entry, bool, usize, Millis)> = Vec::with_capacity(2 * s.parcels);
    for p in 0..s.parcels {
        let Some(shipped) = s.ship[p] else { continue };
        let Some(line) = first_arrival(ctx, s.index, kind::SHIPPED, p as u8, shipped) else {
            continue;
        };
        events.push((line, true, p, shipped));
        let delivered = s.deliver[p];
        if let Some(line) = first_arrival(ctx, s.index, kind::DELIVERED, p as u8, delivered) {
            events.push((line, false, p, delivered));
        }
    }
    events.sort_unstable_by_key(|e| e.0);
    let key = s.order_number().to_string();
    // Pending runs: (deadline, parcel).
    let mut runs: Vec<(Millis, usize)> = Vec::new();
    let mut n = 0;
    let mut expire = |runs: &mut Vec<(Millis, usize)>, now: Millis, out: &mut String| {
        if let Some(deadline) = runs.iter().map(|r| r.0).min().filter(|&d| d <= now) {
            runs.clear();
            record(out, "event", "CONTACT_CUSTOMER", Some(&key), Some(deadline));
            n += 1;
        }
    };
    for (_, shipped, parcel, time) in events {
        expire(&mut runs, time, out);
        if shipped {
            runs.push((time + DELIVERY_WITHIN, parcel));
        } else {
            runs.retain(|r| r.1 != parcel);
        }
    }
    expire(&mut runs, watermark, out);
    n
}

/// The order velocity windows: which (country, window end) have at least one order.
#[derive(Default)]
pub(crate) struct Velocity {
    windows: BTreeSet<(usize, Millis)>,
}

impl Velocity {
    pub(crate) fn order(&mut self, s: &Scenario) {
        // Windows are [end - size, end) for every end that is a multiple of the slide.
        let first_end = (s.t0.div_euclid(VELOCITY_SLIDE) + 1) * VELOCITY_SLIDE;
        let mut end = first_end;
        while end - VELOCITY_SIZE <= s.t0 {
            self.windows.insert((s.address.country, end));
            end += VELOCITY_SLIDE;
        }
    }

    /// Appends one record per window closed by `watermark`; returns how many.
    pub(crate) fn records(&self, watermark: Millis, out: &mut String) -> u64 {
        let mut n = 0;
        for &(country, end) in &self.windows {
            if end <= watermark {
                record(
                    out,
                    "window",
                    "ORDER_VELOCITY",
                    Some(COUNTRIES[country].0),
                    Some(end),
                );
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::shop_day::*;
    use crate::time::{parse_duration, Millis};

    const TOPOLOGY: &str = include_str!("../../../examples/shop-day/topology.toml");

    /// The value of `key` in the TOML table `[table]` of the shop-day topology.
    fn setting(table: &str, key: &str) -> String {
        let header = format!("[{table}]");
        let start = TOPOLOGY
            .lines()
            .position(|l| l.trim() == header)
            .unwrap_or_else(|| panic!("no {header}"));
        TOPOLOGY
            .lines()
            .skip(start + 1)
            .take_while(|l| !l.starts_with('['))
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| panic!("no {key} in {header}"))
    }

    fn duration(table: &str, key: &str) -> Millis {
        parse_duration(&setting(table, key)).unwrap()
    }

    #[test]
    fn the_ground_truth_uses_the_thresholds_of_the_shop_day_topology() {
        let fraud = "processes.fraud.failed_payments";
        assert_eq!(setting(fraud, "min_failures"), FRAUD_FAILURES.to_string());
        assert_eq!(duration(fraud, "window"), FRAUD_WINDOW);
        assert_eq!(setting(fraud, "method"), "instrument");
        let address = "processes.fraud.shared_address";
        assert_eq!(
            setting(address, "max_customers"),
            ADDRESS_CUSTOMERS.to_string()
        );
        assert_eq!(duration(address, "window"), ADDRESS_WINDOW);
        assert_eq!(setting(address, "address"), "address_key");
        assert_eq!(
            duration("processes.contact.cart_abandoned", "after"),
            CART_AFTER
        );
        assert_eq!(
            duration("processes.contact.delivery_late", "within"),
            DELIVERY_WITHIN
        );
        assert_eq!(duration("processes.order_velocity", "size"), VELOCITY_SIZE);
        assert_eq!(
            duration("processes.order_velocity", "slide"),
            VELOCITY_SLIDE
        );
        assert_eq!(duration("[processes.order.slas]", "within"), super::SLA);
        // Nothing is late for the windows: every line arrives within the out-of-orderness bound.
        assert!(duration("time", "max_out_of_orderness") > super::MAX_DELAY);
    }
}
