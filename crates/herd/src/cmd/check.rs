//! `herd check`: validate, print every error, exit 1 if there is one.

use std::path::Path;
use std::process::ExitCode;

use herd_config::DepGraph;

use crate::output;

pub fn run(file: &Path) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let graph = DepGraph::new(&config.services);
    let n = config.services.len();
    output::stdout(&format!(
        "{}: ok ({n} service{}, {} start waves, {} stop waves, {} file{} read)\n",
        file.display(),
        if n == 1 { "" } else { "s" },
        graph.start_waves().len(),
        graph.stop_waves().len(),
        config.files.len(),
        if config.files.len() == 1 { "" } else { "s" },
    ))
}
