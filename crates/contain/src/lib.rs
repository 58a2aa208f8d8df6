//! Containment and verified stop: run a command so that every process it ever
//! starts can be found, signalled and killed, and stop it within a deadline.
//!
//! This is the engine of herder's stop, usable on its own by programs that run
//! commands and must stop them completely: job runners, function runtimes, CI
//! agents, test harnesses.
//!
//! ```
//! use std::io::{BufRead, BufReader};
//! use std::time::Duration;
//!
//! use herd_contain::{Jobs, SIGTERM, Spec};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A subtree of our own (`doc-example/` below this process's cgroup), on the
//! // best backend this host offers.
//! let jobs = Jobs::open("doc-example")?;
//!
//! // A tree that ignores SIGTERM: a double-forked daemon, then the main process.
//! let script = "trap '' TERM
//!     (sleep 600 &)
//!     echo started
//!     exec sleep 600";
//! let mut job = jobs.spawn("build", Spec::command(["sh", "-c", script]))?;
//! let (stdout, _) = job.take_output();
//! let mut line = String::new();
//! BufReader::new(std::fs::File::from(stdout.unwrap())).read_line(&mut line)?;
//! assert_eq!(job.pids().len(), 2, "the main process and the daemon");
//!
//! // SIGTERM to both, SIGKILL at the deadline, and a report of what it took.
//! let report = job.stop(SIGTERM, Duration::from_millis(200)).await;
//! assert!(report.complete(), "nothing survived: {:?}", report.survivors);
//! assert_eq!(report.signalled.len(), 2);
//! assert!(report.killed_after.is_some(), "SIGTERM was ignored");
//! for p in &report.killed {
//!     println!("SIGKILLed {p}");
//! }
//!
//! // Removes the subtree once no job holds it (dropping both would too).
//! drop(job);
//! assert_eq!(jobs.close(), Vec::<String>::new());
//! # Ok(())
//! # }
//! ```
//!
//! [`Jobs`] opens a backend in the caller's own subtree; [`Job`] waits for the
//! main process ([`Job::wait`]) and for the whole unit ([`Job::wait_empty`]) as
//! separate futures, reads its [`Usage`], and stops it ([`Job::stop`]) with a
//! [`StopReport`]: what was signalled, when SIGKILL was needed and for what,
//! and what survived, with its state. Underneath, [`choose`] picks a
//! [`Backend`], which hands out a [`Unit`] per run; herder uses these directly.
//!
//! # How it works
//!
//! | backend | contains | kill | emptiness event | limits |
//! |---|---|---|---|---|
//! | [`Containment::Cgroup2`] | a cgroup per unit; the child joins before exec | `cgroup.kill` | `cgroup.events` via epoll (`POLLPRI`) | `memory.max`, `pids.max`, `cpu.max` where enabled; else cgroup v1's |
//! | [`Containment::Freezer`] | a v1 freezer cgroup per unit | freeze, SIGKILL each, thaw | none from the kernel: pidfds | cgroup v1's memory, pids and cpu where writable |
//! | [`Containment::None`] | the process tree, tracked by ancestry from /proc | pidfd per process, start time checked | pidfds | none |
//!
//! - **cgroup v2.** The child joins its unit's cgroup between fork and exec, so
//!   nothing of it ever runs outside, and nothing it does (fork, `setsid`,
//!   double-fork, clearing its environment) takes a process out. The kill is
//!   one write to `cgroup.kill`, atomic with respect to forks, and no pid is
//!   read, so none can be recycled.
//! - **cgroup v1 freezer**, for hybrid hosts where the v2 mount is not
//!   writable. Containment is the same; the kill freezes the cgroup (nothing in
//!   it can fork or exit), SIGKILLs every listed pid, and thaws.
//! - **none**, for containers without a writable cgroup mount and for
//!   unprivileged callers. The caller becomes a child subreaper, so orphans
//!   come to it rather than to init; a unit's processes are found by ancestry,
//!   by session and group, and by a run id (`HERD_INVOCATION`) in their
//!   environment. Signals go through pidfds checked against start times; the
//!   kill goes round after round until a scan finds nothing new.
//!
//! # Caveats
//!
//! - **cgroup v2**: needs write access to the caller's cgroup (root, or a
//!   delegated subtree: `Delegate=yes`, a container's own cgroup); below the
//!   hierarchy's root the caller is moved into `NAME/supervisor/` while the
//!   [`Jobs`] is open. Limits need
//!   the controllers in the caller's cgroup. `cgroup.kill` needs Linux 5.14;
//!   before it, the kill goes round by pidfd.
//! - **freezer**: a freeze can take a moment to complete (it is polled, with
//!   backoff), and a process stuck in the kernel can hold it up; limits come
//!   from the other v1 hierarchies.
//! - **none**: a process that clears `HERD_INVOCATION` and whose parent lived
//!   and died between two scans, while several units ran, cannot be attributed
//!   (herder kills such strays at its shutdown); a scan reads all of /proc, so
//!   its cost grows with the machine's processes; no limits. The orphans it
//!   adopts are reaped by its scans ([`none::Tracking::reaping`]).
//! - **All**: a process in uninterruptible sleep (`D`) outlives every SIGKILL
//!   until the kernel lets it go; the stop reports it as a survivor, with its
//!   state, rather than waiting for ever.
//!
//! # Compared with
//!
//! - **`tokio::process`** (and `std::process`): `Child::kill` and
//!   `kill_on_drop` SIGKILL the direct child only. A grandchild, a
//!   double-forked daemon or anything in a new session lives on, and `wait`
//!   says nothing of them. There is no graceful signal with a deadline.
//! - **`process-wrap`** (watchexec's, successor of `command-group`): on Unix it
//!   starts the command in a new process group or session and signals the
//!   group, and its group child reaps what the group leaves. A process that
//!   calls `setsid` or `setpgid` (every classic daemon) leaves the group and is
//!   not stopped; there are no cgroups, limits or stop reports.
//! - **watchexec's supervisor** (`watchexec-supervisor`) builds jobs on
//!   `process-wrap`: a graceful signal, then SIGKILL after a grace period, to
//!   the group. Its stop has the same blind spot for processes that left the
//!   group, and does not check that anything is left.
//! - **This crate** stops what the command started wherever it went, on all
//!   three backends (with the none backend's limit above), checks it is gone,
//!   and says what it took; it is Linux only.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_sys::Pidfd;

