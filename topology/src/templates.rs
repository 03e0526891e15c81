//! The registry of process templates a topology can name with `template = "..."`.
//!
//! Each template reads its own configuration from its `[processes.NAME]` table into a
//! [`TemplateSpec`] variant. Adding a template is one entry here, one reader function and one
//! `TemplateSpec` variant.

use toml::Spanned;
use vigil_actors::spec::TemplateSpec;

use crate::join;
use crate::pattern;
use crate::process;
use crate::reader::{Ctx, Table};
use crate::union;
use crate::window;

/// Reads a template's configuration from its process table; `name` is the process name.
/// Reports errors into `ctx` and returns what could be read.
pub(crate) type ReadTemplate = fn(
    name: &Spanned<String>,
    table: &mut Table<'_, '_>,
    ctx: &mut Ctx<'_>,
) -> Option<TemplateSpec>;

pub(crate) struct Template {
    pub name: &'static str,
    pub read: ReadTemplate,
}

/// Every template, built in or registered.
pub(crate) const TEMPLATES: &[Template] = &[
    Template {
        name: "process",
        read: process::read,
    },
    Template {
        name: "window",
        read: window::read,
    },
    Template {
        name: "pattern",
        read: pattern::read,
    },
    Template {
        name: "fraud",
        read: pattern::read_fraud,
    },
    Template {
        name: "customer_contact",
        read: pattern::read_contact,
    },
    Template {
        name: "union",
        read: union::read,
    },
    Template {
        name: "join",
        read: join::read,
    },
];

/// The template used when a process does not say.
pub(crate) const DEFAULT: &str = "process";

pub(crate) fn names() -> Vec<&'static str> {
    TEMPLATES.iter().map(|t| t.name).collect()
}

pub(crate) fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}
