//! Spawning a service's process into a clean, known state.
//!
//! # How it works
//!
//! Everything the child needs is prepared in the parent: the program is resolved to an
//! absolute path (so a missing program or workdir is a clear error, not std's bare
//! `NotFound` for either), users and groups are looked up, the environment is built.
//! The fork itself is std's (`std::process::Command`, which reports exec failures back
//! through a close-on-exec pipe); between fork and exec the child only makes
//! async-signal-safe system calls, allocating nothing:
//!
//! 1. joining its containment (writing `0` to a cgroup's `cgroup.procs`, opened by
//!    the parent), so that even its first instruction runs contained;
//! 2. `setsid()`: its own session and process group, away from herder's terminal;
//! 3. every signal disposition back to default (an ignored signal would otherwise be
//!    inherited across exec) and an empty signal mask;
//! 4. descriptors the program is meant to have (`Spec::inherit`) lose close-on-exec;
//! 5. the rlimits;
//! 6. supplementary groups, gid, uid — last, so that rlimits above the current hard
//!    limit can still be set while the child is privileged.
//!
//! stdin is `/dev/null`; stdout and stderr are pipes whose read ends are returned, or
//! `/dev/null` too when the output is not wanted.
//!
//! # Caveats
//!
//! - The child is never waited for here: exactly one place reaps, [`crate::reap`].
//!   The returned pid stays valid (not recyclable) until that reaper collects it.
//! - std closes no inherited descriptors; herder opens its own with close-on-exec, as
//!   Rust does by default.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use rustix::fs::{Access, access};

use crate::pidfd::Pidfd;

/// What to run and how.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The command line; `argv[0]` is the program as written.
    pub argv: Vec<String>,
    /// The whole environment (nothing of herder's is inherited).
    pub env: Vec<(String, String)>,
    pub workdir: PathBuf,
    pub credentials: Option<Credentials>,
    pub rlimits: Vec<(Rlimit, u64)>,
    /// stdout and stderr to /dev/null instead of pipes (readiness commands).
    pub discard_output: bool,
    /// A `cgroup.procs` file, open for writing, that the child joins before exec.
    pub cgroup: Option<Arc<OwnedFd>>,
    /// Descriptors the program keeps across exec, at the same numbers (herder's
    /// event pipe); every other descriptor of herder's is close-on-exec.
    pub inherit: Vec<Arc<OwnedFd>>,
}

/// Who the child runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rlimit {
    Nofile,
    Nproc,
    Core,
}

impl Rlimit {
    fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Rlimit::Nofile => libc::RLIMIT_NOFILE,
            Rlimit::Nproc => libc::RLIMIT_NPROC,
            Rlimit::Core => libc::RLIMIT_CORE,
        }
    }
}

/// A started child. Its pid stays reserved until the reaper collects it.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pub pidfd: Pidfd,
    /// The read ends of its stdout and stderr, unless output is discarded.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("empty command")]
    Empty,
    #[error("program \"{program}\" not found in PATH ({path})")]
    NotInPath { program: String, path: String },
    #[error("program {}: {reason}", .program.display())]
    Program { program: PathBuf, reason: String },
    #[error("working directory {}: {reason}", .workdir.display())]
    Workdir { workdir: PathBuf, reason: String },
    #[error("cannot start {}: {source}", .program.display())]
    Start { program: PathBuf, source: io::Error },
}

