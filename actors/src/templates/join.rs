//! The `join` template: a `left` and a `right` event type correlated by key within a time bound
//! on event time.
//!
//! Semantics, per key (the event types' correlation key, or the payload field `key`):
//! - a left event at `tl` and a right event at `tr` **join** when `|tl - tr| <= within`
//!   (exactly `within` apart still joins), whichever arrives first and whichever is earlier in
//!   event time;
//! - each event joins **at most once** (one-to-one). An arriving event joins the pending event
//!   of the other side within the bound with the earliest event time (ties: the one that
//!   arrived first); otherwise it waits, pending, until its deadline `t + within`. So with
//!   several left events for one key, right events pair with them oldest first, one each, and
//!   the left events left over time out one by one;
//! - a join emits an `event` record named `name`, keyed by the key, at the later of the two
//!   times, with details `left_time`, `right_time` (RFC 3339), `left` and `right` (objects of
//!   each side's projected fields, by dotted path as written; missing fields are left out);
//! - a pending event whose partner has not come by its deadline is dropped when the watermark
//!   passes the deadline (a durable timer, so this happens on a quiet stream too). For
//!   `type = "left"` (left events) and `type = "outer"` (both sides) it first emits the
//!   `timeout` record (default `<NAME>_TIMEOUT`) at the deadline, with `side` (`left` or
//!   `right`), that side's `<side>_time` and its `<side>` object. `inner` emits nothing;
//! - a partner that arrives after the timeout fired (a late event, beyond the job's
//!   `max_out_of_orderness`) finds nothing to join and is itself pending, like any event;
//! - the instance ends (its state is deleted) as soon as nothing is pending.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Event;
use crate::record::{Record, RecordKind};
use crate::spec::{FieldPath, JoinKind, JoinTemplateSpec};
use crate::template::{Context, Subscription, Template, TemplateError};
use crate::time::{format_rfc3339, Millis, Rfc3339};

/// At most this many pending events per key; beyond it the oldest is dropped without a record.
pub const MAX_PENDING: usize = 1024;

/// The timer at the earliest pending deadline.
const EXPIRE: &str = "expire";

/// Joins two event types. Built from a [`JoinTemplateSpec`] with [`JoinTemplate::new`].
pub struct JoinTemplate {
    spec: JoinTemplateSpec,
}

/// A key's pending (not yet joined) events, in arrival order. This is what redb stores.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JoinState {
    pub pending: Vec<Pending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    Left,
    Right,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Left => "left",
            Side::Right => "right",
        }
    }
}

/// An event waiting for its partner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub side: Side,
    pub time: Millis,
    pub seq: u64,
    /// The projected fields, as JSON object text.
    pub fields: String,
}

impl JoinTemplate {
    pub fn new(_process: &str, spec: JoinTemplateSpec) -> JoinTemplate {
        JoinTemplate { spec }
    }

    fn project(paths: &[FieldPath], event: &Event) -> Value {
        let mut object = Map::new();
        for path in paths {
            if let Some(value) = event.field(path) {
                object.insert(path.to_string(), value.to_value());
            }
        }
        Value::Object(object)
    }

    fn times_out(&self, side: Side) -> bool {
        match self.spec.kind {
            JoinKind::Inner => false,
            JoinKind::Left => side == Side::Left,
            JoinKind::Outer => true,
        }
    }

    /// Drops the events whose deadline is before `now`, emitting their timeout records.
    fn expire(&self, state: &mut JoinState, now: Millis, cx: &mut Context<'_>) {
        let within = self.spec.within;
        let (expired, kept): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut state.pending)
            .into_iter()
            .partition(|p| p.time + within < now);
        state.pending = kept;
        let mut expired = expired;
        expired.sort_by_key(|p| (p.time, p.seq));
        for p in expired {
            if self.times_out(p.side) {
                let fields: Value = serde_json::from_str(&p.fields).unwrap_or(Value::Null);
                let side = p.side.name();
                cx.emit(
                    Record::new(
                        RecordKind::Event,
                        &self.spec.timeout,
                        cx.key(),
                        p.time + within,
                    )
                    .with("side", side)
                    .with(format!("{side}_time"), Rfc3339(p.time))
                    .with(side, fields),
                );
            }
        }
    }

    fn set_timer(&self, state: &JoinState, cx: &mut Context<'_>) {
        // One millisecond past the deadline: a partner exactly `within` apart still joins.
        match state
            .pending
            .iter()
            .map(|p| p.time + self.spec.within)
            .min()
        {
            Some(deadline) => cx.set_timer(EXPIRE, deadline + 1),
            None => cx.cancel_timer(EXPIRE),
        }
    }
}

