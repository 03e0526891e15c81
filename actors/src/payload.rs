//! An event's JSON object kept as its input text, with where each top-level field is in it.
//!
//! Decoding checks that the whole line is valid JSON and notes the fields' places, but builds
//! no `serde_json::Value` tree: a tree is an allocation per field name and per string, built
//! on the reader thread, read on a shard's and freed on a third. A [`Payload`] is three
//! allocations (the text, the field table and, only if `derive` rules add fields, the derived
//! ones). A shard keeps each event it handled until its next checkpoint (to replay it if the
//! shard restarts), so an event's size is memory at high input rates: the field table has 16
//! bytes a field. A field's value is read from its text when something uses it, through
//! serde_json, so every value reads exactly as it would from a `Value` parsed from the same
//! line.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::prefetch::prefetch_lines;
use crate::spec::FieldPath;

/// A JSON object: the text it was decoded from and the fields `derive` rules added.
#[derive(Clone)]
pub struct Payload {
    /// The text decoded, then the field names that had escapes in it, unescaped (rare).
    text: Box<str>,
    /// The length of the text decoded, at the start of `text`.
    len: u32,
    fields: Box<[Slot]>,
    /// Written after decoding; a derived field hides a field of the text with the same name.
    derived: Vec<(String, Value)>,
}

/// Where one top-level field is in the text: its name (as written, or, if it had escapes,
/// unescaped after the text decoded) and its value.
#[derive(Clone, Copy)]
struct Slot {
    name: Span,
    value: Span,
}

#[derive(Clone, Copy)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn len(self) -> usize {
        (self.end - self.start) as usize
    }
}

impl Payload {
    /// The payload of `text` if it is a JSON object (and under 4 GiB); `None` if it is not
    /// valid JSON or not an object (`serde_json::from_str::<Value>` says which, and why).
    pub fn parse(text: &str) -> Option<Payload> {
        u32::try_from(text.len()).ok()?;
        let base = text.as_ptr() as usize;
        let span = |part: &str| {
            let start = part.as_ptr() as usize - base;
            Span {
                start: start as u32,
                end: (start + part.len()) as u32,
            }
        };
        let mut unescaped = String::new();
        let fields = SCRATCH.with_borrow_mut(|slots| {
            slots.clear();
            for_each_field(text, |name, value| {
                let name = match name {
                    Cow::Borrowed(name) => span(name),
                    Cow::Owned(name) => {
                        let start = text.len() + unescaped.len();
                        unescaped.push_str(&name);
                        Span {
                            start: start as u32,
                            end: (start + name.len()) as u32,
                        }
                    }
                };
                slots.push(Slot {
                    name,
                    value: span(value),
                })
            })?;
            // Exactly as long as needed: one allocation, no shrinking.
            Some(slots.drain(..).collect())
        })?;
        let len = text.len() as u32; // checked above
        let text: Box<str> = if unescaped.is_empty() {
            text.into()
        } else {
            u32::try_from(text.len() + unescaped.len()).ok()?;
            (text.to_owned() + &unescaped).into_boxed_str()
        };
        Some(Payload {
            text,
            len,
            fields,
            derived: Vec::new(),
        })
    }

    /// The text the payload was decoded from (without derived fields).
    pub fn text(&self) -> &str {
        &self.text[..self.len as usize]
    }

    /// Asks the CPU to load the text and the field table, which [`Payload::get`] reads.
    pub fn prefetch(&self) {
        prefetch_lines(self.text.as_ptr(), self.text.len());
        prefetch_lines(self.fields.as_ptr(), size_of_val(&*self.fields));
    }

