//! The example topology on generated traffic emits exactly the generator's ground truth, and
//! the run's counts add up.

mod common;

use common::{assert_matches_ground_truth, Workdir, EXAMPLE};
use vigil_actors::job::{self, RunOptions};

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
    // At most 10 instances per shard stay in memory after each checkpoint (30 over 3 shards);
    // the rest are reactivated from redb when their next event comes.
    reactivations_change_nothing(17, "max_resident = 30");
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
    assert!(
        summary.counts.instances_loaded > 100,
        "{:?}",
        summary.counts
    );
    assert_matches_ground_truth(&work);
}
