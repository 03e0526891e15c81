//! `vigil bench`, at a small size: one run prints every figure issue 5 asks for, over the
//! workloads it was asked for, and ends with each target's verdict.

use std::process::Command;

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// The number just before `suffix` on the line containing `anchor`, e.g. the `5000` of
/// `(5000 lines in` on the scale run's line.
fn number_before(output: &str, anchor: &str, suffix: &str) -> f64 {
    let line = output
        .lines()
        .find(|l| l.contains(anchor))
        .unwrap_or_else(|| panic!("no line with `{anchor}` in:\n{output}"));
    let before = &line[..line
        .find(suffix)
        .unwrap_or_else(|| panic!("no `{suffix}` in `{line}`"))];
    let number = before.rsplit(['(', ' ']).next().unwrap();
    number
        .parse()
        .unwrap_or_else(|_| panic!("`{number}` before `{suffix}` in `{line}`"))
}

#[test]
fn one_run_measures_every_target_over_the_workloads_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(VIGIL)
        .args(["bench", "--dir"])
        .arg(dir.path())
        .args(["--orders", "1500", "--reps", "1", "--keys-small", "100"])
        .args(["--keys-large", "20000", "--key-events", "20000"])
        .args(["--scale-orders", "5000", "--latency-pairs", "1500"])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The ceiling and the full topology on one worker and on all cores, as shares of it.
    assert!(number_before(&stdout, " events/s (runs:", " events/s") > 0.0);
    for label in ["1 worker thread:", "all cores (workers = 0):"] {
        let share = number_before(&stdout, label, "% of the ceiling");
        assert!(share > 0.0 && share < 1000.0, "{label} {share}");
    }
    // Key scaling: both workloads have every event, over their own key counts.
    assert_eq!(number_before(&stdout, "  100 keys:", " lines in"), 20000.0);
    assert_eq!(
        number_before(&stdout, "  20000 keys:", " lines in"),
        20000.0
    );
    // The scale run has its own workload, one order per line, every one left open.
    assert!(stdout.contains("== scale: 5000 open orders"), "{stdout}");
    assert_eq!(number_before(&stdout, "  first run:", " lines in"), 5000.0);
    // The key-scaling runs' state is deleted once measured; the scale run's is kept.
    let runs = dir.path().join("runs");
    assert!(!runs.join("keys-large").exists() && !runs.join("keys-small").exists());
    assert!(runs.join("scale").join("state").exists());
    // Every pair's PARCEL_SHIPPED was answered and timed.
    assert_eq!(number_before(&stdout, "at half that", " outputs;"), 1500.0);

    // The summary: one line per target measured, each with its verdict.
    let summary = stdout
        .split("== targets measured in this run\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary in:\n{stdout}"));
    let verdicts: Vec<&str> = summary
        .lines()
        .take_while(|l| l.starts_with("  ") && !l.starts_with("  ("))
        .collect();
    for (what, target) in [
        (
            "full topology on 1 worker, share of the ceiling",
            "(target >= 50%)",
        ),
        (
            "throughput cost of checkpoints every 1 s",
            "(target <= 15%)",
        ),
        ("20000 keys / 100 keys throughput", "(target >= 0.5)"),
        ("5000 open orders, peak RSS", "(target <= 1 GiB)"),
        ("restart over 5000 open orders", "(target <= 2 s)"),
        (
            "p99 event-to-output latency at half the maximum rate",
            "(target <= 10 ms)",
        ),
    ] {
        let line = verdicts
            .iter()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no `{what}` in the summary:\n{summary}"));
        assert!(line.contains(target), "{line}");
        assert!(
            line.ends_with(": met") || line.ends_with(": NOT MET"),
            "{line}"
        );
    }
    assert_eq!(verdicts.len(), 6, "{summary}");
    // A 5 000-order state is far under 1 GiB, and restarts over it in well under 2 s.
    let rss = verdicts.iter().find(|l| l.contains("peak RSS")).unwrap();
    assert!(rss.ends_with(": met"), "{rss}");
}
