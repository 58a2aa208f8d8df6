//! The embeddable whole: [`Jobs`] opens a backend in a subtree of the caller's
//! own, [`Jobs::spawn`] starts a command into a unit of it, and a [`Job`] waits
//! for it and stops it within a deadline, with a [`StopReport`] of what
//! happened.
//!
//! # How a stop goes
//!
//! 1. The signal (SIGTERM unless asked otherwise), to every process or to the
//!    main one by [`Mode`].
//! 2. Wait until the unit is empty or the deadline passes. The wait is driven by
//!    events: `cgroup.events` through epoll for cgroup v2, else the exit of a
//!    member, through its pidfd (the unit cannot be empty while that member lives;
//!    when it ends, the unit is checked again).
//! 3. At the deadline, SIGKILL everything ([`Unit::kill`]); then wait again. If
//!    processes survive SIGKILL (uninterruptible sleep, a frozen cgroup), the kill is
//!    retried with exponential backoff until `kill_grace` has passed; what is still
//!    there is reported in [`StopReport::survivors`].
//! 4. The main process is reaped and the unit removed (if empty).
//!
//! # Lifetimes
//!
//! - A [`Job`] dropped while its processes run SIGKILLs them; its unit is
//!   removed once they are gone, at the latest when the [`Jobs`] closes.
//! - [`Jobs`] is a handle: clones share one backend, and every [`Job`] holds
//!   it too. When the last of them is dropped, what it made is removed: the
//!   units of dropped jobs (after waiting, at most [`CLOSE_WAIT`], for their
//!   killed processes to go), the subtree, and the caller is moved back to
//!   the cgroup it came from. [`Jobs::close`] does the same now and says what
//!   it could not do.
//! - Every future here is cancellation-safe: dropping one leaves the job as it
//!   was, or as far as the stop got (signals sent stay sent), and a later call
//!   goes on from there. A stop dropped half-way and then the job dropped still
//!   kills everything.
//!
//! # Caveats
//!
//! - Needs a tokio runtime with IO and time enabled for the async calls.
//! - The command's environment gets `HERD_INVOCATION` (a fresh id) unless the
//!   spec sets it: the none backend knows the run's re-parented processes by it.
//! - With a cgroup backend the caller is moved into `NAME/supervisor/` until
//!   the close (a cgroup that hands controllers down holds no process); another
//!   process opening the same name is refused while the caller lives, and so
//!   is this one opening it twice.
//! - With the none backend the caller becomes a child subreaper, and the
//!   backend reaps the orphans it adopts as they exit.
//! - A caller that also waits for any child (`waitpid(-1)`) may take a main
//!   process's exit first: [`Job::wait`] then says `ExitStatus::Unknown`.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_sys::{ExitStatus, Pidfd, SpawnError, Spec};

use crate::procfs::{self, Process};
use crate::{Backend, Chosen, Containment, Limits, Place, Unavailable, Unit, Usage};

/// How long closing [`Jobs`] waits for the killed processes of dropped jobs.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A place to run jobs: a backend, in a subtree named by the caller.
#[derive(Clone, Debug)]
pub struct Jobs {
    shared: Arc<Shared>,
}

