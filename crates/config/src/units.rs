//! The small value languages of herd.toml: durations, sizes, signals, backoff ranges
//! and start limits. Each parser returns the message a user should see on failure;
//! the caller adds file, position and key.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// Parses `"500ms"`, `"10s"`, `"2m"`, `"1h"` and sums such as `"1m30s"`.
///
/// Whole numbers only: a fraction reads as a mistake more often than as a wish for
/// sub-millisecond precision, and `"1500ms"` says the same thing.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| Err(format!("invalid duration \"{s}\": {why}"));
    if s.is_empty() {
        return bad("empty (write e.g. \"10s\")");
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return bad("expected a number (units: ms, s, m, h)");
        }
        let Ok(n) = rest[..digits].parse::<u64>() else {
            return bad("number too large");
        };
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let ms_per = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return bad("missing unit (ms, s, m or h)"),
            u => return bad(&format!("unknown unit \"{u}\" (use ms, s, m or h)")),
        };
        rest = &rest[unit_len..];
        match n.checked_mul(ms_per).and_then(|v| total.checked_add(v)) {
            Some(t) => total = t,
            None => return bad("too large"),
        }
    }
    Ok(Duration::from_millis(total))
}

/// Renders a duration the way herd.toml writes it: `"1m30s"`, `"2.5s"`, `"250ms"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let (m, rest_ms) = (ms / 60_000, ms % 60_000);
    let s = rest_ms / 1_000;
    let frac = rest_ms % 1_000;
    let mut out = String::new();
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || frac > 0 {
        out.push_str(&s.to_string());
        if frac > 0 {
            let f = format!("{frac:03}");
            out.push('.');
            out.push_str(f.trim_end_matches('0'));
        }
        out.push('s');
    }
    out
}

/// Parses a byte size: `"4096"`, `"512K"`, `"512M"`, `"2G"`, `"1T"`; the suffixes are
/// powers of 1024 and may be written `K`, `KB`, `KiB` (any case), as in systemd.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = |why: &str| Err(format!("invalid size \"{s}\": {why}"));
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if digits == 0 {
        return bad("expected a number, e.g. \"512M\"");
    }
    let Ok(n) = s[..digits].parse::<u64>() else {
        return bad("number too large");
    };
    let shift = match s[digits..].to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        u => return bad(&format!("unknown unit \"{u}\" (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .map_or_else(|| bad("too large"), Ok)
}

/// A signal, kept by number with the name it is known by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal(pub i32);

/// Linux signal numbers (x86, arm, riscv; the generic table). `SIGRTMIN` is the
/// kernel's 32, but glibc reserves 32 and 33 for itself and reports 34, so names are
/// read and written relative to 34 as every tool users know does.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("IOT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("POLL", 29),
    ("PWR", 30),
    ("SYS", 31),
];
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

impl Signal {
    pub const TERM: Signal = Signal(15);
    pub const KILL: Signal = Signal(9);
    pub const ABRT: Signal = Signal(6);

    /// Reads `"SIGTERM"`, `"TERM"`, `"sigterm"`, `"SIGRTMIN+3"`, or a number as text.
    pub fn parse(s: &str) -> Result<Signal, String> {
        let upper = s.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        if let Some(&(_, n)) = SIGNALS.iter().find(|(k, _)| *k == name) {
            return Ok(Signal(n));
        }
        let rt = |base: i32, off: &str, sign: i32| {
            off.parse::<i32>()
                .ok()
                .map(|o| base + sign * o)
                .filter(|n| (SIGRTMIN..=SIGRTMAX).contains(n))
        };
        let n = match name {
            "RTMIN" => Some(SIGRTMIN),
            "RTMAX" => Some(SIGRTMAX),
            _ => {
                if let Some(off) = name.strip_prefix("RTMIN+") {
                    rt(SIGRTMIN, off, 1)
                } else if let Some(off) = name.strip_prefix("RTMAX-") {
                    rt(SIGRTMAX, off, -1)
                } else {
                    name.parse::<i32>().ok()
                }
            }
        };
        match n {
            Some(n) => Signal::from_number(n.into()),
            None => Err(format!("unknown signal \"{s}\"")),
        }
    }

    pub fn from_number(n: i64) -> Result<Signal, String> {
        if (1..=31).contains(&n) || (i64::from(SIGRTMIN)..=i64::from(SIGRTMAX)).contains(&n) {
            Ok(Signal(n as i32))
        } else {
            Err(format!(
                "signal number {n} is out of range (1-31, {SIGRTMIN}-{SIGRTMAX})"
            ))
        }
    }

