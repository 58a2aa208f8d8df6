//! `herd down`: ask the running herder to shut down.
//!
//! Over the control socket: `POST /v1/shutdown`. With `--wait` the command first
//! subscribes to the event stream, then asks, and returns with the `finished`
//! event, which carries the shutdown report: it prints the report and exits with
//! herder's code.
//!
//! When nothing answers on the socket (removed by hand, say) but the state file
//! names a live herder, that herder is sent SIGTERM through a pidfd (its pid and
//! start time checked, so a recycled pid is never signalled), exactly as
//! Kubernetes or Docker would stop it; `--wait` then waits on the pidfd and reads
//! the report from the state directory.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use hyper::Method;

use herd_api::{Change, Report, ShutdownAnswer};
use herd_core::state::StateFile;
use herd_sys::Pidfd;

use super::ctl::fail;
use crate::api::client::{self, ClientError};

/// How long `--wait` waits when the configuration (and so its budget) is unknown.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub fn run(file: &Path, socket: Option<&Path>, wait: bool, timeout: Option<Duration>) -> ExitCode {
    // With --socket the configuration is not needed; without it, it must load.
    let config = match socket {
        Some(_) => herd_config::load(file).ok(),
        None => match super::load_or_report(file) {
            Ok(c) => Some(c),
            Err(code) => return code,
        },
    };
    let sock = match socket {
        Some(s) => s.to_path_buf(),
        None => crate::api::socket_path(config.as_ref().expect("loaded"), file, None),
    };
    let limit = timeout.unwrap_or_else(|| {
        config.as_ref().map_or(DEFAULT_WAIT, |c| {
            c.shutdown.timeout + Duration::from_secs(5)
        })
    });
    let rt = match super::ctl::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(over_socket(&sock, wait, limit)) {
        Err(ClientError::NotRunning(at, why)) => match &config {
            Some(c) => {
                let dir = super::up::state_dir(c, file);
                rt.block_on(by_signal(&dir, wait, limit))
                    .unwrap_or_else(|_| fail(&format!("no herder is running at {at} ({why})")))
            }
            None => fail(&format!("no herder is running at {at} ({why})")),
        },
        Err(e) => fail(&e.to_string()),
        Ok(code) => code,
    }
}

async fn over_socket(sock: &Path, wait: bool, limit: Duration) -> Result<ExitCode, ClientError> {
    // Subscribed before asking, so the end cannot be missed.
    let events = if wait {
        let (status, body) = client::open(sock, Method::GET, "/v1/events").await?;
        if !status.is_success() {
            let body = client::rest(body).await;
            return Ok(fail(&client::message(&body)));
        }
        Some(body)
    } else {
        None
    };
    let (status, body) = client::request(sock, Method::POST, "/v1/shutdown").await?;
    if !status.is_success() {
        return Ok(fail(&client::message(&body)));
    }
    let pid = serde_json::from_slice::<ShutdownAnswer>(&body)
        .map_or(String::new(), |a| format!(" (pid {})", a.pid));
    let Some(events) = events else {
        return Ok(crate::output::stdout(&format!(
            "herd{pid} is shutting down\n"
        )));
    };
    let mut lines = super::ctl::Lines::default();
    let mut report: Option<(u8, Report)> = None;
    let read = client::read_stream(sock, events, |chunk| {
        lines.feed(chunk, |line| match serde_json::from_str(line) {
            Ok(Change::Finished {
                exit_code,
                report: r,
                ..
            }) => {
                report = Some((exit_code, *r));
                false
            }
            _ => true,
        })
    });
    match tokio::time::timeout(limit, read).await {
        Err(_) => Ok(fail(&format!(
            "herd{pid} is still shutting down after {}",
            herd_config::units::format_duration(limit)
        ))),
        Ok(Err(e)) => Err(e),
        Ok(Ok(_)) => Ok(match report {
            Some((code, r)) => finish(&r, code),
            None => fail(&format!("herd{pid} went away before its shutdown report")),
        }),
    }
}

/// Prints the report and passes on herder's exit code.
fn finish(r: &Report, code: u8) -> ExitCode {
    let out = crate::output::stdout(&r.table());
    if out != ExitCode::SUCCESS {
        return out;
    }
    ExitCode::from(code)
}

/// SIGTERM to the herder the state file in `dir` names; `Err` if there is none.
async fn by_signal(dir: &Path, wait: bool, limit: Duration) -> Result<ExitCode, ()> {
    let herder = match StateFile::load(dir) {
        Ok(Some(s)) => s.herder,
        Ok(None) => None,
        Err(e) => {
            return Ok(fail(&format!(
                "cannot read the state file in {}: {e}",
                dir.display()
            )));
        }
    };
    let Some(h) = herder else { return Err(()) };
    // Opened first, checked second: the pidfd then names the process checked.
    let fd = match Pidfd::open(h.pid) {
        Ok(fd) if h.alive() => fd,
        _ => return Err(()),
    };
    if let Err(e) = fd.signal(libc::SIGTERM) {
        return Ok(fail(&format!("cannot signal herd (pid {}): {e}", h.pid)));
    }
    if !wait {
        return Ok(crate::output::stdout(&format!(
            "herd (pid {}) is shutting down (signalled: its socket did not answer)\n",
            h.pid
        )));
    }
    if tokio::time::timeout(limit, fd.exited()).await.is_err() {
        return Ok(fail(&format!(
            "herd (pid {}) is still shutting down after {}",
            h.pid,
            herd_config::units::format_duration(limit)
        )));
    }
    Ok(match Report::load(dir) {
        Ok(r) => {
            let code = r.exit_code;
            finish(&r, code)
        }
        Err(_) => crate::output::stdout(&format!("herd (pid {}) has exited\n", h.pid)),
    })
}
