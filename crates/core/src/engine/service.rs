//! One supervised service, split by how long each part lives.
//!
//! - [`Svc`] lives as long as the service is configured: its definition, its
//!   [`Machine`], the operator's [`Intent`], its [`Counters`], its sd_notify
//!   [`Listener`] (kept across runs, so a daemon's `$NOTIFY_SOCKET` stays valid).
//! - [`Run`] lives exactly as long as one run: from the spawn until its unit is
//!   empty. It holds the unit, the invocation id, the event pipe, the readiness
//!   task and deadline, the kill backoff and the stop log, and is dropped as one
//!   piece, so nothing of a dead run can leak into the next.
//!
//! # Caveats
//!
//! - The main process's pid is not here but in the machine's state (the one copy),
//!   and its pidfd in the process layer ([`super::Processes`]).
//! - A run ends when its unit is empty, not when its main process exits: between
//!   the two, a `Backoff` service still has a run, and its restart waits.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use herd_config::units::format_duration;
use herd_config::{Kind, ReadyCheck, Service};
use herd_contain::Unit;
use herd_sys::ExitStatus;
use herd_sys::notify::NotifySocket;

use super::Msg;
use super::health::{Liveness, Watchdog};
use crate::machine::{Machine, Policy, State, StopReason};
use herd_api::ServiceReport;

/// How old a run's CPU time and memory may be when a status shows them
/// without a new reading being due.
pub(super) const USAGE_MAX_AGE: Duration = Duration::from_secs(1);

/// How old they may be shown at all: an older reading, or none, is taken before
/// the status answers (the first ask after a quiet spell).
pub(super) const USAGE_STALE: Duration = Duration::from_secs(5);

/// The first pause before a SIGKILL is repeated, and the longest.
pub(super) const FIRST_KILL_RETRY: Duration = Duration::from_millis(100);
pub(super) const MAX_KILL_RETRY: Duration = Duration::from_secs(5);

pub(super) struct Svc {
    pub cfg: Arc<Service>,
    pub m: Machine,
    /// The current run, until every process of it is gone.
    pub run: Option<Run>,
    pub intent: Intent,
    pub counters: Counters,
    /// Its wave in a full shutdown (index into the plan's waves).
    pub stop_wave: usize,
    /// The sd_notify socket, for services that speak it.
    pub notify: Option<Listener>,
    /// Its part in the current shutdown, once its stop has ended (boxed: until
    /// then, which is most of a run, it costs a pointer, not 328 bytes).
    pub report: Option<Box<ServiceReport>>,
    /// The last sd_notify `STATUS=` of its current run.
    pub status_text: Option<String>,
    /// Its listening sockets (`sockets`), held from its first start until it
    /// is stopped for good.
    pub sockets: Option<crate::sockets::Bound>,
    /// Descriptors it handed herder (sd_notify `FDSTORE=1`), by `FDNAME`,
    /// passed to its next runs after its sockets, until it is stopped for good.
    pub fd_store: Vec<(String, std::sync::Arc<OwnedFd>)>,
    /// An on-demand service's wait for a connection on its sockets.
    pub demand: Option<crate::sockets::Watch>,
    /// With `idle_stop`, while it runs: connections arriving (those epoll
    /// sees), whether one did since the last look, and the CPU time it had
    /// used then.
    pub activity: Option<Activity>,
    /// Stopped for idleness: it waits for the next connection, sockets held.
    pub idle: bool,
}

/// What an operator (or a reload) asked of the service that is not done yet.
#[derive(Default)]
pub(super) struct Intent {
    /// Start again once its `requires` are ready (an operator's start or
    /// restart), like a pending service.
    pub rejoin: bool,
    /// A reload changed its configuration: applied once it is down.
    pub replace: Option<Arc<Service>>,
    /// A reload removed it: dropped once it is down.
    pub remove: bool,
}

impl Intent {
    /// A reload is still to be applied to the service.
    pub fn reloading(&self) -> bool {
        self.replace.is_some() || self.remove
    }
}

/// An `idle_stop` service's signs of work (see [`super::Engine::idle_due`]).
pub(super) struct Activity {
    pub _arrivals: crate::sockets::Watch,
    pub arrived: bool,
    pub cpu: Option<Duration>,
}