    /// The conventional name: `SIGTERM`, `SIGRTMIN+3`.
    pub fn name(self) -> String {
        if let Some((n, _)) = SIGNALS.iter().find(|(_, v)| *v == self.0) {
            return format!("SIG{n}");
        }
        match self.0 - SIGRTMIN {
            0 => "SIGRTMIN".into(),
            off if off > 0 => format!("SIGRTMIN+{off}"),
            _ => format!("signal {}", self.0),
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Signal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Exponential restart backoff between a floor and a ceiling: `"200ms..30s"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub floor: Duration,
    pub ceiling: Duration,
}

impl Backoff {
    pub fn parse(s: &str) -> Result<Backoff, String> {
        let Some((a, b)) = s.split_once("..") else {
            return Err(format!(
                "invalid backoff \"{s}\": write floor..ceiling, e.g. \"200ms..30s\""
            ));
        };
        let floor = parse_duration(a)?;
        let ceiling = parse_duration(b)?;
        if floor.is_zero() {
            return Err(format!(
                "invalid backoff \"{s}\": the floor must be above zero"
            ));
        }
        if floor > ceiling {
            return Err(format!(
                "invalid backoff \"{s}\": the floor is above the ceiling"
            ));
        }
        Ok(Backoff { floor, ceiling })
    }
}

/// At most `starts` starts within any `window`: `"5/1m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartLimit {
    pub starts: u32,
    pub window: Duration,
}

impl StartLimit {
    pub fn parse(s: &str) -> Result<StartLimit, String> {
        let bad = |why: &str| Err(format!("invalid start limit \"{s}\": {why}"));
        let Some((n, w)) = s.split_once('/') else {
            return bad("write starts/window, e.g. \"5/1m\"");
        };
        let starts = match n.parse::<u32>() {
            Ok(0) => return bad("the number of starts must be at least 1"),
            Ok(n) => n,
            Err(_) => return bad("the number of starts must be a whole number"),
        };
        let window = parse_duration(w)?;
        if window.is_zero() {
            return bad("the window must be above zero");
        }
        Ok(StartLimit { starts, window })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(MS(500)));
        assert_eq!(parse_duration("10s"), Ok(MS(10_000)));
        assert_eq!(parse_duration("2m"), Ok(MS(120_000)));
        assert_eq!(parse_duration("1h"), Ok(MS(3_600_000)));
        assert_eq!(parse_duration("1m30s"), Ok(MS(90_000)));
        assert_eq!(parse_duration("0s"), Ok(MS(0)));
        assert_eq!(
            parse_duration("10"),
            Err("invalid duration \"10\": missing unit (ms, s, m or h)".into())
        );
        assert_eq!(
            parse_duration("10x"),
            Err("invalid duration \"10x\": unknown unit \"x\" (use ms, s, m or h)".into())
        );
        assert_eq!(
            parse_duration("1.5s"),
            Err("invalid duration \"1.5s\": unknown unit \".\" (use ms, s, m or h)".into())
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("9999999999999999h").is_err());
    }

    #[test]
    fn durations_render_as_written() {
        for (ms, s) in [
            (0, "0s"),
            (250, "250ms"),
            (1_000, "1s"),
            (2_500, "2.5s"),
            (1_050, "1.05s"),
            (90_000, "1m30s"),
            (120_000, "2m"),
            (3_600_000, "60m"),
        ] {
            assert_eq!(format_duration(MS(ms)), s);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert_eq!(
            parse_size("12Q"),
            Err("invalid size \"12Q\": unknown unit \"q\" (use K, M, G or T)".into())
        );
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn signals() {
        assert_eq!(Signal::parse("SIGTERM"), Ok(Signal(15)));
        assert_eq!(Signal::parse("term"), Ok(Signal(15)));
        assert_eq!(Signal::parse("SIGINT"), Ok(Signal(2)));
        assert_eq!(Signal::parse("9"), Ok(Signal(9)));
        assert_eq!(Signal::parse("SIGRTMIN+3"), Ok(Signal(37)));
        assert_eq!(Signal::parse("RTMAX-1"), Ok(Signal(63)));
        assert_eq!(
            Signal::parse("SIGFOO"),
            Err("unknown signal \"SIGFOO\"".into())
        );
        assert!(Signal::parse("RTMIN+40").is_err());
        assert!(Signal::from_number(0).is_err());
        assert!(Signal::from_number(32).is_err());
        assert!(Signal::from_number(65).is_err());
        assert_eq!(Signal(15).name(), "SIGTERM");
        assert_eq!(Signal(37).name(), "SIGRTMIN+3");
        assert_eq!(Signal(34).name(), "SIGRTMIN");
    }

    #[test]
    fn backoff_and_limits() {
        assert_eq!(
            Backoff::parse("200ms..30s"),
            Ok(Backoff {
                floor: MS(200),
                ceiling: MS(30_000)
            })
        );
        assert!(Backoff::parse("30s..1s").is_err());
        assert!(Backoff::parse("0s..1s").is_err());
        assert!(Backoff::parse("1s").is_err());
        assert_eq!(
            StartLimit::parse("5/1m"),
            Ok(StartLimit {
                starts: 5,
                window: MS(60_000)
            })
        );
        assert!(StartLimit::parse("0/1m").is_err());
        assert!(StartLimit::parse("5/0s").is_err());
        assert!(StartLimit::parse("five/1m").is_err());
        assert!(StartLimit::parse("5").is_err());
    }
}
