//! The template registry: which templates a topology may name with `template = "..."`, and
//! how each is built.
//!
//! Built-in templates (`process`, ...) are read by the topology compiler into typed
//! [`TemplateSpec`] variants; the registry builds them. Custom templates, written by the
//! application against the [`Template`](crate::template::Template) trait, are registered with
//! a *factory* that reads the process's TOML table (as JSON, through a [`TemplateConfig`]) and
//! returns the template, or every configuration error, each at its field, so that
//! `vigil validate` reports them at their line and column like any other mistake.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use vigil_actors::event::Event;
//! use vigil_actors::record::{Record, RecordKind};
//! use vigil_actors::registry::{Registry, TemplateConfig};
//! use vigil_actors::template::{Context, Subscription, Template, TemplateError};
//!
//! /// Alerts when a customer adds `items` items to their cart.
//! struct BigCart { event: String, items: u32 }
//!
//! #[derive(Clone, Default, Serialize, Deserialize)]
//! struct Items { count: u32 }
//!
//! impl Template for BigCart {
//!     type State = Items;
//!     fn subscriptions(&self) -> Vec<Subscription> {
//!         vec![Subscription::new(self.event.clone())]
//!     }
//!     fn on_event(&self, state: &mut Items, event: &Event, cx: &mut Context<'_>) -> Result<(), TemplateError> {
//!         state.count += 1;
//!         if state.count == self.items {
//!             cx.emit(Record::new(RecordKind::Alert, "BIG_CART", cx.key(), event.time));
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut registry = Registry::builtin();
//! registry.register("big_cart", |mut config: TemplateConfig<'_>| {
//!     let event = config.str_or("event", "CART_ITEM_ADDED");
//!     let items = config.integer_or("items", 10, 2..=1000) as u32;
//!     config.finish()?; // every error at once, unknown fields included
//!     Ok(Box::new(BigCart { event, items }))
//! });
//!
//! let errors = registry
//!     .configure("big_cart", "carts", &serde_json::json!({ "items": 1, "evnt": "X" }))
//!     .err()
//!     .unwrap();
//! assert_eq!(errors[0].message, "`items` must be between 2 and 1000");
//! assert_eq!(errors[1].message, "unknown field `evnt` in process `carts`");
//! assert_eq!(errors[1].hint.as_deref(), Some("did you mean `event`?"));
//! ```

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use serde_json::Value;

use crate::spec::{ProcessSpec, TemplateSpec};
use crate::template::DynTemplate;
use crate::templates;
use crate::time::{parse_duration, Millis};

/// What a factory returns: the template, or every error in its configuration.
pub type FactoryResult = Result<Box<dyn DynTemplate>, Vec<ConfigError>>;

