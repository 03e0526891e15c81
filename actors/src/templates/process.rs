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
//!
//! Alert state (all opt-in, per SLA):
//! - **escalation**: levels with later deadlines (`after`, from the same origin as `within`),
//!   each firing its own alert once, at its deadline, unless the step was reached by then;
//!   levels fire in order (a level never fires before the ones below it), each has its own
//!   durable timer (`sla:<name>:<level>`), and a late step seen before a timer fired fires the
//!   levels it passed, at their deadlines, like the first alert;
//! - **resolution** (`resolve`): once an alert of the SLA fired, `ALERT_RESOLVED` is emitted
//!   once, with `reason = "reached"` when the step is reached (at that time), or, when the
//!   instance ends first, `"cancelled"`, `"completed"` or `"expired"` (at the end's time), so
//!   every alert that fired is closed exactly once.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use smallvec::{smallvec, SmallVec};

use crate::event::{Event, EventId};
use crate::hash::stable_hash64;
use crate::payload::Field;
use crate::record::{Record, RecordKind};
use crate::spec::ProcessTemplateSpec;
use crate::template::{Context, Subscription, Template, TemplateError};
use crate::time::{format_duration, Millis};

const EXPIRE_TIMER: &str = "expire";
/// The record closing an alert of an SLA with `resolve = true`.
pub const ALERT_RESOLVED: &str = "ALERT_RESOLVED";

pub struct ProcessTemplate {
    process: String,
    spec: ProcessTemplateSpec,
    /// For each SLA, the index of its step and of its `from` step.
    slas: Vec<(usize, Option<usize>)>,
    complete: Option<usize>,
    timer_names: Vec<String>,
    /// For each SLA, the timer of each escalation level: `sla:<name>:<level>` (1-based).
    escalation_timers: Vec<Vec<String>>,
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
        let escalation_timers = spec
            .slas
            .iter()
            .map(|sla| {
                (1..=sla.escalate.len())
                    .map(|level| format!("sla:{}:{level}", sla.name))
                    .collect()
            })
            .collect();
        ProcessTemplate {
            process: process.to_owned(),
            spec,
            slas,
            complete,
            timer_names,
            escalation_timers,
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
                    .with("process", &self.process)
                    .with("step", &spec.name),
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
            self.end(state, reached_at, "completed", cx);
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
            None => {
                for level in 0..self.levels(sla) {
                    let at = self.level_deadline(sla, deadline, level);
                    cx.set_timer(self.level_timer(sla, level), at);
                }
            }
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
        if let Some(level) = self.last_level_before(sla, deadline, reached) {
            self.fire(state, sla, level, cx);
        }
        self.resolve(state, sla, reached, "reached", cx);
        state.slas[sla].settled = true;
        for level in 0..self.levels(sla) {
            cx.cancel_timer(self.level_timer(sla, level));
        }
    }

    /// Level 0 is the SLA's own alert, level `i` its `i`-th escalation.
    fn levels(&self, sla: usize) -> usize {
        1 + self.spec.slas[sla].escalate.len()
    }

    fn level_timer(&self, sla: usize, level: usize) -> &str {
        match level {
            0 => &self.timer_names[sla],
            _ => &self.escalation_timers[sla][level - 1],
        }
    }

    /// The deadline of a level, given the SLA's (level 0) deadline.
    fn level_deadline(&self, sla: usize, deadline: Millis, level: usize) -> Millis {
        let spec = &self.spec.slas[sla];
        match level {
            0 => deadline,
            _ => deadline
                .saturating_sub(spec.within)
                .saturating_add(spec.escalate[level - 1].after),
        }
    }

    /// The highest level whose deadline is before `at`, if any.
    fn last_level_before(&self, sla: usize, deadline: Millis, at: Millis) -> Option<usize> {
        (0..self.levels(sla))
            .rev()
            .find(|&level| self.level_deadline(sla, deadline, level) < at)
    }

