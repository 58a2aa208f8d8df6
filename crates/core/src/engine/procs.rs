//! The engine's one seam to processes: spawning, signalling and reaping go
//! through [`Processes`], which [`System`] implements with herder's system layer
//! and a test can fake (see `tests/fake.rs`), so the engine's orchestration runs
//! under tokio's paused clock without a single process.
//!
//! # How it works
//!
//! The engine names processes by pid, and no signal may hit a recycled one.
//! [`System`] knows every process the engine started (a service's main
//! process, a `stop.exec` hook, an `exec` readiness check) until it reaps it:
//! those are herder's children, whose pids stay theirs until herder itself
//! collects them, so they are signalled by pid and cost no descriptor (a
//! herder of 10,000 services would otherwise hold 10,000 pidfds). A process
//! adopted through sd_notify `MAINPID=` may not be a child: it is held by a
//! pidfd until it ends. [`System::reap`] is herder's one reaper
//! ([`herd_sys::reap()`]); the loop calls it on every SIGCHLD, on the same
//! thread that signals, so no reap can come between the check and a signal.
//!
//! # Caveats
//!
//! - Containment (units) is not behind this trait: it already is one,
//!   [`herd_contain::Backend`], which a test fakes the same way.
//! - Processes that no service started (orphans in PID 1 duty, strays of the none
//!   backend) are killed by [`herd_sys`] directly: a fake has none.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;

use herd_sys::{ExitStatus, Pidfd, SpawnError, Spec};
use tokio::sync::mpsc;

use super::Msg;

/// A process the engine started: its pid and, when it was asked for, its output
/// (stdout and stderr in one pipe).
pub struct Started {
    pub pid: i32,
    pub output: Option<OwnedFd>,
}

/// What the engine does to processes.
pub trait Processes: Send {
    /// Starts `spec` (placed in its unit by `spec.cgroups` before exec).
    fn spawn(&mut self, spec: &Spec) -> Result<Started, SpawnError>;

    /// Every child that has exited since the last call, with its status.
    fn reap(&mut self) -> Vec<(i32, ExitStatus)>;

    /// Sends `sig` to `pid`, a process this layer started or adopted and has not
    /// reaped; `Ok(false)` if it is gone, or unknown.
    fn signal(&self, pid: i32, sig: i32) -> std::io::Result<bool>;

    /// Sends `sig` to the process group led by `pid` (a readiness check and what it
    /// started), if `pid` is a child not yet reaped.
    fn signal_group(&self, pid: i32, sig: i32);

    /// Takes `pidfd` (opened by the unit that owns the process) as the handle of
    /// its pid: a main process of service `name` named by sd_notify `MAINPID=`,
    /// which may not be a child. Its end is told through `waker`.
    fn adopt(&mut self, pidfd: Pidfd, name: &str, waker: &Waker);

    /// An adopted process has ended: its handle is dropped (it may not be a
    /// child, so no reap says so).
    fn forget(&mut self, pid: i32);

    /// A fake's way to wake the loop when its children exit; the real layer has
    /// SIGCHLD and ignores it.
    fn wake_on_exit(&mut self, _waker: Waker) {}
}

/// Wakes the engine's loop from another task.
#[derive(Clone)]
pub struct Waker(pub(super) mpsc::UnboundedSender<Msg>);

impl Waker {
    /// Children have exited: the loop reaps (what SIGCHLD does for real ones).
    pub fn children_exited(&self) {
        let _ = self.0.send(Msg::Exited);
    }

    /// A unit may have become empty.
    pub fn unit_changed(&self) {
        let _ = self.0.send(Msg::UnitChanged);
    }

    /// An adopted main process of `name` has ended.
    pub fn main_gone(&self, name: &str, pid: i32) {
        let _ = self.0.send(Msg::MainGone {
            name: name.to_string(),
            pid,
        });
    }
}

/// Processes, for real: [`herd_sys`]'s spawn, signals and reaper.
#[derive(Default)]
pub struct System {
    /// Started, not reaped yet.
    children: HashSet<i32>,
    /// Adopted, not forgotten yet.
    pidfds: HashMap<i32, Pidfd>,
}

impl Processes for System {
    fn spawn(&mut self, spec: &Spec) -> Result<Started, SpawnError> {
        // The pidfd that comes with the child is closed: its pid is enough.
        let child = herd_sys::spawn(spec)?;
        self.children.insert(child.pid);
        Ok(Started {
            pid: child.pid,
            output: child.stdout,
        })
    }

    fn reap(&mut self) -> Vec<(i32, ExitStatus)> {
        let reaped = herd_sys::reap();
        for (pid, _) in &reaped {
            self.children.remove(pid);
            self.pidfds.remove(pid);
        }
        reaped
    }

    fn signal(&self, pid: i32, sig: i32) -> std::io::Result<bool> {
        if self.children.contains(&pid) {
            return herd_sys::pidfd::signal_child(pid, sig);
        }
        match self.pidfds.get(&pid) {
            Some(fd) => fd.signal(sig),
            None => Ok(false),
        }
    }

    fn signal_group(&self, pid: i32, sig: i32) {
        // An unreaped child's pid is its own: its group id cannot be recycled.
        if self.children.contains(&pid) {
            let _ = herd_sys::pidfd::signal_group(pid, sig);
        }
    }

    fn adopt(&mut self, pidfd: Pidfd, name: &str, waker: &Waker) {
        let pid = pidfd.pid();
        // Its parent may not be herder (a forking daemon whose parent is still
        // there), so its end is watched through a pidfd of its own.
        if let Ok(watch) = Pidfd::open(pid) {
            let (waker, name) = (waker.clone(), name.to_string());
            tokio::spawn(async move {
                if watch.exited().await.is_ok() {
                    waker.main_gone(&name, pid);
                }
            });
        }
        self.pidfds.insert(pid, pidfd);
    }

    fn forget(&mut self, pid: i32) {
        self.pidfds.remove(&pid);
    }
}
