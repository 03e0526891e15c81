//! Decoding: one input line → a typed, keyed, timed [`Event`], or a [`DeadLetter`] that says
//! exactly why not. The checks run in a fixed order and stop at the first failure, so a line's
//! reason is deterministic: JSON object, `type`, known type, key, time, declared fields.

use foldhash::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::hash::stable_hash64;
use crate::payload::{Field, Payload};
use crate::spec::{EventTypeSpec, FieldPath, FieldType};
use crate::time::{parse_rfc3339, Millis};

/// One decoded input event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Position of the line in the job's merged input (0-based, counts every line read).
    pub seq: u64,
    /// Index of the event type in the job's event types.
    pub type_index: u16,
    pub type_name: Arc<str>,
    /// The correlation key as configured for the event type.
    pub key: Arc<str>,
    pub time: Millis,
    pub id: Option<EventId>,
    /// The whole JSON object.
    pub payload: Payload,
}

/// An event's id, with its hash ([`stable_hash64`]), under which instances remember the ids
/// they took. Hashed once where the event is decoded, not by every instance it goes to (which
/// then read the id's bytes from memory the reader thread wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventId {
    text: Box<str>,
    hash: u64,
}

impl EventId {
    pub fn new(text: impl Into<Box<str>>) -> EventId {
        let text = text.into();
        let hash = stable_hash64(text.as_bytes());
        EventId { text, hash }
    }

    /// [`stable_hash64`] of the id's text.
    pub fn stable_hash(&self) -> u64 {
        self.hash
    }
}

impl std::ops::Deref for EventId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl From<String> for EventId {
    fn from(text: String) -> EventId {
        EventId::new(text)
    }
}

impl Event {
    /// A field of the payload by dotted path.
    pub fn field(&self, path: &FieldPath) -> Option<Field<'_>> {
        self.payload.lookup(path)
    }
}

/// Why a line or an event was dead-lettered. The names are the `name` of dead-letter records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    MalformedJson,
    MissingType,
    UnknownType,
    MissingKey,
    MissingTime,
    BadTime,
    MissingField,
    WrongFieldType,
    /// A template's handler failed (error or panic) on every retry.
    HandlerFailed,
    /// A `derive` rule of the event type could not be evaluated on the event.
    EnrichmentFailed,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::MalformedJson => "MALFORMED_JSON",
            Reason::MissingType => "MISSING_TYPE",
            Reason::UnknownType => "UNKNOWN_TYPE",
            Reason::MissingKey => "MISSING_KEY",
            Reason::MissingTime => "MISSING_TIME",
            Reason::BadTime => "BAD_TIME",
            Reason::MissingField => "MISSING_FIELD",
            Reason::WrongFieldType => "WRONG_FIELD_TYPE",
            Reason::HandlerFailed => "HANDLER_FAILED",
            Reason::EnrichmentFailed => "ENRICHMENT_FAILED",
        }
    }
}

/// A line or event that could not be processed, with everything needed to look at it again.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: Reason,
    /// Human-readable explanation.
    pub detail: String,
    pub key: Option<String>,
    pub time: Option<Millis>,
    /// The raw input line.
    pub raw: String,
    /// Where it came from: source name, file and 1-based line number (if known).
    pub source: String,
    pub file: Option<String>,
    pub line: Option<u64>,
}

struct TypeDecoder {
    index: u16,
    name: Arc<str>,
    spec: EventTypeSpec,
    /// Keys are strings, or integers where the key field is declared `integer`.
    integer_keys: bool,
}

/// Decodes lines according to the job's event type specs.
pub struct Decoder {
    types: HashMap<String, TypeDecoder>,
}