/// The names of the [`Jobs`] open in this process.
fn open_names() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<String>> {
    static OPEN: Mutex<std::collections::BTreeSet<String>> =
        Mutex::new(std::collections::BTreeSet::new());
    OPEN.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Shared {
    name: String,
    backend: Box<dyn Backend>,
    passed_over: Vec<Unavailable>,
    /// Units of jobs dropped before they were empty, with their main process.
    dying: Mutex<Vec<(Box<dyn Unit>, Pidfd)>>,
    closed: bool,
}

impl Jobs {
    /// The best backend this host offers, in a subtree `name` of the caller's
    /// cgroup, with the limits that backend has itself (see
    /// [`Jobs::open_with`] for more).
    pub fn open(name: &str) -> Result<Jobs, Unavailable> {
        Jobs::open_with(name, None, &[])
    }

    /// Backend `want` (or the best available), in a subtree `name` below the
    /// caller's cgroup in every hierarchy it uses, never herder's `herd/`.
    /// `limits` are the limit controllers jobs will use (`memory`, `pids`,
    /// `cpu`): those the backend lacks are taken from cgroup v1 hierarchies
    /// where writable; an empty list keeps the caller out of them. There, a
    /// job spawned without such a limit stays in `NAME/supervisor/` of that
    /// hierarchy with the caller, and the close cannot remove it while one of
    /// its processes has not been reaped (by the caller, or by init for an
    /// orphan). With the none backend, the caller becomes a child subreaper.
    pub fn open_with(
        name: &str,
        want: Option<Containment>,
        limits: &[&str],
    ) -> Result<Jobs, Unavailable> {
        let name = crate::dir_name(name);
        // A second claim of the subtree would take the first one's units for
        // what an earlier run left, and kill them.
        if !open_names().insert(name.clone()) {
            return Err(Unavailable {
                kind: want.unwrap_or(Containment::Cgroup2),
                reason: format!("jobs named {name} are already open in this process"),
            });
        }
        let chosen = crate::choose_with(want, Place::Own(&name), limits, true);
        let Chosen {
            backend,
            passed_over,
        } = chosen.inspect_err(|_| {
            open_names().remove(&name);
        })?;
        if backend.kind() == Containment::None {
            herd_sys::become_subreaper().map_err(|e| Unavailable {
                kind: Containment::None,
                reason: format!("cannot become a child subreaper: {e}"),
            })?;
        }
        Ok(Jobs {
            shared: Arc::new(Shared {
                name,
                backend,
                passed_over,
                dying: Mutex::new(Vec::new()),
                closed: false,
            }),
        })
    }

    /// The backend in use.
    pub fn kind(&self) -> Containment {
        self.shared.backend.kind()
    }

    /// The backend, for what [`Jobs`] does not wrap (its notices, its units'
    /// location).
    pub fn backend(&self) -> &dyn Backend {
        self.shared.backend.as_ref()
    }

    /// The better backends that could not be used here, each with why.
    pub fn passed_over(&self) -> &[Unavailable] {
        &self.shared.passed_over
    }

    /// Starts `spec` in a new unit named `name`.
    pub fn spawn(&self, name: &str, spec: Spec) -> Result<Job, SpawnError> {
        self.spawn_limited(name, spec, &Limits::default())
    }

    /// Starts `spec` in a new unit named `name`, with `limits` where the
    /// backend enforces them ([`Backend::unsupported`] says which it cannot).
    pub fn spawn_limited(
        &self,
        name: &str,
        mut spec: Spec,
        limits: &Limits,
    ) -> Result<Job, SpawnError> {
        let start = |source| SpawnError::Start {
            program: name.into(),
            source,
        };
        self.shared.remove_dead();
        let mut unit = self.shared.backend.create(name, limits).map_err(start)?;
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
        spec.cgroups = unit.join().map_err(start)?;
        let mut child = herd_sys::spawn(&spec)?;
        unit.started(child.pid);
        let output = (child.stdout.take(), child.stderr.take());
        Ok(Job {
            pid: child.pid,
            main: child.pidfd,
            unit: Some(unit),
            status: None,
            output,
            jobs: self.clone(),
        })
    }

    /// Closes now: see the module docs. Says what could not be removed, or
    /// that jobs (or clones of this handle) are still open, in which case the
    /// last of them closes.
    pub fn close(self) -> Vec<String> {
        match Arc::try_unwrap(self.shared) {
            Ok(mut shared) => shared.close(),
            Err(still) => vec![format!(
                "{} other handle(s) still open: the last one closes",
                Arc::strong_count(&still) - 1
            )],
        }
    }
}

impl Shared {
    /// Removes the units of dropped jobs that have emptied since.
    fn remove_dead(&self) {
        let mut dying = self.dying.lock().unwrap_or_else(|e| e.into_inner());
        dying.retain_mut(|(unit, main)| {
            if !unit.is_empty() {
                return true;
            }
            main.reap();
            last_look(unit.as_mut());
            unit.remove().is_err()
        });
    }

    fn close(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.closed, true) {
            return Vec::new();
        }
        let mut problems = Vec::new();
        let dying = std::mem::take(self.dying.get_mut().unwrap_or_else(|e| e.into_inner()));
        let until = Instant::now() + CLOSE_WAIT;
        for (mut unit, main) in dying {
            while !unit.is_empty() && Instant::now() < until {
                let _ = unit.kill();
                wait_member(unit.as_mut(), until);
            }
            main.reap();
            last_look(unit.as_mut());
            if let Err(e) = unit.remove() {
                problems.push(format!("cannot remove {unit:?}: {e}"));
            }
        }
        self.backend.begin_close();
        problems.extend(self.backend.close());
        open_names().remove(&self.name);
        problems
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Nobody to tell: [`Jobs::close`] is there for those who want to know.
        let _ = self.close();
    }
}

