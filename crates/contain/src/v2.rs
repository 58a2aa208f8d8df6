//! The cgroup v2 backend.
//!
//! # Layout
//!
//! herder's own cgroup `C` (from /proc/self/cgroup) is taken as delegated to it —
//! as it is for a container or a systemd unit with `Delegate=yes`. If `C` is the
//! hierarchy's root, `C/herd` is used instead, so a host's root cgroup stays tidy.
//! Below it, each herder has its instance's directory (`supervisor.instance`,
//! else named after its project), so herders share a host without sharing a
//! subtree.
//!
//! ```text
//! C/ (or C/herd/)
//! └── shop-1f3a9c2e/      the instance; subtree_control: +memory +pids +cpu
//!     ├── supervisor/     herder itself (the no-internal-processes rule keeps
//!     │                   processes out of a cgroup that distributes controllers)
//!     └── services/
//!         ├── db/         one per running service; created at spawn, removed once empty
//!         └── web/
//! ```
//!
//! In the hierarchy's root, which that rule exempts, herder stays where it is
//! and there is no `supervisor/`: the move would cost its start and its exit a
//! kernel grace period each ([`crate::tree`]).
//!
//! A child joins its cgroup between fork and exec, so nothing of it ever runs
//! outside. `cgroup.kill` SIGKILLs the whole subtree atomically with respect to
//! forks; `cgroup.events` changes (`populated 0`) are watched with epoll (`POLLPRI`).
//!
//! At start-up, cgroups under `services/` with processes in them are what an earlier
//! run left behind (it was SIGKILLed): they are killed and removed, and herder says
//! so. A subtree another live herder has locked (or whose `supervisor/` holds
//! another live process) is that herder's, and the backend is refused.
//!
//! # Caveats
//!
//! - Limits need the controllers in `C`'s `cgroup.controllers`; on hybrid hosts they
//!   are often bound to v1 hierarchies instead, and are taken from there
//!   ([`crate::v1`]); herder says which limits it cannot apply at all.
//! - `cgroup.kill` needs Linux 5.14; before it, every process is signalled through a
//!   pidfd, round after round until no new one appears.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};

use crate::Place;
use crate::tree::{self, Subtree};
use crate::{
    Backend, Containment, Limits, Unit, Usage, mounts, procs_below, read_trim, remove_tree,
};

const LIMIT_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug)]
pub struct Cgroup2 {
    tree: Subtree,
    /// Units keep their directory and cgroup.procs open ([`Backend::hold_files`]).
    hold: AtomicBool,
    /// Controllers enabled for the services' cgroups.
    enabled: Vec<String>,
    notices: Vec<String>,
}

fn locate(place: Place) -> Result<Subtree, String> {
    tree::locate(
        mounts::cgroup2(),
        mounts::own_v2(),
        place,
        tree::Hierarchy::Unified,
    )
    .map_err(|e| format!("cgroup2: {e}"))
}

/// For `herd doctor`: where units would go, or why not.
pub(crate) fn probe(place: Place) -> Result<String, String> {
    let t = locate(place)?;
    tree::in_use(&t)?;
    // What the nearest cgroup that exists has is what herder can hand down to
    // its instance (enabling it on the way).
    let available = t
        .dir
        .ancestors()
        .find(|d| d.exists())
        .and_then(|d| read_trim(&d.join("cgroup.controllers")).ok())
        .unwrap_or_default();
    let (limits, missing): (Vec<&str>, Vec<&str>) = LIMIT_CONTROLLERS
        .into_iter()
        .partition(|c| available.split(' ').any(|a| a == *c));
    let mut text = format!(
        "services under {}/services; limit controllers: {}",
        t.dir.display(),
        if limits.is_empty() {
            "none available".to_string()
        } else {
            limits.join(" ")
        }
    );
    let v1 = crate::v1::probe(&missing, place);
    if !v1.is_empty() {
        text.push_str(&format!("; from cgroup v1: {}", v1.join(", ")));
    }
    Ok(text)
}

impl Cgroup2 {
    /// The limit controllers enabled for the services' cgroups.
    pub(crate) fn enabled(&self) -> impl Iterator<Item = &str> {
        self.enabled.iter().map(String::as_str)
    }

