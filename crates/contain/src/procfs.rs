//! What /proc says about a process: parent, group, session, state, start time and
//! command line.
//!
//! The start time (in clock ticks since boot) together with the pid names one
//! process for good: a recycled pid has a later start time. The none backend relies
//! on that to never signal a stranger.

use std::fs;
use std::io::Read;

/// The fields of `/proc/PID/stat` that containment needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// One letter: R, S, D, Z, T, …
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub starttime: u64,
}

impl Stat {
    /// Whether the process is still running (a zombie has ended; only its entry is
    /// left for its parent to collect).
    pub fn alive(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/PID/stat`; `None` once the process is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Parses a stat line; the command name may hold spaces and parentheses, so the
/// fields are counted from the last `)`.
pub fn parse_stat(pid: i32, text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the command: state(3) ppid(4) pgrp(5) session(6) … starttime(22).
    Some(Stat {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        starttime: f.get(19)?.parse().ok()?,
    })
}

/// What one process has used: CPU time (its own and its reaped children's),
/// in clock ticks, and resident memory, in pages.
fn used(pid: i32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // From state(3): utime(14) stime(15) cutime(16) cstime(17) … rss(24).
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok());
    let ticks = (11..=14).map(num).sum::<Option<i64>>()?;
    Some((ticks.max(0) as u64, num(21)?.max(0) as u64))
}

/// The CPU time and resident memory of `pids` together, read from /proc: the
/// usage of a unit without cgroup accounting. CPU time is that of the live
/// processes and the children they reaped; what processes that already ended
/// used is lost unless their parent in the unit waited for them. Memory is the
/// sum of resident sizes, so pages shared between them count more than once.
pub fn usage(pids: &[i32]) -> crate::Usage {
    let (ticks, pages) = pids
        .iter()
        .filter_map(|&p| used(p))
        .fold((0u64, 0u64), |(t, m), (dt, dm)| (t + dt, m + dm));
    let hz = rustix::param::clock_ticks_per_second().max(1);
    crate::Usage {
        cpu: Some(std::time::Duration::from_secs_f64(ticks as f64 / hz as f64)),
        memory: Some(pages * rustix::param::page_size() as u64),
        processes: pids.len(),
    }
}

/// Every process on the system (of this pid namespace), as one consistent-enough
/// snapshot: processes that end while it is taken are simply missing.
pub fn all() -> Vec<Stat> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// The command line, arguments joined by spaces; `[comm]` for kernel threads and
/// processes whose memory is gone.
pub fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.is_empty() {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        return format!("[{}]", comm.trim_end());
    }
    args.join(" ")
}

/// The variable in every service process's environment that names its run: a
/// random id per start, inherited through fork, `setsid` and exec unless the
/// process clears its environment.
pub const INVOCATION_VAR: &str = "HERD_INVOCATION";

/// A fresh value for [`INVOCATION_VAR`]: 128 random bits in hex.
pub fn new_invocation() -> String {
    let mut buf = [0u8; 16];
    let got = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if got.is_err() {
        // Unique enough for one host: the time and our pid.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        buf = (t ^ (u128::from(std::process::id()) << 96)).to_le_bytes();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// `HERD_INVOCATION` from the environment process `pid` was exec'd with:
/// `Some(None)` if it has none, `None` if the environment cannot be read now
/// (the process is gone or is not the one that started at `start`, herder may
/// not read it, or it is in the middle of an exec: the new environment reads
/// empty until the exec has laid it out). Both files are read through one open
/// /proc/PID directory, which keeps naming that process after its pid is
/// reused, so a stranger's environment is never taken for it.
///
/// Reading another process's environment takes its memory-map lock: a process
/// stuck in the kernel while holding that lock delays the read.
pub fn invocation(pid: i32, start: u64) -> Option<Option<String>> {
    use rustix::fs::{Mode, OFlags, openat};
    let dir = fs::File::open(format!("/proc/{pid}")).ok()?;
    let read = |name: &str| -> Option<Vec<u8>> {
        let fd = openat(&dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let mut out = Vec::new();
        fs::File::from(fd).read_to_end(&mut out).ok()?;
        Some(out)
    };
    let env = read("environ").filter(|e| !e.is_empty())?;
    let stat = parse_stat(pid, &String::from_utf8_lossy(&read("stat")?))?;
    if stat.starttime != start {
        return None;
    }
    let key = format!("{INVOCATION_VAR}=");
    Some(
        env.split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(key.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned()),
    )
}

/// A process as an operator needs to see it: what a stop signalled, and what
/// would not go away (its state says why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: i32,
    pub state: char,
    pub cmdline: String,
}

impl Process {
    /// Its state in words: `uninterruptible sleep` for `D`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            'D' => "uninterruptible sleep",
            'Z' => "zombie",
            'T' | 't' => "stopped",
            'R' => "running",
            'S' => "sleeping",
            'I' => "idle",
            _ => "other",
        }
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (pid, state, what) = (self.pid, self.state, self.state_name());
        write!(f, "{pid} ({state} {what}) {}", self.cmdline)
    }
}

/// Describes `pids` as they are now; processes already gone are left out.
pub fn describe(pids: &[i32]) -> Vec<Process> {
    pids.iter()
        .filter_map(|&p| stat(p))
        .map(|s| Process {
            pid: s.pid,
            state: s.state,
            cmdline: cmdline(s.pid),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(4242, line).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 4242,
                state: 'S',
                ppid: 1,
                pgid: 4242,
                sid: 4242,
                starttime: 987654
            }
        );
    }

    #[test]
    fn invocation_is_read_from_the_environment_of_that_very_process() {
        // A child, so the variable is in the environment it was exec'd with.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env(INVOCATION_VAR, "run-42")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Nothing here may panic before the child is killed.
        let start = stat(pid).map_or(0, |s| s.starttime);
        // spawn returns once the exec has begun; the new image's environment is
        // laid out a little later, and reads empty until then.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let got = loop {
            let got = invocation(pid, start);
            if got.is_some() || std::time::Instant::now() > deadline {
                break got;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        // Another start time is another process, even with this pid.
        let other = invocation(pid, start + 1);
        child.kill().unwrap();
        child.wait().unwrap();
        // Its own environment has none (the test runs without herder).
        let me = std::process::id() as i32;
        let mine = invocation(me, stat(me).unwrap().starttime);
        assert_eq!(got, Some(Some("run-42".into())));
        assert_eq!(other, None);
        if std::env::var_os(INVOCATION_VAR).is_none() {
            assert_eq!(mine, Some(None));
        }
        // Gone: nothing to read.
        assert_eq!(invocation(pid, start), None);
    }

    #[test]
    fn new_invocations_are_distinct_hex() {
        let (a, b) = (new_invocation(), new_invocation());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn own_stat_and_cmdline() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.alive());
        assert!(s.starttime > 0);
        assert!(!cmdline(me).is_empty());
        assert!(all().iter().any(|s| s.pid == me));
    }
}
