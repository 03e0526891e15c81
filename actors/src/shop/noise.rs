//! Malformed lines: extra lines mixed into the stream that a correct run dead-letters.
//!
//! Each noise line has exactly one defect, a fresh event id, and (where readable) a key outside
//! the range of real orders and customers (`ORD-9xxxxxxxxx`, `C-9xxxxxx`), so it never touches a
//! real process instance. Its dead-letter record is known when it is made.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::time::{format_rfc3339, Millis};

/// The dead-letter record a noise line must produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    pub reason: &'static str,
    pub key: Option<String>,
    pub time: Option<Millis>,
}

/// All reasons noise lines produce.
#[cfg(test)]
pub(crate) const REASONS: [&str; 8] = [
    "MALFORMED_JSON",
    "MISSING_TYPE",
    "UNKNOWN_TYPE",
    "MISSING_KEY",
    "MISSING_TIME",
    "BAD_TIME",
    "WRONG_FIELD_TYPE",
    "MISSING_FIELD",
];

/// The kinds of noise and their relative weights.
const WEIGHTS: [u32; 12] = [14, 4, 4, 12, 8, 3, 10, 3, 8, 8, 12, 8];

type Fields = Vec<(&'static str, String)>;

fn s(text: &str) -> String {
    format!("\"{text}\"")
}

fn render(fields: &Fields) -> String {
    let mut out = String::with_capacity(256);
    out.push('{');
    for (i, (name, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out.push_str(value);
    }
    out.push('}');
    out
}

fn remove(fields: &mut Fields, name: &str) {
    fields.retain(|(n, _)| *n != name);
}

fn set(fields: &mut Fields, name: &'static str, value: String) {
    match fields.iter_mut().find(|(n, _)| *n == name) {
        Some(field) => field.1 = value,
        None => fields.push((name, value)),
    }
}

struct Base {
    id: String,
    time: String,
    order: String,
    customer: String,
}

fn order_created(b: &Base, rng: &mut ChaCha8Rng) -> Fields {
    let parcels = rng.random_range(1..=3u32);
    let price = ["29.95", "49.95", "89.95"][rng.random_range(0..3)];
    vec![
        ("type", s("ORDER_CREATED")),
        ("event_id", s(&b.id)),
        ("occurred_at", s(&b.time)),
        ("order_number", s(&b.order)),
        ("customer_id", s(&b.customer)),
        ("country", s("DE")),
        ("amount", price.to_string()),
        ("currency", s("EUR")),
        ("payment_method", s("paypal")),
        ("parcels", parcels.to_string()),
        (
            "items",
            format!(r#"[{{"sku":"SKU-100042","brand":"Sola","price":{price},"quantity":1}}]"#),
        ),
        (
            "shipping_address",
            r#"{"name":"Test Kunde","street":"Teststrasse","house_number":"1","zip":"10115","city":"Berlin","country":"DE"}"#
                .to_string(),
        ),
        ("address_key", s("DE 10115 Berlin, Teststrasse 1")),
    ]
}

fn parcel_shipped(b: &Base) -> Fields {
    vec![
        ("type", s("PARCEL_SHIPPED")),
        ("event_id", s(&b.id)),
        ("occurred_at", s(&b.time)),
        ("order_number", s(&b.order)),
        ("parcel_id", s(&format!("{}-P1", b.order))),
        ("carrier", s("DHL")),
    ]
}

fn payment_failed(b: &Base) -> Fields {
    vec![
        ("type", s("PAYMENT_FAILED")),
        ("event_id", s(&b.id)),
        ("occurred_at", s(&b.time)),
        ("order_number", s(&b.order)),
        ("customer_id", s(&b.customer)),
        ("reason", s("card_declined")),
        ("payment_method", s("credit_card")),
        ("instrument", s("credit_card-000000000000")),
    ]
}

fn cart_item_added(b: &Base) -> Fields {
    vec![
        ("type", s("CART_ITEM_ADDED")),
        ("event_id", s(&b.id)),
        ("occurred_at", s(&b.time)),
        ("customer_id", s(&b.customer)),
        ("sku", s("SKU-100042")),
        ("price", "19.95".to_string()),
        ("session_id", s("S-00000000noise")),
    ]
}

/// Writes one malformed line (without newline) into `out` and returns its dead-letter record.
/// `time` is the line's occurred_at where it carries a readable one.
pub(crate) fn noise_line(
    rng: &mut ChaCha8Rng,
    event_id: u64,
    time: Millis,
    out: &mut String,
) -> DeadLetter {
    let b = Base {
        id: format!("evt-{event_id:016x}"),
        time: format_rfc3339(time),
        order: format!("ORD-9{:09}", rng.random_range(0..1_000_000_000u64)),
        customer: format!("C-9{:06}", rng.random_range(0..1_000_000u64)),
    };
    let total: u32 = WEIGHTS.iter().sum();
    let mut r = rng.random_range(0..total);
    let mut variant = 0;
    while r >= WEIGHTS[variant] {
        r -= WEIGHTS[variant];
        variant += 1;
    }
    let dead = |reason, key: Option<&String>, time: Option<Millis>| DeadLetter {
        reason,
        key: key.cloned(),
        time,
    };
    let (line, record) = match variant {
        0 => {
            // Truncated JSON: a proper prefix of an object is never valid JSON.
            let full = if rng.random_bool(0.5) {
                render(&order_created(&b, rng))
            } else {
                render(&parcel_shipped(&b))
            };
            let cut = rng.random_range(1..full.len() - 1);
            (full[..cut].to_string(), dead("MALFORMED_JSON", None, None))
        }
        1 => {
            let line = if rng.random_bool(0.5) {
                format!("[{}]", render(&parcel_shipped(&b)))
            } else {
                format!(r#"["ORDER_CREATED","{}"]"#, b.order)
            };
            (line, dead("MALFORMED_JSON", None, None))
        }
        2 => {
            let line = match rng.random_range(0..5) {
                0 => "\"ORDER_CREATED\"".to_string(),
                1 => "42".to_string(),
                2 => "null".to_string(),
                3 => format!("ORDER_CREATED {} shipped", b.order),
                _ => r#"{"type":"ORDER_CREATED",,"order_number":}"#.to_string(),
            };
            (line, dead("MALFORMED_JSON", None, None))
        }
        3 => {
            let kind = [
                "WISHLIST_VIEWED",
                "PRICE_ALERT_SET",
                "NEWSLETTER_SUBSCRIBED",
            ][rng.random_range(0..3)];
            let mut f = cart_item_added(&b);
            set(&mut f, "type", s(kind));
            remove(&mut f, "price");
            (render(&f), dead("UNKNOWN_TYPE", None, None))
        }
        4 => {
            let mut f = match rng.random_range(0..3) {
                0 => order_created(&b, rng),
                1 => parcel_shipped(&b),
                _ => cart_item_added(&b),
            };
            remove(&mut f, "type");
            (render(&f), dead("MISSING_TYPE", None, None))
        }
        5 => {
            let mut f = parcel_shipped(&b);
            let value = ["7", "null", r#"["PARCEL_SHIPPED"]"#][rng.random_range(0..3)];
            set(&mut f, "type", value.to_string());
            (render(&f), dead("MISSING_TYPE", None, None))
        }
        6 => {
            let f = match rng.random_range(0..3) {
                0 => {
                    let mut f = order_created(&b, rng);
                    remove(&mut f, "order_number");
                    f
                }
                1 => {
                    let mut f = parcel_shipped(&b);
                    remove(&mut f, "order_number");
                    f
                }
                _ => {
                    let mut f = cart_item_added(&b);
                    remove(&mut f, "customer_id");
                    f
                }
            };
            (render(&f), dead("MISSING_KEY", None, None))
        }
        7 => {
            let mut f = parcel_shipped(&b);
            let value = ["\"\"", "1234567", "null"][rng.random_range(0..3)];
            set(&mut f, "order_number", value.to_string());
            (render(&f), dead("MISSING_KEY", None, None))
        }
        8 => {
            let (mut f, key) = match rng.random_range(0..3) {
                0 => (order_created(&b, rng), &b.order),
                1 => (parcel_shipped(&b), &b.order),
                _ => (cart_item_added(&b), &b.customer),
            };
            remove(&mut f, "occurred_at");
            (render(&f), dead("MISSING_TIME", Some(key), None))
        }
        9 => {
            let (mut f, key) = match rng.random_range(0..3) {
                0 => (order_created(&b, rng), &b.order),
                1 => (payment_failed(&b), &b.order),
                _ => (cart_item_added(&b), &b.customer),
            };
            let bad = ["not-a-time", "2026-13-45T25:61:00Z", "yesterday"][rng.random_range(0..3)];
            set(&mut f, "occurred_at", s(bad));
            (render(&f), dead("BAD_TIME", Some(key), None))
        }
        10 => {
            let (f, key) = match rng.random_range(0..5) {
                0 => {
                    let mut f = order_created(&b, rng);
                    set(&mut f, "parcels", s("two"));
                    (f, &b.order)
                }
                1 => {
                    let mut f = order_created(&b, rng);
                    set(&mut f, "parcels", "2.5".to_string());
                    (f, &b.order)
                }
                2 => {
                    let mut f = order_created(&b, rng);
                    set(&mut f, "amount", s("59.90"));
                    (f, &b.order)
                }
                3 => {
                    let mut f = parcel_shipped(&b);
                    set(&mut f, "parcel_id", "17".to_string());
                    (f, &b.order)
                }
                _ => {
                    let mut f = cart_item_added(&b);
                    set(&mut f, "price", s("19.95"));
                    (f, &b.customer)
                }
            };
            (render(&f), dead("WRONG_FIELD_TYPE", Some(key), Some(time)))
        }
        _ => {
            let f = match rng.random_range(0..3) {
                0 => {
                    let mut f = order_created(&b, rng);
                    remove(&mut f, "parcels");
                    f
                }
                1 => {
                    let mut f = parcel_shipped(&b);
                    remove(&mut f, "carrier");
                    f
                }
                _ => {
                    let mut f = payment_failed(&b);
                    remove(&mut f, "reason");
                    f
                }
            };
            (
                render(&f),
                dead("MISSING_FIELD", Some(&b.order), Some(time)),
            )
        }
    };
    out.push_str(&line);
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_reason_occurs_and_lines_are_single_lines() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2_000 {
            let mut line = String::new();
            let dl = noise_line(&mut rng, i, 1_793_577_600_000, &mut line);
            assert!(!line.contains('\n') && !line.is_empty());
            seen.insert(dl.reason);
        }
        assert_eq!(seen.len(), REASONS.len(), "{seen:?}");
    }
}
