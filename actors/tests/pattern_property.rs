//! The `pattern` template against a brute-force reference matcher.
//!
//! For random short event sequences of one key (≤ 8 events, 2–3 types, random gaps) and a set
//! of pattern shapes (strict and relaxed contiguity, quantifiers, conditions on earlier steps,
//! absence, `within`, both skip strategies, with and without timeout records), the records the
//! template emits — driven through the `Template` trait, timers fired in time order as the
//! watermark passes them — equal those of a reference that knows nothing of the NFA:
//!
//! - for each event that can start a match, it **enumerates every labelling** of the later
//!   events (each one skipped or taken by some step), keeps those whose every prefix satisfies
//!   the declarative rules (step order and counts, conditions, strict contiguity, absence,
//!   `within`), and takes the lexicographically first one (taking beats skipping, an earlier
//!   step beats a later one): that is the match "skip till next match" defines;
//! - it then replays the runs' outcomes in time order with the skip strategy.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use vigil_actors::event::Event;
use vigil_actors::record::{Record, RecordKind};
use vigil_actors::spec::{
    Contiguity, FieldPath, Occurs, PatternSpec, PatternStepSpec, PatternTemplateSpec, SkipStrategy,
};
use vigil_actors::template::{Context, Template, Timers};
use vigil_actors::templates::pattern::{PatternState, PatternTemplate};
use vigil_actors::time::{format_rfc3339, Millis};

#[derive(Debug, Clone)]
struct Ev {
    ty: &'static str,
    time: Millis,
    v: i64,
    n: i64,
}

/// A condition in the reference: the event, and the events chosen so far with their steps.
type Cond = fn(&Ev, &[(usize, &Ev)]) -> bool;

#[derive(Clone, Copy, Debug)]
enum Occ {
    Once,
    Times(u32),
    /// The `n` of the first event of that step.
    From(usize),
    Plus,
    Opt,
    Never,
}

#[derive(Clone)]
struct StepShape {
    name: &'static str,
    ty: &'static str,
    strict: bool,
    occ: Occ,
    cond: Option<(&'static str, Cond)>,
}

fn s(name: &'static str, ty: &'static str, occ: Occ) -> StepShape {
    StepShape {
        name,
        ty,
        strict: false,
        occ,
        cond: None,
    }
}

fn strict(mut step: StepShape) -> StepShape {
    step.strict = true;
    step
}

fn cond(mut step: StepShape, cel: &'static str, f: Cond) -> StepShape {
    step.cond = Some((cel, f));
    step
}

fn shapes() -> Vec<(Vec<StepShape>, &'static [&'static str])> {
    const AB: &[&str] = &["A", "B"];
    const ABC: &[&str] = &["A", "B", "C"];
    vec![
        (vec![s("a", "A", Occ::Once), s("b", "B", Occ::Once)], AB),
        (
            vec![s("a", "A", Occ::Once), strict(s("b", "B", Occ::Once))],
            AB,
        ),
        (
            vec![
                s("a", "A", Occ::Once),
                s("b", "B", Occ::Times(2)),
                strict(s("c", "C", Occ::Once)),
            ],
            ABC,
        ),
        (vec![s("a", "A", Occ::Plus), s("b", "B", Occ::Once)], AB),
        (
            vec![
                s("a", "A", Occ::Once),
                s("b", "B", Occ::Opt),
                s("c", "C", Occ::Once),
            ],
            ABC,
        ),
        (vec![s("a", "A", Occ::Once), s("b", "B", Occ::From(0))], AB),
        (vec![s("a", "A", Occ::Once), s("b", "B", Occ::Never)], AB),
        (
            vec![
                s("a", "A", Occ::Once),
                cond(s("b", "B", Occ::Once), "event.v == a.v", |e, chosen| {
                    chosen.iter().any(|(k, c)| *k == 0 && c.v == e.v)
                }),
            ],
            AB,
        ),
        (
            vec![
                s("a", "A", Occ::Once),
                strict(s("b", "B", Occ::Plus)),
                cond(
                    s("c", "C", Occ::Once),
                    "b.exists(x, x.v == event.v)",
                    |e, chosen| chosen.iter().any(|(k, c)| *k == 1 && c.v == e.v),
                ),
            ],
            ABC,
        ),
        (
            vec![
                s("a", "A", Occ::Once),
                cond(s("b", "A", Occ::Once), "event.v != a.v", |e, chosen| {
                    chosen.iter().all(|(k, c)| *k != 0 || c.v != e.v)
                }),
                cond(s("c", "B", Occ::Never), "event.v == a.v", |e, chosen| {
                    chosen.iter().any(|(k, c)| *k == 0 && c.v == e.v)
                }),
            ],
            AB,
        ),
    ]
}

