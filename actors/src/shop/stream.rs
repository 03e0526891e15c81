//! The event stream in arrival order.
//!
//! A priority queue holds compact scheduled entries `(arrival, order, kind, sub, copy)`; an
//! order's scenario is re-derived from its seed whenever one of its lines is written. Orders are
//! expanded lazily (carts, creation, payment, cancellation) once the queue reaches their earliest
//! possible arrival; shipments are scheduled when the order's creation is written and deliveries
//! when their shipment is — both occur at least `MAX_DELAY` later, so they still arrive after the
//! line that scheduled them. The queue thus holds only what is in flight.
//!
//! The queue is a bucket queue: one-second buckets over the 48 h window, and a small binary heap
//! for the buckets reached so far, so a pop costs the same with ten or ten million entries.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::noise::{noise_line, DeadLetter};
use super::scenario::{
    kind, pick_weighted_mix, sku_brand, sku_price_cents, AddressKey, Ctx, CustomerId, Scenario,
    SkuName, SplitMix, CANCEL_REASONS, CARRIERS, CITIES, COUNTRIES, DELAYED_SHARE, DUPLICATE_SHARE,
    FAIL_REASONS, FIRST_NAMES, HORIZON, LAST_NAMES, MAX_DELAY, MAX_LEAD, METHODS, MINUTE,
    NOISE_SHARE, STREETS,
};
use super::ShopConfig;
use crate::time::{format_rfc3339, Millis, MIN_TIME};

/// One scheduled line. The derived order (arrival first) is the order lines are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub arrival: Millis,
    pub order: u32,
    pub kind: u8,
    pub sub: u8,
    /// 0 for the event itself, 1 for its duplicate.
    pub copy: u8,
}

/// The line(s) of the event `(order, kind, sub)` occurring at `occurred`: the event itself and
/// perhaps a duplicate, each with its arrival. `None` outside the observation window.
pub(crate) fn copies(
    ctx: &Ctx,
    order: u64,
    kind: u8,
    sub: u8,
    occurred: Millis,
) -> Option<(Entry, Option<Entry>)> {
    if occurred < ctx.start || occurred > ctx.horizon {
        return None;
    }
    let mut r = ctx.event_rng(order, kind, sub);
    let delay = if r.chance(DELAYED_SHARE) {
        r.below(MAX_DELAY as u64) as Millis
    } else {
        0
    };
    let entry = Entry {
        arrival: occurred + delay,
        order: order as u32,
        kind,
        sub,
        copy: 0,
    };
    let duplicate = r.chance(DUPLICATE_SHARE).then(|| Entry {
        arrival: occurred + r.below(MAX_DELAY as u64) as Millis,
        copy: 1,
        ..entry
    });
    Some((entry, duplicate))
}

/// The line of the event `(order, kind, sub)` that arrives first (the one a run processes; the
/// other copy is a duplicate it ignores). `None` outside the observation window.
pub(crate) fn first_arrival(
    ctx: &Ctx,
    order: u64,
    kind: u8,
    sub: u8,
    occurred: Millis,
) -> Option<Entry> {
    let (entry, duplicate) = copies(ctx, order, kind, sub, occurred)?;
    Some(duplicate.map_or(entry, |d| d.min(entry)))
}

/// Width of a bucket of the queue.
const BUCKET: Millis = 1_000;

/// A priority queue of entries whose arrivals are never before the last one popped (entries
/// pushed later may still be earlier than entries pushed before).
struct Queue {
    origin: Millis,
    /// Entries of buckets up to `current`, ordered.
    near: BinaryHeap<Reverse<Entry>>,
    current: usize,
    /// Entries of later buckets, unordered, by bucket.
    far: Vec<Vec<Entry>>,
    far_len: usize,
}

impl Queue {
    fn new(origin: Millis, span: Millis) -> Self {
        Queue {
            origin,
            near: BinaryHeap::new(),
            current: 0,
            far: (0..span / BUCKET + 2).map(|_| Vec::new()).collect(),
            far_len: 0,
        }
    }

