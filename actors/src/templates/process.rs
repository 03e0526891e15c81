//! The `process` template: a business process with steps and SLAs, declared in TOML.
//!
//! Semantics, all in event time:
//! - the `start` event starts the clock; events of the process may arrive before it (they
//!   are remembered) and duplicates are ignored by the runtime;
//! - a step is reached by its `on` event, or, with `expect`, once as many distinct events
//!   (by `distinct`) arrived as the start event's field says; it is reached at the latest of
//!   their times, and may `emit` a complex event at that time;
//! - an SLA's deadline is the start (or its `from` step) plus `within`; if its step is not
//!   reached by the deadline, the alert fires once, at the deadline: when the watermark passes
//!   it, or as soon as the step is known to have been reached after it;
//! - the instance ends when `complete` is reached, on a `cancel` event, or `expire_after` its
//!   start; SLAs whose deadline passed before the end fire, the others are dropped.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::hash::stable_hash64;
use crate::record::{Record, RecordKind};
use crate::spec::ProcessTemplateSpec;
use crate::template::{Context, Subscription, Template, TemplateError};
use crate::time::{format_duration, Millis};

const EXPIRE_TIMER: &str = "expire";

pub struct ProcessTemplate {
    process: String,
    spec: ProcessTemplateSpec,
    /// For each SLA, the index of its step and of its `from` step.
    slas: Vec<(usize, Option<usize>)>,
    complete: Option<usize>,
    timer_names: Vec<String>,
}

impl ProcessTemplate {
    pub fn new(process: &str, spec: ProcessTemplateSpec) -> ProcessTemplate {
        let step_index = |name: &str| spec.steps.iter().position(|s| s.name == name);
        let slas = spec
            .slas
            .iter()
            .map(|sla| {
                let step = step_index(&sla.step).expect("topology checked SLA steps");
                (step, sla.from.as_deref().and_then(step_index))
            })
            .collect();
        let complete = spec.complete.as_deref().and_then(step_index);
        let timer_names = spec
            .slas
            .iter()
            .map(|sla| format!("sla:{}", sla.name))
            .collect();
        ProcessTemplate {
            process: process.to_owned(),
            spec,
            slas,
            complete,
            timer_names,
        }
    }

    fn step_done(
        &self,
        state: &mut ProcessState,
        step: usize,
        reached_at: Millis,
        cx: &mut Context<'_>,
    ) {
        state.steps[step].reached_at = Some(reached_at);
        let spec = &self.spec.steps[step];
        if let Some(name) = &spec.emit {
            cx.emit(
                Record::new(RecordKind::Event, name, cx.key(), reached_at)
                    .with("process", self.process.clone())
                    .with("step", spec.name.clone()),
            );
        }
        for (i, &(sla_step, from)) in self.slas.iter().enumerate() {
            if sla_step == step {
                self.settle(state, i, cx);
            }
            if from == Some(step) {
                self.arm(state, i, reached_at + self.spec.slas[i].within, cx);
            }
        }
        if self.complete == Some(step) {
            self.end(state, reached_at, cx);
        }
    }

    /// The SLA's deadline became known: breached already, or wait for it.
    fn arm(&self, state: &mut ProcessState, sla: usize, deadline: Millis, cx: &mut Context<'_>) {
        if state.slas[sla].deadline.is_some() {
            return;
        }
        state.slas[sla].deadline = Some(deadline);
        match state.steps[self.slas[sla].0].reached_at {
            Some(_) => self.settle(state, sla, cx),
            None => cx.set_timer(&self.timer_names[sla], deadline),
        }
    }

    /// The SLA's step was reached: the alert fires if that was after the deadline.
    fn settle(&self, state: &mut ProcessState, sla: usize, cx: &mut Context<'_>) {
        let (Some(deadline), Some(reached)) = (
            state.slas[sla].deadline,
            state.steps[self.slas[sla].0].reached_at,
        ) else {
            return;
        };
        if reached > deadline {
            self.fire(state, sla, cx);
        }
        state.slas[sla].settled = true;
        cx.cancel_timer(&self.timer_names[sla]);
    }

