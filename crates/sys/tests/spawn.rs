//! Spawning and reaping real processes. What the child got is read from /proc and
//! from the child's own output, not from herder's bookkeeping.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use herd_sys::reap::ExitStatus;
use herd_sys::spawn::{Credentials, Rlimit, SpawnError, Spec, spawn};
use herd_sys::{Child, reap, user};

/// `reap()` collects every child of this test process; tests that reap take turns
/// so that none collects another's child.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn spec(argv: &[&str]) -> Spec {
    Spec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        workdir: "/".into(),
        ..Spec::default()
    }
}

/// Waits for the child's exit (its pidfd turns readable), then reaps it.
fn wait(child: &Child, timeout: Duration) -> ExitStatus {
    let mut pfd = libc::pollfd {
        fd: child.pidfd_raw(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    assert_eq!(n, 1, "pid {} did not exit within {timeout:?}", child.pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((_, st)) = reap().into_iter().find(|(p, _)| *p == child.pid) {
            return st;
        }
        assert!(Instant::now() < deadline, "exited but not reaped");
        std::thread::yield_now();
    }
}

trait PidfdRaw {
    fn pidfd_raw(&self) -> i32;
}
impl PidfdRaw for Child {
    fn pidfd_raw(&self) -> i32 {
        use std::os::fd::AsFd;
        self.pidfd.as_fd().as_raw_fd()
    }
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    File::from(fd).read_to_string(&mut s).unwrap();
    s
}

/// Kills and reaps a child that a test left running (also on failure, via Drop).
struct Reaped(Option<Child>);
impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.pidfd.signal(libc::SIGKILL);
            wait(&c, Duration::from_secs(10));
        }
    }
}

fn proc_field(pid: i32, file: &str, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
    text.lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/{file}"))
        .to_string()
}

#[test]
fn exit_code_and_signal_are_reaped() {
    let _g = serial();
    let c = spawn(&spec(&["sh", "-c", "exit 3"])).unwrap();
    assert_eq!(wait(&c, Duration::from_secs(10)), ExitStatus::Code(3));

    // Killed and reaped by the guard if an assertion fails on the way.
    let mut guard = Reaped(Some(spawn(&spec(&["sleep", "100"])).unwrap()));
    let c = guard.0.as_ref().unwrap();
    assert!(c.pidfd.signal(libc::SIGTERM).unwrap());
    assert_eq!(
        wait(c, Duration::from_secs(10)),
        ExitStatus::Signal(libc::SIGTERM)
    );
    let c = guard.0.take().unwrap(); // reaped: nothing left for the guard
    // Exited and reaped: the pidfd refuses rather than signalling a recycled pid.
    assert!(!c.pidfd.signal(libc::SIGTERM).unwrap());
}

#[test]
fn child_has_its_own_session_and_clean_signal_state() {
    let _g = serial();
    // SAFETY: test-only changes to this process's signal state, undone below; the
    // child must not inherit them.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let c = spawn(&spec(&["sleep", "100"]));
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
    let c = Reaped(Some(c.unwrap()));
    let pid = c.0.as_ref().unwrap().pid;
    // `sleep` has exec'd once /proc shows its name.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap() != "sleep\n" {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_comm: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Fields after comm: state, ppid, pgrp, session.
    assert_eq!(after_comm[2], pid.to_string(), "own process group");
    assert_eq!(after_comm[3], pid.to_string(), "own session");
    assert_eq!(
        proc_field(pid, "status", "SigIgn:"),
        "SigIgn:\t0000000000000000"
    );
    assert_eq!(
        proc_field(pid, "status", "SigBlk:"),
        "SigBlk:\t0000000000000000"
    );
}

#[test]
fn environment_workdir_and_rlimits_are_the_specs_only() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut s = spec(&[
        "sh",
        "-c",
        "pwd; echo \"$FOO\"; echo \"${HOME-unset}\"; ulimit -n",
    ]);
    s.env.push(("FOO".into(), "bar baz".into()));
    s.workdir = dir.path().canonicalize().unwrap();
    s.rlimits = vec![(Rlimit::Nofile, 123)];
    let c = spawn(&s).unwrap();
    let stdout = c.stdout.as_ref().unwrap().try_clone().unwrap();
    let st = wait(&c, Duration::from_secs(10));
    drop(c);
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(
        read_all(stdout),
        format!("{}\nbar baz\nunset\n123\n", s.workdir.display())
    );
}

#[test]
fn pid_variables_hold_the_childs_own_pid() {
    let _g = serial();
    // `exec` keeps the pid: the program that reads them is the child itself.
    let mut s = spec(&["sh", "-c", "exec env"]);
    s.env.push(("WATCHDOG_PID".into(), "1".into()));
    s.pid_env = vec!["WATCHDOG_PID".into(), "LISTEN_PID".into()];
    let c = spawn(&s).unwrap();
    let stdout = c.stdout.as_ref().unwrap().try_clone().unwrap();
    let pid = c.pid;
    assert_eq!(wait(&c, Duration::from_secs(10)), ExitStatus::Code(0));
    drop(c);
    let mut vars: Vec<String> = read_all(stdout)
        .lines()
        .filter(|l| l.contains("_PID="))
        .map(String::from)
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        [format!("LISTEN_PID={pid}"), format!("WATCHDOG_PID={pid}")]
    );
}

