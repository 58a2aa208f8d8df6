//! Containment and verified stop: run a command so that every process it ever
//! starts can be found, signalled and killed, and stop it within a deadline.
//!
//! Three backends implement [`Backend`]; each hands out [`Unit`]s, one per run of a
//! service (or of any command, for programs that embed this crate):
//!
//! | backend | contains | kill | emptiness event | limits |
//! |---|---|---|---|---|
//! | [`Containment::Cgroup2`] | a cgroup per unit; the child joins before exec | `cgroup.kill` | `cgroup.events` via epoll (`POLLPRI`) | `memory.max`, `pids.max`, `cpu.max` where enabled; else cgroup v1's (see [`v1`]) |
//! | [`Containment::Freezer`] | a v1 freezer cgroup per unit | freeze, SIGKILL each, thaw | none from the kernel: the caller's SIGCHLD or pidfds | cgroup v1's memory, pids and cpu where writable (see [`v1`]) |
//! | [`Containment::None`] | the process tree, tracked by ancestry from /proc | pidfd per process, start time checked | the caller's SIGCHLD or pidfds | none |
//!
//! [`detect`] picks the best backend the host offers (or the one asked for) and
//! [`report`] says what each would guarantee here, for `herd doctor`.
//! [`Contained`] is the embeddable whole: spawn into a unit, stop with a deadline,
//! get a [`StopRecord`] of what happened.
//!
//! # Caveats
//!
//! - Backends only find processes; reaping stays with the caller (herder's one
//!   reaper, or [`Contained`] for its main process). Zombies count as gone.
//! - The none backend needs its caller to be a child subreaper
//!   ([`herd_sys::become_subreaper`]): orphans of a unit are then re-parented to the
//!   caller instead of init, so they stay in reach. See [`none`] for what it cannot
//!   attribute.

#![forbid(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herd_sys::Pidfd;

mod contained;
mod freezer;
pub mod mounts;
pub mod none;
pub mod procfs;
mod tree;
mod v1;
mod v2;

pub use contained::{Contained, Mode, StopOptions, StopRecord};
/// What to run, and what spawning it can go wrong with: one crate to depend on.
pub use herd_sys::{Child, Credentials, Rlimit, SpawnError, Spec};
pub use procfs::Leftover;

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
        let mut sent = 0;
        for pid in self.pids() {
            if let Some(fd) = self.pidfd(pid)
                && fd.signal(signal)?
            {
                sent += 1;
            }
        }
        Ok(sent)
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

/// The backend to use: `want`, or the best available (cgroup v2, then the v1
/// freezer, then none) when `None`; its cgroups go directly in herder's own
/// cgroup (or `herd/`). [`choose`] puts them in an instance's subtree and says
/// why better backends were passed over.
pub fn detect(want: Option<Containment>) -> Result<Box<dyn Backend>, Unavailable> {
    choose(want, None, &["memory", "pids", "cpu"]).map(|c| c.backend)
}

/// What [`choose`] chose.
#[derive(Debug)]
pub struct Chosen {
    pub backend: Box<dyn Backend>,
    /// The better backends it tried first, each with why it could not be used:
    /// a supervisor says so rather than run on a weaker one silently.
    pub passed_over: Vec<Unavailable>,
}

/// [`detect`] for one `instance` of a supervisor: its cgroups go in a subtree
/// of its own, `herd/INSTANCE/` (or `INSTANCE/` in its own cgroup), so that
/// any number of supervisors on a host each get the best backend, and the
/// clean-up after one that was killed touches its own subtree only. Two
/// supervisors of one instance are refused (the second finds `supervisor/`
/// in use). `limits` are the limit controllers the caller's units will use
/// (`memory`, `pids`, `cpu`): those the backend lacks are taken from cgroup
/// v1, and only those, as each costs herder a move into that hierarchy at
/// start and out of it at exit.
pub fn choose(
    want: Option<Containment>,
    instance: Option<&str>,
    limits: &[&str],
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
                let b = v2::Cgroup2::open(instance).map_err(unavailable)?;
                let mut skip: Vec<String> = b.enabled().map(String::from).collect();
                // cgroup v2 counts CPU time in every cgroup's cpu.stat.
                skip.push("cpuacct".into());
                skip.extend(unneeded.iter().cloned());
                v1::with_v1(Box::new(b), &skip, instance)
            }
            Containment::Freezer => v1::with_v1(
                Box::new(freezer::Freezer::open(instance).map_err(unavailable)?),
                &unneeded,
                instance,
            ),
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

/// Probes every backend, best first, as [`choose`] would for `instance`.
pub fn report(instance: Option<&str>) -> Vec<Probe> {
    vec![
        Probe {
            kind: Containment::Cgroup2,
            result: v2::probe(instance),
        },
        Probe {
            kind: Containment::Freezer,
            result: freezer::probe(instance),
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
