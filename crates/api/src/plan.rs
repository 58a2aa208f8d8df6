//! The plan (`herd plan --json`, `GET /v1/plan`): the start waves, and the
//! shutdown each service would get in the worst case. Times are whole
//! milliseconds from the shutdown's start (`*_ms`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Services by start wave: a wave starts once what it requires is ready.
    pub start_waves: Vec<Vec<String>>,
    pub shutdown: ShutdownPlan,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownPlan {
    /// `shutdown.timeout`: the whole shutdown fits in it.
    pub budget_ms: u64,
    /// Kept after each wave's graceful window for SIGKILL and verification.
    pub kill_reserve_ms: u64,
    /// The waves asked for more than the budget: their windows were cut.
    pub squeezed: bool,
    /// When everything is stopped and verified at the latest.
    pub end_ms: u64,
    pub waves: Vec<StopWave>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopWave {
    pub start_ms: u64,
    /// Its graceful window.
    pub window_ms: u64,
    pub kill_at_ms: u64,
    /// The latest it may SIGKILL and still leave every later wave its share.
    pub latest_kill_at_ms: u64,
    pub end_ms: u64,
    pub services: Vec<ServiceDeadline>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDeadline {
    pub name: String,
    pub stop_timeout_ms: u64,
    /// What it gets: its `stop.timeout`, or its wave's window if shorter.
    pub granted_ms: u64,
    pub kill_at_ms: u64,
}
