//! The one reaper: the only code in herder that waits for children.
//!
//! Call [`reap`] when SIGCHLD arrives; it collects every child that has exited since,
//! without blocking. Nothing else may call `wait*` (in particular, not
//! `tokio::process`, which reaps on its own), or exits would go missing.

use rustix::io::Errno;
use rustix::process::{WaitOptions, wait};

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Ended, but another process reaped it (a main process named by `MAINPID=`
    /// whose parent was not herder), so how is not known.
    Unknown,
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::Unknown => write!(f, "ended; reaped by another process, status unknown"),
        }
    }
}

/// Every child that has exited, now; never blocks.
pub fn reap() -> Vec<(i32, ExitStatus)> {
    let mut out = Vec::new();
    loop {
        match wait(WaitOptions::NOHANG) {
            Ok(Some((pid, status))) => {
                let st = if let Some(code) = status.exit_status() {
                    ExitStatus::Code(code)
                } else if let Some(sig) = status.terminating_signal() {
                    ExitStatus::Signal(sig)
                } else {
                    // Stopped or continued: not an exit (we do not ask for these).
                    continue;
                };
                out.push((pid.as_raw_nonzero().get(), st));
            }
            // None: children remain, none has exited. ECHILD: no children at all.
            Ok(None) | Err(Errno::CHILD) => return out,
            Err(Errno::INTR) => continue,
            Err(_) => return out,
        }
    }
}

/// Makes this process the reaper of its orphaned descendants, so that a
/// double-forked daemon is re-parented to herder rather than to init.
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}
