//! cgroup v1 controllers beside a backend: limits and usage on hybrid hosts.
//!
//! On a hybrid host the cgroup2 hierarchy is mounted but its controllers are
//! bound to the v1 hierarchies (`herd doctor`: `limit controllers: none
//! available`), and the freezer backend has no controllers of its own. Where a
//! controller the backend lacks has a writable v1 hierarchy, herder makes the
//! same subtree there (`services/NAME` per run, as systemd does on such hosts;
//! herder itself stays in its own cgroup, as v1 has no no-internal-processes
//! rule) and each run's processes join it before exec
//! beside their containment ([`herd_sys::Spec::cgroups`]):
//!
//! | controller | limit | usage |
//! |---|---|---|
//! | `memory` | `memory.limit_in_bytes` | `memory.usage_in_bytes` |
//! | `pids` | `pids.max` | |
//! | `cpu` | `cpu.cfs_quota_us` / `cpu.cfs_period_us` | |
//! | `cpuacct` | | `cpuacct.usage`, where it shares `cpu`'s hierarchy (freezer backend only: cgroup v2 counts CPU time in `cpu.stat`) |
//!
//! A run gets a leaf in a hierarchy only where its `limits` need one (a cgroup
//! per service per hierarchy would cost every start and stop); one in a
//! hierarchy shared by `cpu` and `cpuacct` serves both. Usage is read from the
//! leaves there are, and summed from /proc for the rest. These hierarchies
//! contain nothing: finding, signalling and killing stay the backend's. A leaf
//! is removed with its unit, once empty.
//!
//! # Caveats
//!
//! - A hierarchy that is missing, or not writable (a container's read-only
//!   mount), is left out; a limit that needs it is then named as not applied,
//!   as before.
//! - Start-up clean-up removes what a killed herder left in these subtrees once
//!   the backend's own clean-up has killed its processes.

use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::Place;
use crate::tree::{self, Subtree};
use crate::{Backend, Containment, Limits, Unit, Usage, mounts, procs_below, read_trim};

/// The controllers herder can use from v1, in the order they are joined.
const CONTROLLERS: [&str; 4] = ["memory", "pids", "cpu", "cpuacct"];

/// One v1 hierarchy herder uses for `controller`.
#[derive(Debug)]
struct Hierarchy {
    controller: &'static str,
    tree: Subtree,
}

fn locate(controller: &str, place: Place) -> Result<Subtree, String> {
    tree::locate(
        mounts::v1(controller),
        mounts::own_v1(controller),
        place,
        tree::Hierarchy::V1,
    )
}

/// For `herd doctor`: where each of `controllers` would come from in v1 (those
/// with a writable hierarchy), as `memory (…/services)`.
pub(crate) fn probe(controllers: &[&str], place: Place) -> Vec<String> {
    controllers
        .iter()
        .filter_map(|c| {
            let t = locate(c, place).ok()?;
            Some(format!("{c} at {}/services", t.dir.display()))
        })
        .collect()
}

/// A backend with the v1 controllers it lacks.
#[derive(Debug)]
pub(crate) struct WithV1 {
    inner: Box<dyn Backend>,
    v1: Vec<Hierarchy>,
    notices: Vec<String>,
}

/// `inner`, with every controller of [`CONTROLLERS`] but those of `skip`
/// (what it has itself, what no unit will use) taken from v1 where a writable
/// hierarchy has it; `inner` alone when none is.
pub(crate) fn with_v1(inner: Box<dyn Backend>, has: &[String], place: Place) -> Box<dyn Backend> {
    let mut v1: Vec<Hierarchy> = Vec::new();
    let mut notices = Vec::new();
    for controller in CONTROLLERS
        .into_iter()
        .filter(|c| !has.iter().any(|h| h == c))
    {
        let Ok(mut t) = locate(controller, place) else {
            continue;
        };
        // cpu and cpuacct are often mounted together: one subtree serves both.
        if v1.iter().any(|h| h.tree.dir == t.dir) {
            v1.push(Hierarchy {
                controller,
                tree: locate(controller, place).expect("located just now"),
            });
            continue;
        }
        match tree::claim(&mut t, kill_listed) {
            Ok(n) => notices.extend(n),
            Err(e) => {
                notices.push(format!("{controller} (cgroup v1) not used: {e}"));
                continue;
            }
        }
        v1.push(Hierarchy {
            controller,
            tree: t,
        });
    }
    if v1.is_empty() {
        return inner;
    }
    Box::new(WithV1 { inner, v1, notices })
}

