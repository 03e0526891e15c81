//! The built-in templates, and the registry that turns a [`ProcessSpec`] into a runnable one.
//! Built-in templates implement the same [`Template`](crate::template::Template) trait a user
//! implements.

pub mod process;

use crate::spec::{ProcessSpec, TemplateSpec};
use crate::template::DynTemplate;

/// Builds the template a process of the topology runs.
pub fn build(spec: &ProcessSpec) -> Box<dyn DynTemplate> {
    match &spec.template {
        TemplateSpec::Process(config) => {
            Box::new(process::ProcessTemplate::new(&spec.name, config.clone()))
        }
    }
}
