//! Sources: where lines come from, and exactly where a reader is in them.
//!
//! Each source runs on its own thread and hands chunks of lines to the job's reader through a
//! bounded channel. A chunk carries the source's cursor after its last line, so the reader's
//! position (kept in every shard's checkpoint) says where to resume after a crash.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};

use serde::{Deserialize, Serialize};

use crate::shop::{self, ShopConfig};
use crate::spec::{SourceKind, SourceSpec};

/// Lines per chunk: the unit of reading, merging and batching.
pub const CHUNK_LINES: usize = 1024;

/// Where one source is: which file, which byte, which line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Index into the source's sorted file list (file sources).
    pub file_index: u32,
    /// File name at `file_index`, to notice a changed file list.
    pub file: Option<String>,
    pub offset: u64,
    /// Lines consumed in the current file (file sources) or in the stream (others).
    pub line: u64,
    pub done: bool,
    /// Hash of the current file's first 4 KiB, to notice a file replaced under a checkpoint.
    pub fingerprint: Option<u64>,
}

/// A run of lines from one source.
pub struct Chunk {
    pub lines: Vec<String>,
    /// 1-based line number of the first line within `file`.
    pub first_line: u64,
    pub file: Option<String>,
    /// The cursor after the last line of the chunk.
    pub cursor: Cursor,
}

pub enum SourceMessage {
    Chunk(Chunk),
    End,
    Failed(String),
}

/// A running source: chunks arrive on `chunks`.
pub struct RunningSource {
    pub spec: SourceSpec,
    pub chunks: Receiver<SourceMessage>,
    /// Whether the source can run dry without ending (stdin): only such sources advance the
    /// watermark with the wall clock when idle.
    pub unbounded: bool,
}

/// Starts reading `spec` from `cursor` on a thread of its own.
pub fn start(spec: &SourceSpec, cursor: Cursor) -> io::Result<RunningSource> {
    let (tx, rx) = sync_channel(4);
    let unbounded = matches!(spec.kind, SourceKind::Stdin);
    let name = format!("source-{}", spec.name);
    let mut reader: Box<dyn LineReader> = match &spec.kind {
        SourceKind::File { path } => Box::new(FileReader::open(path, cursor)?),
        SourceKind::Stdin => {
            if cursor.line > 0 {
                tracing::warn!(source = %spec.name, "stdin cannot be replayed: lines read before the last run's end are not read again");
            }
            Box::new(StdinReader::start(cursor)?)
        }
        SourceKind::Generator { seed, orders } => {
            let config = ShopConfig {
                seed: *seed,
                orders: *orders,
                ..ShopConfig::default()
            };
            let mut lines = shop::lines(&config);
            for _ in 0..cursor.line {
                if lines.next().is_none() {
                    break;
                }
            }
            Box::new(StreamReader {
                lines: Box::new(lines.map(Ok)),
                cursor,
            })
        }
        SourceKind::Kafka { .. } => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "Kafka sources are read by the Kafka runner (`vigil run` starts it when the topology has a [kafka] section)",
            ))
        }
    };
    std::thread::Builder::new().name(name).spawn(move || loop {
        let message = match reader.next_chunk() {
            Ok(Some(chunk)) => SourceMessage::Chunk(chunk),
            Ok(None) => SourceMessage::End,
            Err(e) => SourceMessage::Failed(e.to_string()),
        };
        let last = !matches!(message, SourceMessage::Chunk(_));
        if tx.send(message).is_err() || last {
            return;
        }
    })?;
    Ok(RunningSource {
        spec: spec.clone(),
        chunks: rx,
        unbounded,
    })
}

trait LineReader: Send {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>>;
}

/// A path or glob of newline-delimited JSON files, read one after another in name order.
struct FileReader {
    files: Vec<PathBuf>,
    cursor: Cursor,
    reader: Option<BufReader<File>>,
}

impl FileReader {
    fn open(pattern: &str, mut cursor: Cursor) -> io::Result<FileReader> {
        let mut files: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad glob `{pattern}`: {e}"),
                )
            })?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no input file matches `{pattern}`"),
            ));
        }
        if let Some(name) = &cursor.file {
            match files.iter().position(|f| f.display().to_string() == *name) {
                Some(i) => {
                    cursor.file_index = i as u32;
                    let mut file = File::open(&files[i])?;
                    if cursor
                        .fingerprint
                        .is_some_and(|known| known != fingerprint(&mut file).unwrap_or(0))
                    {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "`{name}` is not the file the checkpoint was taken in (its content changed); \
                                 use a new state directory to read it from the start"
                            ),
                        ));
                    }
                    // Files may have been added since: read on from here.
                    cursor.done = false;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!(
                            "the checkpoint is in `{name}`, which no longer matches `{pattern}`"
                        ),
                    ))
                }
            }
        }
        Ok(FileReader {
            files,
            cursor,
            reader: None,
        })
    }
}