fn spec_of(shape: &[StepShape], within: Millis, skip_past: bool, timeout: bool) -> PatternSpec {
    PatternSpec {
        name: "MATCH".into(),
        kind: RecordKind::Pattern,
        key: None,
        within,
        skip: if skip_past {
            SkipStrategy::SkipPastLastEvent
        } else {
            SkipStrategy::NoSkip
        },
        timeout: timeout.then(|| "MATCH_TIMEOUT".to_string()),
        steps: shape
            .iter()
            .map(|st| PatternStepSpec {
                name: st.name.into(),
                on: st.ty.into(),
                condition: st.cond.map(|(cel, _)| cel.to_string()),
                contiguity: if st.strict {
                    Contiguity::Next
                } else {
                    Contiguity::FollowedBy
                },
                occurs: match st.occ {
                    Occ::Once => Occurs::Once,
                    Occ::Times(n) => Occurs::Times(n),
                    Occ::From(k) => Occurs::TimesFrom {
                        step: shape[k].name.into(),
                        field: FieldPath::parse("n"),
                    },
                    Occ::Plus => Occurs::OneOrMore,
                    Occ::Opt => Occurs::Optional,
                    Occ::Never => Occurs::Never,
                },
            })
            .collect(),
    }
}

/// What a record says: name, time, matched (step, time).
type Out = (String, Millis, Vec<(String, Millis)>);

fn run_template(spec: PatternSpec, events: &[Ev]) -> (Vec<Out>, bool) {
    let template = PatternTemplate::new(
        "p",
        PatternTemplateSpec {
            template: "pattern".into(),
            patterns: vec![spec],
        },
    );
    let mut state = PatternState::default();
    let mut records: Vec<Record> = Vec::new();
    let mut timers = Timers::new();
    let fire_upto =
        |upto: Millis, state: &mut PatternState, records: &mut Vec<Record>, timers: &mut Timers| {
            while let Some((name, at)) = timers
                .iter()
                .filter(|t| t.1 <= upto)
                .min_by_key(|t| t.1)
                .cloned()
            {
                timers.retain(|t| t.0 != name);
                let mut cx = Context::for_test("K", at, records, timers);
                template.on_timer(state, &name, &mut cx).unwrap();
            }
        };
    let mut watermark = Millis::MIN;
    for (i, e) in events.iter().enumerate() {
        fire_upto(watermark, &mut state, &mut records, &mut timers);
        let event = Event {
            seq: i as u64,
            type_index: 0,
            type_name: Arc::from(e.ty),
            key: Arc::from("K"),
            time: e.time,
            id: None,
            payload: json!({ "v": e.v, "n": e.n }).into(),
        };
        let mut cx = Context::for_test("K", e.time, &mut records, &mut timers);
        template.on_event(&mut state, &event, &mut cx).unwrap();
        watermark = watermark.max(e.time);
        // What the runtime stores between events must decode to the same state.
        let bytes = vigil_storage::codec::encode(&state);
        state = vigil_storage::codec::decode(&bytes).unwrap();
    }
    fire_upto(Millis::MAX, &mut state, &mut records, &mut timers);
    let outs = records
        .iter()
        .map(|r| {
            let matched = r
                .details()
                .into_iter()
                .find(|(k, _)| k == "matched")
                .map(|(_, v)| v.as_array().unwrap().clone())
                .unwrap_or_default()
                .iter()
                .map(|m: &Value| {
                    let at = m["at"].as_str().unwrap();
                    let time = events
                        .iter()
                        .find(|e| format_rfc3339(e.time) == at)
                        .unwrap()
                        .time;
                    (m["step"].as_str().unwrap().to_string(), time)
                })
                .collect();
            (r.name.clone(), r.event_time.unwrap(), matched)
        })
        .collect();
    (outs, template.is_complete(&state) && timers.is_empty())
}

