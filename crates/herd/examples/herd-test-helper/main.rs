//! `herd-test-helper`: adversarial services for herder's tests and benchmarks.
//!
//! ```text
//! herd-test-helper MARKER MODE [ARG]
//! ```
//!
//! MARKER is any word; it stays in the command line of every process the helper
//! forks, so a test finds survivors by scanning /proc/*/cmdline for it, without
//! asking herder. Each mode prints `ready` on stdout once everything it builds
//! exists.
//!
//! | mode | what it does |
//! |---|---|
//! | `term-exit` | exits on SIGTERM |
//! | `slow-exit MS` | on SIGTERM, exits MS milliseconds later |
//! | `ignore-term` | ignores SIGTERM |
//! | `escape` | forks a child that calls `setsid` and forks a grandchild that ignores SIGTERM, then exits: the grandchild is re-parented; the main process exits on SIGTERM |
//! | `tree N` | N processes in a binary tree (the main one included), all ignoring SIGTERM |
//! | `bomb` | forks until fork fails (bounded by `pids.max`), every process ignoring SIGTERM |
//! | `linger MS` | the main process exits on SIGTERM at once; its child exits MS milliseconds after SIGTERM |
//! | `stamp FILE MS` | on SIGTERM appends `term SERVICE NS` to FILE, exits MS milliseconds later after appending `exit SERVICE NS` (NS: Unix time in ns; SERVICE from `HERD_SERVICE`); MS `ignore`: never exits |
//! | `orphans N MS` | forks N children that each fork a grandchild and exit at once; each grandchild, orphaned, exits MS milliseconds later; the main process exits on SIGTERM |
//!
//! Testing only; installing herder does not need it.

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod sys;

use std::io::Write;

use sys::{fork, ignore_term, on_term_exit_after, pause_forever};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(2).map(String::as_str).unwrap_or("");
    let arg = |i: usize| -> u64 { args.get(i).and_then(|a| a.parse().ok()).unwrap_or(0) };
    match mode {
        "term-exit" => {
            ready();
            pause_forever();
        }
        "slow-exit" => {
            let ms = arg(3);
            on_term_exit_after(ms);
            ready();
            pause_forever();
        }
        "ignore-term" => {
            ignore_term();
            ready();
            pause_forever();
        }
        "escape" => escape(),
        "tree" => tree(arg(3).max(1)),
        "bomb" => bomb(),
        "linger" => linger(arg(3)),
        "stamp" => stamp(
            args.get(3).map_or("stamps", String::as_str),
            args.get(4).map(String::as_str),
        ),
        "orphans" => orphans(arg(3), arg(4)),
        _ => {
            eprintln!("usage: herd-test-helper MARKER MODE [ARG]");
            std::process::exit(2);
        }
    }
}

fn ready() {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
}

fn escape() {
    let child = fork();
    if child == 0 {
        // Before the fork, so the grandchild ignores SIGTERM from its first moment.
        ignore_term();
        sys::setsid();
        if fork() == 0 {
            pause_forever();
        }
        // Ends the intermediate at once, leaving the grandchild orphaned.
        sys::exit_now(0);
    }
    sys::wait(child);
    ready();
    pause_forever();
}

/// A pipe whose read end counts "I exist" bytes from forked processes.
fn pipe() -> (i32, i32) {
    sys::pipe()
}

fn announce(w: i32) {
    sys::write_byte(w);
}

fn await_announcements(r: i32, n: u64) {
    let mut got = 0;
    let mut buf = [0u8; 256];
    while got < n {
        let k = sys::read(r, &mut buf);
        if k <= 0 {
            break;
        }
        got += k as u64;
    }
}

fn tree(n: u64) {
    ignore_term();
    let (r, w) = pipe();
    // A node with `budget` processes in its subtree, itself included.
    fn node(budget: u64, w: i32) {
        let rest = budget - 1;
        let (left, right) = (rest.div_ceil(2), rest / 2);
        for b in [left, right] {
            if b > 0 && fork() == 0 {
                node(b, w);
                announce(w);
                pause_forever();
            }
        }
    }
    node(n, w);
    await_announcements(r, n - 1);
    ready();
    pause_forever();
}

fn bomb() {
    ignore_term();
    let main = sys::getpid();
    while fork() >= 0 {}
    // Every process ends up here once fork fails; only the first one says so.
    if sys::getpid() == main {
        ready();
    }
    pause_forever();
}

fn linger(ms: u64) {
    let (r, w) = pipe();
    if fork() == 0 {
        on_term_exit_after(ms);
        announce(w);
        pause_forever();
    }
    await_announcements(r, 1);
    ready();
    pause_forever();
}

/// Appends `what SERVICE NS` to `file`.
fn stamp_line(file: &str, what: &str) {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = std::env::var("HERD_SERVICE").unwrap_or_default();
    let line = format!("{what} {name} {ns}\n");
    // One write of a short line to an O_APPEND file: lines of services writing at
    // once do not interleave.
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(line.as_bytes()));
}

fn stamp(file: &str, after: Option<&str>) {
    // SIGTERM is blocked and taken with sigwait, so ordinary code records it.
    sys::block_term();
    ready();
    sys::wait_term();
    stamp_line(file, "term");
    match after.and_then(|a| a.parse::<u64>().ok()) {
        Some(ms) => {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            stamp_line(file, "exit");
            std::process::exit(0);
        }
        // `ignore`: SIGTERM stays blocked; only SIGKILL ends it.
        None => pause_forever(),
    }
}

fn orphans(n: u64, ms: u64) {
    for _ in 0..n {
        if fork() == 0 {
            if fork() == 0 {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                sys::exit_now(0);
            }
            // The child exits at once: the grandchild is orphaned.
            sys::exit_now(0);
        }
    }
    // The children are ours to reap; the grandchildren are not.
    sys::wait(-1);
    ready();
    pause_forever();
}
