//! Spawning a service's process into a clean, known state.
//!
//! # How it works
//!
//! Everything the child needs is prepared in the parent: the program is resolved to an
//! absolute path (so a missing program or workdir is a clear error, not a bare
//! `NotFound` for either), users and groups are looked up, argv and the environment
//! are built as C strings, the stdout/stderr pipes are made.
//!
//! The child is made with `clone(CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD)`,
//! much as `posix_spawn` does: it runs on a stack of its own in herder's memory,
//! herder's spawning thread is suspended until it execs, and the pidfd arrives with
//! the pid.
//! A plain fork would copy herder's page tables and make every page copy-on-write,
//! which herder then pays for in faults: with 500 services that was most of the
//! ~0.5 ms herder spent per start. Because the memory is shared, the child allocates
//! nothing, takes no lock and uses raw system calls where the C library keeps
//! process-wide state; it reports a failure by storing the errno where the parent
//! reads it, then exits. In order, it:
//!
//! 1. joins its containment (writing `0` to a cgroup's `cgroup.procs`, opened by
//!    the parent), so that even its first instruction runs contained;
//! 2. `setsid()`: its own session and process group, away from herder's terminal;
//! 3. every signal disposition back to default (an ignored signal would otherwise be
//!    inherited across exec); herder blocks every signal around the clone, so none
//!    of its handlers can run in the child first;
//! 4. its own descriptor table: it shares herder's until here (`CLONE_FILES`), then
//!    keeps a private copy of only a few low numbers (see `Slots`), so the start
//!    costs the same whether herder holds ten descriptors or ten thousand; stdin,
//!    stdout and stderr, then `Spec::inherit` as 3, 4, …, and nothing else;
//!    the working directory;
//! 5. the rlimits;
//! 6. supplementary groups, gid, uid — last, so that rlimits above the current hard
//!    limit can still be set while the child is privileged;
//! 7. an empty signal mask, and exec.
//!
//! stdin is `/dev/null`; stdout and stderr are pipes whose read ends are returned, or
//! `/dev/null` too when the output is not wanted.
//!
//! # Caveats
//!
//! - A started child is never waited for here: exactly one place reaps,
//!   [`reap`](mod@crate::reap). The returned pid stays valid (not recyclable) until
//!   that reaper collects it. Only a child that failed before exec is reaped here,
//!   since it never became the service.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rustix::fs::{Access, Mode, OFlags, access};
use rustix::pipe::{PipeFlags, pipe_with as pipe};

use crate::pidfd::Pidfd;

/// What to run and how.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// The command line; `argv[0]` is the program as written.
    pub argv: Vec<String>,
    /// The whole environment (nothing of herder's is inherited).
    pub env: Vec<(String, String)>,
    /// Where it runs; empty (the default) for the caller's working directory
    /// at the spawn.
    pub workdir: PathBuf,
    pub credentials: Option<Credentials>,
    pub rlimits: Vec<(Rlimit, u64)>,
    /// stdout and stderr to /dev/null instead of pipes (readiness commands).
    pub discard_output: bool,
    /// stderr into the stdout pipe (`2>&1`), as systemd's journal takes both:
    /// one descriptor a child in the parent instead of two, and the two
    /// streams' lines in the order they were written.
    pub merge_output: bool,
    /// `cgroup.procs` files, open for writing, that the child joins before
    /// exec, in this order: its containment's, then those of cgroup v1
    /// hierarchies that account for it and limit it. At most [`MAX_CGROUPS`].
    pub cgroups: Vec<Arc<OwnedFd>>,
    /// Descriptors the program is given as 3, 4, … in this order
    /// ([`FIRST_INHERITED_FD`]; herder's event pipe); at most [`MAX_INHERIT`]. No
    /// other descriptor of herder's reaches it.
    pub inherit: Vec<Arc<OwnedFd>>,
    /// Environment variables whose value is the child's own pid, written by the
    /// child before exec (sd_notify's `WATCHDOG_PID`, socket activation's
    /// `LISTEN_PID`): a program checks them against `getpid()`. They replace any
    /// variable of the same name in `env`.
    pub pid_env: Vec<String>,
}

