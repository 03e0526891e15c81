//! A failing instance handler (error or panic) does not stop its shard: other instances'
//! events are not lost, the event is retried from the instance's last good state, then
//! dead-lettered with the reason. A failing shard actor restarts from its last checkpoint.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use common::{
    assert_many_reactivated, assert_matches_ground_truth, identities, jsonl_files,
    passivation_setting, Workdir, EXAMPLE,
};
use vigil_actors::event::Event;
use vigil_actors::job::{self, RunOptions, RunSummary};
use vigil_actors::shard::Faults;
use vigil_actors::template::{AnyState, Context, DynTemplate, Subscription, TemplateError};
use vigil_actors::templates;
use vigil_storage::codec::CodecError;

/// Wraps a template and makes its event handler panic for one key (and only on events of type
/// `only`, if set): on every attempt, or only on the first attempt of each event. Before it
/// panics it wipes the state. `in_place`: whether the runtime may call it on the instance's
/// state itself.
struct Faulty {
    inner: Box<dyn DynTemplate>,
    key: String,
    only: Option<&'static str>,
    always: bool,
    in_place: bool,
    attempts: Arc<AtomicU32>,
    seen: std::sync::Mutex<HashMap<u64, u32>>,
}

impl DynTemplate for Faulty {
    fn subscriptions(&self) -> Vec<Subscription> {
        self.inner.subscriptions()
    }
    fn new_state(&self) -> AnyState {
        self.inner.new_state()
    }
    fn decode_state(&self, bytes: &[u8]) -> Result<AnyState, CodecError> {
        self.inner.decode_state(bytes)
    }
    fn encode_state(&self, state: &AnyState, out: &mut Vec<u8>) {
        self.inner.encode_state(state, out)
    }
    fn clone_state(&self, state: &AnyState) -> AnyState {
        self.inner.clone_state(state)
    }
    fn on_event(
        &self,
        state: &mut AnyState,
        event: &Event,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        if cx.key() == self.key && self.only.is_none_or(|only| *event.type_name == *only) {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let first = {
                let mut seen = self.seen.lock().unwrap();
                let n = seen.entry(event.seq).or_insert(0);
                *n += 1;
                *n == 1
            };
            let _ = self.inner.on_event(state, event, cx);
            if self.always || first {
                // Damage the state first: a retry must start from the last good state.
                *state = self.inner.new_state();
                panic!("injected failure for {}", self.key);
            }
            return Ok(());
        }
        self.inner.on_event(state, event, cx)
    }
    fn on_timer(
        &self,
        state: &mut AnyState,
        timer: &str,
        cx: &mut Context<'_>,
    ) -> Result<(), TemplateError> {
        self.inner.on_timer(state, timer, cx)
    }
    fn is_complete(&self, state: &AnyState) -> bool {
        self.inner.is_complete(state)
    }
    fn describe(&self, state: &AnyState) -> serde_json::Value {
        self.inner.describe(state)
    }
    fn handles_in_place(&self) -> bool {
        self.in_place
    }
}

/// An order of the generated day with at least two events, and records in the ground truth.
fn victim(work: &Workdir) -> String {
    let expected = identities(&[work.data().join("expected.jsonl")]);
    expected
        .keys()
        .find(|(kind, name, _, _)| kind == "event" && name == "ALL_PARCELS_SHIPPED")
        .and_then(|(_, _, key, _)| key.clone())
        .expect("some order ships")
}

fn run_with_faulty(
    work: &Workdir,
    only: Option<&'static str>,
    always: bool,
    in_place: bool,
) -> (job::RunSummary, u32, String) {
    work.generate(21, 1_500);
    let key = victim(work);
    let spec = work.compile(EXAMPLE);
    let attempts = Arc::new(AtomicU32::new(0));
    let faulty = Faulty {
        inner: templates::build(&spec.processes[0]),
        key: key.clone(),
        only,
        always,
        in_place,
        attempts: attempts.clone(),
        seen: Default::default(),
    };
    let options = RunOptions {
        templates: Some(vec![Box::new(faulty)]),
        ..RunOptions::default()
    };
    let summary = job::run(spec, options).unwrap();
    (summary, attempts.load(Ordering::SeqCst), key)
}