impl Template for JoinTemplate {
    type State = JoinState;

    /// Its handlers return no errors; a panic is a bug, and the runtime recovers from it.
    fn handles_in_place(&self) -> bool {
        true
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        [&self.spec.left, &self.spec.right]
            .into_iter()
            .map(|event| match &self.spec.key {
                None => Subscription::new(event.clone()),
                Some(key) => Subscription::keyed_by(event.clone(), key.clone()),
            })
            .collect()
    }

    fn on_event(
        &self,
        state: &mut JoinState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        let side = if *event.type_name == *self.spec.left {
            Side::Left
        } else {
            Side::Right
        };
        let within = self.spec.within;
        let partner = state
            .pending
            .iter()
            .enumerate()
            .filter(|(_, p)| p.side != side && (p.time - event.time).abs() <= within)
            .min_by_key(|(_, p)| (p.time, p.seq))
            .map(|(i, _)| i);
        let paths = match side {
            Side::Left => &self.spec.left_fields,
            Side::Right => &self.spec.right_fields,
        };
        let fields = Self::project(paths, event);
        match partner {
            Some(i) => {
                let other = state.pending.remove(i);
                let other_fields: Value =
                    serde_json::from_str(&other.fields).unwrap_or(Value::Null);
                let ((lt, lf), (rt, rf)) = match side {
                    Side::Left => ((event.time, fields), (other.time, other_fields)),
                    Side::Right => ((other.time, other_fields), (event.time, fields)),
                };
                cx.emit(
                    Record::new(RecordKind::Event, &self.spec.name, cx.key(), lt.max(rt))
                        .with("left_time", Rfc3339(lt))
                        .with("right_time", Rfc3339(rt))
                        .with("left", lf)
                        .with("right", rf),
                );
            }
            None => {
                if state.pending.len() == MAX_PENDING {
                    state.pending.remove(0);
                }
                state.pending.push(Pending {
                    side,
                    time: event.time,
                    seq: event.seq,
                    fields: fields.to_string(),
                });
            }
        }
        self.set_timer(state, cx);
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut JoinState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if timer == EXPIRE {
            self.expire(state, cx.time(), cx);
            self.set_timer(state, cx);
        }
        Ok(())
    }

    fn is_complete(&self, state: &JoinState) -> bool {
        state.pending.is_empty()
    }

