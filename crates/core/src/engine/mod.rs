//! The supervisor loop: one task owns every service and `select!`s over SIGCHLD,
//! herder's signals, messages from its own tasks and operators, and the next
//! timer.
//!
//! # How it works
//!
//! - **One turn of the loop** takes one wake-up (a signal, a message, due
//!   timers), lets its handler turn it into machine [`Event`]s posted on a queue,
//!   then *settles*: the queue is drained — each event steps its service's
//!   [`Machine`](crate::machine::Machine), and the effects that step returns are carried out at once, by
//!   handlers that post further events rather than stepping a machine themselves
//!   — then units that may have emptied are checked, then the cross-service
//!   decisions of [`orchestrate`] run (what may start, a shutdown wave's end, a
//!   queued stop being due), until none of them posts anything more.
//! - **The parts**: [`start`] (spawn, readiness), [`stop`] (hook, signal,
//!   SIGKILL and its retries, sd_notify's extension), [`reap`] (the one reaper,
//!   a unit's end), [`notify`] (sd_notify), [`shutdown`] (waves, budget, the
//!   report, PID 1 duty, the state file), [`control`] (operators' requests),
//!   [`reload`]. What lives as long as one run is a [`service::Run`], dropped
//!   whole once its unit is empty.
//! - **Processes** are reached only through [`Processes`] (spawn, signal, reap)
//!   and containment only through [`herd_contain::Backend`]: a test fakes both
//!   and runs the loop under tokio's paused clock.
//! - **Emptiness**: once a service's main process has gone, its unit is checked
//!   on every event that can empty it: a change of `cgroup.events` (cgroup v2,
//!   epoll) and every SIGCHLD (herder is the subreaper, so the last process of a
//!   unit to exit is a child of herder's or of the unit's own). No polling.
//!
//! # Caveats
//!
//! - What each backend can guarantee is in [`herd_contain`]'s docs; the none
//!   backend cannot attribute every double-forked escapee to its service.
//! - The loop is one task: a handler that blocks holds up every service. Reading
//!   units (`cgroup.procs`, /proc) is the slowest thing it does.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use herd_config::plan::ShutdownPlan;
use herd_config::units::format_duration;
use herd_config::{Command, Config, DepGraph, Service};
use herd_contain::Backend;
use herd_sys::ExitStatus;
use herd_sys::notify::Notification;

use crate::log::note;
use crate::machine::{Effect, Event, State};
use crate::output::Output;
use crate::private::Private;

mod control;
mod events;
mod health;
mod notify;
pub mod orchestrate;
mod procs;
mod reap;
mod reload;
mod service;
mod shutdown;
mod start;
mod stop;

pub use control::{ControlError, Handle, Overview, ServiceStatus};
pub use events::Change;
pub use procs::{Processes, Started, System, Waker};
pub use reload::ReloadPlan;
pub use service::{DESCRIPTORS_NOTIFY, DESCRIPTORS_PER_RUN, Descriptors, StopLog, descriptors};
pub use shutdown::{EXIT_FAILED, EXIT_KILLED, EXIT_STUCK, Outcome};

use orchestrate::Member;
use service::Svc;

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
    /// A connection is waiting on an on-demand service's socket.
    Demand {
        name: String,
    },
    /// A connection arrived on a running `idle_stop` service's socket.
    Activity {
        name: String,
    },
    /// A health check attempt's answer (see [`health`]).
    Health {
        name: String,
        run: u64,
        attempt: u64,
        result: Result<(), String>,
    },
    /// A unit may have become empty (a `cgroup.events` change, a fake's exit).
    UnitChanged,
    /// Children have exited: what SIGCHLD says, for a fake [`Processes`].
    Exited,
    /// An operator's request (see [`control`]).
    Control(control::Request),
}

