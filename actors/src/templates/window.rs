//! The `window` template: event-time tumbling and sliding windows per group, pane based.
//!
//! Windows are `[end - size, end)` for every `end` that is a multiple of `slide` since the
//! epoch (tumbling when `slide == size`). One instance per group (the `group_by` values joined
//! with `|`, or `*`), keyed by the router. Semantics, all in event time, with `W` the watermark:
//!
//! - **Panes.** Time is cut into panes of `gcd(size, slide)`. An event updates the partial
//!   aggregates of exactly one pane, whatever the window size: a 48 h window sliding every
//!   minute costs per event what a 1 minute tumbling window does. A window's result combines
//!   its `size / pane` panes when it is emitted. State is bounded by panes, not events
//!   (`distinct_count` keeps the set of distinct value hashes of each pane).
//! - **Cheap to clone.** The runtime clones an instance's state before every handler call (a
//!   failed attempt is rolled back), so it is made of persistent parts that a clone shares
//!   ([`Panes`]: the newest pane inline, the older ones in an `imbl` tree of shared panes;
//!   distinct sets as `imbl` sets). A clone costs the same for a 48 h sliding window as for a
//!   1 minute tumbling one: one pane and a few reference counts.
//! - **Close.** When `W` reaches a window's end, its result is emitted (`firing = "final"`).
//!   One durable timer per instance, always at the next thing to do (the next window end with
//!   data, or the next pane to drop), so results come even on a quiet stream.
//! - **Lateness.** A window stays updatable until `W >= end + allowed_lateness`. An event
//!   for a window that closed but has not expired updates it and re-emits its result at once
//!   (`firing = "late"`). An event whose every window expired is *late*: it is emitted as a
//!   record of kind `dead_letter` named `LATE_EVENT` (the runtime writes every `dead_letter`
//!   record to the job's dead-letter sink), and counted nowhere.
//! - **Early results** (`emit = "on_update"`): every event also emits the partial result of the
//!   next window to close that contains it (`firing = "early"`).
//! - **Cleanup.** A pane is dropped once the last window containing it expired; an instance with
//!   no panes is complete, and the runtime deletes it (no tombstone, no event-id hashes: see
//!   [`Template::dedup_by_event_id`]). Groups that go quiet leave no state.

use std::collections::BTreeMap;
use std::sync::Arc;

use foldhash::HashSet;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Event;
use crate::hash::stable_hash64;
use crate::record::{Record, RecordKind};
use crate::spec::{AggregateFn, GroupBy, WindowEmit, WindowTemplateSpec};
use crate::template::{Context, KeyPart, Subscription, Template, TemplateError};
use crate::time::{format_duration, format_rfc3339, Millis, Rfc3339};

/// The name of the instance's one timer.
pub const TIMER: &str = "window";
/// The `name` of the side-output record of an event that came after its windows expired.
pub const LATE_EVENT: &str = "LATE_EVENT";

pub struct WindowTemplate {
    process: String,
    spec: WindowTemplateSpec,
    /// Pane length: gcd(size, slide).
    pane: Millis,
}

/// One group's windows: what is stored in redb between events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowState {
    /// Panes that received at least one event, by start time.
    pub panes: Panes,
    /// The largest watermark (or timer time) seen: every window ending at or before it has
    /// been closed.
    pub watermark: Option<Millis>,
}

/// A group's panes by start time, cheap to clone: the runtime clones the state before every
/// handler call. The newest pane, which nearly every event updates, is inline; the older
/// ones are in a persistent tree (`imbl`) of shared panes, so a clone costs one pane's copy
/// and a reference count whatever the window size, and an event for an older pane copies
/// only the tree nodes on the path to it (reference counts) and that pane.
///
/// Encodes as a plain map of start time to pane: the bytes of a `BTreeMap<Millis, Pane>`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Panes {
    /// Every pane but the newest. Invariant: all start before `newest`, empty without it.
    older: OrdMap<Millis, Arc<Pane>>,
    newest: Option<(Millis, Pane)>,
}

impl Panes {
    pub fn len(&self) -> usize {
        self.older.len() + usize::from(self.newest.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.newest.is_none()
    }

    /// The panes by start time.
    pub fn iter(&self) -> impl Iterator<Item = (Millis, &Pane)> + '_ {
        self.older
            .iter()
            .map(|(&start, pane)| (start, &**pane))
            .chain(self.newest.iter().map(|(start, pane)| (*start, pane)))
    }

