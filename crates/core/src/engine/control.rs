//! Operators' requests to a running engine — status, start, stop, restart, shutdown —
//! sent through a [`Handle`] (the control socket's server holds one).
//!
//! # How it works
//!
//! - An action answers only once its effect has happened: a stop when every process
//!   of the service is gone, a start when the service is ready (a oneshot: exited 0),
//!   or with the reason it could not be. Pending answers are [`Waiter`]s, settled
//!   after every turn of the loop.
//! - Stopping a service stops what `requires` it first (reason `dependency`), in
//!   reverse dependency order, each stop queued until everything that requires the
//!   service has stopped (SPEC: "stopping one stops this first").
//! - Starting a service starts what it `requires` that is not running, in order:
//!   they are marked to *rejoin*, and start as a pending service would.
//! - A restart is a stop (reason `restart`, dependents `dependency`) after which the
//!   service and the dependents it stopped rejoin.
//! - While a shutdown runs every request but status is refused: herder drains.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::events::Change;
use super::reload::ReloadPlan;
use super::{Engine, Msg, gone_or_stuck, is_ready, settled_down};
use crate::machine::{State, StopReason};

type Reply = oneshot::Sender<Result<String, String>>;

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
        reply: oneshot::Sender<Result<ReloadPlan, String>>,
    },
    /// The configuration in force.
    Config {
        reply: oneshot::Sender<Box<herd_config::Config>>,
    },
    /// Answer once `name` is up (ready, or ran to completion), or is gone (a
    /// reload removed it).
    Wait {
        name: String,
        gone: bool,
        reply: Reply,
    },
}

/// The whole herd.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    /// A shutdown has begun.
    pub shutting_down: bool,
    pub services: Vec<ServiceStatus>,
}

/// One service as `herd ps` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
}

/// Talks to a running engine from other tasks.
#[derive(Clone)]
pub struct Handle {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
    pub(super) events: tokio::sync::broadcast::Sender<Change>,
}

const GONE: &str = "herder has stopped";

impl Handle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, String> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Control(make(reply)))
            .map_err(|_| GONE.to_string())?;
        answer.await.map_err(|_| GONE.to_string())
    }

    /// Every service, by name.
    pub async fn status(&self) -> Result<Vec<ServiceStatus>, String> {
        Ok(self.overview().await?.services.clone())
    }

    /// Every service, and whether herder is shutting down. Requests that reach
    /// the engine together share one snapshot (the same `Arc`), so a caller can
    /// keep what it derives from one (serialised JSON) for the others.
    pub async fn overview(&self) -> Result<Arc<Overview>, String> {
        self.ask(|reply| Request::Status { reply }).await
    }

    /// Starts `name` (and what it requires); answers once it is ready.
    pub async fn start(&self, name: &str) -> Result<String, String> {
        let name = name.to_string();
        self.ask(|reply| Request::Start { name, reply }).await?
    }

    /// Stops `name` (after what requires it); answers once every process is gone.
    pub async fn stop(&self, name: &str) -> Result<String, String> {
        let name = name.to_string();
        self.ask(|reply| Request::Stop { name, reply }).await?
    }

    /// Stops and starts `name` and what requires it; answers once it is ready.
    pub async fn restart(&self, name: &str) -> Result<String, String> {
        let name = name.to_string();
        self.ask(|reply| Request::Restart { name, reply }).await?
    }

    /// Sends `signal` to `name`'s main process, or with `all` to every process of
    /// its current run; answers with how many got it.
    pub async fn signal(&self, name: &str, signal: i32, all: bool) -> Result<String, String> {
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
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    /// Reads the configuration file again and applies it by difference; answers
    /// with what it does as soon as it has begun (or why nothing changes). The
    /// services it starts and removes can then be waited on with [`Handle::wait`].
    pub async fn reload(&self) -> Result<ReloadPlan, String> {
        self.ask(|reply| Request::Reload { reply }).await?
    }

    /// The configuration in force.
    pub async fn config(&self) -> Result<herd_config::Config, String> {
        Ok(*self.ask(|reply| Request::Config { reply }).await?)
    }

    /// Answers once `name` is up (or why it will not be), or with `gone` once a
    /// reload has removed it.
    pub async fn wait(&self, name: &str, gone: bool) -> Result<String, String> {
        let name = name.to_string();
        self.ask(|reply| Request::Wait { name, gone, reply })
            .await?
    }
}

