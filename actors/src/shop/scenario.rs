//! The shop's world: catalogue, customers, the diurnal order curve, and each order's scenario.
//!
//! Every order's scenario is a pure function of `(seed, order index)`: it is derived from a
//! per-order SplitMix64 generator whenever it is needed, so the generator holds no per-order
//! objects. Per-event choices (arrival delay, duplication, carrier) come from a hash of the
//! event's identity, for the same reason.

use std::fmt;

use rand::{Rng, RngCore};

use super::ShopConfig;
use crate::time::Millis;

pub(crate) const SECOND: Millis = 1_000;
pub(crate) const MINUTE: Millis = 60 * SECOND;
pub(crate) const HOUR: Millis = 60 * MINUTE;
pub(crate) const DAY: Millis = 24 * HOUR;

/// The stream is what was captured from `start` to `start + HORIZON` (inclusive).
pub(crate) const HORIZON: Millis = 48 * HOUR;
/// Every parcel of an order must ship within this much of the order.
pub(crate) const SLA: Millis = 24 * HOUR;
/// Arrival delays are uniform in `[0, MAX_DELAY)`: never 4 minutes or more.
pub(crate) const MAX_DELAY: Millis = 4 * MINUTE;
/// No event of an order occurs earlier than this before its ORDER_CREATED.
pub(crate) const MAX_LEAD: Millis = 60 * MINUTE;

pub(crate) const MAX_ITEMS: usize = 6;
pub(crate) const MAX_PARCELS: usize = 4;
pub(crate) const MAX_CARTS: usize = MAX_ITEMS + 2;
pub(crate) const MAX_ABANDONED: usize = 3;
/// The most failed payment attempts of one order (a fraud attempt).
pub(crate) const MAX_FAILURES: usize = 4;

/// Share of lines that arrive with a delay (uniform in `[0, MAX_DELAY)`); the rest arrive at once.
pub(crate) const DELAYED_SHARE: f64 = 0.30;
/// Share of events delivered twice (an identical line with its own delay).
pub(crate) const DUPLICATE_SHARE: f64 = 0.01;
/// Chance that a malformed line follows any real line.
pub(crate) const NOISE_SHARE: f64 = 0.003;
/// Share of orders whose first payment attempt fails.
pub(crate) const PAYMENT_FAIL_SHARE: f64 = 0.04;
/// Of those, the share that then authorize with another method (the rest are cancelled).
pub(crate) const RETRY_SHARE: f64 = 0.70;
/// Share of orders (payment aside) cancelled within a few hours, before anything shipped.
pub(crate) const CANCEL_SHARE: f64 = 0.02;
/// Share of orders with one parcel that never ships.
pub(crate) const NEVER_SHIPS_SHARE: f64 = 0.01;
/// Share of orders with one parcel shipped 24–40 h after the order.
pub(crate) const LATE_SHARE: f64 = 0.03;
/// Share of orders with one parcel shipped exactly at the SLA deadline (on time, just).
pub(crate) const ON_DEADLINE_SHARE: f64 = 0.002;
/// Chance that an order slot also carries an abandoned cart of some customer.
pub(crate) const ABANDONED_SHARE: f64 = 0.45;
/// Share of orders that are a fraud attempt: 3–4 payments with stolen cards fail within a few
/// minutes, then one with another instrument succeeds.
pub(crate) const FRAUD_SHARE: f64 = 0.003;
/// Orders are cut into blocks of about half an hour of traffic (`orders / 48`); one block in
/// `RING_EVERY` has a drop address that some of its orders (of different customers) ship to.
pub(crate) const RING_EVERY: u64 = 3;
/// Orders of a ring block that ship to its drop address, on average.
pub(crate) const RING_ORDERS: f64 = 4.0;
/// House numbers of drop addresses start here (customers live at 1..=999).
pub(crate) const RING_HOUSE: u64 = 1_000;
/// Share of orders with one parcel delivered late (26–72 h after shipping instead of 8–22 h).
pub(crate) const LATE_DELIVERY_SHARE: f64 = 0.03;
/// Normal deliveries take this long after shipping: `[min, max)`.
pub(crate) const DELIVERY: (Millis, Millis) = (8 * HOUR, 22 * HOUR);
/// Late deliveries take this long after shipping: `[min, max)`.
pub(crate) const LATE_DELIVERY: (Millis, Millis) = (26 * HOUR, 72 * HOUR);