/// What `herd ps` and `/metrics` count over the service's life.
#[derive(Default)]
pub(super) struct Counters {
    /// Runs (spawns).
    pub runs: u64,
    /// Stops that have ended, and those that needed SIGKILL.
    pub stops: u64,
    pub kills: u64,
    /// How long the last stop took.
    pub last_stop: Option<Duration>,
    /// When, after its request, the last stop needed SIGKILL (if it did).
    pub last_kill: Option<Duration>,
    /// How the last run's main process ended.
    pub last_exit: Option<ExitStatus>,
    /// The kernel's OOM killer ended it (SIGKILL, with the unit's memory
    /// controller counting an OOM kill).
    pub last_oom: bool,
}

impl Counters {
    /// How the last run ended, as `herd ps` says it: `exit code 1`, `killed by
    /// signal 9 (out of memory)`.
    pub fn last_exit_text(&self) -> Option<String> {
        let status = self.last_exit?;
        Some(match self.last_oom {
            true => format!("{status} (out of memory)"),
            false => status.to_string(),
        })
    }
}

/// One run: everything that must not outlive it.
pub(super) struct Run {
    /// Which run of the service this is (1 for the first); timers carry it, so a
    /// late one never acts on the next run.
    pub number: u64,
    pub unit: Box<dyn Unit>,
    /// Its `HERD_INVOCATION`.
    pub invocation: String,
    /// The write end of its event pipe (`stop.notify`).
    pub events: Option<OwnedFd>,
    /// Keeps the readiness deadline (and runs a tcp/http probe).
    pub ready_task: Option<JoinHandle<()>>,
    /// When the readiness check must have passed.
    pub ready_deadline: Option<Instant>,
    /// The next pause between SIGKILLs of processes that survive them.
    pub kill_backoff: Duration,
    /// What the current stop has done so far.
    pub stop: Option<StopLog>,
    /// Its unit's emptiness is watched (from the first check that found it
    /// not empty).
    pub watched: bool,
    /// Its liveness checks, once it has been ready.
    pub liveness: Option<Liveness>,
    /// sd_notify's watchdog, once it has been ready.
    pub watchdog: Option<Watchdog>,
    /// Its CPU time and memory as last read, and when.
    usage: Option<(std::time::Instant, herd_contain::Usage)>,
    /// The processes the status that found its reading due had just listed,
    /// for the next reading (summed from /proc without a cgroup's own files).
    due_pids: Option<Vec<i32>>,
}

impl Run {
    pub fn new(number: u64, unit: Box<dyn Unit>, invocation: String) -> Run {
        Run {
            number,
            unit,
            invocation,
            events: None,
            ready_task: None,
            ready_deadline: None,
            kill_backoff: FIRST_KILL_RETRY,
            stop: None,
            watched: false,
            liveness: None,
            watchdog: None,
            usage: None,
            due_pids: None,
        }
    }

    /// CPU time, memory and processes (those of `pids`, the unit's live
    /// processes just read), and whether a new reading is due. A reading
    /// [`USAGE_MAX_AGE`] old is shown once more and said due: the engine takes
    /// the next one after answering (see [`Engine::read_usage`]), so neither a
    /// hundred clients asking at once nor a dashboard polling wait for it, and
    /// they cost one reading of each unit a second, not one a request. A
    /// reading [`USAGE_STALE`] old, or none, is taken now.
    ///
    /// [`Engine::read_usage`]: super::Engine::read_usage
    pub fn usage(&mut self, pids: &[i32], now: std::time::Instant) -> (herd_contain::Usage, bool) {
        let (usage, due) = match self.usage {
            Some((at, u)) if now.saturating_duration_since(at) < USAGE_STALE => {
                (u, now.saturating_duration_since(at) >= USAGE_MAX_AGE)
            }
            _ => (self.read_usage(pids, now), false),
        };
        if due {
            self.due_pids = Some(pids.to_vec());
        }
        let usage = herd_contain::Usage {
            processes: pids.len(),
            ..usage
        };
        (usage, due)
    }

    /// A status has shown a reading of its usage that is [`USAGE_MAX_AGE`] old.
    pub fn usage_due(&self, now: std::time::Instant) -> bool {
        self.usage
            .is_some_and(|(at, _)| now.saturating_duration_since(at) >= USAGE_MAX_AGE)
    }

    /// Reads its CPU time and memory again, over the processes the status
    /// that found the reading due listed (a moment ago: listing them again cost
    /// 10k services 50 ms more a reading).
    pub fn read_usage_now(&mut self, now: std::time::Instant) {
        let pids = match self.due_pids.take() {
            Some(pids) => pids,
            None => self.unit.pids(),
        };
        self.read_usage(&pids, now);
    }