impl Spec {
    /// `argv` as a shell would run it from here: with the caller's
    /// environment, in its working directory, output to pipes.
    pub fn command<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Spec {
        Spec {
            argv: argv.into_iter().map(Into::into).collect(),
            env: std::env::vars().collect(),
            ..Spec::default()
        }
    }
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
    /// The read ends of its stdout and stderr, unless output is discarded;
    /// with `merge_output`, `stdout` has both.
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

impl SpawnError {
    /// The spawn failed for want of a resource that may be there on the next try
    /// (descriptors, processes, memory), not because of the command.
    pub fn is_transient(&self) -> bool {
        matches!(self, SpawnError::Start { source, .. } if is_transient(source))
    }
}

/// Whether `e` is a shortage that may pass: `EMFILE`, `ENFILE`, `EAGAIN`, `ENOMEM`.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// The PATH used when the service's environment sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Starts `spec`. See the module docs for what the child gets.
pub fn spawn(spec: &Spec) -> Result<Child, SpawnError> {
    let argv0 = spec.argv.first().ok_or(SpawnError::Empty)?;
    // An empty workdir is the caller's own, as for `std::process::Command`.
    let here;
    let spec = if spec.workdir.as_os_str().is_empty() {
        here = Spec {
            workdir: std::env::current_dir().map_err(|e| SpawnError::Workdir {
                workdir: ".".into(),
                reason: e.to_string(),
            })?,
            ..spec.clone()
        };
        &here
    } else {
        spec
    };
    check_workdir(&spec.workdir)?;
    let path_var = spec
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = resolve(argv0, &spec.workdir, path_var)?;
    let fail = |source: io::Error| SpawnError::Start {
        program: program.clone(),
        source,
    };

    // Everything the child reads is built here: it must not allocate.
    let mut exec = ExecStrings::new(spec, &program).map_err(fail)?;
    // The pid variables are reached through raw pointers only from here on: the
    // child writes them, `envp` reads them.
    let pid_vars: Vec<(PidVar, *const libc::c_char)> = exec
        .pid_env
        .iter_mut()
        .map(|buf| {
            let start = buf.as_mut_ptr();
            let name = buf.len() - PID_ROOM;
            // SAFETY: `name` is within the buffer, which outlives the spawn.
            let at = unsafe { start.add(name) };
            (PidVar { at }, start.cast_const().cast())
        })
        .collect();
    let (c_program, c_argv, c_env, c_workdir) =
        (&exec.program, &exec.argv, &exec.env, &exec.workdir);
    let argv = null_terminated(c_argv);
    let mut envp = null_terminated(c_env);
    envp.pop();
    envp.extend(pid_vars.iter().map(|(_, p)| *p));
    envp.push(std::ptr::null());
    let pid_vars: Vec<PidVar> = pid_vars.into_iter().map(|(v, _)| v).collect();

    let null = dev_null().map_err(fail)?;
    let (stdout, stderr, out_w, err_w) = if spec.discard_output {
        (None, None, None, None)
    } else {
        let (out_r, out_w) = pipe(PipeFlags::CLOEXEC).map_err(|e| fail(e.into()))?;
        if spec.merge_output {
            (Some(out_r), None, Some(out_w), None)
        } else {
            let (err_r, err_w) = pipe(PipeFlags::CLOEXEC).map_err(|e| fail(e.into()))?;
            (Some(out_r), Some(err_r), Some(out_w), Some(err_w))
        }
    };
    if spec.inherit.len() > MAX_INHERIT {
        let e = io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many inherited descriptors",
        );
        return Err(fail(e));
    }
    let rlimits = rlimits(spec);
    if spec.cgroups.len() > MAX_CGROUPS {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "too many cgroups to join");
        return Err(fail(e));
    }
    let cgroups: Vec<i32> = spec.cgroups.iter().map(|fd| fd.as_raw_fd()).collect();
    // What the child gets, in order: stdin, stdout, stderr, then `inherit`.
    let sources: Vec<BorrowedFd> = [
        null.as_fd(),
        out_w.as_ref().map_or(null.as_fd(), |f| f.as_fd()),
        err_w
            .as_ref()
            .or(out_w.as_ref())
            .map_or(null.as_fd(), |f| f.as_fd()),
    ]
    .into_iter()
    .chain(spec.inherit.iter().map(|fd| fd.as_fd()))
    .collect();
    let slots = Slots::lock(sources.len(), null).map_err(fail)?;
    let placed = slots.place(&sources, null).map_err(fail)?.to_vec();
    let args = ChildArgs {
        program: c_program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        workdir: c_workdir.as_ptr(),
        cgroups: &cgroups,
        keep_below: slots.end(),
        stdio: [placed[0], placed[1], placed[2]],
        inherit: &placed[3..],
        rlimits: &rlimits,
        credentials: spec.credentials.as_ref(),
        pid_vars: &pid_vars,
        error: AtomicI32::new(0),
    };
    let cloned = clone_vfork(&args);
    // The slots let go of the pipes, so that the child's exit is their EOF.
    slots.clear(null);
    drop(slots);
    let (pid, pidfd) = cloned.map_err(fail)?;
    let errno = args.error.load(Ordering::Acquire);
    if errno != 0 {
        // The child reported why it could not exec, then exited; it was never
        // the service, so it is reaped here rather than by the reaper.
        let mut status = 0;
        // SAFETY: waits for our own child, which has exited or is exiting.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(fail(io::Error::from_raw_os_error(errno)));
    }
    Ok(Child {
        pid,
        pidfd: Pidfd::from_owned(pidfd, pid),
        stdout,
        stderr,
    })
}

