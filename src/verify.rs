//! Compares what a run wrote with a ground truth, on (kind, name, key, event_time): the
//! check a newcomer, a test or another tool runs after `vigil run`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// The identity of a record for comparison.
pub type RecordKey = (String, String, Option<String>, Option<String>);

#[derive(Debug, Default)]
pub struct Comparison {
    pub expected: usize,
    pub actual: usize,
    pub missing: Vec<RecordKey>,
    pub extra: Vec<RecordKey>,
    /// Records present more than once in the output (with their count).
    pub duplicated: Vec<(RecordKey, usize)>,
}

impl Comparison {
    pub fn is_exact(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.duplicated.is_empty()
    }
}

fn key_of(value: &Value) -> RecordKey {
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    (
        text("kind").unwrap_or_default(),
        text("name").unwrap_or_default(),
        text("key"),
        text("event_time"),
    )
}

/// Counts the records of JSONL files by their comparison key.
pub fn read_records(files: &[PathBuf]) -> Result<BTreeMap<RecordKey, usize>> {
    let mut records = BTreeMap::new();
    for path in files {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        for (i, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a JSON record", path.display(), i + 1))?;
            *records.entry(key_of(&value)).or_insert(0) += 1;
        }
    }
    Ok(records)
}

/// Every `*.jsonl` file directly under `dir`, sorted.
pub fn jsonl_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    Ok(files)
}

/// Counts the records of JSONL files by (kind, name).
pub fn count_by_name(files: &[PathBuf]) -> Result<BTreeMap<(String, String), usize>> {
    let mut counts = BTreeMap::new();
    for ((kind, name, _, _), n) in read_records(files)? {
        *counts.entry((kind, name)).or_insert(0) += n;
    }
    Ok(counts)
}

pub fn compare(expected: &Path, outputs: &[PathBuf]) -> Result<Comparison> {
    let expected = read_records(&[expected.to_owned()])?;
    let actual = read_records(outputs)?;
    let mut comparison = Comparison {
        expected: expected.values().sum(),
        actual: actual.values().sum(),
        ..Comparison::default()
    };
    for (key, &count) in &expected {
        let got = actual.get(key).copied().unwrap_or(0);
        if got == 0 {
            comparison.missing.push(key.clone());
        } else if got > count {
            comparison.duplicated.push((key.clone(), got));
        }
    }
    for (key, &count) in &actual {
        if !expected.contains_key(key) {
            comparison.extra.push(key.clone());
            if count > 1 {
                comparison.duplicated.push((key.clone(), count));
            }
        }
    }
    Ok(comparison)
}

pub fn describe(key: &RecordKey) -> String {
    format!(
        "{} {} key={} at {}",
        key.0,
        key.1,
        key.2.as_deref().unwrap_or("null"),
        key.3.as_deref().unwrap_or("null")
    )
}