// ---------------------------------------------------------------- the reference matcher

struct Reference<'a> {
    steps: &'a [StepShape],
    events: &'a [Ev],
}

#[derive(Debug, Clone)]
enum Fate {
    /// Completed at this event, with these (step, event index) chosen.
    Complete(usize, Vec<(usize, usize)>),
    Killed,
    /// Still pending when its deadline came.
    Expire(Vec<(usize, usize)>),
}

#[derive(PartialEq)]
enum Check {
    Invalid,
    Continue,
    Complete,
    Killed,
}

const SKIP: usize = usize::MAX;

impl Reference<'_> {
    fn bounds(&self, step: usize, chosen: &[(usize, usize)]) -> (u32, u32) {
        match self.steps[step].occ {
            Occ::Once => (1, 1),
            Occ::Times(n) => (n, n),
            Occ::From(k) => {
                let first = chosen
                    .iter()
                    .find(|(st, _)| *st == k)
                    .expect("earlier step");
                let n = self.events[first.1].n as u32;
                (n, n)
            }
            Occ::Plus => (1, u32::MAX),
            Occ::Opt => (0, 1),
            Occ::Never => (0, 0),
        }
    }

    fn holds(&self, step: usize, event: usize, chosen: &[(usize, usize)]) -> bool {
        let st = &self.steps[step];
        let e = &self.events[event];
        if e.ty != st.ty {
            return false;
        }
        match st.cond {
            None => true,
            Some((_, f)) => {
                let chosen: Vec<(usize, &Ev)> =
                    chosen.iter().map(|&(k, i)| (k, &self.events[i])).collect();
                f(e, &chosen)
            }
        }
    }

    /// Whether, after the chosen events, step `l` may take an event (ignoring its type and
    /// condition): step order, counts, and the minimum of every step passed over.
    fn may_take(&self, l: usize, chosen: &[(usize, usize)], gap: bool) -> bool {
        if matches!(self.steps[l].occ, Occ::Never) {
            return false;
        }
        let cur = chosen.last().unwrap().0;
        let count = chosen.iter().filter(|(k, _)| *k == cur).count() as u32;
        if l < cur || (self.steps[l].strict && gap) {
            return false;
        }
        if l == cur {
            return count < self.bounds(cur, chosen).1;
        }
        count >= self.bounds(cur, chosen).0 && (cur + 1..l).all(|m| self.bounds(m, chosen).0 == 0)
    }

    /// Whether the chosen events leave the run waiting only for the absent step's deadline.
    fn at_absent(&self, chosen: &[(usize, usize)]) -> bool {
        let Some(absent) = self.steps.iter().position(|s| matches!(s.occ, Occ::Never)) else {
            return false;
        };
        let cur = chosen.last().unwrap().0;
        let count = chosen.iter().filter(|(k, _)| *k == cur).count() as u32;
        count >= self.bounds(cur, chosen).0
            && (cur + 1..absent).all(|m| self.bounds(m, chosen).0 == 0)
    }

    /// Checks a whole labelling of the events after `start` from scratch, prefix by prefix.
    fn check(&self, start: usize, labels: &[usize]) -> (Check, Option<usize>) {
        let mut chosen = vec![(0usize, start)];
        let mut gap = false;
        let last = self.steps.len() - 1;
        for (offset, &label) in labels.iter().enumerate() {
            let event = start + 1 + offset;
            if label == SKIP {
                if self.at_absent(&chosen) && self.holds(last, event, &chosen) {
                    return (Check::Killed, Some(event));
                }
                gap = true;
                let viable = self.at_absent(&chosen)
                    || (0..self.steps.len())
                        .any(|l| !self.steps[l].strict && self.may_take(l, &chosen, true));
                if !viable {
                    return (Check::Killed, Some(event));
                }
                continue;
            }
            if !self.may_take(label, &chosen, gap) || !self.holds(label, event, &chosen) {
                return (Check::Invalid, None);
            }
            chosen.push((label, event));
            gap = false;
            let count = chosen.iter().filter(|(k, _)| *k == label).count() as u32;
            if label == last && count == self.bounds(last, &chosen).1 {
                return (Check::Complete, Some(event));
            }
        }
        (Check::Continue, None)
    }

    fn chosen(&self, start: usize, labels: &[usize]) -> Vec<(usize, usize)> {
        let mut chosen = vec![(0, start)];
        for (offset, &l) in labels.iter().enumerate() {
            if l != SKIP {
                chosen.push((l, start + 1 + offset));
            }
        }
        chosen
    }

    /// The fate of the run started at `start`: the lexicographically first labelling (taking
    /// before skipping, earlier steps first) among all whose every prefix is valid, a prefix
    /// ending the run (completion, kill) followed by skips only.
    fn fate(&self, start: usize, within: Millis) -> Fate {
        let deadline = self.events[start].time + within;
        let cutoff = (start + 1..self.events.len())
            .find(|&i| self.events[i].time >= deadline)
            .unwrap_or(self.events.len());
        let m = cutoff - start - 1;
        let choices: Vec<usize> = (0..self.steps.len()).chain([SKIP]).collect();
        let order = |l: usize| if l == SKIP { usize::MAX } else { l };
        let mut best: Option<Vec<usize>> = None;
        let total = choices.len().pow(m as u32);
        for mut code in 0..total {
            let mut labels = Vec::with_capacity(m);
            for _ in 0..m {
                labels.push(choices[code % choices.len()]);
                code /= choices.len();
            }
            // Every prefix valid; after an end, skips only.
            let mut ok = true;
            for len in 1..=m {
                let (check, at) = self.check(start, &labels[..len]);
                match check {
                    Check::Invalid => ok = false,
                    Check::Complete | Check::Killed => {
                        let end = at.unwrap() - start - 1;
                        ok = labels[end + 1..].iter().all(|&l| l == SKIP);
                    }
                    Check::Continue => continue,
                }
                break;
            }
            if ok {
                let key: Vec<usize> = labels.iter().map(|&l| order(l)).collect();
                if best
                    .as_ref()
                    .is_none_or(|b| key < b.iter().map(|&l| order(l)).collect::<Vec<_>>())
                {
                    best = Some(labels);
                }
            }
        }
        let labels = best.expect("skipping everything is always a labelling");
        match self.check(start, &labels) {
            (Check::Complete, Some(at)) => Fate::Complete(at, self.chosen(start, &labels)),
            (Check::Killed, _) => Fate::Killed,
            _ => Fate::Expire(self.chosen(start, &labels)),
        }
    }
}