    /// The panes starting in `range`, by start time.
    pub fn range(
        &self,
        range: impl std::ops::RangeBounds<Millis>,
    ) -> impl Iterator<Item = (Millis, &Pane)> + '_ {
        let newest = self
            .newest
            .as_ref()
            .filter(|(start, _)| range.contains(start))
            .map(|(start, pane)| (*start, pane));
        self.older
            .range(range)
            .map(|(&start, pane)| (start, &**pane))
            .chain(newest)
    }

    /// The start times, in order.
    pub fn keys(&self) -> impl Iterator<Item = Millis> + '_ {
        self.iter().map(|(start, _)| start)
    }

    /// The start of the oldest pane.
    pub fn first(&self) -> Option<Millis> {
        match self.older.get_min() {
            Some((start, _)) => Some(*start),
            None => self.newest.as_ref().map(|(start, _)| *start),
        }
    }

    pub fn get(&self, start: Millis) -> Option<&Pane> {
        match &self.newest {
            Some((newest, pane)) if *newest == start => Some(pane),
            _ => self.older.get(&start).map(|pane| &**pane),
        }
    }

    /// The pane starting at `start`, made with `new` if there is none.
    pub fn get_or_insert_with(&mut self, start: Millis, new: impl FnOnce() -> Pane) -> &mut Pane {
        match &self.newest {
            Some((newest, _)) if start < *newest => {
                let pane = self.older.entry(start).or_insert_with(|| Arc::new(new()));
                return Arc::make_mut(pane);
            }
            Some((newest, _)) if start > *newest => {
                let (previous, pane) = self.newest.take().expect("matched");
                self.older.insert(previous, Arc::new(pane));
            }
            _ => {}
        }
        &mut self.newest.get_or_insert_with(|| (start, new())).1
    }

    pub fn remove(&mut self, start: Millis) -> Option<Pane> {
        match &self.newest {
            Some((newest, _)) if *newest == start => {
                let (_, pane) = self.newest.take().expect("matched");
                self.newest = self.older.get_max().map(|(start, _)| *start).map(|last| {
                    let pane = self.older.remove(&last).expect("the last pane");
                    (last, Arc::unwrap_or_clone(pane))
                });
                Some(pane)
            }
            _ => self.older.remove(&start).map(Arc::unwrap_or_clone),
        }
    }
}

impl Serialize for Panes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Panes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Panes, D::Error> {
        let mut panes = BTreeMap::<Millis, Pane>::deserialize(deserializer)?;
        let newest = panes.pop_last();
        Ok(Panes {
            older: panes
                .into_iter()
                .map(|(start, pane)| (start, Arc::new(pane)))
                .collect(),
            newest,
        })
    }
}

/// The partial aggregates of one pane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pane {
    pub count: u64,
    /// One per aggregate of the spec, in its order.
    pub accs: Vec<Acc>,
}

/// A partial aggregate. Values are the events' numeric field values; events without one
/// (absent, null, not a number) do not contribute to `sum`, `min`, `max` and `avg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Acc {
    Count,
    Sum(f64),
    Min(Option<f64>),
    Max(Option<f64>),
    Avg {
        sum: f64,
        n: u64,
    },
    /// 64-bit hashes of the distinct values (strings by their text, others by their JSON).
    /// Persistent, like the panes (it encodes as a sequence, like a `BTreeSet`).
    Distinct(OrdSet<u64>),
}

/// Why a result is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Firing {
    Final,
    Late,
    Early,
}

impl Firing {
    fn name(self) -> &'static str {
        match self {
            Firing::Final => "final",
            Firing::Late => "late",
            Firing::Early => "early",
        }
    }
}

/// The smallest multiple of `step` greater than `x`.
fn next_multiple(x: Millis, step: Millis) -> Millis {
    x.div_euclid(step).saturating_add(1).saturating_mul(step)
}

/// The largest multiple of `step` at or below `x`.
fn floor_multiple(x: Millis, step: Millis) -> Millis {
    x.div_euclid(step).saturating_mul(step)
}

fn gcd(a: Millis, b: Millis) -> Millis {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// A number as JSON: whole numbers as integers (`30`, not `30.0`), others as floats.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
}

