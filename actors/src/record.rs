//! Output records: what templates emit and sinks write, one JSON object per line.
//!
//! Every record has `id` (`job/shard/sequence`, stable across replays), `kind`, `name`, `key`
//! and `event_time` (RFC 3339, the event time at which it became true), then its details.

use serde_json::Value;

use crate::event::DeadLetter;
use crate::time::{Millis, Rfc3339};

/// What a record is. Sinks can filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Alert,
    Event,
    Window,
    Pattern,
    DeadLetter,
}

impl RecordKind {
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Alert => "alert",
            RecordKind::Event => "event",
            RecordKind::Window => "window",
            RecordKind::Pattern => "pattern",
            RecordKind::DeadLetter => "dead_letter",
        }
    }

    pub fn parse(name: &str) -> Option<RecordKind> {
        Some(match name {
            "alert" => RecordKind::Alert,
            "event" => RecordKind::Event,
            "window" => RecordKind::Window,
            "pattern" => RecordKind::Pattern,
            "dead_letter" => RecordKind::DeadLetter,
            _ => return None,
        })
    }

    pub const NAMES: &'static [&'static str] =
        &["alert", "event", "window", "pattern", "dead_letter"];
}

/// One output record before it gets its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    pub name: String,
    /// The key of the instance (or group) it is about; `None` for unkeyed dead letters.
    pub key: Option<String>,
    pub event_time: Option<Millis>,
    /// Further fields, written after the fixed ones in this order.
    pub details: Vec<(String, Value)>,
}

impl Record {
    pub fn new(
        kind: RecordKind,
        name: impl Into<String>,
        key: impl Into<String>,
        event_time: Millis,
    ) -> Record {
        Record {
            kind,
            name: name.into(),
            key: Some(key.into()),
            event_time: Some(event_time),
            details: Vec::new(),
        }
    }

    /// Adds a detail field.
    pub fn with(mut self, field: impl Into<String>, value: impl Into<Value>) -> Record {
        self.details.push((field.into(), value.into()));
        self
    }

    pub fn dead_letter(letter: &DeadLetter) -> Record {
        let mut record = Record {
            kind: RecordKind::DeadLetter,
            name: letter.reason.name().to_owned(),
            key: letter.key.clone(),
            event_time: letter.time,
            details: Vec::new(),
        };
        record = record
            .with("reason", letter.detail.clone())
            .with("source", letter.source.clone());
        if let Some(file) = &letter.file {
            record = record.with("file", file.clone());
        }
        if let Some(line) = letter.line {
            record = record.with("line", line);
        }
        record.with("raw", letter.raw.clone())
    }

    /// Renders the record as one JSON line (without the newline), `id` first. Written
    /// straight into one buffer: nothing else is allocated. (Numbers and times are written
    /// without `write!`: through the formatting machinery they were half the cost.)
    pub fn to_json_line(&self, id: &RecordId) -> String {
        let mut out = Vec::with_capacity(256);
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(id.job.as_bytes());
        out.push(b'/');
        out.extend_from_slice(number.format(id.shard).as_bytes());
        out.push(b'/');
        out.extend_from_slice(number.format(id.seq).as_bytes());
        out.push(b'"');
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(self.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"name\":");
        push_json(&mut out, self.name.as_str());
        out.extend_from_slice(b",\"key\":");
        push_json(&mut out, &self.key);
        out.extend_from_slice(b",\"event_time\":");
        match self.event_time {
            Some(t) => {
                out.push(b'"');
                Rfc3339(t).append_to(&mut out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        for (field, value) in &self.details {
            out.push(b',');
            push_json(&mut out, field.as_str());
            out.push(b':');
            push_json(&mut out, value);
        }
        out.push(b'}');
        String::from_utf8(out).expect("JSON is UTF-8")
    }
}

/// The stable identity of an output record: which job, which shard, the shard's sequence.
/// `job` is the job name already escaped for JSON ([`json_escaped`]), done once per sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordId<'a> {
    pub job: &'a str,
    pub shard: u32,
    pub seq: u64,
}

impl RecordId<'_> {
    /// Reads the id back from a line written by [`Record::to_json_line`]. Returns
    /// `(shard, seq)` for a line of job `job` (JSON-escaped); `None` for anything else.
    pub fn parse_line(line: &str, job: &str) -> Option<(u32, u64)> {
        let rest = line.strip_prefix("{\"id\":\"")?;
        let end = rest.find('"')?;
        let id = &rest[..end];
        let mut parts = id.rsplitn(3, '/');
        let seq = parts.next()?.parse().ok()?;
        let shard = parts.next()?.parse().ok()?;
        let line_job = parts.next()?;
        (line_job == job).then_some((shard, seq))
    }
}

fn push_json(out: &mut Vec<u8>, value: &(impl serde::Serialize + ?Sized)) {
    serde_json::to_writer(out, value).expect("a JSON value or text serializes into memory");
}

/// A string's JSON escaping without the surrounding quotes.
pub fn json_escaped(text: &str) -> String {
    let quoted = Value::from(text).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_id_first_and_parses_back() {
        let record =
            Record::new(RecordKind::Alert, "SLA_BREACHED", "ORD-\"1\"", 0).with("process", "order");
        let id = RecordId {
            job: "shop",
            shard: 3,
            seq: 17,
        };
        let line = record.to_json_line(&id);
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["id"], "shop/3/17");
        assert_eq!(value["kind"], "alert");
        assert_eq!(value["key"], "ORD-\"1\"");
        assert_eq!(value["event_time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["process"], "order");
        assert_eq!(RecordId::parse_line(&line, "shop"), Some((3, 17)));
        assert_eq!(RecordId::parse_line(&line, "other"), None);
        assert_eq!(RecordId::parse_line("{\"id\":\"shop/3/1", "shop"), None);
    }
}
