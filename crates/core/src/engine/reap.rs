//! The end of processes and of runs: the one reaper, and a unit found empty.
//!
//! # How it works
//!
//! - On SIGCHLD (or a fake's wake-up) every exited child is reaped through
//!   [`super::Processes::reap`] and attributed: an `exec` readiness check, a
//!   `stop.exec` hook, or a service's main process (`MainExited`). Anything else
//!   is an orphan of some service, re-parented to herder as subreaper; reaping
//!   it is all there is to do.
//! - A main process that ends on its own leaves nothing behind: what is left of
//!   its unit is SIGKILLed (in `mixed` mode, the rest of a stopping unit too).
//! - After every reap, and every `cgroup.events` change, the loop checks the units
//!   of services whose main process is gone. An empty unit is removed, its run
//!   dropped whole, its stop's closing line said, and `Empty` posted; a restart
//!   that waited for the unit to empty is resumed.
//!
//! # Caveats
//!
//! - A unit is checked only for services whose main process is gone: while it
//!   runs, the service is not stopped whatever else of it exits.
//! - The freezer and none backends have no event of their own for "empty": the
//!   last exit of a unit is always some process's SIGCHLD to herder (as
//!   subreaper), which is what wakes the check.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use herd_sys::ExitStatus;

use super::service::stop_deadline;
use super::shutdown::service_report;
use super::{Engine, Msg};
use crate::log::note;
use crate::machine::{Event, State};

impl Engine {
    pub(super) fn on_sigchld(&mut self) {
        self.reap_children();
    }

    /// Reaps every exited child; the pids it reaped.
    fn reap_children(&mut self) -> Vec<i32> {
        let reaped = self.procs.reap();
        self.check_units = true;
        if reaped.is_empty() {
            return Vec::new();
        }
        // A unit may have emptied: what the backend shares in this batch is old.
        self.backend.refresh();
        // Main processes by pid, once: a search per reaped pid made a shutdown
        // of thousands of services quadratic.
        let mut mains: HashMap<i32, String> = self
            .svcs
            .iter()
            .filter_map(|(n, s)| Some((s.m.state.pid()?, n.clone())))
            .collect();
        for &(pid, status) in &reaped {
            if let Some(check) = self.checks.remove(&pid) {
                match check.health {
                    None => self.exec_check_done(&check.name, check.main, status.success()),
                    Some((run, attempt)) => {
                        let result = match status.success() {
                            true => Ok(()),
                            false => Err(format!("the check {}", super::ended_how(status))),
                        };
                        self.health_result(&check.name, run, attempt, result);
                    }
                }
                continue;
            }
            if let Some(name) = self.hooks.remove(&pid) {
                self.hook_done(&name, status);
                continue;
            }
            if let Some(name) = mains.remove(&pid) {
                self.main_exited(&name, status);
            }
        }
        reaped.into_iter().map(|(pid, _)| pid).collect()
    }

    /// A main process named by `MAINPID=` has ended; if herder is its parent, the
    /// reaper has its real status.
    pub(super) fn main_gone(&mut self, name: &str, pid: i32) {
        self.procs.forget(pid);
        let reaped = self.reap_children();
        if !reaped.contains(&pid) && self.svcs[name].m.state.pid() == Some(pid) {
            self.main_exited(name, ExitStatus::Unknown);
        }
    }

    fn main_exited(&mut self, name: &str, status: ExitStatus) {
        let svc = self.svcs.get_mut(name).expect("known service");
        svc.counters.last_exit = Some(status);
        // A unit's memory counters start at zero with it: any OOM kill is this
        // run's.
        let ooms = svc.unit().and_then(|u| u.oom_kills()).unwrap_or(0);
        svc.counters.last_oom = ooms > 0 && status == ExitStatus::Signal(libc::SIGKILL);
        if ooms > 0 {
            let limit = svc
                .cfg
                .limits
                .memory
                .map_or(String::new(), |m| format!(" (limits.memory = {m} bytes)"));
            note(&format!(
                "{name}: the OOM killer killed {ooms} of its processes{limit}"
            ));
        }
        let stopping = matches!(svc.m.state, State::Stopping { .. });
        let mixed = svc.cfg.stop.mode == herd_config::StopMode::Mixed;
        if let Some(run) = &mut svc.run {
            run.end_ready_task();
            if let Some(log) = &mut run.stop {
                log.main_status = Some(status);
            }
        }
        self.post(name, Event::MainExited { status });
        // Leftovers of a run that ended on its own must not outlive it; in `mixed`
        // mode, the rest of the unit is killed once the main process is gone.
        let svc = self.svcs.get_mut(name).expect("known service");
        if (!stopping || mixed) && svc.unit().is_some_and(|u| !u.is_empty()) {
            if !stopping {
                note(&format!(
                    "{name}: main process gone; killing the rest of it"
                ));
            }
            self.kill_all(name);
        }
    }

