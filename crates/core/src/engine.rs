//! The supervisor loop: one task owns every service's state machine and `select!`s
//! over SIGCHLD, shutdown signals, messages from probes, and the next timer.
//!
//! # How it works
//!
//! - **Start**: a pending service starts when every `requires` is ready (a oneshot:
//!   exited 0) and every `after` has settled (is not pending or starting). A oneshot
//!   that failed leaves its dependents pending, and herder says why.
//! - **Reaping**: on SIGCHLD the one reaper ([`herd_sys::reap`]) collects every exited
//!   child; a service's main pid turns into `MainExited`. herder is a subreaper, so
//!   orphans of a service are re-parented to it and reaped too.
//! - **Containment**: every run of a service gets a unit of the containment backend
//!   ([`herd_contain`]): a cgroup (v2 or v1 freezer) the child joins before exec, or
//!   a process tree tracked through /proc. Readiness checks and `stop.exec` hooks run
//!   in the service's unit too.
//! - **Emptiness**: once a service's main process has gone, its unit is checked on
//!   every event that can empty it: a change of `cgroup.events` (cgroup v2, epoll)
//!   and every SIGCHLD (herder is the subreaper, so the last process of a unit to exit
//!   is a child of herder's or of the unit's own). An empty unit is removed and is
//!   the `Empty` event. No polling.
//! - **Stop** (SPEC "Stop: one service"): the `stop.exec` hook, bounded by the
//!   deadline; then the stop signal by `stop.mode` (every process of the unit, or the
//!   main one; `mixed` SIGKILLs the rest once the main process is gone); SIGKILL to
//!   the whole unit at the deadline. Processes still there after SIGKILL are killed
//!   again with exponential backoff, and the service is `stuck`, with their pids,
//!   states and command lines, until they are gone. Every stop ends with a line
//!   saying what it took.
//! - **Shutdown** (SIGINT, SIGTERM): stop waves in order, each service's deadline from
//!   the budget planner; a second signal SIGKILLs everything left. Nothing starts or
//!   restarts once a shutdown has begun. Processes no unit could claim (none backend)
//!   are killed at the end. When the budget is spent, herder exits even if processes
//!   are stuck, and says which.
//!
//! # Caveats
//!
//! - What each backend can guarantee is in [`herd_contain`]'s docs; the none backend
//!   cannot attribute every double-forked escapee to its service.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use herd_config::plan::ShutdownPlan;
use herd_config::units::format_duration;
use herd_config::{Command, Config, DepGraph, Kind, ReadyCheck, Service, StopMode};
use herd_contain::procfs::INVOCATION_VAR;
use herd_contain::{Backend, Unit};
use herd_sys::notify::{Notification, NotifySocket};
use herd_sys::{ExitStatus, Pidfd};

use crate::machine::{Effect, Event, Machine, Policy, State, StopReason};
use crate::output::Output;
use crate::report::{Report, ServiceReport};
use crate::state::{Proc, StateFile};

mod control;
mod events;
mod reload;
pub use control::{Handle, Overview, ServiceStatus};
pub use events::Change;
pub use reload::ReloadPlan;

/// Messages from tasks to the loop; `pid` ties an answer to the run that asked.
enum Msg {
    Ready {
        name: String,
        pid: i32,
    },
    ReadyTimeout {
        name: String,
        pid: i32,
    },
    Notify {
        name: String,
        note: Notification,
    },
    /// A main process named by `MAINPID=` has ended.
    MainGone {
        name: String,
        pid: i32,
    },
    /// The service's cgroup may have become empty.
    UnitChanged,
    /// An operator's request (see [`control`]).
    Control(control::Request),
}

/// What a timer wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    /// The state machine (stop deadline, end of backoff).
    Machine,
    /// The next attempt of an `exec` readiness check.
    ExecCheck,
    /// SIGKILL again: processes survived the last one. Carries the run it is
    /// about, so a late retry never hits the next run.
    KillRetry(u64),
    /// The shutdown budget is spent.
    Budget,
}

struct Svc {
    cfg: Service,
    m: Machine,
    pidfd: Option<Pidfd>,
    /// The run's containment, until it is empty.
    unit: Option<Box<dyn Unit>>,
    /// What the current stop has done so far.
    stop: Option<StopLog>,
    /// The next pause between SIGKILLs of processes that survive them.
    kill_backoff: Duration,
    /// Counts the runs (spawns) of the service.
    run: u64,
    /// The run's log-readiness regex is matched by the output reader.
    ready_task: Option<tokio::task::JoinHandle<()>>,
    stop_wave: usize,
    /// `$NOTIFY_SOCKET` for services that speak sd_notify.
    notify_env: Option<String>,
    /// Forwards the notify socket's datagrams to the loop.
    notify_task: Option<tokio::task::JoinHandle<()>>,
    /// When the readiness check must have passed.
    ready_deadline: Option<Instant>,
    /// The run's `HERD_INVOCATION`.
    invocation: String,
    /// The write end of the run's event pipe (`stop.notify`).
    events: Option<OwnedFd>,
    /// How the last run's main process ended.
    last_exit: Option<ExitStatus>,
    /// Its part in the current shutdown, once its stop has ended.
    report: Option<ServiceReport>,
    /// The state before the last transition (what a stop found).
    was: &'static str,
    /// Start again once its `requires` are ready (an operator's start or restart),
    /// like a pending service.
    rejoin: bool,
    /// A reload changed its configuration: applied once it is down.
    replace: Option<Box<Service>>,
    /// A reload removed it: dropped once it is down.
    remove: bool,
    /// Stops that have ended, those that needed SIGKILL, and how long the last took
    /// (for `/metrics`).
    stops: u64,
    kills: u64,
    last_stop: Option<Duration>,
}

impl Svc {
    /// A service not started yet.
    fn new(cfg: &Service, stop_wave: usize) -> Svc {
        Svc {
            cfg: cfg.clone(),
            m: Machine::new(policy(cfg)),
            pidfd: None,
            unit: None,
            stop: None,
            kill_backoff: FIRST_KILL_RETRY,
            run: 0,
            ready_task: None,
            stop_wave,
            notify_env: None,
            notify_task: None,
            ready_deadline: None,
            invocation: String::new(),
            events: None,
            last_exit: None,
            report: None,
            was: "pending",
            rejoin: false,
            replace: None,
            remove: false,
            stops: 0,
            kills: 0,
            last_stop: None,
        }
    }

    /// Opens the service's notify socket if its configuration speaks sd_notify:
    /// services that report readiness with it, and those that subscribe to stop
    /// events (STOPPING=1, EXTEND_TIMEOUT_USEC=).
    fn listen(&mut self, name: &str, tx: &mpsc::UnboundedSender<Msg>) -> std::io::Result<()> {
        let by_notify = matches!(
            self.cfg.ready.as_ref().map(|r| &r.check),
            Some(ReadyCheck::Notify)
        );
        if self.notify_env.is_some() || !(by_notify || self.cfg.stop.notify) {
            return Ok(());
        }
        let sock = NotifySocket::bind(&format!("herd-{}-{name}", std::process::id()))?;
        self.notify_env = Some(sock.env_value());
        self.notify_task = Some(listen_notify(name.to_string(), sock, tx.clone())?);
        Ok(())
    }
}

impl Drop for Svc {
    /// A service removed by a reload leaves no task behind (its notify socket is
    /// closed with its listener).
    fn drop(&mut self) {
        for t in [self.notify_task.take(), self.ready_task.take()]
            .into_iter()
            .flatten()
        {
            t.abort();
        }
    }
}