    fn describe(&self, state: &JoinState) -> Value {
        let pending: Vec<Value> = state
            .pending
            .iter()
            .map(|p| {
                serde_json::json!({
                    "side": p.side.name(),
                    "time": format_rfc3339(p.time),
                    "deadline": format_rfc3339(p.time + self.spec.within),
                })
            })
            .collect();
        serde_json::json!({ "pending": pending })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Timers;
    use std::sync::Arc;

    const W: Millis = 100;

    struct Harness {
        t: JoinTemplate,
        state: JoinState,
        out: Vec<Record>,
        timers: Timers,
        seq: u64,
    }

    impl Harness {
        fn new(kind: JoinKind) -> Harness {
            Harness {
                t: JoinTemplate::new(
                    "j",
                    JoinTemplateSpec {
                        name: "PAID".into(),
                        timeout: "PAID_TIMEOUT".into(),
                        left: "L".into(),
                        right: "R".into(),
                        key: None,
                        within: W,
                        kind,
                        left_fields: vec![FieldPath::parse("amount")],
                        right_fields: vec![FieldPath::parse("method")],
                    },
                ),
                state: JoinState::default(),
                out: vec![],
                timers: Timers::new(),
                seq: 0,
            }
        }
        fn send(&mut self, ty: &str, time: Millis) {
            self.seq += 1;
            let e = Event {
                seq: self.seq,
                type_index: 0,
                type_name: Arc::from(ty),
                key: Arc::from("K"),
                time,
                id: None,
                payload: serde_json::json!({"amount": 10, "method": "card"}).into(),
            };
            let mut cx = Context::for_test("K", time, &mut self.out, &mut self.timers);
            self.t.on_event(&mut self.state, &e, &mut cx).unwrap();
        }
        /// Fires the pending timer if the watermark has reached it.
        fn advance(&mut self, watermark: Millis) {
            while let Some((name, at)) = self.timers.iter().find(|t| t.1 <= watermark).cloned() {
                self.timers.retain(|t| t.0 != name);
                let mut cx = Context::for_test("K", at, &mut self.out, &mut self.timers);
                self.t.on_timer(&mut self.state, &name, &mut cx).unwrap();
            }
        }
        fn names(&self) -> Vec<(String, Millis)> {
            self.out
                .iter()
                .map(|r| (r.name.clone(), r.event_time.unwrap()))
                .collect()
        }
        fn done(&self) -> bool {
            self.t.is_complete(&self.state) && self.timers.is_empty()
        }
    }

    #[test]
    fn joins_in_either_arrival_order_at_the_later_time() {
        for (first, second) in [("L", "R"), ("R", "L")] {
            let mut h = Harness::new(JoinKind::Inner);
            h.send(first, 50);
            assert!(!h.done());
            h.send(second, 20);
            assert_eq!(h.names(), vec![("PAID".to_string(), 50)]);
            let r = &h.out[0];
            assert_eq!(
                r.details()[2],
                ("left".into(), serde_json::json!({"amount": 10}))
            );
            assert_eq!(
                r.details()[3],
                ("right".into(), serde_json::json!({"method": "card"}))
            );
            assert!(h.done(), "joined: state and timer gone");
        }
    }

    #[test]
    fn the_bound_is_inclusive() {
        let mut h = Harness::new(JoinKind::Left);
        h.send("L", 0);
        h.send("R", W);
        assert_eq!(h.names(), vec![("PAID".to_string(), W)]);
        assert!(h.done());

        let mut h = Harness::new(JoinKind::Left);
        h.send("L", 0);
        h.send("R", W + 1);
        assert!(h.out.is_empty());
        h.advance(W + 1);
        assert_eq!(h.names(), vec![("PAID_TIMEOUT".to_string(), W)]);
        assert_eq!(
            h.out[0].details()[0],
            ("side".into(), serde_json::json!("left"))
        );
        // The unmatched right event of a left join ends silently at its own deadline.
        h.advance(2 * W + 2);
        assert_eq!(h.out.len(), 1);
        assert!(h.done());
    }

    #[test]
    fn timeout_fires_on_a_quiet_stream_and_a_later_partner_does_not_join() {
        let mut h = Harness::new(JoinKind::Left);
        h.send("L", 0);
        assert_eq!(h.timers[..], [(EXPIRE.into(), W + 1)]);
        h.advance(W);
        assert!(h.out.is_empty(), "not before the deadline has passed");
        h.advance(W + 1);
        assert_eq!(h.names(), vec![("PAID_TIMEOUT".to_string(), W)]);
        assert!(h.done());
        // A partner after the timeout: nothing to join (a left join drops it at its deadline).
        h.send("R", 50);
        h.advance(1_000);
        assert_eq!(h.out.len(), 1);
        assert!(h.done());
    }

    #[test]
    fn inner_times_out_silently_and_outer_reports_both_sides() {
        let mut h = Harness::new(JoinKind::Inner);
        h.send("L", 0);
        h.advance(1_000);
        assert!(h.out.is_empty() && h.done());

        let mut h = Harness::new(JoinKind::Outer);
        h.send("R", 0);
        h.send("L", 500);
        h.advance(10_000);
        assert_eq!(
            h.names(),
            vec![
                ("PAID_TIMEOUT".to_string(), W),
                ("PAID_TIMEOUT".to_string(), 500 + W)
            ]
        );
        assert_eq!(h.out[0].details()[0].1, "right");
        assert!(h.done());
    }

    #[test]
    fn several_left_events_pair_oldest_first_one_each() {
        let mut h = Harness::new(JoinKind::Left);
        h.send("L", 10);
        h.send("L", 0);
        h.send("R", 30);
        assert_eq!(h.names(), vec![("PAID".to_string(), 30)]);
        assert_eq!(h.out[0].details()[0].1, format_rfc3339(0));
        assert_eq!(h.state.pending.len(), 1);
        let bytes = vigil_storage::codec::encode(&h.state);
        let back: JoinState = vigil_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back.pending[0].time, 10);
        h.advance(10_000);
        assert_eq!(h.names()[1], ("PAID_TIMEOUT".to_string(), 10 + W));
        assert!(h.done());
    }
}