mod freezer;
mod job;
pub mod mounts;
pub mod none;
pub mod procfs;
mod tree;
mod v1;
mod v2;

/// What to run, and what spawning it can go wrong with: one crate to depend on.
pub use herd_sys::{Child, Credentials, Rlimit, SpawnError, Spec};
pub use job::{CLOSE_WAIT, Job, Jobs, Mode, StopOptions, StopReport};
/// The signals a stop sends, for callers without `libc`.
pub use libc::{SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
pub use procfs::Process;

/// Which backend: the one enum for it, from `herd.toml` to the command line.
pub use herd_config::Containment;

/// What a backend promises, in a sentence each, for `herd doctor`.
pub fn guarantees(kind: Containment) -> &'static [&'static str] {
    match kind {
        Containment::Cgroup2 => &[
            "every process of a service, setsid and double-fork escapees included, stays in its cgroup",
            "SIGKILL through cgroup.kill: no pid is read, so none can be recycled",
            "emptiness from cgroup.events (epoll): no polling",
            "memory.max, pids.max, cpu.max where the controllers are enabled; else the cgroup v1 memory, pids and cpu hierarchies where writable",
        ],
        Containment::Freezer => &[
            "every process of a service stays in its freezer cgroup",
            "SIGKILL while frozen: frozen processes cannot exit or fork, so no pid is recycled",
            "a freeze that does not complete is thawed and retried with backoff",
            "emptiness on SIGCHLD (herder is the subreaper)",
            "limits and usage from the cgroup v1 memory, pids, cpu and cpuacct hierarchies where writable",
        ],
        Containment::None => &[
            "services run in their own session; herder is the child subreaper",
            "processes found by ancestry in /proc, remembered after re-parenting to herder",
            "signals through pidfds, each checked against the process's start time",
            "cannot attribute an orphan that cleared its environment and whose parent lived and died between two scans when several services run: it is named as unclaimed and killed at shutdown; escapes entirely if herder cannot be a subreaper",
        ],
    }
}

/// Resource limits a unit gets where the backend can enforce them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Bytes (`memory.max`).
    pub memory: Option<u64>,
    /// Tasks (`pids.max`).
    pub pids: Option<u64>,
    /// CPUs, may be fractional (`cpu.max`).
    pub cpu: Option<f64>,
}

/// A containment backend: makes units.
pub trait Backend: Send + Sync + std::fmt::Debug {
    fn kind(&self) -> Containment;

    /// The directory its units live under, if it has one.
    fn location(&self) -> Option<&Path>;

