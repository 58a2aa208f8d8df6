//! The cgroup v1 freezer backend, for hybrid hosts where cgroup2 is not writable.
//!
//! Layout as for cgroup v2 (`C/supervisor` for herder, `C/services/NAME` per
//! service) in the freezer hierarchy found in /proc/self/mountinfo.
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
//! - No resource limits: the v1 memory and pids hierarchies are not managed.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Backend, Kind, Limits, Unit, dir_name, mounts, procs_below, read_trim, remove_tree};

/// How long one freeze may take before it is abandoned and retried.
const FREEZE_TIMEOUT: Duration = Duration::from_millis(100);
const FREEZE_ROUNDS: u32 = 4;

#[derive(Debug)]
pub struct Freezer {
    base: PathBuf,
    base_path: String,
    notices: Vec<String>,
}

fn place() -> Result<(PathBuf, String), String> {
    let mount = mounts::freezer().ok_or("no cgroup v1 freezer mount in /proc/self/mountinfo")?;
    let own = mounts::own_freezer().ok_or("this process is not in the freezer hierarchy")?;
    let dir = mounts::dir_of(&mount, &own).ok_or_else(|| {
        format!(
            "own cgroup {own} is outside the mount at {}",
            mount.point.display()
        )
    })?;
    let (base, base_path) = if own == "/" {
        (dir.join("herd"), "/herd".to_string())
    } else {
        (dir, own)
    };
    let parent = if base.exists() {
        base.clone()
    } else {
        base.parent().map_or(base.clone(), Path::to_path_buf)
    };
    if !mounts::writable(&parent) {
        return Err(format!("no write access to {}", parent.display()));
    }
    Ok((base, base_path))
}

pub(crate) fn probe() -> Result<String, String> {
    let (base, _) = place()?;
    Ok(format!("services under {}/services", base.display()))
}

impl Freezer {
    pub fn open() -> Result<Freezer, String> {
        let (base, base_path) = place()?;
        let err = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
        fs::create_dir_all(&base).map_err(|e| err("cannot create", &base, e))?;
        let supervisor = base.join("supervisor");
        let me = std::process::id() as i32;
        if let Some(other) = procs_below(&supervisor).into_iter().find(|&p| p != me) {
            return Err(format!(
                "{} is in use by another supervisor (pid {other})",
                base.display()
            ));
        }
        make_dir(&supervisor).map_err(|e| err("cannot create", &supervisor, e))?;
        fs::write(supervisor.join("cgroup.procs"), "0")
            .map_err(|e| err("cannot move into", &supervisor, e))?;
        let services = base.join("services");
        make_dir(&services).map_err(|e| err("cannot create", &services, e))?;
        let mut notices = Vec::new();
        if let Ok(entries) = fs::read_dir(&services) {
            for dir in entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
            {
                let left = procs_below(&dir);
                if !left.is_empty() {
                    let _ = freeze_kill(&dir);
                    let until = Instant::now() + Duration::from_secs(2);
                    while !procs_below(&dir).is_empty() && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    notices.push(format!(
                        "killed {} process(es) left by an earlier run in {}",
                        left.len(),
                        dir.display()
                    ));
                }
                if let Err(e) = remove_tree(&dir) {
                    notices.push(format!("cannot remove {}: {e}", dir.display()));
                }
            }
        }
        Ok(Freezer {
            base,
            base_path,
            notices,
        })
    }
}

fn make_dir(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
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
    for pid in procs_below(dir) {
        if frozen {
            // Frozen processes cannot exit, so `pid` still names the one listed.
            let _ = herd_sys::Pidfd::open(pid).and_then(|p| p.signal(libc::SIGKILL));
        } else if let Ok(p) = herd_sys::Pidfd::open(pid) {
            // Not frozen: the pidfd is opened first and the pid checked to still be
            // in this cgroup, so the signal cannot reach a recycled pid.
            if in_cgroup_dir(dir, pid) {
                let _ = p.signal(libc::SIGKILL);
            }
        }
    }
    if frozen {
        set_state(dir, "THAWED")?;
    }
    Ok(())
}

fn in_cgroup_dir(dir: &Path, pid: i32) -> bool {
    procs_below(dir).contains(&pid)
}

impl Backend for Freezer {
    fn kind(&self) -> Kind {
        Kind::Freezer
    }

    fn location(&self) -> Option<&Path> {
        Some(&self.base)
    }

    fn create(&self, name: &str, _limits: &Limits) -> io::Result<Box<dyn Unit>> {
        let leaf = dir_name(name);
        let dir = self.base.join("services").join(&leaf);
        remove_tree(&dir)?;
        fs::create_dir(&dir)?;
        let procs: OwnedFd = OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?
            .into();
        Ok(Box::new(FreezerUnit {
            path: format!("{}/services/{leaf}", self.base_path.trim_end_matches('/')),
            dir,
            procs: Arc::new(procs),
        }))
    }

    fn unsupported(&self, limits: &Limits) -> Vec<String> {
        [
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
            ("cpu", limits.cpu.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(c, _)| format!("limits.{c}: the freezer backend applies no resource limits"))
        .collect()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn close(&self) {
        let _ = remove_tree(&self.base.join("services"));
    }
}

#[derive(Debug)]
struct FreezerUnit {
    dir: PathBuf,
    path: String,
    procs: Arc<OwnedFd>,
}

impl Unit for FreezerUnit {
    fn join(&self) -> Option<Arc<OwnedFd>> {
        Some(self.procs.clone())
    }

    fn started(&mut self, _pid: i32) {}

    fn events(&self) -> Option<PathBuf> {
        None
    }

    fn pids(&mut self) -> Vec<i32> {
        procs_below(&self.dir)
    }

    fn owns(&mut self, pid: i32) -> bool {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ':');
                let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
                ctl.split(',').any(|c| c == "freezer").then_some(path)
            })
            .any(|p| p == self.path || p.starts_with(&format!("{}/", self.path)))
    }

    fn kill(&mut self) -> io::Result<()> {
        freeze_kill(&self.dir)
    }

    fn remove(&mut self) -> io::Result<()> {
        remove_tree(&self.dir)
    }
}
