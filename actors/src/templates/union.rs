//! The `union` template: several event types (from any sources) into one stream of records.
//!
//! Every input event of one of `events` gives exactly one `event` record:
//! - `name`: the configured name;
//! - `key`: the event's key, i.e. its event type's correlation key, or the payload field `key`
//!   when configured (an event without that field is not delivered, like any re-keyed
//!   subscription);
//! - `event_time`: the event's time;
//! - details: `type` (the event type), then each projected field (`fields = ["a", "b.c"]`)
//!   under its dotted path as written (`"b.c"`); a field the event does not have is left out.
//!
//! Duplicates (same event id) are dropped by the runtime like for every instance: each instance
//! ends right after its event (`is_complete`), and its tombstone keeps the event-id hashes for
//! the job's `dedup_retention`.

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::record::{Record, RecordKind};
use crate::spec::UnionTemplateSpec;
use crate::template::{Context, Subscription, Template, TemplateError};

/// Unions event types. Built from a [`UnionTemplateSpec`] with [`UnionTemplate::new`].
pub struct UnionTemplate {
    spec: UnionTemplateSpec,
    /// The projected fields' detail names, as written.
    names: Vec<String>,
}

/// A union instance keeps nothing: it ends after each event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UnionState {
    done: bool,
}

impl UnionTemplate {
    pub fn new(_process: &str, spec: UnionTemplateSpec) -> UnionTemplate {
        let names = spec.fields.iter().map(ToString::to_string).collect();
        UnionTemplate { spec, names }
    }
}

impl Template for UnionTemplate {
    type State = UnionState;

    /// Its handlers return no errors; a panic is a bug, and the runtime recovers from it.
    fn handles_in_place(&self) -> bool {
        true
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        self.spec
            .events
            .iter()
            .map(|event| match &self.spec.key {
                None => Subscription::new(event.clone()),
                Some(key) => Subscription::keyed_by(event.clone(), key.clone()),
            })
            .collect()
    }

    fn on_event(
        &self,
        state: &mut UnionState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        let mut record = Record::new(RecordKind::Event, &self.spec.name, cx.key(), event.time)
            .with("type", &*event.type_name);
        for (path, name) in self.spec.fields.iter().zip(&self.names) {
            if let Some(value) = event.field(path) {
                record = record.with(name, value.to_value());
            }
        }
        cx.emit(record);
        state.done = true;
        Ok(())
    }

    fn is_complete(&self, state: &UnionState) -> bool {
        state.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FieldPath;
    use std::sync::Arc;

    fn event(ty: &str, time: i64, payload: serde_json::Value) -> Event {
        Event {
            seq: 1,
            type_index: 0,
            type_name: Arc::from(ty),
            key: Arc::from("K"),
            time,
            id: None,
            payload: payload.into(),
        }
    }

    #[test]
    fn one_record_per_event_with_type_and_projection() {
        let t = UnionTemplate::new(
            "u",
            UnionTemplateSpec {
                name: "ORDER_ACTIVITY".into(),
                events: vec!["A".into(), "B".into()],
                key: Some(FieldPath::parse("customer")),
                fields: vec![FieldPath::parse("amount"), FieldPath::parse("b.c")],
            },
        );
        let subs = t.subscriptions();
        assert_eq!(subs.len(), 2);
        assert_eq!(
            subs[1],
            Subscription::keyed_by("B", FieldPath::parse("customer"))
        );
        let (mut out, mut timers) = (Vec::new(), crate::template::Timers::new());
        let mut state = UnionState::default();
        let mut cx = Context::for_test("C-1", 5, &mut out, &mut timers);
        t.on_event(
            &mut state,
            &event("B", 5, serde_json::json!({"b": {"c": 7}})),
            &mut cx,
        )
        .unwrap();
        assert!(t.is_complete(&state));
        assert!(timers.is_empty());
        let r = &out[0];
        assert_eq!(
            (r.kind, r.name.as_str()),
            (RecordKind::Event, "ORDER_ACTIVITY")
        );
        assert_eq!((r.key.as_deref(), r.event_time), (Some("C-1"), Some(5)));
        assert_eq!(
            r.details(),
            vec![
                ("type".to_string(), serde_json::json!("B")),
                ("b.c".to_string(), serde_json::json!(7)),
            ]
        );
        let bytes = vigil_storage::codec::encode(&state);
        assert!(vigil_storage::codec::decode::<UnionState>(&bytes).is_ok());
    }
}
