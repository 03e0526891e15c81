//! A `vigil`-like binary that knows one more template, `repeat_customer` (`template.rs`).
//!
//! A custom template needs a binary that registers it: this is the whole of one.
//!
//! ```text
//! cargo run --example custom-template -- validate examples/custom-template/topology.toml
//! cargo run --example custom-template -- run examples/custom-template/topology.toml
//! ```

mod template;

use std::path::Path;
use std::process::ExitCode;

use vigil_actors::job::{self, RunOptions};
use vigil_actors::registry::Registry;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, topology] = args.as_slice() else {
        eprintln!("usage: custom-template (validate|run) TOPOLOGY");
        return ExitCode::from(2);
    };
    // The built-in templates, and ours.
    let mut registry = Registry::builtin();
    template::register(&mut registry);

    let spec = match vigil_topology::compile_file_with(Path::new(topology), &registry) {
        Ok(spec) => spec,
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            return ExitCode::from(2);
        }
    };
    match command.as_str() {
        "validate" => {
            println!("{topology}: ok");
            ExitCode::SUCCESS
        }
        "run" => {
            let options = RunOptions {
                registry: Some(registry),
                ..RunOptions::default()
            };
            match job::run(spec, options) {
                Ok(summary) => {
                    println!(
                        "{} lines read, {} records written",
                        summary.counts.read, summary.counts.records
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            eprintln!("unknown command `{other}`: validate or run");
            ExitCode::from(2)
        }
    }
}