    /// A new, empty unit for one run of `name`, with `limits` applied where possible
    /// (see [`Backend::unsupported`] for those that are not).
    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Unit>>;

    /// The limits in `limits` this backend cannot enforce here, each with the reason.
    fn unsupported(&self, limits: &Limits) -> Vec<String>;

    /// The controllers it limits units with (`memory`, `pids`, `cpu`), with
    /// where from when not its own hierarchy (`memory (cgroup v1)`).
    fn limit_controllers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Descriptors a unit holds open while its main process runs, for a caller
    /// sizing its descriptor limit (none, for every backend here, unless it
    /// holds files ([`Backend::hold_files`]): a cgroup's files are opened when
    /// used, and `cgroup.events` from the main process's end until the unit is
    /// removed).
    fn descriptors_per_unit(&self) -> u64 {
        0
    }

    /// Descriptors a unit keeps open, when allowed ([`Backend::hold_files`]),
    /// to answer faster.
    fn descriptors_to_hold(&self) -> u64 {
        0
    }

    /// Whether units made from now on keep files open to answer faster (the
    /// cgroup2 backend: a unit's directory and `cgroup.procs`, so listing its
    /// processes is one read, with no path walk). A supervisor allows it where
    /// its descriptor limit has room ([`Backend::descriptors_to_hold`] more a
    /// unit); without, every unit holds none while its main process runs.
    fn hold_files(&self, _hold: bool) {}

    /// Processes under the caller that no unit could claim (none backend only).
    fn strays(&self) -> Vec<i32> {
        Vec::new()
    }

    /// What start-up found and did that an operator should hear (leftovers of an
    /// earlier run that were killed).
    fn notices(&self) -> Vec<String> {
        Vec::new()
    }

    /// Begins a batch of questions and signals to many units, which may then
    /// share what they learn of the system until [`Backend::end_batch`] (the none
    /// backend reads /proc once for all of them). A shared look is never older
    /// than the batch, and never calls a unit empty that is not; the caller
    /// says when it reaped processes ([`Backend::refresh`]), as units may have
    /// emptied since.
    fn begin_batch(&self) {}

    /// Processes were reaped: what the batch shares may be out of date.
    fn refresh(&self) {}

    /// Ends the batch: work put off to its end is done (the none backend's
    /// later SIGKILL rounds), and every question asks the system again.
    fn end_batch(&self) {}

    /// The supervisor is shutting down: [`Backend::close`] will follow once every
    /// unit is gone. Lets a backend begin slow parts of its close early.
    fn begin_close(&self) {}

    /// Removes what the backend made at start-up; called once, at exit. Returns
    /// what could not be removed, for the operator.
    fn close(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a unit's processes use now, read when asked (never sampled in the
/// background).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// CPU time used, user and system; `None` where it cannot be read.
    pub cpu: Option<std::time::Duration>,
    /// Memory in use, in bytes; `None` where it cannot be read.
    pub memory: Option<u64>,
    /// Live processes.
    pub processes: usize,
}

/// One run's containment.
pub trait Unit: Send + std::fmt::Debug {
    /// The `cgroup.procs` files for the child to join before exec
    /// ([`herd_sys::Spec::cgroups`]), opened for this spawn; none for a backend
    /// without cgroups.
    fn join(&self) -> io::Result<Vec<Arc<OwnedFd>>>;

    /// A process started into this unit (its main process, a hook, a check).
    fn started(&mut self, pid: i32);

    /// The run's [`procfs::INVOCATION_VAR`], which every process started into the
    /// unit has in its environment. A backend without cgroups recognises by it a
    /// re-parented process that nothing else ties to the unit.
    fn set_invocation(&mut self, _invocation: &str) {}

    /// A descriptor that signals `POLLPRI` when the unit may have become empty
    /// (a cgroup's `cgroup.events`; watch it with [`herd_sys::watch::PriorityWatch`]).
    /// Opened by the first [`Unit::is_empty`], and `None` before it: a unit
    /// holds no descriptor while its main process runs, and a change since
    /// that check is reported when the descriptor is added to a watch.
    fn events(&self) -> Option<BorrowedFd<'_>>;

    /// The unit's cgroup directory, if it has one (for the state file, so a later
    /// run can find what this one left).
    fn location(&self) -> Option<PathBuf> {
        None
    }

    /// The unit's live processes now (zombies excluded).
    fn pids(&mut self) -> Vec<i32>;

