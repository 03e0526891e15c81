//! `repeat_customer`: a custom template, written against the same trait as the built-in ones,
//! registered under a name and configured from TOML.
//!
//! It watches each customer's orders and reports `REPEAT_CUSTOMER` (a `pattern` record) once a
//! customer has placed `orders` orders within `within` (event time). A customer's instance ends
//! `within` after their last order, so a quiet customer leaves no state behind.
//!
//! ```toml
//! [processes.loyal]
//! template = "repeat_customer"
//! event = "ORDER_CREATED"      # the event that counts as an order (default)
//! customer = "customer_id"     # the field that identifies the customer (default)
//! orders = 3                   # how many orders... (default 3, at least 2)
//! within = "7d"                # ...within how long (required)
//! alert = "REPEAT_CUSTOMER"    # the record's name (default)
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;
use vigil_actors::event::Event;
use vigil_actors::record::{Record, RecordKind};
use vigil_actors::registry::{FactoryResult, Registry, TemplateConfig};
use vigil_actors::spec::FieldPath;
use vigil_actors::template::{Context, Subscription, Template, TemplateError};
use vigil_actors::time::{format_rfc3339, Millis};

/// The template: its configuration, shared by every customer's instance, never persisted.
pub struct RepeatCustomer {
    pub event: String,
    pub customer: FieldPath,
    pub orders: usize,
    pub within: Millis,
    pub alert: String,
}

/// One customer's recent orders: exactly what is stored in redb between events.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecentOrders {
    /// Times of the orders that may still count, in time order.
    times: Vec<Millis>,
    /// Reported already (once per customer until the instance ends).
    reported: bool,
    /// No order for `within`: the instance ends.
    done: bool,
}

/// Ends the instance once the customer has been quiet for `within`.
const QUIET: &str = "quiet";

impl Template for RepeatCustomer {
    type State = RecentOrders;

    fn subscriptions(&self) -> Vec<Subscription> {
        // Orders are keyed by order number in the topology; re-key them by customer here.
        vec![Subscription::keyed_by(
            self.event.clone(),
            self.customer.clone(),
        )]
    }

    fn on_event(
        &self,
        state: &mut RecentOrders,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        let at = state.times.partition_point(|&t| t <= event.time);
        state.times.insert(at, event.time);
        let latest = *state.times.last().expect("just inserted");
        // Orders older than `within` before the latest can no longer make a new match.
        state.times.retain(|&t| t >= latest - self.within);
        if !state.reported {
            let first_match = state
                .times
                .windows(self.orders)
                .find(|w| w[self.orders - 1] - w[0] <= self.within);
            if let Some(w) = first_match {
                cx.emit(
                    Record::new(
                        RecordKind::Pattern,
                        &self.alert,
                        cx.key(),
                        w[self.orders - 1],
                    )
                    .with("orders", self.orders as u64)
                    .with("first_order", format_rfc3339(w[0])),
                );
                state.reported = true;
            }
        }
        // set_timer moves the timer if it is set: it fires `within` after the latest order.
        cx.set_timer(QUIET, latest + self.within);
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut RecentOrders,
        timer: &str,
        _cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if timer == QUIET {
            state.done = true;
        }
        Ok(())
    }

    fn is_complete(&self, state: &RecentOrders) -> bool {
        state.done
    }

    fn describe(&self, state: &RecentOrders) -> Value {
        serde_json::json!({ "recent_orders": state.times.len(), "reported": state.reported })
    }
}

/// Reads the template's TOML configuration: the template, or every mistake in it.
pub fn factory(mut config: TemplateConfig<'_>) -> FactoryResult {
    let event = config.str_or("event", "ORDER_CREATED");
    let customer = config.str_or("customer", "customer_id");
    let orders = config.integer_or("orders", 3, 2..=1000) as usize;
    let within = config.required_duration("within");
    let alert = config.str_or("alert", "REPEAT_CUSTOMER");
    if !alert.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        config
            .error("alert", format!("invalid record name `{alert}`"))
            .hint("use letters, digits and `_`, e.g. `REPEAT_CUSTOMER`");
    }
    config.finish()?; // every error at once, unknown fields included
    Ok(Box::new(RepeatCustomer {
        event,
        customer: FieldPath::parse(&customer),
        orders,
        within,
        alert,
    }))
}

/// Registers the template as `repeat_customer`.
pub fn register(registry: &mut Registry) {
    registry.register("repeat_customer", factory);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use vigil_actors::template::Timers;

    const DAY: Millis = 86_400_000;

    fn template() -> RepeatCustomer {
        RepeatCustomer {
            event: "ORDER_CREATED".into(),
            customer: FieldPath::parse("customer_id"),
            orders: 3,
            within: 7 * DAY,
            alert: "REPEAT_CUSTOMER".into(),
        }
    }

    fn order(time: Millis) -> Event {
        Event {
            seq: 0,
            type_index: 0,
            type_name: Arc::from("ORDER_CREATED"),
            key: Arc::from("C-1"),
            time,
            id: None,
            payload: serde_json::json!({ "customer_id": "C-1" }).into(),
        }
    }

    #[test]
    fn the_third_order_within_a_week_is_reported_once_even_out_of_order() {
        let (t, mut state, mut outputs, mut timers) = (
            template(),
            RecentOrders::default(),
            Vec::new(),
            Timers::new(),
        );
        for time in [0, 9 * DAY, 8 * DAY, 12 * DAY, 13 * DAY] {
            let mut cx = Context::for_test("C-1", time, &mut outputs, &mut timers);
            t.on_event(&mut state, &order(time), &mut cx).unwrap();
        }
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].event_time, Some(12 * DAY));
        assert_eq!(timers[..], [(QUIET.into(), 20 * DAY)]);
        let bytes = vigil_storage::codec::encode(&state);
        assert!(vigil_storage::codec::decode::<RecentOrders>(&bytes).is_ok());
    }
}
