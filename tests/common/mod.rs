//! Helpers shared by the integration tests: generated input, the example topology pointed at
//! a temporary directory, and comparison of outputs with the generator's ground truth.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use vigil_actors::job::RunSummary;
use vigil_actors::shop::{self, GenerateSummary, ShopConfig};
use vigil_actors::spec::JobSpec;

pub const EXAMPLE: &str = include_str!("../../examples/order-fulfilment/topology.toml");

/// A working directory with `data/`, `out/` and `state/`.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Workdir {
        Workdir {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn data(&self) -> PathBuf {
        self.path().join("data")
    }
    pub fn out(&self) -> PathBuf {
        self.path().join("out")
    }
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// The variables the example topology reads, pointing into this directory.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("VIGIL_DATA".into(), self.data().display().to_string()),
            ("VIGIL_OUT".into(), self.out().display().to_string()),
            ("VIGIL_STATE".into(), self.state().display().to_string()),
        ]
    }

    /// Compiles `topology` with this directory's variables.
    pub fn compile(&self, topology: &str) -> JobSpec {
        let env = self.env();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        match vigil_topology::compile_str(topology, "topology.toml", &lookup) {
            Ok(spec) => spec,
            Err(diagnostics) => panic!("{diagnostics}"),
        }
    }

    /// Writes `topology` here and starts `vigil run --quiet` on it with this directory's
    /// variables and stdin piped (for a topology that reads `stdin`).
    pub fn spawn_run(&self, topology: &str, stdout: Stdio, stderr: Stdio) -> Child {
        let path = self.path().join("topology.toml");
        std::fs::write(&path, topology).unwrap();
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .arg("run")
            .arg(&path)
            .arg("--quiet")
            .envs(self.env())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    pub fn generate(&self, seed: u64, orders: u64) -> GenerateSummary {
        let config = ShopConfig {
            seed,
            orders,
            ..ShopConfig::default()
        };
        shop::generate(&config, &self.data(), &mut |_, _| {}).expect("generate")
    }

    /// All output lines of all sinks, sorted (ids included).
    pub fn output_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for file in jsonl_files(&self.out()) {
            let text = std::fs::read_to_string(&file).unwrap();
            lines.extend(text.lines().map(str::to_owned));
        }
        lines.sort();
        lines
    }
}

/// The `[state]` setting of a run that passivates by count (`ahead` false) or also ahead of
/// its checkpoints (`ahead`: with `Faults::passivate_ahead_always`, the default bound).
///
/// By count: a shard holding one instance more than its share of `max_resident` checkpoints at
/// once, so each shard keeps only its most recent instances whatever the timing. With the
/// checkpoints of a short interval alone (`max_resident_overshoot = 0`), how much a run
/// passivated depended on how many intervals fell within it: a CI run of
/// `a_checkpoint_whose_commit_fails_…` read 69 instances back from redb, where 820–2 510 were
/// usual; with this, 3 413–3 444 in 24 runs, two at a time. (A shard may passivate ahead here
/// too, but with a slack of one instance it writes what it takes out at once, so later events
/// read them from redb as after a checkpoint.)
pub fn passivation_setting(ahead: bool) -> &'static str {
    if ahead {
        ""
    } else {
        "max_resident_overshoot = 2"
    }
}

/// Asserts that a run read many instances back from redb (more than 100): that it passivated
/// them on the way.
pub fn assert_many_reactivated(summary: &RunSummary) {
    assert!(
        summary.counts.instances_loaded > 100,
        "{:?}",
        summary.counts
    );
}

/// The example topology with a setting replaced (`key = value` lines).
pub fn example_with(replacements: &[(&str, &str)]) -> String {
    let mut text = EXAMPLE.to_owned();
    for (from, to) in replacements {
        assert!(text.contains(from), "the example has no `{from}`");
        text = text.replace(from, to);
    }
    text
}

pub fn jsonl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "jsonl"));
    files.sort();
    files
}

pub type Identity = (String, String, Option<String>, Option<String>);

fn identity(value: &Value) -> Identity {
    let text = |f: &str| value.get(f).and_then(Value::as_str).map(str::to_owned);
    (
        text("kind").unwrap_or_default(),
        text("name").unwrap_or_default(),
        text("key"),
        text("event_time"),
    )
}

/// Records by (kind, name, key, event_time) with their counts.
pub fn identities(files: &[PathBuf]) -> BTreeMap<Identity, usize> {
    let mut out = BTreeMap::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: {e}: {line}", file.display()));
            *out.entry(identity(&value)).or_insert(0) += 1;
        }
    }
    out
}

/// Asserts the outputs equal the ground truth exactly: nothing missing, extra or duplicated.
pub fn assert_matches_ground_truth(work: &Workdir) {
    let expected = identities(&[work.data().join("expected.jsonl")]);
    let actual = identities(&jsonl_files(&work.out()));
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, &n)| actual.get(*k).copied().unwrap_or(0) < n)
        .map(|(k, n)| (k, *n, actual.get(k).copied().unwrap_or(0)))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(k, &n)| expected.get(*k).copied().unwrap_or(0) < n)
        .map(|(k, n)| (k, expected.get(k).copied().unwrap_or(0), *n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "outputs differ from the ground truth (record, expected count, actual count):\n missing {missing:?}\n extra or duplicated {extra:?}"
    );
    assert_eq!(
        expected.values().sum::<usize>(),
        actual.values().sum::<usize>()
    );
}
