//! Enrichment by business rules: reference tables loaded once at start from CSV or JSON files
//! (`[reference.NAME]`), and `derive` rules — CEL expressions — that add fields to an event's
//! payload after it is decoded and before it is routed to the templates (`[events.TYPE.derive]`).
//!
//! A reference table is a CEL map from the string value of its `key` column to its row (a map
//! of column → value), bound once as a shared value: evaluating a rule never copies a table.
//! Rules run in declaration order; each sees `event` with the fields derived before it. A rule
//! that cannot be evaluated dead-letters the event with reason `ENRICHMENT_FAILED`.
//!
//! ```
//! use vigil_actors::enrich::load_table;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("brands.csv");
//! std::fs::write(&path, "brand,segment,margin\nacme,premium,0.25\n").unwrap();
//! let table = load_table(&path, "brand").unwrap();
//! assert_eq!(table.len(), 1);
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cel::objects::{Key, Map};
use cel::Value as CelValue;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::event::{Decoder, Event, Reason, Rejection};
use crate::expr::{to_cel, to_json, Expr, Vars};
use crate::spec::JobSpec;

/// A problem in a reference file, at a 1-based line when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct LoadError {
    pub file: String,
    pub line: Option<u64>,
    pub message: String,
}

/// A loaded reference table: rows by key, as a CEL map shared by every evaluation.
#[derive(Debug, Clone)]
pub struct ReferenceTable {
    value: CelValue,
    len: usize,
}

impl ReferenceTable {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The row of `key`, as JSON (for tests and tools).
    pub fn get(&self, key: &str) -> Option<Value> {
        match &self.value {
            CelValue::Map(map) => map
                .map
                .get(&Key::String(Arc::new(key.to_owned())))
                .map(to_json),
            _ => None,
        }
    }
}

/// Loads a `.csv` (with a header row) or `.json` (an array of objects) file, indexed by the
/// column `key`. Reports every problem found (malformed rows, missing or duplicate keys).
pub fn load_table(path: &Path, key: &str) -> Result<ReferenceTable, Vec<LoadError>> {
    let file = path.display().to_string();
    let error = |line: Option<u64>, message: String| LoadError {
        file: file.clone(),
        line,
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![error(None, format!("cannot read it: {e}"))])?;
    let (rows, mut problems) = match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => csv_rows(&text, key),
        Some("json") => json_rows(&text, key),
        _ => (
            Vec::new(),
            vec![(
                None,
                "a reference file must be `.csv` or `.json`".to_owned(),
            )],
        ),
    };
    let mut map: HashMap<Key, CelValue> = HashMap::with_capacity(rows.len());
    let mut first_line: HashMap<String, u64> = HashMap::new();
    for (line, row_key, row) in rows {
        if let Some(first) = first_line.get(&row_key) {
            problems.push((
                Some(line),
                format!("duplicate key `{row_key}` (first on line {first})"),
            ));
            continue;
        }
        first_line.insert(row_key.clone(), line);
        map.insert(Key::String(Arc::new(row_key)), row);
    }
    if !problems.is_empty() {
        problems.sort_by_key(|(line, _)| *line);
        return Err(problems
            .into_iter()
            .map(|(line, message)| error(line, message))
            .collect());
    }
    Ok(ReferenceTable {
        len: map.len(),
        value: CelValue::Map(Map { map: Arc::new(map) }),
    })
}

/// The rows read (line, key, row) and the problems found (line, message).
type Rows = (Vec<(u64, String, CelValue)>, Vec<(Option<u64>, String)>);

