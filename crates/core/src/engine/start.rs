//! Starting a service: its turn, its spawn into a fresh unit, its readiness.
//!
//! # How it works
//!
//! - **Its turn**: outside a shutdown, every settle of the loop asks
//!   [`orchestrate::startable`] which services may start (a pending service, or
//!   one an operator asked to start, once every `requires` is ready and every
//!   `after` has settled), and posts `Start` to each.
//! - **Spawn**: a new [`Run`] gets a unit of the containment backend, a fresh
//!   `HERD_INVOCATION`, the notify socket's address and (with `stop.notify`) the
//!   read end of an event pipe; the child joins its unit before exec. Its output
//!   is captured without ever blocking it; a `log` readiness regex is matched by
//!   the reader.
//! - **Readiness**: `tcp` and `http` probes run in a task; `exec` checks are
//!   spawned into the service's unit, one attempt per `interval`, and reaped by
//!   the one reaper; `log` and `notify` are answered by the output reader and the
//!   notify socket. In every case a task keeps the deadline and answers
//!   `ReadyTimeout`. Answers carry the main pid, so one about an earlier run is
//!   dropped.
//!
//! # Caveats
//!
//! - A spawn that fails marks the service `failed` (the machine does not retry a
//!   command that cannot start), unless it failed for want of descriptors,
//!   processes or memory: that attempt is retried after the restart backoff.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use herd_config::ReadyCheck;
use herd_contain::procfs::INVOCATION_VAR;
use herd_sys::spawn::is_transient;

use super::orchestrate::{self, Member};
use super::service::{Run, limits};
use super::{Check, Engine, Msg, Timer, stop};
use crate::log::note;
use crate::machine::{Event, State};

const SIGKILL: i32 = herd_config::units::Signal::KILL.0;

/// A spawn's failure: a shortage (`transient`) is an attempt to retry, anything
/// else a command that cannot start.
fn spawn_failed(reason: String, transient: bool) -> Event {
    if transient {
        Event::SpawnShort { reason }
    } else {
        Event::SpawnFailed { reason }
    }
}

impl Engine {
    /// Posts what may start now, or advances the shutdown; whether it posted
    /// anything (the loop settles until it does not).
    pub(super) fn schedule(&mut self) -> bool {
        if self.shutdown.is_some() {
            return self.advance_wave();
        }
        self.apply_replacements();
        self.arm_demand();
        let ready = orchestrate::startable(&self.svcs);
        let mut posted = !ready.is_empty();
        for name in ready {
            self.svcs.get_mut(&name).expect("known").intent.rejoin = false;
            self.post(&name, Event::Start);
        }
        posted |= self.run_requests();
        posted
    }