    /// Fires every level of the SLA up to `level` that has not fired yet, in order, each at
    /// its deadline.
    fn fire(&self, state: &mut ProcessState, sla: usize, level: usize, cx: &mut Context<'_>) {
        let Some(deadline) = state.slas[sla].deadline else {
            return;
        };
        let spec = &self.spec.slas[sla];
        for l in state.slas[sla].fired_levels()..=level {
            let at = self.level_deadline(sla, deadline, l);
            let record = if l == 0 {
                let record = Record::new(RecordKind::Alert, &spec.name, cx.key(), at)
                    .with("process", &self.process)
                    .with("step", &spec.step)
                    .with("within", format_duration(spec.within));
                match &spec.severity {
                    Some(severity) => record.with("severity", severity),
                    None => record,
                }
            } else {
                let escalation = &spec.escalate[l - 1];
                let record = Record::new(RecordKind::Alert, &escalation.name, cx.key(), at)
                    .with("process", &self.process)
                    .with("step", &spec.step)
                    .with("alert", &spec.name)
                    .with("level", l as u64)
                    .with("after", format_duration(escalation.after));
                match &escalation.severity {
                    Some(severity) => record.with("severity", severity),
                    None => record,
                }
            };
            cx.emit(record);
            let slot = &mut state.slas[sla];
            if l == 0 {
                slot.fired = true;
            } else {
                slot.escalated = l as u32;
            }
            cx.cancel_timer(self.level_timer(sla, l));
        }
    }

    /// With `resolve`, closes the SLA's alert once, if one fired.
    fn resolve(
        &self,
        state: &mut ProcessState,
        sla: usize,
        at: Millis,
        reason: &str,
        cx: &mut Context<'_>,
    ) {
        let spec = &self.spec.slas[sla];
        let slot = &mut state.slas[sla];
        if !spec.resolve || !slot.fired || slot.resolved {
            return;
        }
        slot.resolved = true;
        let level = slot.fired_levels() - 1;
        let severity = match level {
            0 => spec.severity.clone(),
            _ => spec.escalate[level - 1].severity.clone(),
        };
        let mut record = Record::new(RecordKind::Alert, ALERT_RESOLVED, cx.key(), at)
            .with("process", &self.process)
            .with("step", &spec.step)
            .with("alert", &spec.name)
            .with("reason", reason)
            .with("level", level as u64);
        if let Some(severity) = severity {
            record = record.with("severity", severity);
        }
        if let (Some(deadline), "reached") = (slot.deadline, reason) {
            record = record.with("late_by", format_duration(at.saturating_sub(deadline)));
        }
        cx.emit(record);
    }

