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

/// What a record's details start with: enough for most, so that they grow once at most.
const DETAILS_CAPACITY: usize = 192;

/// One output record before it gets its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub kind: RecordKind,
    pub name: String,
    /// The key of the instance (or group) it is about; `None` for unkeyed dead letters.
    pub key: Option<String>,
    pub event_time: Option<Millis>,
    /// Further fields, written after the fixed ones in the order added: rendered as JSON when
    /// added (`"field":value` pairs separated by commas), so that a record holds no tree of
    /// values and writing it copies them. [`Record::details`] reads them back.
    details: Vec<u8>,
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

    /// Adds a detail field: any value that serializes as JSON (a `Value`, a string, a number,
    /// an [`Rfc3339`] time, …). Panics if it does not, such as a map with keys that are not
    /// strings or numbers.
    pub fn with(mut self, field: impl AsRef<str>, value: impl serde::Serialize) -> Record {
        let out = self.start_detail(field.as_ref());
        serde_json::to_writer(&mut *out, &value).expect("a record's detail serializes as JSON");
        self
    }

    /// Adds a detail field whose value `write` appends to the buffer as JSON text. The text
    /// must be one JSON value: it is written as it is.
    pub(crate) fn with_json(mut self, field: &str, write: impl FnOnce(&mut Vec<u8>)) -> Record {
        write(self.start_detail(field));
        self
    }

    /// Appends `"field":` (after a comma if need be) and returns the buffer for the value.
    fn start_detail(&mut self, field: &str) -> &mut Vec<u8> {
        let out = &mut self.details;
        if out.is_empty() {
            out.reserve(DETAILS_CAPACITY);
        } else {
            out.push(b',');
        }
        push_json_str(out, field);
        out.push(b':');
        out
    }

    /// The detail fields, in order, read back from their JSON.
    pub fn details(&self) -> Vec<(String, Value)> {
        let mut object = Vec::with_capacity(self.details.len() + 2);
        object.push(b'{');
        object.extend_from_slice(&self.details);
        object.push(b'}');
        let pairs: Pairs = serde_json::from_slice(&object).expect("a record's details are JSON");
        pairs.0
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
        push_json_str(&mut out, &self.name);
        out.extend_from_slice(b",\"key\":");
        match &self.key {
            Some(key) => push_json_str(&mut out, key),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"event_time\":");
        match self.event_time {
            Some(t) => {
                out.push(b'"');
                Rfc3339(t).append_to(&mut out);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        if !self.details.is_empty() {
            out.push(b',');
            out.extend_from_slice(&self.details);
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

/// Appends `text` as a JSON string, as `serde_json` writes it: copied between quotes when it
/// has nothing to escape (names, keys, steps nearly always), else through `serde_json`.
pub(crate) fn push_json_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, text).expect("a string serializes into memory");
    }
}

/// A JSON object's fields in their order (`serde_json::Map` sorts them).
struct Pairs(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Pairs, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
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

    /// Details are rendered when added, in the order added, as `serde_json` renders them
    /// (escapes in names and values included), and read back as values.
    #[test]
    fn details_render_in_order_and_read_back() {
        let far = -70_000_000_000_000; // before year 0: the time's other formatter
        let record = Record::new(RecordKind::Pattern, "P", "K", 0)
            .with("b", "tab\there")
            .with("a\"q", 1.5)
            .with("at", Rfc3339(far))
            .with("none", None::<u64>)
            .with_json("matched", |out| out.extend_from_slice(b"[{\"x\":1}]"))
            .with("v", serde_json::json!({"z": [1, 2]}));
        let expected = vec![
            ("b".to_string(), Value::from("tab\there")),
            ("a\"q".to_string(), Value::from(1.5)),
            (
                "at".to_string(),
                Value::from(crate::time::format_rfc3339(far)),
            ),
            ("none".to_string(), Value::Null),
            ("matched".to_string(), serde_json::json!([{"x": 1}])),
            ("v".to_string(), serde_json::json!({"z": [1, 2]})),
        ];
        assert_eq!(record.details(), expected);
        let id = RecordId {
            job: "j",
            shard: 0,
            seq: 1,
        };
        let line = record.to_json_line(&id);
        assert!(
            line.ends_with(r#","b":"tab\there","a\"q":1.5,"at":"-0249-10-15T19:33:20.000Z","none":null,"matched":[{"x":1}],"v":{"z":[1,2]}}"#),
            "{line}"
        );
        let value: Value = serde_json::from_str(&line).unwrap();
        for (field, detail) in &expected {
            assert_eq!(&value[field], detail, "{field}");
        }
        let bare = Record::new(RecordKind::Alert, "A", "K", 0);
        assert!(bare.details().is_empty());
        assert!(bare
            .to_json_line(&id)
            .ends_with(r#""event_time":"1970-01-01T00:00:00.000Z"}"#));
    }
}