    /// On-demand services not yet started, or back from a clean exit, get their
    /// sockets bound and watched for a connection (see [`Engine::on_demand`]).
    fn arm_demand(&mut self) {
        for (name, svc) in self.svcs.iter_mut() {
            let waiting = match svc.m.state {
                State::Pending => true,
                State::Exited { status } => status.success(),
                State::Stopped => svc.idle,
                _ => false,
            };
            if !svc.cfg.on_demand || !waiting || svc.intent.rejoin || svc.demand.is_some() {
                continue;
            }
            if svc.sockets.is_none() {
                match crate::sockets::bind_all(&svc.cfg.sockets) {
                    Ok(bound) => svc.sockets = Some(bound),
                    Err(e) => {
                        // Started now, its spawn fails with the reason.
                        note(&format!("{name}: {e}"));
                        svc.intent.rejoin = true;
                        continue;
                    }
                }
            }
            let fds = svc
                .sockets
                .as_ref()
                .map_or_else(Vec::new, |b| b.fds.clone());
            let tx = self.tx.clone();
            let n = name.clone();
            svc.demand = Some(crate::sockets::watch(&fds, move || {
                let _ = tx.send(Msg::Demand { name: n.clone() });
            }));
            note(&format!(
                "{name} waits for a connection on {}",
                svc.cfg
                    .sockets
                    .iter()
                    .map(|s| s.listen.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }

    /// A connection waits on an on-demand service's socket: it starts (what
    /// it requires first), and takes the connection from the backlog.
    pub(super) fn on_demand(&mut self, name: &str) {
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        if svc.demand.take().is_none() || self.shutdown.is_some() {
            return;
        }
        note(&format!("{name}: a connection is waiting: starting it"));
        svc.intent.rejoin = true;
        svc.idle = false;
        let requires = svc.cfg.requires.clone();
        for r in requires {
            if let Some(dep) = self.svcs.get_mut(&r)
                && matches!(
                    dep.m.state,
                    State::Stopped | State::Exited { .. } | State::Failed { .. }
                )
            {
                dep.intent.rejoin = true;
            }
        }
    }

    /// An `idle_stop` service is ready: connections arriving on its sockets
    /// are watched, and its idleness looked at once a period.
    pub(super) fn arm_idle(&mut self, name: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let (Some(idle), Some(run), Some(bound)) = (svc.cfg.idle_stop, &svc.run, &svc.sockets)
        else {
            return;
        };
        // Once a run: ready again after RELOADING=1, it is watched already.
        if svc.activity.is_some() {
            return;
        }
        let tx = self.tx.clone();
        let n = name.to_string();
        let arrivals = crate::sockets::activity(&bound.fds, move || {
            let _ = tx.send(Msg::Activity { name: n.clone() });
        });
        svc.activity = Some(super::service::Activity {
            _arrivals: arrivals,
            arrived: false,
            cpu: None,
        });
        self.timers.insert((
            Instant::now() + idle,
            Timer::Idle(name.to_string(), run.number),
        ));
    }

    /// Once an `idle_stop` period: the service was idle through it if no
    /// connection arrived that epoll saw, none is open now, and it used no CPU
    /// time; then it is stopped, else looked at again a period later. (A
    /// connection the service accepts before herder looks is not seen
    /// arriving, hence the other two signs.) So it stops between one and two
    /// periods after its last work.
    pub(super) fn idle_due(&mut self, name: &str, number: u64) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let running = matches!(
            svc.m.state,
            State::Ready { .. } | State::RunningNotReady { .. }
        );
        let (Some(idle), Some(run)) = (svc.cfg.idle_stop, svc.run.as_mut()) else {
            return;
        };
        if run.number != number || !running || self.shutdown.is_some() {
            return;
        }
        let pids = run.unit.pids();
        let cpu = run.unit.usage(&pids).cpu;
        let open = crate::sockets::open_connections(&svc.cfg.sockets);
        let Some(a) = svc.activity.as_mut() else {
            return;
        };
        let busy = a.arrived || open > 0 || a.cpu.is_none() || cpu != a.cpu;
        a.arrived = false;
        a.cpu = cpu;
        if busy {
            self.timers
                .insert((Instant::now() + idle, Timer::Idle(name.to_string(), number)));
            return;
        }
        note(&format!(
            "{name}: idle for {}: stopping it; the next connection starts it again",
            herd_config::units::format_duration(idle)
        ));
        svc.idle = true;
        svc.activity = None;
        let deadline = Instant::now() + svc.cfg.stop.timeout;
        self.stop_for(name, crate::machine::StopReason::Idle, deadline);
    }

    pub(super) fn spawn(&mut self, name: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let invocation = herd_contain::procfs::new_invocation();
        let mut extra: Vec<(String, String)> = svc
            .notify
            .iter()
            .map(|l| ("NOTIFY_SOCKET".to_string(), l.env.clone()))
            .collect();
        extra.push((INVOCATION_VAR.into(), invocation.clone()));
        if let Some(every) = svc.cfg.watchdog {
            extra.push(("WATCHDOG_USEC".into(), every.as_micros().to_string()));
        }
        svc.status_text = None;
        // Started (by a connection or an operator), it waits for none.
        svc.demand = None;
        svc.idle = false;
        // Its listening sockets: bound at its first start, then held across
        // its runs (see `crate::sockets`), from descriptor 3 on.
        if !svc.cfg.sockets.is_empty() && svc.sockets.is_none() {
            match crate::sockets::bind_all(&svc.cfg.sockets) {
                Ok(bound) => svc.sockets = Some(bound),
                Err(reason) => return self.post_now(name, Event::SpawnFailed { reason }),
            }
        }
        // Then what it put in its fd store, as systemd passes both.
        let mut sockets: Vec<Arc<OwnedFd>> = svc
            .sockets
            .as_ref()
            .map_or_else(Vec::new, |b| b.fds.clone());
        sockets.extend(svc.fd_store.iter().map(|(_, fd)| fd.clone()));
        let listen = !sockets.is_empty();
        if listen {
            extra.push(("LISTEN_FDS".into(), sockets.len().to_string()));
            let names: Vec<&str> = (svc.cfg.sockets.iter().map(|s| s.name.as_str()))
                .chain(svc.fd_store.iter().map(|(n, _)| n.as_str()))
                .collect();
            extra.push(("LISTEN_FDNAMES".into(), names.join(":")));
        }
        // The event pipe: the service reads, herder writes (never blocking).
        let pipe = if svc.cfg.stop.notify {
            match stop::event_pipe() {
                Ok((r, w)) => {
                    // After the sockets, which systemd's protocol puts first.
                    let fd = herd_sys::spawn::FIRST_INHERITED_FD + sockets.len() as i32;
                    extra.push(("HERD_EVENTS_FD".into(), fd.to_string()));
                    Some((Arc::new(r), w))
                }
                Err(e) => {
                    let reason = format!("cannot make its event pipe: {e}");
                    return self.post_now(name, spawn_failed(reason, is_transient(&e)));
                }
            }
        } else {
            None
        };
        let mut spec = match crate::spec::build(&svc.cfg, &extra) {
            Ok(s) => s,
            Err(reason) => return self.post_now(name, Event::SpawnFailed { reason }),
        };
        spec.inherit = sockets;
        spec.inherit.extend(pipe.iter().map(|(r, _)| r.clone()));
        if svc.cfg.watchdog.is_some() {
            spec.pid_env.push("WATCHDOG_PID".into());
        }
        if listen {
            spec.pid_env.push("LISTEN_PID".into());
        }
        let mut unit = match self.backend.create(name, &limits(&svc.cfg)) {
            Ok(u) => u,
            Err(e) => {
                let reason = format!("cannot create its {} unit: {e}", self.backend.kind());
                return self.post_now(name, spawn_failed(reason, is_transient(&e)));
            }
        };
        unit.set_invocation(&invocation);
        spec.cgroups = match unit.join() {
            Ok(j) => j,
            Err(e) => {
                let _ = unit.remove();
                let reason = format!("cannot join its {}: {e}", self.backend.kind());
                return self.post_now(name, spawn_failed(reason, is_transient(&e)));
            }
        };
        let child = match self.procs.spawn(&spec) {
            Ok(c) => c,
            Err(e) => {
                let _ = unit.remove();
                return self.post_now(name, spawn_failed(e.to_string(), e.is_transient()));
            }
        };
        let pid = child.pid;
        unit.started(pid);
        let svc = self.svcs.get_mut(name).expect("known service");
        svc.counters.runs += 1;
        let mut run = Run::new(svc.counters.runs, unit, invocation);
        // The read end now lives in the child only.
        run.events = pipe.map(|(_, w)| w);
        svc.run = Some(run);
        let log_re = match svc.cfg.ready.as_ref().map(|r| &r.check) {
            Some(ReadyCheck::Log(re)) => regex_lite::Regex::new(re).ok(),
            _ => None,
        };
        if let Some(fd) = child.output {
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
        self.post_now(name, Event::Spawned { pid });
    }

    pub(super) fn watch_readiness(&mut self, name: &str, deadline: Instant) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let (Some(ready), Some(pid), Some(run)) =
            (svc.cfg.ready.clone(), svc.m.state.pid(), svc.run.as_mut())
        else {
            return;
        };
        run.ready_deadline = Some(deadline);
        let tx = self.tx.clone();
        let n = name.to_string();
        let answered_elsewhere = matches!(
            ready.check,
            ReadyCheck::Log(_) | ReadyCheck::Notify | ReadyCheck::Exec(_)
        );
        let exec = matches!(ready.check, ReadyCheck::Exec(_));
        run.ready_task = Some(tokio::spawn(async move {
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
        if exec {
            self.run_exec_check(name);
        }
    }

    /// Starts one attempt of a service's `exec` readiness check.
    pub(super) fn run_exec_check(&mut self, name: &str) {
        let svc = &self.svcs[name];
        let (Some(main), Some(ReadyCheck::Exec(argv))) =
            (svc.m.state.pid(), svc.cfg.ready.as_ref().map(|r| &r.check))
        else {
            return;
        };
        match self.spawn_check(name, argv.clone()) {
            Ok(pid) => {
                let check = Check {
                    name: name.to_string(),
                    main,
                    health: None,
                };
                self.checks.insert(pid, check);
            }
            Err(e) => {
                note(&format!("{name}: readiness check cannot run: {e}"));
                self.retry_exec_check(name);
            }
        }
    }

    /// Spawns `argv` into the service's unit, as the service's user, in its
    /// directory and environment, output discarded: an `exec` check.
    pub(super) fn spawn_check(&mut self, name: &str, argv: Vec<String>) -> Result<i32, String> {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Some(run) = svc.run.as_mut() else {
            return Err("nothing runs".into());
        };
        let inv = [(INVOCATION_VAR.into(), run.invocation.clone())];
        let spec = crate::spec::build(&svc.cfg, &inv)?;
        let spec = herd_sys::Spec {
            argv,
            discard_output: true,
            cgroups: run.unit.join().map_err(|e| e.to_string())?,
            ..spec
        };
        let child = self.procs.spawn(&spec).map_err(|e| e.to_string())?;
        run.unit.started(child.pid);
        Ok(child.pid)
    }

    pub(super) fn exec_check_done(&mut self, name: &str, svc_pid: i32, passed: bool) {
        if self.svcs[name].m.state.pid() != Some(svc_pid) {
            return; // about an earlier run
        }
        if passed {
            self.post(name, Event::ReadyCheckPassed);
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
        let deadline = svc.run.as_ref().and_then(|r| r.ready_deadline);
        if deadline.is_some_and(|d| at < d) {
            self.timers.insert((at, Timer::ExecCheck(name.to_string())));
        }
    }

    /// Ends the service's running readiness checks (and what they started).
    pub(super) fn kill_checks(&mut self, name: &str) {
        for (pid, c) in &self.checks {
            if c.name == name {
                self.procs.signal_group(*pid, SIGKILL);
            }
        }
    }

    /// A restart is due. During a shutdown it is refused (the service is stopped
    /// instead); while the previous run's unit still has members it waits, and
    /// `check_empty` resumes it once the unit is empty.
    pub(super) fn end_backoff(&mut self, name: &str) {
        if self.shutdown.is_some() {
            note(&format!("{name}: no restart during shutdown"));
            return self.stop(name, Instant::now());
        }
        if self.svcs[name].has_run() {
            return note(&format!(
                "{name}: restart waits for the rest of the previous run to exit"
            ));
        }
        self.post(name, Event::BackoffElapsed);
    }
}
