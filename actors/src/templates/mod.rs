//! The built-in templates. [`crate::registry::Registry::builtin`] registers them.
//! Built-in templates implement the same [`Template`](crate::template::Template) trait a user
//! implements.

pub mod contact;
pub mod fraud;
pub mod join;
pub mod pattern;
pub mod process;
pub mod union;
pub mod window;

use crate::registry::Registry;
use crate::spec::ProcessSpec;
use crate::template::DynTemplate;

/// Builds the built-in template a process of the topology runs, through
/// [`Registry::builtin`] (where each built-in template is registered, one line each).
///
/// # Panics
/// If the process runs a custom template: build those with [`Registry::build`] on a registry
/// they are registered in.
pub fn build(spec: &ProcessSpec) -> Box<dyn DynTemplate> {
    Registry::builtin()
        .build(spec)
        .unwrap_or_else(|e| panic!("{e}"))
}