/// What a timer wakes, keyed by what it is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The service's machine: a stop deadline, the end of a backoff.
    Machine(String),
    /// The next attempt of a service's `exec` readiness check.
    ExecCheck(String),
    /// SIGKILL again: processes survived the last one. Carries the run it is
    /// about, so a late retry never hits the next run.
    KillRetry(String, u64),
    /// The next health check attempt of a run.
    Health(String, u64),
    /// A run's `exec` health check attempt has run out of time.
    HealthTimeout(String, u64, u64),
    /// A run's watchdog deadline (moved by every `WATCHDOG=1`).
    Watchdog(String, u64),
    /// An `idle_stop` service may have been idle long enough.
    Idle(String, u64),
    /// The shutdown budget is spent.
    Budget,
    /// Usage readings a status found due are taken (see [`Engine::read_usage`]).
    Usage,
}

impl Timer {
    fn service(&self) -> Option<&str> {
        match self {
            Timer::Machine(n)
            | Timer::ExecCheck(n)
            | Timer::KillRetry(n, _)
            | Timer::Health(n, _)
            | Timer::HealthTimeout(n, _, _)
            | Timer::Watchdog(n, _)
            | Timer::Idle(n, _) => Some(n),
            Timer::Budget | Timer::Usage => None,
        }
    }
}

/// A running `exec` check of a service: its readiness check, or an attempt of
/// its health check.
struct Check {
    name: String,
    /// The main process of the run it checks.
    main: i32,
    /// For a health check: the run's number and the attempt's.
    health: Option<(u64, u64)>,
}

