//! `herd check`: validate, print every error, exit 1 if there is one. Besides
//! the file itself, what `herd up` would refuse about the paths it will use: a
//! control socket path too long for a Unix socket, a state directory that cannot
//! be created.

use std::path::Path;
use std::process::ExitCode;

use herd_config::DepGraph;

use crate::output;

pub fn run(file: &Path) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let problems = paths(&config, file);
    if !problems.is_empty() {
        let n = problems.len();
        let mut text: String = problems
            .iter()
            .map(|p| format!("{}: {p}\n", file.display()))
            .collect();
        text.push_str(&format!(
            "{}: {n} error{}\n",
            file.display(),
            if n == 1 { "" } else { "s" }
        ));
        output::stderr(&text);
        return ExitCode::from(1);
    }
    for cut in herd_config::plan::cut_timeouts(&herd_config::shutdown_plan(&config)) {
        output::stderr(&format!("{}: warning: {cut}\n", file.display()));
    }
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

/// The longest path a Unix socket can be bound at (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What `herd up` would refuse about the socket and the state directory.
fn paths(config: &herd_config::Config, file: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let sock = crate::api::socket_path(config, file, None);
    let len = sock.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        problems.push(format!(
            "supervisor.socket: {} is {len} bytes; a Unix socket's path may have {MAX_SOCKET_PATH} at most (set supervisor.socket)",
            sock.display()
        ));
    }
    let state = super::up::state_dir(config, file);
    if let Err(why) = creatable(&state) {
        problems.push(format!(
            "supervisor.state_dir: {} cannot be created: {why}",
            state.display()
        ));
    }
    problems
}

/// Whether `dir` is, or can be made, a directory herder can write in: the nearest
/// part of it that exists must be a directory this user may write to.
fn creatable(dir: &Path) -> Result<(), String> {
    use rustix::fs::Access;
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(m) if m.is_dir() => {
                return rustix::fs::access(at, Access::WRITE_OK | Access::EXEC_OK)
                    .map_err(|e| format!("{} is not writable ({e})", at.display()));
            }
            Ok(_) => return Err(format!("{} is not a directory", at.display())),
            // Not there, or below something that is not a directory: the
            // part above tells.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => at = p,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
}
