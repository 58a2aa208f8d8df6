//! Health while a service runs: its liveness checks (`health`) and sd_notify's
//! watchdog (`watchdog`).
//!
//! # How it works
//!
//! - Both begin when a run first becomes ready, and live in its [`Run`]
//!   ([`Liveness`], [`Watchdog`]), so they end with it.
//! - **Checks** are timers of the loop ([`Timer::Health`]): one attempt at a
//!   time, the next `interval` after the last one ended, so an idle service with
//!   checks every 10 s wakes herder every 10 s and at no other time. A `tcp` or
//!   `http` attempt runs in a task bounded by `timeout` and answers
//!   [`Msg::Health`]; an `exec` attempt is spawned into the service's unit like
//!   a readiness check, answered by the reaper, and killed with its process
//!   group at `timeout` ([`Timer::HealthTimeout`]). Answers carry the run and
//!   the attempt, so a late one is dropped.
//! - `failures` failed attempts in a row (not counting those within
//!   `start_period` of ready, before any attempt passed) stop the service with
//!   reason `unhealthy` through the ordinary stop; its restart policy decides
//!   what follows, as after a crash. Only the service itself is stopped: its
//!   dependents go on, as when it crashes.
//! - **The watchdog** is one timer per run ([`Timer::Watchdog`]), moved by every
//!   `WATCHDOG=1`. At the deadline, or on `WATCHDOG=trigger`, the service is
//!   stopped with reason `watchdog`: no `stop.exec` hook (a hung service would
//!   hang it too), `watchdog_signal` (SIGABRT unless set) instead of the stop
//!   signal, SIGKILL at the stop timeout. `WATCHDOG_USEC=` sets a new period
//!   from now on.
//!
//! # Caveats
//!
//! - During a shutdown neither acts: the service is being stopped already.
//! - Checks run on herder's side of the service's network: an `http` check of
//!   `127.0.0.1` reaches a service in herder's network namespace only.

use std::time::Duration;

use tokio::time::Instant;

use herd_config::ReadyCheck;
use herd_config::units::format_duration;

use super::service::Run;
use super::{Check, Engine, Msg, Timer};
use crate::log::note;
use crate::machine::{State, StopReason};

const SIGKILL: i32 = herd_config::units::Signal::KILL.0;

/// The liveness checks of one run.
#[derive(Debug)]
pub(super) struct Liveness {
    /// When the run became ready: the start period counts from here.
    pub ready_at: Instant,
    /// Attempts started so far; the number names the current one.
    pub attempts: u64,
    /// An attempt is under way.
    pub running: bool,
    /// Failed attempts in a row.
    pub failures: u32,
    /// An attempt has passed in this run (which ends the start period).
    pub passed: bool,
}

/// sd_notify's watchdog for one run.
#[derive(Debug)]
pub(super) struct Watchdog {
    pub every: Duration,
    /// The deadline: the key of its one timer.
    pub due: Instant,
}

