//! The event stream: every change of a service's state, and herder's own
//! milestones (a reload applied, a shutdown begun, the run finished), published to
//! whoever subscribes through a [`super::Handle`].
//!
//! # How it works
//!
//! A `tokio::sync::broadcast` channel: publishing never waits, whatever the
//! subscribers do. A subscriber that falls more than [`CAPACITY`] events behind
//! loses the oldest and is told how many (the socket's stream says `lagged`); the
//! engine is never held up by a slow reader.

use serde::{Deserialize, Serialize};

use crate::report::Report;

/// Events kept for a slow subscriber before it starts losing them.
pub const CAPACITY: usize = 1024;

/// One event, as a line of the socket's `/v1/events` stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
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
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
}
