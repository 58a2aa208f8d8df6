//! Stopping one service: the shutdown event, the `stop.exec` hook, the stop
//! signal, SIGKILL at the deadline and again while processes survive it.
//!
//! # How it works
//!
//! - The machine enters `Stopping` with its deadline (the one copy of it) and asks
//!   for `SignalStop`: a [`StopLog`] is opened on the run, the shutdown event goes
//!   out on the event pipe of a service that subscribed (`stop.notify`), then the
//!   `stop.exec` hook runs in the service's unit, and when it ends (or at once,
//!   without one) the stop signal goes to every process of the unit, or to the
//!   main one, by `stop.mode`, followed by SIGCONT to the same processes (a
//!   stopped process acts on nothing until it runs again).
//! - At the deadline the machine asks for `KillAll`: SIGKILL to the main process
//!   and the whole unit, through the backend (no pid can be recycled in between).
//!   If the unit is not empty a little later, the survivors are named, the
//!   service is `stuck`, and SIGKILL is repeated with exponential backoff
//!   (100 ms doubling to 5 s) until they are gone.
//! - sd_notify `EXTEND_TIMEOUT_USEC=` moves the deadline, never past what the
//!   shutdown budget allows.
//!
//! # Caveats
//!
//! - The event pipe never blocks herder: a service that does not read it misses
//!   events, and the stop log says so.
//! - A process in uninterruptible sleep cannot be killed by anyone; herder says
//!   which it is and keeps trying.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::time::Instant;

use herd_config::StopMode;
use herd_config::units::format_duration;
use herd_contain::procfs::INVOCATION_VAR;

use super::service::{FIRST_KILL_RETRY, MAX_KILL_RETRY, StopLog, stop_deadline};
use super::{Engine, Timer};
use crate::log::note;
use crate::machine::{Event, State, StopReason};

const SIGKILL: i32 = herd_config::units::Signal::KILL.0;
const SIGCONT: i32 = libc::SIGCONT;

impl Engine {
    /// Stops `name` for a shutdown, SIGKILL due at `deadline`.
    pub(super) fn stop(&mut self, name: &str, deadline: Instant) {
        self.stop_for(name, StopReason::Shutdown, deadline);
    }

    pub(super) fn stop_for(&mut self, name: &str, reason: StopReason, deadline: Instant) {
        self.kill_checks(name);
        self.post(
            name,
            Event::Stop {
                reason,
                deadline: deadline.into_std(),
            },
        );
    }

