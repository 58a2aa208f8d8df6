//! The helper's system calls: the one place with `unsafe`, each call behind a
//! safe function. The helper is single-threaded (a forked child may do
//! anything), and its one signal handler makes only async-signal-safe calls.

use std::sync::atomic::{AtomicU64, Ordering};

/// pause(2) for ever.
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause(2) has no arguments and no memory effects.
        unsafe { libc::pause() };
    }
}

/// SIGTERM ignored (SIG_IGN, no handler code runs).
pub fn ignore_term() {
    // SAFETY: installs SIG_IGN.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
}

static DELAY_MS: AtomicU64 = AtomicU64::new(0);

extern "C" fn delayed_exit(_: libc::c_int) {
    // Only async-signal-safe calls: an atomic load, nanosleep and _exit.
    let ms = DELAY_MS.load(Ordering::Relaxed);
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: nanosleep reads `ts`; _exit ends the process.
    unsafe {
        libc::nanosleep(&ts, std::ptr::null_mut());
        libc::_exit(0);
    }
}

/// On SIGTERM, exit `ms` milliseconds later.
pub fn on_term_exit_after(ms: u64) {
    DELAY_MS.store(ms, Ordering::Relaxed);
    // SAFETY: the handler only makes async-signal-safe calls.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            delayed_exit as *const () as libc::sighandler_t,
        );
    }
}

/// fork(2); the child gets 0, a failure is negative.
pub fn fork() -> i32 {
    // SAFETY: the helper is single-threaded, so the child may do anything.
    unsafe { libc::fork() }
}

pub fn setsid() {
    // SAFETY: a plain system call.
    unsafe { libc::setsid() };
}

/// _exit(2): ends the process at once, no destructors, no atexit.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: ends the process.
    unsafe { libc::_exit(code) }
}

/// Waits for child `pid` (or, with -1, for every child until none is left).
pub fn wait(pid: i32) {
    // SAFETY: waits for our own children; no status is kept.
    while unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) } > 0 && pid == -1 {}
}

pub fn getpid() -> i32 {
    // SAFETY: getpid has no effects.
    unsafe { libc::getpid() }
}

/// A pipe: (read end, write end).
pub fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills `fds`.
    unsafe { libc::pipe(fds.as_mut_ptr()) };
    (fds[0], fds[1])
}

/// One byte to `fd`.
pub fn write_byte(fd: i32) {
    // SAFETY: one byte from a valid buffer.
    unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
}

/// read(2) into `buf`: the count, or 0 / negative at the end or on error.
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: reads at most `buf.len()` bytes into `buf`.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
}

/// Blocks SIGTERM, so that [`wait_term`] takes it in ordinary code.
pub fn block_term() {
    // SAFETY: signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for the blocked SIGTERM.
pub fn wait_term() {
    // SAFETY: signal-set calls on a local set; sigwait writes `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}