/// What a killed herder left in a v1 subtree: the backend's clean-up has
/// killed it already; anything still listed is signalled through a pidfd.
fn kill_listed(dir: &Path) -> io::Result<()> {
    for pid in procs_below(dir) {
        if let Ok(fd) = herd_sys::Pidfd::open(pid) {
            fd.signal(libc::SIGKILL)?;
        }
    }
    Ok(())
}

impl WithV1 {
    fn has(&self, controller: &str) -> bool {
        self.v1.iter().any(|h| h.controller == controller)
    }
}

impl Backend for WithV1 {
    fn kind(&self) -> Containment {
        self.inner.kind()
    }

    fn location(&self) -> Option<&Path> {
        self.inner.location()
    }

    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Unit>> {
        let inner = self.inner.create(name, limits)?;
        let mut unit = V1Unit {
            inner,
            leaves: Vec::new(),
        };
        for h in &self.v1 {
            // A shared cpu,cpuacct hierarchy has one leaf.
            if unit.leaves.iter().any(|(_, d)| d.starts_with(&h.tree.dir)) {
                unit.leaves.push((h.controller, unit.leaf_of(&h.tree.dir)));
                continue;
            }
            let settings = settings(h.controller, limits);
            // Only where a limit needs it: every leaf is one more cgroup to
            // make at start and remove once empty, which a stop of a thousand
            // services pays for (0.21 s became 0.34 s with three each).
            if settings.is_empty() {
                continue;
            }
            let leaf = tree::leaf(&h.tree, name, |dir| {
                for (file, value) in &settings {
                    fs::write(dir.join(file), value)
                        .map_err(|e| io::Error::new(e.kind(), format!("{file} = {value}: {e}")))?;
                }
                Ok(())
            });
            match leaf {
                Ok(leaf) => unit.leaves.push((h.controller, leaf.dir)),
                Err(e) => {
                    let _ = unit.remove();
                    return Err(e);
                }
            }
        }
        Ok(Box::new(unit))
    }

    fn unsupported(&self, limits: &Limits) -> Vec<String> {
        self.inner
            .unsupported(limits)
            .into_iter()
            .filter(|m| {
                !tree::wanted(limits)
                    .into_iter()
                    .any(|c| self.has(c) && m.starts_with(&format!("limits.{c}:")))
            })
            .collect()
    }

    fn limit_controllers(&self) -> Vec<String> {
        let mut out = self.inner.limit_controllers();
        for h in &self.v1 {
            if ["memory", "pids", "cpu"].contains(&h.controller) {
                out.push(format!("{} (cgroup v1)", h.controller));
            }
        }
        out
    }

    fn descriptors_per_unit(&self) -> u64 {
        self.inner.descriptors_per_unit()
    }

    fn descriptors_to_hold(&self) -> u64 {
        self.inner.descriptors_to_hold()
    }

    fn hold_files(&self, hold: bool) {
        self.inner.hold_files(hold);
    }

    fn strays(&self) -> Vec<i32> {
        self.inner.strays()
    }

    fn notices(&self) -> Vec<String> {
        let mut out = self.inner.notices();
        out.extend(self.notices.iter().cloned());
        out
    }

    fn begin_batch(&self) {
        self.inner.begin_batch();
    }

    fn refresh(&self) {
        self.inner.refresh();
    }

    fn end_batch(&self) {
        self.inner.end_batch();
    }

    fn begin_close(&self) {
        self.inner.begin_close();
        let mut done: Vec<&Path> = Vec::new();
        for h in &self.v1 {
            if !done.contains(&h.tree.dir.as_path()) {
                tree::begin_release(&h.tree);
                done.push(&h.tree.dir);
            }
        }
    }

    fn close(&self) -> Vec<String> {
        let mut problems = self.inner.close();
        let mut done: Vec<&Path> = Vec::new();
        for h in &self.v1 {
            if !done.contains(&h.tree.dir.as_path()) {
                problems.extend(tree::release(&h.tree, &[]));
                done.push(&h.tree.dir);
            }
        }
        problems
    }
}