    /// A top-level field; with a name used twice, the last (as in a `serde_json::Value`).
    pub fn get(&self, name: &str) -> Option<Field<'_>> {
        if let Some((_, value)) = self.derived.iter().rev().find(|(n, _)| n == name) {
            return Some(Field::Value(value));
        }
        // The length first, from the span: the text (memory the reader thread wrote) is read
        // only for names of the right length.
        self.fields
            .iter()
            .rev()
            .find(|slot| slot.name.len() == name.len() && self.name(slot) == name)
            .map(|slot| Field::Text(self.slice(slot.value)))
    }

    /// A field by dotted path, through nested objects.
    pub fn lookup(&self, path: &FieldPath) -> Option<Field<'_>> {
        self.get_path(&path.0)
    }

    /// A field by its path's segments.
    pub fn get_path<S: AsRef<str>>(&self, path: &[S]) -> Option<Field<'_>> {
        let (first, rest) = path.split_first()?;
        rest.iter()
            .try_fold(self.get(first.as_ref())?, |field, name| {
                field.get(name.as_ref())
            })
    }

    /// Every top-level field in order (a name used twice comes twice), derived ones last.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Field<'_>)> {
        let written = self
            .fields
            .iter()
            .map(|slot| (self.name(slot), Field::Text(self.slice(slot.value))));
        let derived = self
            .derived
            .iter()
            .map(|(name, value)| (name.as_str(), Field::Value(value)));
        written.chain(derived)
    }

    /// Sets a derived field (it hides a field of the text with the same name).
    pub fn set(&mut self, name: String, value: Value) {
        match self.derived.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.derived.push((name, value)),
        }
    }

    /// The whole object as a `serde_json::Value`, derived fields included.
    pub fn to_value(&self) -> Value {
        let mut map = Map::new();
        for (name, field) in self.iter() {
            map.insert(name.to_owned(), field.to_value());
        }
        Value::Object(map)
    }

    fn name(&self, slot: &Slot) -> &str {
        self.slice(slot.name)
    }

    fn slice(&self, span: Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }
}

/// Payloads built in code (tests, examples).
///
/// # Panics
/// If `value` is not an object.
impl From<Value> for Payload {
    fn from(value: Value) -> Payload {
        assert!(value.is_object(), "a payload is a JSON object, not {value}");
        Payload::parse(&value.to_string()).expect("a serialized object parses")
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Payload");
        debug.field("text", &self.text());
        if !self.derived.is_empty() {
            debug.field("derived", &self.derived);
        }
        debug.finish()
    }
}

/// One field's value: its JSON text in the payload, or a derived value.
#[derive(Clone, Copy, Debug)]
pub enum Field<'a> {
    Text(&'a str),
    Value(&'a Value),
}

impl<'a> Field<'a> {
    /// A field of this value if it is an object; with a name used twice, the last.
    pub fn get(self, name: &str) -> Option<Field<'a>> {
        match self {
            Field::Text(text) if text.starts_with('{') => {
                let mut last = None;
                for_each_field(text, |n, value| {
                    if n == name {
                        last = Some(Field::Text(value));
                    }
                })?;
                last
            }
            Field::Text(_) => None,
            Field::Value(value) => value.get(name).map(Field::Value),
        }
    }

    /// The value as a `serde_json::Value`.
    pub fn to_value(self) -> Value {
        match self {
            Field::Text(text) => {
                serde_json::from_str(text).expect("checked to be valid JSON when decoded")
            }
            Field::Value(value) => value.clone(),
        }
    }

    /// The string, if the value is one (borrowed unless it has escapes).
    pub fn as_str(self) -> Option<Cow<'a, str>> {
        match self {
            Field::Text(text) if text.starts_with('"') => match text.contains('\\') {
                false => Some(Cow::Borrowed(&text[1..text.len() - 1])),
                true => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
            },
            Field::Text(_) => None,
            Field::Value(value) => value.as_str().map(Cow::Borrowed),
        }
    }

    /// A string's content; anything else as its compact JSON (a number's decimal text).
    pub fn text(self) -> Cow<'a, str> {
        match self.as_str() {
            Some(text) => text,
            None => Cow::Owned(self.to_string()),
        }
    }

    /// The value as a key: a string as is, a number as its decimal text; `None` for others.
    pub fn key_text(self) -> Option<Cow<'a, str>> {
        (self.is_string() || self.is_number()).then(|| self.text())
    }

    /// The number, if the value is one.
    pub fn number(self) -> Option<Number> {
        match self {
            Field::Text(text) if self.is_number() => serde_json::from_str(text).ok(),
            Field::Text(_) => None,
            Field::Value(value) => value.as_number().cloned(),
        }
    }

    pub fn as_u64(self) -> Option<u64> {
        self.number()?.as_u64()
    }

    pub fn as_i64(self) -> Option<i64> {
        self.number()?.as_i64()
    }

    pub fn as_f64(self) -> Option<f64> {
        self.number()?.as_f64()
    }

    /// Whether the value is an integer (fits `i64` or `u64`).
    pub fn is_integer(self) -> bool {
        self.number().is_some_and(|n| n.is_i64() || n.is_u64())
    }

    pub fn is_null(self) -> bool {
        self.type_name() == "null"
    }

    pub fn is_string(self) -> bool {
        self.type_name() == "string"
    }

    pub fn is_number(self) -> bool {
        self.type_name() == "number"
    }

    pub fn is_boolean(self) -> bool {
        self.type_name() == "boolean"
    }

    pub fn is_object(self) -> bool {
        self.type_name() == "object"
    }

    pub fn is_array(self) -> bool {
        self.type_name() == "array"
    }

    /// `null`, `boolean`, `number`, `string`, `array` or `object`.
    pub fn type_name(self) -> &'static str {
        match self {
            Field::Text(text) => match text.as_bytes().first() {
                Some(b'n') => "null",
                Some(b't' | b'f') => "boolean",
                Some(b'"') => "string",
                Some(b'[') => "array",
                Some(b'{') => "object",
                _ => "number",
            },
            Field::Value(value) => crate::event::json_type_name(value),
        }
    }
}