/// (line, key, row) of each CSV record. Cells that read as integers, decimal numbers or
/// `true`/`false` become such values, empty cells `null`, others strings.
fn csv_rows(text: &str, key: &str) -> Rows {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            return (
                Vec::new(),
                vec![(csv_line(&e).or(Some(1)), csv_message(&e))],
            )
        }
    };
    let Some(key_column) = headers.iter().position(|h| h == key) else {
        let columns: Vec<&str> = headers.iter().collect();
        return (
            Vec::new(),
            vec![(
                Some(1),
                format!(
                    "no column `{key}` in the header (columns: {})",
                    columns.join(", ")
                ),
            )],
        );
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                problems.push((csv_line(&e), csv_message(&e)));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let row_key = record.get(key_column).unwrap_or_default();
        if row_key.is_empty() {
            problems.push((Some(line), format!("empty key column `{key}`")));
            continue;
        }
        let row: HashMap<Key, CelValue> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, cell)| (Key::String(Arc::new(h.to_owned())), cell_value(cell)))
            .collect();
        rows.push((line, row_key.to_owned(), CelValue::from(row)));
    }
    (rows, problems)
}

fn csv_line(error: &csv::Error) -> Option<u64> {
    match error.kind() {
        csv::ErrorKind::UnequalLengths { pos, .. } => pos.as_ref().map(|p| p.line()),
        _ => error.position().map(|p| p.line()),
    }
}

fn csv_message(error: &csv::Error) -> String {
    match error.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("a row has {len} fields, the header {expected_len}"),
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_owned(),
        _ => error.to_string(),
    }
}

fn cell_value(cell: &str) -> CelValue {
    if cell.is_empty() {
        return CelValue::Null;
    }
    if let Ok(i) = cell.parse::<i64>() {
        return CelValue::Int(i);
    }
    if let Ok(f) = cell.parse::<f64>() {
        if f.is_finite() {
            return CelValue::Float(f);
        }
    }
    match cell {
        "true" => CelValue::Bool(true),
        "false" => CelValue::Bool(false),
        _ => CelValue::String(Arc::new(cell.to_owned())),
    }
}

/// (line, key, row) of each object of a JSON array; the key field must be a non-empty string
/// or an integer (looked up by its decimal string).
fn json_rows(text: &str, key: &str) -> Rows {
    let items: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(e) => {
            let message = match e.classify() {
                serde_json::error::Category::Data => "expected a JSON array of objects".to_owned(),
                _ => format!("invalid JSON: {e}"),
            };
            return (Vec::new(), vec![(Some(e.line() as u64), message)]);
        }
    };
    let line_of = |raw: &RawValue| {
        let offset = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        text[..offset.min(text.len())].matches('\n').count() as u64 + 1
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for raw in items {
        let line = line_of(raw);
        let value: Value = match serde_json::from_str(raw.get()) {
            Ok(value @ Value::Object(_)) => value,
            _ => {
                problems.push((Some(line), "expected an object".to_owned()));
                continue;
            }
        };
        let row_key = match value.get(key) {
            Some(Value::String(k)) if !k.is_empty() => k.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            _ => {
                problems.push((
                    Some(line),
                    format!("no key field `{key}` (a non-empty string or an integer)"),
                ));
                continue;
            }
        };
        rows.push((line, row_key, to_cel(&value)));
    }
    (rows, problems)
}

/// The derive rules of a job, compiled, with its reference tables bound.
pub struct Enricher {
    /// The reference tables, bound once.
    base: Vars,
    /// By event type index: (field, rule).
    rules: Vec<Vec<(String, Expr)>>,
}