/// A stop that waits for `after` (services requiring this one) to be down.
#[derive(Debug)]
pub(super) struct QueuedStop {
    pub(super) name: String,
    reason: StopReason,
    after: Vec<String>,
    /// A restart: these (the service and the dependents stopped for it) start
    /// again once the service has been stopped — not before, or a dependent would
    /// come back while what it requires is still going down.
    rejoin: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Waiter {
    name: String,
    want: Want,
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
        let (name, want, reply, result) = match req {
            Request::Status { reply } => {
                let overview = Arc::new(Overview {
                    shutting_down: self.shutdown.is_some(),
                    services: self.status(),
                });
                // Status requests already queued get the same snapshot: the
                // engine's state cannot have changed since they were sent (it does
                // one thing at a time, and was doing this), and a burst of
                // `herd ps` or a dashboard's polling costs one walk of the units.
                // The first asked first: it has waited longest.
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
                return;
            }
            Request::Shutdown { trigger } => return self.begin_shutdown(trigger),
            Request::Reload { reply } => {
                let _ = reply.send(self.reload_file("reload"));
                return;
            }
            Request::Config { reply } => {
                let _ = reply.send(Box::new(self.config.clone()));
                return;
            }
            Request::Wait { name, gone, reply } => {
                let r = if gone || self.svcs.contains_key(&name) {
                    Ok(())
                } else {
                    Err(format!("no service named {name}"))
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
                (name, Want::Up, reply, r.map(drop))
            }
        };
        match result {
            Ok(()) => {
                self.waiters.push(Waiter { name, want, reply });
                self.run_requests();
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Why a request about `name` cannot be taken now, if it cannot.
    fn refuse(&self, name: &str, verb: &str) -> Result<(), String> {
        if self.shutdown.is_some() {
            return Err(format!("herder is shutting down: {name} is not {verb}"));
        }
        if !self.svcs.contains_key(name) {
            return Err(format!("no service named {name}"));
        }
        Ok(())
    }

    fn signal_request(&mut self, name: &str, signal: i32, all: bool) -> Result<String, String> {
        let Some(svc) = self.svcs.get_mut(name) else {
            return Err(format!("no service named {name}"));
        };
        let sig = herd_config::units::Signal(signal);
        let state = svc.m.state.name();
        let sent = if all {
            match &mut svc.unit {
                Some(u) => u.signal(signal).map_err(|e| e.to_string())?,
                None => 0,
            }
        } else {
            // The pidfd, never the pid: the main process may just have exited.
            match (&svc.pidfd, svc.m.state.pid()) {
                (Some(fd), Some(_)) => usize::from(fd.signal(signal).map_err(|e| e.to_string())?),
                _ => 0,
            }
        };
        if sent == 0 {
            return Err(format!("{name} is {state}: no process to signal"));
        }
        Ok(format!("{sig} sent to {sent} process(es) of {name}"))
    }

    fn start_request(&mut self, name: &str) -> Result<(), String> {
        self.refuse(name, "started")?;
        if matches!(
            self.svcs[name].m.state,
            State::Stopping { .. } | State::Stuck { .. }
        ) || self.stop_queue.iter().any(|q| q.name == name)
        {
            return Err(format!("{name} is stopping; start it once it has stopped"));
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
                svc.rejoin = true;
            }
            todo.extend(svc.cfg.requires.iter().cloned());
        }
        Ok(())
    }

    /// Queues the stop of `name` (for `reason`) after everything that requires it,
    /// transitively; with `restart` they all start again once `name` is down.
    /// Answers with the services it stops.
    pub(super) fn stop_request(
        &mut self,
        name: &str,
        restart: bool,
        reason: StopReason,
    ) -> Result<Vec<String>, String> {
        if self.stop_queue.iter().any(|q| q.name == name) {
            return Err(format!("{name} is already being stopped"));
        }
        let up = |e: &Engine, n: &str| !gone_or_stuck(&e.svcs[n]) || e.svcs[n].rejoin;
        let requirers = |e: &Engine, n: &str| -> Vec<String> {
            e.svcs
                .iter()
                .filter(|(_, s)| s.cfg.requires.iter().any(|r| r == n))
                .map(|(d, _)| d.clone())
                .collect()
        };
        // Dependents still running (or about to), found from `name` outwards.
        let mut set = BTreeSet::new();
        let mut todo = requirers(self, name);
        while let Some(d) = todo.pop() {
            if up(self, &d) && set.insert(d.clone()) {
                todo.extend(requirers(self, &d));
            }
        }
        for n in set.iter().map(String::as_str).chain([name]) {
            let after = requirers(self, n)
                .into_iter()
                .filter(|d| set.contains(d))
                .collect();
            let reason = if n == name {
                reason
            } else {
                StopReason::Dependency
            };
            self.svcs.get_mut(n).expect("known").rejoin = false;
            let rejoin = if restart && n == name {
                set.iter().cloned().chain([name.to_string()]).collect()
            } else {
                Vec::new()
            };
            self.stop_queue.push(QueuedStop {
                name: n.to_string(),
                reason,
                after,
                rejoin,
            });
        }
        Ok(set.into_iter().chain([name.to_string()]).collect())
    }

    /// Fires queued stops whose dependents are down; answers settled waiters.
    /// Called on every turn of the loop outside a shutdown.
    pub(super) fn run_requests(&mut self) {
        loop {
            // A service a reload removed may be gone from the table already.
            let due = self.stop_queue.iter().position(|q| {
                q.after.iter().all(|a| {
                    self.svcs
                        .get(a)
                        .is_none_or(|s| gone_or_stuck(s) && !s.rejoin)
                })
            });
            let Some(i) = due else { break };
            let q = self.stop_queue.remove(i);
            let deadline = Instant::now() + self.svcs[&q.name].cfg.stop.timeout;
            self.stop_for(&q.name, q.reason, deadline);
            for n in &q.rejoin {
                if let Some(s) = self.svcs.get_mut(n)
                    && !s.remove
                {
                    s.rejoin = true;
                }
            }
        }
        self.settle_waiters();
    }

    pub(super) fn settle_waiters(&mut self) {
        let waiters = std::mem::take(&mut self.waiters);
        for w in waiters {
            if w.reply.is_closed() {
                continue;
            }
            match self.answer(&w.name, w.want) {
                Some(result) => {
                    let _ = w.reply.send(result);
                }
                None => self.waiters.push(w),
            }
        }
    }

    /// The answer for a waiter, once there is one.
    fn answer(&self, name: &str, want: Want) -> Option<Result<String, String>> {
        if self.shutdown.is_some() {
            return Some(Err(format!(
                "herder is shutting down; {name} was not {}",
                match want {
                    Want::Up => "started",
                    Want::Down | Want::Gone => "stopped by this request",
                }
            )));
        }
        let Some(svc) = self.svcs.get(name) else {
            return Some(match want {
                Want::Gone | Want::Down => Ok(format!("{name} removed")),
                Want::Up => Err(format!("{name} was removed")),
            });
        };
        let busy =
            svc.rejoin || svc.replace.is_some() || self.stop_queue.iter().any(|q| q.name == name);
        match (want, &svc.m.state) {
            (Want::Gone, _) => None,
            (Want::Down, s) if settled_down(s) && svc.unit.is_none() && !busy => {
                Some(Ok(format!("{name} stopped")))
            }
            (Want::Down, _) => None,
            // A restart's stop, or a start not begun yet: too early to tell.
            (Want::Up, _) if busy => None,
            (Want::Up, State::Ready { pid, .. }) => {
                Some(Ok(format!("{name} is ready (pid {pid})")))
            }
            (Want::Up, State::Exited { status }) if status.success() => {
                Some(Ok(format!("{name} ran to completion")))
            }
            (Want::Up, State::Failed { reason }) => Some(Err(format!("{name} failed: {reason}"))),
            (Want::Up, State::Exited { status }) => Some(Err(format!("{name} exited ({status})"))),
            (Want::Up, State::Backoff { .. }) => Some(Err(format!(
                "{name} exited ({}) and is waiting to restart",
                svc.last_exit
                    .map_or("unknown status".into(), |s| s.to_string())
            ))),
            (Want::Up, State::Stopped) => Some(Err(format!("{name} was stopped"))),
            (Want::Up, State::Pending) => {
                // Waiting for what it requires; a requirement that failed will not
                // come up by itself.
                let stuck = svc
                    .cfg
                    .requires
                    .iter()
                    .find(|d| matches!(self.svcs[*d].m.state, State::Failed { .. }));
                stuck.map(|d| Err(format!("{name} cannot start: {d} failed")))
            }
            (Want::Up, _) => None,
        }
    }

    fn status(&mut self) -> Vec<ServiceStatus> {
        let now = Instant::now().into_std();
        self.svcs
            .iter_mut()
            .map(|(name, svc)| {
                let (since, detail) = match &svc.m.state {
                    State::Starting { since, .. }
                    | State::Ready { since, .. }
                    | State::RunningNotReady { since, .. } => (Some(*since), None),
                    State::Exited { status } => (None, Some(status.to_string())),
                    State::Failed { reason } => (None, Some(reason.clone())),
                    State::Stuck { pids } => (None, Some(format!("pids {pids:?}"))),
                    _ => (None, None),
                };
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
                    pids: svc.unit.as_mut().map(|u| u.pids()).unwrap_or_default(),
                    uptime_ms: since.map(|s| now.saturating_duration_since(s).as_millis() as u64),
                    runs: svc.run,
                    ready: is_ready(&svc.m.state) && svc.m.state.pid().is_some(),
                    last_exit: svc.last_exit.map(|s| s.to_string()),
                    stops: svc.stops,
                    kills: svc.kills,
                    last_stop_ms: svc.last_stop.map(|d| d.as_secs_f64() * 1000.0),
                }
            })
            .collect()
    }
}
