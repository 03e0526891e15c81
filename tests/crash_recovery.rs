//! `kill -9` in the middle of a run, then run again: the sink files hold exactly what an
//! uninterrupted run writes — same records, same ids, no duplicates, no gaps.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_matches_ground_truth, example_with, Workdir};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn topology(work: &Workdir) -> std::path::PathBuf {
    // Checkpoint often so that kills land between checkpoints with uncommitted work behind.
    let text = example_with(&[(
        "checkpoint_interval = \"1s\"",
        "checkpoint_interval = \"150ms\"",
    )]);
    let path = work.path().join("topology.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn vigil_run(work: &Workdir) -> Command {
    let mut command = Command::new(VIGIL);
    command
        .arg("run")
        .arg(topology(work))
        .arg("--quiet")
        .envs(work.env());
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// Output lines with the work directory's path taken out (dead letters name their file).
fn normalized_lines(work: &Workdir) -> Vec<String> {
    let prefix = work.path().display().to_string();
    work.output_lines()
        .into_iter()
        .map(|l| l.replace(&prefix, "WORKDIR"))
        .collect()
}

fn output_bytes(work: &Workdir) -> u64 {
    common::jsonl_files(&work.out())
        .iter()
        .map(|f| f.metadata().map_or(0, |m| m.len()))
        .sum()
}

#[test]
fn kill_9_mid_run_then_rerun_writes_exactly_what_an_uninterrupted_run_writes() {
    let reference = Workdir::new();
    reference.generate(3, 12_000);
    let status = vigil_run(&reference).status().unwrap();
    assert!(status.success());
    assert_matches_ground_truth(&reference);
    let uninterrupted = normalized_lines(&reference);

    let crashed = Workdir::new();
    crashed.generate(3, 12_000);
    let mut kills = 0;
    let mut last_size = 0;
    for _attempt in 0..6 {
        let mut child = vigil_run(&crashed).spawn().unwrap();
        // Kill once the run has written something new (or after a while).
        let started = Instant::now();
        while output_bytes(&crashed) <= last_size + 20_000
            && started.elapsed() < Duration::from_secs(20)
        {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if child.try_wait().unwrap().is_some() {
            break; // finished before we could kill it
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        last_size = output_bytes(&crashed);
    }
    assert!(
        kills >= 2,
        "the run should have been killed mid-stream at least twice, was {kills}"
    );
    let status = vigil_run(&crashed).status().unwrap();
    assert!(status.success());

    let recovered = normalized_lines(&crashed);
    let missing: Vec<_> = uninterrupted
        .iter()
        .filter(|l| !recovered.contains(l))
        .take(3)
        .collect();
    let extra: Vec<_> = recovered
        .iter()
        .filter(|l| !uninterrupted.contains(l))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:#?}\nextra {extra:#?}"
    );
    assert_eq!(
        recovered.len(),
        uninterrupted.len(),
        "duplicates after recovery"
    );
    assert_matches_ground_truth(&crashed);
}

#[test]
fn new_state_with_old_outputs_or_changed_input_is_refused_not_mixed() {
    let work = Workdir::new();
    work.generate(4, 300);
    assert!(vigil_run(&work).status().unwrap().success());

    // Fresh state, but the outputs of the earlier run are still there.
    std::fs::remove_dir_all(work.state()).unwrap();
    let output = vigil_run(&work).stderr(Stdio::piped()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already hold its records"), "{stderr}");

    // Old state, but the input file was replaced by another day's.
    std::fs::remove_dir_all(work.out()).unwrap();
    std::fs::remove_dir_all(work.state()).unwrap();
    assert!(vigil_run(&work).status().unwrap().success());
    std::fs::remove_dir_all(work.data()).unwrap();
    work.generate(5, 300);
    let output = vigil_run(&work).stderr(Stdio::piped()).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not the file the checkpoint was taken in"),
        "{stderr}"
    );
}