impl WindowTemplate {
    pub fn new(process: &str, spec: WindowTemplateSpec) -> WindowTemplate {
        assert!(
            spec.size > 0 && spec.slide > 0 && spec.slide <= spec.size,
            "topology checked window sizes"
        );
        let pane = gcd(spec.size, spec.slide);
        WindowTemplate {
            process: process.to_owned(),
            spec,
            pane,
        }
    }

    /// The pane length, gcd(size, slide).
    pub fn pane(&self) -> Millis {
        self.pane
    }

    /// The end of the last window containing the pane starting at `pane_start`.
    fn last_end(&self, pane_start: Millis) -> Millis {
        floor_multiple(pane_start.saturating_add(self.spec.size), self.spec.slide)
    }

    /// When the pane starting at `pane_start` can be dropped: its last window expired.
    fn expiry(&self, pane_start: Millis) -> Millis {
        self.last_end(pane_start)
            .saturating_add(self.spec.allowed_lateness)
    }

    /// The first window end after `after` whose window holds a pane.
    fn next_end(&self, state: &WindowState, after: Millis) -> Option<Millis> {
        let from = after.saturating_sub(self.spec.size);
        state
            .panes
            .range(from..)
            .map(|(start, _)| (start, next_multiple(after.max(start), self.spec.slide)))
            .find(|&(start, end)| end <= self.last_end(start))
            .map(|(_, end)| end)
    }

    fn new_pane(&self) -> Pane {
        Pane {
            count: 0,
            accs: self
                .spec
                .aggregates
                .iter()
                .map(|a| match a.function {
                    AggregateFn::Count => Acc::Count,
                    AggregateFn::Sum => Acc::Sum(0.0),
                    AggregateFn::Min => Acc::Min(None),
                    AggregateFn::Max => Acc::Max(None),
                    AggregateFn::Avg => Acc::Avg { sum: 0.0, n: 0 },
                    AggregateFn::DistinctCount => Acc::Distinct(OrdSet::new()),
                })
                .collect(),
        }
    }

    fn add(&self, pane: &mut Pane, event: &Event) {
        pane.count += 1;
        for (acc, spec) in pane.accs.iter_mut().zip(&self.spec.aggregates) {
            let Some(value) = spec.field.as_ref().and_then(|f| event.field(f)) else {
                continue;
            };
            match acc {
                Acc::Count => {}
                Acc::Distinct(set) => {
                    if value.is_null() {
                        continue;
                    }
                    set.insert(stable_hash64(value.text().as_bytes()));
                }
                numeric => {
                    let Some(x) = value.as_f64() else { continue };
                    match numeric {
                        Acc::Sum(sum) => *sum += x,
                        Acc::Min(min) => *min = Some(min.map_or(x, |m| m.min(x))),
                        Acc::Max(max) => *max = Some(max.map_or(x, |m| m.max(x))),
                        Acc::Avg { sum, n } => {
                            *sum += x;
                            *n += 1;
                        }
                        Acc::Count | Acc::Distinct(_) => unreachable!("matched above"),
                    }
                }
            }
        }
    }

