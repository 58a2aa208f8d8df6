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
                // Stopped or continued is not an exit (we do not ask for these).
                if let Some(st) = exit_of(status) {
                    out.push((pid.as_raw_nonzero().get(), st));
                }
            }
            // None: children remain, none has exited. ECHILD: no children at all.
            Ok(None) | Err(Errno::CHILD) => return out,
            Err(Errno::INTR) => continue,
            Err(_) => return out,
        }
    }
}

/// Whether this process has any child, alive or exited and not yet reaped; never
/// blocks and reaps nothing. After [`reap`] emptied the list, `false` means that
/// no process is left for this one to wait for, re-parented orphans included, with
/// no need to scan /proc for them.
pub fn has_children() -> bool {
    use rustix::process::{WaitId, WaitIdOptions, waitid};
    let opts = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    loop {
        match waitid(WaitId::All, opts) {
            Err(Errno::CHILD) => return false,
            Err(Errno::INTR) => continue,
            _ => return true,
        }
    }
}

/// Reaps `pid` if it has exited; never blocks. For programs that embed herder's
/// containment and keep their own reaping: herder itself only uses [`reap`].
pub fn reap_child(pid: i32) -> Option<ExitStatus> {
    let p = rustix::process::Pid::from_raw(pid)?;
    loop {
        match rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => return exit_of(status),
            Err(Errno::INTR) => continue,
            _ => return None,
        }
    }
}

/// Makes this process the reaper of its orphaned descendants, so that a
/// double-forked daemon is re-parented to herder rather than to init.
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).map_err(Into::into)
}

fn exit_of(status: rustix::process::WaitStatus) -> Option<ExitStatus> {
    if let Some(code) = status.exit_status() {
        Some(ExitStatus::Code(code))
    } else {
        status.terminating_signal().map(ExitStatus::Signal)
    }
}