    fn read_usage(&mut self, pids: &[i32], now: std::time::Instant) -> herd_contain::Usage {
        let u = self.unit.usage(pids);
        self.usage = Some((now, u));
        u
    }

    /// The readiness task has nothing left to do.
    pub fn end_ready_task(&mut self) {
        if let Some(t) = self.ready_task.take() {
            t.abort();
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.end_ready_task();
    }
}

/// A service's sd_notify socket and the task forwarding its datagrams.
pub(super) struct Listener {
    /// `$NOTIFY_SOCKET` for its processes.
    pub env: String,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    /// A service removed by a reload leaves no task behind; the socket closes
    /// with it.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Svc {
    /// A service not started yet.
    pub fn new(cfg: Arc<Service>, stop_wave: usize) -> Svc {
        Svc {
            m: Machine::new(policy(&cfg)),
            cfg,
            run: None,
            intent: Intent::default(),
            counters: Counters::default(),
            stop_wave,
            notify: None,
            report: None,
            status_text: None,
            sockets: None,
            fd_store: Vec::new(),
            demand: None,
            activity: None,
            idle: false,
        }
    }

    /// Takes a new definition (the service is down, or it does not matter).
    /// Sockets the new one still has stay open; changed ones close now, once
    /// the old run has stopped.
    pub fn redefine(&mut self, cfg: Arc<Service>) {
        if cfg.sockets != self.cfg.sockets {
            self.sockets = None;
        }
        self.cfg = cfg;
        self.m.policy = policy(&self.cfg);
    }

    /// The unit of the current run.
    pub fn unit(&mut self) -> Option<&mut Box<dyn Unit>> {
        self.run.as_mut().map(|r| &mut r.unit)
    }

    /// The current stop's log.
    pub fn stop_log(&mut self) -> Option<&mut StopLog> {
        self.run.as_mut().and_then(|r| r.stop.as_mut())
    }

    /// The current run's `HERD_INVOCATION`, if one runs.
    pub fn invocation(&self) -> Option<&str> {
        self.run.as_ref().map(|r| r.invocation.as_str())
    }

    /// Opens the service's notify socket if its configuration speaks sd_notify:
    /// services that report readiness with it, have a watchdog, or subscribe
    /// to stop events (STOPPING=1, EXTEND_TIMEOUT_USEC=).
    pub fn listen(&mut self, name: &str, tx: &mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
        if self.notify.is_some() || !speaks_notify(&self.cfg) {
            return Ok(());
        }
        let sock = NotifySocket::bind(&format!("herd-{}-{name}", std::process::id()))?;
        self.notify = Some(Listener {
            env: sock.env_value(),
            task: super::notify::listen(name.to_string(), sock, tx.clone())?,
        });
        Ok(())
    }
}

/// Descriptors herder holds for each running service besides its backend's
/// ([`herd_contain::Backend::descriptors_per_unit`]): the read end of its output
/// pipe (stdout and stderr share it). Its main process is herder's child,
/// signalled by pid, and needs none; a readiness check or a stop hook holds
/// nothing either while it runs (its output is discarded).
pub const DESCRIPTORS_PER_RUN: u64 = 1;

/// For a service that speaks sd_notify: its notify socket; with `stop.notify`,
/// its event pipe too. (Each of its `sockets` is one more, held from its
/// first start.)
pub const DESCRIPTORS_NOTIFY: u64 = 2;

/// Descriptors herder needs besides its services': its own (epoll, signals,
/// /dev/null slots, logs), readiness checks and stop hooks while they run.
const DESCRIPTORS_BASE: u64 = 128;

/// The descriptors a herder running every service of `config` at once needs,
/// with `per_unit` held by the backend for each: what `herd up` raises its
/// limit to, or refuses to start short of.
pub fn descriptors(config: &herd_config::Config, per_unit: u64) -> Descriptors {
    let services = config
        .services
        .values()
        .map(|s| {
            let notify = speaks_notify(s);
            s.sockets.len() as u64
                + u64::from(s.fd_store_max)
                + per_unit
                + DESCRIPTORS_PER_RUN
                + if notify { DESCRIPTORS_NOTIFY } else { 0 }
        })
        .sum();
    Descriptors {
        fixed: DESCRIPTORS_BASE + u64::from(config.supervisor.max_connections),
        services,
    }
}

/// Whether the service gets a notify socket: it says it is ready with it, has a
/// watchdog, or subscribes to stop events.
fn speaks_notify(cfg: &Service) -> bool {
    let by_notify = matches!(
        cfg.ready.as_ref().map(|r| &r.check),
        Some(ReadyCheck::Notify)
    );
    by_notify || cfg.watchdog.is_some() || cfg.stop.notify || cfg.fd_store_max > 0
}

/// What [`descriptors`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptors {
    /// herder's own and its control connections'.
    pub fixed: u64,
    /// Every service's, all running at once.
    pub services: u64,
}