/// The health `herd ps` shows: `healthy`, `unhealthy 2/3`, `starting` before
/// the first answer, `watchdog 4.1s left`; `None` for a service with neither.
pub(super) fn describe(run: Option<&Run>, failures: u32, now: Instant) -> Option<String> {
    let run = run?;
    let mut parts = Vec::new();
    if let Some(l) = &run.liveness {
        parts.push(match (l.failures, l.passed) {
            (0, false) if l.attempts <= 1 => "starting".to_string(),
            (0, _) => "healthy".to_string(),
            (n, _) => format!("unhealthy {n}/{failures}"),
        });
    }
    if let Some(w) = &run.watchdog {
        let left = w.due.saturating_duration_since(now);
        parts.push(format!("watchdog {:.1}s left", left.as_secs_f64()));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

impl Engine {
    /// The run has become ready: its checks and watchdog begin (once a run).
    pub(super) fn arm_health(&mut self, name: &str) {
        let now = Instant::now();
        let svc = self.svcs.get_mut(name).expect("known service");
        let (health, watchdog) = (svc.cfg.health.clone(), svc.cfg.watchdog);
        let Some(run) = svc.run.as_mut() else { return };
        if let Some(h) = health.filter(|_| run.liveness.is_none()) {
            run.liveness = Some(Liveness {
                ready_at: now,
                attempts: 0,
                running: false,
                failures: 0,
                passed: false,
            });
            let timer = Timer::Health(name.to_string(), run.number);
            self.timers.insert((now + h.interval, timer));
        }
        if let Some(every) = watchdog.filter(|_| run.watchdog.is_none()) {
            let due = now + every;
            run.watchdog = Some(Watchdog { every, due });
            self.timers
                .insert((due, Timer::Watchdog(name.to_string(), run.number)));
        }
    }

    /// A check attempt is due.
    pub(super) fn health_attempt(&mut self, name: &str, number: u64) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let running = matches!(
            svc.m.state,
            State::Ready { .. } | State::RunningNotReady { .. }
        );
        let (Some(health), Some(run), true, true) = (
            svc.cfg.health.clone(),
            svc.run.as_mut().filter(|r| r.number == number),
            running,
            self.shutdown.is_none(),
        ) else {
            return;
        };
        let Some(live) = run.liveness.as_mut() else {
            return;
        };
        live.attempts += 1;
        live.running = true;
        let attempt = live.attempts;
        if let ReadyCheck::Exec(argv) = &health.check {
            let main = svc.m.state.pid().unwrap_or(0);
            match self.spawn_check(name, argv.clone()) {
                Ok(pid) => {
                    let check = Check {
                        name: name.to_string(),
                        main,
                        health: Some((number, attempt)),
                    };
                    self.checks.insert(pid, check);
                    let timer = Timer::HealthTimeout(name.to_string(), number, attempt);
                    self.timers.insert((Instant::now() + health.timeout, timer));
                }
                Err(e) => self.health_result(name, number, attempt, Err(e)),
            }
            return;
        }
        let tx = self.tx.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            let result = crate::ready::attempt(&health.check, health.timeout).await;
            let _ = tx.send(Msg::Health {
                name,
                run: number,
                attempt,
                result,
            });
        });
    }

    /// An `exec` attempt has run past its timeout: it has failed, and is killed
    /// with what it started.
    pub(super) fn health_timeout(&mut self, name: &str, number: u64, attempt: u64) {
        let pids: Vec<i32> = self
            .checks
            .iter()
            .filter(|(_, c)| c.name == name && c.health == Some((number, attempt)))
            .map(|(pid, _)| *pid)
            .collect();
        if pids.is_empty() {
            return; // it has ended
        }
        for pid in pids {
            self.procs.signal_group(pid, SIGKILL);
        }
        let timeout = self.svcs[name]
            .cfg
            .health
            .as_ref()
            .map_or(Duration::ZERO, |h| h.timeout);
        let why = format!("no answer within {}", format_duration(timeout));
        self.health_result(name, number, attempt, Err(why));
    }

    /// The answer of an attempt: the next one is scheduled, or, at `failures`
    /// in a row, the service is stopped as unhealthy.
    pub(super) fn health_result(
        &mut self,
        name: &str,
        number: u64,
        attempt: u64,
        result: Result<(), String>,
    ) {
        let now = Instant::now();
        let Some(svc) = self.svcs.get_mut(name) else {
            return;
        };
        let Some(health) = svc.cfg.health.clone() else {
            return;
        };
        let running = matches!(
            svc.m.state,
            State::Ready { .. } | State::RunningNotReady { .. }
        );
        let Some(live) = svc
            .run
            .as_mut()
            .filter(|r| r.number == number)
            .and_then(|r| r.liveness.as_mut())
            .filter(|l| l.running && l.attempts == attempt)
        else {
            return; // about an earlier attempt or run
        };
        live.running = false;
        if !running || self.shutdown.is_some() {
            // Being stopped (its check was killed with it): nothing to count.
            return;
        }
        let before = (live.failures, live.passed);
        let mut detail = None;
        match result {
            Ok(()) => {
                if live.failures > 0 {
                    note(&format!("{name}: healthy again"));
                }
                live.failures = 0;
                live.passed = true;
            }
            Err(why) => {
                let grace = !live.passed && now < live.ready_at + health.start_period;
                if grace {
                    note(&format!(
                        "{name}: health check failed ({why}); in its start period"
                    ));
                } else {
                    live.failures += 1;
                    note(&format!(
                        "{name}: health check failed ({why}); {}/{} in a row",
                        live.failures, health.failures
                    ));
                }
                detail = Some(why);
            }
        }
        let failed = live.failures >= health.failures;
        let changed = before != (live.failures, live.passed);
        let deadline = now + svc.cfg.stop.timeout;
        if changed {
            self.publish_health(name, detail);
        }
        if failed {
            note(&format!("{name}: unhealthy: stopping it"));
            self.stop_for(name, StopReason::Unhealthy, deadline);
            return;
        }
        let timer = Timer::Health(name.to_string(), number);
        self.timers.insert((now + health.interval, timer));
    }

    /// Tells subscribers the service's health now.
    fn publish_health(&self, name: &str, detail: Option<String>) {
        let svc = &self.svcs[name];
        let failures = svc.cfg.health.as_ref().map_or(0, |h| h.failures);
        let Some(health) = describe(svc.run.as_ref(), failures, Instant::now()) else {
            return;
        };
        self.publish(super::Change::Health {
            at_ms: super::events::now_ms(),
            service: name.to_string(),
            health,
            detail,
        });
    }

    /// sd_notify `WATCHDOG=…`: `1` moves the deadline, `trigger` fails it now.
    pub(super) fn watchdog_note(&mut self, name: &str, value: &str) {
        match value {
            "1" => self.feed_watchdog(name, None),
            "trigger" => self.watchdog_missed(name, None),
            other => note(&format!(
                "{name}: WATCHDOG={other}: not understood; ignored"
            )),
        }
    }

    /// sd_notify `WATCHDOG_USEC=`: a new period, counted from now.
    pub(super) fn watchdog_period(&mut self, name: &str, value: &str) {
        match value.trim().parse::<u64>() {
            Ok(0) | Err(_) => note(&format!(
                "{name}: WATCHDOG_USEC={value}: not a period; ignored"
            )),
            Ok(usec) => self.feed_watchdog(name, Some(Duration::from_micros(usec))),
        }
    }

    /// The watchdog is fed: its deadline is a period from now (a new `period`
    /// if given, which also arms a watchdog the configuration did not set, as
    /// systemd does).
    fn feed_watchdog(&mut self, name: &str, period: Option<Duration>) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let running = matches!(
            svc.m.state,
            State::Ready { .. } | State::RunningNotReady { .. }
        );
        let Some(run) = svc.run.as_mut().filter(|_| running) else {
            return;
        };
        let timer = Timer::Watchdog(name.to_string(), run.number);
        let every = match (&run.watchdog, period) {
            (_, Some(p)) => {
                note(&format!(
                    "{name}: watchdog period now {}",
                    format_duration(p)
                ));
                p
            }
            (Some(w), None) => w.every,
            // Pings before ready, or with no watchdog set: nothing to move.
            (None, None) => return,
        };
        if let Some(w) = &run.watchdog {
            self.timers.remove(&(w.due, timer.clone()));
        }
        let due = Instant::now() + every;
        run.watchdog = Some(Watchdog { every, due });
        self.timers.insert((due, timer));
    }

    /// The watchdog's timer: missed unless it was fed since (then its timer
    /// was moved, and this one is stale).
    pub(super) fn watchdog_due(&mut self, name: &str, number: u64) {
        let due = self.svcs[name]
            .run
            .as_ref()
            .filter(|r| r.number == number)
            .and_then(|r| r.watchdog.as_ref())
            .map(|w| w.due);
        if due.is_some_and(|d| d <= Instant::now()) {
            self.watchdog_missed(name, Some(number));
        }
    }

    /// Stops the service for its watchdog (reason `watchdog`): its deadline
    /// was missed (`number`: of that run), or it said `WATCHDOG=trigger`.
    fn watchdog_missed(&mut self, name: &str, number: Option<u64>) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let running = matches!(
            svc.m.state,
            State::Ready { .. } | State::RunningNotReady { .. } | State::Starting { .. }
        );
        let Some(run) = svc
            .run
            .as_mut()
            .filter(|r| number.is_none_or(|n| n == r.number))
        else {
            return;
        };
        if !running || self.shutdown.is_some() {
            return;
        }
        let sig = svc.cfg.watchdog_signal;
        let watchdog = run.watchdog.take();
        if let Some(w) = &watchdog {
            self.timers
                .remove(&(w.due, Timer::Watchdog(name.to_string(), run.number)));
        }
        let why = match (number, watchdog) {
            (Some(_), Some(w)) => format!("no WATCHDOG=1 within {}", format_duration(w.every)),
            _ => "WATCHDOG=trigger".to_string(),
        };
        note(&format!("{name}: watchdog: {why}; sending {sig}"));
        self.publish(super::Change::Health {
            at_ms: super::events::now_ms(),
            service: name.to_string(),
            health: "watchdog missed".into(),
            detail: Some(why),
        });
        let svc = &self.svcs[name];
        let deadline = Instant::now() + svc.cfg.stop.timeout;
        self.stop_for(name, StopReason::Watchdog, deadline);
    }
}
