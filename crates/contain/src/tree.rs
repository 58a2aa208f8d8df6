//! What the two cgroup backends share: where their subtree goes, claiming it at
//! start-up, and a service's leaf.
//!
//! # Where herder itself goes
//!
//! herder leaves its own cgroup for `supervisor/` only where the cgroup v2
//! no-internal-processes rule makes it: a cgroup below the root that hands
//! controllers down to its children holds no process. In a v1 hierarchy (no
//! such rule) and in the v2 root (exempt from it), herder stays where it is.
//! Each move costs an RCU grace period (5-10 ms here), at start and again at
//! exit, which as a PID 1 is its whole shutdown's tail.
//!
//! An instance is claimed with `flock` on its directory, held until herder
//! exits (the kernel drops it with the process, a SIGKILLed one too), so a
//! second herder of the same instance is refused wherever the first one sits.

use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};

use crate::mounts::{self, Mount};
use crate::{Limits, Place, dir_name, procs_below, remove_tree};

/// A backend's subtree: `supervisor/` for herder, `services/NAME/` per service.
#[derive(Debug)]
pub(crate) struct Subtree {
    pub dir: PathBuf,
    /// `dir` as /proc/PID/cgroup names it.
    pub path: String,
    /// The cgroup this process was in before it moved to `supervisor/`.
    pub origin: PathBuf,
    /// Whether herder made `herd/` below the hierarchy's root for its subtree
    /// (`dir` is `herd/` itself, or an instance below it).
    pub made: bool,
    /// `dir` is an instance's own directory (`herd/NAME/`, or `NAME/` in
    /// herder's own cgroup), made by herder and removed at its exit.
    pub instance: bool,
    /// herder stays in `origin` instead of moving to `supervisor/`: a v1
    /// hierarchy, or the v2 root.
    pub stays: bool,
    /// `dir`, open and locked from [`claim`] on: this instance is taken.
    pub lock: Option<OwnedFd>,
    /// The move back to `origin`, begun before the exit ([`begin_release`]).
    pub leaving: Mutex<Option<JoinHandle<io::Result<()>>>>,
}

/// herder's own cgroup in `mount`, or `herd/` below it when herder sits at the
/// root; with an `instance`, that instance's directory below either, so that
/// any number of herders share a hierarchy, each in a subtree of its own. An
/// embedder's [`Place::Own`] subtree is always a directory of its own below
/// its cgroup, at the root too.
pub(crate) fn locate(
    mount: Option<Mount>,
    own: Option<String>,
    place: Place,
    hierarchy: Hierarchy,
) -> Result<Subtree, String> {
    let mount = mount.ok_or("no such mount in /proc/self/mountinfo")?;
    let own = own.ok_or("this process is not in that hierarchy")?;
    if mount.read_only {
        return Err(format!(
            "the cgroup mount at {} is read-only",
            mount.point.display()
        ));
    }
    let dir = mounts::dir_of(&mount, &own).ok_or_else(|| {
        format!(
            "own cgroup {own} is outside the mount at {}",
            mount.point.display()
        )
    })?;
    let origin = dir.clone();
    let at_root = own == "/";
    let below = |dir: &Path, name: &str| {
        (
            dir.join(name),
            format!("{}/{name}", own.trim_end_matches('/')),
        )
    };
    let (dir, path, made, instance) = match place {
        // At the root the name is made below it, like `herd/`; elsewhere it
        // is an instance's directory in the caller's cgroup.
        Place::Own(name) => {
            let (dir, path) = below(&dir, name);
            (dir, path, at_root, !at_root)
        }
        Place::Herder(instance) => {
            let (mut dir, mut path) = if at_root {
                below(&dir, "herd")
            } else {
                (dir, own.clone())
            };
            if let Some(i) = instance {
                dir = dir.join(i);
                path = format!("{}/{i}", path.trim_end_matches('/'));
            }
            (dir, path, at_root, instance.is_some())
        }
    };
    // The nearest directory that exists is where herder must be able to write.
    let parent = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(&dir)
        .to_path_buf();
    if !mounts::writable(&parent) {
        return Err(format!(
            "no write access to {} (not root, and the subtree is not delegated)",
            parent.display()
        ));
    }
    let stays = match hierarchy {
        Hierarchy::V1 => true,
        // Only the real root lacks `cgroup.type`: a cgroup namespace's root (a
        // container's cgroup) has it, and the rule applies there.
        Hierarchy::Unified => !origin.join("cgroup.type").exists(),
    };
    Ok(Subtree {
        dir,
        path,
        origin,
        made,
        instance,
        stays,
        lock: None,
        leaving: Mutex::new(None),
    })
}