/// The exec's strings, as C strings, built before the clone.
struct ExecStrings {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    /// `NAME=` and room for a pid and its NUL, one per [`Spec::pid_env`]; the
    /// child writes its pid into them (see [`PidVar`]).
    pid_env: Vec<Vec<u8>>,
    workdir: CString,
}

/// Room for the decimal digits of any pid (at most 2^22) and a NUL.
const PID_ROOM: usize = 12;

/// Where the child writes its pid: the byte after a `NAME=` of
/// [`ExecStrings::pid_env`], which `envp` also points into.
#[derive(Clone, Copy)]
struct PidVar {
    at: *mut u8,
}

impl ExecStrings {
    fn new(spec: &Spec, program: &Path) -> io::Result<ExecStrings> {
        Ok(ExecStrings {
            program: cstring(program.as_os_str().as_bytes())?,
            argv: spec
                .argv
                .iter()
                .map(|a| cstring(a.as_bytes()))
                .collect::<io::Result<Vec<_>>>()?,
            env: spec
                .env
                .iter()
                .filter(|(k, _)| !spec.pid_env.contains(k))
                .map(|(k, v)| cstring(format!("{k}={v}").as_bytes()))
                .collect::<io::Result<Vec<_>>>()?,
            pid_env: spec
                .pid_env
                .iter()
                .map(|k| {
                    let mut buf = cstring(format!("{k}=").as_bytes())?.into_bytes();
                    buf.resize(buf.len() + PID_ROOM, 0);
                    Ok(buf)
                })
                .collect::<io::Result<Vec<_>>>()?,
            workdir: cstring(spec.workdir.as_os_str().as_bytes())?,
        })
    }
}

/// The spec's rlimits as `setrlimit` takes them (soft and hard alike); without
/// its own `nofile`, the soft descriptor limit herder was started with (see
/// [`raise_nofile`]).
fn rlimits(spec: &Spec) -> Vec<(libc::__rlimit_resource_t, libc::rlimit)> {
    let mut out: Vec<_> = spec
        .rlimits
        .iter()
        .map(|&(r, v)| {
            let limit = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            (r.resource(), limit)
        })
        .collect();
    if !spec.rlimits.iter().any(|(r, _)| *r == Rlimit::Nofile)
        && let Some(&(soft, hard)) = STARTED_NOFILE.get()
    {
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        out.push((libc::RLIMIT_NOFILE, limit));
    }
    out
}

