//! The `fraud` template: ready-made fraud patterns with thresholds from the topology. It is a
//! configuration of the [`pattern`](super::pattern) template, one pattern per rule:
//!
//! - **failed payments** ([`FailedPayments`]): `min_failures` failed payments of one customer,
//!   then an authorised payment with a payment method none of them used, all within `window`
//!   of the first failure → `FRAUD_SUSPECTED` (an `alert`). Keyed by the customer field, so
//!   the payment events must carry it.
//! - **shared address** ([`SharedAddress`]): orders from `max_customers` different customers
//!   for one shipping address within `window` → `ADDRESS_SHARED` (an `alert`). Keyed by the
//!   address field.
//!
//! Both drop the other partial matches after an alert (`skip_past_last_event`): one alert per
//! burst.

use crate::record::RecordKind;
use crate::spec::{Contiguity, FieldPath, Occurs, PatternSpec, PatternStepSpec, SkipStrategy};
use crate::time::Millis;

/// Several failed payments, then a success with another payment method.
#[derive(Debug, Clone)]
pub struct FailedPayments {
    pub name: String,
    pub failed: String,
    pub authorized: String,
    /// The field holding the customer on both payment events (the key).
    pub customer: FieldPath,
    /// The field holding the payment method on both payment events.
    pub method: FieldPath,
    pub min_failures: u32,
    pub window: Millis,
}

impl Default for FailedPayments {
    fn default() -> Self {
        FailedPayments {
            name: "FRAUD_SUSPECTED".into(),
            failed: "PAYMENT_FAILED".into(),
            authorized: "PAYMENT_AUTHORIZED".into(),
            customer: FieldPath::parse("customer_id"),
            method: FieldPath::parse("payment_method"),
            min_failures: 3,
            window: 10 * 60_000,
        }
    }
}

impl FailedPayments {
    pub fn pattern(&self) -> PatternSpec {
        let method = self.method.to_string();
        PatternSpec {
            name: self.name.clone(),
            kind: RecordKind::Alert,
            key: Some(self.customer.clone()),
            within: self.window,
            skip: SkipStrategy::SkipPastLastEvent,
            timeout: None,
            steps: vec![
                PatternStepSpec {
                    name: "failed".into(),
                    on: self.failed.clone(),
                    condition: None,
                    contiguity: Contiguity::FollowedBy,
                    occurs: Occurs::Times(self.min_failures),
                },
                PatternStepSpec {
                    name: "authorized".into(),
                    on: self.authorized.clone(),
                    condition: Some(format!("failed.all(f, f.{method} != event.{method})")),
                    contiguity: Contiguity::FollowedBy,
                    occurs: Occurs::Once,
                },
            ],
        }
    }
}

/// Orders from several different customers for one address.
#[derive(Debug, Clone)]
pub struct SharedAddress {
    pub name: String,
    pub orders: String,
    /// The field holding the shipping address (the key).
    pub address: FieldPath,
    /// The field holding the customer.
    pub customer: FieldPath,
    pub max_customers: u32,
    pub window: Millis,
}

impl Default for SharedAddress {
    fn default() -> Self {
        SharedAddress {
            name: "ADDRESS_SHARED".into(),
            orders: "ORDER_CREATED".into(),
            address: FieldPath::parse("shipping_address"),
            customer: FieldPath::parse("customer_id"),
            max_customers: 3,
            window: 10 * 60_000,
        }
    }
}

impl SharedAddress {
    /// One step per customer: each later order's customer differs from all earlier ones.
    pub fn pattern(&self) -> PatternSpec {
        let customer = self.customer.to_string();
        let steps = (0..self.max_customers.max(1))
            .map(|i| {
                let condition = (i > 0).then(|| {
                    (0..i)
                        .map(|j| format!("event.{customer} != c{j}.{customer}"))
                        .collect::<Vec<_>>()
                        .join(" && ")
                });
                PatternStepSpec {
                    name: format!("c{i}"),
                    on: self.orders.clone(),
                    condition,
                    contiguity: Contiguity::FollowedBy,
                    occurs: Occurs::Once,
                }
            })
            .collect();
        PatternSpec {
            name: self.name.clone(),
            kind: RecordKind::Alert,
            key: Some(self.address.clone()),
            within: self.window,
            skip: SkipStrategy::SkipPastLastEvent,
            timeout: None,
            steps,
        }
    }
}
