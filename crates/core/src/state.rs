//! The state file (`state.json` in the state directory) and recovery from a herder
//! that was killed.
//!
//! # How it works
//!
//! herder writes what it runs each time a run starts or its unit is removed: its own
//! pid and start time, and per running service the run's invocation id
//! (`HERD_INVOCATION`, also in the service's environment), its main pid and start
//! time, and its cgroup if it has one. During a shutdown the file only loses
//! entries, so it is written once, at the end: a herder killed half-way leaves
//! entries for services already stopped, which recovery finds gone. A clean exit
//! removes the file.
//!
//! When `herd up` finds the file, either its herder is still alive (same pid, same
//! start time): then it refuses to start a second one; or it died without stopping
//! its services. Then [`recover`] finds what that run left — everything in its
//! cgroups, every process whose environment carries one of its invocation ids (a
//! random 128-bit id, so a recycled pid cannot match), the recorded main pids if
//! their start time still matches — sends SIGTERM, waits up to each service's stop
//! timeout (bounded by the shutdown budget), SIGKILLs what is left, rescans until
//! nothing is found, and says what it did.
//!
//! # Caveats
//!
//! - Without cgroups, a process that left its session *and* cleared its environment
//!   cannot be recognised once its parent is gone.
//! - The environment of another user's process is unreadable without privilege: an
//!   unprivileged herder only recovers its own user's processes (the only ones it
//!   could have started).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use herd_contain::{procfs, procs_below};
use herd_sys::Pidfd;

pub const FILE: &str = "state.json";

/// A process, named so that a recycled pid does not match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Proc {
    pub pid: i32,
    /// Clock ticks after boot (field 22 of /proc/PID/stat).
    pub start_time: u64,
}

impl Proc {
    /// `pid` as it is now, if it is alive.
    pub fn of(pid: i32) -> Option<Proc> {
        procfs::stat(pid).filter(|s| s.alive()).map(|s| Proc {
            pid,
            start_time: s.starttime,
        })
    }

    /// Whether this very process is still alive.
    pub fn alive(&self) -> bool {
        Proc::of(self.pid).is_some_and(|p| p == *self)
    }
}

/// What a herder runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub herder: Option<Proc>,
    pub backend: String,
    pub shutdown_budget_ms: u64,
    pub services: BTreeMap<String, Run>,
    /// Processes re-parented to herder that no service claimed (none backend).
    #[serde(default)]
    pub unclaimed: Vec<Proc>,
}

/// The name recovery gives the processes no service claimed.
pub const UNCLAIMED: &str = "(processes no service could claim)";

/// One service's current run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// `HERD_INVOCATION` in its environment.
    pub invocation: String,
    pub main: Option<Proc>,
    pub cgroup: Option<PathBuf>,
    pub stop_timeout_ms: u64,
}