/// The descriptor limits (soft, hard) this process had before [`raise_nofile`].
static STARTED_NOFILE: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit, and the hard
/// limit itself to `want` where it is lower and the kernel lets this process
/// (root, `CAP_SYS_RESOURCE`; never above `fs.nr_open`), as a supervisor holding
/// many services and connections needs. Every child spawned afterwards gets the
/// limits herder was started with back (unless its spec sets `Nofile`), as
/// systemd does, since `select(2)` users break above 1024.
pub fn raise_nofile(want: u64) -> io::Result<Nofile> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let (soft, hard) = (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    );
    let _ = STARTED_NOFILE.set((soft, hard));
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let wanted = want.min(ceiling);
    if hard < wanted {
        let higher = Rlimit {
            current: Some(wanted),
            maximum: Some(wanted),
        };
        // Refused without the privilege: the hard limit as it is will do.
        if setrlimit(Resource::Nofile, higher).is_ok() {
            return Ok(Nofile {
                was: soft,
                now: wanted,
            });
        }
    }
    if soft < hard {
        let raised = Rlimit {
            current: now.maximum,
            maximum: now.maximum,
        };
        setrlimit(Resource::Nofile, raised)?;
    }
    Ok(Nofile {
        was: soft,
        now: hard,
    })
}

/// This process's descriptor limit before and after [`raise_nofile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nofile {
    /// The soft limit herder was started with, which its children get.
    pub was: u64,
    /// The soft limit now.
    pub now: u64,
}

/// What the child reads between clone and exec; all of it prepared by the parent.
struct ChildArgs<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    workdir: *const libc::c_char,
    cgroups: &'a [i32],
    /// The child's own descriptor table keeps only descriptors below this.
    keep_below: i32,
    /// The slots holding what becomes 0, 1 and 2, and 3, 4, … (`inherit`).
    stdio: [i32; 3],
    inherit: &'a [i32],
    rlimits: &'a [(libc::__rlimit_resource_t, libc::rlimit)],
    credentials: Option<&'a Credentials>,
    /// Where the child writes its own pid.
    pid_vars: &'a [PidVar],
    /// The errno of the step that failed, written by the child before it exits.
    error: AtomicI32,
}

/// The most cgroups a child joins ([`Spec::cgroups`]).
pub const MAX_CGROUPS: usize = 8;

/// The most descriptors a program can be given besides stdin, stdout and stderr.
pub const MAX_INHERIT: usize = 16;

/// The number the program finds the first of `Spec::inherit` at; the others follow.
pub const FIRST_INHERITED_FD: i32 = 3;

/// Descriptor numbers reserved low in herder's table, holding /dev/null while no
/// spawn uses them.
///
/// # Why
/// The child shares herder's descriptor table (`CLONE_FILES`) and then takes a
/// private copy of only the numbers below the highest slot
/// (`close_range(.., CLOSE_RANGE_UNSHARE)`), so what it must keep is first
/// duplicated into the slots. Without this, every child copied herder's whole table
/// and exec then closed each descriptor one by one: with 500 services (~3,000
/// descriptors) that was most of the CPU time of a start, growing with every
/// service. Slots stay occupied, so no other thread's open can take their numbers.
struct Slots {
    guard: MutexGuard<'static, Vec<i32>>,
}

impl Slots {
    /// At least `n` slots, for this thread alone until dropped.
    fn lock(n: usize, null: &OwnedFd) -> io::Result<Slots> {
        static SLOTS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
        let mut guard = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
        // Reserved together the first time, while herder's table is small, so
        // they are low: the child's copy is as short as the highest slot.
        let want = n.max(3 + 4);
        while guard.len() < want {
            let fd = rustix::io::fcntl_dupfd_cloexec(null, 3)?;
            guard.push(fd.into_raw_fd());
        }
        Ok(Slots { guard })
    }