/// Which kind of hierarchy a subtree is in: whether the no-internal-processes
/// rule holds there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    Unified,
    V1,
}

/// When a shutdown begins: moves this process back where it came from (if it
/// moved), on a thread of its own. A cgroup migration waits for an RCU grace
/// period (5-10 ms here), and begun now it passes while the services stop
/// instead of after them, which is what a PID 1's exit waits on. Only when
/// herder made `herd/`: then `origin` holds none of the controllers herder
/// enabled and can take the process back at once (otherwise [`release`] first
/// disables them, once the services are gone).
pub(crate) fn begin_release(t: &Subtree) {
    if t.stays || !t.made || left_to_the_runtime(t) {
        return;
    }
    let mut leaving = t.leaving.lock().unwrap_or_else(|e| e.into_inner());
    if leaving.is_some() {
        return;
    }
    let procs = t.origin.join("cgroup.procs");
    // Writing "0" moves the writer's whole process, whichever thread writes it. If
    // no thread can be made, `release` moves it as before.
    *leaving = std::thread::Builder::new()
        .name("herd-release".into())
        .spawn(move || fs::write(procs, "0"))
        .ok();
}

/// Whether `supervisor/` and `herd/` are left for the container runtime: herder is
/// PID 1 in a cgroup namespace of its own, and made `herd/` at that namespace's
/// root, the container's cgroup. The container ends with herder's exit and its
/// runtime removes the container's cgroup with everything below it (runc, crun and
/// systemd all remove sub-cgroups first), while moving herder back out would cost
/// its exit an RCU grace period (5-10 ms) for cgroups about to go anyway. The
/// services' cgroups are still removed one by one, since each was checked empty.
fn left_to_the_runtime(t: &Subtree) -> bool {
    /// The initial cgroup namespace's inode number (PROC_CGROUP_INIT_INO).
    const INITIAL_CGROUP_NS: u64 = 0xEFFF_FFFB;
    t.made
        && std::process::id() == 1
        && fs::metadata("/proc/self/ns/cgroup")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) != INITIAL_CGROUP_NS)
}

/// At exit: removes the services' cgroups, moves this process back where it came
/// from if it had moved (or waits for [`begin_release`] to have done so) and
/// removes `supervisor/`, the instance's directory and `herd/` if herder made
/// them, so nothing named after herder is left; as a container's PID 1, the
/// last ones are the runtime's (`left_to_the_runtime`).
/// `controllers` were enabled in `dir` and are disabled first, since a cgroup that
/// distributes controllers cannot take a process back.
pub(crate) fn release(t: &Subtree, controllers: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let services = t.dir.join("services");
    if let Err(e) = remove_tree(&services) {
        problems.push(format!("cannot remove {}: {e}", services.display()));
    }
    if !t.made {
        // A cgroup that hands controllers down takes no process: off again
        // from here up to the cgroup herder goes back to (another instance
        // still using them there keeps them on, and herder then stays put).
        for dir in t.dir.ancestors().take_while(|d| d.starts_with(&t.origin)) {
            for c in controllers {
                let _ = fs::write(dir.join("cgroup.subtree_control"), format!("-{c}"));
            }
        }
    }
    if left_to_the_runtime(t) {
        return problems;
    }
    let mut gone = Vec::new();
    if !t.stays {
        if let Err(problem) = move_back(t) {
            problems.push(problem);
            return problems;
        }
        gone.push(t.dir.join("supervisor"));
    }
    if t.made || t.instance {
        gone.push(t.dir.clone());
    }
    for d in gone {
        if let Err(e) = fs::remove_dir(&d) {
            problems.push(format!("cannot remove {}: {e}", d.display()));
        }
    }
    // `herd/` goes with its last instance; another herder's keeps it.
    if t.made
        && t.instance
        && let Some(base) = t.dir.parent()
    {
        let _ = fs::remove_dir(base);
    }
    problems
}