/// Order numbers are `ORD-<ORDER_BASE + index>`; noise uses `ORD-9xxxxxxxxx`.
pub(crate) const ORDER_BASE: u64 = 1_000_000_000;
/// The largest number of orders: keeps real order numbers below `ORD-9000000000`.
pub(crate) const MAX_ORDERS: u64 = u32::MAX as u64;
/// Customer numbers are `C-<CUSTOMER_BASE + n>`; noise uses `C-9xxxxxx`.
pub(crate) const CUSTOMER_BASE: u64 = 1_000_000;
const MAX_POOL: u64 = 8_000_000;

/// Event kinds; their order is the tiebreak between lines arriving in the same millisecond.
pub(crate) mod kind {
    pub const CART: u8 = 0;
    pub const ABANDONED: u8 = 1;
    pub const CREATED: u8 = 2;
    pub const PAY_FAILED: u8 = 3;
    pub const PAY_AUTH: u8 = 4;
    pub const CANCELLED: u8 = 5;
    pub const SHIPPED: u8 = 6;
    pub const DELIVERED: u8 = 7;
    /// Malformed lines (only used to give them fresh event ids).
    pub const NOISE: u8 = 0xFF;
}

pub(crate) const COUNTRIES: [(&str, u32); 10] = [
    ("DE", 30),
    ("FR", 14),
    ("NL", 10),
    ("AT", 8),
    ("CH", 6),
    ("PL", 8),
    ("IT", 9),
    ("ES", 7),
    ("SE", 4),
    ("BE", 4),
];

/// Per country (in `COUNTRIES` order): cities with a postcode.
pub(crate) const CITIES: [[(&str, &str); 3]; 10] = [
    [
        ("Berlin", "10115"),
        ("Hamburg", "20095"),
        ("München", "80331"),
    ],
    [
        ("Paris", "75001"),
        ("Lyon", "69001"),
        ("Marseille", "13001"),
    ],
    [
        ("Amsterdam", "1012 AB"),
        ("Rotterdam", "3011 AD"),
        ("Utrecht", "3511 AA"),
    ],
    [("Wien", "1010"), ("Graz", "8010"), ("Linz", "4020")],
    [("Zürich", "8001"), ("Basel", "4051"), ("Bern", "3011")],
    [
        ("Warszawa", "00-950"),
        ("Kraków", "30-001"),
        ("Gdańsk", "80-001"),
    ],
    [("Milano", "20121"), ("Roma", "00184"), ("Torino", "10121")],
    [
        ("Madrid", "28001"),
        ("Barcelona", "08001"),
        ("Valencia", "46001"),
    ],
    [
        ("Stockholm", "111 20"),
        ("Göteborg", "411 01"),
        ("Malmö", "211 20"),
    ],
    [
        ("Bruxelles", "1000"),
        ("Antwerpen", "2000"),
        ("Gent", "9000"),
    ],
];

/// Per country (in `COUNTRIES` order): street names.
pub(crate) const STREETS: [[&str; 3]; 10] = [
    ["Hauptstraße", "Bahnhofstraße", "Gartenweg"],
    ["Rue de la Paix", "Avenue Victor Hugo", "Rue du Moulin"],
    ["Kerkstraat", "Dorpsstraat", "Molenweg"],
    ["Hauptplatz", "Schulgasse", "Lindenweg"],
    ["Bahnhofstrasse", "Seestrasse", "Dorfstrasse"],
    ["ul. Polna", "ul. Leśna", "ul. Słoneczna"],
    ["Via Roma", "Via Garibaldi", "Corso Italia"],
    ["Calle Mayor", "Calle Real", "Avenida de la Constitución"],
    ["Storgatan", "Drottninggatan", "Kungsgatan"],
    ["Rue de la Station", "Kerkstraat", "Avenue Louise"],
];

