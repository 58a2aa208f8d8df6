//! The cgroup v1 freezer backend, for hybrid hosts where cgroup2 is not writable.
//!
//! Layout as for cgroup v2 (`C/services/NAME` per service) in the freezer
//! hierarchy found in /proc/self/mountinfo; herder stays in `C` itself, as v1
//! has no no-internal-processes rule.
//!
//! # Kill
//!
//! A process can fork between the moment its pid is read and the moment it is
//! killed, and a pid read from `cgroup.procs` can be recycled before the signal
//! lands. Freezing first closes both windows:
//!
//! 1. write `FROZEN` to `freezer.state` and wait until it reads `FROZEN`. The freezer
//!    gives no event for this, so this one wait polls, in 1 ms steps;
//! 2. if the freeze does not complete in time (a task in the middle of something
//!    the freezer must wait for, or the freezer racing the OOM killer), thaw, back
//!    off exponentially and try again;
//! 3. SIGKILL every pid in `cgroup.procs`: frozen processes can neither exit nor
//!    fork, so the list is exact and no pid is stale;
//! 4. thaw: the signals are delivered and everything exits.
//!
//! If freezing never completes, the last round signals without it.
//!
//! # Caveats
//!
//! - The kernel gives no emptiness event for v1 cgroups: the caller learns of exits
//!   through SIGCHLD (herder is the subreaper, so the last process of a service to
//!   exit is always a child of herder's or of another process of the service).
//! - Limits and usage are not the freezer's: they come from the v1 memory,
//!   pids, cpu and cpuacct hierarchies beside it ([`crate::v1`]).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Place;
use crate::tree::{self, Hierarchy, Subtree};
use crate::{Backend, Containment, Limits, Unit, mounts, procs_below, read_trim, remove_tree};

/// How long one freeze may take before it is abandoned and retried.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(100);
const FREEZE_ROUNDS: u32 = 4;

#[derive(Debug)]
pub struct Freezer {
    tree: Subtree,
    notices: Vec<String>,
}

fn locate(place: Place) -> Result<Subtree, String> {
    tree::locate(
        mounts::v1("freezer"),
        mounts::own_v1("freezer"),
        place,
        Hierarchy::V1,
    )
    .map_err(|e| format!("freezer: {e}"))
}

pub(crate) fn probe(place: Place) -> Result<String, String> {
    let t = locate(place)?;
    tree::in_use(&t)?;
    let v1 = crate::v1::probe(&["memory", "pids", "cpu", "cpuacct"], place);
    Ok(match v1.is_empty() {
        true => format!("services under {}/services", t.dir.display()),
        false => format!(
            "services under {}/services; limits and usage from cgroup v1: {}",
            t.dir.display(),
            v1.join(", ")
        ),
    })
}

impl Freezer {
    pub fn open(place: Place) -> Result<Freezer, String> {
        let mut t = locate(place)?;
        let notices = tree::claim(&mut t, freeze_kill)?;
        Ok(Freezer { tree: t, notices })
    }
}

fn set_state(dir: &Path, state: &str) -> io::Result<()> {
    fs::write(dir.join("freezer.state"), state)
}

/// Freezes `dir`; false if it did not reach FROZEN within the timeout (then thawed).
fn freeze(dir: &Path) -> io::Result<bool> {
    set_state(dir, "FROZEN")?;
    let until = Instant::now() + FREEZE_TIMEOUT;
    loop {
        if read_trim(&dir.join("freezer.state"))? == "FROZEN" {
            return Ok(true);
        }
        if Instant::now() >= until {
            set_state(dir, "THAWED")?;
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One kill: freeze (retried with backoff), SIGKILL each, thaw.
fn freeze_kill(dir: &Path) -> io::Result<()> {
    let mut backoff = Duration::from_millis(1);
    let mut frozen = false;
    for _ in 0..FREEZE_ROUNDS {
        if freeze(dir)? {
            frozen = true;
            break;
        }
        std::thread::sleep(backoff);
        backoff *= 4;
    }
    let listed = procs_below(dir);
    let fds: Vec<(i32, herd_sys::Pidfd)> = listed
        .iter()
        .filter_map(|&p| herd_sys::Pidfd::open(p).ok().map(|fd| (p, fd)))
        .collect();
    // Frozen processes cannot exit, so the list still names them. Unfrozen, a pid is
    // signalled only if it is still listed after its pidfd was opened: the pidfd
    // then names this cgroup's process, not a recycled pid.
    let current: HashSet<i32> = if frozen {
        listed.into_iter().collect()
    } else {
        procs_below(dir).into_iter().collect()
    };
    let mut failed = None;
    for (pid, fd) in fds {
        if current.contains(&pid)
            && let Err(e) = fd.signal(libc::SIGKILL)
        {
            failed = Some(e);
        }
    }
    if frozen {
        set_state(dir, "THAWED")?;
    }
    failed.map_or(Ok(()), Err)
}

impl Backend for Freezer {
    fn kind(&self) -> Containment {
        Containment::Freezer
    }

    fn location(&self) -> Option<&Path> {
        Some(&self.tree.dir)
    }

    fn create(&self, name: &str, _limits: &Limits) -> io::Result<Box<dyn Unit>> {
        let leaf = tree::leaf(&self.tree, name, |_| Ok(()))?;
        Ok(Box::new(FreezerUnit {
            dir: leaf.dir,
            path: leaf.path,
        }))
    }

    fn unsupported(&self, limits: &Limits) -> Vec<String> {
        tree::wanted(limits)
            .into_iter()
            .map(|c| format!("limits.{c}: the freezer backend applies no resource limits"))
            .collect()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn begin_close(&self) {
        tree::begin_release(&self.tree);
    }

    fn close(&self) -> Vec<String> {
        tree::release(&self.tree, &[])
    }
}

#[derive(Debug)]
struct FreezerUnit {
    dir: PathBuf,
    path: String,
}

impl Unit for FreezerUnit {
    fn join(&self) -> io::Result<Vec<Arc<OwnedFd>>> {
        tree::open_procs(&self.dir).map(|fd| vec![Arc::new(fd)])
    }

    fn started(&mut self, _pid: i32) {}

    fn location(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn events(&self) -> Option<BorrowedFd<'_>> {
        None
    }

    fn signals(&mut self, signals: &[i32]) -> io::Result<usize> {
        crate::signal_listed(self, signals)
    }

    fn pids(&mut self) -> Vec<i32> {
        procs_below(&self.dir)
    }

    fn owns(&mut self, pid: i32) -> bool {
        tree::in_cgroup(pid, |c| c.split(',').any(|x| x == "freezer"), &self.path)
    }

    fn kill(&mut self) -> io::Result<()> {
        freeze_kill(&self.dir)
    }

    fn remove(&mut self) -> io::Result<()> {
        remove_tree(&self.dir)
    }
}