/// Builds a custom template from its configuration.
pub type Factory = Arc<dyn Fn(TemplateConfig<'_>) -> FactoryResult + Send + Sync>;

/// Builds a built-in template from its typed spec; `None` when the spec is another template's.
pub type BuiltinFactory = fn(&ProcessSpec) -> Option<Box<dyn DynTemplate>>;

#[derive(Clone)]
enum Build {
    Builtin(BuiltinFactory),
    Custom(Factory),
}

#[derive(Clone)]
struct Entry {
    name: String,
    build: Build,
}

/// The templates a job may use, by name. Start from [`Registry::builtin`] and
/// [`register`](Registry::register) your own.
#[derive(Clone, Default)]
pub struct Registry {
    entries: Vec<Entry>,
}

/// One line per built-in template whose constructor is `new(process_name, config)`:
/// `builtin!(registry, "name", TemplateSpecVariant => path::to::Template);`
macro_rules! builtin {
    ($registry:ident, $name:literal, $variant:ident => $template:path) => {
        $registry.register_builtin($name, |process| match &process.template {
            TemplateSpec::$variant(config) => {
                Some(Box::new(<$template>::new(&process.name, config.clone())))
            }
            _ => None,
        })
    };
}

impl Registry {
    /// A registry without any template, not even the built-in ones.
    pub fn empty() -> Registry {
        Registry::default()
    }

    /// The built-in templates. Adding one is one line here.
    pub fn builtin() -> Registry {
        let mut registry = Registry::empty();
        builtin!(registry, "process", Process => templates::process::ProcessTemplate);
        builtin!(registry, "window", Window => templates::window::WindowTemplate);
        builtin!(registry, "union", Union => templates::union::UnionTemplate);
        builtin!(registry, "join", Join => templates::join::JoinTemplate);
        registry.register_builtin("pattern", |p| templates::pattern::build(p, "pattern"));
        registry.register_builtin("fraud", |p| templates::pattern::build(p, "fraud"));
        registry.register_builtin("customer_contact", |p| {
            templates::pattern::build(p, "customer_contact")
        });
        registry
    }

    /// Registers a custom template under `name`, which topologies then use as
    /// `template = "name"`; `factory` reads the process's configuration.
    ///
    /// # Panics
    /// If `name` is not `[A-Za-z0-9_-]+` or is already registered (a programming error).
    pub fn register<F>(&mut self, name: &str, factory: F) -> &mut Registry
    where
        F: Fn(TemplateConfig<'_>) -> FactoryResult + Send + Sync + 'static,
    {
        self.add(name, Build::Custom(Arc::new(factory)))
    }

    /// Registers a built-in template: `factory` builds it from its [`TemplateSpec`] variant.
    ///
    /// # Panics
    /// Like [`register`](Registry::register).
    pub fn register_builtin(&mut self, name: &str, factory: BuiltinFactory) -> &mut Registry {
        self.add(name, Build::Builtin(factory))
    }

    fn add(&mut self, name: &str, build: Build) -> &mut Registry {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "template name `{name}` must be [A-Za-z0-9_-]+"
        );
        assert!(
            !self.contains(name),
            "template `{name}` is already registered"
        );
        self.entries.push(Entry {
            name: name.to_owned(),
            build,
        });
        self
    }

    /// Every registered name, built-in ones first, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.name == name)
    }

    /// Whether `name` is a custom template (configured through a [`TemplateConfig`]).
    pub fn is_custom(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.name == name && matches!(e.build, Build::Custom(_)))
    }

    /// Reads a custom template's configuration: the template, or every error in it.
    pub fn configure(&self, template: &str, process: &str, config: &Value) -> FactoryResult {
        let factory = self.entries.iter().find_map(|e| match &e.build {
            Build::Custom(factory) if e.name == template => Some(factory),
            _ => None,
        });
        match factory {
            Some(factory) => factory(TemplateConfig::new(template, process, config)),
            None => Err(vec![ConfigError::new(
                "",
                format!("no custom template `{template}` is registered"),
            )]),
        }
    }

    /// Builds the template a process runs.
    pub fn build(&self, process: &ProcessSpec) -> Result<Box<dyn DynTemplate>, RegistryError> {
        if let TemplateSpec::Custom { template, config } = &process.template {
            if !self.is_custom(template) {
                return Err(RegistryError::Unknown {
                    process: process.name.clone(),
                    template: template.clone(),
                });
            }
            return self
                .configure(template, &process.name, config)
                .map_err(|errors| RegistryError::Config {
                    process: process.name.clone(),
                    template: template.clone(),
                    errors,
                });
        }
        self.entries
            .iter()
            .find_map(|e| match e.build {
                Build::Builtin(build) => build(process),
                Build::Custom(_) => None,
            })
            .ok_or_else(|| RegistryError::Unknown {
                process: process.name.clone(),
                template: "(built-in)".into(),
            })
    }
}

/// Why [`Registry::build`] could not build a process's template.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    #[error("process `{process}`: template `{template}` is not registered")]
    Unknown { process: String, template: String },
    #[error("process `{process}`: invalid configuration of template `{template}`: {}", list(.errors))]
    Config {
        process: String,
        template: String,
        errors: Vec<ConfigError>,
    },
}

fn list(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A mistake in a template's configuration, at `path` within the process's table: a key
/// (`items`), or a dotted path with indices into nested values (`rules[1].within`); empty for
/// the table itself. The topology compiler reports it at that place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// Point at the key rather than at its value (an unknown field).
    pub at_key: bool,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: path.into(),
            message: message.into(),
            hint: None,
            at_key: false,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> ConfigError {
        self.hint = Some(hint.into());
        self
    }

    /// Attaches a hint to a recorded error: `config.error("items", "...").hint("...")`.
    pub fn hint(&mut self, hint: impl Into<String>) -> &mut ConfigError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

/// A custom template's configuration, the process's TOML table without `template`, with typed
/// readers that record every mistake and carry on. Every reader marks its key as known;
/// [`finish`](TemplateConfig::finish) then reports every other key as an unknown field, and
/// returns all the errors. Values read after an error are placeholders (the default given, or
/// zero/empty), never used because `finish` fails.
///
/// `${VAR}` references were substituted by the topology compiler; strings are never empty.
pub struct TemplateConfig<'a> {
    template: &'a str,
    process: &'a str,
    config: &'a Value,
    known: Vec<String>,
    errors: Vec<ConfigError>,
}