/// What woke the loop.
enum Wake {
    Children,
    Shutdown(&'static str),
    Reload,
    Dump,
    Forward(i32, &'static str),
    Msg(Msg),
    Timers,
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
    /// Who may read the logs, the state file and the reports.
    pub private: Private,
}

pub struct Engine {
    svcs: BTreeMap<String, Svc>,
    /// The configuration in force (the last one a reload applied), but for its
    /// services: those are `services`.
    config: Config,
    /// The services in force, each definition shared with its service's `cfg`
    /// rather than held twice (about 1 KB a service).
    services: BTreeMap<String, Arc<Service>>,
    /// Every state change, to subscribers (the socket's event stream).
    /// Each change once, shared by every subscriber: a slot of the channel's
    /// ring is a pointer, not a `Change` (1,024 slots of 112 bytes were 160 KB
    /// of herder's idle memory).
    events: tokio::sync::broadcast::Sender<Arc<Change>>,
    plan: ShutdownPlan,
    out: Output,
    tx: mpsc::UnboundedSender<Msg>,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// A message taken from `rx` while answering a burst of status requests,
    /// handled on the loop's next turn.
    deferred: Option<Msg>,
    /// Machine events not applied yet, in order (see the module docs).
    queue: VecDeque<(String, Event)>,
    /// Units may have emptied since they were last checked.
    check_units: bool,
    timers: BTreeSet<(Instant, Timer)>,
    shutdown: Option<shutdown::Shutdown>,
    /// Running `exec` checks, readiness and health, by pid.
    checks: HashMap<i32, Check>,
    /// Running `stop.exec` hooks: pid -> service.
    hooks: HashMap<i32, String>,
    procs: Box<dyn Processes>,
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
    stop_queue: Vec<orchestrate::QueuedStop>,
    /// Operators waiting for a service to be up or down.
    waiters: Vec<control::Waiter>,
    /// A round of usage readings is under way: a [`Timer::Usage`] is set, for
    /// the slice that goes on after the named service, or from the first (see
    /// [`Engine::read_usage`]).
    usage_round: Option<Option<String>>,
}

impl Member for Svc {
    fn state(&self) -> &State {
        &self.m.state
    }
    fn has_run(&self) -> bool {
        self.run.is_some()
    }
    fn rejoin(&self) -> bool {
        self.intent.rejoin
    }
    fn reloading(&self) -> bool {
        self.intent.reloading()
    }
    fn requires(&self) -> &[String] {
        &self.cfg.requires
    }
    fn after(&self) -> &[String] {
        &self.cfg.after
    }
    fn stop_wave(&self) -> usize {
        self.stop_wave
    }
    fn on_hold(&self) -> bool {
        self.demand.is_some() && !self.intent.rejoin
    }
}

impl Engine {
    /// Prepares the services of `config`; every run of a service is contained by
    /// `backend`, and its processes are started through `procs`.
    pub fn new(
        config: &Config,
        opts: Options,
        backend: Box<dyn Backend>,
    ) -> std::io::Result<Engine> {
        Engine::with_processes(config, opts, backend, Box::new(System::default()))
    }

    /// [`Engine::new`] with another process layer (a test's fake).
    pub fn with_processes(
        config: &Config,
        opts: Options,
        backend: Box<dyn Backend>,
        mut procs: Box<dyn Processes>,
    ) -> std::io::Result<Engine> {
        // What the backend made at start-up (cgroups) must not outlive a failed
        // start: it is released before the error is returned.
        let release = |e: std::io::Error| {
            for problem in backend.close() {
                note(&problem);
            }
            e
        };
        opts.private.state_dir(&opts.state_dir).map_err(release)?;
        let log_dir = opts.state_dir.join("logs");
        let log_dir = match config.logs.files {
            true => Some(log_dir),
            false => None,
        };
        if let Some(d) = &log_dir {
            opts.private.dir(d).map_err(release)?;
        }
        let width = config
            .services
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(4)
            .max(4);
        let plan = herd_config::shutdown_plan(config);
        let services = shared(&config.services);
        let mut svcs: BTreeMap<String, Svc> = services
            .iter()
            .map(|(name, cfg)| (name.clone(), Svc::new(cfg.clone(), 0)))
            .collect();
        shutdown::assign_waves(&plan, &mut svcs);
        let (tx, rx) = mpsc::unbounded_channel();
        for (name, svc) in svcs.iter_mut() {
            svc.listen(name, &tx).map_err(release)?;
        }
        procs.wake_on_exit(Waker(tx.clone()));
        // Only the graph's validity matters here; the waves come from the plan.
        debug_assert!(DepGraph::new(&config.services).cycles().is_empty());
        Ok(Engine {
            svcs,
            config: without_services(config),
            services,
            events: tokio::sync::broadcast::Sender::new(events::CAPACITY),
            plan,
            out: Output::start(
                width,
                log_dir,
                config.logs.max_size,
                config.logs.keep,
                opts.private,
            ),
            tx,
            rx,
            deferred: None,
            queue: VecDeque::new(),
            check_units: false,
            timers: BTreeSet::new(),
            shutdown: None,
            checks: HashMap::new(),
            hooks: HashMap::new(),
            procs,
            backend,
            unit_watch: None,
            opts,
            main: config.main.clone(),
            main_ended: None,
            state_dirty: true,
            stop_queue: Vec::new(),
            waiters: Vec::new(),
            usage_round: None,
        })
    }

    /// The configuration in force, whole: a copy, for a reload's comparison and
    /// the API's plan.
    fn config_in_force(&self) -> Config {
        Config {
            services: self
                .services
                .iter()
                .map(|(name, s)| (name.clone(), Service::clone(s)))
                .collect(),
            ..self.config.clone()
        }
    }

    /// Publishes `change` to the event stream's subscribers, if any.
    fn publish(&self, change: Change) {
        let _ = self.events.send(Arc::new(change));
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
        // One wake-up is one batch for the backend: every unit it asks about, and
        // every SIGKILL it sends, shares one look at the system (the none
        // backend's /proc scan), so a wave of a thousand services costs one.
        self.backend.begin_batch();
        loop {
            self.settle();
            // Once per wake-up, however many runs began or ended in it: starting
            // 500 services writes the file a few times, not 500.
            if self.state_dirty {
                self.save_state();
            }
            if let Some(outcome) = self.finished() {
                self.publish(Change::Finished {
                    at_ms: events::now_ms(),
                    exit_code: outcome.exit_code(),
                    report: Box::new(outcome.report.clone()),
                });
                self.backend.end_batch();
                for problem in self.backend.close() {
                    note(&problem);
                }
                return Ok(outcome);
            }
            if let Some(msg) = self.deferred.take() {
                self.on_msg(msg);
                continue;
            }
            self.backend.end_batch();
            let next = self.timers.first().map(|(t, _)| *t);
            // What woke the loop is handled inside the batch, so a status
            // request or a reap shares the batch's look at the system too.
            let wake = tokio::select! {
                _ = sig.chld.recv() => Wake::Children,
                _ = sig.int.recv() => Wake::Shutdown("SIGINT"),
                _ = sig.term.recv() => Wake::Shutdown("SIGTERM"),
                _ = sig.hup.recv() => Wake::Reload,
                _ = sig.quit.recv() => Wake::Dump,
                _ = sig.usr1.recv() => Wake::Forward(libc::SIGUSR1, "SIGUSR1"),
                _ = sig.usr2.recv() => Wake::Forward(libc::SIGUSR2, "SIGUSR2"),
                _ = sig.winch.recv() => Wake::Forward(libc::SIGWINCH, "SIGWINCH"),
                Some(msg) = self.rx.recv() => Wake::Msg(msg),
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => Wake::Timers,
            };
            self.backend.begin_batch();
            match wake {
                Wake::Children => self.on_sigchld(),
                Wake::Shutdown(how) => self.on_shutdown_signal(how),
                Wake::Reload => self.on_sighup(),
                Wake::Dump => self.dump(),
                Wake::Forward(sig, name) => self.forward(sig, name),
                Wake::Msg(msg) => {
                    if matches!(msg, Msg::Control(control::Request::Status { .. })) {
                        self.gather_status_requests().await;
                    }
                    self.on_msg(msg)
                }
                Wake::Timers => self.on_timers(),
            }
        }
    }

    /// Carries out what the last wake-up set going, until nothing more follows:
    /// machine events, units to check, then the cross-service decisions; at the
    /// end, operators waiting for a result hear it.
    fn settle(&mut self) {
        loop {
            self.drain();
            if std::mem::take(&mut self.check_units) {
                self.check_empty();
                continue;
            }
            if !self.schedule() {
                break;
            }
        }
        self.settle_waiters();
    }

    /// Queues `event` for the machine of `name`.
    fn post(&mut self, name: &str, event: Event) {
        self.queue.push_back((name.to_string(), event));
    }

    /// Queues `event` ahead of every other: the immediate outcome of an effect
    /// being carried out (a spawn's result), which nothing queued before it may
    /// overtake (a stop must not find a service spawned but without its pid).
    fn post_now(&mut self, name: &str, event: Event) {
        self.queue.push_front((name.to_string(), event));
    }

    /// Applies queued events in order, each followed by its effects (which may
    /// queue more).
    fn drain(&mut self) {
        while let Some((name, event)) = self.queue.pop_front() {
            // About a service a reload has removed since.
            if self.svcs.contains_key(&name) {
                self.transition(&name, event);
            }
        }
    }

    /// One step of a service's machine: the change is said and published, then
    /// its effects are carried out.
    fn transition(&mut self, name: &str, event: Event) {
        let now = Instant::now();
        let svc = self.svcs.get_mut(name).expect("known service");
        let from = svc.m.state.name();
        let effects = svc.m.step(event, now.into_std(), jitter());
        let to = svc.m.state.name();
        let ready = matches!(svc.m.state, State::Ready { .. });
        if ready && let Some(run) = &mut svc.run {
            run.end_ready_task();
        }
        if from != to {
            let mut detail = describe(&svc.m.state, now);
            // A restart says why the run ended: `crashy exited 1; restart in 200ms`.
            let ended = matches!(from, "starting" | "ready" | "running-not-ready");
            if let (State::Backoff { .. }, true, Some(status), Some(d)) =
                (&svc.m.state, ended, svc.counters.last_exit, &detail)
            {
                let how = match svc.counters.last_oom {
                    true => "killed by the OOM killer".to_string(),
                    false => ended_how(status),
                };
                detail = Some(format!("{how}; {d}"));
            }
            // Without a readiness check nothing says it is ready: it has started.
            let said = match svc.m.state {
                State::Ready { .. } if !svc.m.policy.has_ready_check => "started",
                _ => to,
            };
            match (&svc.m.state, &detail) {
                (State::Failed { .. }, Some(d)) => note(&format!("{name} {to}: {d}")),
                (State::Backoff { .. }, Some(d)) if ended => note(&format!("{name} {d}")),
                // A stop for failing says why; the many of a shutdown do not.
                (State::Stopping { reason, .. }, Some(d)) if reason.is_failure() => {
                    note(&format!("{name} stopping ({d})"))
                }
                (State::Stopping { .. }, _) | (_, None) => note(&format!("{name} {said}")),
                (_, Some(d)) => note(&format!("{name} {said} ({d})")),
            }
            let pid = svc.m.state.pid().filter(|p| *p > 0);
            self.publish(Change::State {
                at_ms: events::now_ms(),
                service: name.to_string(),
                from: from.to_string(),
                to: to.to_string(),
                pid,
                detail,
            });
        }
        for e in effects {
            self.apply(name, e, from);
        }
        if ready && from != to {
            self.arm_health(name);
            self.arm_idle(name);
        }
        if from != to {
            self.release_sockets(name);
        }
        self.check_main(name);
    }

    /// Carries out one effect of a step that left state `from`.
    fn apply(&mut self, name: &str, effect: Effect, from: &'static str) {
        match effect {
            Effect::Spawn => self.spawn(name),
            Effect::WatchReadiness { deadline } => self.watch_readiness(name, deadline.into()),
            Effect::SignalStop => self.signal_stop(name, from),
            Effect::KillAll => self.kill_all(name),
            Effect::Timer { at } => {
                self.timers
                    .insert((at.into(), Timer::Machine(name.to_string())));
            }
            Effect::Log(msg) => note(&format!("{name}: {msg}")),
        }
    }

    /// A service stopped for good (stopped, exited or failed, with no start or
    /// reload of it coming) closes its listening sockets, so connections are
    /// then refused rather than left waiting, and its fd store. Through a
    /// restart both stay.
    fn release_sockets(&mut self, name: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let down = matches!(
            svc.m.state,
            State::Stopped | State::Exited { .. } | State::Failed { .. }
        );
        // An on-demand service that exited cleanly (idle) waits for the next
        // connection on its sockets.
        let idle = svc.cfg.on_demand
            && (matches!(svc.m.state, State::Exited { status } if status.success())
                || (svc.idle && svc.m.state == State::Stopped));
        if down && !idle && !svc.intent.rejoin && !svc.intent.reloading() {
            svc.sockets = None;
            svc.fd_store.clear();
            svc.demand = None;
        }
    }

    /// The `main` service has ended for good (not to be restarted): the run ends
    /// with it, and its exit status becomes herder's.
    fn check_main(&mut self, name: &str) {
        if self.shutdown.is_some() || self.main.as_deref() != Some(name) {
            return;
        }
        let svc = &self.svcs[name];
        let last = svc.counters.last_exit;
        let status = match &svc.m.state {
            State::Exited { status } => *status,
            State::Failed { .. } => last.unwrap_or(ExitStatus::Code(1)),
            State::Stopped => last.unwrap_or(ExitStatus::Code(0)),
            _ => return,
        };
        self.main_ended = Some((name.to_string(), status));
        self.begin_shutdown(format!("main service {name} ended ({status})"));
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
            Msg::UnitChanged => {
                self.check_units = true;
                return;
            }
            Msg::Exited => return self.on_sigchld(),
            Msg::Demand { name } => return self.on_demand(&name),
            Msg::Activity { name } => {
                if let Some(a) = self.svcs.get_mut(&name).and_then(|s| s.activity.as_mut()) {
                    a.arrived = true;
                }
                return;
            }
            Msg::Health {
                name,
                run,
                attempt,
                result,
            } => return self.health_result(&name, run, attempt, result),
            Msg::Control(req) => return self.on_request(req),
            Msg::MainGone { name, pid } => return self.main_gone(&name, pid),
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
            self.post(&name, event);
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some((at, timer)) = self.timers.first().cloned() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            if let Some(name) = timer.service()
                && !self.svcs.contains_key(name)
            {
                continue;
            }
            match timer {
                Timer::ExecCheck(name) => {
                    if matches!(self.svcs[&name].m.state, State::Starting { .. }) {
                        self.run_exec_check(&name);
                    }
                }
                Timer::KillRetry(name, run) => self.kill_retry(&name, run),
                Timer::Health(name, run) => self.health_attempt(&name, run),
                Timer::HealthTimeout(name, run, attempt) => {
                    self.health_timeout(&name, run, attempt)
                }
                Timer::Watchdog(name, run) => self.watchdog_due(&name, run),
                Timer::Idle(name, run) => self.idle_due(&name, run),
                Timer::Budget => self.budget_spent(),
                Timer::Usage => self.read_usage(),
                Timer::Machine(name) => match self.svcs[&name].m.state {
                    State::Stopping { deadline, .. } if deadline <= now.into_std() => {
                        self.post(&name, Event::Deadline)
                    }
                    State::Backoff { until } if until <= now.into_std() => self.end_backoff(&name),
                    _ => {}
                },
            }
        }
    }

    /// Passes a signal herder does not act on to the services: the `main` service
    /// if there is one, else every running service's main process.
    fn forward(&mut self, sig: i32, name: &str) {
        let targets: Vec<&String> = match &self.main {
            Some(m) => vec![m],
            None => self.svcs.keys().collect(),
        };
        let mut sent = Vec::new();
        for t in targets {
            if let Some(pid) = self.svcs[t].m.state.pid()
                && matches!(self.procs.signal(pid, sig), Ok(true))
            {
                sent.push(t.as_str());
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
        if let Err(e) = self.reload_file("SIGHUP") {
            let text = e.to_string();
            let mut lines = text.lines();
            note(&format!("SIGHUP: {}", lines.next().unwrap_or_default()));
            for line in lines {
                note(&format!("  {line}"));
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
            let mut line = format!(
                "  {name}: {} (run {}, invocation {})",
                svc.m.state.name(),
                svc.counters.runs,
                svc.invocation().unwrap_or("-"),
            );
            if let Some(pid) = svc.m.state.pid() {
                line.push_str(&format!(", main pid {pid}"));
            }
            let pids = svc.unit().map(|u| u.pids()).unwrap_or_default();
            if !pids.is_empty() {
                line.push_str(&format!(", {} process(es) {pids:?}", pids.len()));
            }
            let deadline = service::stop_deadline(&svc.m.state);
            if let (Some(log), Some(deadline)) = (svc.stop_log(), deadline) {
                line.push_str(&format!(
                    ", stopping ({}) for {}, SIGKILL due in {}",
                    log.reason.name(),
                    format_duration(now - log.requested),
                    format_duration(deadline.saturating_duration_since(now))
                ));
            }
            if let Some(st) = svc.counters.last_exit {
                line.push_str(&format!(", last exit: {st}"));
            }
            note(&line);
        }
        let strays = self.backend.strays();
        if !strays.is_empty() {
            note(&format!("  processes no service claimed: {strays:?}"));
        }
    }
}

/// The detail a state change is said with.
fn describe(state: &State, now: Instant) -> Option<String> {
    match state {
        State::Ready { pid, .. } | State::Starting { pid, .. } if *pid > 0 => {
            Some(format!("pid {pid}"))
        }
        State::Exited { status } => Some(status.to_string()),
        State::Failed { reason } => Some(reason.clone()),
        State::Backoff { until } => Some(format!(
            "restart in {}",
            format_duration(until.saturating_duration_since(now.into_std()))
        )),
        State::Stuck { pids, .. } => Some(format!("pids {pids:?}")),
        State::Stopping { reason, .. } => Some(format!("reason: {}", reason.name())),
        _ => None,
    }
}

/// How a main process ended, for a restart's line: `exited 1`, `killed by
/// SIGSEGV`.
fn ended_how(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exited {c}"),
        ExitStatus::Signal(s) => format!("killed by {}", herd_config::units::Signal(s)),
        ExitStatus::Unknown => "ended".into(),
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

/// Each service of `services` in an `Arc` of its own, to be shared.
fn shared(services: &BTreeMap<String, Service>) -> BTreeMap<String, Arc<Service>> {
    services
        .iter()
        .map(|(name, s)| (name.clone(), Arc::new(s.clone())))
        .collect()
}

/// `config` with no services: what the engine keeps besides `services`.
fn without_services(config: &Config) -> Config {
    Config {
        services: BTreeMap::new(),
        main: config.main.clone(),
        shutdown: config.shutdown.clone(),
        supervisor: config.supervisor.clone(),
        logs: config.logs.clone(),
        files: config.files.clone(),
    }
}