/// The state machine's view of a service's configuration.
fn policy(cfg: &Service) -> Policy {
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

/// What one stop did, for its closing line (and the shutdown report).
#[derive(Clone, Debug)]
pub struct StopLog {
    pub requested: Instant,
    pub reason: StopReason,
    /// When SIGKILL is due (later if the service asked for more time).
    pub deadline: Instant,
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
    fn new(now: Instant, reason: StopReason, deadline: Instant, state: &'static str) -> StopLog {
        StopLog {
            requested: now,
            reason,
            deadline,
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

    /// `SIGTERM at +0ms, SIGKILL at +1.00s, all gone at +1.01s`.
    fn summary(&self, signal: &str, end: Instant) -> String {
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
        if self.extended && self.killed_at.is_none() {
            parts.push(format!("deadline extended to {}", at(self.deadline)));
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

/// How the run ended, for the exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Services that had to be SIGKILLed during the shutdown.
    pub killed: Vec<String>,
    /// Services with processes left when the budget ran out.
    pub stuck: Vec<String>,
    /// How the `main` service ended, when its end ended the run.
    pub main: Option<(String, ExitStatus)>,
    /// The shutdown report (also saved in the state directory).
    pub report: Report,
}

/// Exit code: the shutdown had to SIGKILL something (and everything is gone).
pub const EXIT_KILLED: u8 = 3;
/// Exit code: processes survived SIGKILL and were left behind (stuck).
pub const EXIT_STUCK: u8 = 4;

impl Outcome {
    /// herder's exit code: 4 if anything was left stuck; else the `main` service's
    /// code when its end ended the run (128 + N for a signal, as a shell shows
    /// it); else 3 if anything had to be SIGKILLed; else 0.
    pub fn exit_code(&self) -> u8 {
        if !self.stuck.is_empty() {
            return EXIT_STUCK;
        }
        if let Some((_, status)) = &self.main {
            return match status {
                ExitStatus::Code(c) => (*c & 0xff) as u8,
                ExitStatus::Signal(s) => (128 + *s).min(255) as u8,
                ExitStatus::Unknown => 1,
            };
        }
        if self.killed.is_empty() {
            0
        } else {
            EXIT_KILLED
        }
    }
}

/// How the engine runs, besides the configuration.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Logs, the state file and shutdown reports.
    pub state_dir: PathBuf,
    /// The file SIGHUP re-reads.
    pub config_file: Option<PathBuf>,
    /// PID 1 duty: at the end, herder's remaining children (orphans no service
    /// claimed) are killed and reaped before it exits.
    pub init: bool,
}

pub struct Engine {
    svcs: BTreeMap<String, Svc>,
    /// The configuration in force (the last one a reload applied).
    config: Config,
    /// Every state change, to subscribers (the socket's event stream).
    events: tokio::sync::broadcast::Sender<Change>,
    plan: ShutdownPlan,
    out: Output,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// A message taken from `rx` while answering a burst of status requests,
    /// handled on the loop's next turn.
    deferred: Option<Msg>,
    timers: BTreeSet<(Instant, String, Wake)>,
    shutdown: Option<Shutdown>,
    killed: BTreeSet<String>,
    /// Running `exec` readiness checks: check pid -> (service, its main pid, pidfd).
    checks: HashMap<i32, (String, i32, Pidfd)>,
    /// Running `stop.exec` hooks: pid -> service.
    hooks: HashMap<i32, String>,
    backend: Box<dyn Backend>,
    /// Watches every unit's `cgroup.events` (cgroup v2).
    unit_watch: Option<Arc<herd_sys::watch::PriorityWatch>>,
    opts: Options,
    /// The service whose end ends the run.
    main: Option<String>,
    /// Set when `main` ended the run.
    main_ended: Option<(String, ExitStatus)>,
    /// What runs has changed since the state file was written.
    state_dirty: bool,
    /// Operators' stops waiting for their dependents to stop first.
    stop_queue: Vec<control::QueuedStop>,
    /// Operators waiting for a service to be up or down.
    waiters: Vec<control::Waiter>,
}

struct Shutdown {
    trigger: String,
    started: Instant,
    started_wall: std::time::SystemTime,
    waves_at: Vec<Instant>,
    strays: usize,
    /// Init mode: herder's own remaining children have been killed.
    orphans_killed: bool,
    wave: usize,
    wave_started: Instant,
    /// The budget has run out: herder exits even with processes stuck.
    spent: bool,
    /// Strays (processes no unit claimed) have been killed.
    strays_killed: bool,
}

impl Engine {
    /// Prepares the services of `config`; every run of a service is contained by
    /// `backend`.
    pub fn new(
        config: &Config,
        opts: Options,
        backend: Box<dyn Backend>,
    ) -> std::io::Result<Engine> {
        // What the backend made at start-up (cgroups) must not outlive a failed
        // start: it is released before the error is returned.
        let release = |e: std::io::Error| {
            for problem in backend.close() {
                note(&problem);
            }
            e
        };
        let log_dir = opts.state_dir.join("logs");
        std::fs::create_dir_all(&log_dir).map_err(release)?;
        let width = config
            .services
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(4)
            .max(4);
        let plan = herd_config::shutdown_plan(config);
        let mut stop_wave = HashMap::new();
        for (i, w) in plan.waves.iter().enumerate() {
            for s in &w.services {
                stop_wave.insert(s.name.clone(), i);
            }
        }
        let mut svcs = config
            .services
            .iter()
            .map(|(name, cfg)| (name.clone(), Svc::new(cfg, stop_wave[name])))
            .collect::<BTreeMap<String, Svc>>();
        let (tx, rx) = mpsc::unbounded_channel();
        for (name, svc) in svcs.iter_mut() {
            svc.listen(name, &tx).map_err(release)?;
        }
        // Only the graph's validity matters here; the waves come from the plan.
        debug_assert!(DepGraph::new(&config.services).cycles().is_empty());
        Ok(Engine {
            svcs,
            config: config.clone(),
            events: tokio::sync::broadcast::Sender::new(events::CAPACITY),
            plan,
            out: Output::start(width, Some(log_dir), config.logs.max_size, config.logs.keep),
            tx,
            rx,
            deferred: None,
            timers: BTreeSet::new(),
            shutdown: None,
            killed: BTreeSet::new(),
            checks: HashMap::new(),
            hooks: HashMap::new(),
            backend,
            unit_watch: None,
            opts,
            main: config.main.clone(),
            main_ended: None,
            state_dirty: true,
            stop_queue: Vec::new(),
            waiters: Vec::new(),
        })
    }

    /// The epoll set watching every unit's `cgroup.events`, made (with the task
    /// that forwards its wake-ups) the first time one is needed. A unit's
    /// descriptor leaves it when the unit is dropped.
    fn unit_watch(&mut self) -> std::io::Result<&herd_sys::watch::PriorityWatch> {
        if self.unit_watch.is_none() {
            let watch = Arc::new(herd_sys::watch::PriorityWatch::new()?);
            let (w, tx) = (watch.clone(), self.tx.clone());
            tokio::spawn(async move {
                while w.changed().await.is_ok() {
                    if tx.send(Msg::UnitChanged).is_err() {
                        return;
                    }
                }
            });
            self.unit_watch = Some(watch);
        }
        Ok(self.unit_watch.as_deref().expect("made above"))
    }

    /// A handle for other tasks to send requests with.
    pub fn handle(&self) -> Handle {
        Handle {
            tx: self.tx.clone(),
            events: self.events.clone(),
        }
    }

    /// Runs until a shutdown has stopped everything.
    pub async fn run(mut self) -> std::io::Result<Outcome> {
        // Registered before the first spawn, so no exit can go unnoticed.
        let mut sig = match Signals::register() {
            Ok(s) => s,
            Err(e) => {
                for problem in self.backend.close() {
                    note(&problem);
                }
                return Err(e);
            }
        };
        if let Err(e) = herd_sys::become_subreaper() {
            note(&format!(
                "cannot become a subreaper ({e}): orphans go to init"
            ));
        }
        loop {
            self.schedule();
            // Once per wake-up, however many runs began or ended in it: starting
            // 500 services writes the file a few times, not 500.
            if self.state_dirty {
                self.save_state();
            }
            if let Some(outcome) = self.finished() {
                let _ = self.events.send(Change::Finished {
                    at_ms: events::now_ms(),
                    exit_code: outcome.exit_code(),
                    report: Box::new(outcome.report.clone()),
                });
                for problem in self.backend.close() {
                    note(&problem);
                }
                return Ok(outcome);
            }
            if let Some(msg) = self.deferred.take() {
                self.on_msg(msg);
                continue;
            }
            let next = self.timers.first().map(|(t, _, _)| *t);
            tokio::select! {
                _ = sig.chld.recv() => self.on_sigchld(),
                _ = sig.int.recv() => self.on_shutdown_signal("SIGINT"),
                _ = sig.term.recv() => self.on_shutdown_signal("SIGTERM"),
                _ = sig.hup.recv() => self.on_sighup(),
                _ = sig.quit.recv() => self.dump(),
                _ = sig.usr1.recv() => self.forward(libc::SIGUSR1, "SIGUSR1"),
                _ = sig.usr2.recv() => self.forward(libc::SIGUSR2, "SIGUSR2"),
                _ = sig.winch.recv() => self.forward(libc::SIGWINCH, "SIGWINCH"),
                Some(msg) = self.rx.recv() => {
                    if matches!(msg, Msg::Control(control::Request::Status { .. })) {
                        self.gather_status_requests().await;
                    }
                    self.on_msg(msg)
                }
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => self.on_timers(),
            }
        }
    }

    /// `herd ps` from many clients at once reaches the engine over several
    /// wake-ups, and each answer costs a read of every service's cgroup. Before
    /// that walk, the tasks already woken run, and I/O that has arrived is taken
    /// in, for as long as that brings more requests (a few rounds at most): one
    /// walk then answers the whole burst. Each request is still answered with a
    /// snapshot taken after it was made.
    async fn gather_status_requests(&mut self) {
        const ROUNDS: usize = 8;
        let mut queued = self.rx.len();
        for _ in 0..ROUNDS {
            tokio::task::yield_now().await;
            let now = self.rx.len();
            if now == queued {
                break;
            }
            queued = now;
        }
    }

    /// Passes a signal herder does not act on to the services: the `main` service
    /// if there is one, else every running service's main process.
    fn forward(&mut self, sig: i32, name: &str) {
        let targets: Vec<String> = match &self.main {
            Some(m) => vec![m.clone()],
            None => self.svcs.keys().cloned().collect(),
        };
        let mut sent = Vec::new();
        for t in targets {
            let svc = &self.svcs[&t];
            // A pidfd, never a pid: the main process may have just exited.
            if let Some(fd) = &svc.pidfd
                && svc.m.state.pid().is_some()
                && matches!(fd.signal(sig), Ok(true))
            {
                sent.push(t);
            }
        }
        if sent.is_empty() {
            note(&format!("{name}: no running service to forward it to"));
        } else {
            note(&format!("{name}: forwarded to {}", sent.join(", ")));
        }
    }

    /// SIGHUP: the configuration file is read, validated and applied by
    /// difference, as `herd reload` would (see [`reload`]).
    fn on_sighup(&mut self) {
        match self.reload_file("SIGHUP") {
            Ok(_) => {}
            Err(e) => {
                let mut lines = e.lines();
                note(&format!("SIGHUP: {}", lines.next().unwrap_or_default()));
                for line in lines {
                    note(&format!("  {line}"));
                }
            }
        }
    }

    /// SIGQUIT: every service's state, processes and stop so far, to the log.
    fn dump(&mut self) {
        let now = Instant::now();
        note(&format!(
            "SIGQUIT: state dump ({} backend{})",
            self.backend.kind(),
            match &self.shutdown {
                Some(sd) => format!(
                    "; shutting down for {} ({}), wave {} of {}",
                    format_duration(now - sd.started),
                    sd.trigger,
                    sd.wave + 1,
                    self.plan.waves.len()
                ),
                None => String::new(),
            }
        ));
        for (name, svc) in self.svcs.iter_mut() {
            let pids = svc.unit.as_mut().map(|u| u.pids()).unwrap_or_default();
            let mut line = format!(
                "  {name}: {} (run {}, invocation {})",
                svc.m.state.name(),
                svc.run,
                if svc.invocation.is_empty() {
                    "-"
                } else {
                    &svc.invocation
                }
            );
            if let Some(pid) = svc.m.state.pid() {
                line.push_str(&format!(", main pid {pid}"));
            }
            if !pids.is_empty() {
                line.push_str(&format!(", {} process(es) {pids:?}", pids.len()));
            }
            if let Some(log) = &svc.stop {
                line.push_str(&format!(
                    ", stopping ({}) for {}, SIGKILL due in {}",
                    log.reason.name(),
                    format_duration(now - log.requested),
                    format_duration(log.deadline.saturating_duration_since(now))
                ));
            }
            if let Some(st) = svc.last_exit {
                line.push_str(&format!(", last exit: {st}"));
            }
            note(&line);
        }
        let strays = self.backend.strays();
        if !strays.is_empty() {
            note(&format!("  processes no service claimed: {strays:?}"));
        }
    }

    fn step(&mut self, name: &str, event: Event) {
        let now = Instant::now();
        let jitter = jitter();
        let svc = self.svcs.get_mut(name).expect("known service");
        let before = svc.m.state.name();
        svc.was = before;
        let effects = svc.m.step(event, now.into_std(), jitter);
        let after = svc.m.state.name();
        if matches!(svc.m.state, State::Ready { .. })
            && let Some(t) = svc.ready_task.take()
        {
            // Ready: the task keeping the readiness deadline has nothing left to do.
            t.abort();
        }
        if before != after {
            let detail = match &svc.m.state {
                State::Ready { pid, .. } | State::Starting { pid, .. } if *pid > 0 => {
                    Some(format!("pid {pid}"))
                }
                State::Exited { status } => Some(status.to_string()),
                State::Failed { reason } => Some(reason.clone()),
                State::Backoff { until } => Some(format!(
                    "restart in {}",
                    format_duration(until.saturating_duration_since(now.into_std()))
                )),
                State::Stuck { pids } => Some(format!("pids {pids:?}")),
                State::Stopping { reason, .. } => Some(format!("reason: {}", reason.name())),
                _ => None,
            };
            match (&svc.m.state, &detail) {
                (State::Failed { .. }, Some(d)) => note(&format!("{name} {after}: {d}")),
                (State::Stopping { .. }, _) | (_, None) => note(&format!("{name} {after}")),
                (_, Some(d)) => note(&format!("{name} {after} ({d})")),
            }
            let _ = self.events.send(Change::State {
                at_ms: events::now_ms(),
                service: name.to_string(),
                from: before.to_string(),
                to: after.to_string(),
                pid: svc.m.state.pid().filter(|p| *p > 0),
                detail,
            });
        }
        for e in effects {
            self.apply(name, e);
        }
        self.check_main(name);
    }

    /// The `main` service has ended for good (not to be restarted): the run ends
    /// with it, and its exit status becomes herder's.
    fn check_main(&mut self, name: &str) {
        if self.shutdown.is_some() || self.main.as_deref() != Some(name) {
            return;
        }
        let svc = &self.svcs[name];
        let status = match &svc.m.state {
            State::Exited { status } => *status,
            State::Failed { .. } => svc.last_exit.unwrap_or(ExitStatus::Code(1)),
            State::Stopped => svc.last_exit.unwrap_or(ExitStatus::Code(0)),
            _ => return,
        };
        self.main_ended = Some((name.to_string(), status));
        self.begin_shutdown(format!("main service {name} ended ({status})"));
    }

    fn apply(&mut self, name: &str, effect: Effect) {
        match effect {
            Effect::Spawn => self.spawn(name),
            Effect::WatchReadiness { deadline } => self.watch_readiness(name, deadline.into()),
            Effect::SignalStop => self.signal_stop(name),
            Effect::KillAll => self.kill_all(name),
            Effect::Timer { at } => {
                self.timers
                    .insert((at.into(), name.to_string(), Wake::Machine));
            }
            Effect::Log(msg) => note(&format!("{name}: {msg}")),
        }
    }

    fn spawn(&mut self, name: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let invocation = herd_contain::procfs::new_invocation();
        let mut extra: Vec<(String, String)> = svc
            .notify_env
            .iter()
            .map(|v| ("NOTIFY_SOCKET".to_string(), v.clone()))
            .collect();
        extra.push((INVOCATION_VAR.into(), invocation.clone()));
        // The event pipe: the service reads, herder writes (never blocking).
        let pipe = if svc.cfg.stop.notify {
            match event_pipe() {
                Ok((r, w)) => {
                    extra.push((
                        "HERD_EVENTS_FD".into(),
                        herd_sys::spawn::FIRST_INHERITED_FD.to_string(),
                    ));
                    Some((Arc::new(r), w))
                }
                Err(e) => {
                    let reason = format!("cannot make its event pipe: {e}");
                    return self.step(name, Event::SpawnFailed { reason });
                }
            }
        } else {
            None
        };
        let mut spec = match crate::spec::build(&svc.cfg, &extra) {
            Ok(s) => s,
            Err(reason) => return self.step(name, Event::SpawnFailed { reason }),
        };
        spec.inherit = pipe.iter().map(|(r, _)| r.clone()).collect();
        let mut unit = match self.backend.create(name, &limits(&svc.cfg)) {
            Ok(u) => u,
            Err(e) => {
                return self.step(
                    name,
                    Event::SpawnFailed {
                        reason: format!("cannot create its {} unit: {e}", self.backend.kind()),
                    },
                );
            }
        };
        unit.set_invocation(&invocation);
        spec.cgroup = unit.join();
        let child = match herd_sys::spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                let _ = unit.remove();
                return self.step(
                    name,
                    Event::SpawnFailed {
                        reason: e.to_string(),
                    },
                );
            }
        };
        let pid = child.pid;
        unit.started(pid);
        if let Some(fd) = unit.events() {
            if let Err(e) = self.unit_watch().and_then(|w| w.add(fd)) {
                note(&format!(
                    "{name}: cannot watch its cgroup.events ({e}); its end is noticed on SIGCHLD only"
                ));
            }
        }
        let svc = self.svcs.get_mut(name).expect("known service");
        svc.unit = Some(unit);
        svc.invocation = invocation;
        // The read end now lives in the child only.
        svc.events = pipe.map(|(_, w)| w);
        svc.run += 1;
        svc.kill_backoff = FIRST_KILL_RETRY;
        svc.pidfd = Some(child.pidfd);
        let log_re = match svc.cfg.ready.as_ref().map(|r| &r.check) {
            Some(ReadyCheck::Log(re)) => regex_lite::Regex::new(re).ok(),
            _ => None,
        };
        for fd in [child.stdout, child.stderr].into_iter().flatten() {
            let tx = self.tx.clone();
            let (n, re) = (name.to_string(), log_re.clone());
            let mut sent = false;
            let on_line = move |line: &str| {
                if !sent && re.as_ref().is_some_and(|r| r.is_match(line)) {
                    sent = true;
                    let _ = tx.send(Msg::Ready {
                        name: n.clone(),
                        pid,
                    });
                }
            };
            if let Err(e) = self.out.capture(name, fd, on_line) {
                note(&format!("{name}: cannot capture output: {e}"));
            }
        }
        self.state_dirty = true;
        self.step(name, Event::Spawned { pid });
    }

    fn watch_readiness(&mut self, name: &str, deadline: Instant) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Some(ready) = svc.cfg.ready.clone() else {
            return;
        };
        let Some(pid) = svc.m.state.pid() else { return };
        svc.ready_deadline = Some(deadline);
        let tx = self.tx.clone();
        let n = name.to_string();
        let answered_elsewhere = matches!(
            ready.check,
            ReadyCheck::Log(_) | ReadyCheck::Notify | ReadyCheck::Exec(_)
        );
        if matches!(ready.check, ReadyCheck::Exec(_)) {
            self.run_exec_check(name);
        }
        let svc = self.svcs.get_mut(name).expect("known service");
        svc.ready_task = Some(tokio::spawn(async move {
            if answered_elsewhere {
                // The output reader, the notify socket or the reaper answers; this
                // task only keeps the deadline.
                tokio::time::sleep_until(deadline).await;
                let _ = tx.send(Msg::ReadyTimeout { name: n, pid });
                return;
            }
            let msg = if crate::ready::probe(ready.check, ready.interval, deadline).await {
                Msg::Ready { name: n, pid }
            } else {
                Msg::ReadyTimeout { name: n, pid }
            };
            let _ = tx.send(msg);
        }));
    }

    /// The start of a stop: the `stop.exec` hook if there is one (the signal follows
    /// when it ends), else the stop signal.
    fn signal_stop(&mut self, name: &str) {
        let now = Instant::now();
        let svc = self.svcs.get_mut(name).expect("known service");
        let State::Stopping {
            reason, deadline, ..
        } = svc.m.state
        else {
            return;
        };
        let mut log = StopLog::new(now, reason, deadline.into(), svc.was);
        if svc.cfg.stop.notify {
            log.event = Some(deliver_stop_event(
                svc.events.as_ref(),
                reason,
                deadline.into(),
            ));
            match &log.event {
                Some(Err(e)) => note(&format!("{name}: shutdown event not delivered: {e}")),
                _ => note(&format!(
                    "{name}: shutdown event delivered (reason {}, {} left)",
                    reason.name(),
                    format_duration(deadline.saturating_duration_since(now.into_std()))
                )),
            }
        }
        svc.stop = Some(log);
        svc.kill_backoff = FIRST_KILL_RETRY;
        if let Some(argv) = svc.cfg.stop.exec.clone() {
            match self.run_hook(name, argv) {
                Ok(()) => return,
                Err(e) => note(&format!("{name}: stop.exec cannot run: {e}")),
            }
        }
        self.send_stop_signal(name);
    }

    /// Runs the `stop.exec` hook in the service's unit, as the service, with the
    /// reason and deadline in its environment.
    fn run_hook(&mut self, name: &str, argv: Vec<String>) -> Result<(), String> {
        let svc = self.svcs.get_mut(name).expect("known service");
        let State::Stopping {
            reason, deadline, ..
        } = svc.m.state
        else {
            return Err("not stopping".into());
        };
        let left = deadline.saturating_duration_since(Instant::now().into_std());
        // The hook may speak sd_notify for the service (EXTEND_TIMEOUT_USEC=).
        let mut extra = vec![(INVOCATION_VAR.to_string(), svc.invocation.clone())];
        if let Some(sock) = &svc.notify_env {
            extra.push(("NOTIFY_SOCKET".into(), sock.clone()));
        }
        let mut spec = crate::spec::build(&svc.cfg, &extra)?;
        spec.argv = argv;
        spec.discard_output = true;
        spec.env
            .push(("HERD_STOP_REASON".into(), reason.name().into()));
        spec.env
            .push(("HERD_STOP_DEADLINE_MS".into(), left.as_millis().to_string()));
        spec.env
            .push(("HERD_STOP_DEADLINE".into(), unix_ms_in(left).to_string()));
        spec.cgroup = svc.unit.as_ref().and_then(|u| u.join());
        let child = herd_sys::spawn(&spec).map_err(|e| e.to_string())?;
        if let Some(u) = &mut svc.unit {
            u.started(child.pid);
        }
        self.hooks.insert(child.pid, name.to_string());
        Ok(())
    }

    fn hook_done(&mut self, name: &str, status: ExitStatus) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Some(log) = &mut svc.stop else { return };
        log.hook_took = Some(log.requested.elapsed());
        log.hook_status = Some(status);
        if !status.success() {
            note(&format!("{name}: stop.exec ended with {status}"));
        }
        // Past the deadline SIGKILL has already gone out; otherwise the signal is due.
        if matches!(
            svc.m.state,
            State::Stopping {
                escalated: false,
                ..
            }
        ) {
            self.send_stop_signal(name);
        }
    }

    fn send_stop_signal(&mut self, name: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let sig = svc.cfg.stop.signal.0;
        if let Some(log) = &mut svc.stop {
            log.signal_at = Some(Instant::now());
        }
        let result = match (svc.cfg.stop.mode, &svc.pidfd, &mut svc.unit) {
            (StopMode::Group, _, Some(unit)) => unit.signal(sig).map(|n| n > 0),
            (_, Some(pidfd), _) => pidfd.signal(sig),
            _ => Ok(false),
        };
        if let Err(e) = result {
            note(&format!("{name}: cannot send {}: {e}", svc.cfg.stop.signal));
        }
    }

    /// SIGKILL to everything of the service; retried while processes survive it.
    fn kill_all(&mut self, name: &str) {
        if self.shutdown.is_some() {
            self.killed.insert(name.to_string());
        }
        let now = Instant::now();
        let svc = self.svcs.get_mut(name).expect("known service");
        if let Some(log) = &mut svc.stop {
            log.killed_at.get_or_insert(now);
        }
        if let Some(Err(e)) = svc.pidfd.as_ref().map(|p| p.signal(SIGKILL)) {
            note(&format!("{name}: SIGKILL of the main process failed: {e}"));
        }
        if let Some(Err(e)) = svc.unit.as_mut().map(|u| u.kill()) {
            note(&format!("{name}: SIGKILL failed: {e}"));
        }
        if svc.unit.is_some() {
            let at = now + svc.kill_backoff;
            self.timers
                .insert((at, name.to_string(), Wake::KillRetry(svc.run)));
        }
    }

    /// A SIGKILL is some time old and the unit is not empty: processes survive it
    /// (uninterruptible sleep, a frozen cgroup). Kill again, with backoff, and say
    /// which processes they are.
    fn kill_retry(&mut self, name: &str, run: u64) {
        let svc = self.svcs.get_mut(name).expect("known service");
        if svc.run != run {
            return;
        }
        let Some(unit) = &mut svc.unit else { return };
        if unit.is_empty() {
            return;
        }
        let left = herd_contain::procfs::leftovers(&unit.pids());
        if let Some(log) = &mut svc.stop {
            log.stuck = log.stuck.max(left.len());
        }
        let waited = svc.kill_backoff;
        svc.kill_backoff = (svc.kill_backoff * 2).min(MAX_KILL_RETRY);
        note(&format!(
            "{name}: {} process(es) still there {} after SIGKILL; killing again:",
            left.len(),
            format_duration(waited)
        ));
        for l in &left {
            note(&format!("{name}:   {l}"));
        }
        let pids = left.iter().map(|l| l.pid).collect();
        if matches!(svc.m.state, State::Stopping { .. } | State::Stuck { .. }) {
            self.step(name, Event::KillFailed { pids });
        }
        self.kill_all(name);
    }

    fn on_sigchld(&mut self) {
        for (pid, status) in herd_sys::reap() {
            if let Some((name, svc_pid, _)) = self.checks.remove(&pid) {
                self.exec_check_done(&name, svc_pid, status);
                continue;
            }
            if let Some(name) = self.hooks.remove(&pid) {
                self.hook_done(&name, status);
                continue;
            }
            let owner = self
                .svcs
                .iter()
                .find(|(_, s)| s.m.state.pid() == Some(pid))
                .map(|(n, _)| n.clone());
            if let Some(name) = owner {
                self.main_exited(&name, status);
            }
        }
        self.check_empty();
    }

    fn main_exited(&mut self, name: &str, status: ExitStatus) {
        let svc = self.svcs.get_mut(name).expect("known service");
        svc.pidfd = None;
        svc.last_exit = Some(status);
        if let Some(log) = &mut svc.stop {
            log.main_status = Some(status);
        }
        if let Some(t) = svc.ready_task.take() {
            t.abort();
        }
        let stopping = matches!(svc.m.state, State::Stopping { .. });
        let mixed = svc.cfg.stop.mode == StopMode::Mixed;
        self.step(name, Event::MainExited { status });
        let svc = self.svcs.get_mut(name).expect("known service");
        // Leftovers of a run that ended on its own must not outlive it; in `mixed`
        // mode, the rest of the unit is killed once the main process is gone.
        if (!stopping || mixed)
            && let Some(unit) = &mut svc.unit
            && !unit.is_empty()
        {
            if !stopping {
                note(&format!(
                    "{name}: main process gone; killing the rest of it"
                ));
            }
            self.kill_all(name);
        }
    }

    /// Turns units with no process left into `Empty` events, and removes them.
    fn check_empty(&mut self) {
        let hooked: BTreeSet<&String> = self.hooks.values().collect();
        let gone: Vec<String> = self
            .svcs
            .iter_mut()
            .filter(|(_, s)| s.m.state.pid().is_none())
            // A hook's exit is handled when it is reaped, before its unit counts.
            .filter(|(n, _)| !hooked.contains(n))
            .filter_map(|(n, s)| {
                s.unit
                    .as_mut()
                    .is_some_and(|u| u.is_empty())
                    .then(|| n.clone())
            })
            .collect();
        let now = Instant::now();
        for name in gone {
            let svc = self.svcs.get_mut(&name).expect("known");
            if let Some(mut unit) = svc.unit.take()
                && let Err(e) = unit.remove()
            {
                note(&format!(
                    "{name}: cannot remove its {}: {e}",
                    self.backend.kind()
                ));
            }
            let signal = svc.cfg.stop.signal.to_string();
            if let Some(log) = svc.stop.take()
                && matches!(svc.m.state, State::Stopping { .. } | State::Stuck { .. })
            {
                note(&format!("{name}: {}", log.summary(&signal, now)));
                svc.stops += 1;
                svc.kills += u64::from(log.killed_at.is_some());
                svc.last_stop = Some(now - log.requested);
                if let Some(sd) = &self.shutdown {
                    svc.report = Some(service_report(&name, svc, &log, Some(now), sd.started));
                }
            }
            // While shutting down the file only loses entries, and a stale one costs
            // a recovery nothing (each recorded process is checked to still be that
            // process): it is written once, when the shutdown ends. Rewriting it
            // here replaced a file on disk per wake-up, and on ext4 mounted with
            // `discard` freeing the old file's blocks waits for the device.
            if self.shutdown.is_none() {
                self.state_dirty = true;
            }
            match self.svcs[&name].m.state {
                State::Stopping { .. } | State::Stuck { .. } => self.step(&name, Event::Empty),
                State::Backoff { until } if until <= now.into_std() => self.end_backoff(&name),
                _ => {}
            }
        }
    }

    fn on_msg(&mut self, msg: Msg) {
        let (name, pid, event) = match msg {
            Msg::Ready { name, pid } => (name, pid, Event::ReadyCheckPassed),
            Msg::ReadyTimeout { name, pid } => (name, pid, Event::ReadyTimeout),
            // About a service a reload has removed since.
            Msg::Notify { ref name, .. } | Msg::MainGone { ref name, .. }
                if !self.svcs.contains_key(name) =>
            {
                return;
            }
            Msg::Notify { name, note } => return self.on_notify(&name, note),
            Msg::UnitChanged => return self.check_empty(),
            Msg::Control(req) => return self.on_request(req),
            Msg::MainGone { name, pid } => {
                // If herder is its parent, the reaper has its real status.
                self.on_sigchld();
                if self.svcs[&name].m.state.pid() == Some(pid) {
                    self.main_exited(&name, ExitStatus::Unknown);
                }
                return;
            }
        };
        // An answer about an earlier run of the service is stale.
        if self
            .svcs
            .get(&name)
            .is_some_and(|s| s.m.state.pid() == Some(pid))
        {
            if event == Event::ReadyTimeout {
                self.kill_checks(&name);
            }
            self.step(&name, event);
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some((at, name, wake)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if !name.is_empty() && !self.svcs.contains_key(&name) {
                continue;
            }
            match wake {
                Wake::ExecCheck => {
                    if matches!(self.svcs[&name].m.state, State::Starting { .. }) {
                        self.run_exec_check(&name);
                    }
                    continue;
                }
                Wake::KillRetry(run) => {
                    self.kill_retry(&name, run);
                    continue;
                }
                Wake::Budget => {
                    if let Some(sd) = &mut self.shutdown
                        && !sd.spent
                    {
                        sd.spent = true;
                        note("the shutdown budget is spent: SIGKILL to everything left");
                        self.kill_everything();
                    }
                    continue;
                }
                Wake::Machine => {}
            }
            match self.svcs[&name].m.state {
                State::Stopping { deadline, .. } if deadline <= now.into_std() => {
                    self.step(&name, Event::Deadline)
                }
                State::Backoff { until } if until <= now.into_std() => self.end_backoff(&name),
                _ => {}
            }
        }
    }

    /// Starts one attempt of a service's `exec` readiness check, as the service's user,
    /// in its directory and environment, output discarded.
    fn run_exec_check(&mut self, name: &str) {
        let svc = &self.svcs[name];
        let (Some(svc_pid), Some(ReadyCheck::Exec(argv))) =
            (svc.m.state.pid(), svc.cfg.ready.as_ref().map(|r| &r.check))
        else {
            return;
        };
        let inv = [(INVOCATION_VAR.into(), svc.invocation.clone())];
        let spec = crate::spec::build(&svc.cfg, &inv).map(|s| herd_sys::Spec {
            argv: argv.clone(),
            discard_output: true,
            cgroup: svc.unit.as_ref().and_then(|u| u.join()),
            ..s
        });
        match spec.map(|s| herd_sys::spawn(&s).map_err(|e| e.to_string())) {
            Ok(Ok(child)) => {
                if let Some(u) = &mut self.svcs.get_mut(name).expect("known").unit {
                    u.started(child.pid);
                }
                self.checks
                    .insert(child.pid, (name.to_string(), svc_pid, child.pidfd));
            }
            Ok(Err(e)) | Err(e) => {
                note(&format!("{name}: readiness check cannot run: {e}"));
                self.retry_exec_check(name);
            }
        }
    }

    fn exec_check_done(&mut self, name: &str, svc_pid: i32, status: ExitStatus) {
        if self.svcs[name].m.state.pid() != Some(svc_pid) {
            return; // about an earlier run
        }
        if status.success() {
            self.step(name, Event::ReadyCheckPassed);
        } else {
            self.retry_exec_check(name);
        }
    }

    fn retry_exec_check(&mut self, name: &str) {
        let svc = &self.svcs[name];
        let interval = svc
            .cfg
            .ready
            .as_ref()
            .map_or(Duration::ZERO, |r| r.interval);
        let at = Instant::now() + interval;
        // Past the deadline the timeout answers; no attempt is started.
        if svc.ready_deadline.is_some_and(|d| at < d) {
            self.timers.insert((at, name.to_string(), Wake::ExecCheck));
        }
    }

    fn kill_checks(&mut self, name: &str) {
        for (n, _, pidfd) in self.checks.values() {
            if n == name {
                let _ = herd_sys::pidfd::signal_group(pidfd.pid(), SIGKILL);
            }
        }
    }

    /// An sd_notify datagram: acted on only if a process of the service sent it.
    fn on_notify(&mut self, name: &str, msg: Notification) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let main = svc.m.state.pid();
        let ours = msg
            .pid
            .is_some_and(|p| Some(p) == main || svc.unit.as_mut().is_some_and(|u| u.owns(p)));
        if !ours {
            note(&format!(
                "{name}: ignored a notification from pid {}: not a process of this service",
                msg.pid.map_or("unknown".into(), |p| p.to_string())
            ));
            return;
        }
        let by_notify = matches!(
            svc.cfg.ready.as_ref().map(|r| &r.check),
            Some(ReadyCheck::Notify)
        );
        for line in msg.text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) if by_notify => self.step(name, Event::ReadyCheckPassed),
                Some(("RELOADING", "1")) => self.step(name, Event::NotReady),
                Some(("STATUS", status)) => note(&format!("{name}: status: {status}")),
                Some(("STOPPING", "1")) => note(&format!("{name}: says it is stopping")),
                Some(("MAINPID", pid)) => self.main_pid(name, pid),
                Some(("EXTEND_TIMEOUT_USEC", usec)) => self.extend(name, usec),
                _ => {}
            }
        }
        // Only now may a BARRIER=1 sender go on.
        drop(msg.fds);
    }

    /// sd_notify `EXTEND_TIMEOUT_USEC=`: while stopping, SIGKILL is put off until that
    /// long from now (as systemd: the service must ask again before it runs out),
    /// never beyond what the budget allows: in a shutdown, the latest its wave may
    /// SIGKILL and still leave the later waves their share; otherwise the shutdown
    /// budget from the start of the stop. Elsewhere it is not honoured, and herder
    /// says so.
    fn extend(&mut self, name: &str, value: &str) {
        let Ok(usec) = value.trim().parse::<u64>() else {
            return note(&format!(
                "{name}: EXTEND_TIMEOUT_USEC={value}: not a number; ignored"
            ));
        };
        let now = Instant::now();
        let cap = match &self.shutdown {
            Some(sd) => {
                let wave = self.svcs[name].stop_wave;
                sd.started
                    + self
                        .plan
                        .waves
                        .get(wave)
                        .map_or(self.plan.budget, |w| w.latest_kill_at)
            }
            None => self.svcs[name]
                .stop
                .as_ref()
                .map_or(now, |l| l.requested + self.plan.budget),
        };
        let svc = self.svcs.get_mut(name).expect("known service");
        let State::Stopping {
            deadline,
            escalated: false,
            ..
        } = svc.m.state
        else {
            return note(&format!(
                "{name}: EXTEND_TIMEOUT_USEC={value} ignored: honoured only while stopping, before SIGKILL"
            ));
        };
        // A value too large for the clock asks for more than any cap.
        let capped = now
            .checked_add(Duration::from_micros(usec))
            .is_none_or(|want| want > cap);
        let granted = if capped {
            cap
        } else {
            now + Duration::from_micros(usec)
        };
        if granted <= Instant::from(deadline) {
            return note(&format!(
                "{name}: EXTEND_TIMEOUT_USEC={value}: the deadline stays in {} ({})",
                format_duration(Instant::from(deadline).saturating_duration_since(now)),
                if capped {
                    "the budget allows no more"
                } else {
                    "already later"
                }
            ));
        }
        if let Some(log) = &mut svc.stop {
            log.deadline = granted;
            log.extended = true;
        }
        note(&format!(
            "{name}: asked for {} more; SIGKILL now due in {}{}",
            format_duration(Duration::from_micros(usec)),
            format_duration(granted - now),
            if capped {
                " (capped by the shutdown budget)"
            } else {
                ""
            }
        ));
        self.step(
            name,
            Event::Extend {
                deadline: granted.into_std(),
            },
        );
    }

    /// sd_notify `MAINPID=`: accepted for a process of the service's group, which
    /// then is the process whose exit ends the run.
    fn main_pid(&mut self, name: &str, value: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Ok(pid) = value.trim().parse::<i32>() else {
            return note(&format!("{name}: MAINPID={value}: not a pid; ignored"));
        };
        if svc.m.state.pid() == Some(pid) {
            return;
        }
        // Checked after opening the pidfd: it then names the process that was
        // checked, whatever becomes of the pid number later.
        let pidfd = svc.unit.as_mut().and_then(|u| u.pidfd(pid));
        match pidfd {
            Some(pidfd) => {
                note(&format!("{name}: main process is now pid {pid}"));
                // Its parent may not be herder (a forking daemon whose parent is still
                // there), so its end is watched through a pidfd of its own.
                if let Ok(watch) = Pidfd::open(pid) {
                    let (tx, n) = (self.tx.clone(), name.to_string());
                    tokio::spawn(async move {
                        if watch.exited().await.is_ok() {
                            let _ = tx.send(Msg::MainGone { name: n, pid });
                        }
                    });
                }
                self.svcs.get_mut(name).expect("known").pidfd = Some(pidfd);
                self.step(name, Event::MainPid { pid });
            }
            None => note(&format!(
                "{name}: MAINPID={pid} ignored: not a process of this service"
            )),
        }
    }

    /// A restart is due. During a shutdown it is refused (the service is stopped
    /// instead); while the previous run's group still has members it waits, and
    /// `check_empty` resumes it once the group is empty.
    fn end_backoff(&mut self, name: &str) {
        if self.shutdown.is_some() {
            note(&format!("{name}: no restart during shutdown"));
            return self.stop(name, Instant::now());
        }
        if self.svcs[name].unit.is_some() {
            return note(&format!(
                "{name}: restart waits for the rest of the previous run to exit"
            ));
        }
        self.step(name, Event::BackoffElapsed);
    }

    fn on_shutdown_signal(&mut self, sig: &str) {
        if self.shutdown.is_some() {
            note(&format!("{sig} again: SIGKILL to everything left"));
            return self.kill_everything();
        }
        self.begin_shutdown(sig.to_string());
    }

    /// Stops everything: waves in reverse dependency order, each service's deadline
    /// from the budget planner.
    fn begin_shutdown(&mut self, trigger: String) {
        if self.shutdown.is_some() {
            return;
        }
        let now = Instant::now();
        note(&format!(
            "{trigger}: shutting down ({} stop waves, budget {})",
            self.plan.waves.len(),
            herd_config::units::format_duration(self.plan.budget)
        ));
        let _ = self.events.send(Change::Shutdown {
            at_ms: events::now_ms(),
            trigger: trigger.clone(),
        });
        self.shutdown = Some(Shutdown {
            trigger,
            started: now,
            started_wall: std::time::SystemTime::now(),
            waves_at: vec![now],
            strays: 0,
            orphans_killed: false,
            wave: 0,
            wave_started: now,
            spent: false,
            strays_killed: false,
        });
        self.timers
            .insert((now + self.plan.budget, String::new(), Wake::Budget));
        self.backend.begin_close();
        self.begin_wave();
    }

    /// SIGKILL to every service, whatever its wave; nothing starts any more.
    fn kill_everything(&mut self) {
        let names: Vec<String> = self.svcs.keys().cloned().collect();
        for n in names {
            let state = &self.svcs[&n].m.state;
            if matches!(state, State::Stopping { .. }) {
                self.step(&n, Event::Deadline);
            } else if state.pid().is_some() {
                self.stop(&n, Instant::now());
                self.step(&n, Event::Deadline);
            } else {
                if matches!(state, State::Pending | State::Backoff { .. }) {
                    self.stop(&n, Instant::now());
                }
                if self.svcs[&n].unit.is_some() {
                    self.kill_all(&n);
                }
            }
        }
    }

    /// Stops the services of the current wave, with deadlines from the plan.
    fn begin_wave(&mut self) {
        let Some(sd) = &self.shutdown else { return };
        let (wave, started, wave_started) = (sd.wave, sd.started, sd.wave_started);
        let Some(plan) = self.plan.waves.get(wave).cloned() else {
            return;
        };
        for s in &plan.services {
            let cap = started + plan.latest_kill_at;
            let deadline = (wave_started + s.granted).min(cap);
            self.stop(&s.name, deadline);
        }
    }

    fn stop(&mut self, name: &str, deadline: Instant) {
        self.stop_for(name, StopReason::Shutdown, deadline);
    }

    fn stop_for(&mut self, name: &str, reason: StopReason, deadline: Instant) {
        self.kill_checks(name);
        self.step(
            name,
            Event::Stop {
                reason,
                deadline: deadline.into_std(),
            },
        );
    }

    /// Starts what may start now; advances the shutdown wave when it is done.
    fn schedule(&mut self) {
        if let Some(sd) = &mut self.shutdown {
            let wave = sd.wave;
            let done = self
                .svcs
                .values()
                .filter(|s| s.stop_wave == wave)
                .all(gone_or_stuck);
            if done && wave < self.plan.waves.len() {
                sd.wave += 1;
                sd.wave_started = Instant::now();
                if sd.wave < self.plan.waves.len() {
                    sd.waves_at.push(sd.wave_started);
                }
                self.begin_wave();
                return self.schedule();
            }
            // Whoever waits for a start or a stop hears that herder is draining.
            self.settle_waiters();
            return;
        }
        self.apply_replacements();
        let ready: Vec<String> = self
            .svcs
            .iter()
            .filter(|(_, s)| !s.remove && s.replace.is_none())
            .filter(|(_, s)| {
                s.m.state == State::Pending
                    || (s.rejoin && settled_down(&s.m.state) && s.unit.is_none())
            })
            .filter(|(_, s)| {
                s.cfg
                    .requires
                    .iter()
                    .all(|d| is_ready(&self.svcs[d].m.state))
                    && s.cfg
                        .after
                        .iter()
                        .all(|d| settled_up(&self.svcs[d].m.state))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            self.svcs.get_mut(&name).expect("known").rejoin = false;
            self.step(&name, Event::Start);
        }
        self.run_requests();
    }

    fn finished(&mut self) -> Option<Outcome> {
        let sd = self.shutdown.as_ref()?;
        let waves_done = sd.wave >= self.plan.waves.len();
        let spent = sd.spent;
        if waves_done && !sd.strays_killed {
            self.kill_strays();
        }
        // Readiness checks, hooks and killed strays are children too: none may
        // outlive herder (each one's exit is a SIGCHLD, which wakes this check).
        let all_done = waves_done
            && self.checks.is_empty()
            && self.hooks.is_empty()
            && self.backend.strays().is_empty()
            && self
                .svcs
                .values()
                .all(|s| settled_down(&s.m.state) && s.unit.is_none());
        if all_done && self.opts.init && !self.reap_orphans() {
            return None;
        }
        // Once the budget is spent, herder waits only for what SIGKILL can end.
        let settled = spent && self.svcs.values().all(gone_or_stuck);
        if !all_done && !settled {
            return None;
        }
        let stuck: Vec<String> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.unit.is_some() || !settled_down(&s.m.state))
            .map(|(n, _)| n.clone())
            .collect();
        if !stuck.is_empty() {
            note(&format!(
                "the shutdown budget ({}) is spent; leaving with processes of {} still there",
                format_duration(self.plan.budget),
                stuck.join(", ")
            ));
        }
        let mut outcome = Outcome {
            killed: self.killed.iter().cloned().collect(),
            stuck,
            main: self.main_ended.clone(),
            report: Report::default(),
        };
        outcome.report = self.report(&outcome);
        match outcome.report.save(&self.opts.state_dir) {
            Ok(path) => note(&format!("shutdown report: {}", path.display())),
            Err(e) => note(&format!("cannot save the shutdown report: {e}")),
        }
        // What is stuck stays in the state file, for the next run to deal with.
        self.save_state();
        Some(outcome)
    }

    /// The report of the shutdown that is ending.
    fn report(&mut self, outcome: &Outcome) -> Report {
        let sd = self.shutdown.as_ref().expect("shutting down");
        let (started, now) = (sd.started, Instant::now());
        let ms = |t: Instant| at_ms(t, started);
        let mut services = Vec::new();
        for w in &self.plan.waves {
            for planned in &w.services {
                let svc = self.svcs.get_mut(&planned.name).expect("planned service");
                let mut r = match (&svc.report, &svc.stop) {
                    (Some(r), _) => r.clone(),
                    (None, Some(log)) => service_report(&planned.name, svc, log, None, started),
                    (None, None) => ServiceReport {
                        name: planned.name.clone(),
                        wave: svc.stop_wave,
                        state: svc.m.state.name().into(),
                        exit_status: svc.last_exit.map(|s| s.to_string()),
                        ..Default::default()
                    },
                };
                if let Some(u) = &mut svc.unit {
                    r.leftovers = herd_contain::procfs::leftovers(&u.pids())
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    for l in &r.leftovers {
                        note(&format!("{}:   {l}", planned.name));
                    }
                }
                services.push(r);
            }
        }
        let exit_code = outcome.exit_code();
        Report {
            trigger: sd.trigger.clone(),
            started_unix_ms: sd
                .started_wall
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            budget_ms: self.plan.budget.as_secs_f64() * 1000.0,
            backend: self.backend.kind().to_string(),
            waves_at_ms: sd.waves_at.iter().map(|&t| ms(t)).collect(),
            services,
            strays_killed: sd.strays,
            ended_at_ms: ms(now),
            outcome: if !outcome.stuck.is_empty() {
                "stuck"
            } else if outcome.killed.is_empty() {
                "clean"
            } else {
                "killed"
            }
            .into(),
            exit_code,
        }
    }

    /// Init mode: herder's own children that no service claimed (orphans
    /// re-parented to it) are SIGKILLed; true once none is left. Each is an
    /// unreaped child, so its pid cannot have been recycled; the reaper collects
    /// them on SIGCHLD.
    fn reap_orphans(&mut self) -> bool {
        // Every exited child was reaped before this check: no child at all means
        // no orphan either, and spares a container's PID 1 a /proc scan at exit.
        if !herd_sys::has_children() {
            return true;
        }
        let me = std::process::id() as i32;
        let children: Vec<i32> = herd_contain::procfs::all()
            .into_iter()
            .filter(|s| s.ppid == me && s.alive())
            .map(|s| s.pid)
            .collect();
        if children.is_empty() {
            return true;
        }
        let sd = self.shutdown.as_mut().expect("shutting down");
        if !sd.orphans_killed {
            sd.orphans_killed = true;
            note(&format!(
                "killing {} orphan(s) re-parented to herder:",
                children.len()
            ));
            for l in herd_contain::procfs::leftovers(&children) {
                note(&format!("  {l}"));
            }
            for &pid in &children {
                let alive = || herd_contain::procfs::stat(pid).is_some_and(|s| s.alive());
                if let Err(e) = Pidfd::open(pid).and_then(|fd| fd.signal(SIGKILL))
                    && alive()
                {
                    note(&format!("cannot SIGKILL orphan {pid}: {e}"));
                }
            }
        }
        // Waited for like any child; the budget's end stops the wait.
        sd.spent
    }

    /// Writes the state file: what runs now, for a later herd to find if this
    /// one is killed. Removed when nothing runs.
    fn save_state(&mut self) {
        self.state_dirty = false;
        let dir = &self.opts.state_dir;
        let services: BTreeMap<String, crate::state::Run> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.unit.is_some())
            .map(|(n, s)| {
                let run = crate::state::Run {
                    invocation: s.invocation.clone(),
                    main: s.m.state.pid().and_then(Proc::of),
                    cgroup: s.unit.as_ref().and_then(|u| u.location()),
                    stop_timeout_ms: s.cfg.stop.timeout.as_millis() as u64,
                };
                (n.clone(), run)
            })
            .collect();
        let result = if services.is_empty() && self.shutdown.is_some() {
            StateFile::remove(dir)
        } else {
            StateFile {
                herder: Proc::of(std::process::id() as i32),
                backend: self.backend.kind().to_string(),
                shutdown_budget_ms: self.plan.budget.as_millis() as u64,
                services,
            }
            .save(dir)
        };
        if let Err(e) = result {
            note(&format!(
                "cannot write the state file in {}: {e}",
                dir.display()
            ));
        }
    }

    /// Kills what no unit claimed (none backend): herder is their subreaper, so
    /// each is its own unreaped child, and its pid cannot have been recycled.
    fn kill_strays(&mut self) {
        if let Some(sd) = &mut self.shutdown {
            sd.strays_killed = true;
        }
        let strays = self.backend.strays();
        if strays.is_empty() {
            return;
        }
        note(&format!(
            "killing {} process(es) that no service could claim:",
            strays.len()
        ));
        for l in herd_contain::procfs::leftovers(&strays) {
            note(&format!("  {l}"));
        }
        if let Some(sd) = &mut self.shutdown {
            sd.strays = strays.len();
        }
        for pid in strays {
            let alive = || herd_contain::procfs::stat(pid).is_some_and(|s| s.alive());
            // A failure matters only if it did not end on its own meanwhile.
            if let Err(e) = Pidfd::open(pid).and_then(|fd| fd.signal(SIGKILL))
                && alive()
            {
                note(&format!("cannot SIGKILL {pid}: {e}"));
            }
        }
        self.killed.insert("(processes no service claimed)".into());
    }
}

