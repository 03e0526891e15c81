//! The example topology on generated traffic emits exactly the generator's ground truth, and
//! the run's counts add up.

mod common;

use common::{
    assert_many_reactivated, assert_matches_ground_truth, passivation_setting, Workdir, EXAMPLE,
};
use vigil_actors::job::{self, RunOptions, RunSummary};
use vigil_actors::shard::{Faults, Shard};
use vigil_storage::ShardStore;

#[test]
fn example_topology_emits_exactly_the_ground_truth() {
    let work = Workdir::new();
    let generated = work.generate(11, 4_000);
    let summary = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    assert_matches_ground_truth(&work);

    let c = &summary.counts;
    assert!(summary.finished);
    assert_eq!(c.read, generated.lines, "every line is accounted for");
    assert_eq!(
        c.read,
        c.processed + c.dead_lettered + c.duplicates,
        "{c:?}"
    );
    assert_eq!(
        c.dead_lettered, generated.malformed,
        "each malformed line is dead-lettered, nothing else"
    );
    assert!(
        c.duplicates > 0 && c.duplicates <= generated.duplicates,
        "{c:?} vs {generated:?}"
    );
    assert_eq!(
        summary.watermark, generated.final_watermark,
        "the watermark ends at the largest event time"
    );

    // Running again over the same state reads nothing new and writes nothing new.
    let before = work.output_lines();
    let again = job::run(work.compile(EXAMPLE), RunOptions::default()).unwrap();
    assert_eq!(again.lines_this_run, 0);
    assert_eq!(work.output_lines(), before);
}

#[test]
fn results_do_not_depend_on_the_number_of_shards_or_workers() {
    let work = Workdir::new();
    work.generate(5, 1_500);
    let one = common::example_with(&[("shards = 8", "shards = 1\nworkers = 1")]);
    job::run(work.compile(&one), RunOptions::default()).unwrap();
    assert_matches_ground_truth(&work);

    let many = Workdir::new();
    many.generate(5, 1_500);
    let sixty_four = common::example_with(&[("shards = 8", "shards = 64\nworkers = 2")]);
    job::run(many.compile(&sixty_four), RunOptions::default()).unwrap();
    assert_matches_ground_truth(&many);
}

#[test]
fn constant_passivation_changes_nothing() {
    // Every instance is dropped from memory at every checkpoint and reactivated from redb with
    // its timers: the records must be the same.
    reactivations_change_nothing(13, "passivate_after = \"1ms\"");
}

#[test]
fn a_small_resident_budget_changes_nothing() {
    // At most 10 instances per shard stay in memory (30 over 3 shards), by count
    // (`passivation_setting`); the rest are reactivated from redb when their next event
    // comes. (Forced ahead of checkpoints:
    // `compactions_passivation_ahead_and_failures_together_change_nothing`.)
    let state = format!("max_resident = 30\n{}", passivation_setting(false));
    reactivations_change_nothing(17, &state);
}

#[test]
fn log_compactions_and_restarts_from_them_change_nothing() {
    // Every checkpoint (every 20 ms) whose log holds more than 4 times what is live compacts
    // it, dropping its oldest chunks (at least half the log) and logging again what was live
    // in them; shard 1 fails twice on the way and recovers from a compacted log. The outputs
    // are the ground truth, the logs end less than half as large as without compactions (a
    // compacted log holds up to 4 times what is live), and a second run over the same state
    // reads nothing new.
    let topology = common::example_with(&[
        (
            "checkpoint_interval = \"1s\"",
            "checkpoint_interval = \"20ms\"",
        ),
        ("shards = 8", "shards = 3"),
    ]);
    let run = |compaction_bytes: u64, faults: Faults| {
        let work = Workdir::new();
        work.generate(23, 5_000);
        let mut spec = work.compile(&topology);
        spec.log_compaction_bytes = compaction_bytes;
        let options = RunOptions {
            faults,
            ..RunOptions::default()
        };
        let summary = job::run(spec, options).unwrap();
        assert_matches_ground_truth(&work);
        let log_bytes: u64 = (0..3)
            .map(|shard| {
                let store = ShardStore::open(&Shard::path(&work.state(), shard)).unwrap();
                let reader = store.read().unwrap();
                reader.log_bytes()
            })
            .sum();
        (work, summary, log_bytes)
    };
    let faults = Faults::shard_fails(1, 9_000, 2);
    let (work, summary, compacted) = run(0, faults);
    assert_eq!(summary.shard_restarts, 2);
    let (_, _, never_compacted) = run(u64::MAX, Faults::default());
    assert!(
        compacted * 2 < never_compacted,
        "{compacted} vs {never_compacted} bytes"
    );

    let before = work.output_lines();
    let mut spec = work.compile(&topology);
    spec.log_compaction_bytes = 0;
    let again = job::run(spec, RunOptions::default()).unwrap();
    assert_eq!(again.lines_this_run, 0);
    assert_eq!(work.output_lines(), before);
}