/// The PATH used when the service's environment sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts `spec`. See the module docs for what the child gets.
pub fn spawn(spec: &Spec) -> Result<Child, SpawnError> {
    let argv0 = spec.argv.first().ok_or(SpawnError::Empty)?;
    check_workdir(&spec.workdir)?;
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = resolve(argv0, &spec.workdir, path_var)?;

    let mut cmd = Command::new(&program);
    cmd.arg0(argv0)
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.workdir)
        .stdin(Stdio::null());
    if spec.discard_output {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    }

    // Prepared here, moved into the closure: nothing is allocated after fork.
    let rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = spec
        .rlimits
        .iter()
        .map(|&(r, v)| {
            (
                r.resource(),
                libc::rlimit {
                    rlim_cur: v,
                    rlim_max: v,
                },
            )
        })
        .collect();
    let creds = spec.credentials.clone();
    let cgroup = spec.cgroup.as_ref().map(|fd| fd.as_raw_fd());
    let inherit: Vec<i32> = spec.inherit.iter().map(|fd| fd.as_raw_fd()).collect();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // "0" is the writer itself; before the credentials change, so the
            // kernel's permission check is the parent's.
            if let Some(fd) = cgroup
                && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
            {
                return Err(io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            reset_signals()?;
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (resource, limit) in &rlimits {
                if libc::setrlimit(*resource, limit) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(c) = &creds {
                if libc::setgroups(c.groups.len(), c.groups.as_ptr()) < 0
                    || libc::setgid(c.gid) < 0
                    || libc::setuid(c.uid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Start {
        program: program.clone(),
        source,
    })?;
    let pid = child.id() as i32;
    // The child cannot have been reaped yet (only the reaper reaps, and the caller
    // runs it), so the pid still names it, zombie or not.
    let pidfd = Pidfd::open(pid).map_err(|source| SpawnError::Start {
        program: program.clone(),
        source,
    })?;
    // std's Child neither kills nor waits on drop; take the pipes and let it go.
    let mut child = child;
    let stdout = child.stdout.take().map(Into::into);
    let stderr = child.stderr.take().map(Into::into);
    Ok(Child {
        pid,
        pidfd,
        stdout,
        stderr,
    })
}

/// Every catchable signal to its default disposition, and nothing blocked.
///
/// # Safety
/// Only for the child between fork and exec.
unsafe fn reset_signals() -> io::Result<()> {
    // The raw system call, because glibc's sigaction refuses its reserved real-time
    // signals (32, 33), and those can arrive ignored from whoever started herder. An
    // all-zero kernel `struct sigaction` is SIG_DFL with no flags and an empty mask.
    let dfl = [0u64; 4];
    // SAFETY: rt_sigaction reads `dfl`; sigprocmask reads `empty`; both are
    // async-signal-safe system calls on stack data.
    unsafe {
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0usize, 8usize);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn check_workdir(dir: &Path) -> Result<(), SpawnError> {
    let fail = |reason: String| SpawnError::Workdir {
        workdir: dir.to_path_buf(),
        reason,
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(fail("not a directory".into())),
        Err(e) => Err(fail(os_reason(&e))),
    }
}

/// The absolute path of the program: relative to `workdir` when it has a slash,
/// searched in `path_var` otherwise (as execvp would, but before the fork).
fn resolve(program: &str, workdir: &Path, path_var: &str) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let p = workdir.join(program);
        return match check_executable(&p) {
            Ok(()) => Ok(p),
            Err(reason) => Err(SpawnError::Program { program: p, reason }),
        };
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let p = workdir.join(dir).join(program);
        if check_executable(&p).is_ok() {
            return Ok(p);
        }
    }
    Err(SpawnError::NotInPath {
        program: program.to_string(),
        path: path_var.to_string(),
    })
}

fn check_executable(p: &Path) -> Result<(), String> {
    let m = std::fs::metadata(p).map_err(|e| os_reason(&e))?;
    if m.is_dir() {
        return Err("is a directory".into());
    }
    access(OsStr::from_bytes(p.as_os_str().as_bytes()), Access::EXEC_OK)
        .map_err(|_| "not executable".to_string())
}

/// The OS's reason without Rust's " (os error N)".
pub(crate) fn os_reason(e: &io::Error) -> String {
    let s = e.to_string();
    s.find(" (os error")
        .map_or(s.clone(), |i| s[..i].to_string())
}