/// Checks a run whose handler always failed for `key`: every record of every other order is
/// there exactly once, and the victim's events were dead-lettered with the panic message.
/// Returns how many were.
fn assert_only_the_victim_dead_lettered(
    work: &Workdir,
    summary: &job::RunSummary,
    key: &str,
) -> usize {
    let expected = identities(&[work.data().join("expected.jsonl")]);
    let actual = identities(&jsonl_files(&work.out()));
    for (identity, count) in &expected {
        if identity.2.as_deref() != Some(key) {
            assert_eq!(actual.get(identity), Some(count), "{identity:?}");
        }
    }
    let failed: Vec<_> = actual
        .iter()
        .filter(|((kind, name, k, _), _)| {
            kind == "dead_letter" && name == "HANDLER_FAILED" && k.as_deref() == Some(key)
        })
        .collect();
    let failed_events: usize = failed.iter().map(|(_, n)| **n).sum();
    assert!(failed_events >= 2, "{failed:?}");
    assert_eq!(summary.counts.handler_failures as usize, failed_events);
    let c = &summary.counts;
    assert_eq!(c.read, c.processed + c.dead_lettered + c.duplicates);
    // The reason is in the record.
    let text = std::fs::read_to_string(work.out().join("dead_letters.jsonl")).unwrap();
    assert!(
        text.contains("injected failure for"),
        "the panic message is the reason"
    );
    failed_events
}

#[test]
fn a_handler_that_always_panics_dead_letters_its_events_and_loses_nothing_else() {
    let work = Workdir::new();
    std::panic::set_hook(Box::new(|_| {})); // keep the test output readable
    let (summary, attempts, key) = run_with_faulty(&work, None, true, false);
    let _ = std::panic::take_hook();
    let failed_events = assert_only_the_victim_dead_lettered(&work, &summary, &key);
    // The victim's events were each tried 1 + max_retries (3) times, then dead-lettered.
    assert_eq!(attempts as usize, failed_events * 4);
    assert_eq!(summary.shard_restarts, 0);
}

#[test]
fn a_handler_that_fails_in_place_restarts_its_shard_and_then_runs_on_copies() {
    // The first failure damaged the instance's state itself: the shard restarts from its
    // checkpoint, and replays the template's events on copies of the state, with retries.
    let work = Workdir::new();
    std::panic::set_hook(Box::new(|_| {}));
    let (summary, attempts, key) = run_with_faulty(&work, None, true, true);
    let _ = std::panic::take_hook();
    let failed_events = assert_only_the_victim_dead_lettered(&work, &summary, &key);
    assert_eq!(attempts as usize, 1 + failed_events * 4);
    assert_eq!(
        summary.shard_restarts, 1,
        "once, then the template is careful"
    );
}

#[test]
fn a_handler_that_panics_once_in_place_leaves_no_trace_of_its_damage() {
    let work = Workdir::new();
    std::panic::set_hook(Box::new(|_| {}));
    let (summary, _attempts, _key) = run_with_faulty(&work, Some("PARCEL_SHIPPED"), false, true);
    let _ = std::panic::take_hook();
    assert_eq!(summary.counts.handler_failures, 0);
    assert_eq!(summary.shard_restarts, 1);
    // Had the shard carried on with the state the failed call wiped, the victim's order
    // would have lost what it knew before its parcel shipped, and its records would differ.
    assert_matches_ground_truth(&work);
}