    fn fire(&self, state: &mut ProcessState, sla: usize, cx: &mut Context<'_>) {
        let slot = &mut state.slas[sla];
        let Some(deadline) = slot.deadline else {
            return;
        };
        if slot.fired {
            return;
        }
        slot.fired = true;
        let spec = &self.spec.slas[sla];
        cx.emit(
            Record::new(RecordKind::Alert, &spec.name, cx.key(), deadline)
                .with("process", self.process.clone())
                .with("step", spec.step.clone())
                .with("within", format_duration(spec.within)),
        );
        cx.cancel_timer(&self.timer_names[sla]);
    }

    fn end(&self, state: &mut ProcessState, at: Millis, cx: &mut Context<'_>) {
        for sla in 0..self.slas.len() {
            let slot = &state.slas[sla];
            if !slot.settled && !slot.fired && slot.deadline.is_some_and(|d| d < at) {
                self.fire(state, sla, cx);
            }
        }
        state.ended = true;
    }

    /// Re-checks a counted step whose expected count may have become known or been met.
    fn check_step(&self, state: &mut ProcessState, step: usize, cx: &mut Context<'_>) {
        if state.ended || state.steps[step].reached_at.is_some() {
            return;
        }
        let need = match &self.spec.steps[step].expect {
            None => 1,
            Some(_) => match state.expected.get(step).copied().flatten() {
                Some(n) => n,
                None => return,
            },
        };
        let seen = &state.steps[step].seen;
        if seen.len() as u64 >= need {
            let at = seen
                .iter()
                .map(|&(_, t)| t)
                .max()
                .or(state.started_at)
                .unwrap_or(cx.time());
            self.step_done(state, step, at, cx);
        }
    }
}

