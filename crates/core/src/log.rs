//! herder's own lines, kept apart from the services' output: one line, one
//! `write(2)` to stderr, prefixed `herd: `.
//!
//! # Caveats
//!
//! `eprintln!` writes the prefix, the message and the newline separately to the
//! unbuffered stderr (three system calls a line), and another thread's line could
//! land between them; [`note`] formats the whole line first. A line longer than a
//! pipe's atomic write size (4 KiB) may still interleave with another writer's.

use std::io::Write;

/// Writes `herd: MSG` as one line to stderr; a closed stderr is not an error.
pub fn note(msg: &str) {
    let line = format!("herd: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `2026-11-30T21:48:44.123Z`: a time in UTC to the millisecond, as the log files
/// stamp each line (RFC 3339; sorts as it reads).
pub fn timestamp(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (days, in_day) = (ms / 86_400_000, ms % 86_400_000);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// The length of a [`timestamp`].
pub const TIMESTAMP_LEN: usize = 24;

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_millisecond() {
        let at = |ms: u64| timestamp(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(at(1_796_074_124_456), "2026-11-30T21:28:44.456Z");
        assert_eq!(at(0).len(), TIMESTAMP_LEN);
    }
}