pub(crate) const FIRST_NAMES: [&str; 16] = [
    "Anna", "Lukas", "Sophie", "Jonas", "Emma", "Luca", "Marie", "Noah", "Julia", "Mateo", "Lea",
    "Finn", "Chloé", "Jan", "Sofia", "Elias",
];
pub(crate) const LAST_NAMES: [&str; 16] = [
    "Müller",
    "Schmidt",
    "Dubois",
    "de Vries",
    "Gruber",
    "Rossi",
    "Nowak",
    "García",
    "Andersson",
    "Peeters",
    "Weber",
    "Martin",
    "Bakker",
    "Huber",
    "Kowalski",
    "Bianchi",
];

pub(crate) const METHODS: [(&str, u32); 5] = [
    ("credit_card", 30),
    ("paypal", 30),
    ("invoice", 15),
    ("klarna", 15),
    ("apple_pay", 10),
];

pub(crate) const BRANDS: [&str; 12] = [
    "Nordlicht",
    "Urban Fox",
    "Maison Lune",
    "Blue Harbor",
    "Kiefer & Co",
    "Sola",
    "Vento",
    "Alba Studio",
    "Tundra",
    "Pico",
    "Riva",
    "Kestrel",
];

const PRICES_CENTS: [u64; 18] = [
    995, 1295, 1495, 1995, 2495, 2995, 3495, 3995, 4995, 5995, 6995, 7995, 8995, 9995, 11995,
    14995, 19995, 24995,
];
const CATALOG: u64 = 40_000;
/// Below this subtotal a shipping fee is added.
const FREE_SHIPPING_CENTS: u64 = 2995;
const SHIPPING_FEE_CENTS: u64 = 495;

pub(crate) const CARRIERS: [(&str, u32); 6] = [
    ("DHL", 35),
    ("DPD", 20),
    ("Hermes", 15),
    ("GLS", 12),
    ("UPS", 10),
    ("PostNL", 8),
];
pub(crate) const FAIL_REASONS: [&str; 5] = [
    "insufficient_funds",
    "card_declined",
    "3ds_failed",
    "risk_rejected",
    "expired_card",
];
pub(crate) const CANCEL_REASONS: [(&str, u32); 3] = [
    ("customer_request", 70),
    ("out_of_stock", 20),
    ("fraud_suspected", 10),
];
pub(crate) const PAYMENT_CANCEL_REASON: &str = "payment_failed";

/// Relative order rate per hour of the day (UTC), quiet at night, peak in the evening.
const HOURLY: [f64; 24] = [
    1.2, 0.7, 0.45, 0.35, 0.35, 0.5, 1.0, 1.8, 2.6, 3.2, 3.6, 3.9, 4.3, 4.2, 3.9, 3.9, 4.2, 4.8,
    5.8, 6.8, 7.4, 6.9, 5.0, 2.8,
];
const SEGMENTS: usize = 96;

/// The SplitMix64 finaliser: a bijection on `u64`.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A tiny hash-seeded generator for per-event and per-customer choices.
pub(crate) struct SplitMix(u64);

