//! Operators' requests to a running engine — status, start, stop, restart, shutdown —
//! sent through a [`Handle`] (the control socket's server holds one).
//!
//! # How it works
//!
//! - An action answers only once its effect has happened: a stop when every process
//!   of the service is gone, a start when the service is ready (a oneshot: exited 0),
//!   or with the reason it could not be. Pending answers are [`Waiter`]s, settled
//!   at the end of every settle of the loop.
//! - Stopping a service stops what `requires` it first (reason `dependency`), in
//!   reverse dependency order, each stop queued until everything that requires the
//!   service has stopped (the order is [`orchestrate::stop_order`]).
//! - Starting a service starts what it `requires` that is not running, in order:
//!   they are marked to *rejoin*, and start as a pending service would.
//! - A restart is a stop (reason `restart`, dependents `dependency`) after which the
//!   service and the dependents it stopped rejoin.
//! - While a shutdown runs every request but status is refused: herder drains.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

pub use herd_api::{Overview, ServiceStatus};
use herd_api::{ProcessInfo, ShutdownProgress, StopProgress};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use herd_config::units::format_duration;

use super::events::Change;
use super::orchestrate::{self, QueuedStop};
use super::reload::ReloadPlan;
use super::service::Svc;
use super::{Engine, Msg};
use crate::machine::{State, StopReason};

type Reply = oneshot::Sender<Result<String, ControlError>>;

/// How long usage readings wait after the status that found them due, and
/// between slices of them: the answers go out first.
const USAGE_PAUSE: Duration = Duration::from_millis(1);

/// The time one turn of the loop spends on usage readings, once it has read at
/// least [`USAGE_SLICES`]'s share of the services.
const USAGE_SLICE: Duration = Duration::from_micros(200);

/// The most turns a round of usage readings takes: each turn of the loop costs
/// a pass over every service, so with thousands of them, slices of 0.2 ms (ten
/// services each on /proc) would cost the loop more than the readings.
const USAGE_SLICES: usize = 8;

/// Why a request was not done. Its kind decides the answer's status (the control
/// socket maps it in one place); its text is what the operator reads.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no service named {0}")]
    UnknownService(String),
    /// Refused: a shutdown has begun. The text says what was not done.
    #[error("herder is shutting down{0}")]
    ShuttingDown(String),
    #[error("{0} is already being stopped")]
    AlreadyStopping(String),
    #[error("{0} is stopping; start it once it has stopped")]
    Stopping(String),
    #[error("{name} is {state}: no process to signal")]
    NoProcess { name: String, state: String },
    #[error("{0}")]
    Signal(String),
    /// The action was taken, and ended otherwise than asked (failed, exited,
    /// stopped, removed): the text says how.
    #[error("{0}")]
    NotDone(String),
    #[error("the last reload is still being applied ({0}); try again once it is done")]
    ReloadBusy(String),
    #[error("no configuration file to reload")]
    NoConfigFile,
    /// The new configuration has errors: nothing changed.
    #[error("{file} is not valid; nothing changes:\n{errors}")]
    InvalidConfig { file: String, errors: String },
    /// The engine is gone (herder has finished).
    #[error("herder has stopped")]
    Gone,
    /// Not done within the caller's wait; the action goes on.
    #[error("{what}: not done after {}; it goes on", format_duration(*.after))]
    Timeout { what: String, after: Duration },
}

/// A request to the engine.
#[derive(Debug)]
pub enum Request {
    Status {
        reply: oneshot::Sender<Arc<Overview>>,
    },
    Start {
        name: String,
        reply: Reply,
    },
    Stop {
        name: String,
        reply: Reply,
    },
    Restart {
        name: String,
        reply: Reply,
    },
    /// Send `signal` to the main process, or with `all` to every process.
    Signal {
        name: String,
        signal: i32,
        all: bool,
        reply: Reply,
    },
    /// Shut everything down, as SIGTERM would; `trigger` names who asked.
    Shutdown {
        trigger: String,
    },
    /// Read the configuration file again and apply it by difference.
    Reload {
        reply: oneshot::Sender<Result<ReloadPlan, ControlError>>,
    },
    /// The configuration in force.
    Config {
        reply: oneshot::Sender<Box<herd_config::Config>>,
    },
    /// Processes re-parented to herder that no service claims.
    Unclaimed {
        reply: oneshot::Sender<Vec<String>>,
    },
    /// Answer once `name` is up (ready, or ran to completion), or is gone (a
    /// reload removed it).
    Wait {
        name: String,
        gone: bool,
        reply: Reply,
    },
}