    /// The result of the window ending at `end`: its panes combined.
    fn result(&self, state: &WindowState, end: Millis, firing: Firing, key: &str) -> Record {
        let start = end - self.spec.size;
        let mut count = 0u64;
        let mut sums = vec![0.0f64; self.spec.aggregates.len()];
        let mut ns = vec![0u64; self.spec.aggregates.len()];
        let mut extremes: Vec<Option<f64>> = vec![None; self.spec.aggregates.len()];
        let panes = || state.panes.range(start..end).map(|(_, p)| p);
        // Each distinct set sized once for all its panes' values: grown pane by pane, it was
        // rehashed into new memory many times per result.
        let mut values = vec![0usize; self.spec.aggregates.len()];
        for pane in panes() {
            for (i, acc) in pane.accs.iter().enumerate() {
                if let Acc::Distinct(set) = acc {
                    values[i] += set.len();
                }
            }
        }
        let mut distinct: Vec<HashSet<u64>> = (values.iter())
            .map(|&n| HashSet::with_capacity_and_hasher(n, Default::default()))
            .collect();
        for pane in panes() {
            count += pane.count;
            for (i, acc) in pane.accs.iter().enumerate() {
                match acc {
                    Acc::Count => {}
                    Acc::Sum(s) => sums[i] += s,
                    Acc::Min(m) => {
                        if let Some(m) = m {
                            extremes[i] = Some(extremes[i].map_or(*m, |e| e.min(*m)));
                        }
                    }
                    Acc::Max(m) => {
                        if let Some(m) = m {
                            extremes[i] = Some(extremes[i].map_or(*m, |e| e.max(*m)));
                        }
                    }
                    Acc::Avg { sum, n } => {
                        sums[i] += sum;
                        ns[i] += n;
                    }
                    Acc::Distinct(set) => distinct[i].extend(set),
                }
            }
        }
        let mut record = Record::new(RecordKind::Window, &self.spec.name, key, end)
            .with("window_start", Rfc3339(start))
            .with("window_end", Rfc3339(end));
        for (i, spec) in self.spec.aggregates.iter().enumerate() {
            let value = match spec.function {
                AggregateFn::Count => Value::from(count),
                AggregateFn::Sum => number(sums[i]),
                AggregateFn::Min | AggregateFn::Max => extremes[i].map_or(Value::Null, number),
                AggregateFn::Avg if ns[i] == 0 => Value::Null,
                AggregateFn::Avg => Value::from(sums[i] / ns[i] as f64),
                AggregateFn::DistinctCount => Value::from(distinct[i].len()),
            };
            record = record.with(&spec.name, value);
        }
        record
            .with("count", count)
            .with("firing", firing.name())
            .with("process", &self.process)
    }

    /// The timer at the next thing to do: close a window or drop a pane.
    fn rearm(&self, state: &WindowState, after: Millis, cx: &mut Context<'_>) {
        let close = self.next_end(state, after);
        let drop = state.panes.first().map(|start| self.expiry(start));
        match (close, drop) {
            (Some(a), Some(b)) => cx.set_timer(TIMER, a.min(b)),
            (Some(t), None) | (None, Some(t)) => cx.set_timer(TIMER, t),
            (None, None) => cx.cancel_timer(TIMER),
        }
    }

    /// Moves the watermark the state knows to `cx.watermark()` if that is later, and returns it.
    fn observe(state: &mut WindowState, at_least: Millis) -> Millis {
        let w = state.watermark.map_or(at_least, |w| w.max(at_least));
        state.watermark = Some(w);
        w
    }
}

impl Template for WindowTemplate {
    type State = WindowState;

    /// Its handlers return no errors; a panic is a bug, and the runtime recovers from it.
    fn handles_in_place(&self) -> bool {
        true
    }

    fn subscriptions(&self) -> Vec<Subscription> {
        let parts: Vec<KeyPart> = if self.spec.group_by.is_empty() {
            vec![KeyPart::Constant("*".into())]
        } else {
            self.spec
                .group_by
                .iter()
                .map(|g| match g {
                    GroupBy::EventType => KeyPart::EventType,
                    GroupBy::Field(path) => KeyPart::Field(path.clone()),
                })
                .collect()
        };
        self.spec
            .events
            .iter()
            .map(|ty| Subscription::grouped_by(ty.clone(), parts.clone()))
            .collect()
    }

    fn on_event(
        &self,
        state: &mut WindowState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        // Every window ending at or before the watermark has been closed by the timer (the
        // runtime fires due timers before it delivers an event).
        let w = Self::observe(state, cx.watermark());
        let t = event.time;
        let pane_start = floor_multiple(t, self.pane);
        let last_end = self.last_end(pane_start);
        let lateness = self.spec.allowed_lateness;
        if last_end.saturating_add(lateness) <= w {
            cx.emit(
                Record::new(RecordKind::DeadLetter, LATE_EVENT, cx.key(), t)
                    .with(
                        "reason",
                        format!(
                            "event at {} is later than {} after the end of its last window \
                             ({}): the watermark is at {}",
                            format_rfc3339(t),
                            format_duration(lateness),
                            format_rfc3339(last_end),
                            format_rfc3339(w)
                        ),
                    )
                    .with("process", &self.process)
                    .with("type", &*event.type_name)
                    .with("raw", event.payload.text()),
            );
            return Ok(());
        }
        let pane = state
            .panes
            .get_or_insert_with(pane_start, || self.new_pane());
        self.add(pane, event);

        let first_end = next_multiple(t, self.spec.slide);
        // Windows of this event that closed already but have not expired: updated results.
        let mut end = first_end.max(next_multiple(w.saturating_sub(lateness), self.spec.slide));
        while end <= last_end && end <= w {
            cx.emit(self.result(state, end, Firing::Late, cx.key()));
            end += self.spec.slide;
        }
        let next_close = next_multiple(t.max(w), self.spec.slide);
        if self.spec.emit == WindowEmit::OnUpdate && next_close <= last_end {
            cx.emit(self.result(state, next_close, Firing::Early, cx.key()));
        }
        let wanted = if next_close <= last_end {
            next_close
        } else {
            last_end.saturating_add(lateness)
        };
        let at = cx.timer(TIMER).map_or(wanted, |at| at.min(wanted));
        cx.set_timer(TIMER, at);
        Ok(())
    }