/// Once the main process is reaped: orphans of the unit that died as its
/// children are the caller's zombies now, and the none backend reaps them
/// when it looks ([`crate::none::Tracking::reaping`]).
fn last_look(unit: &mut dyn Unit) {
    unit.pids();
}

/// Blocks until a member of `unit` exits, the unit's `cgroup.events` says it
/// may have emptied, or `until` passes (for a close, outside any runtime).
fn wait_member(unit: &mut dyn Unit, until: Instant) {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let fds: Vec<Pidfd> = unit
        .pids()
        .into_iter()
        .filter_map(|p| unit.pidfd(p))
        .collect();
    let Some(rest) = until.checked_duration_since(Instant::now()) else {
        return;
    };
    let mut polls: Vec<PollFd> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
    if let Some(events) = unit.events() {
        polls.push(PollFd::from_borrowed_fd(events, PollFlags::PRI));
    }
    if polls.is_empty() {
        // Listed, but gone before a pidfd opened, and no cgroup to watch:
        // nothing to wait on but a moment, before the caller looks again.
        std::thread::sleep(rest.min(std::time::Duration::from_millis(1)));
        return;
    }
    let rest = Timespec::try_from(rest).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    let _ = poll(&mut polls, Some(&rest));
}

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
    /// After SIGKILL, how long to keep retrying before reporting survivors.
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
pub struct StopReport {
    pub signal: i32,
    /// What the signal was sent to: every process of the unit then, or the
    /// main process alone ([`Mode`]).
    pub signalled: Vec<Process>,
    /// When SIGKILL was needed, how long after the request it was sent.
    pub killed_after: Option<Duration>,
    /// What SIGKILL was first sent to (empty when it was not needed).
    pub killed: Vec<Process>,
    /// When the last process was gone, if it went.
    pub empty_after: Option<Duration>,
    /// The main process's status, if it was reaped.
    pub status: Option<ExitStatus>,
    /// Processes that survived every SIGKILL (empty on success), each with
    /// its state, which says why: `D` is a process in uninterruptible sleep,
    /// stuck in the kernel (a hung NFS mount, a device), which no signal ends
    /// until the kernel lets it go.
    pub survivors: Vec<Process>,
}

impl StopReport {
    /// Whether every process is gone.
    pub fn complete(&self) -> bool {
        self.survivors.is_empty() && self.empty_after.is_some()
    }
}

/// A command running in its own unit.
#[derive(Debug)]
pub struct Job {
    pid: i32,
    /// The main process, to signal, wait for and reap without a pid that could
    /// be recycled.
    main: Pidfd,
    /// `None` once dropped into the [`Jobs`]' dying units.
    unit: Option<Box<dyn Unit>>,
    status: Option<ExitStatus>,
    output: (Option<OwnedFd>, Option<OwnedFd>),
    jobs: Jobs,
}