/// As root the child runs with exactly the given ids; unprivileged, the switch is
/// refused and no child runs with herder's ids instead.
#[test]
fn credentials_are_switched_or_refused() {
    let _g = serial();
    let mut s = spec(&["sh", "-c", "id -u; id -g; id -G"]);
    s.credentials = Some(Credentials {
        uid: 65534,
        gid: 65533,
        groups: vec![65533, 4242],
    });
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        let err = spawn(&s).unwrap_err().to_string();
        assert!(
            err.ends_with("Operation not permitted (os error 1)"),
            "{err}"
        );
        return;
    }
    let c = spawn(&s).unwrap();
    let stdout = c.stdout.as_ref().unwrap().try_clone().unwrap();
    assert_eq!(wait(&c, Duration::from_secs(10)), ExitStatus::Code(0));
    drop(c);
    assert_eq!(read_all(stdout), "65534\n65533\n65533 4242\n");
}

#[test]
fn bad_programs_and_workdirs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let cases: Vec<(Spec, String)> = vec![
        (
            spec(&["no-such-program-herd"]),
            "program \"no-such-program-herd\" not found in PATH (/usr/bin:/bin)".into(),
        ),
        (
            Spec {
                workdir: dir.path().into(),
                ..spec(&["./missing"])
            },
            format!(
                "program {}/./missing: No such file or directory",
                dir.path().display()
            ),
        ),
        (
            Spec {
                workdir: dir.path().into(),
                ..spec(&["./script"])
            },
            format!("program {}/./script: not executable", dir.path().display()),
        ),
        (
            Spec {
                workdir: dir.path().join("nope"),
                ..spec(&["true"])
            },
            format!(
                "working directory {}/nope: No such file or directory",
                dir.path().display()
            ),
        ),
        (spec(&[]), "empty command".into()),
    ];
    for (s, expected) in cases {
        let err: SpawnError = spawn(&s).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn users_and_groups_are_looked_up() {
    assert_eq!(user::credentials("root", None).unwrap().uid, 0);
    assert_eq!(user::credentials("0", Some("0")).unwrap().gid, 0);
    let numeric = user::credentials("54321", None).unwrap();
    assert_eq!((numeric.uid, numeric.gid), (54321, 54321));
    assert_eq!(
        user::credentials("no-such-user-herd", None)
            .unwrap_err()
            .to_string(),
        "user \"no-such-user-herd\" does not exist"
    );
    assert_eq!(
        user::credentials("root", Some("no-such-group-herd"))
            .unwrap_err()
            .to_string(),
        "group \"no-such-group-herd\" does not exist"
    );
}

#[test]
fn process_groups_below_two_are_never_signalled() {
    assert!(herd_sys::pidfd::signal_group(1, libc::SIGTERM).is_err());
    assert!(herd_sys::pidfd::signal_group(0, libc::SIGTERM).is_err());
    assert!(herd_sys::pidfd::signal_group(-1, libc::SIGTERM).is_err());
}

/// Our children that are zombies, from /proc (not from herder's reaper).
fn zombie_children() -> Vec<i32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let f: Vec<&str> = stat
                .rsplit_once(')')
                .unwrap()
                .1
                .split_whitespace()
                .collect();
            f[0] == "Z" && f[1] == me
        })
        .collect()
}

/// Failures between clone and exec (here a rejected rlimit, and an exec the kernel
/// refuses) come back as the child's errno, and the child is not left a zombie.
#[test]
fn failures_after_the_clone_are_reported_and_the_child_reaped() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage");
    std::fs::write(&garbage, b"\x7fELF not really").unwrap();
    std::fs::set_permissions(
        &garbage,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut too_many = spec(&["true"]);
    // Above fs.nr_open (at most 2^30 by the kernel's own limit): refused even to root.
    too_many.rlimits = vec![(Rlimit::Nofile, 1 << 31)];
    let cases = [
        (too_many, "Operation not permitted (os error 1)"),
        (
            spec(&[garbage.to_str().unwrap()]),
            "Exec format error (os error 8)",
        ),
    ];
    for (s, reason) in cases {
        let err = spawn(&s).unwrap_err().to_string();
        assert!(err.starts_with("cannot start "), "{err}");
        assert!(err.ends_with(reason), "{err}");
        assert_eq!(zombie_children(), Vec::<i32>::new());
    }
}

/// The child has 0, 1, 2 and the inherited descriptors at 3, 4, … in order, and
/// nothing else of ours, even descriptors we hold without close-on-exec.
#[test]
fn only_stdio_and_the_inherited_descriptors_reach_the_program() {
    let _g = serial();
    let (r1, w1) = rustix::pipe::pipe().unwrap();
    let (r2, w2) = rustix::pipe::pipe().unwrap();
    rustix::io::write(&w1, b"first").unwrap();
    rustix::io::write(&w2, b"second").unwrap();
    drop((w1, w2));
    // Held without close-on-exec, as a herder started by a careless parent would.
    let leaky: Vec<OwnedFd> = (0..50)
        .map(|_| rustix::io::fcntl_dupfd_cloexec(&r1, 3).unwrap())
        .inspect(|fd| rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).unwrap())
        .collect();
    let mut s = spec(&[
        "sh",
        "-c",
        // ls lists the shell's descriptors (a glob in the shell would open one).
        "ls /proc/$$/fd; read -r a <&3; echo \"$a\"; read -r b <&4; echo \"$b\"",
    ]);
    s.inherit = vec![std::sync::Arc::new(r1), std::sync::Arc::new(r2)];
    let c = spawn(&s).unwrap();
    let stdout = c.stdout.as_ref().unwrap().try_clone().unwrap();
    assert_eq!(wait(&c, Duration::from_secs(10)), ExitStatus::Code(0));
    drop(c);
    drop(leaky);
    assert_eq!(read_all(stdout), "0\n1\n2\n3\n4\nfirst\nsecond\n");
}
