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

pub use herd_api::Change;

/// Events kept for a slow subscriber before it starts losing them.
pub const CAPACITY: usize = 1024;

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