fn reference(
    shape: &[StepShape],
    events: &[Ev],
    within: Millis,
    skip_past: bool,
    timeout: bool,
) -> Vec<Out> {
    let r = Reference {
        steps: shape,
        events,
    };
    let describe = |name: &str, at: Millis, chosen: &[(usize, usize)]| -> Out {
        let matched = chosen
            .iter()
            .map(|&(k, i)| (shape[k].name.to_string(), events[i].time))
            .collect();
        (name.to_string(), at, matched)
    };
    let mut out = Vec::new();
    let mut active: Vec<(usize, Fate)> = Vec::new();
    let expire = |upto: Millis, active: &mut Vec<(usize, Fate)>, out: &mut Vec<Out>| loop {
        let next = active
            .iter()
            .enumerate()
            .filter(|(_, (s, f))| matches!(f, Fate::Expire(_)) && events[*s].time + within <= upto)
            .min_by_key(|(_, (s, _))| (events[*s].time + within, *s))
            .map(|(i, _)| i);
        let Some(i) = next else { return };
        let (s, fate) = active.remove(i);
        let Fate::Expire(chosen) = fate else {
            unreachable!()
        };
        let deadline = events[s].time + within;
        if r.at_absent(&chosen) {
            out.push(describe("MATCH", deadline, &chosen));
            if skip_past {
                active.clear();
            }
        } else if timeout {
            out.push(describe("MATCH_TIMEOUT", deadline, &chosen));
        }
    };
    for (i, event) in events.iter().enumerate() {
        expire(event.time, &mut active, &mut out);
        let mut consumed = false;
        let mut k = 0;
        while k < active.len() {
            match &active[k].1 {
                Fate::Complete(at, chosen) if *at == i => {
                    out.push(describe("MATCH", event.time, chosen));
                    if skip_past {
                        active.clear();
                        consumed = true;
                        break;
                    }
                    active.remove(k);
                }
                _ => k += 1,
            }
        }
        if consumed || !r.holds(0, i, &[]) {
            continue;
        }
        match r.fate(i, within) {
            Fate::Complete(at, chosen) if at == i => {
                out.push(describe("MATCH", event.time, &chosen))
            }
            Fate::Killed => {}
            fate => active.push((i, fate)),
        }
        // Killed runs leave nothing behind; drop them so they do not linger.
        active.retain(|(_, f)| !matches!(f, Fate::Killed));
    }
    expire(Millis::MAX, &mut active, &mut out);
    out
}

