//! The event stream (`GET /v1/events`, `herd events`): one JSON object a line,
//! tagged by `event`.

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// One event, as a line of the socket's `/v1/events` stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// A service moved from one state to another.
    State {
        /// Milliseconds since the Unix epoch.
        at_ms: u64,
        service: String,
        from: String,
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<i32>,
        /// Why it failed, how it exited, why it is stopping, which pids are stuck.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A service's health changed: `healthy`, `unhealthy 1/3`; `detail` says
    /// why a check failed, or that its watchdog was missed.
    Health {
        at_ms: u64,
        service: String,
        health: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A service said how it is (sd_notify `STATUS=`).
    Status {
        at_ms: u64,
        service: String,
        status: String,
    },
    /// A new configuration has been accepted and is being applied.
    Reload {
        at_ms: u64,
        added: Vec<String>,
        removed: Vec<String>,
        changed: Vec<String>,
    },
    /// A full shutdown has begun.
    Shutdown { at_ms: u64, trigger: String },
    /// The shutdown is over: herder exits with `exit_code`. The last event.
    Finished {
        at_ms: u64,
        exit_code: u8,
        report: Box<Report>,
    },
    /// Not an event of the engine's: the stream's reader fell behind and lost
    /// `missed` events.
    Lagged { missed: u64 },
}

impl Change {
    /// The event as a line for people: `12:00:01.234Z web starting -> ready (pid 42)`.
    pub fn describe(&self) -> String {
        let at = |ms: u64| clock(ms) + " ";
        let what = match self {
            Change::State {
                at_ms,
                service,
                from,
                to,
                pid,
                detail,
            } => {
                let mut t = format!("{}{service} {from} -> {to}", at(*at_ms));
                if let Some(d) = detail {
                    t.push_str(&format!(" ({d})"));
                } else if let Some(p) = pid {
                    t.push_str(&format!(" (pid {p})"));
                }
                t
            }
            Change::Health {
                at_ms,
                service,
                health,
                detail,
            } => match detail {
                Some(d) => format!("{}{service} health: {health} ({d})", at(*at_ms)),
                None => format!("{}{service} health: {health}", at(*at_ms)),
            },
            Change::Status {
                at_ms,
                service,
                status,
            } => format!("{}{service} status: {status}", at(*at_ms)),
            Change::Reload {
                at_ms,
                added,
                removed,
                changed,
            } => format!(
                "{}reload: added [{}], removed [{}], changed [{}]",
                at(*at_ms),
                added.join(", "),
                removed.join(", "),
                changed.join(", ")
            ),
            Change::Shutdown { at_ms, trigger } => format!("{}shutdown ({trigger})", at(*at_ms)),
            Change::Finished {
                at_ms, exit_code, ..
            } => format!("{}finished, exit code {exit_code}", at(*at_ms)),
            Change::Lagged { missed } => format!(
                "{}({missed} events missed: this reader was too slow)",
                at(0)
            ),
        };
        what + "\n"
    }
}

/// `HH:MM:SS.mmmZ` of a Unix time in milliseconds.
fn clock(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_change_is_one_json_object_tagged_by_its_kind() {
        let c = Change::State {
            at_ms: 5,
            service: "web".into(),
            from: "starting".into(),
            to: "ready".into(),
            pid: Some(42),
            detail: None,
        };
        let line = serde_json::to_string(&c).unwrap();
        assert_eq!(
            line,
            r#"{"event":"state","at_ms":5,"service":"web","from":"starting","to":"ready","pid":42}"#
        );
        assert_eq!(serde_json::from_str::<Change>(&line).unwrap(), c);
    }

    #[test]
    fn events_read_as_lines_for_people() {
        let c = Change::State {
            at_ms: 3_723_004,
            service: "web".into(),
            from: "starting".into(),
            to: "ready".into(),
            pid: Some(42),
            detail: None,
        };
        assert_eq!(
            c.describe(),
            "01:02:03.004Z web starting -> ready (pid 42)\n"
        );
        let lagged: Change = serde_json::from_str(r#"{"event":"lagged","missed":12}"#).unwrap();
        assert_eq!(
            lagged.describe(),
            "00:00:00.000Z (12 events missed: this reader was too slow)\n"
        );
    }
}
