//! Sinks, and the routing of records to them.
//!
//! A file sink is exactly once across crashes. Each record carries the id `job/shard/seq`; a
//! shard's sequence numbers are deterministic on replay. When a sink file is opened it is read
//! back: a torn last line (a crash mid-write) is cut off, and the highest sequence written per
//! shard is remembered. A shard that replays from its last checkpoint then regenerates the
//! same records with the same ids, and those already in the file are not written again. Before
//! a shard commits a checkpoint it syncs every sink, so what a checkpoint covers is on disk.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::record::{json_escaped, Record, RecordId, RecordKind};
use crate::spec::{SinkKind, SinkSpec};
use crate::sync::{lock, AtomicU64, Mutex, Ordering};

/// Where records end up.
pub trait Sink: Send + Sync {
    fn name(&self) -> &str;
    /// Writes one record line unless the sink already holds `(shard, seq)`.
    fn write(&self, shard: u32, seq: u64, line: &str) -> io::Result<()>;
    /// Makes everything written so far durable.
    fn sync(&self) -> io::Result<()>;
    /// Records written by this process (not counting the ones skipped as already delivered).
    fn written(&self) -> u64;
    /// The highest sequence of `shard` the sink already holds, if it can tell.
    fn delivered(&self, shard: u32) -> Option<u64>;
    /// Writes a record with what a message broker carries beside the line: the record's key
    /// and the W3C `traceparent` of the event that caused it. Files have no place for them.
    fn write_record(
        &self,
        shard: u32,
        seq: u64,
        _key: Option<&str>,
        line: &str,
        _traceparent: Option<&str>,
    ) -> io::Result<()> {
        self.write(shard, seq, line)
    }
    /// Called when this process takes `shard` over, with the [`Sink::mark`] stored in the
    /// shard's last checkpoint: the sink learns what it already holds of the shard. (A file
    /// sink learnt it when the file was opened.)
    fn restore(&self, _shard: u32, _mark: Option<&[u8]>) -> io::Result<()> {
        Ok(())
    }
    /// After [`Sink::sync`]: where the sink is for `shard`, kept in the checkpoint so that a
    /// later [`Sink::restore`] reads back only what came after it.
    fn mark(&self, _shard: u32) -> Option<Vec<u8>> {
        None
    }
}

/// Opens the sinks of kinds this crate does not know (Kafka); `None` for a kind it does not
/// handle either.
pub type SinkFactory<'a> = &'a dyn Fn(&str, &SinkKind) -> Option<io::Result<Box<dyn Sink>>>;

struct FileState {
    writer: BufWriter<File>,
    /// Highest sequence per shard present in the file.
    delivered: HashMap<u32, u64>,
    writes: u64,
    synced: u64,
}

/// Newline-delimited JSON appended to a file, exactly once.
pub struct FileSink {
    name: String,
    path: PathBuf,
    state: Mutex<FileState>,
    /// The same open file as the writer's, for `fsync` without holding `state`.
    sync_handle: File,
    written: AtomicU64,
    /// Records of this job found in the file when it was opened.
    pub existing: u64,
}