fn events_strategy(types: &'static [&'static str]) -> impl Strategy<Value = Vec<Ev>> {
    prop::collection::vec((0..types.len(), 0i64..3, 0i64..3, 1i64..4), 0..=8).prop_map(move |raw| {
        let mut time = 1_000;
        raw.into_iter()
            .map(|(t, gap, v, n)| {
                time += gap;
                Ev {
                    ty: types[t],
                    time,
                    v,
                    n,
                }
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = (usize, Vec<Ev>, Millis, bool, bool)> {
    (0..shapes().len()).prop_flat_map(|i| {
        let types = shapes()[i].1;
        (
            Just(i),
            events_strategy(types),
            2i64..10,
            any::<bool>(),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn cep_matches_equal_the_brute_force_reference((shape, events, within, skip_past, timeout) in case()) {
        let shape = &shapes()[shape].0;
        let expected = reference(shape, &events, within, skip_past, timeout);
        let (actual, complete) = run_template(spec_of(shape, within, skip_past, timeout), &events);
        prop_assert_eq!(actual, expected, "events: {:?}", events);
        prop_assert!(complete, "no state or timer left once every deadline passed");
    }
}

#[test]
fn every_shape_is_a_valid_pattern() {
    for (shape, _) in shapes() {
        let spec = spec_of(&shape, 10, true, true);
        assert!(vigil_actors::templates::pattern::check(&spec).is_empty());
    }
}

/// The random cases are not vacuous: they produce matches, timeouts and absence matches.
#[test]
fn the_cases_produce_matches_and_timeouts() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut matches, mut timeouts, mut absences) = (0, 0, 0);
    for _ in 0..400 {
        let (shape, events, within, skip_past, timeout) =
            case().new_tree(&mut runner).unwrap().current();
        let steps = &shapes()[shape].0;
        for (name, _, matched) in reference(steps, &events, within, skip_past, timeout) {
            match name.as_str() {
                "MATCH" if matches!(steps.last().unwrap().occ, Occ::Never) => absences += 1,
                "MATCH" => matches += usize::from(matched.len() >= 2),
                _ => timeouts += 1,
            }
        }
    }
    assert!(
        matches > 50 && timeouts > 50 && absences > 20,
        "{matches} {timeouts} {absences}"
    );
}
