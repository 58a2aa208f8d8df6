//! What /proc says about a process: parent, group, session, state, start time and
//! command line.
//!
//! The start time (in clock ticks since boot) together with the pid names one
//! process for good: a recycled pid has a later start time. The none backend relies
//! on that to never signal a stranger.

use std::fs;

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

/// A process as an operator needs to see it when it will not go away.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub pid: i32,
    pub state: char,
    pub cmdline: String,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.state {
            'D' => "uninterruptible sleep",
            'Z' => "zombie",
            'T' | 't' => "stopped",
            'R' => "running",
            'S' => "sleeping",
            _ => "other",
        };
        write!(f, "{} ({} {what}) {}", self.pid, self.state, self.cmdline)
    }
}

/// Describes `pids` for a `stuck` report; processes already gone are left out.
pub fn leftovers(pids: &[i32]) -> Vec<Leftover> {
    pids.iter()
        .filter_map(|&p| stat(p))
        .map(|s| Leftover {
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