const DURATION_HINT: &str = "write a duration such as `500ms`, `90s`, `5m`, `24h` or `1h30m`";

impl<'a> TemplateConfig<'a> {
    pub fn new(template: &'a str, process: &'a str, config: &'a Value) -> TemplateConfig<'a> {
        TemplateConfig {
            template,
            process,
            config,
            known: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// The template's registered name.
    pub fn template(&self) -> &str {
        self.template
    }

    /// The process's name (`[processes.NAME]`).
    pub fn process(&self) -> &str {
        self.process
    }

    /// The whole configuration.
    pub fn raw(&self) -> &'a Value {
        self.config
    }

    /// The value under `key`, marking `key` as known.
    pub fn get(&mut self, key: &str) -> Option<&'a Value> {
        if !self.known.iter().any(|k| k == key) {
            self.known.push(key.to_owned());
        }
        self.config.get(key).filter(|v| !v.is_null())
    }

    /// Records an error at `key` (or a path below it, `rules[1].within`); chain
    /// `.hint(...)` to say how to fix it.
    pub fn error(&mut self, path: &str, message: impl Into<String>) -> &mut ConfigError {
        self.errors.push(ConfigError::new(path, message));
        self.errors.last_mut().expect("just pushed")
    }

    fn missing(&mut self, key: &str, hint: &str) {
        let process = self.process.to_owned();
        self.error("", format!("missing field `{key}` in process `{process}`"))
            .hint(hint);
    }

    fn wrong_type(&mut self, key: &str, expected: &str, found: &Value) -> &mut ConfigError {
        let found = match found {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "a table",
        };
        self.error(
            key,
            format!("expected {expected} for `{key}`, found {found}"),
        )
    }

    pub fn optional_str(&mut self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if s.is_empty() => {
                self.error(key, format!("`{key}` must not be empty"));
                None
            }
            Value::String(s) => Some(s.clone()),
            other => {
                self.wrong_type(key, "a string", other);
                None
            }
        }
    }

    pub fn required_str(&mut self, key: &str) -> String {
        if self.get(key).is_none() {
            self.missing(key, &format!("add `{key} = \"...\"`"));
            return String::new();
        }
        self.optional_str(key).unwrap_or_default()
    }

    pub fn str_or(&mut self, key: &str, default: &str) -> String {
        self.optional_str(key).unwrap_or_else(|| default.to_owned())
    }