    /// The start of a stop, which found the service in state `from`: the
    /// `stop.exec` hook if there is one (the signal follows when it ends), else
    /// the stop signal.
    pub(super) fn signal_stop(&mut self, name: &str, from: &'static str) {
        let now = Instant::now();
        let svc = self.svcs.get_mut(name).expect("known service");
        let State::Stopping {
            reason, deadline, ..
        } = svc.m.state
        else {
            return;
        };
        let Some(run) = svc.run.as_mut() else { return };
        let mut log = StopLog::new(now, reason, from);
        if svc.cfg.stop.notify {
            let event = deliver_stop_event(run.events.as_ref(), reason, deadline.into());
            match &event {
                Err(e) => note(&format!("{name}: shutdown event not delivered: {e}")),
                Ok(_) => note(&format!(
                    "{name}: shutdown event delivered (reason {}, {} left)",
                    reason.name(),
                    format_duration(deadline.saturating_duration_since(now.into_std()))
                )),
            }
            log.event = Some(event);
        }
        run.stop = Some(log);
        run.kill_backoff = FIRST_KILL_RETRY;
        svc.activity = None;
        // Being stopped, it owes no more pings.
        if let Some(w) = run.watchdog.take() {
            self.timers
                .remove(&(w.due, Timer::Watchdog(name.to_string(), run.number)));
        }
        // A service that missed its watchdog is hung: its hook would hang too.
        let hook = svc
            .cfg
            .stop
            .exec
            .clone()
            .filter(|_| reason != StopReason::Watchdog);
        if let Some(argv) = hook {
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
        let Some(run) = svc.run.as_mut() else {
            return Err("nothing runs".into());
        };
        let left = deadline.saturating_duration_since(Instant::now().into_std());
        // The hook may speak sd_notify for the service (EXTEND_TIMEOUT_USEC=).
        let mut extra = vec![(INVOCATION_VAR.to_string(), run.invocation.clone())];
        if let Some(l) = &svc.notify {
            extra.push(("NOTIFY_SOCKET".into(), l.env.clone()));
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
        spec.cgroups = run.unit.join().map_err(|e| e.to_string())?;
        let child = self.procs.spawn(&spec).map_err(|e| e.to_string())?;
        run.unit.started(child.pid);
        self.hooks.insert(child.pid, name.to_string());
        Ok(())
    }

    pub(super) fn hook_done(&mut self, name: &str, status: herd_sys::ExitStatus) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Some(log) = svc.stop_log() else { return };
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
        let signal = match svc.m.state {
            State::Stopping {
                reason: StopReason::Watchdog,
                ..
            } => svc.cfg.watchdog_signal,
            _ => svc.cfg.stop.signal,
        };
        let sig = signal.0;
        let main = svc.m.state.pid();
        let Some(run) = svc.run.as_mut() else { return };
        if let Some(log) = &mut run.stop {
            log.signal_at = Some(Instant::now());
        }
        // A stopped process (SIGSTOP, a debugger) acts on the signal only once it
        // runs again, so those signalled are continued, as systemd and s6 do;
        // without it a stopped service with a TERM handler waits out its whole
        // timeout and is SIGKILLed.
        let both = [sig, SIGCONT];
        let signals = if sig == SIGCONT {
            &both[..1]
        } else {
            &both[..]
        };
        let failed = match (svc.cfg.stop.mode, main) {
            (StopMode::Group, _) => run.unit.signals(signals).err(),
            // Continued even if the stop signal could not be sent.
            (_, Some(pid)) => signals.iter().fold(None, |first, &s| {
                let failed = self.procs.signal(pid, s).err();
                first.or(failed)
            }),
            _ => None,
        };
        if let Some(e) = failed {
            note(&format!("{name}: cannot send {signal}: {e}"));
        }
    }

    /// SIGKILL to everything of the service; retried while processes survive it.
    pub(super) fn kill_all(&mut self, name: &str) {
        if let Some(sd) = &mut self.shutdown {
            sd.killed.insert(name.to_string());
        }
        let now = Instant::now();
        let svc = self.svcs.get_mut(name).expect("known service");
        if let Some(pid) = svc.m.state.pid()
            && let Err(e) = self.procs.signal(pid, SIGKILL)
        {
            note(&format!("{name}: SIGKILL of the main process failed: {e}"));
        }
        let Some(run) = svc.run.as_mut() else { return };
        if let Some(log) = &mut run.stop {
            log.killed_at.get_or_insert(now);
        }
        if let Err(e) = run.unit.kill() {
            note(&format!("{name}: SIGKILL failed: {e}"));
        }
        let at = now + run.kill_backoff;
        self.timers
            .insert((at, Timer::KillRetry(name.to_string(), run.number)));
    }

    /// A SIGKILL is some time old and the unit is not empty: processes survive it
    /// (uninterruptible sleep, a frozen cgroup). Kill again, with backoff, and say
    /// which processes they are.
    pub(super) fn kill_retry(&mut self, name: &str, number: u64) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Some(run) = svc.run.as_mut().filter(|r| r.number == number) else {
            return;
        };
        if run.unit.is_empty() {
            return;
        }
        let left = herd_contain::procfs::describe(&run.unit.pids());
        if let Some(log) = &mut run.stop {
            log.stuck = log.stuck.max(left.len());
        }
        let waited = run.kill_backoff;
        run.kill_backoff = (run.kill_backoff * 2).min(MAX_KILL_RETRY);
        note(&format!(
            "{name}: {} process(es) still there {} after SIGKILL; killing again:",
            left.len(),
            format_duration(waited)
        ));
        for l in &left {
            note(&format!("{name}:   {l}"));
        }
        if matches!(svc.m.state, State::Stopping { .. } | State::Stuck { .. }) {
            let pids = left.iter().map(|l| l.pid).collect();
            self.post(name, Event::KillFailed { pids });
        }
        self.kill_all(name);
    }

    /// sd_notify `EXTEND_TIMEOUT_USEC=`: while stopping, SIGKILL is put off until
    /// that long from now (as systemd: the service must ask again before it runs
    /// out), never beyond what the budget allows: in a shutdown, the latest its
    /// wave may SIGKILL and still leave the later waves their share; otherwise the
    /// shutdown budget from the start of the stop. Elsewhere it is not honoured,
    /// and herder says so.
    pub(super) fn extend(&mut self, name: &str, value: &str) {
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
                .run
                .as_ref()
                .and_then(|r| r.stop.as_ref())
                .map_or(now, |l| l.requested + self.plan.budget),
        };
        let svc = self.svcs.get_mut(name).expect("known service");
        let State::Stopping {
            escalated: false, ..
        } = svc.m.state
        else {
            return note(&format!(
                "{name}: EXTEND_TIMEOUT_USEC={value} ignored: honoured only while stopping, before SIGKILL"
            ));
        };
        let deadline = stop_deadline(&svc.m.state).expect("stopping");
        // A value too large for the clock asks for more than any cap.
        let want = now.checked_add(Duration::from_micros(usec));
        let capped = want.is_none_or(|w| w > cap);
        let granted = if capped { cap } else { want.expect("checked") };
        if granted <= deadline {
            return note(&format!(
                "{name}: EXTEND_TIMEOUT_USEC={value}: the deadline stays in {} ({})",
                format_duration(deadline.saturating_duration_since(now)),
                if capped {
                    "the budget allows no more"
                } else {
                    "already later"
                }
            ));
        }
        if let Some(log) = svc.stop_log() {
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
        self.post(
            name,
            Event::Extend {
                deadline: granted.into_std(),
            },
        );
    }
}

/// A pipe for a service's events: the read end (blocking, for the service) and the
/// write end (non-blocking, close-on-exec, herder's).
pub(super) fn event_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
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
    let full = "the pipe is full (the service does not read it)";
    match rustix::io::write(fd, line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(Instant::now()),
        Ok(_) | Err(rustix::io::Errno::AGAIN) => Err(full.into()),
        Err(rustix::io::Errno::PIPE) => Err("the service closed its end of the pipe".into()),
        Err(e) => Err(e.to_string()),
    }
}
