//! A service as `herd ps` shows it (`GET /v1/services`), and the whole herd.

use serde::{Deserialize, Serialize};

/// The whole herd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// A shutdown has begun.
    pub shutting_down: bool,
    /// How far the shutdown has got, once it has begun (`GET /v1/shutdown`).
    pub shutdown: Option<ShutdownProgress>,
    pub services: Vec<ServiceStatus>,
}

/// A shutdown under way (`GET /v1/shutdown`): its stop waves, in order, and
/// which is stopping now. Each service's own progress is its
/// [`ServiceStatus::stop`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownProgress {
    /// What began it: `SIGTERM`, `shutdown asked on the control socket by …`.
    pub trigger: String,
    /// Since it began.
    pub elapsed_ms: u64,
    /// `shutdown.timeout`: herder exits by then whatever is left.
    pub budget_ms: u64,
    /// The wave stopping now, from 0.
    pub wave: usize,
    /// The services of each stop wave, the first to stop first.
    pub waves: Vec<Vec<String>>,
}

/// A stop under way (a service `stopping`, or `stuck` after SIGKILL).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopProgress {
    /// Why it stops: `shutdown`, `request`, `restart`, `unhealthy`, …
    pub reason: String,
    /// Its last step: `requested`, `event sent` (the shutdown event, to a
    /// service with `stop.notify`), `hook running` (`stop.exec`), `SIGTERM
    /// sent` (its stop signal), `SIGKILL sent`.
    pub step: String,
    /// Since the stop was asked for.
    pub elapsed_ms: u64,
    /// Until SIGKILL is due; `None` once it has been sent.
    pub kill_in_ms: Option<u64>,
    /// The processes it still waits for.
    pub waiting_on: Vec<ProcessInfo>,
}

/// A process as /proc shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessInfo {
    pub pid: i32,
    /// Its state letter (`S`, `R`, `D`, `T`, `Z`) and what it means:
    /// `D uninterruptible sleep` is a process stuck in the kernel, which no
    /// signal ends until the kernel lets it go.
    pub state: String,
    /// Its command line, arguments joined by spaces.
    pub command: String,
}

/// One service as `herd ps` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStatus {
    pub name: String,
    /// `long` or `oneshot`.
    pub kind: String,
    /// What it requires (from the configuration).
    pub requires: Vec<String>,
    pub state: String,
    /// Why it failed, how it exited, which pids are stuck.
    pub detail: Option<String>,
    /// The main process.
    pub pid: Option<i32>,
    /// Every live process of its current run.
    pub pids: Vec<i32>,
    /// Since its current run started, while it runs.
    pub uptime_ms: Option<u64>,
    /// How many times it has been started.
    pub runs: u64,
    pub ready: bool,
    /// How its last run's main process ended.
    pub last_exit: Option<String>,
    /// Stops that have ended, and how many of them needed SIGKILL.
    pub stops: u64,
    pub kills: u64,
    /// How long its last stop took, from the request to the last process gone.
    pub last_stop_ms: Option<f64>,
    /// Bytes of its output its log file could not take (a full disk).
    pub log_dropped_bytes: u64,
    /// Its liveness and watchdog: `healthy`, `unhealthy 2/3`, `starting`
    /// (no check has answered yet), `watchdog 4.1s left`, joined by `, `;
    /// `None` without a health check or watchdog, or while it does not run.
    pub health: Option<String>,
    /// The last sd_notify `STATUS=` text of its current run.
    pub status_text: Option<String>,
    /// CPU time its current run has used, user and system, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory its processes use now, in bytes.
    pub memory_bytes: Option<u64>,
    /// Its live processes (the length of `pids`).
    pub processes: usize,
    /// Its stop, while one is under way.
    #[serde(default)]
    pub stop: Option<StopProgress>,
}

/// `GET /v1/unclaimed`: processes re-parented to herder that no service claims
/// (the none backend cannot always tell whose a double-forked escapee is), each
/// `pid (state) command`. They are killed at the end of the shutdown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Unclaimed {
    pub unclaimed: Vec<String>,
}