    /// An array of non-empty strings; empty when absent.
    pub fn strings(&mut self, key: &str) -> Vec<String> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let Value::Array(items) = value else {
            self.wrong_type(key, "an array of strings", value);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::String(s) if !s.is_empty() => out.push(s.clone()),
                _ => {
                    self.error(
                        &format!("{key}[{i}]"),
                        format!("`{key}` holds non-empty strings"),
                    );
                }
            }
        }
        out
    }

    pub fn optional_integer(&mut self, key: &str, range: RangeInclusive<i64>) -> Option<i64> {
        let value = self.get(key)?;
        let number = match value {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        let Some(number) = number else {
            self.wrong_type(key, "an integer", value);
            return None;
        };
        if !range.contains(&number) {
            let bounds = if *range.end() == i64::MAX {
                format!("at least {}", range.start())
            } else {
                format!("between {} and {}", range.start(), range.end())
            };
            self.error(key, format!("`{key}` must be {bounds}"));
            return None;
        }
        Some(number)
    }

    pub fn required_integer(&mut self, key: &str, range: RangeInclusive<i64>) -> i64 {
        if self.get(key).is_none() {
            self.missing(key, &format!("add `{key} = <integer>`"));
            return *range.start();
        }
        self.optional_integer(key, range.clone())
            .unwrap_or(*range.start())
    }

    pub fn integer_or(&mut self, key: &str, default: i64, range: RangeInclusive<i64>) -> i64 {
        self.optional_integer(key, range).unwrap_or(default)
    }

    /// A number (integer or float).
    pub fn optional_number(&mut self, key: &str) -> Option<f64> {
        let value = self.get(key)?;
        match value.as_f64() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(key, "a number", value);
                None
            }
        }
    }

    pub fn number_or(&mut self, key: &str, default: f64) -> f64 {
        self.optional_number(key).unwrap_or(default)
    }

    pub fn bool_or(&mut self, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.wrong_type(key, "`true` or `false`", other);
                default
            }
        }
    }

    /// A duration string (`90s`, `24h`, `1h30m`) greater than zero, in milliseconds.
    pub fn optional_duration(&mut self, key: &str) -> Option<Millis> {
        let value = self.get(key)?;
        let Value::String(text) = value else {
            self.wrong_type(key, "a duration string", value)
                .hint(DURATION_HINT);
            return None;
        };
        match parse_duration(text) {
            Ok(millis) if millis > 0 => Some(millis),
            Ok(_) => {
                self.error(key, format!("`{key}` must be greater than zero"))
                    .hint(DURATION_HINT);
                None
            }
            Err(reason) => {
                self.error(key, format!("invalid duration for `{key}`: {reason}"))
                    .hint(DURATION_HINT);
                None
            }
        }
    }

    pub fn required_duration(&mut self, key: &str) -> Millis {
        if self.get(key).is_none() {
            self.missing(key, DURATION_HINT);
            return 0;
        }
        self.optional_duration(key).unwrap_or(0)
    }

    /// `default` is a duration string.
    pub fn duration_or(&mut self, key: &str, default: &str) -> Millis {
        self.optional_duration(key)
            .unwrap_or_else(|| parse_duration(default).expect("valid default duration"))
    }

    /// Every error recorded, plus one per unknown field; `Ok` when there is none.
    pub fn finish(mut self) -> Result<(), Vec<ConfigError>> {
        if let Value::Object(map) = self.config {
            for key in map.keys() {
                if self.known.iter().any(|k| k == key) {
                    continue;
                }
                let known: Vec<&str> = self.known.iter().map(String::as_str).collect();
                let hint = match closest(key, &known) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None if known.is_empty() => "this template takes no settings".to_owned(),
                    None => format!("known fields: {}", quoted(&known)),
                };
                self.errors.push(ConfigError {
                    path: key.clone(),
                    message: format!("unknown field `{key}` in process `{}`", self.process),
                    hint: Some(hint),
                    at_key: true,
                });
            }
        }
        match self.errors.is_empty() {
            true => Ok(()),
            false => Err(self.errors),
        }
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The closest of `candidates` to `name`, if close enough to be a typo.
fn closest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), *c))
        .filter(|&(distance, c)| distance <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{ProcessTemplateSpec, StepSpec};

    fn process_spec() -> ProcessSpec {
        ProcessSpec {
            name: "order".into(),
            template: TemplateSpec::Process(ProcessTemplateSpec {
                start: "ORDER_CREATED".into(),
                cancel: vec![],
                complete: None,
                expire_after: None,
                steps: vec![StepSpec {
                    name: "shipped".into(),
                    on: "PARCEL_SHIPPED".into(),
                    expect: None,
                    distinct: None,
                    emit: None,
                }],
                slas: vec![],
            }),
        }
    }

    #[test]
    fn the_builtin_process_template_is_built_through_the_registry() {
        let registry = Registry::builtin();
        assert!(registry.contains("process") && !registry.is_custom("process"));
        let template = registry.build(&process_spec()).unwrap();
        let types: Vec<String> = template
            .subscriptions()
            .into_iter()
            .map(|s| s.event_type)
            .collect();
        assert_eq!(types, ["ORDER_CREATED", "PARCEL_SHIPPED"]);
        assert!(Registry::empty().build(&process_spec()).is_err());
    }

    #[test]
    fn every_config_error_is_reported_with_its_path() {
        let config = serde_json::json!({
            "wait": 5, "name": "", "limit": 0, "tags": ["a", 1], "flag": "yes", "extra": 1
        });
        let mut c = TemplateConfig::new("t", "p", &config);
        c.required_str("event");
        c.optional_duration("wait");
        c.optional_str("name");
        c.integer_or("limit", 3, 1..=10);
        c.strings("tags");
        c.bool_or("flag", false);
        let errors = c.finish().unwrap_err();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["", "wait", "name", "limit", "tags[1]", "flag", "extra"]
        );
        assert_eq!(errors[0].message, "missing field `event` in process `p`");
        assert!(errors[6].at_key);
        assert_eq!(
            errors[6].hint.as_deref(),
            Some("known fields: `event`, `wait`, `name`, `limit`, `tags`, `flag`")
        );
    }

    #[test]
    fn a_build_of_an_unregistered_custom_template_fails() {
        let spec = ProcessSpec {
            name: "x".into(),
            template: TemplateSpec::Custom {
                template: "nope".into(),
                config: serde_json::json!({}),
            },
        };
        let error = Registry::builtin().build(&spec).err().unwrap();
        assert_eq!(
            error.to_string(),
            "process `x`: template `nope` is not registered"
        );
    }

    #[test]
    #[should_panic(expected = "already registered")]
    fn a_name_is_registered_once() {
        Registry::builtin().register("process", |_| Err(vec![]));
    }
}