    /// Turns units with no process left into `Empty` events, and removes them;
    /// the others are watched from now on, where the backend can tell when they
    /// empty.
    pub(super) fn check_empty(&mut self) {
        let hooked: Vec<&String> = self.hooks.values().collect();
        let mut gone = Vec::new();
        let mut watch = Vec::new();
        for (name, svc) in &mut self.svcs {
            // A hook's exit is handled when it is reaped, before its unit counts.
            if svc.m.state.pid().is_some() || hooked.contains(&name) {
                continue;
            }
            let Some(run) = svc.run.as_mut() else {
                continue;
            };
            if run.unit.is_empty() {
                gone.push(name.clone());
            } else if !run.watched {
                run.watched = true;
                watch.push(name.clone());
            }
        }
        for name in watch {
            self.watch_unit(&name);
        }
        let now = Instant::now();
        for name in gone {
            self.run_ended(&name, now);
            match self.svcs[&name].m.state {
                State::Stopping { .. } | State::Stuck { .. } => self.post(&name, Event::Empty),
                State::Backoff { until } if until <= now.into_std() => self.end_backoff(&name),
                _ => {}
            }
        }
    }

    /// Adds the unit's `cgroup.events` (opened by its first emptiness check) to
    /// the watch: a change since that check is reported at once.
    fn watch_unit(&mut self, name: &str) {
        let watch = match self.unit_watch() {
            Ok(w) => w.clone(),
            Err(e) => {
                return note(&format!(
                    "cannot watch units ({e}); their end is noticed on SIGCHLD only"
                ));
            }
        };
        let svc = self.svcs.get_mut(name).expect("known service");
        if let Some(fd) = svc.unit().and_then(|u| u.events())
            && let Err(e) = watch.add(fd)
        {
            note(&format!(
                "{name}: cannot watch its cgroup.events ({e}); its end is noticed on SIGCHLD only"
            ));
        }
    }

    /// The epoll set watching every unit's `cgroup.events`, made (with the task
    /// that forwards its wake-ups) the first time one is needed. A unit's
    /// descriptor leaves it when the unit is dropped.
    fn unit_watch(&mut self) -> std::io::Result<&Arc<herd_sys::watch::PriorityWatch>> {
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
        Ok(self.unit_watch.as_ref().expect("made above"))
    }

    /// The run's unit is empty: it is removed, and the run dropped whole; a stop
    /// it was in says what it took.
    fn run_ended(&mut self, name: &str, now: Instant) {
        let kind = self.backend.kind();
        let svc = self.svcs.get_mut(name).expect("known");
        let Some(mut run) = svc.run.take() else {
            return;
        };
        if let Err(e) = run.unit.remove() {
            note(&format!("{name}: cannot remove its {kind}: {e}"));
        }
        let signal = svc.cfg.stop.signal.to_string();
        let deadline = stop_deadline(&svc.m.state);
        if let Some(log) = run.stop.take()
            && deadline.is_some()
        {
            note(&format!("{name}: {}", log.summary(&signal, deadline, now)));
            svc.counters.stops += 1;
            svc.counters.kills += u64::from(log.killed_at.is_some());
            svc.counters.last_stop = Some(now - log.requested);
            svc.counters.last_kill = log.killed_at.map(|t| t - log.requested);
            if let Some(sd) = &self.shutdown {
                svc.report = Some(Box::new(service_report(
                    name,
                    svc,
                    &log,
                    Some(now),
                    sd.started,
                )));
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
    }
}