impl Job {
    /// The main process's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn unit_mut(&mut self) -> &mut dyn Unit {
        self.unit.as_deref_mut().expect("taken only on drop")
    }

    /// The unit, to list or signal its processes.
    pub fn unit(&mut self) -> &mut dyn Unit {
        self.unit_mut()
    }

    /// The unit's live processes now.
    pub fn pids(&mut self) -> Vec<i32> {
        self.unit_mut().pids()
    }

    /// CPU time, memory and processes of the whole unit now.
    pub fn usage(&mut self) -> Usage {
        let unit = self.unit_mut();
        let pids = unit.pids();
        unit.usage(&pids)
    }

    /// The child's stdout and stderr pipes, unless output was discarded
    /// (with `merge_output`, stdout has both).
    pub fn take_output(&mut self) -> (Option<OwnedFd>, Option<OwnedFd>) {
        (self.output.0.take(), self.output.1.take())
    }

    /// The main process's status, if it has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.main.reap();
        }
        self.status
    }

    /// Waits for the main process to exit, and reaps it. The rest of the unit
    /// may live on: [`Job::wait_empty`] waits for it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(status);
            }
            self.main.try_clone()?.exited().await?;
            if self.try_wait().is_none() {
                // Exited but not ours to reap: a caller's `waitpid(-1)` took it.
                self.status = Some(ExitStatus::Unknown);
            }
        }
    }

    /// Waits until no process of the unit is left.
    pub async fn wait_empty(&mut self) {
        while !wait_empty(self.unit_mut(), Instant::now() + Duration::from_secs(3600)).await {}
    }

    /// Sends `signal` to every process of the unit, waits at most `timeout`
    /// for them to go, then SIGKILLs what is left; see the module docs.
    pub async fn stop(&mut self, signal: i32, timeout: Duration) -> StopReport {
        self.stop_with(&StopOptions {
            signal,
            ..StopOptions::new(timeout)
        })
        .await
    }

    /// [`Job::stop`] with every option.
    pub async fn stop_with(&mut self, opts: &StopOptions) -> StopReport {
        let t0 = Instant::now();
        let deadline = t0 + opts.timeout;
        let group = opts.mode == Mode::Group;
        let signalled = if group {
            procfs::describe(&self.unit_mut().pids())
        } else if self.status.is_none() {
            procfs::describe(&[self.pid])
        } else {
            // Reaped: its pid may be another process's by now.
            Vec::new()
        };
        let sent = if group {
            self.unit_mut().signal(opts.signal).map(|_| ())
        } else {
            self.main.signal(opts.signal).map(|_| ())
        };
        let mut killed_after = None;
        let mut killed = Vec::new();
        if opts.mode == Mode::Mixed && sent.is_ok() {
            if let Ok(main) = self.main.try_clone() {
                let _ = tokio::time::timeout_at(deadline.into(), main.exited()).await;
            }
            if !self.unit_mut().is_empty() && Instant::now() < deadline {
                killed_after = Some(t0.elapsed());
                killed = procfs::describe(&self.unit_mut().pids());
                let _ = self.unit_mut().kill();
            }
        }
        let mut empty = sent.is_ok() && wait_empty(self.unit_mut(), deadline).await;
        if !empty {
            if killed_after.is_none() {
                killed_after = Some(t0.elapsed());
                killed = procfs::describe(&self.unit_mut().pids());
            }
            let give_up = Instant::now() + opts.kill_grace;
            let mut pause = Duration::from_millis(10);
            loop {
                let _ = self.unit_mut().kill();
                let until = (Instant::now() + pause).min(give_up);
                if wait_empty(self.unit_mut(), until).await {
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
        let status = self.try_wait();
        last_look(self.unit_mut());
        let survivors = if empty {
            // An empty cgroup that cannot be removed holds nothing; the report
            // says what matters, that every process is gone.
            let _ = self.unit_mut().remove();
            Vec::new()
        } else {
            procfs::describe(&self.unit_mut().pids())
        };
        StopReport {
            signal: opts.signal,
            signalled,
            killed_after,
            killed,
            empty_after,
            status,
            survivors,
        }
    }
}

impl Drop for Job {
    /// A job dropped while its processes run must not leave them running: they
    /// are SIGKILLed (not waited for: the [`Jobs`] removes the unit once they
    /// are gone).
    fn drop(&mut self) {
        let Some(mut unit) = self.unit.take() else {
            return;
        };
        if !unit.is_empty() {
            let _ = unit.kill();
        }
        let main = self.main.try_clone();
        if unit.is_empty() {
            self.main.reap();
            last_look(unit.as_mut());
            if unit.remove().is_ok() {
                return;
            }
        }
        if let Ok(main) = main {
            let mut dying = self
                .jobs
                .shared
                .dying
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            dying.push((unit, main));
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