    fn push(&mut self, e: Entry) {
        let b = ((e.arrival - self.origin).max(0) / BUCKET) as usize;
        if b <= self.current {
            self.near.push(Reverse(e));
        } else {
            self.far[b].push(e);
            self.far_len += 1;
        }
    }

    /// Moves the next non-empty bucket into `near` if `near` is empty.
    fn settle(&mut self) {
        while self.near.is_empty() && self.far_len > 0 {
            self.current += 1;
            let bucket = std::mem::take(&mut self.far[self.current]);
            self.far_len -= bucket.len();
            self.near = BinaryHeap::from(bucket.into_iter().map(Reverse).collect::<Vec<_>>());
        }
    }

    fn peek(&mut self) -> Option<Entry> {
        self.settle();
        self.near.peek().map(|r| r.0)
    }

    fn pop(&mut self) -> Option<Entry> {
        self.settle();
        self.near.pop().map(|r| r.0)
    }

    fn len(&self) -> usize {
        self.near.len() + self.far_len
    }
}

/// What a produced line is.
pub(crate) enum Produced {
    /// A real event, first delivery.
    Event,
    /// A second delivery of a real event (identical line).
    Duplicate,
    /// A malformed line and the dead-letter record it must produce.
    Noise(DeadLetter),
}

pub(crate) struct Stream {
    ctx: Ctx,
    queue: Queue,
    next_order: u64,
    upcoming: Option<Scenario>,
    noise_rng: ChaCha8Rng,
    noise_due: bool,
    noise_count: u64,
    max_valid: Millis,
    position: Millis,
    /// The last entry popped: entries come out strictly increasing (checked in debug builds).
    last: Option<Entry>,
    /// The scenario of the last event line (not noise) written.
    last_scenario: Option<Scenario>,
}

