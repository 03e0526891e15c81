//! Shard snapshots in a directory shared by the nodes: `<dir>/<job>/shard-NNNN.redb`, each a
//! compacted copy of a shard's checkpoint. A node taking a shard over restores from the
//! snapshot when it has no local state or older local state, then replays the shard's log
//! from the snapshot's position. A request file (`<dir>/<job>/request`) asks every node for
//! snapshots of the shards it owns now (`vigil snapshot`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use vigil_actors::shard::{Position, Shard};
use vigil_storage::{codec, ShardStore};

use crate::KafkaError;

pub fn path(dir: &Path, job: &str, shard: u32) -> PathBuf {
    dir.join(job).join(format!("shard-{shard:04}.redb"))
}

pub fn request_path(dir: &Path, job: &str) -> PathBuf {
    dir.join(job).join("request")
}

/// When snapshots were last requested, if ever.
pub fn requested_at(dir: &Path, job: &str) -> Option<SystemTime> {
    std::fs::metadata(request_path(dir, job))
        .and_then(|m| m.modified())
        .ok()
}

/// Asks the nodes of `job` for snapshots of every shard, and waits (up to `timeout`) until
/// each of the `shards` has one taken after the request. Returns the shards still missing.
pub fn request(
    dir: &Path,
    job: &str,
    shards: u32,
    timeout: Duration,
) -> Result<Vec<u32>, KafkaError> {
    let request = request_path(dir, job);
    std::fs::create_dir_all(request.parent().expect("a job directory"))?;
    std::fs::write(&request, b"snapshot\n")?;
    let asked = std::fs::metadata(&request)?.modified()?;
    let started = Instant::now();
    loop {
        let missing: Vec<u32> = (0..shards)
            .filter(|&s| {
                std::fs::metadata(path(dir, job, s))
                    .and_then(|m| m.modified())
                    .map_or(true, |t| t < asked)
            })
            .collect();
        if missing.is_empty() || started.elapsed() >= timeout {
            return Ok(missing);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The position a shard state file resumes from (`None`: never checkpointed).
pub fn position_of(path: &Path) -> Result<Option<Position>, KafkaError> {
    let store = ShardStore::open(path)?;
    let read = store.read()?;
    Ok(read
        .meta("position")?
        .map(|bytes| codec::decode(&bytes))
        .transpose()?)
}

/// Where a shard's state came from when this node took it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This node's own state file.
    Local,
    /// The shared snapshot (newer than the local file, or no local file).
    Snapshot,
    /// Nothing: the shard's log is replayed from its start.
    Empty,
}

impl Origin {
    pub fn name(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Snapshot => "snapshot",
            Origin::Empty => "log",
        }
    }
}

/// Puts the best state for `shard` in place in `state_dir`: the local file, unless the
/// snapshot is further along (or the local file is missing).
pub fn prepare(
    state_dir: &Path,
    snapshot_dir: Option<&Path>,
    job: &str,
    shard: u32,
) -> Result<Origin, KafkaError> {
    let local = Shard::path(state_dir, shard);
    let local_seq = if local.exists() {
        Some(position_of(&local)?.map_or(0, |p| p.seq))
    } else {
        None
    };
    let Some(snapshot) = snapshot_dir
        .map(|dir| path(dir, job, shard))
        .filter(|p| p.exists())
    else {
        return Ok(if local_seq.is_some() {
            Origin::Local
        } else {
            Origin::Empty
        });
    };
    let snapshot_seq = position_of(&snapshot)?.map_or(0, |p| p.seq);
    if local_seq.is_some_and(|l| l >= snapshot_seq) {
        return Ok(Origin::Local);
    }
    std::fs::create_dir_all(state_dir)?;
    let tmp = local.with_extension("restoring");
    std::fs::copy(&snapshot, &tmp)?;
    std::fs::rename(&tmp, &local)?;
    Ok(Origin::Snapshot)
}