    /// CPU time, memory and processes of the unit now, whose live processes
    /// [`Unit::pids`] just gave as `pids`. By default summed from /proc over
    /// them (see [`procfs::usage`] for what that misses); a cgroup's own
    /// accounting where it has one.
    fn usage(&mut self, pids: &[i32]) -> Usage {
        procfs::usage(pids)
    }

    /// How many of the unit's processes the kernel's OOM killer has killed
    /// for passing its memory limit, where a memory controller counts them
    /// (cgroup v2 `memory.events`, v1 `memory.oom_control`); `None` elsewhere.
    fn oom_kills(&mut self) -> Option<u64> {
        None
    }

    /// Whether no process of the unit is alive.
    fn is_empty(&mut self) -> bool {
        self.pids().is_empty()
    }

    /// Whether `pid`, now, is a process of this unit. Used after opening a pidfd for
    /// it: if so, the pidfd names this unit's process, whatever the pid becomes.
    fn owns(&mut self, pid: i32) -> bool;

    /// Sends `signal` to every process; returns how many were signalled.
    fn signal(&mut self, signal: i32) -> io::Result<usize> {
        signal_listed(self, &[signal])
    }

    /// Sends each of `signals`, in order, to every process; returns how many
    /// got the first. The backends do it from one look at the unit, so a
    /// stop's signal and the SIGCONT that lets a stopped process act on it
    /// cost one listing and one pidfd a process, not two; by default it is
    /// [`Unit::signal`] once for each.
    fn signals(&mut self, signals: &[i32]) -> io::Result<usize> {
        let mut first = None;
        for &s in signals {
            let n = self.signal(s)?;
            first.get_or_insert(n);
        }
        Ok(first.unwrap_or(0))
    }

    /// SIGKILL to every process, with no window in which a recycled pid is hit.
    fn kill(&mut self) -> io::Result<()>;

    /// A pidfd for `pid` if it is a live process of this unit.
    fn pidfd(&mut self, pid: i32) -> Option<Pidfd> {
        let fd = Pidfd::open(pid).ok()?;
        self.owns(pid).then_some(fd)
    }