/// One process instance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessState {
    pub started_at: Option<Millis>,
    /// Per step: how many distinct events it needs, once the start event said so.
    pub expected: Vec<Option<u64>>,
    pub steps: Vec<StepState>,
    pub slas: Vec<SlaState>,
    pub ended: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepState {
    pub reached_at: Option<Millis>,
    /// Distinct values seen (hash, first event time).
    pub seen: Vec<(u64, Millis)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlaState {
    pub deadline: Option<Millis>,
    pub fired: bool,
    pub settled: bool,
}

impl Template for ProcessTemplate {
    type State = ProcessState;

    fn subscriptions(&self) -> Vec<Subscription> {
        let mut types = vec![self.spec.start.clone()];
        types.extend(self.spec.cancel.iter().cloned());
        types.extend(self.spec.steps.iter().map(|s| s.on.clone()));
        let mut subscriptions: Vec<Subscription> = Vec::new();
        for ty in types {
            if !subscriptions.iter().any(|s| s.event_type == ty) {
                subscriptions.push(Subscription::new(ty));
            }
        }
        subscriptions
    }

    fn on_event(
        &self,
        state: &mut ProcessState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if state.ended {
            return Ok(());
        }
        if state.steps.is_empty() {
            state.steps = vec![StepState::default(); self.spec.steps.len()];
            state.expected = vec![None; self.spec.steps.len()];
            state.slas = vec![SlaState::default(); self.spec.slas.len()];
            if let Some(expire) = self.spec.expire_after {
                cx.set_timer(EXPIRE_TIMER, event.time.saturating_add(expire));
            }
        }
        let ty = &*event.type_name;
        if ty == self.spec.start && state.started_at.is_none() {
            state.started_at = Some(event.time);
            if let Some(expire) = self.spec.expire_after {
                cx.set_timer(EXPIRE_TIMER, event.time.saturating_add(expire));
            }
            for (i, step) in self.spec.steps.iter().enumerate() {
                if let Some(path) = &step.expect {
                    state.expected[i] = event.field(path).and_then(Value::as_u64);
                }
            }
            for (i, sla) in self.spec.slas.iter().enumerate() {
                if sla.from.is_none() {
                    self.arm(state, i, event.time.saturating_add(sla.within), cx);
                }
            }
            for step in 0..self.spec.steps.len() {
                self.check_step(state, step, cx);
            }
        }
        if self.spec.cancel.iter().any(|c| c == ty) {
            self.end(state, event.time, cx);
            return Ok(());
        }
        for (i, step) in self.spec.steps.iter().enumerate() {
            if step.on != ty || state.ended || state.steps[i].reached_at.is_some() {
                continue;
            }
            let distinct = match &step.distinct {
                Some(path) => event.field(path).map(|v| match v {
                    Value::String(s) => stable_hash64(s.as_bytes()),
                    other => stable_hash64(other.to_string().as_bytes()),
                }),
                None => None,
            }
            .or_else(|| event.id.as_deref().map(|id| stable_hash64(id.as_bytes())))
            .unwrap_or(event.seq);
            let seen = &mut state.steps[i].seen;
            if !seen.iter().any(|&(h, _)| h == distinct) {
                seen.push((distinct, event.time));
            }
            self.check_step(state, i, cx);
        }
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut ProcessState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if timer == EXPIRE_TIMER {
            self.end(state, cx.time(), cx);
        } else if let Some(sla) = self.timer_names.iter().position(|n| n == timer) {
            if state.steps[self.slas[sla].0].reached_at.is_none() && !state.slas[sla].settled {
                self.fire(state, sla, cx);
            }
        }
        Ok(())
    }

    fn is_complete(&self, state: &ProcessState) -> bool {
        state.ended
    }

    fn describe(&self, state: &ProcessState) -> Value {
        let steps: serde_json::Map<String, Value> = self
            .spec
            .steps
            .iter()
            .zip(&state.steps)
            .map(|(spec, s)| {
                let reached = s.reached_at.map(crate::time::format_rfc3339);
                (
                    spec.name.clone(),
                    serde_json::json!({ "reached_at": reached, "seen": s.seen.len() }),
                )
            })
            .collect();
        serde_json::json!({
            "started_at": state.started_at.map(crate::time::format_rfc3339),
            "steps": steps,
            "ended": state.ended,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{FieldPath, SlaSpec, StepSpec};
    use std::sync::Arc;

    const H: Millis = 3_600_000;

    fn template() -> ProcessTemplate {
        ProcessTemplate::new(
            "order",
            ProcessTemplateSpec {
                start: "ORDER_CREATED".into(),
                cancel: vec!["ORDER_CANCELLED".into()],
                complete: Some("delivered".into()),
                expire_after: None,
                steps: vec![
                    StepSpec {
                        name: "shipped".into(),
                        on: "PARCEL_SHIPPED".into(),
                        expect: Some(FieldPath::parse("parcels")),
                        distinct: Some(FieldPath::parse("parcel_id")),
                        emit: Some("ALL_PARCELS_SHIPPED".into()),
                    },
                    StepSpec {
                        name: "delivered".into(),
                        on: "PARCEL_DELIVERED".into(),
                        expect: Some(FieldPath::parse("parcels")),
                        distinct: Some(FieldPath::parse("parcel_id")),
                        emit: None,
                    },
                ],
                slas: vec![SlaSpec {
                    name: "SLA_BREACHED".into(),
                    step: "shipped".into(),
                    within: 24 * H,
                    from: None,
                }],
            },
        )
    }

    fn event(ty: &str, time: Millis, payload: Value) -> Event {
        Event {
            seq: time as u64,
            type_index: 0,
            type_name: Arc::from(ty),
            key: Arc::from("ORD-1"),
            time,
            id: None,
            payload,
        }
    }

    struct Run {
        t: ProcessTemplate,
        state: ProcessState,
        outputs: Vec<Record>,
        timers: Vec<(String, Millis)>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                t: template(),
                state: ProcessState::default(),
                outputs: vec![],
                timers: vec![],
            }
        }
        fn send(&mut self, e: Event) {
            let mut cx = Context::for_test("ORD-1", e.time, &mut self.outputs, &mut self.timers);
            self.t.on_event(&mut self.state, &e, &mut cx).unwrap();
        }
        fn fire(&mut self, name: &str, at: Millis) {
            let mut cx = Context::for_test("ORD-1", at, &mut self.outputs, &mut self.timers);
            self.t.on_timer(&mut self.state, name, &mut cx).unwrap();
        }
        fn names(&self) -> Vec<(String, Millis)> {
            self.outputs
                .iter()
                .map(|r| (r.name.clone(), r.event_time.unwrap()))
                .collect()
        }
    }

    #[test]
    fn all_parcels_shipped_once_the_data_dependent_count_is_met_even_before_the_start() {
        let mut run = Run::new();
        run.send(event(
            "PARCEL_SHIPPED",
            5 * H,
            serde_json::json!({"parcel_id": "P1"}),
        ));
        run.send(event(
            "PARCEL_SHIPPED",
            6 * H,
            serde_json::json!({"parcel_id": "P1"}),
        ));
        assert!(run.outputs.is_empty());
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 2})));
        assert!(run.outputs.is_empty(), "one distinct parcel of two");
        assert_eq!(run.timers, vec![("sla:SLA_BREACHED".to_string(), 24 * H)]);
        run.send(event(
            "PARCEL_SHIPPED",
            7 * H,
            serde_json::json!({"parcel_id": "P2"}),
        ));
        assert_eq!(
            run.names(),
            vec![("ALL_PARCELS_SHIPPED".to_string(), 7 * H)]
        );
        assert!(
            run.timers.is_empty(),
            "the SLA was met, its timer cancelled"
        );
    }

    #[test]
    fn sla_fires_at_the_deadline_and_late_shipping_still_completes_the_step() {
        let mut run = Run::new();
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 1})));
        run.fire("sla:SLA_BREACHED", 24 * H);
        run.send(event(
            "PARCEL_SHIPPED",
            30 * H,
            serde_json::json!({"parcel_id": "P1"}),
        ));
        assert_eq!(
            run.names(),
            vec![
                ("SLA_BREACHED".to_string(), 24 * H),
                ("ALL_PARCELS_SHIPPED".to_string(), 30 * H)
            ]
        );
    }

    #[test]
    fn a_late_step_seen_before_the_timer_still_breaches_at_the_deadline() {
        let mut run = Run::new();
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 1})));
        run.send(event(
            "PARCEL_SHIPPED",
            24 * H + 1,
            serde_json::json!({"parcel_id": "P1"}),
        ));
        assert_eq!(
            run.names(),
            vec![
                ("ALL_PARCELS_SHIPPED".to_string(), 24 * H + 1),
                ("SLA_BREACHED".to_string(), 24 * H)
            ]
        );
    }

    #[test]
    fn cancelled_orders_raise_no_alert_unless_cancelled_after_the_deadline() {
        let mut run = Run::new();
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 1})));
        run.send(event("ORDER_CANCELLED", 24 * H, serde_json::json!({})));
        assert!(run.outputs.is_empty() && run.state.ended);

        let mut run = Run::new();
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 1})));
        run.send(event("ORDER_CANCELLED", 24 * H + 1, serde_json::json!({})));
        assert_eq!(run.names(), vec![("SLA_BREACHED".to_string(), 24 * H)]);
    }

    #[test]
    fn delivery_of_every_parcel_completes_the_instance() {
        let mut run = Run::new();
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 1})));
        run.send(event(
            "PARCEL_SHIPPED",
            H,
            serde_json::json!({"parcel_id": "P1"}),
        ));
        assert!(!run.t.is_complete(&run.state));
        run.send(event(
            "PARCEL_DELIVERED",
            30 * H,
            serde_json::json!({"parcel_id": "P1"}),
        ));
        assert!(run.t.is_complete(&run.state));
    }
}
