pub mod check;
pub mod ctl;
pub mod detach;
pub mod doctor;
pub mod down;
pub mod plan;
pub mod report;
pub mod top;
pub mod up;

use std::path::Path;
use std::process::ExitCode;

use herd_config::Config;

/// Loads the configuration, or prints every error and says how to exit.
/// The configuration, or nothing (no error said): for commands that can do
/// without it.
pub fn load_quietly(file: &Path) -> Option<Config> {
    herd_config::load(file).ok()
}

pub fn load_or_report(file: &Path) -> Result<Config, ExitCode> {
    herd_config::load(file).map_err(|diags| {
        let n = diags.len();
        let mut text = diags.to_string();
        text.push_str(&format!(
            "{}: {n} error{}\n",
            file.display(),
            if n == 1 { "" } else { "s" }
        ));
        crate::output::stderr(&text);
        ExitCode::from(1)
    })
}
