//! The embeddable whole: spawn a command into a unit, stop it within a deadline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use herd_contain::{Contained, Limits, StopOptions};
//!
//! herd_sys::become_subreaper()?;
//! let backend = herd_contain::detect(None)?;
//! let spec = herd_sys::Spec {
//!     argv: vec!["sh".into(), "-c".into(), "sleep 100 & sleep 100".into()],
//!     workdir: "/".into(),
//!     discard_output: true,
//!     ..Default::default()
//! };
//! let job = Contained::spawn(backend.as_ref(), "job", spec, &Limits::default())?;
//! let record = job.stop(&StopOptions::new(Duration::from_secs(1))).await;
//! assert!(record.leftovers.is_empty());
//! # Ok(()) }
//! ```
//!
//! # How a stop goes
//!
//! 1. The signal (SIGTERM unless asked otherwise) by [`Mode`].
//! 2. Wait until the unit is empty or the deadline passes. The wait is driven by
//!    events: `cgroup.events` through epoll for cgroup v2, else the exit of a
//!    member, through its pidfd (the unit cannot be empty while that member lives;
//!    when it ends, the unit is checked again).
//! 3. At the deadline, SIGKILL everything ([`Unit::kill`]); then wait again. If
//!    processes survive SIGKILL (uninterruptible sleep, a frozen cgroup), the kill is
//!    retried with exponential backoff until `kill_grace` has passed; what is still
//!    there is reported in [`StopRecord::leftovers`].
//! 4. The main process is reaped and the unit removed (if empty).
//!
//! Dropping a [`Contained`] without stopping it SIGKILLs its processes.
//!
//! # Caveats
//!
//! - The caller reaps everything but the main process: with the none backend, or
//!   whenever the caller is a subreaper, orphans become the caller's children.
//! - Needs a tokio runtime with IO and time enabled.
//! - The command's environment gets `HERD_INVOCATION` (a fresh id) unless the
//!   spec sets it: the none backend knows the run's re-parented processes by it.

use std::time::{Duration, Instant};

use herd_sys::{ExitStatus, Pidfd, SpawnError, Spec};

use crate::procfs::{self, Leftover};
use crate::{Backend, Limits, Unit};

/// Who gets the stop signal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every process of the unit.
    #[default]
    Group,
    /// The main process only; the rest is SIGKILLed at the deadline.
    Main,
    /// The main process first; the rest is SIGKILLed once it has gone.
    Mixed,
}

#[derive(Clone, Debug)]
pub struct StopOptions {
    pub signal: i32,
    pub mode: Mode,
    /// From the stop request to SIGKILL.
    pub timeout: Duration,
    /// After SIGKILL, how long to keep retrying before reporting leftovers.
    pub kill_grace: Duration,
}

impl StopOptions {
    /// SIGTERM to every process, SIGKILL after `timeout`, 5 s of kill retries.
    pub fn new(timeout: Duration) -> StopOptions {
        StopOptions {
            signal: libc::SIGTERM,
            mode: Mode::Group,
            timeout,
            kill_grace: Duration::from_secs(5),
        }
    }
}

/// What a stop did, with times relative to the request.
#[derive(Clone, Debug, PartialEq)]
pub struct StopRecord {
    /// Processes in the unit when the stop began.
    pub processes: usize,
    pub signal: i32,
    /// When SIGKILL was needed, how long after the request it was sent.
    pub killed_after: Option<Duration>,
    /// When the last process was gone, if it went.
    pub empty_after: Option<Duration>,
    /// The main process's status, if it was reaped.
    pub status: Option<ExitStatus>,
    /// Processes that survived every SIGKILL (empty on success).
    pub leftovers: Vec<Leftover>,
}

/// A command running in its own unit.
#[derive(Debug)]
pub struct Contained {
    pub pid: i32,
    pidfd: Pidfd,
    unit: Box<dyn Unit>,
    child: herd_sys::Child,
    /// Set by `stop`; otherwise dropping the handle kills everything.
    stopped: bool,
}