/// `Display` is the value's compact JSON, as `serde_json::Value` writes it.
impl fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_value().fmt(f)
    }
}

thread_local! {
    /// The field table of the payload being parsed, before it is copied out at its length.
    static SCRATCH: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// Calls `field` with each top-level field of `text` in order, as (name, value text); `None`
/// if `text` is not a valid JSON object.
fn for_each_field<'a>(text: &'a str, field: impl FnMut(Cow<'a, str>, &'a str)) -> Option<()> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(ObjectVisitor(field)).ok()?;
    de.end().ok()
}

struct ObjectVisitor<F>(F);

impl<'de, F: FnMut(Cow<'de, str>, &'de str)> Visitor<'de> for ObjectVisitor<F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key_seed(NameSeed)? {
            let value: &'de RawValue = map.next_value()?;
            (self.0)(name, value.get());
        }
        Ok(())
    }
}

/// A field name, borrowed from the text unless it has escapes.
struct NameSeed;

impl<'de> DeserializeSeed<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for NameSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(name))
    }

    fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name.to_owned()))
    }

    fn visit_string<E>(self, name: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn fields_read_as_from_a_value() {
        let text = r#" { "a" : 1.50, "s":"x\"y", "plain":"ORD-1", "n":null, "o":{"b":[1,{"c":-2}],"b":7},
            "a\u0062":true, "big":18446744073709551615, "neg":-9223372036854775808, "a":2e3 } "#;
        let payload = Payload::parse(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(payload.to_value(), value);
        for name in ["a", "s", "plain", "n", "o", "ab", "big", "neg", "missing"] {
            let field = payload.get(name);
            assert_eq!(
                field.map(Field::to_value),
                value.get(name).cloned(),
                "{name}"
            );
            assert_eq!(
                field.and_then(Field::as_str).as_deref(),
                value.get(name).and_then(Value::as_str),
                "{name}"
            );
            assert_eq!(
                field.and_then(Field::as_u64),
                value.get(name).and_then(Value::as_u64)
            );
            assert_eq!(
                field.and_then(Field::as_i64),
                value.get(name).and_then(Value::as_i64)
            );
            assert_eq!(
                field.and_then(Field::as_f64),
                value.get(name).and_then(Value::as_f64)
            );
            assert_eq!(
                field.map(Field::type_name),
                value.get(name).map(crate::event::json_type_name)
            );
            assert_eq!(
                field.map(|f| f.to_string()),
                value.get(name).map(Value::to_string)
            );
        }
        // The last of a name used twice, at the top and inside.
        assert_eq!(payload.get("a").unwrap().as_f64(), Some(2000.0));
        assert_eq!(
            payload.lookup(&FieldPath::parse("o.b")).unwrap().to_value(),
            json!(7)
        );
        assert!(payload.lookup(&FieldPath::parse("plain.x")).is_none());
        assert_eq!(payload.text(), text);
    }

    const NAMES: [&str; 6] = ["a", "b", "é", "x\"y", "tab\t", "a.b"];

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\"\\\\é\n]{0,6}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((0..NAMES.len(), inner), 0..4).prop_map(|fields| {
                    Value::Object(
                        fields
                            .into_iter()
                            .map(|(n, v)| (NAMES[n].to_owned(), v))
                            .collect(),
                    )
                }),
            ]
        })
    }

    /// An object's text with names used more than once, names with `\u` escapes and
    /// whitespace around everything.
    fn object_text() -> impl Strategy<Value = String> {
        let field = (0..NAMES.len(), any::<bool>(), json(), " {0,2}");
        prop::collection::vec(field, 0..8).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(n, escape, value, space)| {
                    let name = match escape {
                        true => NAMES[n]
                            .chars()
                            .map(|c| format!("\\u{:04x}", c as u32))
                            .collect(),
                        false => {
                            let quoted = serde_json::to_string(NAMES[n]).unwrap();
                            quoted[1..quoted.len() - 1].to_owned()
                        }
                    };
                    format!("{space}\"{name}\"{space}:{space}{value}{space}")
                })
                .collect();
            format!(" {{{}}} ", fields.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every field of any object reads as it does from `serde_json::Value`.
        #[test]
        fn any_object_reads_as_its_value(text in object_text()) {
            let value: Value = serde_json::from_str(&text).unwrap();
            let payload = Payload::parse(&text).unwrap();
            prop_assert_eq!(payload.to_value(), value.clone());
            for name in NAMES.iter().chain(&["missing"]) {
                let field = payload.get(name);
                let expected = value.get(name);
                prop_assert_eq!(field.map(Field::to_value), expected.cloned());
                let text = field.and_then(Field::as_str);
                prop_assert_eq!(text.as_deref(), expected.and_then(Value::as_str));
                prop_assert_eq!(field.and_then(Field::as_u64), expected.and_then(Value::as_u64));
                prop_assert_eq!(field.and_then(Field::as_i64), expected.and_then(Value::as_i64));
                prop_assert_eq!(field.and_then(Field::as_f64), expected.and_then(Value::as_f64));
                prop_assert_eq!(
                    field.map(Field::type_name),
                    expected.map(crate::event::json_type_name)
                );
                prop_assert_eq!(field.map(|f| f.to_string()), expected.map(Value::to_string));
                let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                prop_assert_eq!(field.map(|f| f.text().into_owned()), expected.map(text));
                prop_assert_eq!(
                    field.and_then(Field::key_text).map(Cow::into_owned),
                    expected.filter(|v| v.is_string() || v.is_number()).map(text)
                );
                for inner in NAMES {
                    prop_assert_eq!(
                        field.and_then(|f| f.get(inner)).map(Field::to_value),
                        expected.and_then(|v| v.get(inner)).cloned()
                    );
                }
            }
        }
    }

    #[test]
    fn anything_but_a_valid_object_is_refused() {
        for text in [
            "",
            "[1,2]",
            "\"s\"",
            "3",
            "{\"a\":}",
            "{\"a\":1",
            "{\"a\":1} x",
            "{\"a\":[1,}",
            "{\"a\":\"\\q\"}",
        ] {
            assert!(Payload::parse(text).is_none(), "{text}");
            assert!(
                !matches!(serde_json::from_str(text), Ok(Value::Object(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn derived_fields_hide_written_ones() {
        let mut payload = Payload::from(json!({"a": 1, "b": "x"}));
        payload.set("a".into(), json!("derived"));
        payload.set("c".into(), json!({"d": 4}));
        payload.set("c".into(), json!({"d": 5}));
        assert_eq!(
            payload.get("a").unwrap().as_str().as_deref(),
            Some("derived")
        );
        assert_eq!(
            payload.lookup(&FieldPath::parse("c.d")).unwrap().as_u64(),
            Some(5)
        );
        assert_eq!(
            payload.to_value(),
            json!({"a": "derived", "b": "x", "c": {"d": 5}})
        );
        assert_eq!(payload.text(), r#"{"a":1,"b":"x"}"#);
    }
}