impl Stream {
    pub(crate) fn new(cfg: &ShopConfig) -> Self {
        let ctx = Ctx::new(cfg);
        Stream {
            noise_rng: ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6e6f_6973_6500_0000),
            queue: Queue::new(cfg.start, HORIZON + MAX_DELAY),
            ctx,
            next_order: 0,
            upcoming: None,
            noise_due: false,
            noise_count: 0,
            max_valid: MIN_TIME,
            position: cfg.start,
            last: None,
            last_scenario: None,
        }
    }

    pub(crate) fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// The largest occurred_at of any valid line written so far (`MIN_TIME` before any).
    pub(crate) fn max_valid(&self) -> Millis {
        self.max_valid
    }

    /// The last event line written (not noise): its entry, its scenario, and its event time.
    pub(crate) fn last_event(&self) -> Option<(Entry, &Scenario, Millis)> {
        let entry = self.last?;
        let s = self.last_scenario.as_ref()?;
        Some((entry, s, s.time_of(entry.kind, entry.sub)))
    }

    /// The arrival time of the last line written.
    pub(crate) fn position(&self) -> Millis {
        self.position
    }

    /// Writes the next line (without newline) into `out`; `None` at the end of the stream.
    pub(crate) fn next_line(&mut self, out: &mut String) -> Option<Produced> {
        out.clear();
        if self.noise_due {
            self.noise_due = false;
            // At or a little before the newest valid time so far: it neither moves the
            // watermark nor arrives later than the out-of-orderness bound allows.
            let back = self.noise_rng.random_range(0..3 * MINUTE);
            let time = (self.max_valid - back)
                .max(self.ctx.start)
                .min(self.max_valid);
            let id = self.ctx.event_id(self.noise_count, kind::NOISE, 0);
            self.noise_count += 1;
            return Some(Produced::Noise(noise_line(
                &mut self.noise_rng,
                id,
                time,
                out,
            )));
        }
        self.refill();
        let entry = self.queue.pop()?;
        debug_assert!(
            self.last.is_none_or(|last| last < entry),
            "{entry:?} out of order"
        );
        self.last = Some(entry);
        let order = entry.order as u64;
        let s = self.ctx.scenario(order);
        let occurred = s.time_of(entry.kind, entry.sub);
        self.render(&s, entry, occurred, out);
        if entry.copy == 0 {
            match entry.kind {
                kind::CREATED => {
                    for p in 0..s.parcels {
                        if let Some(at) = s.ship[p] {
                            self.schedule(order, kind::SHIPPED, p as u8, at);
                        }
                    }
                }
                kind::SHIPPED => {
                    let p = entry.sub as usize;
                    self.schedule(order, kind::DELIVERED, entry.sub, s.deliver[p]);
                }
                _ => {}
            }
        }
        self.position = entry.arrival;
        self.max_valid = self.max_valid.max(occurred);
        self.last_scenario = Some(s);
        if self.noise_rng.random_bool(NOISE_SHARE) {
            self.noise_due = true;
        }
        Some(if entry.copy == 0 {
            Produced::Event
        } else {
            Produced::Duplicate
        })
    }

    /// Expands every order whose earliest possible arrival is not after the queue's head.
    fn refill(&mut self) {
        while self.next_order < self.ctx.orders {
            let s = match self.upcoming.take() {
                Some(s) => s,
                None => self.ctx.scenario(self.next_order),
            };
            if let Some(head) = self.queue.peek() {
                if head.arrival < s.t0 - MAX_LEAD {
                    self.upcoming = Some(s);
                    return;
                }
            }
            self.expand(&s);
            self.next_order += 1;
        }
    }

    fn expand(&mut self, s: &Scenario) {
        let i = s.index;
        for k in 0..s.n_carts {
            self.schedule(i, kind::CART, k as u8, s.carts[k].0);
        }
        for k in 0..s.n_abandoned {
            self.schedule(i, kind::ABANDONED, k as u8, s.abandoned[k].0);
        }
        self.schedule(i, kind::CREATED, 0, s.t0);
        for (k, failure) in s.failures.iter().enumerate().take(s.n_failures) {
            self.schedule(i, kind::PAY_FAILED, k as u8, failure.0);
        }
        if let Some((at, _)) = s.pay_auth {
            self.schedule(i, kind::PAY_AUTH, 0, at);
        }
        if let Some((at, _)) = s.cancel {
            self.schedule(i, kind::CANCELLED, 0, at);
        }
    }

    /// Queues an event occurring at `occurred` (if inside the observation window), with its
    /// arrival delay and perhaps a duplicate.
    fn schedule(&mut self, order: u64, kind: u8, sub: u8, occurred: Millis) {
        if let Some((entry, duplicate)) = copies(&self.ctx, order, kind, sub, occurred) {
            self.queue.push(entry);
            if let Some(duplicate) = duplicate {
                self.queue.push(duplicate);
            }
        }
    }

    fn render(&self, s: &Scenario, e: Entry, occurred: Millis, out: &mut String) {
        let order = s.index;
        let name = match e.kind {
            kind::CART | kind::ABANDONED => "CART_ITEM_ADDED",
            kind::CREATED => "ORDER_CREATED",
            kind::PAY_FAILED => "PAYMENT_FAILED",
            kind::PAY_AUTH => "PAYMENT_AUTHORIZED",
            kind::CANCELLED => "ORDER_CANCELLED",
            kind::SHIPPED => "PARCEL_SHIPPED",
            _ => "PARCEL_DELIVERED",
        };
        let id = self.ctx.event_id(order, e.kind, e.sub);
        let _ = write!(
            out,
            r#"{{"type":"{name}","event_id":"evt-{id:016x}","occurred_at":"{}""#,
            format_rfc3339(occurred)
        );
        let number = s.order_number();
        match e.kind {
            kind::CART | kind::ABANDONED => {
                let k = e.sub as usize;
                let (customer, session, sku) = if e.kind == kind::CART {
                    (s.customer.number, s.session, s.carts[k].1)
                } else {
                    (s.abandoned_customer, s.abandoned_session, s.abandoned[k].1)
                };
                let _ = write!(
                    out,
                    r#","customer_id":"{}","sku":"{}","price":"#,
                    CustomerId(customer),
                    SkuName(sku)
                );
                money(out, sku_price_cents(sku));
                let _ = write!(out, r#","session_id":"S-{session:012x}"}}"#);
            }
            kind::CREATED => {
                let c = &s.customer;
                let a = s.address;
                let country = COUNTRIES[a.country].0;
                let _ = write!(
                    out,
                    r#","order_number":"{number}","customer_id":"{}","country":"{country}","amount":"#,
                    CustomerId(c.number)
                );
                money(out, s.amount_cents);
                let _ = write!(
                    out,
                    r#","currency":"EUR","payment_method":"{}","parcels":{},"items":["#,
                    METHODS[s.method].0, s.parcels
                );
                for (k, item) in s.items.iter().take(s.n_items).enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        r#"{{"sku":"{}","brand":"{}","price":"#,
                        SkuName(item.sku),
                        sku_brand(item.sku)
                    );
                    money(out, sku_price_cents(item.sku));
                    let _ = write!(out, r#","quantity":{}}}"#, item.quantity);
                }
                let (city, zip) = CITIES[a.country][a.city];
                let _ = write!(
                    out,
                    r#"],"shipping_address":{{"name":"{} {}","street":"{}","house_number":"{}","zip":"{zip}","city":"{city}","country":"{country}"}},"address_key":"{}"}}"#,
                    FIRST_NAMES[c.first],
                    LAST_NAMES[c.last],
                    STREETS[a.country][a.street],
                    a.house,
                    AddressKey(a)
                );
            }
            kind::PAY_FAILED => {
                let (_, reason, instrument) = s.failures[e.sub as usize];
                let _ = write!(
                    out,
                    r#","order_number":"{number}","customer_id":"{}","reason":"{}","payment_method":"{}","instrument":"{instrument}"}}"#,
                    CustomerId(s.customer.number),
                    FAIL_REASONS[reason],
                    METHODS[instrument.method].0
                );
            }
            kind::PAY_AUTH => {
                let Some((_, instrument)) = s.pay_auth else {
                    unreachable!("only scheduled for authorized payments")
                };
                let _ = write!(
                    out,
                    r#","order_number":"{number}","customer_id":"{}","amount":"#,
                    CustomerId(s.customer.number)
                );
                money(out, s.amount_cents);
                let _ = write!(
                    out,
                    r#","payment_method":"{}","instrument":"{instrument}"}}"#,
                    METHODS[instrument.method].0
                );
            }
            kind::CANCELLED => {
                let reason = s.cancel.map(|c| c.1).unwrap_or(CANCEL_REASONS[0].0);
                let _ = write!(out, r#","order_number":"{number}","reason":"{reason}"}}"#);
            }
            kind::SHIPPED => {
                let carrier = CARRIERS[pick_weighted_mix(&CARRIERS, &mut SplitMix::new(id))].0;
                let _ = write!(
                    out,
                    r#","order_number":"{number}","parcel_id":"{number}-P{}","carrier":"{carrier}"}}"#,
                    e.sub + 1
                );
            }
            _ => {
                let _ = write!(
                    out,
                    r#","order_number":"{number}","parcel_id":"{number}-P{}"}}"#,
                    e.sub + 1
                );
            }
        }
    }
}

/// Writes an amount of cents as a JSON number with two decimals.
fn money(out: &mut String, cents: u64) {
    let _ = write!(out, "{}.{:02}", cents / 100, cents % 100);
}

/// The lines of the generated stream, in order, produced lazily (see [`super::lines`]).
pub struct Lines {
    stream: Stream,
}

impl Lines {
    pub(crate) fn new(cfg: &ShopConfig) -> Self {
        Lines {
            stream: Stream::new(cfg),
        }
    }
}

impl Iterator for Lines {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        let mut line = String::with_capacity(256);
        self.stream.next_line(&mut line)?;
        Some(line)
    }
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("next_order", &self.stream.next_order)
            .field("queued", &self.stream.queue.len())
            .finish()
    }
}