impl Enricher {
    /// Loads the reference tables of `spec` and compiles its derive rules.
    pub fn new(spec: &JobSpec) -> Result<Enricher, String> {
        let mut base = Vars::new();
        for reference in &spec.reference {
            let table = load_table(&reference.path, &reference.key).map_err(|errors| {
                let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
                format!("reference `{}`: {}", reference.name, errors.join("; "))
            })?;
            base.bind(&reference.name, table.value);
        }
        let rules = spec
            .event_types
            .iter()
            .map(|event_type| {
                event_type
                    .derive
                    .iter()
                    .map(|d| {
                        let expr = Expr::compile(&d.expression).map_err(|e| {
                            format!("[events.{}.derive] {}: {e}", event_type.name, d.name)
                        })?;
                        Ok((d.name.clone(), expr))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Enricher { base, rules })
    }

    /// Decodes a line and applies its event type's rules.
    pub fn decode(
        &self,
        decoder: &Decoder,
        line: &str,
        type_field: &str,
        seq: u64,
    ) -> Result<Event, Rejection> {
        let mut event = decoder.decode(line, type_field, seq)?;
        match self.apply(&mut event) {
            Ok(()) => Ok(event),
            Err(detail) => Err(Rejection {
                reason: Reason::EnrichmentFailed,
                detail,
                key: Some(event.key.to_string()),
                time: Some(event.time),
            }),
        }
    }

    /// Evaluates the rules of the event's type in order, writing each result into the payload.
    pub fn apply(&self, event: &mut Event) -> Result<(), String> {
        let Some(rules) = self.rules.get(event.type_index as usize) else {
            return Ok(());
        };
        if rules.is_empty() {
            return Ok(());
        }
        let payload = &mut event.payload;
        let mut fields: Arc<HashMap<Key, CelValue>> = Arc::new(
            payload
                .iter()
                .map(|(k, v)| (Key::String(Arc::new(k.to_owned())), to_cel(&v.to_value())))
                .collect(),
        );
        let mut vars = self.base.clone();
        for (name, rule) in rules {
            vars.bind(
                "event",
                CelValue::Map(Map {
                    map: fields.clone(),
                }),
            );
            let value = rule
                .eval(&vars)
                .map_err(|e| format!("derive `{name}` = `{}`: {e}", rule.source()))?;
            // Release the binding so that the map is updated in place, not copied.
            vars.bind("event", CelValue::Null);
            Arc::make_mut(&mut fields).insert(Key::String(Arc::new(name.clone())), to_cel(&value));
            payload.set(name.clone(), value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DerivedField, EventTypeSpec, FieldPath, ReferenceSpec, SinkKind};
    use serde_json::json;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_csv_with_typed_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "b.csv",
            "brand,segment,margin,stock,active,note\nacme,premium,0.25,3,true,\n\"big, co\",mass,0.1,0,false,\"x\"\n",
        );
        let table = load_table(&path, "brand").unwrap();
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.get("acme"),
            Some(
                json!({"brand": "acme", "segment": "premium", "margin": 0.25, "stock": 3,
                        "active": true, "note": null})
            )
        );
        assert_eq!(table.get("big, co").unwrap()["segment"], json!("mass"));
    }

    #[test]
    fn loads_json_arrays_keyed_by_strings_or_integers() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "r.json",
            r#"[{"id": 7, "name": "seven", "tags": ["a"]},
                {"id": "x", "name": "ex"}]"#,
        );
        let table = load_table(&path, "id").unwrap();
        assert_eq!(table.get("7").unwrap()["tags"], json!(["a"]));
        assert_eq!(table.get("x").unwrap()["name"], json!("ex"));
    }

    #[test]
    fn reports_every_problem_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(dir.path(), "b.csv", "brand,segment\na,x\nb\na,y\n,z\n");
        let lines: Vec<(Option<u64>, String)> = load_table(&csv, "brand")
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.message))
            .collect();
        assert_eq!(
            lines,
            [
                (Some(3), "a row has 1 fields, the header 2".to_owned()),
                (Some(4), "duplicate key `a` (first on line 2)".to_owned()),
                (Some(5), "empty key column `brand`".to_owned()),
            ]
        );
        let csv = write(dir.path(), "d.csv", "brand,segment\na,x\nb,y\na,z\n");
        let errors = load_table(&csv, "brand").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0]
            .to_string()
            .ends_with("d.csv:4: duplicate key `a` (first on line 2)"));
        assert_eq!(
            load_table(&csv, "nope").unwrap_err()[0].line,
            Some(1),
            "missing key column"
        );

        let json = write(
            dir.path(),
            "r.json",
            "[\n{\"id\": \"a\"},\n{\"id\": \"a\"},\n3\n]",
        );
        let errors: Vec<_> = load_table(&json, "id")
            .unwrap_err()
            .into_iter()
            .map(|e| (e.line, e.message))
            .collect();
        assert_eq!(
            errors,
            [
                (Some(3), "duplicate key `a` (first on line 2)".to_owned()),
                (Some(4), "expected an object".to_owned()),
            ]
        );
        let broken = write(dir.path(), "x.json", "[\n{\"id\": }\n]");
        assert_eq!(load_table(&broken, "id").unwrap_err()[0].line, Some(2));
        assert!(load_table(&dir.path().join("missing.csv"), "id").is_err());
    }

    fn spec(dir: &Path, derive: &[(&str, &str)]) -> JobSpec {
        let brands = write(
            dir,
            "brands.csv",
            "brand,segment,margin\nacme,premium,0.25\nbudget,mass,0.1\n",
        );
        JobSpec {
            name: "t".into(),
            shards: 1,
            workers: 1,
            state_dir: dir.join("state"),
            checkpoint_interval: std::time::Duration::from_secs(1),
            passivate_after: std::time::Duration::from_secs(1),
            max_resident: 1000,
            log_compaction_bytes: crate::spec::DEFAULT_LOG_COMPACTION_BYTES,
            max_resident_overshoot: 0,
            max_out_of_orderness: 0,
            idle_timeout: std::time::Duration::from_secs(1),
            dedup_retention: 0,
            max_retries: 0,
            sources: Vec::new(),
            event_types: vec![EventTypeSpec {
                name: "ORDER".into(),
                key: FieldPath::parse("order"),
                time: FieldPath::parse("at"),
                id: None,
                fields: Vec::new(),
                derive: derive
                    .iter()
                    .map(|(name, expression)| DerivedField {
                        name: (*name).into(),
                        expression: (*expression).into(),
                    })
                    .collect(),
            }],
            reference: vec![ReferenceSpec {
                name: "brands".into(),
                path: brands,
                key: "brand".into(),
            }],
            processes: Vec::new(),
            sinks: Vec::new(),
            dead_letter: SinkKind::Stdout,
            kafka: None,
        }
    }

    fn decode(enricher: &Enricher, spec: &JobSpec, line: &str) -> Result<Event, Rejection> {
        enricher.decode(&Decoder::new(&spec.event_types), line, "type", 0)
    }

    #[test]
    fn derived_fields_chain_and_use_reference_tables() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(
            dir.path(),
            &[
                ("segment", "brands[event.brand].segment"),
                ("profit", "event.amount * brands[event.brand].margin"),
                ("big", "event.profit > 20.0 && event.segment == 'premium'"),
            ],
        );
        let enricher = Enricher::new(&spec).unwrap();
        let event = decode(
            &enricher,
            &spec,
            r#"{"type":"ORDER","order":"O-1","at":0,"brand":"acme","amount":100.0}"#,
        )
        .unwrap();
        let payload = event.payload.to_value();
        assert_eq!(payload["segment"], json!("premium"));
        assert_eq!(payload["profit"], json!(25.0));
        assert_eq!(payload["big"], json!(true));
    }

    #[test]
    fn a_failing_rule_dead_letters_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), &[("segment", "brands[event.brand].segment")]);
        let enricher = Enricher::new(&spec).unwrap();
        let rejection = decode(
            &enricher,
            &spec,
            r#"{"type":"ORDER","order":"O-2","at":5,"brand":"nobody"}"#,
        )
        .unwrap_err();
        assert_eq!(rejection.reason, Reason::EnrichmentFailed);
        assert_eq!(rejection.reason.name(), "ENRICHMENT_FAILED");
        assert_eq!(
            (rejection.key.as_deref(), rejection.time),
            (Some("O-2"), Some(5))
        );
        assert!(
            rejection.detail.starts_with("derive `segment`"),
            "{}",
            rejection.detail
        );
        let rejection =
            decode(&enricher, &spec, r#"{"type":"ORDER","order":"O-3","at":5}"#).unwrap_err();
        assert_eq!(rejection.reason, Reason::EnrichmentFailed);
    }
}