    fn on_timer(
        &self,
        state: &mut WindowState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if timer != TIMER {
            return Ok(());
        }
        let before = state.watermark.unwrap_or(crate::time::MIN_TIME);
        let w = Self::observe(state, cx.time().max(cx.watermark()));
        let mut after = before;
        while let Some(end) = self.next_end(state, after).filter(|&end| end <= w) {
            cx.emit(self.result(state, end, Firing::Final, cx.key()));
            after = end;
        }
        while let Some(start) = state.panes.first() {
            if self.expiry(start) > w {
                break;
            }
            state.panes.remove(start);
        }
        self.rearm(state, w, cx);
        Ok(())
    }

    fn is_complete(&self, state: &WindowState) -> bool {
        state.panes.is_empty()
    }

    fn describe(&self, state: &WindowState) -> Value {
        serde_json::json!({
            "panes": state.panes.len(),
            "events": state.panes.iter().map(|(_, p)| p.count).sum::<u64>(),
            "first_pane": state.panes.first().map(format_rfc3339),
            "watermark": state.watermark.map(format_rfc3339),
        })
    }

    fn dedup_by_event_id(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AggregateSpec, FieldPath};
    use crate::template::Timers;
    use std::sync::Arc;

    const M: Millis = 60_000;

    fn spec(size: Millis, slide: Millis, lateness: Millis, emit: WindowEmit) -> WindowTemplateSpec {
        WindowTemplateSpec {
            name: "VELOCITY".into(),
            events: vec!["ORDER_CREATED".into()],
            group_by: vec![GroupBy::Field(FieldPath::parse("country"))],
            size,
            slide,
            allowed_lateness: lateness,
            emit,
            aggregates: vec![
                AggregateSpec {
                    name: "revenue".into(),
                    function: AggregateFn::Sum,
                    field: Some(FieldPath::parse("amount")),
                },
                AggregateSpec {
                    name: "customers".into(),
                    function: AggregateFn::DistinctCount,
                    field: Some(FieldPath::parse("customer")),
                },
            ],
        }
    }

    fn event(time: Millis, amount: f64, customer: &str) -> Event {
        Event {
            seq: 0,
            type_index: 0,
            type_name: Arc::from("ORDER_CREATED"),
            key: Arc::from("O-1"),
            time,
            id: None,
            payload: serde_json::json!({"country": "DE", "amount": amount, "customer": customer})
                .into(),
        }
    }

    struct Run {
        t: WindowTemplate,
        state: WindowState,
        out: Vec<Record>,
        timers: Timers,
    }