/// Moves this process back to `origin` from `supervisor/`, or waits for
/// [`begin_release`] to have done so.
fn move_back(t: &Subtree) -> Result<(), String> {
    let early = t
        .leaving
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("the move panicked")))
        });
    let moved = early.unwrap_or_else(|| fs::write(t.origin.join("cgroup.procs"), "0"));
    moved.map_err(|e| {
        format!(
            "cannot move back to {}: {e}; leaving {} in place",
            t.origin.display(),
            t.dir.join("supervisor").display()
        )
    })
}

/// Creates the subtree, locks it and moves this process into `supervisor/`
/// where it must leave its own cgroup; refuses a subtree another live
/// supervisor uses (another herder of the same instance). Cgroups with
/// processes that an earlier run left in `services/` are killed with `kill`
/// and removed; what was done, and any process that outlived it, is returned
/// for the operator.
pub(crate) fn claim(
    t: &mut Subtree,
    kill: impl Fn(&Path) -> io::Result<()>,
) -> Result<Vec<String>, String> {
    let err = |what: &str, p: &Path, e: io::Error| format!("{what} {}: {e}", p.display());
    fs::create_dir_all(&t.dir).map_err(|e| err("cannot create", &t.dir, e))?;
    let mut notices = Vec::new();
    t.lock = match lock(&t.dir)? {
        Ok(fd) => Some(fd),
        // Used unlocked, as by a herder that predates the lock, and said.
        Err(e) => {
            notices.push(format!(
                "cannot lock {} ({e}): a second herder given this instance would not be refused",
                t.dir.display()
            ));
            None
        }
    };
    let supervisor = t.dir.join("supervisor");
    in_use(t)?;
    if t.stays {
        // An empty one is an earlier herder's that moved (one from before
        // herder stayed put here) and was SIGKILLed: `in_use` found no one in it.
        let _ = fs::remove_dir(&supervisor);
    } else {
        make_dir(&supervisor).map_err(|e| err("cannot create", &supervisor, e))?;
        fs::write(supervisor.join("cgroup.procs"), "0")
            .map_err(|e| err("cannot move into", &supervisor, e))?;
    }
    let services = t.dir.join("services");
    make_dir(&services).map_err(|e| err("cannot create", &services, e))?;

    let Ok(entries) = fs::read_dir(&services) else {
        return Ok(notices);
    };
    for dir in entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
    {
        let left = procs_below(&dir);
        if !left.is_empty() {
            if let Err(e) = kill(&dir) {
                notices.push(format!("cannot kill in {}: {e}", dir.display()));
            }
            let still = wait_gone(&dir, STALE_KILL_WAIT);
            notices.push(if still.is_empty() {
                format!(
                    "killed {} process(es) left by an earlier run in {}",
                    left.len(),
                    dir.display()
                )
            } else {
                format!(
                    "processes left by an earlier run in {} are still there {} s after SIGKILL: pids {still:?}",
                    dir.display(),
                    STALE_KILL_WAIT.as_secs()
                )
            });
        }
        if let Err(e) = remove_tree(&dir) {
            notices.push(format!("cannot remove {}: {e}", dir.display()));
        }
    }
    Ok(notices)
}

/// Refuses a subtree another herder of the same instance holds: one that
/// locked it ([`lock`]; not checked once this process holds the lock), or
/// a live process other than this one in its `supervisor/`. The lock is only
/// looked for in /proc/locks, not taken: `herd doctor` asks this, and a
/// `herd up` starting at that instant must not find it taken by the doctor.
pub(crate) fn in_use(t: &Subtree) -> Result<(), String> {
    if t.lock.is_none()
        && let Ok(fd) = rustix::fs::open(
            &t.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        && let Some(by) = flock_on(&fd)
    {
        return Err(taken(&t.dir, by));
    }
    let me = std::process::id() as i32;
    match procs_below(&t.dir.join("supervisor"))
        .into_iter()
        .find(|&p| p != me)
    {
        Some(other) => Err(taken(&t.dir, Some(other))),
        None => Ok(()),
    }
}

fn taken(dir: &Path, by: Option<i32>) -> String {
    match by {
        Some(pid) => format!(
            "{} is in use by another supervisor (pid {pid})",
            dir.display()
        ),
        None => format!("{} is in use by another supervisor", dir.display()),
    }
}

/// `dir`, open and locked (`flock`, exclusive) for this process: the kernel
/// drops the lock with the last descriptor, so a SIGKILLed herder holds
/// nothing. Refused while another open file holds it, naming its process
/// where /proc/locks does. The inner error is a directory that cannot be
/// locked at all (no known kernel refuses it on cgroupfs).
fn lock(dir: &Path) -> Result<Result<OwnedFd, rustix::io::Errno>, String> {
    use rustix::fs::FlockOperation;
    let fd = rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
    match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Ok(fd)),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(taken(dir, flock_on(&fd).flatten())),
        Err(e) => Ok(Err(e)),
    }
}