/// Talks to a running engine from other tasks.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) events: tokio::sync::broadcast::Sender<Arc<Change>>,
}

impl Handle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Control(make(reply)))
            .map_err(|_| ControlError::Gone)?;
        answer.await.map_err(|_| ControlError::Gone)
    }

    /// Every service, by name.
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, ControlError> {
        Ok(self.overview().await?.services.clone())
    }

    /// Every service, and whether herder is shutting down. Requests that reach
    /// the engine together share one snapshot (the same `Arc`), so a caller can
    /// keep what it derives from one (serialised JSON) for the others.
    pub async fn overview(&self) -> Result<Arc<Overview>, ControlError> {
        self.ask(|reply| Request::Status { reply }).await
    }

    /// Starts `name` (and what it requires); answers once it is ready.
    pub async fn start(&self, name: &str) -> Result<String, ControlError> {
        let name = name.to_string();
        self.ask(|reply| Request::Start { name, reply }).await?
    }

    /// Stops `name` (after what requires it); answers once every process is gone.
    pub async fn stop(&self, name: &str) -> Result<String, ControlError> {
        let name = name.to_string();
        self.ask(|reply| Request::Stop { name, reply }).await?
    }

    /// Stops and starts `name` and what requires it; answers once it is ready.
    pub async fn restart(&self, name: &str) -> Result<String, ControlError> {
        let name = name.to_string();
        self.ask(|reply| Request::Restart { name, reply }).await?
    }

    /// Sends `signal` to `name`'s main process, or with `all` to every process of
    /// its current run; answers with how many got it.
    pub async fn signal(&self, name: &str, signal: i32, all: bool) -> Result<String, ControlError> {
        let name = name.to_string();
        self.ask(|reply| Request::Signal {
            name,
            signal,
            all,
            reply,
        })
        .await?
    }

    /// Begins a full shutdown, as SIGTERM would.
    pub fn shutdown(&self, trigger: &str) {
        let _ = self.tx.send(Msg::Control(Request::Shutdown {
            trigger: trigger.to_string(),
        }));
    }

    /// Every state change from now on (see [`Change`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>> {
        self.events.subscribe()
    }

    /// Reads the configuration file again and applies it by difference; answers
    /// with what it does as soon as it has begun (or why nothing changes). The
    /// services it starts and removes can then be waited on with [`Handle::wait`].
    pub async fn reload(&self) -> Result<ReloadPlan, ControlError> {
        self.ask(|reply| Request::Reload { reply }).await?
    }

    /// Processes re-parented to herder that no service claims (none backend),
    /// each `pid (state) command`.
    pub async fn unclaimed(&self) -> Result<Vec<String>, ControlError> {
        self.ask(|reply| Request::Unclaimed { reply }).await
    }

    /// The configuration in force.
    pub async fn config(&self) -> Result<herd_config::Config, ControlError> {
        Ok(*self.ask(|reply| Request::Config { reply }).await?)
    }

    /// Answers once `name` is up (or why it will not be), or with `gone` once a
    /// reload has removed it.
    pub async fn wait(&self, name: &str, gone: bool) -> Result<String, ControlError> {
        let name = name.to_string();
        self.ask(|reply| Request::Wait { name, gone, reply })
            .await?
    }
}

#[derive(Debug)]
pub(super) struct Waiter {
    name: String,
    want: Want,
    /// With `Want::Up`: services that must be up too (the dependents a restart
    /// stopped).
    also: Vec<String>,
    reply: Reply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Up,
    Down,
    /// Removed by a reload.
    Gone,
}

