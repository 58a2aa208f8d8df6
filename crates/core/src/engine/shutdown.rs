//! The full shutdown: stop waves in reverse dependency order within one budget,
//! the report, PID 1 duty at the end, and the state file that lets a later
//! herder clean up after this one.
//!
//! # How it works
//!
//! - SIGINT, SIGTERM, `herd down` or the end of the `main` service begins it:
//!   nothing starts or restarts any more, and the first wave's services get
//!   their stop, each with the deadline the budget planner
//!   ([`herd_config::plan`]) grants: its own grant from the wave's start, never
//!   later than the wave's `latest_kill_at` from the shutdown's start.
//! - A wave is over when each of its services is gone or stuck
//!   ([`orchestrate::wave_done`]); the next begins at once, so time a quick wave
//!   leaves flows to the later ones.
//! - When the budget is spent, or on a second signal, everything left is
//!   SIGKILLed; herder then waits only for what SIGKILL can end.
//! - At the end: processes no unit claimed (none backend) are killed, in PID 1
//!   duty herder's remaining children too, and the report is written.
//!
//! # Caveats
//!
//! - With processes stuck in uninterruptible sleep, herder exits once the budget
//!   is spent, names them, and leaves them in the state file.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use herd_config::DepGraph;
use herd_config::plan::ShutdownPlan;
use herd_config::units::format_duration;
use herd_sys::{ExitStatus, Pidfd};

use super::events::{self, Change};
use super::orchestrate;
use super::service::{StopLog, Svc, stop_deadline};
use super::{Engine, Timer};
use crate::log::note;
use crate::machine::{Event, State};
use crate::state::{Proc, StateFile};
use herd_api::{Report, ServiceReport};

const SIGKILL: i32 = herd_config::units::Signal::KILL.0;

/// A shutdown under way.
pub(super) struct Shutdown {
    pub trigger: String,
    pub started: Instant,
    started_wall: std::time::SystemTime,
    /// When each wave began.
    waves_at: Vec<Instant>,
    /// The wave stopping now.
    pub wave: usize,
    wave_started: Instant,
    /// The budget has run out: herder exits even with processes stuck.
    spent: bool,
    /// Services that had to be SIGKILLed.
    pub killed: BTreeSet<String>,
    /// Strays (processes no unit claimed) have been killed: which.
    strays_killed: Option<Vec<String>>,
    /// Init mode: herder's own remaining children have been killed.
    orphans_killed: bool,
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
    /// Services that ended `failed` (start limit, cannot start), with why.
    pub failed: Vec<(String, String)>,
    /// The shutdown report (also saved in the state directory).
    pub report: Report,
}

/// Exit code: the shutdown had to SIGKILL something (and everything is gone).
pub const EXIT_KILLED: u8 = 3;
/// Exit code: processes survived SIGKILL and were left behind (stuck).
pub const EXIT_STUCK: u8 = 4;
/// Exit code: a service ended `failed` (its start limit, a command that cannot
/// start); everything is gone.
pub const EXIT_FAILED: u8 = 5;

impl Outcome {
    /// herder's exit code: 4 if anything was left stuck; else the `main` service's
    /// code when its end ended the run (128 + N for a signal, as a shell shows
    /// it); else 5 if a service ended `failed`; else 3 if anything had to be
    /// SIGKILLed; else 0.
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
        if !self.failed.is_empty() {
            EXIT_FAILED
        } else if self.killed.is_empty() {
            0
        } else {
            EXIT_KILLED
        }
    }
}

/// Gives each service its stop wave from `plan`.
pub(super) fn assign_waves(plan: &ShutdownPlan, svcs: &mut BTreeMap<String, Svc>) {
    for (i, w) in plan.waves.iter().enumerate() {
        for s in &w.services {
            if let Some(svc) = svcs.get_mut(&s.name) {
                svc.stop_wave = i;
            }
        }
    }
}

impl Engine {
    pub(super) fn on_shutdown_signal(&mut self, sig: &str) {
        if self.shutdown.is_some() {
            note(&format!("{sig} again: SIGKILL to everything left"));
            return self.kill_everything();
        }
        self.begin_shutdown(sig.to_string());
    }

    /// Stops everything: waves in reverse dependency order, each service's deadline
    /// from the budget planner.
    pub(super) fn begin_shutdown(&mut self, trigger: String) {
        if self.shutdown.is_some() {
            return;
        }
        let now = Instant::now();
        self.plan_running();
        note(&format!(
            "{trigger}: shutting down ({} stop waves, budget {})",
            self.plan.waves.len(),
            format_duration(self.plan.budget)
        ));
        self.publish(Change::Shutdown {
            at_ms: events::now_ms(),
            trigger: trigger.clone(),
        });
        self.shutdown = Some(Shutdown {
            trigger,
            started: now,
            started_wall: std::time::SystemTime::now(),
            waves_at: vec![now],
            wave: 0,
            wave_started: now,
            spent: false,
            killed: BTreeSet::new(),
            strays_killed: None,
            orphans_killed: false,
        });
        self.timers.insert((now + self.plan.budget, Timer::Budget));
        self.backend.begin_close();
        self.begin_wave();
    }

