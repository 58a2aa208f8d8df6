//! The cgroup v2 backend.
//!
//! # Layout
//!
//! herder's own cgroup `C` (from /proc/self/cgroup) is taken as delegated to it —
//! as it is for a container or a systemd unit with `Delegate=yes`. If `C` is the
//! hierarchy's root, `C/herd` is used instead, so a host's root cgroup stays tidy.
//!
//! ```text
//! C/                  subtree_control: +memory +pids +cpu (those available)
//! ├── supervisor/     herder itself (the no-internal-processes rule keeps
//! │                   processes out of a cgroup that distributes controllers)
//! └── services/
//!     ├── db/         one per running service; created at spawn, removed once empty
//!     └── web/
//! ```
//!
//! A child joins its cgroup between fork and exec, so nothing of it ever runs
//! outside. `cgroup.kill` SIGKILLs the whole subtree atomically with respect to
//! forks; `cgroup.events` changes (`populated 0`) are watched with inotify.
//!
//! At start-up, cgroups under `services/` with processes in them are what an earlier
//! run left behind (it was SIGKILLed): they are killed and removed, and herder says
//! so. A `supervisor/` cgroup holding another live process means another herder uses
//! this subtree, and the backend is refused.
//!
//! # Caveats
//!
//! - Limits need the controllers in `C`'s `cgroup.controllers`; on hybrid hosts they
//!   are often bound to v1 hierarchies instead, and herder says which limits it cannot
//!   apply.
//! - `cgroup.kill` needs Linux 5.14; before it, every process is signalled through a
//!   pidfd, round after round until no new one appears.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Backend, Kind, Limits, Unit, dir_name, mounts, procs_below, read_trim, remove_tree};

const LIMIT_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug)]
pub struct Cgroup2 {
    /// The subtree's directory (`C` above).
    base: PathBuf,
    /// `base` as /proc/PID/cgroup names it.
    base_path: String,
    /// Controllers enabled for the services' cgroups.
    enabled: Vec<String>,
    notices: Vec<String>,
}

struct Place {
    base: PathBuf,
    base_path: String,
}

fn place() -> Result<Place, String> {
    let mount = mounts::cgroup2().ok_or("no cgroup2 mount in /proc/self/mountinfo")?;
    let own = mounts::own_v2().ok_or("this process is not in the cgroup2 hierarchy")?;
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
        return Err(format!(
            "no write access to {} (not root, and the subtree is not delegated)",
            parent.display()
        ));
    }
    Ok(Place { base, base_path })
}

/// For `herd doctor`: where units would go, or why not.
pub(crate) fn probe() -> Result<String, String> {
    let p = place()?;
    let available = if p.base.exists() {
        read_trim(&p.base.join("cgroup.controllers")).unwrap_or_default()
    } else {
        read_trim(
            &p.base
                .parent()
                .unwrap_or(&p.base)
                .join("cgroup.subtree_control"),
        )
        .unwrap_or_default()
    };
    let limits: Vec<&str> = LIMIT_CONTROLLERS
        .into_iter()
        .filter(|c| available.split(' ').any(|a| a == *c))
        .collect();
    Ok(format!(
        "services under {}/services; limit controllers: {}",
        p.base.display(),
        if limits.is_empty() {
            "none available".to_string()
        } else {
            limits.join(" ")
        }
    ))
}

impl Cgroup2 {
    pub fn open() -> Result<Cgroup2, String> {
        let Place { base, base_path } = place()?;
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
        let notices = clean_leftovers(&services);

        let mut enabled = Vec::new();
        let available = read_trim(&base.join("cgroup.controllers")).unwrap_or_default();
        for c in LIMIT_CONTROLLERS {
            if !available.split(' ').any(|a| a == c) {
                continue;
            }
            let on = format!("+{c}");
            let ok = fs::write(base.join("cgroup.subtree_control"), &on).is_ok()
                && fs::write(services.join("cgroup.subtree_control"), &on).is_ok();
            if ok {
                enabled.push(c.to_string());
            }
        }
        Ok(Cgroup2 {
            base,
            base_path,
            enabled,
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

/// Kills and removes what an earlier run left under `services`.
fn clean_leftovers(services: &Path) -> Vec<String> {
    let mut notices = Vec::new();
    let Ok(entries) = fs::read_dir(services) else {
        return notices;
    };
    for dir in entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
    {
        let pids = procs_below(&dir);
        if !pids.is_empty() {
            let _ = fs::write(dir.join("cgroup.kill"), "1");
            // Start-up, not a stop path: a short bounded wait for the kernel.
            let until = Instant::now() + Duration::from_secs(2);
            while populated(&dir) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            notices.push(format!(
                "killed {} process(es) left by an earlier run in {}",
                pids.len(),
                dir.display()
            ));
        }
        if let Err(e) = remove_tree(&dir) {
            notices.push(format!("cannot remove {}: {e}", dir.display()));
        }
    }
    notices
}

fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

impl Backend for Cgroup2 {
    fn kind(&self) -> Kind {
        Kind::Cgroup2
    }

    fn location(&self) -> Option<&Path> {
        Some(&self.base)
    }

    fn create(&self, name: &str, limits: &Limits) -> io::Result<Box<dyn Unit>> {
        let leaf = dir_name(name);
        let dir = self.base.join("services").join(&leaf);
        // A previous run's cgroup is removed once empty; one still here is empty
        // or the caller would not start a new run.
        remove_tree(&dir)?;
        fs::create_dir(&dir)?;
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
        for (file, value) in settings {
            fs::write(dir.join(file), &value)
                .map_err(|e| io::Error::new(e.kind(), format!("{file} = {value}: {e}")))?;
        }
        let procs: OwnedFd = OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))?
            .into();
        Ok(Box::new(Cgroup2Unit {
            path: format!("{}/services/{leaf}", self.base_path.trim_end_matches('/')),
            dir,
            procs: Arc::new(procs),
        }))
    }

    fn unsupported(&self, limits: &Limits) -> Vec<String> {
        let wanted = [
            ("memory", limits.memory.is_some()),
            ("pids", limits.pids.is_some()),
            ("cpu", limits.cpu.is_some()),
        ];
        wanted
            .into_iter()
            .filter(|(c, set)| *set && !self.enabled.iter().any(|e| e == c))
            .map(|(c, _)| {
                format!(
                    "limits.{c}: the {c} controller is not available in cgroup v2 at {}",
                    self.base.display()
                )
            })
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
struct Cgroup2Unit {
    dir: PathBuf,
    /// The cgroup as /proc/PID/cgroup names it.
    path: String,
    procs: Arc<OwnedFd>,
}

impl Unit for Cgroup2Unit {
    fn join(&self) -> Option<Arc<OwnedFd>> {
        Some(self.procs.clone())
    }

    fn started(&mut self, _pid: i32) {}

    fn events(&self) -> Option<PathBuf> {
        Some(self.dir.join("cgroup.events"))
    }

    fn pids(&mut self) -> Vec<i32> {
        procs_below(&self.dir)
    }

    fn is_empty(&mut self) -> bool {
        !populated(&self.dir)
    }

    fn owns(&mut self, pid: i32) -> bool {
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            return false;
        };
        text.lines()
            .filter_map(|l| l.strip_prefix("0::"))
            .any(|p| p == self.path || p.starts_with(&format!("{}/", self.path)))
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