/// The files a leaf of `controller` gets before anything joins it.
fn settings(controller: &str, limits: &Limits) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match controller {
        "memory" => {
            if let Some(m) = limits.memory {
                out.push(("memory.limit_in_bytes", m.to_string()));
            }
        }
        "pids" => {
            if let Some(p) = limits.pids {
                out.push(("pids.max", p.to_string()));
            }
        }
        "cpu" => {
            if let Some(c) = limits.cpu {
                let period = 100_000u64;
                let quota = ((c * period as f64).round() as u64).max(1_000);
                out.push(("cpu.cfs_period_us", period.to_string()));
                out.push(("cpu.cfs_quota_us", quota.to_string()));
            }
        }
        _ => {}
    }
    out
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events` (v2).
pub(crate) fn oom_kill_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// A unit and its leaves in the v1 hierarchies.
#[derive(Debug)]
struct V1Unit {
    inner: Box<dyn Unit>,
    /// (controller, leaf directory).
    leaves: Vec<(&'static str, PathBuf)>,
}

impl V1Unit {
    /// The leaf already made under `hierarchy` (cpu and cpuacct together).
    fn leaf_of(&self, hierarchy: &Path) -> PathBuf {
        self.leaves
            .iter()
            .find(|(_, d)| d.starts_with(hierarchy))
            .map(|(_, d)| d.clone())
            .expect("a leaf under it")
    }

    fn leaf(&self, controller: &str) -> Option<&Path> {
        self.leaves
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }
}

impl Unit for V1Unit {
    fn join(&self) -> io::Result<Vec<Arc<OwnedFd>>> {
        let mut fds = self.inner.join()?;
        let mut dirs: Vec<&Path> = Vec::new();
        for (_, dir) in &self.leaves {
            if !dirs.contains(&dir.as_path()) {
                fds.push(Arc::new(tree::open_procs(dir)?));
                dirs.push(dir);
            }
        }
        Ok(fds)
    }

    fn started(&mut self, pid: i32) {
        self.inner.started(pid);
    }

    fn set_invocation(&mut self, invocation: &str) {
        self.inner.set_invocation(invocation);
    }

    fn events(&self) -> Option<BorrowedFd<'_>> {
        self.inner.events()
    }

    fn location(&self) -> Option<PathBuf> {
        self.inner.location()
    }

    fn pids(&mut self) -> Vec<i32> {
        self.inner.pids()
    }

    /// The backend's, with memory from `memory.usage_in_bytes` and CPU time
    /// from `cpuacct.usage` where the run has leaves there.
    fn usage(&mut self, pids: &[i32]) -> Usage {
        let mut usage = self.inner.usage(pids);
        let read = |c: &str, file: &str| -> Option<u64> {
            read_trim(&self.leaf(c)?.join(file)).ok()?.parse().ok()
        };
        if let Some(m) = read("memory", "memory.usage_in_bytes") {
            usage.memory = Some(m);
        }
        if let Some(ns) = read("cpuacct", "cpuacct.usage") {
            usage.cpu = Some(Duration::from_nanos(ns));
        }
        usage
    }

    fn oom_kills(&mut self) -> Option<u64> {
        let v1 = self
            .leaf("memory")
            .and_then(|d| fs::read_to_string(d.join("memory.oom_control")).ok())
            .and_then(|t| oom_kill_count(&t));
        v1.or_else(|| self.inner.oom_kills())
    }

    fn is_empty(&mut self) -> bool {
        self.inner.is_empty()
    }

    fn owns(&mut self, pid: i32) -> bool {
        self.inner.owns(pid)
    }

    fn signal(&mut self, signal: i32) -> io::Result<usize> {
        self.inner.signal(signal)
    }

    fn signals(&mut self, signals: &[i32]) -> io::Result<usize> {
        self.inner.signals(signals)
    }

    fn kill(&mut self) -> io::Result<()> {
        self.inner.kill()
    }

    fn pidfd(&mut self, pid: i32) -> Option<herd_sys::Pidfd> {
        self.inner.pidfd(pid)
    }

    fn remove(&mut self) -> io::Result<()> {
        self.inner.remove()?;
        for (_, dir) in &self.leaves {
            crate::remove_tree(dir)?;
        }
        Ok(())
    }
}