/// The flock /proc/locks lists on `fd`'s file (`1: FLOCK  ADVISORY WRITE 4242
/// 00:26:6558141 0 EOF`: major and minor in hex, then the inode), if any, with
/// its holder's pid; a holder outside this pid namespace shows as 0, and is
/// not named.
fn flock_on(fd: &OwnedFd) -> Option<Option<i32>> {
    let st = rustix::fs::fstat(fd).ok()?;
    let id = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(st.st_dev),
        rustix::fs::minor(st.st_dev),
        st.st_ino
    );
    fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str()))
        .map(|f| {
            f.get(4)
                .and_then(|p| p.parse().ok())
                .filter(|&pid: &i32| pid > 0)
        })
}

/// How long start-up waits for an earlier run's killed processes to exit.
const STALE_KILL_WAIT: Duration = Duration::from_secs(2);

/// Waits, at most `limit`, until no process is left in `dir` or below, woken by
/// their pidfds (readable once a process has exited) rather than by polling; the
/// pids still there at the limit. The list is read again after each exit, so a
/// process forked meanwhile is waited for too, and a recycled pid whose pidfd
/// names a stranger is dropped once it no longer shows in the cgroup.
fn wait_gone(dir: &Path, limit: Duration) -> Vec<i32> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let until = Instant::now() + limit;
    loop {
        let left = procs_below(dir);
        // A pid that cannot be opened has already exited.
        let fds: Vec<herd_sys::Pidfd> = left
            .iter()
            .filter_map(|&p| herd_sys::Pidfd::open(p).ok())
            .collect();
        let now = Instant::now();
        if fds.is_empty() {
            return Vec::new();
        }
        if now >= until {
            return left;
        }
        let mut polls: Vec<PollFd> = fds.iter().map(|f| PollFd::new(f, PollFlags::IN)).collect();
        let rest = Timespec::try_from(until - now).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        // EINTR and the rest: the next round reads the list again.
        let _ = poll(&mut polls, Some(&rest));
    }
}

fn make_dir(p: &Path) -> io::Result<()> {
    match fs::create_dir(p) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// A service's leaf, fresh.
pub(crate) struct Leaf {
    pub dir: PathBuf,
    pub path: String,
}

/// Makes `services/NAME`; `setup` writes limits before anything joins.
pub(crate) fn leaf(
    t: &Subtree,
    name: &str,
    setup: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<Leaf> {
    let leaf = dir_name(name);
    let dir = t.dir.join("services").join(&leaf);
    match fs::create_dir(&dir) {
        // A previous run's cgroup is removed once empty; one still here is empty,
        // or the caller would not start a new run.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            remove_tree(&dir)?;
            fs::create_dir(&dir)?;
        }
        made => made?,
    }
    setup(&dir)?;
    Ok(Leaf {
        path: format!("{}/services/{leaf}", t.path.trim_end_matches('/')),
        dir,
    })
}

/// The `cgroup.procs` of `dir`, open for a child to join (write-only).
pub(crate) fn open_procs(dir: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        dir.join("cgroup.procs"),
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Whether /proc/PID/cgroup puts `pid` in `path` or below, in the hierarchy whose
/// controller list satisfies `hierarchy`.
pub(crate) fn in_cgroup(pid: i32, hierarchy: impl Fn(&str) -> bool, path: &str) -> bool {
    // Asked once per process signalled. The file is one seq_file record, which a
    // read with room for all of it returns whole (fs/seq_file.c): one read into a
    // page, not read_to_string's statx and growing reads; longer files read on.
    let Ok(mut f) = fs::File::open(format!("/proc/{pid}/cgroup")) else {
        return false;
    };
    let mut page = [0u8; 4096];
    let mut long = Vec::new();
    let bytes = match f.read(&mut page) {
        Ok(n) if n < page.len() => &page[..n],
        Ok(n) => {
            long.extend_from_slice(&page[..n]);
            if f.read_to_end(&mut long).is_err() {
                return false;
            }
            &long[..]
        }
        Err(_) => return false,
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let below = format!("{path}/");
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, p) = (it.next()?, it.next()?, it.next()?);
            hierarchy(ctl).then_some(p)
        })
        .any(|p| p == path || p.starts_with(&below))
}