impl Decoder {
    pub fn new(event_types: &[EventTypeSpec]) -> Decoder {
        let types = event_types
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let integer_keys = spec
                    .fields
                    .iter()
                    .any(|f| f.path == spec.key && f.ty == FieldType::Integer);
                let decoder = TypeDecoder {
                    index: i as u16,
                    name: Arc::from(spec.name.as_str()),
                    spec: spec.clone(),
                    integer_keys,
                };
                (spec.name.clone(), decoder)
            })
            .collect();
        Decoder { types }
    }

    /// Decodes one line. `type_field` is the source's field naming the event type.
    /// On failure returns the reason, detail and whatever key and time could be read.
    pub fn decode(&self, line: &str, type_field: &str, seq: u64) -> Result<Event, Rejection> {
        let reject = |reason, detail: String| Rejection {
            reason,
            detail,
            key: None,
            time: None,
        };
        let Some(payload) = Payload::parse(line) else {
            return Err(match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(_)) => reject(
                    Reason::MalformedJson,
                    "an object of 4 GiB or more cannot be decoded".to_owned(),
                ),
                Ok(other) => reject(
                    Reason::MalformedJson,
                    format!("expected a JSON object, got {}", json_type_name(&other)),
                ),
                Err(e) => reject(Reason::MalformedJson, format!("invalid JSON: {e}")),
            });
        };
        let type_name = match payload.get(type_field) {
            Some(field) => match field.as_str() {
                Some(name) => name,
                None => {
                    let what = field.type_name();
                    return Err(reject(
                        Reason::MissingType,
                        format!("field `{type_field}` must be a string, got {what}"),
                    ));
                }
            },
            None => {
                return Err(reject(
                    Reason::MissingType,
                    format!("no `{type_field}` field"),
                ));
            }
        };
        let Some(ty) = self.types.get(&*type_name) else {
            return Err(reject(
                Reason::UnknownType,
                format!("event type `{type_name}` is not declared in the topology"),
            ));
        };
        let spec = &ty.spec;
        // A field that is `null` counts as missing.
        let present = |path: &FieldPath| payload.lookup(path).filter(|f| !f.is_null());
        let key: Arc<str> = match present(&spec.key) {
            None => {
                return Err(reject(
                    Reason::MissingKey,
                    format!("no key field `{}`", spec.key),
                ));
            }
            Some(k) => match k.as_str() {
                Some(text) if text.is_empty() => {
                    return Err(reject(
                        Reason::MissingKey,
                        format!("key field `{}` is empty", spec.key),
                    ));
                }
                Some(text) => Arc::from(&*text),
                // An integer's text, as `serde_json` writes it.
                None if ty.integer_keys && k.is_integer() => Arc::from(&*k.text()),
                None => {
                    let what = k.type_name();
                    return Err(reject(
                        Reason::MissingKey,
                        match ty.integer_keys {
                            true => format!(
                                "key field `{}` must be a string or an integer, got {what}",
                                spec.key
                            ),
                            false => {
                                format!("key field `{}` must be a string, got {what}", spec.key)
                            }
                        },
                    ));
                }
            },
        };
        let with_key = |reason, detail: String, time: Option<Millis>| Rejection {
            reason,
            detail,
            key: Some(key.to_string()),
            time,
        };
        let time = match present(&spec.time) {
            None => {
                return Err(with_key(
                    Reason::MissingTime,
                    format!("no time field `{}`", spec.time),
                    None,
                ));
            }
            Some(t) => match (t.as_str(), t.as_i64()) {
                (Some(text), _) => match parse_rfc3339(&text) {
                    Some(time) => time,
                    None => {
                        return Err(with_key(
                            Reason::BadTime,
                            format!(
                                "time field `{}` is not an RFC 3339 timestamp: {text:?}",
                                spec.time
                            ),
                            None,
                        ))
                    }
                },
                (None, Some(millis)) => millis,
                (None, None) => {
                    let what = t.type_name();
                    return Err(with_key(
                        Reason::BadTime,
                        format!("time field `{}` must be an RFC 3339 string or epoch milliseconds, got {what}", spec.time),
                        None,
                    ));
                }
            },
        };
        for field in &spec.fields {
            match present(&field.path) {
                None if field.required => {
                    return Err(with_key(
                        Reason::MissingField,
                        format!(
                            "required field `{}` ({}) is missing",
                            field.path,
                            field.ty.name()
                        ),
                        Some(time),
                    ));
                }
                None => {}
                Some(value) if !has_type(value, field.ty) => {
                    let what = value.type_name();
                    return Err(with_key(
                        Reason::WrongFieldType,
                        format!(
                            "field `{}` must be {}, got {what} {value}",
                            field.path,
                            article(field.ty)
                        ),
                        Some(time),
                    ));
                }
                Some(_) => {}
            }
        }
        let id = spec
            .id
            .as_ref()
            .and_then(|path| payload.lookup(path)?.key_text())
            .map(|id| EventId::new(&*id));
        Ok(Event {
            seq,
            type_index: ty.index,
            type_name: ty.name.clone(),
            key,
            time,
            id,
            payload,
        })
    }
}

/// Why a line was rejected, and the key and time if they could be read before the failure.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub reason: Reason,
    pub detail: String,
    pub key: Option<String>,
    pub time: Option<Millis>,
}

fn has_type(value: Field<'_>, ty: FieldType) -> bool {
    match ty {
        FieldType::String => value.is_string(),
        FieldType::Integer => value.is_integer(),
        FieldType::Number => value.is_number(),
        FieldType::Boolean => value.is_boolean(),
        FieldType::Timestamp => value.as_str().and_then(|t| parse_rfc3339(&t)).is_some(),
        FieldType::Object => value.is_object(),
        FieldType::Array => value.is_array(),
    }
}

fn article(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "a string",
        FieldType::Integer => "an integer",
        FieldType::Number => "a number",
        FieldType::Boolean => "a boolean",
        FieldType::Timestamp => "an RFC 3339 timestamp",
        FieldType::Object => "an object",
        FieldType::Array => "an array",
    }
}

pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::FieldSpec;

    fn decoder() -> Decoder {
        Decoder::new(&[EventTypeSpec {
            name: "ORDER_CREATED".into(),
            key: FieldPath::parse("order_number"),
            time: FieldPath::parse("occurred_at"),
            id: Some(FieldPath::parse("event_id")),
            fields: vec![FieldSpec {
                path: FieldPath::parse("parcels"),
                ty: FieldType::Integer,
                required: true,
            }],
            derive: Vec::new(),
        }])
    }

    fn reason(line: &str) -> (Reason, Option<String>, Option<Millis>) {
        let r = decoder().decode(line, "type", 0).unwrap_err();
        (r.reason, r.key, r.time)
    }

    #[test]
    fn decodes_a_valid_line() {
        let e = decoder()
            .decode(
                r#"{"type":"ORDER_CREATED","event_id":"e1","order_number":"ORD-1","occurred_at":"2026-11-02T00:00:01Z","parcels":2}"#,
                "type",
                9,
            )
            .unwrap();
        assert_eq!(
            (&*e.key, e.time, e.seq, e.id.as_deref()),
            ("ORD-1", 1_793_577_601_000, 9, Some("e1"))
        );
    }

    #[test]
    fn null_is_missing_and_times_may_be_epoch_millis() {
        let detail = |line: &str| {
            let r = decoder().decode(line, "type", 0).unwrap_err();
            (r.reason, r.detail)
        };
        let o = "\"type\":\"ORDER_CREATED\"";
        assert_eq!(
            detail(&format!("{{{o},\"order_number\":null}}")),
            (Reason::MissingKey, "no key field `order_number`".into())
        );
        assert_eq!(
            detail(&format!("{{{o},\"order_number\":7}}")),
            (
                Reason::MissingKey,
                "key field `order_number` must be a string, got number".into()
            )
        );
        assert_eq!(
            detail(&format!(
                "{{{o},\"order_number\":\"A\",\"occurred_at\":null}}"
            )),
            (Reason::MissingTime, "no time field `occurred_at`".into())
        );
        assert_eq!(
            detail(&format!("{{{o},\"order_number\":\"A\",\"occurred_at\":1.5}}")),
            (
                Reason::BadTime,
                "time field `occurred_at` must be an RFC 3339 string or epoch milliseconds, got number".into()
            )
        );
        assert_eq!(
            detail(&format!(
                "{{{o},\"order_number\":\"A\",\"occurred_at\":5,\"parcels\":null}}"
            )),
            (
                Reason::MissingField,
                "required field `parcels` (integer) is missing".into()
            )
        );
        assert_eq!(
            detail(&format!(
                "{{{o},\"order_number\":\"A\",\"occurred_at\":5,\"parcels\":2.50}}"
            )),
            (
                Reason::WrongFieldType,
                "field `parcels` must be an integer, got number 2.5".into()
            )
        );
        let e = decoder()
            .decode(
                &format!("{{{o},\"order_number\":\"A\",\"occurred_at\":-5,\"parcels\":2,\"event_id\":12}}"),
                "type",
                0,
            )
            .unwrap();
        assert_eq!((e.time, e.id.as_deref()), (-5, Some("12")));
    }

    #[test]
    fn each_failure_has_its_reason_in_a_fixed_order() {
        let t = "\"occurred_at\":\"2026-11-02T00:00:01Z\"";
        assert_eq!(reason("{\"type\":").0, Reason::MalformedJson);
        assert_eq!(reason("[1,2]").0, Reason::MalformedJson);
        assert_eq!(reason("{\"kind\":\"x\"}").0, Reason::MissingType);
        assert_eq!(
            reason("{\"type\":\"NOPE\",\"order_number\":\"A\"}").0,
            Reason::UnknownType
        );
        assert_eq!(
            reason(&format!("{{\"type\":\"ORDER_CREATED\",{t}}}")),
            (Reason::MissingKey, None, None)
        );
        assert_eq!(
            reason("{\"type\":\"ORDER_CREATED\",\"order_number\":\"A\"}"),
            (Reason::MissingTime, Some("A".into()), None)
        );
        assert_eq!(
            reason("{\"type\":\"ORDER_CREATED\",\"order_number\":\"A\",\"occurred_at\":\"not-a-time\"}").0,
            Reason::BadTime
        );
        let (r, key, time) = reason(&format!(
            "{{\"type\":\"ORDER_CREATED\",\"order_number\":\"A\",{t},\"parcels\":\"two\"}}"
        ));
        assert_eq!(
            (r, key.as_deref(), time),
            (Reason::WrongFieldType, Some("A"), Some(1_793_577_601_000))
        );
        assert_eq!(
            reason(&format!(
                "{{\"type\":\"ORDER_CREATED\",\"order_number\":\"A\",{t}}}"
            ))
            .0,
            Reason::MissingField
        );
    }
}