    /// Plans the shutdown over what runs now (see
    /// [`orchestrate::running_waves`]); a pending or backing-off service, which
    /// runs nothing, is stopped at once so it never starts.
    fn plan_running(&mut self) {
        let waves = DepGraph::of(self.services.iter().map(|(n, s)| (n, &**s))).stop_waves();
        let running = orchestrate::running_waves(&self.svcs, &waves);
        let asks: Vec<Vec<(String, Duration)>> = running
            .iter()
            .map(|w| {
                w.iter()
                    .map(|n| (n.clone(), self.svcs[n].cfg.stop.timeout))
                    .collect()
            })
            .collect();
        let shutdown = &self.config.shutdown;
        self.plan = herd_config::plan::plan(shutdown.timeout, shutdown.kill_reserve, &asks);
        assign_waves(&self.plan, &mut self.svcs);
        let idle: Vec<String> = self
            .svcs
            .iter()
            .filter(|(_, s)| s.run.is_none())
            .filter(|(_, s)| matches!(s.m.state, State::Pending | State::Backoff { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in idle {
            self.stop(&name, Instant::now());
        }
    }

    pub(super) fn budget_spent(&mut self) {
        if let Some(sd) = &mut self.shutdown
            && !sd.spent
        {
            sd.spent = true;
            note("the shutdown budget is spent: SIGKILL to everything left");
            self.kill_everything();
        }
    }

    /// SIGKILL to every service, whatever its wave; nothing starts any more.
    fn kill_everything(&mut self) {
        let names: Vec<String> = self.svcs.keys().cloned().collect();
        for n in names {
            let state = &self.svcs[&n].m.state;
            if matches!(state, State::Stopping { .. }) {
                self.post(&n, Event::Deadline);
            } else if state.pid().is_some() {
                self.stop(&n, Instant::now());
                self.post(&n, Event::Deadline);
            } else {
                if matches!(state, State::Pending | State::Backoff { .. }) {
                    self.stop(&n, Instant::now());
                }
                if self.svcs[&n].run.is_some() {
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
        // Up to its own stop.timeout from the wave's start, not merely what the
        // worst case granted: time the earlier waves left unused flows on, as
        // long as the later waves keep their share (latest_kill_at).
        for s in &plan.services {
            let cap = started + plan.latest_kill_at;
            let deadline = (wave_started + s.stop_timeout).min(cap);
            self.stop(&s.name, deadline);
        }
    }

    /// Begins the next wave once the current one is done; whether it did.
    pub(super) fn advance_wave(&mut self) -> bool {
        let waves = self.plan.waves.len();
        let Some(sd) = &mut self.shutdown else {
            return false;
        };
        if sd.wave >= waves || !orchestrate::wave_done(&self.svcs, sd.wave) {
            return false;
        }
        sd.wave += 1;
        sd.wave_started = Instant::now();
        if sd.wave < waves {
            sd.waves_at.push(sd.wave_started);
        }
        self.begin_wave();
        true
    }

    /// The outcome, once the shutdown has nothing left to wait for.
    pub(super) fn finished(&mut self) -> Option<Outcome> {
        let sd = self.shutdown.as_ref()?;
        let waves_done = sd.wave >= self.plan.waves.len();
        let spent = sd.spent;
        if waves_done && sd.strays_killed.is_none() {
            self.kill_strays();
        }
        // Readiness checks, hooks and killed strays are children too: none may
        // outlive herder (each one's exit is a SIGCHLD, which wakes this check).
        let all_done = waves_done
            && self.checks.is_empty()
            && self.hooks.is_empty()
            && self.backend.strays().is_empty()
            && orchestrate::all_down(&self.svcs);
        if all_done && self.opts.init && !self.reap_orphans() {
            return None;
        }
        // Once the budget is spent, herder waits only for what SIGKILL can end.
        let settled = spent && self.svcs.values().all(orchestrate::gone_or_stuck);
        if !all_done && !settled {
            return None;
        }
        let stuck = orchestrate::not_down(&self.svcs);
        if !stuck.is_empty() {
            note(&format!(
                "the shutdown budget ({}) is spent; leaving with processes of {} still there",
                format_duration(self.plan.budget),
                stuck.join(", ")
            ));
        }
        let sd = self.shutdown.as_ref().expect("shutting down");
        let mut outcome = Outcome {
            killed: sd.killed.iter().cloned().collect(),
            stuck,
            main: self.main_ended.clone(),
            failed: self
                .svcs
                .iter()
                .filter_map(|(n, s)| match &s.m.state {
                    State::Failed { reason } => Some((n.clone(), reason.clone())),
                    _ => None,
                })
                .collect(),
            report: Report::default(),
        };
        outcome.report = self.report(&outcome);
        let path = self.opts.state_dir.join(herd_api::report::FILE);
        match self
            .opts
            .private
            .write(&path, outcome.report.json().as_bytes())
        {
            Ok(()) => note(&format!("shutdown report: {}", path.display())),
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
        let mut planned: Vec<String> = self
            .plan
            .waves
            .iter()
            .flat_map(|w| w.services.iter().map(|s| s.name.clone()))
            .collect();
        // What ran nothing when the shutdown began is reported too, after. (A
        // set: asked of every service, a list made this quadratic, 0.3 s of a
        // 10,000-service shutdown.)
        let in_plan: std::collections::HashSet<&str> = planned.iter().map(String::as_str).collect();
        let idle: Vec<String> = self
            .svcs
            .keys()
            .filter(|n| !in_plan.contains(n.as_str()))
            .cloned()
            .collect();
        planned.extend(idle);
        let mut services = Vec::new();
        for name in planned {
            let svc = self.svcs.get_mut(&name).expect("a known service");
            let log = svc.run.as_ref().and_then(|r| r.stop.clone());
            let mut r = match (&svc.report, log) {
                (Some(r), _) => ServiceReport::clone(r),
                (None, Some(log)) => service_report(&name, svc, &log, None, started),
                (None, None) => ServiceReport {
                    name: name.clone(),
                    wave: svc.stop_wave,
                    state: svc.m.state.name().into(),
                    exit_status: svc.counters.last_exit.map(|s| s.to_string()),
                    ..Default::default()
                },
            };
            if let Some(u) = svc.unit() {
                r.leftovers = herd_contain::procfs::describe(&u.pids())
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                for l in &r.leftovers {
                    note(&format!("{name}:   {l}"));
                }
            }
            services.push(r);
        }
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
            strays_killed: sd.strays_killed.as_ref().map_or(0, Vec::len),
            unclaimed: sd.strays_killed.clone().unwrap_or_default(),
            ended_at_ms: ms(now),
            outcome: if !outcome.stuck.is_empty() {
                "stuck"
            } else if outcome.killed.is_empty() {
                "clean"
            } else {
                "killed"
            }
            .into(),
            exit_code: outcome.exit_code(),
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
            kill_unclaimed(&children, "orphan ");
        }
        // Waited for like any child; the budget's end stops the wait.
        sd.spent
    }

    /// Kills what no unit claimed (none backend): herder is their subreaper, so
    /// each is its own unreaped child, and its pid cannot have been recycled.
    fn kill_strays(&mut self) {
        let strays = self.backend.strays();
        let Some(sd) = &mut self.shutdown else { return };
        let lines = herd_contain::procfs::describe(&strays);
        sd.strays_killed = Some(lines.iter().map(ToString::to_string).collect());
        if strays.is_empty() {
            return;
        }
        sd.killed.insert("(processes no service claimed)".into());
        note(&format!(
            "killing {} process(es) that no service could claim:",
            strays.len()
        ));
        kill_unclaimed(&strays, "");
    }

    /// Writes the state file: what runs now, for a later herd to find if this
    /// one is killed. Removed when nothing runs.
    pub(super) fn save_state(&mut self) {
        self.state_dirty = false;
        let dir = &self.opts.state_dir;
        let services: BTreeMap<String, crate::state::Run> = self
            .svcs
            .iter()
            .filter_map(|(n, s)| {
                let run = s.run.as_ref()?;
                let entry = crate::state::Run {
                    invocation: run.invocation.clone(),
                    main: s.m.state.pid().and_then(Proc::of),
                    cgroup: run.unit.location(),
                    stop_timeout_ms: s.cfg.stop.timeout.as_millis() as u64,
                };
                Some((n.clone(), entry))
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
                // So that a later herder can name and stop them too.
                unclaimed: self
                    .backend
                    .strays()
                    .into_iter()
                    .filter_map(Proc::of)
                    .collect(),
            }
            .save(dir, self.opts.private)
        };
        if let Err(e) = result {
            note(&format!(
                "cannot write the state file in {}: {e}",
                dir.display()
            ));
        }
    }
}

/// Names and SIGKILLs processes no service claimed (`what` says which kind).
/// A failure matters only if the process did not end on its own meanwhile.
fn kill_unclaimed(pids: &[i32], what: &str) {
    for l in herd_contain::procfs::describe(pids) {
        note(&format!("  {l}"));
    }
    for &pid in pids {
        let alive = || herd_contain::procfs::stat(pid).is_some_and(|s| s.alive());
        if let Err(e) = Pidfd::open(pid).and_then(|fd| fd.signal(SIGKILL))
            && alive()
        {
            note(&format!("cannot SIGKILL {what}{pid}: {e}"));
        }
    }
}

/// What a service's stop did, as the shutdown report shows it; `gone` is when its
/// last process went, if it did.
pub(super) fn service_report(
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
        deadline_at_ms: stop_deadline(&svc.m.state).map(ms),
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