impl StateFile {
    /// Writes the file atomically, readable by `private`'s user (and group).
    pub fn save(&self, dir: &Path, private: crate::private::Private) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        private.write(&dir.join(FILE), text.as_bytes())
    }

    /// The file in `dir`, if there is one.
    pub fn load(dir: &Path) -> io::Result<Option<StateFile>> {
        match std::fs::read_to_string(dir.join(FILE)) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(dir: &Path) -> io::Result<()> {
        match std::fs::remove_file(dir.join(FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Why `herd up` must not go on.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("herd (pid {0}) is already running with the state directory {1}")]
    Running(i32, PathBuf),
    #[error("cannot read {}: {}", .0.display(), .1)]
    Unreadable(PathBuf, io::Error),
}

/// What recovery did, for the operator.
#[derive(Debug, Default)]
pub struct Recovery {
    pub lines: Vec<String>,
    /// Processes still there after every attempt.
    pub left: Vec<procfs::Process>,
}

/// Finds and stops what a killed herder left (see the module docs). `Ok` with no
/// lines when there was nothing to do.
pub async fn recover(dir: &Path) -> Result<Recovery, Refused> {
    let state = match StateFile::load(dir) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(Recovery::default()),
        Err(e) => return Err(Refused::Unreadable(dir.join(FILE), e)),
    };
    if let Some(h) = state.herder
        && h.pid != std::process::id() as i32
        && h.alive()
    {
        return Err(Refused::Running(h.pid, dir.to_path_buf()));
    }
    let mut out = Recovery::default();
    let found = find(&state);
    if found.values().all(BTreeSet::is_empty) {
        forget(dir, &mut out);
        return Ok(out);
    }
    out.lines.push(format!(
        "the previous herd{} ended without stopping its services; stopping what it left:",
        state
            .herder
            .map(|h| format!(" (pid {})", h.pid))
            .unwrap_or_default()
    ));
    for (name, procs) in &found {
        if procs.is_empty() {
            continue;
        }
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        out.lines
            .push(format!("  {name}: {} process(es)", pids.len()));
        for l in procfs::describe(&pids) {
            out.lines.push(format!("    {l}"));
        }
    }
    let started = tokio::time::Instant::now();
    let terminated = terminate(&state, &found).await;
    let killed = kill(&state).await;
    let left: Vec<i32> = find(&state)
        .into_values()
        .flatten()
        .map(|p| p.pid)
        .collect();
    out.left = procfs::describe(&left);
    let took = herd_config::units::format_duration(started.elapsed());
    out.lines
        .push(match (terminated && killed == 0, out.left.is_empty()) {
            (true, true) => format!("all of it ended on SIGTERM within {took}"),
            (false, true) => {
                format!("SIGKILL was needed for {killed} process(es); all gone after {took}")
            }
            (_, false) => format!(
                "{} process(es) survived SIGKILL (stuck); starting anyway",
                out.left.len()
            ),
        });
    for cg in state.services.values().filter_map(|r| r.cgroup.as_ref()) {
        if procs_below(cg).is_empty()
            && let Err(e) = herd_contain::remove_tree(cg)
        {
            out.lines.push(format!(
                "cannot remove {} (left in place): {e}",
                cg.display()
            ));
        }
    }
    if out.left.is_empty() {
        forget(dir, &mut out);
    }
    Ok(out)
}

/// SIGTERM to every process found at once, then a wait for each service up to its
/// stop timeout (within the budget): the old run's services get a stop, not just
/// a kill. Whether all of them ended.
async fn terminate(state: &StateFile, found: &BTreeMap<String, BTreeSet<Proc>>) -> bool {
    let budget = Duration::from_millis(state.shutdown_budget_ms.max(1));
    let started = tokio::time::Instant::now();
    let mut waits = Vec::new();
    // Processes no service claimed get no stop of their own: as at the end of a
    // shutdown, they are only SIGKILLed (next).
    for (name, procs) in found.iter().filter(|(n, _)| *n != UNCLAIMED) {
        let timeout = state.services.get(name).map(|r| r.stop_timeout_ms);
        let grace = timeout.map_or(budget, Duration::from_millis).min(budget);
        for p in procs {
            if let Some(fd) = open_verified(*p)
                && matches!(fd.signal(libc::SIGTERM), Ok(true))
            {
                waits.push(tokio::time::timeout_at(started + grace, fd.exited()));
            }
        }
    }
    let mut terminated = true;
    for w in waits {
        terminated &= matches!(w.await, Ok(Ok(())));
    }
    terminated
}

/// SIGKILL in rounds: what the scan finds now includes processes forked
/// meanwhile. A round's kills are waited for (bounded) before the next scan.
/// How many processes were killed.
async fn kill(state: &StateFile) -> usize {
    let mut killed = 0usize;
    for _ in 0..20 {
        let now: Vec<Proc> = find(state).into_values().flatten().collect();
        if now.is_empty() {
            break;
        }
        kill_cgroups(state);
        let mut waits = Vec::new();
        for p in now {
            if let Some(fd) = open_verified(p)
                && matches!(fd.signal(libc::SIGKILL), Ok(true))
            {
                killed += 1;
                waits.push(tokio::time::timeout(
                    Duration::from_millis(500),
                    fd.exited(),
                ));
            }
        }
        for w in waits {
            let _ = w.await;
        }
    }
    killed
}

/// Every live process of each recorded run.
fn find(state: &StateFile) -> BTreeMap<String, BTreeSet<Proc>> {
    let mut by_invocation: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out: BTreeMap<String, BTreeSet<Proc>> = BTreeMap::new();
    for (name, run) in &state.services {
        by_invocation.insert(run.invocation.as_str(), name.as_str());
        let set = out.entry(name.clone()).or_default();
        if let Some(m) = run.main
            && m.alive()
        {
            set.insert(m);
        }
        if let Some(cg) = &run.cgroup {
            set.extend(procs_below(cg).into_iter().filter_map(Proc::of));
        }
    }
    let unclaimed: BTreeSet<Proc> = state
        .unclaimed
        .iter()
        .copied()
        .filter(Proc::alive)
        .collect();
    if !unclaimed.is_empty() {
        out.insert(UNCLAIMED.to_string(), unclaimed);
    }
    let me = std::process::id() as i32;
    for s in procfs::all() {
        if s.pid == me || !s.alive() {
            continue;
        }
        let Some(inv) = procfs::invocation(s.pid, s.starttime).flatten() else {
            continue;
        };
        if let Some(name) = by_invocation.get(inv.as_str()) {
            out.get_mut(*name).expect("inserted").insert(Proc {
                pid: s.pid,
                start_time: s.starttime,
            });
        }
    }
    out
}

/// A pidfd for `p`, checked after opening to still be that process.
fn open_verified(p: Proc) -> Option<Pidfd> {
    let fd = Pidfd::open(p.pid).ok()?;
    p.alive().then_some(fd)
}

/// The old run is dealt with: its state file goes. If it cannot, the next start
/// looks again and finds nothing, so this is said, not fatal.
fn forget(dir: &Path, out: &mut Recovery) {
    if let Err(e) = StateFile::remove(dir) {
        out.lines
            .push(format!("cannot remove {}: {e}", dir.join(FILE).display()));
    }
}

/// `cgroup.kill` where the kernel has it (v2): it also gets processes forked
/// between a scan and its kills. A failed write is not fatal: the pidfd SIGKILLs of
/// the same round follow, and the next scan sees what is left.
fn kill_cgroups(state: &StateFile) {
    for cg in state.services.values().filter_map(|r| r.cgroup.as_ref()) {
        let kill = cg.join("cgroup.kill");
        if kill.exists() {
            let _ = std::fs::write(kill, "1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap(), None);
        let mut s = StateFile {
            herder: Proc::of(std::process::id() as i32),
            backend: "none".into(),
            shutdown_budget_ms: 25_000,
            ..Default::default()
        };
        s.services.insert(
            "web".into(),
            Run {
                invocation: procfs::new_invocation(),
                main: None,
                cgroup: None,
                stop_timeout_ms: 10_000,
            },
        );
        s.save(dir.path(), Default::default()).unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap(), Some(s));
        StateFile::remove(dir.path()).unwrap();
        assert_eq!(StateFile::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn a_live_process_keeps_its_identity_and_a_made_up_one_has_none() {
        let me = Proc::of(std::process::id() as i32).unwrap();
        assert!(me.alive());
        let other = Proc {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.alive());
    }
}