impl LineReader for FileReader {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let mut lines = Vec::with_capacity(CHUNK_LINES);
        let mut raw = Vec::with_capacity(256);
        loop {
            let index = self.cursor.file_index as usize;
            if index >= self.files.len() {
                self.cursor.done = true;
                return Ok(None);
            }
            let path = &self.files[index];
            let name = path.display().to_string();
            if self.reader.is_none() {
                let mut file = File::open(path)?;
                let fingerprint = fingerprint(&mut file)?;
                match self.cursor.fingerprint {
                    Some(known) if known != fingerprint => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "`{name}` is not the file the checkpoint was taken in (its content changed); \
                                 use a new state directory to read it from the start"
                            ),
                        ));
                    }
                    _ => self.cursor.fingerprint = Some(fingerprint),
                }
                file.seek(SeekFrom::Start(self.cursor.offset))?;
                self.reader = Some(BufReader::with_capacity(1 << 20, file));
                self.cursor.file = Some(name.clone());
            }
            let reader = self.reader.as_mut().expect("opened above");
            let first_line = self.cursor.line + 1;
            while lines.len() < CHUNK_LINES {
                raw.clear();
                let n = reader.read_until(b'\n', &mut raw)?;
                if n == 0 {
                    break;
                }
                self.cursor.offset += n as u64;
                self.cursor.line += 1;
                // `from_utf8` checks a word at a time; `from_utf8_lossy` goes byte by byte
                // (1 700 instructions for a 240-byte line), so it is only for invalid lines.
                let text = match std::str::from_utf8(&raw) {
                    Ok(text) => std::borrow::Cow::Borrowed(text),
                    Err(_) => String::from_utf8_lossy(&raw),
                };
                let text = text.trim_end_matches(['\n', '\r']);
                lines.push(text.to_owned());
            }
            if !lines.is_empty() {
                let chunk = Chunk {
                    lines,
                    first_line,
                    file: Some(name),
                    cursor: self.cursor.clone(),
                };
                return Ok(Some(chunk));
            }
            // End of this file: on to the next one. The cursor stays on the last file read
            // until another is opened, so a resumed run can check it is still the same file.
            if index + 1 >= self.files.len() {
                self.cursor.done = true;
                return Ok(None);
            }
            self.reader = None;
            self.cursor = Cursor {
                file_index: self.cursor.file_index + 1,
                ..Cursor::default()
            };
        }
    }
}

/// Hash of a file's first 4 KiB (the whole file if shorter).
fn fingerprint(file: &mut File) -> io::Result<u64> {
    use std::io::Read;
    let mut head = Vec::with_capacity(4096);
    file.by_ref().take(4096).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(crate::hash::stable_hash64(&head))
}

/// A stream of lines without files: stdin or the built-in generator.
struct StreamReader {
    lines: Box<dyn Iterator<Item = io::Result<String>> + Send>,
    cursor: Cursor,
}

impl LineReader for StreamReader {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let first_line = self.cursor.line + 1;
        let mut lines = Vec::with_capacity(CHUNK_LINES);
        for line in self.lines.by_ref() {
            lines.push(line?);
            self.cursor.line += 1;
            if lines.len() == CHUNK_LINES {
                break;
            }
        }
        if lines.is_empty() {
            self.cursor.done = true;
            return Ok(None);
        }
        Ok(Some(Chunk {
            lines,
            first_line,
            file: None,
            cursor: self.cursor.clone(),
        }))
    }
}

/// Standard input: lines arrive when they arrive, so a chunk is handed on at most `MAX_WAIT`
/// after its first line arrived, or as soon as no line came for `QUIET`, not only when it is
/// full. A steady stream that never pauses is then delayed by at most `MAX_WAIT` here (at
/// 18 000 lines/s a full chunk takes 57 ms to fill), a burst only until it ends, and a quiet
/// stream never holds events back while the idle watermark moves on.
struct StdinReader {
    lines: std::sync::mpsc::Receiver<io::Result<String>>,
    cursor: Cursor,
}

impl StdinReader {
    const MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
    const QUIET: std::time::Duration = std::time::Duration::from_micros(200);

    fn start(cursor: Cursor) -> io::Result<StdinReader> {
        let (tx, rx) = sync_channel(CHUNK_LINES);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                for line in BufReader::new(io::stdin()).lines() {
                    let failed = line.is_err();
                    if tx.send(line).is_err() || failed {
                        return;
                    }
                }
            })?;
        Ok(StdinReader { lines: rx, cursor })
    }
}

impl LineReader for StdinReader {
    fn next_chunk(&mut self) -> io::Result<Option<Chunk>> {
        let first_line = self.cursor.line + 1;
        let mut lines = Vec::new();
        // Wait as long as it takes for the first line, then only while lines keep coming.
        let first = match self.lines.recv() {
            Ok(line) => line?,
            Err(_) => {
                self.cursor.done = true;
                return Ok(None);
            }
        };
        lines.push(first);
        let deadline = std::time::Instant::now() + Self::MAX_WAIT;
        while lines.len() < CHUNK_LINES {
            let wait = deadline
                .saturating_duration_since(std::time::Instant::now())
                .min(Self::QUIET);
            match self.lines.recv_timeout(wait) {
                Ok(line) => lines.push(line?),
                Err(_) => break,
            }
        }
        self.cursor.line += lines.len() as u64;
        Ok(Some(Chunk {
            lines,
            first_line,
            file: None,
            cursor: self.cursor.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines lose their line ends; a line that is not UTF-8 is still read, its bad bytes
    /// replaced (the decoder then rejects or keeps it, with the line's number).
    #[test]
    fn a_file_reads_as_lines_without_their_ends_invalid_utf8_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(
            &path,
            b"{\"a\":1}\r\n{\"b\":\"caf\xe9\"}\n\n{\"c\":\"\xc3\xa9\"}",
        )
        .unwrap();
        let mut reader = FileReader::open(path.to_str().unwrap(), Cursor::default()).unwrap();
        let chunk = reader.next_chunk().unwrap().unwrap();
        assert_eq!(
            chunk.lines,
            [
                "{\"a\":1}",
                "{\"b\":\"caf\u{fffd}\"}",
                "",
                "{\"c\":\"\u{e9}\"}"
            ]
        );
        assert_eq!(chunk.first_line, 1);
        assert!(reader.next_chunk().unwrap().is_none());
    }
}
