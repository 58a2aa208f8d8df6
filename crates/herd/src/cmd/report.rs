//! `herd report`: the last shutdown's report, from the state directory.

use std::path::Path;
use std::process::ExitCode;

use herd_api::Report;

pub fn run(file: &Path, json: bool, svg: Option<&Path>) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dir = super::up::state_dir(&config, file);
    let report = match Report::load(&dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::output::stderr(&format!(
                "herd: no shutdown report in {} yet (one is written at the end of every shutdown)\n",
                dir.display()
            ));
            return ExitCode::from(1);
        }
        Err(e) => {
            crate::output::stderr(&format!(
                "herd: cannot read {}: {e}\n",
                dir.join(herd_api::report::FILE).display()
            ));
            return ExitCode::from(1);
        }
    };
    if let Some(path) = svg {
        let written = if path == Path::new("-") {
            return crate::output::stdout(&report.svg());
        } else {
            std::fs::write(path, report.svg())
        };
        if let Err(e) = written {
            crate::output::stderr(&format!("herd: cannot write {}: {e}\n", path.display()));
            return ExitCode::from(1);
        }
    }
    if json {
        let text = serde_json::to_string_pretty(&report).expect("a report serialises");
        crate::output::stdout(&(text + "\n"))
    } else {
        crate::output::stdout(&report.table())
    }
}