    /// Ends the instance (`reason`: `completed`, `cancelled` or `expired`): SLA levels whose
    /// deadline passed before `at` fire, the others are dropped, and open alerts resolve.
    fn end(&self, state: &mut ProcessState, at: Millis, reason: &str, cx: &mut Context<'_>) {
        for sla in 0..self.slas.len() {
            let slot = &state.slas[sla];
            if slot.settled {
                continue;
            }
            let Some(deadline) = slot.deadline else {
                continue;
            };
            if let Some(level) = self.last_level_before(sla, deadline, at) {
                self.fire(state, sla, level, cx);
            }
            self.resolve(state, sla, at, reason, cx);
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
///
/// Its lists are inline up to a typical process's length (a heap list beyond): a new instance
/// is then one allocation, not five. With many keys, each allocation of a new instance and
/// each free of a passivated one touches memory not in any cache. The lists encode as `Vec`s
/// do.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessState {
    pub started_at: Option<Millis>,
    /// Per step: how many distinct events it needs, once the start event said so.
    pub expected: SmallVec<[Option<u64>; 4]>,
    pub steps: SmallVec<[StepState; 4]>,
    pub slas: SmallVec<[SlaState; 2]>,
    pub ended: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepState {
    pub reached_at: Option<Millis>,
    /// Distinct values seen (hash, first event time); one inline, in the space of a `Vec`.
    pub seen: SmallVec<[(u64, Millis); 1]>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SlaState {
    /// The deadline of the SLA's own alert (level 0), once its origin is known.
    pub deadline: Option<Millis>,
    /// The SLA's own alert fired.
    pub fired: bool,
    /// The step was reached (with a known deadline): nothing more fires.
    pub settled: bool,
    /// How many escalation levels fired (they fire in order).
    pub escalated: u32,
    /// `ALERT_RESOLVED` was emitted.
    pub resolved: bool,
}

impl SlaState {
    /// How many levels fired, the SLA's own alert included.
    fn fired_levels(&self) -> usize {
        match self.fired {
            true => 1 + self.escalated as usize,
            false => 0,
        }
    }
}

impl Template for ProcessTemplate {
    type State = ProcessState;

    /// Its handlers return no errors; a panic is a bug, and the runtime recovers from it.
    fn handles_in_place(&self) -> bool {
        true
    }

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
            state.steps = smallvec![StepState::default(); self.spec.steps.len()];
            state.expected = smallvec![None; self.spec.steps.len()];
            state.slas = smallvec![SlaState::default(); self.spec.slas.len()];
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
                    state.expected[i] = event.field(path).and_then(Field::as_u64);
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
            self.end(state, event.time, "cancelled", cx);
            return Ok(());
        }
        for (i, step) in self.spec.steps.iter().enumerate() {
            if step.on != ty || state.ended || state.steps[i].reached_at.is_some() {
                continue;
            }
            let distinct = match &step.distinct {
                Some(path) => event
                    .field(path)
                    .map(|v| stable_hash64(v.text().as_bytes())),
                None => None,
            }
            .or_else(|| event.id.as_ref().map(EventId::stable_hash))
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
            self.end(state, cx.time(), "expired", cx);
            return Ok(());
        }
        let level =
            |sla: usize| (0..self.levels(sla)).find(|&level| self.level_timer(sla, level) == timer);
        if let Some((sla, level)) = (0..self.slas.len()).find_map(|sla| Some((sla, level(sla)?))) {
            if state.steps[self.slas[sla].0].reached_at.is_none() && !state.slas[sla].settled {
                self.fire(state, sla, level, cx);
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
    use crate::spec::{EscalationSpec, FieldPath, SlaSpec, StepSpec};
    use crate::template::Timers;
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
                    ..SlaSpec::default()
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
            payload: payload.into(),
        }
    }

    /// The order template with a 24 h SLA that warns, escalates at 48 h and 72 h, and
    /// resolves.
    fn escalating() -> ProcessTemplate {
        let ProcessTemplate {
            process, mut spec, ..
        } = template();
        spec.slas[0].severity = Some("warning".into());
        spec.slas[0].resolve = true;
        spec.slas[0].escalate = vec![
            EscalationSpec {
                name: "SLA_ESCALATED".into(),
                after: 48 * H,
                severity: Some("critical".into()),
            },
            EscalationSpec {
                name: "SLA_BREACHED".into(),
                after: 72 * H,
                severity: None,
            },
        ];
        ProcessTemplate::new(&process, spec)
    }

    struct Run {
        t: ProcessTemplate,
        state: ProcessState,
        outputs: Vec<Record>,
        timers: Timers,
    }

    impl Run {
        fn new() -> Run {
            Run {
                t: template(),
                state: ProcessState::default(),
                outputs: vec![],
                timers: Timers::new(),
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
        fn escalating() -> Run {
            Run {
                t: escalating(),
                ..Run::new()
            }
        }
        /// The details of the `i`-th record, as a JSON object.
        fn details(&self, i: usize) -> Value {
            Value::Object(self.outputs[i].details().into_iter().collect())
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
        assert_eq!(run.timers[..], [("sla:SLA_BREACHED".into(), 24 * H)]);
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

    fn shipped(time: Millis) -> Event {
        event(
            "PARCEL_SHIPPED",
            time,
            serde_json::json!({"parcel_id": "P1"}),
        )
    }

    fn created() -> Event {
        event("ORDER_CREATED", 0, serde_json::json!({"parcels": 1}))
    }

    #[test]
    fn without_alert_options_records_are_those_of_a_plain_sla() {
        let mut run = Run::new();
        run.send(created());
        run.fire("sla:SLA_BREACHED", 24 * H);
        run.send(shipped(30 * H));
        assert_eq!(
            run.details(0),
            serde_json::json!({"process": "order", "step": "shipped", "within": "1d"})
        );
        assert_eq!(run.outputs.len(), 2, "no resolution unless asked for");
    }

    #[test]
    fn every_level_has_its_own_durable_timer() {
        let mut run = Run::escalating();
        run.send(created());
        assert_eq!(
            run.timers[..],
            [
                ("sla:SLA_BREACHED".into(), 24 * H),
                ("sla:SLA_BREACHED:1".into(), 48 * H),
                ("sla:SLA_BREACHED:2".into(), 72 * H),
            ]
        );
    }

    #[test]
    fn levels_fire_once_each_at_their_deadline_then_the_late_step_resolves() {
        let mut run = Run::escalating();
        run.send(created());
        run.fire("sla:SLA_BREACHED", 24 * H);
        run.fire("sla:SLA_BREACHED", 24 * H); // a stale repeat fires nothing
        run.fire("sla:SLA_BREACHED:1", 48 * H);
        run.fire("sla:SLA_BREACHED:2", 72 * H);
        run.send(shipped(80 * H));
        assert_eq!(
            run.names(),
            vec![
                ("SLA_BREACHED".to_string(), 24 * H),
                ("SLA_ESCALATED".to_string(), 48 * H),
                ("SLA_BREACHED".to_string(), 72 * H),
                ("ALL_PARCELS_SHIPPED".to_string(), 80 * H),
                (ALERT_RESOLVED.to_string(), 80 * H),
            ]
        );
        assert_eq!(run.details(0)["severity"], "warning");
        assert_eq!(
            run.details(1),
            serde_json::json!({"process": "order", "step": "shipped", "alert": "SLA_BREACHED",
                "level": 1, "after": "2d", "severity": "critical"})
        );
        assert!(run.details(2).get("severity").is_none());
        assert_eq!(
            run.details(4),
            serde_json::json!({"process": "order", "step": "shipped", "alert": "SLA_BREACHED",
                "reason": "reached", "level": 2, "late_by": "2d8h"})
        );
        assert!(run.timers.is_empty());
    }

    #[test]
    fn a_step_reached_between_levels_resolves_and_stops_the_escalation() {
        let mut run = Run::escalating();
        run.send(created());
        run.fire("sla:SLA_BREACHED", 24 * H);
        run.send(shipped(30 * H));
        assert_eq!(
            run.names(),
            vec![
                ("SLA_BREACHED".to_string(), 24 * H),
                ("ALL_PARCELS_SHIPPED".to_string(), 30 * H),
                (ALERT_RESOLVED.to_string(), 30 * H),
            ]
        );
        assert_eq!(run.details(2)["level"], 0);
        assert_eq!(run.details(2)["severity"], "warning");
        assert!(
            run.timers.is_empty(),
            "the pending levels' timers are cancelled"
        );
        // A timer already due when the step was reached (same watermark) is stale.
        run.fire("sla:SLA_BREACHED:1", 48 * H);
        assert_eq!(run.outputs.len(), 3);
    }

    #[test]
    fn a_late_step_seen_before_the_timers_fires_the_levels_it_passed_then_resolves() {
        let mut run = Run::escalating();
        run.send(created());
        run.send(shipped(50 * H));
        assert_eq!(
            run.names(),
            vec![
                ("ALL_PARCELS_SHIPPED".to_string(), 50 * H),
                ("SLA_BREACHED".to_string(), 24 * H),
                ("SLA_ESCALATED".to_string(), 48 * H),
                (ALERT_RESOLVED.to_string(), 50 * H),
            ]
        );
        assert_eq!(run.details(3)["level"], 1);
        assert_eq!(run.details(3)["late_by"], "1d2h");
        assert!(run.timers.is_empty());
        for (timer, at) in [("sla:SLA_BREACHED", 24 * H), ("sla:SLA_BREACHED:2", 72 * H)] {
            run.fire(timer, at);
        }
        assert_eq!(
            run.outputs.len(),
            4,
            "nothing fires twice, nothing after resolution"
        );
    }

    #[test]
    fn a_step_reached_on_time_fires_and_resolves_nothing() {
        let mut run = Run::escalating();
        run.send(created());
        run.send(shipped(24 * H));
        assert_eq!(
            run.names(),
            vec![("ALL_PARCELS_SHIPPED".to_string(), 24 * H)]
        );
        assert!(run.timers.is_empty());
    }

    #[test]
    fn a_timer_fires_the_levels_below_it_that_have_not_fired() {
        let mut run = Run::escalating();
        run.send(created());
        run.fire("sla:SLA_BREACHED:1", 48 * H);
        assert_eq!(
            run.names(),
            vec![
                ("SLA_BREACHED".to_string(), 24 * H),
                ("SLA_ESCALATED".to_string(), 48 * H),
            ]
        );
    }

    #[test]
    fn cancel_between_levels_resolves_as_cancelled_and_drops_later_levels() {
        let mut run = Run::escalating();
        run.send(created());
        run.fire("sla:SLA_BREACHED", 24 * H);
        run.send(event("ORDER_CANCELLED", 36 * H, serde_json::json!({})));
        assert_eq!(
            run.names(),
            vec![
                ("SLA_BREACHED".to_string(), 24 * H),
                (ALERT_RESOLVED.to_string(), 36 * H),
            ]
        );
        assert_eq!(run.details(1)["reason"], "cancelled");
        assert!(run.details(1).get("late_by").is_none());
        assert!(run.state.ended);
    }

    #[test]
    fn cancel_after_levels_not_yet_fired_fires_them_first() {
        let mut run = Run::escalating();
        run.send(created());
        run.send(event("ORDER_CANCELLED", 60 * H, serde_json::json!({})));
        assert_eq!(
            run.names(),
            vec![
                ("SLA_BREACHED".to_string(), 24 * H),
                ("SLA_ESCALATED".to_string(), 48 * H),
                (ALERT_RESOLVED.to_string(), 60 * H),
            ]
        );
    }

    #[test]
    fn cancel_before_any_deadline_raises_and_resolves_nothing() {
        let mut run = Run::escalating();
        run.send(created());
        run.send(event("ORDER_CANCELLED", 10 * H, serde_json::json!({})));
        assert!(run.outputs.is_empty());
    }

    #[test]
    fn expiry_resolves_an_open_alert_as_expired() {
        let ProcessTemplate {
            process, mut spec, ..
        } = escalating();
        spec.expire_after = Some(30 * H);
        let mut run = Run {
            t: ProcessTemplate::new(&process, spec),
            ..Run::new()
        };
        run.send(created());
        run.fire("sla:SLA_BREACHED", 24 * H);
        run.fire("expire", 30 * H);
        assert_eq!(run.names()[1], (ALERT_RESOLVED.to_string(), 30 * H));
        assert_eq!(run.details(1)["reason"], "expired");
    }

    #[test]
    fn escalation_levels_count_from_the_from_step() {
        let ProcessTemplate {
            process, mut spec, ..
        } = escalating();
        spec.steps.insert(
            0,
            StepSpec {
                name: "paid".into(),
                on: "PAYMENT_AUTHORIZED".into(),
                expect: None,
                distinct: None,
                emit: None,
            },
        );
        spec.slas[0].from = Some("paid".into());
        let mut run = Run {
            t: ProcessTemplate::new(&process, spec),
            ..Run::new()
        };
        run.send(created());
        assert!(run.timers.is_empty());
        run.send(event("PAYMENT_AUTHORIZED", 10 * H, serde_json::json!({})));
        assert_eq!(
            run.timers[..],
            [
                ("sla:SLA_BREACHED".into(), 34 * H),
                ("sla:SLA_BREACHED:1".into(), 58 * H),
                ("sla:SLA_BREACHED:2".into(), 82 * H),
            ]
        );
    }

    #[test]
    fn alert_state_survives_the_codec() {
        let mut run = Run::escalating();
        run.send(created());
        run.fire("sla:SLA_BREACHED:1", 48 * H);
        let bytes = vigil_storage::codec::encode(&run.state);
        let back: ProcessState = vigil_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back.slas[0].escalated, 1);
        assert!(back.slas[0].fired && !back.slas[0].resolved);
    }

    /// The inline lists encode as the `Vec`s that state written before them had: the same
    /// bytes, inline or spilled to the heap.
    #[test]
    fn inline_lists_encode_as_vecs() {
        #[derive(Serialize)]
        struct Step {
            reached_at: Option<Millis>,
            seen: Vec<(u64, Millis)>,
        }
        #[derive(Serialize)]
        struct AsVecs {
            started_at: Option<Millis>,
            expected: Vec<Option<u64>>,
            steps: Vec<Step>,
            slas: Vec<SlaState>,
            ended: bool,
        }
        let mut run = Run::escalating();
        run.send(event("ORDER_CREATED", 0, serde_json::json!({"parcels": 3})));
        run.send(event(
            "PARCEL_SHIPPED",
            H,
            serde_json::json!({"parcel_id": "P-1"}),
        ));
        run.send(event(
            "PARCEL_SHIPPED",
            2 * H,
            serde_json::json!({"parcel_id": "P-2"}),
        ));
        let mut state = run.state.clone();
        // Past the inline lengths: six steps, three SLAs.
        for grown in [run.state.clone(), {
            state
                .steps
                .extend(std::iter::repeat_n(state.steps[0].clone(), 4));
            state.expected.extend([Some(7); 4]);
            state
                .slas
                .extend([state.slas[0].clone(), state.slas[0].clone()]);
            state
        }] {
            assert!(
                grown.steps[0].seen.len() == 2,
                "spilled: {:?}",
                grown.steps[0]
            );
            let as_vecs = AsVecs {
                started_at: grown.started_at,
                expected: grown.expected.to_vec(),
                steps: grown
                    .steps
                    .iter()
                    .map(|s| Step {
                        reached_at: s.reached_at,
                        seen: s.seen.to_vec(),
                    })
                    .collect(),
                slas: grown.slas.to_vec(),
                ended: grown.ended,
            };
            assert_eq!(
                vigil_storage::codec::encode(&grown),
                vigil_storage::codec::encode(&as_vecs)
            );
        }
    }
}
