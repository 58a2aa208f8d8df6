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

use tokio::time::Instant;

use herd_sys::ExitStatus;

use super::Engine;
use super::service::stop_deadline;
use super::shutdown::service_report;
use crate::log::note;
use crate::machine::{Event, State};

impl Engine {
    pub(super) fn on_sigchld(&mut self) {
        self.reap_children();
    }

    /// Reaps every exited child; the pids it reaped.
    fn reap_children(&mut self) -> Vec<i32> {
        let reaped = self.procs.reap();
        for &(pid, status) in &reaped {
            if let Some((name, svc_pid)) = self.checks.remove(&pid) {
                self.exec_check_done(&name, svc_pid, status.success());
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
        self.check_units = true;
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

    /// Turns units with no process left into `Empty` events, and removes them.
    pub(super) fn check_empty(&mut self) {
        let hooked: Vec<&String> = self.hooks.values().collect();
        let gone: Vec<String> = self
            .svcs
            .iter_mut()
            .filter(|(_, s)| s.m.state.pid().is_none())
            // A hook's exit is handled when it is reaped, before its unit counts.
            .filter(|(n, _)| !hooked.contains(n))
            .filter_map(|(n, s)| s.unit().is_some_and(|u| u.is_empty()).then(|| n.clone()))
            .collect();
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
                svc.report = Some(service_report(name, svc, &log, Some(now), sd.started));
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