#[test]
fn compactions_passivation_and_failures_together_change_nothing() {
    // Every checkpoint (every 20 ms, and whenever a shard holds more than 10 instances and 1
    // more: `passivation_setting`) compacts the log, passivates all but 10 instances per
    // shard (their rows through the cursor when their keys are new, one by one when they were
    // stored before), and shard 1 fails twice: instances whose records are in dropped chunks
    // are passivated, reactivated and logged again in every order. The outputs are the
    // ground truth.
    let summary = compact_passivate_and_fail(false);
    assert_many_reactivated(&summary);
}

#[test]
fn compactions_passivation_ahead_and_failures_together_change_nothing() {
    // The same with every shard passivating ahead after each batch: instances are taken out
    // of the cache between checkpoints, some taken back by their next event before they are
    // written, some carried over a checkpoint and logged again, some passivated by a
    // checkpoint that compacts the log, and the failures drop what the interval wrote.
    compact_passivate_and_fail(true);
}

/// Runs the example on 3 shards, checkpointing (and compacting the log) every 20 ms with
/// `max_resident = 30`, shard 1 failing twice, every shard passivating ahead after each batch
/// (`ahead`) or by count; checks the outputs are the ground truth.
fn compact_passivate_and_fail(ahead: bool) -> RunSummary {
    let state = passivation_setting(ahead);
    let work = Workdir::new();
    work.generate(29, 1_500);
    let topology = common::example_with(&[
        (
            "checkpoint_interval = \"1s\"",
            &format!("checkpoint_interval = \"20ms\"\nmax_resident = 30\n{state}"),
        ),
        ("shards = 8", "shards = 3"),
    ]);
    let mut spec = work.compile(&topology);
    spec.log_compaction_bytes = 0;
    let options = RunOptions {
        faults: Faults {
            passivate_ahead_always: ahead,
            ..Faults::shard_fails(1, 9_000, 2)
        },
        ..RunOptions::default()
    };
    let summary = job::run(spec, options).unwrap();
    assert_eq!(summary.shard_restarts, 2);
    assert_matches_ground_truth(&work);
    summary
}

#[test]
fn many_new_instances_bring_a_checkpoint_forward() {
    // Checkpoints every hour, at most 30 instances in memory: only a checkpoint passivates,
    // so with no early one every instance stays in memory to the end. With one whenever a
    // shard holds 50 more than its share (150 over 3 shards), most are passivated on the way
    // and reactivated from redb, and the records are still exactly the ground truth.
    let topology = common::example_with(&[
        (
            "checkpoint_interval = \"1s\"",
            "checkpoint_interval = \"1h\"\nmax_resident = 30",
        ),
        ("shards = 8", "shards = 3"),
    ]);
    let run = |overshoot: usize| {
        let work = Workdir::new();
        work.generate(29, 1_500);
        let mut spec = work.compile(&topology);
        spec.max_resident_overshoot = overshoot;
        let summary = job::run(spec, RunOptions::default()).unwrap();
        assert_matches_ground_truth(&work);
        summary.counts.instances_loaded
    };
    assert_eq!(run(0), 0, "no checkpoint before the end");
    let loaded = run(150);
    assert!(loaded > 100, "{loaded} instances reactivated");
}

/// Runs the example on 3 shards, checkpointing every 20 ms with `state` added to `[state]`:
/// many instances must be reactivated from redb, and the records be exactly the ground truth.
fn reactivations_change_nothing(seed: u64, state: &str) {
    let work = Workdir::new();
    work.generate(seed, 1_500);
    let topology = common::example_with(&[
        (
            "checkpoint_interval = \"1s\"",
            &format!("checkpoint_interval = \"20ms\"\n{state}"),
        ),
        ("shards = 8", "shards = 3"),
    ]);
    let summary = job::run(work.compile(&topology), RunOptions::default()).unwrap();
    assert_many_reactivated(&summary);
    assert_matches_ground_truth(&work);
}