    pub fn open(place: Place) -> Result<Cgroup2, String> {
        let mut t = locate(place)?;
        let notices = tree::claim(&mut t, |dir| {
            match fs::write(dir.join("cgroup.kill"), "1") {
                // Before Linux 5.14: SIGKILL round after round, by pidfd, until
                // no new process shows up, as a unit's kill does.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    for _ in 0..64 {
                        let pids = procs_below(dir);
                        if pids.is_empty() {
                            break;
                        }
                        for pid in pids {
                            if let Ok(fd) = herd_sys::Pidfd::open(pid) {
                                fd.signal(libc::SIGKILL)?;
                            }
                        }
                    }
                    Ok(())
                }
                r => r,
            }
        })?;
        let services = t.dir.join("services");
        let mut enabled = Vec::new();
        // The instance's parent (`herd/`, or herder's own cgroup, which herder
        // has just left for `supervisor/`) hands the controllers down first.
        if t.instance
            && let Some(parent) = t.dir.parent()
        {
            let has = read_trim(&parent.join("cgroup.controllers")).unwrap_or_default();
            for c in LIMIT_CONTROLLERS
                .into_iter()
                .filter(|c| has.split(' ').any(|a| a == *c))
            {
                let _ = fs::write(parent.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        let available = read_trim(&t.dir.join("cgroup.controllers")).unwrap_or_default();
        for c in LIMIT_CONTROLLERS {
            if !available.split(' ').any(|a| a == c) {
                continue;
            }
            let on = format!("+{c}");
            let ok = fs::write(t.dir.join("cgroup.subtree_control"), &on).is_ok()
                && fs::write(services.join("cgroup.subtree_control"), &on).is_ok();
            if ok {
                enabled.push(c.to_string());
            }
        }
        Ok(Cgroup2 {
            tree: t,
            hold: AtomicBool::new(false),
            enabled,
            notices,
        })
    }
}

/// Whether `cgroup.events`, open for reading, says `populated 1`. Reading it also
/// re-arms its `POLLPRI`.
fn populated(events: &OwnedFd) -> bool {
    let mut buf = [0u8; 128];
    rustix::io::pread(events, &mut buf, 0)
        .is_ok_and(|n| buf[..n].split(|&b| b == b'\n').any(|l| l == b"populated 1"))
}

impl Backend for Cgroup2 {
    fn kind(&self) -> Containment {
        Containment::Cgroup2
    }

    fn location(&self) -> Option<&Path> {
        Some(&self.tree.dir)
    }

    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Unit>> {
        let on = |c: &str| self.enabled.iter().any(|e| e == c);
        let mut settings = Vec::new();
        if let (Some(m), true) = (limits.memory, on("memory")) {
            settings.push(("memory.max", m.to_string()));
        }
        if let (Some(p), true) = (limits.pids, on("pids")) {
            settings.push(("pids.max", p.to_string()));
        }
        if let (Some(c), true) = (limits.cpu, on("cpu")) {
            let period = 100_000u64;
            let quota = ((c * period as f64).round() as u64).max(1_000);
            settings.push(("cpu.max", format!("{quota} {period}")));
        }
        let leaf = tree::leaf(&self.tree, name, |dir| {
            for (file, value) in settings {
                fs::write(dir.join(file), &value)
                    .map_err(|e| io::Error::new(e.kind(), format!("{file} = {value}: {e}")))?;
            }
            Ok(())
        })?;
        let held = if self.hold.load(Ordering::Relaxed) {
            let dirfd = rustix::fs::open(
                &leaf.dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let procs = rustix::fs::openat(
                &dirfd,
                "cgroup.procs",
                OFlags::RDWR | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            Some(Held {
                dirfd,
                procs: Arc::new(procs),
            })
        } else {
            None
        };
        Ok(Box::new(Cgroup2Unit {
            dir: leaf.dir,
            path: leaf.path,
            held,
            events: None,
            no_memory_file: false,
        }))
    }

    fn descriptors_to_hold(&self) -> u64 {
        2
    }

    fn limit_controllers(&self) -> Vec<String> {
        self.enabled.clone()
    }

    fn hold_files(&self, hold: bool) {
        self.hold.store(hold, Ordering::Relaxed);
    }

    fn unsupported(&self, limits: &Limits) -> Vec<String> {
        tree::wanted(limits)
            .into_iter()
            .filter(|c| !self.enabled.iter().any(|e| e == c))
            .map(|c| {
                format!(
                    "limits.{c}: the {c} controller is not available in cgroup v2 at {}",
                    self.tree.dir.display()
                )
            })
            .collect()
    }

    fn notices(&self) -> Vec<String> {
        self.notices.clone()
    }

    fn begin_close(&self) {
        tree::begin_release(&self.tree);
    }

    fn close(&self) -> Vec<String> {
        tree::release(&self.tree, &self.enabled)
    }
}

#[derive(Debug)]
struct Cgroup2Unit {
    dir: PathBuf,
    /// The cgroup as /proc/PID/cgroup names it.
    path: String,
    /// Its files kept open, where the backend holds them.
    held: Option<Held>,
    /// Its cgroup.events, read-only, from the first emptiness check on: watched
    /// for POLLPRI, read for `populated`. Nothing else is open unless files are
    /// held, so a running service can cost herder no descriptor here (10,000
    /// services fit a limit of 20,000 with their output pipes).
    events: Option<OwnedFd>,
    /// `memory.current` was not there (the memory controller is not enabled
    /// here): usage does not look for it again.
    no_memory_file: bool,
}

/// A unit's files kept open ([`Backend::hold_files`]).
#[derive(Debug)]
struct Held {
    /// The cgroup's directory (O_PATH).
    dirfd: OwnedFd,
    /// Its cgroup.procs, read-write: the child joins through it, and `pids`
    /// reads it, with no path walk either way.
    procs: Arc<OwnedFd>,
}

/// The pids in a `cgroup.procs` opened for reading. A read from offset 0
/// restarts the kernel's walk of the cgroup, so one descriptor, kept, gives a
/// fresh list each time: for a service's few pids, one pread (see
/// [`READ_ENDS_LIST`]).
fn procs_from(file: &OwnedFd) -> io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    let mut buf = [0u8; PROCS_READ];
    let mut partial = 0i32;
    let mut offset = 0u64;
    loop {
        let n = rustix::io::pread(file, &mut buf, offset)?;
        offset += n as u64;
        // Lines may straddle reads: digits accumulate until their newline.
        for &b in &buf[..n] {
            match b {
                b'0'..=b'9' => partial = partial * 10 + i32::from(b - b'0'),
                b'\n' => pids.push(std::mem::take(&mut partial)),
                _ => {}
            }
        }
        if n <= READ_ENDS_LIST {
            return Ok(pids);
        }
    }
}

/// How much `procs_from` asks of each read: at most a page, whatever the
/// architecture's page size, for [`READ_ENDS_LIST`] to hold.
const PROCS_READ: usize = 4096;

/// A read of cgroup.procs this short ended at the end of the list. cgroup files
/// are seq_files, and a seq_file read goes on adding lines until the caller's
/// buffer is full, its own buffer (a page, or more once grown) cannot take the
/// next line, or the list ends (fs/seq_file.c, the same since Linux 2.6). A
/// line is at most 8 bytes (a pid below 2^22, and a newline), so a read that
/// stopped more than a line short of a page stopped at the end, and the second
/// read that would return 0 is not needed: `herd ps` reads every service's
/// cgroup, and this halves its reads. Longer reads go on to that 0.
const READ_ENDS_LIST: usize = PROCS_READ - 8;

/// Whether a cgroup has cgroups below it: kernfs keeps a directory's link
/// count at 2 + its subdirectories, so one stat tells.
fn has_children(st: rustix::io::Result<rustix::fs::Stat>) -> bool {
    st.map_or(true, |st| st.st_nlink > 2)
}

impl Cgroup2Unit {
    /// One of the cgroup's files, whole: through the directory's descriptor
    /// where it is held (no path walk).
    fn read(&self, file: &str) -> io::Result<String> {
        let fd = match &self.held {
            Some(h) => rustix::fs::openat(
                &h.dirfd,
                file,
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
            None => rustix::fs::open(
                self.dir.join(file),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?,
        };
        let mut text = String::new();
        io::Read::read_to_string(&mut fs::File::from(fd), &mut text)?;
        Ok(text)
    }

    /// cgroup.events, opened now if it was not.
    fn events_file(&mut self) -> io::Result<&OwnedFd> {
        if self.events.is_none() {
            self.events = Some(rustix::fs::open(
                self.dir.join("cgroup.events"),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        }
        Ok(self.events.as_ref().expect("just opened"))
    }
}

impl Unit for Cgroup2Unit {
    fn join(&self) -> io::Result<Vec<Arc<OwnedFd>>> {
        match &self.held {
            Some(h) => Ok(vec![h.procs.clone()]),
            None => tree::open_procs(&self.dir).map(|fd| vec![Arc::new(fd)]),
        }
    }

    fn started(&mut self, _pid: i32) {}

    fn location(&self) -> Option<PathBuf> {
        Some(self.dir.clone())
    }

    fn events(&self) -> Option<BorrowedFd<'_>> {
        self.events.as_ref().map(|f| f.as_fd())
    }

    /// CPU time from `cpu.stat` (there in every cgroup v2, with or without the
    /// cpu controller), which counts every process the cgroup ever held;
    /// memory from `memory.current` where the memory controller is enabled,
    /// else summed from /proc.
    fn usage(&mut self, pids: &[i32]) -> Usage {
        let cpu = self.read("cpu.stat").ok().and_then(|t| {
            let usec = t.lines().find_map(|l| l.strip_prefix("usage_usec "))?;
            usec.trim().parse().ok().map(Duration::from_micros)
        });
        let memory = match self.no_memory_file {
            true => None,
            false => match self.read("memory.current") {
                Ok(t) => t.trim().parse().ok(),
                Err(e) => {
                    self.no_memory_file = e.kind() == io::ErrorKind::NotFound;
                    None
                }
            },
        };
        let mut usage = Usage {
            cpu,
            memory,
            processes: pids.len(),
        };
        if cpu.is_none() || memory.is_none() {
            let summed = crate::procfs::usage(pids);
            usage.cpu = usage.cpu.or(summed.cpu);
            usage.memory = usage.memory.or(summed.memory);
        }
        usage
    }

    fn oom_kills(&mut self) -> Option<u64> {
        if self.no_memory_file {
            return None;
        }
        let text = self.read("memory.events").ok()?;
        crate::v1::oom_kill_count(&text)
    }

    fn signals(&mut self, signals: &[i32]) -> io::Result<usize> {
        crate::signal_listed(self, signals)
    }

    fn pids(&mut self) -> Vec<i32> {
        // `herd ps` asks this of every unit, so the common case is one read:
        // services rarely make cgroups of their own, and with none below,
        // cgroup.procs is the whole unit, with no walk of the directory. The
        // check comes second: with no cgroup below then, none held a process when
        // cgroup.procs was read (a cgroup is removed only once empty).
        let listed = match &self.held {
            Some(h) => procs_from(&h.procs).map(|p| (p, has_children(rustix::fs::fstat(&h.dirfd)))),
            None => rustix::fs::open(
                self.dir.join("cgroup.procs"),
                OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io::Error::from)
            .and_then(|f| procs_from(&f))
            .map(|p| (p, has_children(rustix::fs::stat(&self.dir)))),
        };
        match listed {
            Ok((pids, false)) => pids,
            _ => procs_below(&self.dir),
        }
    }

    fn is_empty(&mut self) -> bool {
        // Opened before it is read, and kept: a change after this read is
        // reported by a watch the descriptor is added to later.
        match self.events_file() {
            Ok(events) => !populated(events),
            Err(_) => self.pids().is_empty(),
        }
    }

    fn owns(&mut self, pid: i32) -> bool {
        tree::in_cgroup(pid, str::is_empty, &self.path)
    }

    fn kill(&mut self) -> io::Result<()> {
        match OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.kill"))
        {
            Ok(mut f) => f.write_all(b"1"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Before Linux 5.14: signal round after round until no new process
                // shows up (a forking process is caught in the next round).
                for _ in 0..64 {
                    if self.signal(libc::SIGKILL)? == 0 {
                        break;
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn remove(&mut self) -> io::Result<()> {
        remove_tree(&self.dir)
    }
}