impl Engine {
    pub(super) fn on_request(&mut self, req: Request) {
        let mut also = Vec::new();
        let (name, want, reply, result) = match req {
            Request::Status { reply } => return self.answer_status(reply),
            Request::Shutdown { trigger } => return self.begin_shutdown(trigger),
            Request::Reload { reply } => {
                let _ = reply.send(self.reload_file("reload"));
                return;
            }
            Request::Config { reply } => {
                let _ = reply.send(Box::new(self.config_in_force()));
                return;
            }
            Request::Unclaimed { reply } => {
                let _ = reply.send(self.unclaimed());
                return;
            }
            Request::Wait { name, gone, reply } => {
                let r = if gone || self.svcs.contains_key(&name) {
                    Ok(())
                } else {
                    Err(ControlError::UnknownService(name.clone()))
                };
                (name, if gone { Want::Gone } else { Want::Up }, reply, r)
            }
            Request::Signal {
                name,
                signal,
                all,
                reply,
            } => {
                let _ = reply.send(self.signal_request(&name, signal, all));
                return;
            }
            Request::Start { name, reply } => {
                let r = self.start_request(&name);
                (name, Want::Up, reply, r)
            }
            Request::Stop { name, reply } => {
                let r = self
                    .refuse(&name, "stopped")
                    .and_then(|()| self.stop_request(&name, false, StopReason::Requested));
                (name, Want::Down, reply, r.map(drop))
            }
            Request::Restart { name, reply } => {
                let r = self
                    .refuse(&name, "restarted")
                    .and_then(|()| self.stop_request(&name, true, StopReason::Restart));
                // Answered once what it restarted, dependents included, is back.
                if let Ok(stopped) = &r {
                    also = stopped.iter().filter(|n| **n != name).cloned().collect();
                }
                (name, Want::Up, reply, r.map(drop))
            }
        };
        match result {
            // Answered once the loop has settled (see `settle_waiters`).
            Ok(()) => self.waiters.push(Waiter {
                name,
                want,
                also,
                reply,
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers a status request, and every one queued behind it, from one
    /// snapshot: the engine's state cannot have changed since they were sent (it
    /// does one thing at a time, and was doing this), and a burst of `herd ps` or
    /// a dashboard's polling costs one walk of the units. The first asked first:
    /// it has waited longest.
    fn answer_status(&mut self, reply: oneshot::Sender<Arc<Overview>>) {
        let overview = Arc::new(Overview {
            shutting_down: self.shutdown.is_some(),
            shutdown: self.shutdown_progress(),
            services: self.status(),
        });
        let _ = reply.send(Arc::clone(&overview));
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Control(Request::Status { reply }) => {
                    let _ = reply.send(Arc::clone(&overview));
                }
                other => {
                    self.deferred = Some(other);
                    break;
                }
            }
        }
    }

    /// Why a request about `name` cannot be taken now, if it cannot.
    fn refuse(&self, name: &str, verb: &str) -> Result<(), ControlError> {
        if self.shutdown.is_some() {
            return Err(ControlError::ShuttingDown(format!(
                ": {name} is not {verb}"
            )));
        }
        if !self.svcs.contains_key(name) {
            return Err(ControlError::UnknownService(name.to_string()));
        }
        Ok(())
    }

    fn signal_request(
        &mut self,
        name: &str,
        signal: i32,
        all: bool,
    ) -> Result<String, ControlError> {
        let Some(svc) = self.svcs.get_mut(name) else {
            return Err(ControlError::UnknownService(name.to_string()));
        };
        let sig = herd_config::units::Signal(signal);
        let state = svc.m.state.name();
        let failed = |e: std::io::Error| ControlError::Signal(e.to_string());
        let sent = if all {
            match svc.unit() {
                Some(u) => u.signal(signal).map_err(failed)?,
                None => 0,
            }
        } else {
            // Through the process layer's pidfd: the main process may just have
            // exited.
            match svc.m.state.pid() {
                Some(pid) => usize::from(self.procs.signal(pid, signal).map_err(failed)?),
                None => 0,
            }
        };
        if sent == 0 {
            return Err(ControlError::NoProcess {
                name: name.to_string(),
                state: state.to_string(),
            });
        }
        Ok(format!("{sig} sent to {sent} process(es) of {name}"))
    }

    fn start_request(&mut self, name: &str) -> Result<(), ControlError> {
        self.refuse(name, "started")?;
        if matches!(
            self.svcs[name].m.state,
            State::Stopping { .. } | State::Stuck { .. }
        ) || self.stop_queue.iter().any(|q| q.name == name)
        {
            return Err(ControlError::Stopping(name.to_string()));
        }
        // It and what it requires, transitively, rejoin if not running.
        let mut todo = vec![name.to_string()];
        let mut seen = BTreeSet::new();
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            let svc = self.svcs.get_mut(&n).expect("known");
            if matches!(
                svc.m.state,
                State::Stopped | State::Exited { .. } | State::Failed { .. }
            ) {
                svc.intent.rejoin = true;
            }
            todo.extend(svc.cfg.requires.iter().cloned());
        }
        Ok(())
    }

    /// Queues the stop of `name` (for `reason`) after everything that requires it,
    /// transitively (see [`orchestrate::stop_order`]); with `restart` they all
    /// start again once `name` is down. Answers with the services it stops.
    pub(super) fn stop_request(
        &mut self,
        name: &str,
        restart: bool,
        reason: StopReason,
    ) -> Result<Vec<String>, ControlError> {
        if self.stop_queue.iter().any(|q| q.name == name) {
            return Err(ControlError::AlreadyStopping(name.to_string()));
        }
        // An on-demand service stopped for idleness holds its sockets for the
        // next connection; an operator's stop lets them go.
        if !restart
            && let Some(svc) = self.svcs.get_mut(name)
            && svc.idle
            && svc.m.state == State::Stopped
        {
            svc.idle = false;
            svc.demand = None;
            svc.sockets = None;
            svc.fd_store.clear();
        }
        let order = orchestrate::stop_order(&self.svcs, name, reason, restart);
        let names = order.iter().map(|q| q.name.clone()).collect();
        for q in order {
            self.svcs.get_mut(&q.name).expect("known").intent.rejoin = false;
            self.stop_queue.push(q);
        }
        Ok(names)
    }

    /// Fires queued stops whose dependents are down; whether it fired any.
    pub(super) fn run_requests(&mut self) -> bool {
        let mut fired = false;
        while let Some(i) = orchestrate::due_stop(&self.svcs, &self.stop_queue) {
            let q: QueuedStop = self.stop_queue.remove(i);
            let deadline = Instant::now() + self.svcs[&q.name].cfg.stop.timeout;
            self.stop_for(&q.name, q.reason, deadline);
            for n in &q.rejoin {
                if let Some(s) = self.svcs.get_mut(n)
                    && !s.intent.remove
                {
                    s.intent.rejoin = true;
                }
            }
            fired = true;
        }
        fired
    }

    /// Answers the operators whose request has had its effect (or cannot).
    pub(super) fn settle_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            if w.reply.is_closed() {
                continue;
            }
            match self.answer_all(&w) {
                Some(result) => {
                    let _ = w.reply.send(result);
                }
                None => self.waiters.push(w),
            }
        }
    }

    /// The answer for a waiter, once there is one: about its service, then about
    /// each service it waits for too (`db is ready (pid 42); back too: api, web`).
    fn answer_all(&self, w: &Waiter) -> Option<Result<String, ControlError>> {
        let first = self.answer(&w.name, w.want)?;
        let Ok(msg) = first else {
            return Some(first);
        };
        if w.also.is_empty() {
            return Some(Ok(msg));
        }
        for n in &w.also {
            if let Err(e) = self.answer(n, Want::Up)? {
                return Some(Err(e));
            }
        }
        Some(Ok(format!("{msg}; back too: {}", w.also.join(", "))))
    }

    /// The answer for a waiter, once there is one.
    fn answer(&self, name: &str, want: Want) -> Option<Result<String, ControlError>> {
        let not_done = |msg: String| Some(Err(ControlError::NotDone(msg)));
        if self.shutdown.is_some() {
            return Some(Err(ControlError::ShuttingDown(format!(
                "; {name} was not {}",
                match want {
                    Want::Up => "started",
                    Want::Down | Want::Gone => "stopped by this request",
                }
            ))));
        }
        let Some(svc) = self.svcs.get(name) else {
            return match want {
                Want::Gone | Want::Down => Some(Ok(format!("{name} removed"))),
                Want::Up => not_done(format!("{name} was removed")),
            };
        };
        let busy = svc.intent.rejoin
            || svc.intent.replace.is_some()
            || self.stop_queue.iter().any(|q| q.name == name);
        match (want, &svc.m.state) {
            (Want::Gone, _) => None,
            (Want::Down, _) if orchestrate::down(svc) && !busy => Some(Ok(self.stopped(name))),
            (Want::Down, _) => None,
            // A restart's stop, or a start not begun yet: too early to tell.
            (Want::Up, _) if busy => None,
            (Want::Up, State::Ready { pid, .. }) => {
                Some(Ok(format!("{name} is ready (pid {pid})")))
            }
            (Want::Up, State::Exited { status }) if status.success() => {
                Some(Ok(format!("{name} ran to completion")))
            }
            (Want::Up, State::Failed { reason }) => not_done(format!("{name} failed: {reason}")),
            (Want::Up, State::Exited { status }) => not_done(format!("{name} exited ({status})")),
            (Want::Up, State::Backoff { .. }) => not_done(format!(
                "{name} exited ({}) and is waiting to restart",
                svc.counters
                    .last_exit
                    .map_or("unknown status".into(), |s| s.to_string())
            )),
            (Want::Up, State::Stopped) => not_done(format!("{name} was stopped")),
            (Want::Up, State::Pending) => {
                // Waiting for what it requires; a requirement that failed will not
                // come up by itself.
                let failed = svc
                    .cfg
                    .requires
                    .iter()
                    .find(|d| matches!(self.svcs[*d].m.state, State::Failed { .. }));
                failed.and_then(|d| not_done(format!("{name} cannot start: {d} failed")))
            }
            (Want::Up, _) => None,
        }
    }

    /// `db stopped`, and, honestly, what re-parented processes no service claims
    /// are still running (none backend): one of them may be the service's.
    fn stopped(&self, name: &str) -> String {
        let mut out = format!("{name} stopped");
        // Whether it had to be killed: `db stopped (SIGKILL at +2s)`.
        if let Some(at) = self.svcs.get(name).and_then(|s| s.counters.last_kill) {
            out.push_str(&format!(" (SIGKILL at +{})", format_duration(at)));
        }
        let unclaimed = self.unclaimed();
        if !unclaimed.is_empty() {
            out.push_str(&format!(
                "; {} unclaimed process(es) re-parented to herder still running: {}",
                unclaimed.len(),
                unclaimed.join(", ")
            ));
        }
        out
    }

    /// Processes no service claims, each `pid (state) command`.
    pub(super) fn unclaimed(&self) -> Vec<String> {
        let strays = self.backend.strays();
        if strays.is_empty() {
            return Vec::new();
        }
        herd_contain::procfs::describe(&strays)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn status(&mut self) -> Vec<ServiceStatus> {
        let now = Instant::now().into_std();
        let mut due = false;
        let list = self
            .svcs
            .iter_mut()
            .map(|(name, svc)| {
                let (since, detail) = match &svc.m.state {
                    State::Starting { since, .. }
                    | State::Ready { since, .. }
                    | State::RunningNotReady { since, .. } => (Some(*since), None),
                    State::Exited { status } => (None, Some(status.to_string())),
                    State::Failed { reason } => (None, Some(reason.clone())),
                    State::Stuck { pids, .. } => (None, Some(format!("pids {pids:?}"))),
                    _ => (None, None),
                };
                let ready = orchestrate::is_ready(&svc.m.state) && svc.m.state.pid().is_some();
                let failures = svc.cfg.health.as_ref().map_or(0, |h| h.failures);
                let health = super::health::describe(svc.run.as_ref(), failures, Instant::now());
                let (pids, usage) = match svc.run.as_mut() {
                    Some(run) => {
                        let pids = run.unit.pids();
                        let (usage, stale) = run.usage(&pids, now);
                        due |= stale;
                        (pids, usage)
                    }
                    None => Default::default(),
                };
                let stop = stop_progress(svc, &pids, now);
                ServiceStatus {
                    name: name.clone(),
                    kind: if svc.cfg.kind == herd_config::Kind::Oneshot {
                        "oneshot"
                    } else {
                        "long"
                    }
                    .into(),
                    requires: svc.cfg.requires.clone(),
                    state: svc.m.state.name().into(),
                    detail,
                    pid: svc.m.state.pid(),
                    pids,
                    uptime_ms: since.map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    runs: svc.counters.runs,
                    ready,
                    last_exit: svc.counters.last_exit_text(),
                    stops: svc.counters.stops,
                    kills: svc.counters.kills,
                    last_stop_ms: svc.counters.last_stop.map(|d| d.as_secs_f64() * 1000.0),
                    log_dropped_bytes: self.out.log_dropped(name),
                    health,
                    status_text: svc.status_text.clone(),
                    cpu_seconds: usage.cpu.map(|d| d.as_secs_f64()),
                    memory_bytes: usage.memory,
                    processes: usage.processes,
                    stop,
                }
            })
            .collect();
        if due && self.usage_round.is_none() {
            self.usage_round = Some(None);
            self.timers
                .insert((Instant::now() + USAGE_PAUSE, super::Timer::Usage));
        }
        list
    }

    /// Takes the usage readings a status found due, a slice at a time: an
    /// [`USAGE_SLICES`]th of the services at least, then up to [`USAGE_SLICE`]
    /// of work, then the loop's other work (answers, the next requests) before
    /// the next slice, [`USAGE_PAUSE`] later. A walk of /proc for a thousand
    /// services takes tens of milliseconds, which no request should wait for.
    pub(super) fn read_usage(&mut self) {
        let Some(after) = self.usage_round.take() else {
            return;
        };
        let at_least = self.svcs.len().div_ceil(USAGE_SLICES);
        let mut read = 0;
        let began = std::time::Instant::now();
        let from = match &after {
            Some(name) => Bound::Excluded(name.as_str()),
            None => Bound::Unbounded,
        };
        let mut next = None;
        for (name, svc) in self.svcs.range_mut::<str, _>((from, Bound::Unbounded)) {
            let Some(run) = svc.run.as_mut().filter(|r| r.usage_due(began)) else {
                continue;
            };
            run.read_usage_now(began);
            read += 1;
            if read >= at_least && began.elapsed() >= USAGE_SLICE {
                next = Some(name.clone());
                break;
            }
        }
        if let Some(name) = next {
            self.usage_round = Some(Some(name));
            self.timers
                .insert((Instant::now() + USAGE_PAUSE, super::Timer::Usage));
        }
    }

    fn shutdown_progress(&self) -> Option<ShutdownProgress> {
        let sd = self.shutdown.as_ref()?;
        Some(ShutdownProgress {
            trigger: sd.trigger.clone(),
            elapsed_ms: sd.started.elapsed().as_millis() as u64,
            budget_ms: self.plan.budget.as_millis() as u64,
            wave: sd.wave,
            waves: self
                .plan
                .waves
                .iter()
                .map(|w| w.services.iter().map(|s| s.name.clone()).collect())
                .collect(),
        })
    }
}

