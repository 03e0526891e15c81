//! The `customer_contact` template: ready-made triggers to contact a customer, thresholds from
//! the topology. A configuration of the [`pattern`](super::pattern) template, one absence
//! pattern per trigger:
//!
//! - **cart abandoned** ([`CartAbandoned`]): an item added to the cart and no order by the
//!   same customer within `after` of it → `CART_ABANDONED` (an `event`) at the deadline, once
//!   per cart: the items added meanwhile do not trigger again (`skip_past_last_event`).
//!   Keyed by the customer field.
//! - **delivery late** ([`DeliveryLate`]): a parcel shipped and not delivered within `within`
//!   → `CONTACT_CUSTOMER` (an `event`) at the deadline, once per order: the other parcels'
//!   deadlines are dropped with it. With `parcel`, only the delivery of that same parcel
//!   counts.

use crate::record::RecordKind;
use crate::spec::{Contiguity, FieldPath, Occurs, PatternSpec, PatternStepSpec, SkipStrategy};
use crate::time::Millis;

#[derive(Debug, Clone)]
pub struct CartAbandoned {
    pub name: String,
    pub added: String,
    pub ordered: String,
    /// The field holding the customer on both events (the key).
    pub customer: FieldPath,
    pub after: Millis,
}

impl Default for CartAbandoned {
    fn default() -> Self {
        CartAbandoned {
            name: "CART_ABANDONED".into(),
            added: "CART_ITEM_ADDED".into(),
            ordered: "ORDER_CREATED".into(),
            customer: FieldPath::parse("customer_id"),
            after: 3_600_000,
        }
    }
}

impl CartAbandoned {
    pub fn pattern(&self) -> PatternSpec {
        absence(
            &self.name,
            Some(self.customer.clone()),
            self.after,
            ("added", &self.added),
            ("ordered", &self.ordered),
            None,
        )
    }
}

#[derive(Debug, Clone)]
pub struct DeliveryLate {
    pub name: String,
    pub shipped: String,
    pub delivered: String,
    /// Keyed by this field (default: the events' correlation key, the order).
    pub key: Option<FieldPath>,
    /// Match the delivery to its shipment by this field (a parcel id).
    pub parcel: Option<FieldPath>,
    pub within: Millis,
}

impl Default for DeliveryLate {
    fn default() -> Self {
        DeliveryLate {
            name: "CONTACT_CUSTOMER".into(),
            shipped: "PARCEL_SHIPPED".into(),
            delivered: "PARCEL_DELIVERED".into(),
            key: None,
            parcel: None,
            within: 3 * 86_400_000,
        }
    }
}

impl DeliveryLate {
    pub fn pattern(&self) -> PatternSpec {
        let condition = self
            .parcel
            .as_ref()
            .map(|p| format!("event.{p} == shipped.{p}"));
        absence(
            &self.name,
            self.key.clone(),
            self.within,
            ("shipped", &self.shipped),
            ("delivered", &self.delivered),
            condition,
        )
    }
}

fn absence(
    name: &str,
    key: Option<FieldPath>,
    within: Millis,
    first: (&str, &str),
    absent: (&str, &str),
    condition: Option<String>,
) -> PatternSpec {
    PatternSpec {
        name: name.to_owned(),
        kind: RecordKind::Event,
        key,
        within,
        skip: SkipStrategy::SkipPastLastEvent,
        timeout: None,
        steps: vec![
            PatternStepSpec {
                name: first.0.into(),
                on: first.1.into(),
                condition: None,
                contiguity: Contiguity::FollowedBy,
                occurs: Occurs::Once,
            },
            PatternStepSpec {
                name: absent.0.into(),
                on: absent.1.into(),
                condition,
                contiguity: Contiguity::FollowedBy,
                occurs: Occurs::Never,
            },
        ],
    }
}
