//! `has_children`, which a container's PID 1 asks at exit instead of scanning
//! /proc for orphans. A file of its own: it sees every child of the test process,
//! so no other test may have any.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Command, Stdio};

use herd_sys::{Pidfd, become_subreaper, has_children, reap};

/// Waits until the process has exited (its pidfd turns readable), for at most
/// 10 s; it is then a zombie, ready to be reaped.
fn wait_exit(fd: &Pidfd) {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 10_000) };
    assert_eq!(n, 1, "no exit within 10 s");
}

/// SIGKILLs its processes when dropped, so that a failed assertion leaves none
/// behind (by pidfd: never a recycled pid).
struct Reaper(Vec<Pidfd>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for fd in &self.0 {
            let _ = fd.signal(libc::SIGKILL);
        }
    }
}

#[test]
fn has_children_sees_live_exited_and_orphaned_children_until_reaped() {
    assert!(!has_children(), "the test process starts with no child");

    // A live child, then the same child exited but not yet reaped.
    let mut child = Command::new("sleep").arg("1000").spawn().unwrap();
    let mut guard = Reaper(vec![Pidfd::open(child.id() as i32).unwrap()]);
    assert!(has_children());
    child.kill().unwrap();
    wait_exit(&guard.0[0]);
    assert!(has_children(), "a zombie is still a child to wait for");
    assert!(has_children(), "asking reaps nothing");
    child.wait().unwrap();
    assert!(!has_children());

    // An orphan: as a subreaper, this process inherits the shell's background job
    // when the shell exits; reaping the shell leaves that child.
    become_subreaper().unwrap();
    let mut sh = Command::new("sh")
        .args(["-c", "sleep 1000 & echo $!"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(sh.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let orphan: i32 = line.trim().parse().unwrap();
    guard.0.push(Pidfd::open(orphan).unwrap());
    sh.wait().unwrap();
    assert!(has_children(), "the orphan {orphan} is ours now");
    guard.0[1].signal(libc::SIGKILL).unwrap();
    wait_exit(&guard.0[1]);
    let reaped = reap();
    assert!(reaped.iter().any(|(p, _)| *p == orphan), "{reaped:?}");
    assert!(!has_children());
}