/// How far `svc`'s stop has got, while it is stopping or stuck; `pids` are
/// its live processes now.
fn stop_progress(svc: &Svc, pids: &[i32], now: std::time::Instant) -> Option<StopProgress> {
    let (reason, kill_due) = match &svc.m.state {
        State::Stopping {
            reason, deadline, ..
        } => (Some(*reason), Some(*deadline)),
        State::Stuck { .. } => (None, None),
        _ => return None,
    };
    let log = svc.run.as_ref()?.stop.as_ref();
    let killed = log.is_some_and(|l| l.killed_at.is_some()) || kill_due.is_none();
    let step = match log {
        _ if killed => "SIGKILL sent".to_string(),
        Some(l) if l.signal_at.is_some() => format!("{} sent", svc.cfg.stop.signal.name()),
        Some(l) if svc.cfg.stop.exec.is_some() && l.hook_took.is_none() => "hook running".into(),
        Some(l) if matches!(l.event, Some(Ok(_))) => "event sent".into(),
        _ => "requested".into(),
    };
    let reason = reason.or(log.map(|l| l.reason));
    Some(StopProgress {
        reason: reason.map_or("", StopReason::name).to_string(),
        step,
        elapsed_ms: log.map_or(0, |l| {
            now.saturating_duration_since(l.requested.into_std())
                .as_millis() as u64
        }),
        kill_in_ms: kill_due
            .filter(|_| !killed)
            .map(|d| d.saturating_duration_since(now).as_millis() as u64),
        waiting_on: herd_contain::procfs::describe(pids)
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.pid,
                state: format!("{} {}", p.state, p.state_name()),
                command: p.cmdline,
            })
            .collect(),
    })
}