/// The signals herder listens for.
struct Signals {
    chld: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    // Signals herder has no use for go on to the services (see `forward`).
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    winch: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        Ok(Signals {
            chld: signal(SignalKind::child())?,
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            usr2: signal(SignalKind::user_defined2())?,
            winch: signal(SignalKind::window_change())?,
        })
    }
}

/// A pipe for a service's events: the read end (blocking, for the service) and the
/// write end (non-blocking, close-on-exec, herder's).
fn event_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    rustix::fs::fcntl_setfl(&w, rustix::fs::OFlags::NONBLOCK)?;
    Ok((r, w))
}

/// Milliseconds since the Unix epoch, `left` from now.
fn unix_ms_in(left: Duration) -> u128 {
    (std::time::SystemTime::now() + left)
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
}

/// Writes the shutdown event, one line, on the service's event pipe:
/// `stop reason=shutdown deadline_ms=1732190000123 timeout_ms=9500`. Never blocks:
/// a service that does not read fills the pipe and misses events, it does not hold
/// herder up.
fn deliver_stop_event(
    pipe: Option<&OwnedFd>,
    reason: StopReason,
    deadline: Instant,
) -> Result<Instant, String> {
    let Some(fd) = pipe else {
        return Err("the run has no event pipe".into());
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let line = format!(
        "stop reason={} deadline_ms={} timeout_ms={}\n",
        reason.name(),
        unix_ms_in(left),
        left.as_millis()
    );
    match rustix::io::write(fd, line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(Instant::now()),
        Ok(_) => Err("the pipe is full (the service does not read it)".into()),
        Err(rustix::io::Errno::AGAIN) => {
            Err("the pipe is full (the service does not read it)".into())
        }
        Err(rustix::io::Errno::PIPE) => Err("the service closed its end of the pipe".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// What a new configuration would change, in words.
/// Forwards every datagram of `sock` to the loop.
fn listen_notify(
    name: String,
    sock: NotifySocket,
    tx: mpsc::UnboundedSender<Msg>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = tokio::net::UnixDatagram::from_std(sock.into_std())?;
    Ok(tokio::spawn(async move {
        loop {
            if sock.readable().await.is_err() {
                return;
            }
            // None (nothing waiting) becomes WouldBlock, so readiness is cleared.
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                herd_sys::notify::recv(&sock)?.ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
            });
            match got {
                Ok(note) => {
                    let name = name.clone();
                    if tx.send(Msg::Notify { name, note }).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // Retrying would spin on the same error.
                    self::note(&format!(
                        "{name}: notify socket failed ({e}); its notifications are no longer heard"
                    ));
                    return;
                }
            }
        }
    }))
}

/// What a service's stop did, as the shutdown report shows it; `gone` is when its
/// last process went, if it did.
fn service_report(
    name: &str,
    svc: &Svc,
    log: &StopLog,
    gone: Option<Instant>,
    started: Instant,
) -> ServiceReport {
    let ms = |t: Instant| at_ms(t, started);
    ServiceReport {
        name: name.to_string(),
        wave: svc.stop_wave,
        state: log.state.into(),
        reason: Some(log.reason.name().into()),
        stop_at_ms: Some(ms(log.requested)),
        deadline_at_ms: Some(ms(log.deadline)),
        extended: log.extended,
        event_at_ms: log
            .event
            .as_ref()
            .and_then(|e| e.as_ref().ok())
            .map(|&t| ms(t)),
        event_error: log.event.as_ref().and_then(|e| e.as_ref().err()).cloned(),
        hook_ended_at_ms: log.hook_took.map(|d| ms(log.requested + d)),
        hook_status: log.hook_status.map(|s| s.to_string()),
        signal: log.signal_at.map(|_| svc.cfg.stop.signal.to_string()),
        signal_at_ms: log.signal_at.map(ms),
        killed_at_ms: log.killed_at.map(ms),
        killed: log.killed_at.is_some(),
        gone_at_ms: gone.map(ms),
        exit_status: log.main_status.map(|s| s.to_string()),
        stuck_max: log.stuck,
        leftovers: Vec::new(),
    }
}

/// Milliseconds from `since` to `t`, to the microsecond; negative if before.
fn at_ms(t: Instant, since: Instant) -> f64 {
    let us = if t >= since {
        (t - since).as_micros() as f64
    } else {
        -((since - t).as_micros() as f64)
    };
    us / 1000.0
}

/// Whether a service a dependent `requires` is satisfied.
fn is_ready(s: &State) -> bool {
    match s {
        State::Ready { .. } => true,
        State::Exited { status } => status.success(),
        _ => false,
    }
}

/// Whether nothing of the service runs any more, or all that does survived SIGKILL:
/// a stuck service does not hold up the services stopping after it.
fn gone_or_stuck(s: &Svc) -> bool {
    (settled_down(&s.m.state) && s.unit.is_none()) || matches!(s.m.state, State::Stuck { .. })
}

/// Whether an `after` dependency has finished starting (either way).
fn settled_up(s: &State) -> bool {
    !matches!(
        s,
        State::Pending | State::Starting { .. } | State::Backoff { .. }
    )
}

/// Whether nothing of the service runs any more.
fn settled_down(s: &State) -> bool {
    matches!(
        s,
        State::Stopped | State::Exited { .. } | State::Failed { .. } | State::Pending
    )
}

/// The first pause before SIGKILL is repeated, and the longest.
const FIRST_KILL_RETRY: Duration = Duration::from_millis(100);
const MAX_KILL_RETRY: Duration = Duration::from_secs(5);

/// The cgroup limits of a service.
fn limits(cfg: &Service) -> herd_contain::Limits {
    herd_contain::Limits {
        memory: cfg.limits.memory,
        pids: cfg.limits.pids,
        cpu: cfg.limits.cpu,
    }
}

const SIGKILL: i32 = herd_config::units::Signal::KILL.0;

/// Herder's own messages go to stderr, apart from the services' output.
pub fn note(msg: &str) {
    // One write a line: `eprintln!` writes "herd: ", the message and the newline
    // separately to the unbuffered stderr, three system calls a line (a shutdown
    // of 10 services writes ~30 lines), and another thread's line could land
    // between them.
    use std::io::Write;
    let line = format!("herd: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A number in [0, 1) for restart jitter; the clock's low bits are random enough.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// The command line a service runs.
pub fn argv(cfg: &Service) -> Vec<String> {
    match &cfg.command {
        Command::Argv(a) => a.clone(),
        Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
    }
}