    impl Run {
        fn new(spec: WindowTemplateSpec) -> Run {
            Run {
                t: WindowTemplate::new("velocity", spec),
                state: WindowState::default(),
                out: vec![],
                timers: Timers::new(),
            }
        }
        fn send(&mut self, e: Event, watermark: Millis) {
            let mut cx = Context::for_test("DE", e.time, &mut self.out, &mut self.timers)
                .with_watermark(watermark);
            self.t.on_event(&mut self.state, &e, &mut cx).unwrap();
        }
        /// Fires due timers up to `watermark`, as the runtime does.
        fn advance(&mut self, watermark: Millis) {
            while let Some(i) = self.timers.iter().position(|(_, at)| *at <= watermark) {
                let (name, at) = self.timers.remove(i);
                let mut cx = Context::for_test("DE", at, &mut self.out, &mut self.timers)
                    .with_watermark(watermark);
                self.t.on_timer(&mut self.state, &name, &mut cx).unwrap();
            }
        }
        fn results(&self) -> Vec<(Millis, u64, String)> {
            self.out
                .iter()
                .map(|r| {
                    let details = r.details();
                    let get = |f: &str| details.iter().find(|(k, _)| k == f).unwrap().1.clone();
                    (
                        r.event_time.unwrap(),
                        get("count").as_u64().unwrap_or(0),
                        get("firing").as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        }
    }

    #[test]
    fn tumbling_windows_close_at_their_end_and_leave_no_state() {
        let mut run = Run::new(spec(M, M, 0, WindowEmit::OnClose));
        run.send(event(10_000, 5.0, "a"), i64::MIN);
        run.send(event(20_000, 7.5, "a"), i64::MIN);
        run.send(event(70_000, 1.0, "b"), i64::MIN);
        assert_eq!(run.timers[..], [(TIMER.into(), M)]);
        run.advance(M);
        assert_eq!(run.results(), vec![(M, 2, "final".into())]);
        let first = &run.out[0];
        assert!(first
            .details()
            .contains(&("revenue".into(), Value::from(12.5))));
        assert!(first
            .details()
            .contains(&("customers".into(), Value::from(1))));
        assert_eq!(run.timers[..], [(TIMER.into(), 2 * M)]);
        run.advance(10 * M);
        assert_eq!(run.results().len(), 2);
        assert!(run.t.is_complete(&run.state));
        assert!(run.timers.is_empty());
    }

    #[test]
    fn a_sliding_event_updates_one_pane_and_is_in_every_window_that_covers_it() {
        // 10 minute windows every 2 minutes: panes of 2 minutes.
        let mut run = Run::new(spec(10 * M, 2 * M, 0, WindowEmit::OnClose));
        run.send(event(3 * M, 1.0, "a"), i64::MIN);
        assert_eq!(run.state.panes.len(), 1);
        run.advance(100 * M);
        let ends: Vec<Millis> = run.results().iter().map(|r| r.0).collect();
        assert_eq!(ends, vec![4 * M, 6 * M, 8 * M, 10 * M, 12 * M]);
        assert!(run.state.panes.is_empty());
    }

    #[test]
    fn slides_that_do_not_divide_the_size_use_gcd_panes() {
        let mut run = Run::new(spec(10 * M, 4 * M, 0, WindowEmit::OnClose));
        assert_eq!(run.t.pane(), 2 * M);
        run.send(event(M, 1.0, "a"), i64::MIN);
        run.send(event(9 * M, 1.0, "b"), i64::MIN);
        run.advance(100 * M);
        // Windows [e-10m, e) for e = 4, 8, 12, 16 minutes.
        assert_eq!(
            run.results(),
            vec![
                (4 * M, 1, "final".into()),
                (8 * M, 1, "final".into()),
                (12 * M, 1, "final".into()),
                (16 * M, 1, "final".into()),
            ]
        );
    }

    #[test]
    fn late_events_update_within_lateness_and_go_to_the_side_output_after() {
        let mut run = Run::new(spec(M, M, 2 * M, WindowEmit::OnClose));
        run.send(event(10_000, 1.0, "a"), i64::MIN);
        run.advance(M + 30_000);
        assert_eq!(run.results(), vec![(M, 1, "final".into())]);
        // Within lateness: the window is updated and re-emitted at once.
        run.send(event(20_000, 1.0, "b"), M + 30_000);
        assert_eq!(run.results()[1], (M, 2, "late".into()));
        run.advance(3 * M);
        assert!(run.t.is_complete(&run.state), "the pane expired at 3m");
        // Beyond lateness: a LATE_EVENT record, no window.
        run.send(event(30_000, 1.0, "c"), 3 * M);
        let late = run.out.last().unwrap();
        assert_eq!(
            (late.kind, late.name.as_str()),
            (RecordKind::DeadLetter, LATE_EVENT)
        );
        assert!(run.state.panes.is_empty());
    }

    #[test]
    fn on_update_emits_the_next_window_to_close_early() {
        let mut run = Run::new(spec(10 * M, 5 * M, 0, WindowEmit::OnUpdate));
        run.send(event(M, 1.0, "a"), i64::MIN);
        run.send(event(2 * M, 1.0, "a"), i64::MIN);
        assert_eq!(
            run.results(),
            vec![(5 * M, 1, "early".into()), (5 * M, 2, "early".into())]
        );
    }

    #[test]
    fn the_state_round_trips_through_the_codec() {
        let mut run = Run::new(spec(10 * M, 2 * M, M, WindowEmit::OnClose));
        run.send(event(3 * M, 1.5, "a"), i64::MIN);
        run.send(event(5 * M, 2.0, "b"), 2 * M);
        let bytes = vigil_storage::codec::encode(&run.state);
        let back: WindowState = vigil_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back, run.state);
    }

    /// A populated state (hundreds of panes, distinct sets) round-trips, and encodes to the
    /// same bytes as the `BTreeMap` / `BTreeSet` state it replaced: states stored before still
    /// decode.
    #[test]
    fn a_populated_state_round_trips_and_encodes_like_btree_collections() {
        use std::collections::BTreeSet;

        #[derive(Serialize)]
        struct OldState {
            panes: BTreeMap<Millis, OldPane>,
            watermark: Option<Millis>,
        }
        #[derive(Serialize)]
        struct OldPane {
            count: u64,
            accs: Vec<OldAcc>,
        }
        #[derive(Serialize)]
        #[allow(dead_code)]
        enum OldAcc {
            Count,
            Sum(f64),
            Min(Option<f64>),
            Max(Option<f64>),
            Avg { sum: f64, n: u64 },
            Distinct(BTreeSet<u64>),
        }

        let mut run = Run::new(spec(60 * M, M, 5 * M, WindowEmit::OnClose));
        for i in 0..500i64 {
            let customer = format!("c{}", i % 37);
            run.send(event(i * 7_000, i as f64 / 4.0, &customer), i * 7_000 - M);
        }
        assert!(
            run.state.panes.len() > 50,
            "{} panes",
            run.state.panes.len()
        );
        let bytes = vigil_storage::codec::encode(&run.state);
        let back: WindowState = vigil_storage::codec::decode(&bytes).unwrap();
        assert_eq!(back, run.state);

        let old = OldState {
            panes: run
                .state
                .panes
                .iter()
                .map(|(start, pane)| {
                    let accs = pane
                        .accs
                        .iter()
                        .map(|acc| match acc {
                            Acc::Count => OldAcc::Count,
                            Acc::Sum(x) => OldAcc::Sum(*x),
                            Acc::Min(x) => OldAcc::Min(*x),
                            Acc::Max(x) => OldAcc::Max(*x),
                            Acc::Avg { sum, n } => OldAcc::Avg { sum: *sum, n: *n },
                            Acc::Distinct(set) => OldAcc::Distinct(set.iter().copied().collect()),
                        })
                        .collect();
                    (
                        start,
                        OldPane {
                            count: pane.count,
                            accs,
                        },
                    )
                })
                .collect(),
            watermark: run.state.watermark,
        };
        assert_eq!(vigil_storage::codec::encode(&old), bytes);
    }

    /// What the runtime relies on to roll a failed attempt back: the handler works on a clone,
    /// which shares the panes, and the original is left as it was.
    #[test]
    fn an_event_on_a_clone_leaves_the_original_alone() {
        let mut run = Run::new(spec(10 * M, M, 0, WindowEmit::OnClose));
        for i in 0..30i64 {
            run.send(event(i * 20_000, 1.0, &format!("c{i}")), i64::MIN);
        }
        let before = run.state.clone();
        let mut attempt = run.state.clone();
        let mut out = vec![];
        let mut timers = Timers::new();
        let mut cx = Context::for_test("DE", 0, &mut out, &mut timers);
        run.t
            .on_event(&mut attempt, &event(5 * M, 2.0, "new"), &mut cx)
            .unwrap();
        run.t
            .on_event(&mut attempt, &event(20 * M, 2.0, "newer"), &mut cx)
            .unwrap();
        assert_eq!(run.state, before);
        assert_ne!(attempt, before);
        assert_eq!(attempt.panes.len(), before.panes.len() + 1);
        let count = |state: &WindowState| state.panes.get(5 * M).unwrap().count;
        assert_eq!(count(&attempt), count(&before) + 1);
    }
}
