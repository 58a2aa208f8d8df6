//! The small answers: what an action did, why a request was refused, a
//! shutdown begun.

use serde::{Deserialize, Serialize};

/// `200 {"message": "db stopped"}`: what an action did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub message: String,
}

/// `{"error": "no service named x"}`, with a status that says what kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorAnswer {
    pub error: String,
}

/// `202 {"message": "shutting down", "pid": 4242}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownAnswer {
    pub message: String,
    /// herder's pid.
    pub pid: u32,
}

/// The `error` (else the `message`) of an answer's body, or the body as text.
pub fn text_of(body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<ErrorAnswer>(body) {
        return e.error;
    }
    #[derive(Deserialize)]
    struct AnyMessage {
        message: String,
    }
    match serde_json::from_slice::<AnyMessage>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// One line of `herd logs --json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLine {
    pub service: String,
    pub line: String,
    /// When herder read it (`2026-11-30T21:48:44.123Z`), if its log file says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// The length of the time a log line starts with (`2026-11-30T21:48:44.123Z`).
pub const STAMP_LEN: usize = 24;

/// A log line as the socket sends it, split into the time herder read it (if
/// it starts with one) and the text.
pub fn split_stamp(line: &str) -> (Option<&str>, &str) {
    let b = line.as_bytes();
    let stamped = b.len() > STAMP_LEN
        && b[4] == b'-'
        && b[10] == b'T'
        && b[STAMP_LEN - 1] == b'Z'
        && b[STAMP_LEN] == b' ';
    if stamped {
        (Some(&line[..STAMP_LEN]), &line[STAMP_LEN + 1..])
    } else {
        (None, line)
    }
}