/// The cgroup limits `limits` sets, by controller name.
pub(crate) fn wanted(limits: &Limits) -> Vec<&'static str> {
    [
        ("memory", limits.memory.is_some()),
        ("pids", limits.pids.is_some()),
        ("cpu", limits.cpu.is_some()),
    ]
    .into_iter()
    .filter(|(_, set)| *set)
    .map(|(c, _)| c)
    .collect()
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::process::{Child, Command};

    use rustix::fs::{AtFlags, CWD, Mode, OFlags, mkdirat, openat, unlinkat};

    use super::*;

    /// A chain of cgroups nested under a test-owned one, and a process in the
    /// deepest; all removed when dropped, whatever the test did.
    struct Deep {
        /// The mount's directory, then one per level (the last is the deepest).
        dirs: Vec<OwnedFd>,
        names: Vec<String>,
        child: Option<Child>,
    }

    impl Drop for Deep {
        fn drop(&mut self) {
            if let Some(c) = &mut self.child {
                let _ = c.kill();
                let _ = c.wait();
            }
            for (i, name) in self.names.iter().enumerate().rev() {
                let _ = unlinkat(&self.dirs[i], name.as_str(), AtFlags::REMOVEDIR);
            }
        }
    }

    fn open_dir(at: &OwnedFd, name: &str) -> OwnedFd {
        openat(
            at,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    /// /proc/PID/cgroup longer than the page `in_cgroup` reads first. The kernel
    /// cuts a cgroup's path at PATH_MAX, so the v2 path is made just short of that,
    /// and the v1 lines (on a hybrid host) do the rest. The path is reached level
    /// by level through directory fds: as one path it would be too long to open.
    #[test]
    fn in_cgroup_reads_a_file_longer_than_a_page() {
        let Some(mount) = crate::mounts::cgroup2().filter(|m| crate::mounts::writable(&m.point))
        else {
            eprintln!("skipped: no writable cgroup2 mount");
            return;
        };
        let top = openat(
            CWD,
            &mount.point,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let mut deep = Deep {
            dirs: vec![top],
            names: Vec::new(),
            child: None,
        };
        // The file is the other hierarchies' lines, "0::", the path and "\n".
        let others: usize = fs::read_to_string("/proc/self/cgroup")
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("0::"))
            .map(|l| l.len() + 1)
            .sum();
        let root = mount.root.trim_end_matches('/').to_string();
        let want = (4100 - others.min(4100) - 4).min(4094);
        let mut names = vec![format!("hb-test-incg-{}", std::process::id())];
        let rest = want - root.len() - 1 - names[0].len();
        let levels = (rest - 2) / 201;
        names.extend(std::iter::repeat_n("d".repeat(200), levels));
        names.push("e".repeat(rest - levels * 201 - 1));
        for name in names {
            let parent = deep.dirs.last().unwrap();
            mkdirat(parent, name.as_str(), Mode::from_raw_mode(0o755)).unwrap();
            // Named before it is opened, so that Drop removes it either way.
            deep.names.push(name);
            let fd = open_dir(parent, deep.names.last().unwrap());
            deep.dirs.push(fd);
        }
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = child.id() as i32;
        deep.child = Some(child);
        let procs = openat(
            deep.dirs.last().unwrap(),
            "cgroup.procs",
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        rustix::io::write(&procs, pid.to_string().as_bytes()).unwrap();

        let path = format!("{root}/{}", deep.names.join("/"));
        assert_eq!(path.len(), want);
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(text.len() > 4096, "the file is only {} bytes", text.len());
        assert!(
            text.lines()
                .any(|l| l.strip_prefix("0::") == Some(path.as_str()))
        );
        assert!(in_cgroup(pid, str::is_empty, &path));
        let top = format!("{root}/{}", deep.names[0]);
        assert!(in_cgroup(pid, str::is_empty, &top), "below {top}");
        assert!(!in_cgroup(pid, str::is_empty, &format!("{path}x")));
        assert!(!in_cgroup(pid, str::is_empty, &format!("{top}/elsewhere")));
        assert!(!in_cgroup(pid, |c| c == "freezer", &path));
    }
}