    /// Duplicates `sources` into the slots, in order; returns the slots used.
    fn place<'s>(&'s self, sources: &[BorrowedFd], null: &OwnedFd) -> io::Result<&'s [i32]> {
        let used = &self.guard[..sources.len()];
        for (&slot, src) in used.iter().zip(sources) {
            // SAFETY: `slot` is ours (reserved above, never closed) and `src` is
            // open; dup3 atomically replaces what the slot held.
            if unsafe { libc::dup3(src.as_raw_fd(), slot, libc::O_CLOEXEC) } < 0 {
                let e = io::Error::last_os_error();
                self.clear(null);
                return Err(e);
            }
        }
        Ok(used)
    }

    /// Every slot back to /dev/null.
    fn clear(&self, null: &OwnedFd) {
        for &slot in self.guard.iter() {
            // SAFETY: as in `place`.
            unsafe { libc::dup3(null.as_raw_fd(), slot, libc::O_CLOEXEC) };
        }
    }

    /// One past the highest slot.
    fn end(&self) -> i32 {
        self.guard.iter().max().map_or(3, |m| m + 1)
    }
}

const CHILD_STACK: usize = 64 * 1024;

/// clone(CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_PIDFD): the child borrows
/// herder's memory and descriptor table until it execs, so nothing is copied (a
/// fork of a process holding thousands of descriptors and pages costs ~0.5 ms of
/// page-table copying and copy-on-write faults, paid by herder on every start),
/// and the pidfd comes with the pid.
///
/// Returns once the child has exec'd or exited.
fn clone_vfork(args: &ChildArgs) -> io::Result<(i32, OwnedFd)> {
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its 16-byte aligned top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    let mut pidfd: libc::c_int = -1;
    let flags =
        libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: `all`/`old` are plain sigsets; every signal is blocked across the
    // clone so that none runs one of herder's handlers on the child's stack before
    // the child has reset them, and the mask is restored right after. The child
    // gets `args` (alive until clone returns: the parent is suspended until the
    // child execs or exits) and a stack of its own; it only reads prepared data
    // and makes system calls (see `child_main`).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top as *mut libc::c_void,
            flags,
            args as *const ChildArgs as *mut libc::c_void,
            &mut pidfd as *mut libc::c_int,
        );
        // Read before anything else can change errno (the child shares it, but
        // when clone failed there is no child).
        let err = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        drop(stack);
        if pid < 0 {
            return Err(err);
        }
        Ok((pid, OwnedFd::from_raw_fd(pidfd)))
    }
}

/// The child between clone and exec. It shares herder's memory (herder's thread is
/// suspended meanwhile), so it allocates nothing, takes no lock, and calls no C
/// library function that keeps process-wide state: raw system calls where the
/// C library would (setuid and friends signal every thread of the process that
/// owns the memory).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `clone_vfork` passed, alive until exec.
    let args = unsafe { &*(arg as *const ChildArgs) };
    // SAFETY: we are that child.
    let errno = unsafe { child_setup(args) };
    args.error.store(errno.max(1), Ordering::Release);
    // SAFETY: ends the child without running anything of herder's.
    unsafe { libc::_exit(127) }
}