impl Descriptors {
    pub fn total(&self) -> u64 {
        self.fixed + self.services
    }

    /// How many services of the average kind counted fit in `limit`.
    pub fn room(&self, limit: u64, count: usize) -> u64 {
        let each = self.services.div_ceil(count.max(1) as u64).max(1);
        limit.saturating_sub(self.fixed) / each
    }
}

/// The state machine's view of a service's configuration.
pub(super) fn policy(cfg: &Service) -> Policy {
    Policy {
        oneshot: cfg.kind == Kind::Oneshot,
        has_ready_check: cfg.ready.is_some(),
        ready_timeout: cfg.ready.as_ref().map_or(Duration::ZERO, |r| r.timeout),
        restart: cfg.restart.policy,
        backoff: cfg.restart.backoff,
        limit: cfg.restart.limit,
        stable: cfg.restart.stable,
    }
}

/// The cgroup limits of a service.
pub(super) fn limits(cfg: &Service) -> herd_contain::Limits {
    herd_contain::Limits {
        memory: cfg.limits.memory,
        pids: cfg.limits.pids,
        cpu: cfg.limits.cpu,
    }
}

/// What one stop did, for its closing line and the shutdown report. The deadline
/// is not here: it lives in the machine's `Stopping` (and `Stuck`) state.
#[derive(Clone, Debug)]
pub struct StopLog {
    pub requested: Instant,
    pub reason: StopReason,
    /// The service asked for more time (sd_notify `EXTEND_TIMEOUT_USEC=`).
    pub extended: bool,
    /// The state the stop found the service in.
    pub state: &'static str,
    /// When the shutdown event went out, or why it could not.
    pub event: Option<Result<Instant, String>>,
    pub hook_status: Option<ExitStatus>,
    /// How the main process ended.
    pub main_status: Option<ExitStatus>,
    /// How long the `stop.exec` hook took, once it has ended.
    pub hook_took: Option<Duration>,
    pub signal_at: Option<Instant>,
    pub killed_at: Option<Instant>,
    /// Processes that survived SIGKILL, at their most.
    pub stuck: usize,
}

impl StopLog {
    pub fn new(now: Instant, reason: StopReason, state: &'static str) -> StopLog {
        StopLog {
            requested: now,
            reason,
            extended: false,
            state,
            event: None,
            hook_status: None,
            main_status: None,
            hook_took: None,
            signal_at: None,
            killed_at: None,
            stuck: 0,
        }
    }

    /// `SIGTERM at +0ms, SIGKILL at +1.00s, all gone at +1.01s`; `deadline` is
    /// when SIGKILL was (or is) due.
    pub fn summary(&self, signal: &str, deadline: Option<Instant>, end: Instant) -> String {
        let at = |t: Instant| format!("+{}", format_duration(t - self.requested));
        let mut parts = Vec::new();
        if let Some(Ok(t)) = &self.event {
            parts.push(format!("event at {}", at(*t)));
        }
        if let Some(took) = self.hook_took {
            parts.push(format!("stop.exec took {}", format_duration(took)));
        }
        if let Some(t) = self.signal_at {
            parts.push(format!("{signal} at {}", at(t)));
        }
        if let Some(d) = deadline.filter(|_| self.extended && self.killed_at.is_none()) {
            parts.push(format!("deadline extended to {}", at(d)));
        }
        if let Some(t) = self.killed_at {
            parts.push(format!("SIGKILL at {}", at(t)));
        }
        if self.stuck > 0 {
            parts.push(format!(
                "{} process(es) survived SIGKILL for a while",
                self.stuck
            ));
        }
        parts.push(format!("all gone at {}", at(end)));
        parts.join(", ")
    }
}

/// When SIGKILL is (or was) due in the stop `state` is in.
pub(super) fn stop_deadline(state: &State) -> Option<Instant> {
    match state {
        State::Stopping { deadline, .. } | State::Stuck { deadline, .. } => {
            Some(Instant::from_std(*deadline))
        }
        _ => None,
    }
}