impl Contained {
    /// Starts `spec` in a new unit named `name` of `backend`.
    pub fn spawn(
        backend: &dyn Backend,
        name: &str,
        mut spec: Spec,
        limits: &Limits,
    ) -> Result<Contained, SpawnError> {
        let mut unit = backend
            .create(name, limits)
            .map_err(|source| SpawnError::Start {
                program: name.into(),
                source,
            })?;
        // Every run carries an id in its environment (the caller's, if it set
        // one), by which the none backend knows its re-parented processes.
        let invocation = match spec.env.iter().find(|(k, _)| k == procfs::INVOCATION_VAR) {
            Some((_, v)) => v.clone(),
            None => {
                let id = procfs::new_invocation();
                spec.env.push((procfs::INVOCATION_VAR.into(), id.clone()));
                id
            }
        };
        unit.set_invocation(&invocation);
        spec.cgroups = unit.join().map_err(|source| SpawnError::Start {
            program: name.into(),
            source,
        })?;
        let child = herd_sys::spawn(&spec)?;
        unit.started(child.pid);
        let pidfd = Pidfd::open(child.pid).map_err(|source| SpawnError::Start {
            program: name.into(),
            source,
        })?;
        Ok(Contained {
            pid: child.pid,
            pidfd,
            unit,
            child,
            stopped: false,
        })
    }

    /// The unit, to list or signal its processes.
    pub fn unit(&mut self) -> &mut dyn Unit {
        self.unit.as_mut()
    }

    /// The child's stdout and stderr pipes, unless output was discarded.
    pub fn take_output(&mut self) -> (Option<std::os::fd::OwnedFd>, Option<std::os::fd::OwnedFd>) {
        (self.child.stdout.take(), self.child.stderr.take())
    }

    /// Stops every process of the unit; see the module docs.
    pub async fn stop(mut self, opts: &StopOptions) -> StopRecord {
        let t0 = Instant::now();
        let processes = self.unit.pids().len();
        let sent = match opts.mode {
            Mode::Group => self.unit.signal(opts.signal).map(|_| ()),
            Mode::Main | Mode::Mixed => self.pidfd.signal(opts.signal).map(|_| ()),
        };
        let mut killed_after = None;
        let deadline = t0 + opts.timeout;
        if opts.mode == Mode::Mixed && sent.is_ok() {
            let main = Pidfd::open(self.pid).ok();
            if let Some(main) = main {
                let _ = tokio::time::timeout_at(deadline.into(), main.exited()).await;
            }
            if !self.unit.is_empty() && Instant::now() < deadline {
                killed_after = Some(t0.elapsed());
                let _ = self.unit.kill();
            }
        }
        let mut empty = sent.is_ok() && wait_empty(self.unit.as_mut(), deadline).await;
        if !empty {
            killed_after.get_or_insert(t0.elapsed());
            let give_up = Instant::now() + opts.kill_grace;
            let mut pause = Duration::from_millis(10);
            loop {
                let _ = self.unit.kill();
                let until = (Instant::now() + pause).min(give_up);
                if wait_empty(self.unit.as_mut(), until).await {
                    empty = true;
                    break;
                }
                if Instant::now() >= give_up {
                    break;
                }
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
        let empty_after = empty.then(|| t0.elapsed());
        self.stopped = true;
        let leftovers = if empty {
            // An empty cgroup that cannot be removed holds nothing; the record says
            // what matters, that every process is gone.
            let _ = self.unit.remove();
            Vec::new()
        } else {
            procfs::leftovers(&self.unit.pids())
        };
        StopRecord {
            processes,
            signal: opts.signal,
            killed_after,
            empty_after,
            status: herd_sys::reap::reap_child(self.pid),
            leftovers,
        }
    }
}

impl Drop for Contained {
    /// A handle dropped without [`Contained::stop`] must not leave its processes
    /// running: they are SIGKILLed (not waited for; the unit stays until they go).
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.unit.kill();
        }
    }
}

/// Waits, by events, until `unit` is empty or `until` passes; whether it is empty.
pub(crate) async fn wait_empty(unit: &mut dyn Unit, until: Instant) -> bool {
    loop {
        // The watch is set up before the check, so no change falls in between.
        let watch = unit.events().and_then(|fd| {
            let w = herd_sys::watch::PriorityWatch::new().ok()?;
            w.add(fd).ok().map(|()| w)
        });
        if unit.is_empty() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        let until = tokio::time::Instant::from_std(until);
        let woke = match watch {
            Some(w) => tokio::time::timeout_at(until, w.changed()).await.is_ok(),
            None => {
                let member = unit.pids().into_iter().find_map(|p| unit.pidfd(p));
                match member {
                    Some(fd) => tokio::time::timeout_at(until, fd.exited()).await.is_ok(),
                    // Listed, but gone before its pidfd opened: look again.
                    None => {
                        tokio::task::yield_now().await;
                        true
                    }
                }
            }
        };
        if !woke {
            return unit.is_empty();
        }
    }
}