/// Sets the child up and execs; returns only on failure, with the errno.
///
/// # Safety
/// Only in the child made by `clone_vfork`.
unsafe fn child_setup(a: &ChildArgs) -> i32 {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: system calls on descriptors and data the parent prepared.
    unsafe {
        // First, so even the child's first instruction runs contained; "0" is the
        // writer itself, and the permission check is still herder's.
        for &fd in a.cgroups {
            if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return errno();
            }
        }
        if libc::setsid() < 0 {
            return errno();
        }
        reset_dispositions();
        // Until here the descriptor table was herder's own: nothing above touched
        // it but the cgroup write. Now a private copy of just the numbers below the
        // highest slot; before Linux 5.9, a copy of all of it.
        let range = libc::syscall(
            libc::SYS_close_range,
            a.keep_below as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        );
        if range < 0 && libc::unshare(libc::CLONE_FILES) < 0 {
            return errno();
        }
        // Slots are all >= 3, so none is overwritten before it is duplicated.
        for (target, fd) in (0..).zip(a.stdio) {
            if libc::dup2(fd, target) < 0 {
                return errno();
            }
        }
        // The inherited ones go to 3, 4, …: first out of the way of those
        // numbers, then into them (dup2 leaves the copy without close-on-exec).
        let above = FIRST_INHERITED_FD + a.inherit.len() as i32;
        let mut moved = [0i32; MAX_INHERIT];
        for (m, &fd) in moved.iter_mut().zip(a.inherit) {
            *m = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
            if *m < 0 {
                return errno();
            }
        }
        for (target, &fd) in (FIRST_INHERITED_FD..).zip(moved.iter().take(a.inherit.len())) {
            if libc::dup2(fd, target) < 0 {
                return errno();
            }
        }
        // The private table is short: closing the rest of it is cheap, and also
        // drops descriptors herder itself inherited without close-on-exec.
        libc::syscall(
            libc::SYS_close_range,
            above as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        );
        if libc::chdir(a.workdir) < 0 {
            return errno();
        }
        for (resource, limit) in a.rlimits {
            if libc::setrlimit(*resource, limit) < 0 {
                return errno();
            }
        }
        // Last, so that rlimits above the current hard limit could still be set.
        if let Some(c) = a.credentials
            && (libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) < 0
                || libc::syscall(libc::SYS_setgid, c.gid) < 0
                || libc::syscall(libc::SYS_setuid, c.uid) < 0)
        {
            return errno();
        }
        if !a.pid_vars.is_empty() {
            let pid = libc::syscall(libc::SYS_getpid) as u64;
            for v in a.pid_vars {
                write_decimal(v.at, pid);
            }
        }
        // Blocked by the parent for the clone; the program starts with none.
        let empty = 0u64;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::execve(a.program, a.argv, a.envp);
        errno()
    }
}

/// Writes `n` in decimal and a NUL at `at`, which has [`PID_ROOM`] bytes.
///
/// # Safety
/// `at` points to [`PID_ROOM`] writable bytes; `n` has fewer digits than that.
unsafe fn write_decimal(at: *mut u8, mut n: u64) {
    let mut digits = [0u8; PID_ROOM];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 || len == PID_ROOM - 1 {
            break;
        }
    }
    for i in 0..len {
        // SAFETY: `len` < PID_ROOM, as the caller promises room for it.
        unsafe { *at.add(i) = digits[len - 1 - i] };
    }
    // SAFETY: as above.
    unsafe { *at.add(len) = 0 };
}

/// Every catchable signal to its default disposition (an ignored signal would be
/// inherited across exec; a handler would be reset by exec anyway, but herder's
/// must not run in the child before it).
///
/// # Safety
/// Only for the child between clone and exec.
unsafe fn reset_dispositions() {
    // The raw system call, because the C library's sigaction refuses its reserved
    // real-time signals (32, 33), and those can arrive ignored from whoever started
    // herder. An all-zero kernel `struct sigaction` is SIG_DFL with no flags and an
    // empty mask. The kernel's signals are 1..=64.
    let dfl = [0u64; 4];
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads `dfl`, stack data.
        unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0usize, 8usize) };
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the command, environment or working directory",
        )
    })
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// /dev/null, opened once: every child's stdin, and its stdout and stderr when its
/// output is not wanted.
fn dev_null() -> io::Result<&'static OwnedFd> {
    static NULL: OnceLock<OwnedFd> = OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd);
    }
    let fd = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
    Ok(NULL.get_or_init(|| fd))
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
