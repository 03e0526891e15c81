//! Vigil's topology language: a TOML file describing a job (its sources, event types,
//! processes with steps and SLAs, and sinks) compiled into a [`JobSpec`] the runtime runs.
//!
//! Compiling reports **every** error at once, each with file, line, column and a hint, rendered
//! like rustc. The format is documented in `docs/topology.md`.
//!
//! ```
//! let topology = r#"
//! [job]
//! name = "orders"
//!
//! [sources.input]
//! kind = "stdin"
//!
//! [events.ORDER_CREATED]
//! key = "order_number"
//! time = "occurred_at"
//! fields = { parcels = "integer" }
//!
//! [events.PARCEL_SHIPPED]
//! key = "order_number"
//! time = "occurred_at"
//! fields = { parcel_id = "string" }
//!
//! [processes.order]
//! start = "ORDER_CREATED"
//!
//! [[processes.order.steps]]
//! name = "shipped"
//! on = "PARCEL_SHIPPED"
//! expect = "parcels"
//! distinct = "parcel_id"
//!
//! [[processes.order.slas]]
//! name = "LATE"
//! step = "shipped"
//! within = "${SHIP_WITHIN:-24h}"
//!
//! [sinks.alerts]
//! kind = "stdout"
//! inputs = ["order"]
//! "#;
//! let no_env = |_: &str| None;
//! let job = vigil_topology::compile_str(topology, "topology.toml", &no_env).unwrap();
//! assert_eq!(job.shards, 8);
//!
//! let broken = topology.replace(r#"on = "PARCEL_SHIPPED""#, r#"on = "PARCEL_SHIPED""#);
//! let errors = vigil_topology::compile_str(&broken, "topology.toml", &no_env).unwrap_err();
//! assert_eq!(errors.errors[0].message, "unknown event type `PARCEL_SHIPED`");
//! assert_eq!((errors.errors[0].line, errors.errors[0].column), (23, 6));
//! assert_eq!(errors.errors[0].hint.as_deref(), Some("did you mean `PARCEL_SHIPPED`?"));
//! ```
//!
//! How it works: [`toml::de::DeTable::parse_recoverable`] gives a tree whose keys and values
//! carry byte spans (and every syntax error); a typed reader walks it section by section,
//! recording each error and carrying on (`reader`, `compile`, and one module per template such
//! as `process`); a semantic pass then resolves every name used against what was declared
//! (`check`).

mod check;
mod compile;
mod custom;
mod diagnostics;
mod enrich;
mod env;
mod join;
mod kafka;
mod pattern;
mod process;
mod reader;
mod suggest;
mod templates;
mod union;
mod window;

use std::path::Path;

use toml::de::DeTable;
use vigil_actors::registry::Registry;
use vigil_actors::spec::JobSpec;

pub use diagnostics::{Diagnostic, Diagnostics};

use diagnostics::{Class, Problem};
use reader::Ctx;

/// Reads and compiles a topology file; `${VAR}` references read the process environment.
/// Only the built-in templates are known ([`Registry::builtin`]).
pub fn compile_file(path: &Path) -> Result<JobSpec, Diagnostics> {
    compile_file_with(path, &Registry::builtin())
}

/// [`compile_file`] with the templates of `registry` (custom templates).
pub fn compile_file_with(path: &Path, registry: &Registry) -> Result<JobSpec, Diagnostics> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|error| Diagnostics::unreadable(&file_name, &error))?;
    compile_str_with(
        &text,
        &file_name,
        &|name| std::env::var(name).ok(),
        registry,
    )
}

/// Compiles topology `text`; `file_name` is used in diagnostics and `env` resolves `${VAR}`.
/// Only the built-in templates are known ([`Registry::builtin`]).
pub fn compile_str(
    text: &str,
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<JobSpec, Diagnostics> {
    compile_str_with(text, file_name, env, &Registry::builtin())
}

/// [`compile_str`] with the templates of `registry`: a process may name any template
/// registered there (`template = "name"`); its factory checks the configuration, and its errors
/// are reported at their place in the file with the others. Run the job with the same registry
/// (`RunOptions::registry`).
pub fn compile_str_with(
    text: &str,
    file_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    registry: &Registry,
) -> Result<JobSpec, Diagnostics> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    let mut ctx = Ctx::new(text, env);
    for error in &syntax_errors {
        let span = error.span().unwrap_or(0..0);
        let message = format!("TOML syntax: {}", error.message().trim());
        let problem = ctx.syntax_error(span, message);
        if error.message().contains("duplicate key") {
            problem.hint("a key, or a `[table]`, may be defined only once");
        }
    }
    let model = compile::structure(&root, &mut ctx, registry);
    check::check(&model, &mut ctx);
    let mut problems = ctx.problems;
    if !syntax_errors.is_empty() {
        drop_consequences_of_syntax_errors(text, &mut problems);
    }
    if problems.is_empty() {
        Ok(model.spec)
    } else {
        Err(Diagnostics::locate(file_name, text, problems))
    }
}

/// When the TOML is broken, the parser recovers by skipping text, so a missing field or an
/// unresolved name may only be a consequence of the syntax error, and so may anything else
/// reported on a line with a syntax error. Keep the errors that are certain.
fn drop_consequences_of_syntax_errors(text: &str, problems: &mut Vec<Problem>) {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count();
    let broken_lines: Vec<usize> = problems
        .iter()
        .filter(|p| p.class == Class::Syntax)
        .map(|p| line_of(p.span.start))
        .collect();
    problems.retain(|p| match p.class {
        Class::Syntax => true,
        Class::Absence => false,
        Class::Invalid => !broken_lines.contains(&line_of(p.span.start)),
    });
}
