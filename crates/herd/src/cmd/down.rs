//! `herd down`: ask the herder running this configuration to shut down.
//!
//! The herder is found through its state file (pid and start time, so a recycled
//! pid is never signalled) and sent SIGTERM through a pidfd, exactly as Kubernetes
//! or Docker would stop it. With `--wait`, the command returns once it has exited
//! and prints its shutdown report.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use herd_core::state::StateFile;
use herd_sys::Pidfd;

pub fn run(file: &Path, wait: bool, timeout: Option<Duration>) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dir = super::up::state_dir(&config, file);
    let fail = |msg: String| {
        crate::output::stderr(&format!("herd: {msg}\n"));
        ExitCode::from(1)
    };
    let herder = match StateFile::load(&dir) {
        Ok(Some(s)) => s.herder,
        Ok(None) => None,
        Err(e) => {
            return fail(format!(
                "cannot read the state file in {}: {e}",
                dir.display()
            ));
        }
    };
    let Some(h) = herder else {
        return fail(format!(
            "no herder is running with the state directory {}",
            dir.display()
        ));
    };
    // Opened first, checked second: the pidfd then names the process checked.
    let fd = match Pidfd::open(h.pid) {
        Ok(fd) if h.alive() => fd,
        _ => {
            return fail(format!(
                "no herder is running with the state directory {} (pid {} is gone)",
                dir.display(),
                h.pid
            ));
        }
    };
    if let Err(e) = fd.signal(libc::SIGTERM) {
        return fail(format!("cannot signal herd (pid {}): {e}", h.pid));
    }
    if !wait {
        return crate::output::stdout(&format!("herd (pid {}) is shutting down\n", h.pid));
    }
    let limit = timeout.unwrap_or(config.shutdown.timeout + Duration::from_secs(5));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    if rt
        .block_on(async { tokio::time::timeout(limit, fd.exited()).await })
        .is_err()
    {
        return fail(format!(
            "herd (pid {}) is still shutting down after {}",
            h.pid,
            herd_config::units::format_duration(limit)
        ));
    }
    match herd_core::report::Report::load(&dir) {
        Ok(r) => {
            let code = r.exit_code;
            let out = crate::output::stdout(&r.table());
            if out != ExitCode::SUCCESS {
                return out;
            }
            ExitCode::from(code)
        }
        Err(_) => crate::output::stdout(&format!("herd (pid {}) has exited\n", h.pid)),
    }
}