    /// Removes the unit; only once it is empty.
    fn remove(&mut self) -> io::Result<()>;
}

/// Why a backend cannot be used here.
#[derive(Debug, thiserror::Error)]
#[error("{kind} containment is not available: {reason}")]
pub struct Unavailable {
    pub kind: Containment,
    pub reason: String,
}

/// Where a backend's cgroups go, in every hierarchy it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place<'a> {
    /// herder's: its own cgroup (a container's, a unit's with `Delegate=yes`),
    /// or `herd/` when it sits at the root; with an instance name, that
    /// instance's directory below either.
    Herder(Option<&'a str>),
    /// An embedder's: a directory of this name below the caller's cgroup,
    /// made at open and removed at close (or when [`Jobs`] is dropped).
    Own(&'a str),
}

/// What [`choose`] chose.
#[derive(Debug)]
pub struct Chosen {
    pub backend: Box<dyn Backend>,
    /// The better backends it tried first, each with why it could not be used:
    /// a supervisor says so rather than run on a weaker one silently.
    pub passed_over: Vec<Unavailable>,
}

/// The backend to use: `want`, or the best available (cgroup v2, then the v1
/// freezer, then none) when `None`, with its cgroups at `place`.
///
/// For herder, `place` is its instance's subtree (`herd/INSTANCE/`, or
/// `INSTANCE/` in its own cgroup), so that any number of supervisors on a host
/// each get the best backend, and the clean-up after one that was killed
/// touches its own subtree only. Two supervisors of one place are refused (the
/// second finds the place locked). `limits` are the limit controllers the
/// caller's units will use (`memory`, `pids`, `cpu`): those the backend lacks
/// are taken from cgroup v1, and only those, as each is a subtree to make at
/// start and remove at close.
///
/// The cgroup v2 backend moves the calling process into `supervisor/` of its
/// subtree (a cgroup that hands controllers down holds no process), and back
/// at [`Backend::close`], unless the caller is in the hierarchy's root, which
/// that rule exempts; in v1 hierarchies the caller stays where it is.
pub fn choose(
    want: Option<Containment>,
    place: Place,
    limits: &[&str],
) -> Result<Chosen, Unavailable> {
    choose_with(want, place, limits, false)
}

/// [`choose`], with a none backend that reaps the orphans it adopts
/// ([`none::Tracking::reaping`]) when `reaping`.
pub(crate) fn choose_with(
    want: Option<Containment>,
    place: Place,
    limits: &[&str],
    reaping: bool,
) -> Result<Chosen, Unavailable> {
    // A cpu limit's hierarchy also counts CPU time (cpuacct) where they share it.
    let mut unneeded: Vec<String> = ["memory", "pids", "cpu"]
        .into_iter()
        .filter(|c| !limits.contains(c))
        .map(String::from)
        .collect();
    if !limits.contains(&"cpu") {
        unneeded.push("cpuacct".into());
    }
    let open = |kind: Containment| -> Result<Box<dyn Backend>, Unavailable> {
        let unavailable = |reason: String| Unavailable { kind, reason };
        // The controllers a cgroup backend lacks come from v1 where they can.
        Ok(match kind {
            Containment::Cgroup2 => {
                let b = v2::Cgroup2::open(place).map_err(unavailable)?;
                let mut skip: Vec<String> = b.enabled().map(String::from).collect();
                // cgroup v2 counts CPU time in every cgroup's cpu.stat.
                skip.push("cpuacct".into());
                skip.extend(unneeded.iter().cloned());
                v1::with_v1(Box::new(b), &skip, place)
            }
            Containment::Freezer => v1::with_v1(
                Box::new(freezer::Freezer::open(place).map_err(unavailable)?),
                &unneeded,
                place,
            ),
            Containment::None if reaping => Box::new(none::Tracking::reaping()),
            Containment::None => Box::new(none::Tracking::open()),
        })
    };
    if let Some(kind) = want {
        return open(kind).map(|backend| Chosen {
            backend,
            passed_over: Vec::new(),
        });
    }
    let mut passed_over = Vec::new();
    for kind in Containment::ALL {
        match open(kind) {
            Ok(backend) => {
                return Ok(Chosen {
                    backend,
                    passed_over,
                });
            }
            Err(e) => passed_over.push(e),
        }
    }
    Err(passed_over.pop().expect("the none backend always opens"))
}

/// What a backend would be on this host, without changing anything.
#[derive(Debug)]
pub struct Probe {
    pub kind: Containment,
    /// Where its units would go, or why it cannot be used.
    pub result: Result<String, String>,
}

/// Probes every backend, best first, as [`choose`] would for `place`.
pub fn report(place: Place) -> Vec<Probe> {
    vec![
        Probe {
            kind: Containment::Cgroup2,
            result: v2::probe(place),
        },
        Probe {
            kind: Containment::Freezer,
            result: freezer::probe(place),
        },
        Probe {
            kind: Containment::None,
            result: none::probe(),
        },
    ]
}

/// Reads a small kernel file, trimmed.
pub(crate) fn read_trim(p: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(p)?.trim().to_string())
}

/// Every pid listed in `cgroup.procs` of `dir` and of the cgroups below it.
pub fn procs_below(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            todo.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// [`Unit::signals`] for a unit that lists its processes with [`Unit::pids`]
/// and reaches each through [`Unit::pidfd`].
pub(crate) fn signal_listed<U: Unit + ?Sized>(unit: &mut U, signals: &[i32]) -> io::Result<usize> {
    let mut sent = Sent::default();
    for pid in unit.pids() {
        if let Some(fd) = unit.pidfd(pid) {
            sent.send(&fd, signals);
        }
    }
    sent.result()
}

/// Signals sent process by process: one that cannot be signalled (or not
/// continued) spares no other, and the first failure is the result.
#[derive(Default)]
pub(crate) struct Sent {
    count: usize,
    failed: Option<io::Error>,
}

impl Sent {
    /// Sends `signals` in order through `fd`, every one even if one fails;
    /// counts the process if it was there for the first.
    pub(crate) fn send(&mut self, fd: &herd_sys::Pidfd, signals: &[i32]) {
        for (i, &s) in signals.iter().enumerate() {
            match fd.signal(s) {
                Ok(there) => self.count += usize::from(there && i == 0),
                Err(e) => {
                    self.failed.get_or_insert(e);
                }
            }
        }
    }

    pub(crate) fn result(self) -> io::Result<usize> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(self.count),
        }
    }
}

/// Removes `dir` and the cgroups below it, deepest first; a missing `dir` is fine.
pub fn remove_tree(dir: &Path) -> io::Result<()> {
    // Services rarely make cgroups of their own: one rmdir, and a walk only when
    // it fails (EBUSY with cgroups below).
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path())?;
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A cgroup directory name for a service: its name is already restricted by the
/// config loader, but embedders may pass anything.
pub(crate) fn dir_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match clean.as_str() {
        "" | "." | ".." => format!("_{clean}"),
        _ => clean,
    }
}