#[test]
fn a_handler_that_panics_once_is_retried_from_its_last_good_state() {
    let work = Workdir::new();
    std::panic::set_hook(Box::new(|_| {}));
    let (summary, attempts, _key) = run_with_faulty(&work, None, false, false);
    let _ = std::panic::take_hook();
    assert!(
        attempts >= 4,
        "each event of the victim failed once and was retried"
    );
    assert_eq!(summary.counts.handler_failures, 0);
    // Had a retry started from the state the failed attempt wiped, the victim's records
    // would differ.
    assert_matches_ground_truth(&work);
}

#[test]
fn a_failing_shard_actor_restarts_from_its_checkpoint_and_replays_what_came_since() {
    let work = Workdir::new();
    work.generate(8, 2_000);
    let spec = work.compile(&common::example_with(&[("shards = 8", "shards = 2")]));
    let options = RunOptions {
        faults: Faults::shard_fails(1, 9_000, 1),
        ..RunOptions::default()
    };
    let summary = job::run(spec, options).unwrap();
    assert_eq!(summary.shard_restarts, 1);
    assert_matches_ground_truth(&work);
}

#[test]
fn a_checkpoint_whose_commit_fails_off_the_worker_thread_is_replayed_from_the_one_before() {
    // At most 10 instances in memory per shard, by count (`passivation_setting`): nearly every
    // commit on the blocking pool also writes passivated instances, and shard 1's first one
    // fails after they left its cache. The shard restarts from its
    // previous checkpoint, replays, and the outputs are exactly the ground truth.
    let summary = commit_fails_once(false);
    assert_many_reactivated(&summary);
}

#[test]
fn a_failed_commit_drops_what_was_passivated_ahead_and_is_replayed() {
    // The same with every shard passivating ahead after each batch: the commit that fails
    // holds the rows passivated ahead in its interval (and carries no passivation of its own
    // when the shard keeps up). Dropped with it, they come back from the previous checkpoint.
    commit_fails_once(true);
}

/// Runs the example on 2 shards, checkpointing every 20 ms with `max_resident = 20`, every
/// shard passivating ahead after each batch (`ahead`) or by count, shard 1's first commit that
/// passivates failing; checks the outputs are exactly the ground truth and the
/// shard restarted once.
fn commit_fails_once(ahead: bool) -> RunSummary {
    let state = passivation_setting(ahead);
    let work = Workdir::new();
    work.generate(9, 1_500);
    let spec = work.compile(&common::example_with(&[
        (
            "checkpoint_interval = \"1s\"",
            &format!("checkpoint_interval = \"20ms\"\nmax_resident = 20\n{state}"),
        ),
        ("shards = 8", "shards = 2"),
    ]));
    let options = RunOptions {
        faults: Faults {
            fail_commit: Some(1),
            passivate_ahead_always: ahead,
            ..Faults::default()
        },
        ..RunOptions::default()
    };
    let summary = job::run(spec, options).unwrap();
    assert_eq!(
        summary.shard_restarts, 1,
        "the injected commit failure fired once"
    );
    assert_matches_ground_truth(&work);
    summary
}

#[test]
fn a_shard_that_keeps_failing_fails_the_run_instead_of_hanging_it() {
    let work = Workdir::new();
    work.generate(8, 500);
    let spec = work.compile(&common::example_with(&[("shards = 8", "shards = 2")]));
    let options = RunOptions {
        faults: Faults::shard_fails(0, 100, 100),
        ..RunOptions::default()
    };
    let error = job::run(spec, options).unwrap_err().to_string();
    assert!(
        error.contains("shard 0 failed 4 times") && error.contains("injected fault"),
        "{error}"
    );
}

#[test]
fn state_written_for_another_layout_is_refused() {
    let work = Workdir::new();
    work.generate(8, 200);
    job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    let four = common::example_with(&[("shards = 8", "shards = 4")]);
    let error = job::run(work.compile(&four), RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("incompatible state") && error.contains("shards: 8"),
        "{error}"
    );
}