impl FileSink {
    /// Opens (or creates) the file, cutting a torn last line and reading back the ids of
    /// what `job` already delivered.
    pub fn open(name: &str, path: &Path, job: &str) -> io::Result<FileSink> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .open(path)?;
        let job = json_escaped(job);
        let mut delivered: HashMap<u32, u64> = HashMap::new();
        let mut complete_len: u64 = 0;
        let mut existing = 0;
        {
            file.seek(SeekFrom::Start(0))?;
            let mut reader = BufReader::with_capacity(1 << 20, &file);
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = reader.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    break;
                }
                complete_len += n as u64;
                if let Some((shard, seq)) = std::str::from_utf8(&line)
                    .ok()
                    .and_then(|l| RecordId::parse_line(l, &job))
                {
                    let max = delivered.entry(shard).or_insert(seq);
                    *max = (*max).max(seq);
                    existing += 1;
                }
            }
        }
        if file.metadata()?.len() != complete_len {
            tracing::warn!(sink = name, path = %path.display(), "cutting a torn last line left by a crash");
            file.set_len(complete_len)?;
            file.sync_data()?;
        }
        let sync_handle = file.try_clone()?;
        let state = FileState {
            writer: BufWriter::with_capacity(256 << 10, file),
            delivered,
            writes: 0,
            synced: 0,
        };
        Ok(FileSink {
            name: name.to_owned(),
            path: path.to_owned(),
            state: Mutex::new(state),
            sync_handle,
            written: AtomicU64::new(0),
            existing,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&self, shard: u32, seq: u64, line: &str) -> io::Result<()> {
        let mut state = lock(&self.state);
        if state.delivered.get(&shard).is_some_and(|&max| seq <= max) {
            return Ok(());
        }
        state.writer.write_all(line.as_bytes())?;
        state.writer.write_all(b"\n")?;
        state.delivered.insert(shard, seq);
        state.writes += 1;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Group commit: one fsync covers every write made before it, whichever shard made them.
    /// The fsync runs outside the lock: shards go on writing meanwhile.
    fn sync(&self) -> io::Result<()> {
        let writes = {
            let mut state = lock(&self.state);
            if state.synced == state.writes {
                return Ok(());
            }
            state.writer.flush()?;
            state.writes
        };
        self.sync_handle.sync_data()?;
        let mut state = lock(&self.state);
        state.synced = state.synced.max(writes);
        Ok(())
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn delivered(&self, shard: u32) -> Option<u64> {
        lock(&self.state).delivered.get(&shard).copied()
    }
}

/// Records to standard output. At least once: stdout cannot be read back after a crash.
pub struct StdoutSink {
    name: String,
    delivered: Mutex<HashMap<u32, u64>>,
    written: AtomicU64,
}

impl StdoutSink {
    pub fn new(name: &str) -> StdoutSink {
        StdoutSink {
            name: name.to_owned(),
            delivered: Mutex::new(HashMap::new()),
            written: AtomicU64::new(0),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&self, shard: u32, seq: u64, line: &str) -> io::Result<()> {
        let mut delivered = lock(&self.delivered);
        if delivered.get(&shard).is_some_and(|&max| seq <= max) {
            return Ok(());
        }
        delivered.insert(shard, seq);
        let mut out = io::stdout().lock();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        io::stdout().lock().flush()
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn delivered(&self, _shard: u32) -> Option<u64> {
        None // stdout cannot be read back
    }
}

/// Every sink of a job and which records go where.
pub struct Sinks {
    /// The job name, JSON-escaped once for every record id.
    job: String,
    sinks: Vec<Box<dyn Sink>>,
    /// For each process: (sink index, kinds accepted; empty = all).
    routes: Vec<Vec<(usize, Vec<RecordKind>)>>,
    dead_letter: Box<dyn Sink>,
}

impl Sinks {
    /// Opens every sink of the job; `processes` are the job's process names in order.
    pub fn open(
        job: &str,
        processes: &[String],
        specs: &[SinkSpec],
        dead_letter: &SinkKind,
    ) -> io::Result<Sinks> {
        Sinks::open_with(job, processes, specs, dead_letter, &|_, _| None)
    }

    /// [`Sinks::open`], with `external` opening the kinds this crate does not implement.
    pub fn open_with(
        job: &str,
        processes: &[String],
        specs: &[SinkSpec],
        dead_letter: &SinkKind,
        external: SinkFactory<'_>,
    ) -> io::Result<Sinks> {
        let open = |name: &str, kind: &SinkKind| -> io::Result<Box<dyn Sink>> {
            if let Some(sink) = external(name, kind) {
                return sink;
            }
            Ok(match kind {
                SinkKind::File { path } => {
                    let sink = FileSink::open(name, path, job).map_err(|e| {
                        io::Error::new(e.kind(), format!("sink `{name}` ({}): {e}", path.display()))
                    })?;
                    Box::new(sink)
                }
                SinkKind::Stdout => Box::new(StdoutSink::new(name)),
                SinkKind::Kafka { topic } => {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!("sink `{name}`: Kafka topic `{topic}` needs the Kafka runner (a [kafka] section and Kafka sources)"),
                    ))
                }
            })
        };
        let mut sinks = Vec::new();
        let mut routes = vec![Vec::new(); processes.len()];
        for (i, spec) in specs.iter().enumerate() {
            sinks.push(open(&spec.name, &spec.kind)?);
            let kinds: Vec<RecordKind> = spec
                .kinds
                .iter()
                .filter_map(|k| RecordKind::parse(k))
                .collect();
            for input in &spec.inputs {
                if let Some(p) = processes.iter().position(|p| p == input) {
                    routes[p].push((i, kinds.clone()));
                }
            }
        }
        let dead_letter = open("dead_letter", dead_letter)?;
        Ok(Sinks {
            job: json_escaped(job),
            sinks,
            routes,
            dead_letter,
        })
    }

    /// Writes a record emitted by `process` (or a dead letter) with id `shard/seq`, caused by
    /// an event that carried `traceparent`.
    pub fn write(
        &self,
        process: Option<usize>,
        shard: u32,
        seq: u64,
        record: &Record,
        traceparent: Option<&str>,
    ) -> io::Result<()> {
        let id = RecordId {
            job: &self.job,
            shard,
            seq,
        };
        let key = record.key.as_deref();
        if record.kind == RecordKind::DeadLetter {
            return self.dead_letter.write_record(
                shard,
                seq,
                key,
                &record.to_json_line(&id),
                traceparent,
            );
        }
        let Some(routes) = process.and_then(|p| self.routes.get(p)) else {
            return Ok(());
        };
        let mut line = None;
        for (sink, kinds) in routes {
            if kinds.is_empty() || kinds.contains(&record.kind) {
                let line = line.get_or_insert_with(|| record.to_json_line(&id));
                self.sinks[*sink].write_record(shard, seq, key, line, traceparent)?;
            }
        }
        Ok(())
    }

    pub fn sync(&self) -> io::Result<()> {
        for sink in self.all() {
            sink.sync()?;
        }
        Ok(())
    }

    /// Every sink learns what it already holds of `shard`, from the marks of its checkpoint
    /// (`(sink name, mark)`, as [`Sinks::marks`] gave them).
    pub fn restore(&self, shard: u32, marks: &[(String, Vec<u8>)]) -> io::Result<()> {
        for sink in self.all() {
            let mark = marks
                .iter()
                .find(|(name, _)| name == sink.name())
                .map(|(_, m)| m.as_slice());
            sink.restore(shard, mark)?;
        }
        Ok(())
    }

    /// Where each sink is for `shard`, to keep in its checkpoint (after [`Sinks::sync`]).
    pub fn marks(&self, shard: u32) -> Vec<(String, Vec<u8>)> {
        self.all()
            .filter_map(|s| s.mark(shard).map(|m| (s.name().to_owned(), m)))
            .collect()
    }

    fn all(&self) -> impl Iterator<Item = &Box<dyn Sink>> {
        self.sinks.iter().chain(std::iter::once(&self.dead_letter))
    }

    /// Sinks that already hold records of `shard` (a shard with no checkpoint must not have
    /// any: they would come from another run and be taken for this one's).
    pub fn holding_records_of(&self, shard: u32) -> Vec<String> {
        self.all()
            .filter(|s| s.delivered(shard).is_some())
            .map(|s| s.name().to_owned())
            .collect()
    }

    /// (sink name, records written by this run) for each sink, dead letters last.
    pub fn written(&self) -> Vec<(String, u64)> {
        self.all()
            .map(|s| (s.name().to_owned(), s.written()))
            .collect()
    }
}

#[cfg(all(test, not(vigil_loom)))]
mod tests {
    use super::*;

    #[test]
    fn reopening_cuts_a_torn_line_and_skips_what_was_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let line = |shard: u32, seq: u64| {
            Record::new(RecordKind::Alert, "A", "k", 0).to_json_line(&RecordId {
                job: "j",
                shard,
                seq,
            })
        };
        {
            let sink = FileSink::open("alerts", &path, "j").unwrap();
            sink.write(0, 1, &line(0, 1)).unwrap();
            sink.write(0, 2, &line(0, 2)).unwrap();
            sink.write(1, 1, &line(1, 1)).unwrap();
            sink.write(0, 2, &line(0, 2)).unwrap(); // a replayed record is not written twice
            sink.sync().unwrap();
        }
        // A crash in the middle of the next line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line(0, 3).as_bytes()[..20]).unwrap();
        drop(f);

        let sink = FileSink::open("alerts", &path, "j").unwrap();
        assert_eq!(sink.existing, 3);
        for seq in 1..=3 {
            sink.write(0, seq, &line(0, seq)).unwrap();
        }
        sink.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, vec![line(0, 1), line(0, 2), line(1, 1), line(0, 3)]);
        assert_eq!(sink.written(), 1);
    }
}