impl SplitMix {
    pub(crate) fn new(state: u64) -> Self {
        SplitMix(state)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[0, n)`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

/// SplitMix64 as a `rand` generator: fast, and its output is fixed by this file alone.
impl RngCore for SplitMix {
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn next_u64(&mut self) -> u64 {
        SplitMix::next_u64(self)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let bytes = SplitMix::next_u64(self).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Index of a weighted choice given `r` uniform in `[0, total weight)`.
fn weighted<T>(table: &[(T, u32)], mut r: u32) -> usize {
    for (i, (_, w)) in table.iter().enumerate() {
        if r < *w {
            return i;
        }
        r -= *w;
    }
    table.len() - 1
}

fn total<T>(table: &[(T, u32)]) -> u32 {
    table.iter().map(|(_, w)| w).sum()
}

pub(crate) fn pick_weighted<T>(table: &[(T, u32)], rng: &mut impl Rng) -> usize {
    weighted(table, rng.random_range(0..total(table)))
}

pub(crate) fn pick_weighted_mix<T>(table: &[(T, u32)], rng: &mut SplitMix) -> usize {
    weighted(table, rng.below(total(table) as u64) as u32)
}

/// Displays as a SKU: `SKU-123456`.
pub(crate) struct SkuName(pub u32);

impl fmt::Display for SkuName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SKU-{:06}", 100_000 + self.0)
    }
}
pub(crate) fn sku_brand(sku: u32) -> &'static str {
    BRANDS[(mix64(sku as u64 ^ 0x6272_616e_6473) % BRANDS.len() as u64) as usize]
}
pub(crate) fn sku_price_cents(sku: u32) -> u64 {
    PRICES_CENTS[(mix64(sku as u64 ^ 0x7072_6963_6573) % PRICES_CENTS.len() as u64) as usize]
}

/// The piecewise-constant (quarter-hour) diurnal order rate, as a cumulative table.
pub(crate) struct Curve {
    cum: [f64; SEGMENTS + 1],
}

impl Curve {
    fn new() -> Self {
        let mut cum = [0.0; SEGMENTS + 1];
        for s in 0..SEGMENTS {
            // The rate at the segment's middle, interpolated between hourly values at hh:30.
            let x = (s as f64 + 0.5) / 4.0 - 0.5;
            let i0 = x.floor();
            let frac = x - i0;
            let a = HOURLY[(i0 as i64).rem_euclid(24) as usize];
            let b = HOURLY[(i0 as i64 + 1).rem_euclid(24) as usize];
            cum[s + 1] = cum[s] + a + (b - a) * frac;
        }
        let sum = cum[SEGMENTS];
        for c in &mut cum {
            *c /= sum;
        }
        Curve { cum }
    }

    /// The time of day (ms in `[0, DAY)`) at which a fraction `q` of the day's orders are placed.
    fn offset(&self, q: f64) -> Millis {
        let q = q.clamp(0.0, 1.0);
        let s = (self.cum.partition_point(|&c| c <= q).max(1) - 1).min(SEGMENTS - 1);
        let width = self.cum[s + 1] - self.cum[s];
        let frac = ((q - self.cum[s]) / width).clamp(0.0, 1.0);
        let ms = (s as f64 + frac) * (DAY as f64 / SEGMENTS as f64);
        (ms as Millis).clamp(0, DAY - 1)
    }
}

/// A customer: everything about them is a function of their number.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Customer {
    pub number: u64,
    pub country: usize,
    pub city: usize,
    pub street: usize,
    pub house: u64,
    pub first: usize,
    pub last: usize,
    pub method: usize,
}

/// A shipping address: the customer's own, or a ring's drop address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Address {
    pub country: usize,
    pub city: usize,
    pub street: usize,
    pub house: u64,
}

impl Address {
    /// A compact identity (distinct addresses, distinct ids).
    pub(crate) fn id(&self) -> u64 {
        ((self.country as u64) << 40)
            | ((self.city as u64) << 36)
            | ((self.street as u64) << 32)
            | self.house
    }
}

/// Displays an address as the flat `address_key` of ORDER_CREATED:
/// `DE 10115 Berlin, Hauptstraße 12`.
pub(crate) struct AddressKey(pub Address);

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.0;
        let (city, zip) = CITIES[a.country][a.city];
        write!(
            f,
            "{} {zip} {city}, {} {}",
            COUNTRIES[a.country].0, STREETS[a.country][a.street], a.house
        )
    }
}

/// A payment instrument (a card, a PayPal account...) of some method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Instrument {
    pub method: usize,
    /// 48 bits.
    pub id: u64,
}

impl fmt::Display for Instrument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:012x}", METHODS[self.method].0, self.id)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Item {
    pub sku: u32,
    pub quantity: u8,
}

/// Everything that happens to one order (and the abandoned cart that shares its slot).
#[derive(Clone, Debug)]
pub(crate) struct Scenario {
    pub index: u64,
    pub t0: Millis,
    pub customer: Customer,
    pub items: [Item; MAX_ITEMS],
    pub n_items: usize,
    pub amount_cents: u64,
    pub method: usize,
    pub parcels: usize,
    /// Where the order ships to (the customer's address, or a ring's drop address).
    pub address: Address,
    /// Failed payment attempts: (time, reason index, instrument).
    pub failures: [(Millis, usize, Instrument); MAX_FAILURES],
    pub n_failures: usize,
    /// Payment authorized: (time, instrument).
    pub pay_auth: Option<(Millis, Instrument)>,
    /// Order cancelled: (time, reason).
    pub cancel: Option<(Millis, &'static str)>,
    /// Ship time of each parcel (`None`: never ships, or the order was cancelled).
    pub ship: [Option<Millis>; MAX_PARCELS],
    pub deliver: [Millis; MAX_PARCELS],
    pub session: u64,
    pub carts: [(Millis, u32); MAX_CARTS],
    pub n_carts: usize,
    pub abandoned_customer: u64,
    pub abandoned_session: u64,
    pub abandoned: [(Millis, u32); MAX_ABANDONED],
    pub n_abandoned: usize,
}

impl Scenario {
    pub(crate) fn order_number(&self) -> OrderNumber {
        OrderNumber(self.index)
    }

    /// When the event `(kind, sub)` of this scenario occurs.
    pub(crate) fn time_of(&self, kind: u8, sub: u8) -> Millis {
        let sub = sub as usize;
        match kind {
            kind::CART => self.carts[sub].0,
            kind::ABANDONED => self.abandoned[sub].0,
            kind::CREATED => self.t0,
            kind::PAY_FAILED => self.failures[sub].0,
            kind::PAY_AUTH => self.pay_auth.map(|p| p.0).unwrap_or(self.t0),
            kind::CANCELLED => self.cancel.map(|c| c.0).unwrap_or(self.t0),
            kind::SHIPPED => self.ship[sub].unwrap_or(self.t0),
            kind::DELIVERED => self.deliver[sub],
            _ => self.t0,
        }
    }
}

/// Displays as the order number of order `index`: `ORD-1000000042`.
pub(crate) struct OrderNumber(pub u64);

impl fmt::Display for OrderNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ORD-{:010}", ORDER_BASE + self.0)
    }
}

/// Displays as a customer id: `C-1000042`.
pub(crate) struct CustomerId(pub u64);

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "C-{:07}", self.0)
    }
}

/// Everything derived from the configuration alone.
pub(crate) struct Ctx {
    pub orders: u64,
    pub start: Millis,
    pub horizon: Millis,
    pool: u64,
    loyal: u64,
    curve: Curve,
    id_key: u64,
    event_key: u64,
    customer_key: u64,
    order_key: u64,
    instrument_key: u64,
    ring_key: u64,
    /// Orders per ring block.
    ring_block: u64,
}

impl Ctx {
    pub(crate) fn new(cfg: &ShopConfig) -> Self {
        assert!(
            cfg.orders <= MAX_ORDERS,
            "at most {MAX_ORDERS} orders can be generated"
        );
        let pool = (cfg.orders.saturating_mul(6) / 10).clamp(1_000, MAX_POOL);
        Ctx {
            orders: cfg.orders,
            start: cfg.start,
            horizon: cfg.start + HORIZON,
            pool,
            loyal: (pool / 20).max(1),
            curve: Curve::new(),
            id_key: mix64(cfg.seed ^ 0x6576_656e_745f_6964),
            event_key: mix64(cfg.seed ^ 0x6576_656e_745f_726e),
            customer_key: mix64(cfg.seed ^ 0x6375_7374_6f6d_6572),
            order_key: mix64(cfg.seed ^ 0x6f72_6465_7273_0000),
            instrument_key: mix64(cfg.seed ^ 0x696e_7374_7275_6d00),
            ring_key: mix64(cfg.seed ^ 0x7269_6e67_0000_0000),
            ring_block: (cfg.orders / 48).max(1),
        }
    }

    fn event_identity(order: u64, kind: u8, sub: u8) -> u64 {
        (order << 24) | ((kind as u64) << 16) | ((sub as u64) << 8)
    }

    /// The event id number of an event: unique per (order, kind, sub) (a bijection).
    pub(crate) fn event_id(&self, order: u64, kind: u8, sub: u8) -> u64 {
        mix64(Self::event_identity(order, kind, sub) ^ self.id_key)
    }

    /// The generator of per-event choices (delay, duplication, carrier...).
    pub(crate) fn event_rng(&self, order: u64, kind: u8, sub: u8) -> SplitMix {
        SplitMix::new(mix64(
            Self::event_identity(order, kind, sub) ^ self.event_key,
        ))
    }

    pub(crate) fn customer(&self, n: u64) -> Customer {
        let mut r = SplitMix::new(mix64(n ^ self.customer_key));
        let country = pick_weighted_mix(&COUNTRIES, &mut r);
        Customer {
            number: CUSTOMER_BASE + n,
            country,
            city: r.below(3) as usize,
            street: r.below(3) as usize,
            house: 1 + r.below(999),
            first: r.below(FIRST_NAMES.len() as u64) as usize,
            last: r.below(LAST_NAMES.len() as u64) as usize,
            method: pick_weighted_mix(&METHODS, &mut r),
        }
    }

    /// Instrument `variant` of `method` of customer number `customer` (variant 0: their own).
    pub(crate) fn instrument(&self, customer: u64, method: usize, variant: u64) -> Instrument {
        let id = mix64(customer ^ (variant << 24) ^ ((method as u64) << 58) ^ self.instrument_key);
        Instrument {
            method,
            id: id & 0xFFFF_FFFF_FFFF,
        }
    }

    /// The drop address of ring block `block`, if it is a ring block.
    fn ring_address(&self, block: u64) -> Option<Address> {
        let h = mix64(block ^ self.ring_key);
        if !h.is_multiple_of(RING_EVERY) {
            return None;
        }
        let mut r = SplitMix::new(h);
        Some(Address {
            country: pick_weighted_mix(&COUNTRIES, &mut r),
            city: r.below(3) as usize,
            street: r.below(3) as usize,
            house: RING_HOUSE + block % 9_000,
        })
    }

    /// A customer index: 30% of the orders come from a loyal 5% of the customers.
    fn pick_customer(&self, rng: &mut SplitMix) -> u64 {
        if rng.random_bool(0.3) {
            rng.random_range(0..self.loyal)
        } else {
            rng.random_range(0..self.pool)
        }
    }

    fn pick_sku(rng: &mut SplitMix) -> u32 {
        let u: f64 = rng.random();
        ((u * u * u * CATALOG as f64) as u64).min(CATALOG - 1) as u32
    }

    /// The generator of order `index`'s scenario, seeded by `(seed, index)`.
    fn order_rng(&self, index: u64) -> SplitMix {
        SplitMix::new(mix64(mix64(index) ^ self.order_key))
    }

    /// Order `index`'s scenario. Its `t0` is non-decreasing in `index` (up to float rounding,
    /// far below `MAX_LEAD`).
    pub(crate) fn scenario(&self, index: u64) -> Scenario {
        let mut rng = self.order_rng(index);
        let u: f64 = rng.random();
        let q = (index as f64 + u) / self.orders.max(1) as f64;
        let t0 = self.start + self.curve.offset(q);

        let customer = self.customer(self.pick_customer(&mut rng));
        let own = Address {
            country: customer.country,
            city: customer.city,
            street: customer.street,
            house: customer.house,
        };
        // Some orders of a ring block ship to its drop address.
        let address = match self.ring_address(index / self.ring_block) {
            Some(drop) if rng.random_bool((RING_ORDERS / self.ring_block as f64).min(0.5)) => drop,
            _ => own,
        };

        // Parcels and items: at least as many items as parcels.
        let parcels = 1 + pick_weighted(&[((), 55), ((), 30), ((), 10), ((), 5)], &mut rng);
        let wanted = 1 + pick_weighted(
            &[((), 40), ((), 30), ((), 17), ((), 8), ((), 4), ((), 1)],
            &mut rng,
        );
        let n_items = wanted.max(parcels).min(MAX_ITEMS);
        let mut items = [Item::default(); MAX_ITEMS];
        let mut subtotal = 0;
        for item in items.iter_mut().take(n_items) {
            item.sku = Self::pick_sku(&mut rng);
            item.quantity = if rng.random_bool(0.1) { 2 } else { 1 };
            subtotal += sku_price_cents(item.sku) * item.quantity as u64;
        }
        let amount_cents = if subtotal < FREE_SHIPPING_CENTS {
            subtotal + SHIPPING_FEE_CENTS
        } else {
            subtotal
        };
        let method = if rng.random_bool(0.15) {
            pick_weighted(&METHODS, &mut rng)
        } else {
            customer.method
        };

        // Payment. Every follow-up of an order occurs at least MAX_DELAY after it, so it
        // always arrives after the ORDER_CREATED.
        let c = customer.number;
        let mut failures = [(0, 0, self.instrument(c, method, 0)); MAX_FAILURES];
        let mut n_failures = 0;
        let mut pay_auth = None;
        let mut cancel = None;
        if rng.random_bool(FRAUD_SHARE) {
            // Stolen cards, one after the other, then another instrument that works.
            let mut at = t0 + rng.random_range(4 * MINUTE..6 * MINUTE);
            n_failures = rng.random_range(3..=MAX_FAILURES);
            for failure in failures.iter_mut().take(n_failures) {
                let card = self.instrument(c, 0, 1 + rng.random_range(0..1u64 << 30));
                *failure = (at, rng.random_range(0..FAIL_REASONS.len()), card);
                at += rng.random_range(20 * SECOND..100 * SECOND);
            }
            let other = 1 + rng.random_range(0..METHODS.len() - 1);
            pay_auth = Some((
                at + rng.random_range(0..2 * MINUTE),
                self.instrument(c, other, 0),
            ));
        } else if rng.random_bool(PAYMENT_FAIL_SHARE) {
            let failed_at = t0 + rng.random_range(4 * MINUTE..12 * MINUTE);
            let reason = rng.random_range(0..FAIL_REASONS.len());
            failures[0] = (failed_at, reason, self.instrument(c, method, 0));
            n_failures = 1;
            if rng.random_bool(RETRY_SHARE) {
                let other = (method + 1 + rng.random_range(0..METHODS.len() - 1)) % METHODS.len();
                pay_auth = Some((
                    failed_at + rng.random_range(3 * MINUTE..30 * MINUTE),
                    self.instrument(c, other, 0),
                ));
            } else {
                cancel = Some((
                    failed_at + rng.random_range(10 * MINUTE..2 * HOUR),
                    PAYMENT_CANCEL_REASON,
                ));
            }
        } else {
            pay_auth = Some((
                t0 + rng.random_range(4 * MINUTE..15 * MINUTE),
                self.instrument(c, method, 0),
            ));
        }
        if cancel.is_none() && rng.random_bool(CANCEL_SHARE) {
            let reason = CANCEL_REASONS[pick_weighted(&CANCEL_REASONS, &mut rng)].0;
            cancel = Some((t0 + rng.random_range(20 * MINUTE..4 * HOUR), reason));
        }

        // Shipping: normally 2–20 h after the order; deliveries 8–22 h after shipping.
        let mut ship = [None; MAX_PARCELS];
        let mut deliver = [0; MAX_PARCELS];
        for p in 0..parcels {
            let at = t0 + rng.random_range(2 * HOUR..20 * HOUR);
            ship[p] = Some(at);
            deliver[p] = at + rng.random_range(DELIVERY.0..DELIVERY.1);
        }
        let roll: f64 = rng.random();
        let victim = rng.random_range(0..parcels);
        // At most one anomaly: a parcel that never ships, ships late, or ships exactly at
        // the SLA deadline (which is still on time).
        if roll < NEVER_SHIPS_SHARE {
            ship[victim] = None;
        } else if roll < NEVER_SHIPS_SHARE + LATE_SHARE + ON_DEADLINE_SHARE {
            let at = if roll < NEVER_SHIPS_SHARE + LATE_SHARE {
                t0 + rng.random_range(SLA + MINUTE..40 * HOUR)
            } else {
                t0 + SLA
            };
            ship[victim] = Some(at);
            deliver[victim] = at + rng.random_range(DELIVERY.0..DELIVERY.1);
        }
        // Perhaps one parcel that takes days to arrive.
        if rng.random_bool(LATE_DELIVERY_SHARE) {
            let p = rng.random_range(0..parcels);
            if let Some(at) = ship[p] {
                deliver[p] = at + rng.random_range(LATE_DELIVERY.0..LATE_DELIVERY.1);
            }
        }
        if cancel.is_some() {
            // A cancelled order ships nothing.
            ship = [None; MAX_PARCELS];
        }

        // The customer's cart before the order: the ordered items and perhaps a few more.
        let session = rng.random::<u64>() >> 16;
        let n_carts = n_items + pick_weighted(&[((), 70), ((), 20), ((), 10)], &mut rng);
        let mut carts = [(0, 0); MAX_CARTS];
        let lead = rng.random_range(3 * MINUTE..45 * MINUTE);
        let slot = lead / n_carts as Millis;
        for (k, cart) in carts.iter_mut().enumerate().take(n_carts) {
            let at = t0 - lead + slot * k as Millis + rng.random_range(0..slot.max(1));
            let sku = if k < n_items {
                items[k].sku
            } else {
                Self::pick_sku(&mut rng)
            };
            *cart = (at, sku);
        }

        // An abandoned cart of some (other) customer near the same time.
        let mut abandoned = [(0, 0); MAX_ABANDONED];
        let mut n_abandoned = 0;
        let mut abandoned_customer = 0;
        let mut abandoned_session = 0;
        if rng.random_bool(ABANDONED_SHARE) {
            abandoned_customer = CUSTOMER_BASE + self.pick_customer(&mut rng);
            abandoned_session = rng.random::<u64>() >> 16;
            n_abandoned = rng.random_range(1..=MAX_ABANDONED);
            let mut at = t0 + rng.random_range(-40 * MINUTE..20 * MINUTE);
            for entry in abandoned.iter_mut().take(n_abandoned) {
                at += rng.random_range(20 * SECOND..4 * MINUTE);
                *entry = (at, Self::pick_sku(&mut rng));
            }
        }

        Scenario {
            index,
            t0,
            customer,
            items,
            n_items,
            amount_cents,
            method,
            parcels,
            address,
            failures,
            n_failures,
            pay_auth,
            cancel,
            ship,
            deliver,
            session,
            carts,
            n_carts,
            abandoned_customer,
            abandoned_session,
            abandoned,
            n_abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_is_monotone_and_peaks_in_the_evening() {
        let c = Curve::new();
        let mut last = 0;
        for i in 0..=10_000 {
            let t = c.offset(i as f64 / 10_000.0);
            assert!(t >= last);
            last = t;
        }
        // The middle order of the day is placed in the afternoon.
        let median = c.offset(0.5);
        assert!(median > 13 * HOUR && median < 18 * HOUR, "{median}");
    }

    #[test]
    fn scenarios_respect_their_invariants() {
        let cfg = ShopConfig {
            orders: 20_000,
            ..ShopConfig::default()
        };
        let ctx = Ctx::new(&cfg);
        let mut last_t0 = 0;
        for i in 0..cfg.orders {
            let s = ctx.scenario(i);
            assert!(s.t0 >= last_t0 && s.t0 < cfg.start + DAY);
            last_t0 = s.t0;
            assert!((1..=MAX_PARCELS).contains(&s.parcels));
            assert!(s.n_items >= s.parcels);
            for k in 0..s.n_carts {
                assert!(s.carts[k].0 < s.t0 && s.carts[k].0 >= s.t0 - MAX_LEAD);
            }
            for k in 0..s.n_abandoned {
                assert!(s.abandoned[k].0 >= s.t0 - MAX_LEAD);
            }
            for t in s.failures[..s.n_failures]
                .iter()
                .map(|f| f.0)
                .chain(s.pay_auth.map(|p| p.0))
            {
                assert!(t >= s.t0 + MAX_DELAY);
            }
            if let Some((c, _)) = s.cancel {
                assert!(c >= s.t0 + MAX_DELAY && s.ship.iter().all(Option::is_none));
            }
            for p in 0..s.parcels {
                if let Some(at) = s.ship[p] {
                    assert!(at >= s.t0 + 2 * HOUR && s.deliver[p] >= at + DELIVERY.0);
                }
            }
        }
    }
}
