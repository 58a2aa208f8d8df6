//! The per-service state machine: a pure `step` from (machine, event, now) to the new
//! state and the effects the engine must carry out. No I/O happens here, so every
//! transition is tested from a table, without processes.
//!
//! ```mermaid
//! stateDiagram-v2
//!     [*] --> Pending
//!     Pending --> Starting: Start / Spawn
//!     Starting --> Ready: ReadyCheckPassed (or no check)
//!     Starting --> Failed: SpawnFailed, ReadyTimeout (no restart left)
//!     Starting --> Backoff: SpawnShort (descriptors, processes or memory short)
//!     Starting --> Backoff: exits, ReadyTimeout (restart allowed)
//!     Ready --> RunningNotReady: NotReady (sd_notify RELOADING=1)
//!     RunningNotReady --> Ready: ReadyCheckPassed
//!     Ready --> Backoff: MainExited (restart allowed)
//!     Ready --> Exited: MainExited (no restart)
//!     Ready --> Failed: MainExited (start limit reached)
//!     Backoff --> Starting: BackoffElapsed / Spawn
//!     Ready --> Stopping: Stop / Signal
//!     Ready --> Stopping: Stop (unhealthy, watchdog) / Signal
//!     Stopping --> Backoff: Empty (stopped for a failure, restart allowed)
//!     Stopping --> Failed: Empty (stopped for a failure, no restart left)
//!     Starting --> Stopping: Stop / Signal
//!     Stopping --> Stopping: Deadline / Kill (escalated)
//!     Stopping --> Stopping: Extend (later deadline, not yet escalated)
//!     Stopping --> Stopped: Empty
//!     Stopping --> Stuck: KillFailed
//!     Stuck --> Stopped: Empty
//!     Pending --> Stopped: Stop
//!     Backoff --> Stopped: Stop
//!     Exited --> Starting: Start
//!     Failed --> Starting: Start (asked for: resets the start limit)
//!     Stopped --> Starting: Start
//! ```
//!
//! A service is only `Stopped` when the engine reports it `Empty` — every process of
//! it gone — never merely because its main process exited.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herd_config::RestartPolicy;
use herd_config::units::{Backoff, StartLimit};
use herd_sys::ExitStatus;

/// Why a service is being stopped; delivered to services that subscribe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Requested,
    Shutdown,
    Dependency,
    Restart,
    Reload,
    /// Its readiness check timed out.
    Failure,
    /// Its health check failed `failures` times in a row.
    Unhealthy,
    /// It missed its sd_notify watchdog deadline (or sent `WATCHDOG=trigger`).
    Watchdog,
    /// An on-demand service had no connection for `idle_stop`.
    Idle,
}

impl StopReason {
    /// The word services see (`HERD_STOP_REASON`).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Requested => "requested",
            StopReason::Shutdown => "shutdown",
            StopReason::Dependency => "dependency",
            StopReason::Restart => "restart",
            StopReason::Reload => "reload",
            StopReason::Failure => "failure",
            StopReason::Unhealthy => "unhealthy",
            StopReason::Watchdog => "watchdog",
            StopReason::Idle => "idle",
        }
    }

    /// The service is stopped because it failed, not because anyone asked: once
    /// it is down, its restart policy decides what follows, and the run counts
    /// as a failed one.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StopReason::Failure | StopReason::Unhealthy | StopReason::Watchdog
        )
    }

    /// What the failure was, for the `failed` state's reason and the log.
    fn failure(self) -> &'static str {
        match self {
            StopReason::Unhealthy => "health check failed",
            StopReason::Watchdog => "watchdog deadline missed",
            _ => "readiness check timed out",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for its dependencies.
    Pending,
    /// Spawned; waiting for its readiness check.
    Starting { pid: i32, since: Instant },
    /// Running and ready.
    Ready { pid: i32, since: Instant },
    /// Running, but said it is not ready (sd_notify `RELOADING=1`).
    RunningNotReady { pid: i32, since: Instant },
    /// Waiting for every process to be gone.
    Stopping {
        reason: StopReason,
        deadline: Instant,
        escalated: bool,
        /// The main process, until it is reaped.
        main: Option<i32>,
    },
    /// Stopped on request; nothing of it runs.
    Stopped,
    /// Ran to its end and is not restarted (oneshot, or policy).
    Exited { status: ExitStatus },
    /// Will not run again until asked.
    Failed { reason: String },
    /// Waiting to restart.
    Backoff { until: Instant },
    /// Processes that survived SIGKILL (uninterruptible sleep); `deadline` is
    /// when SIGKILL was due.
    Stuck { pids: Vec<i32>, deadline: Instant },
}

impl State {
    /// The short name `herd ps` shows.
    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting { .. } => "starting",
            State::Ready { .. } => "ready",
            State::RunningNotReady { .. } => "running-not-ready",
            State::Stopping { .. } => "stopping",
            State::Stopped => "stopped",
            State::Exited { .. } => "exited",
            State::Failed { .. } => "failed",
            State::Backoff { .. } => "backoff",
            State::Stuck { .. } => "stuck",
        }
    }

    /// The main process, while there is one.
    pub fn pid(&self) -> Option<i32> {
        match self {
            State::Starting { pid, .. }
            | State::Ready { pid, .. }
            | State::RunningNotReady { pid, .. } => Some(*pid),
            State::Stopping { main, .. } => *main,
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Dependencies are satisfied, or an operator asked.
    Start,
    Spawned {
        pid: i32,
    },
    SpawnFailed {
        reason: String,
    },
    /// The spawn failed for want of a resource that may be there on the next try
    /// (descriptors, processes, memory): an attempt, retried after the restart
    /// backoff whatever the policy, and counted against the start limit.
    SpawnShort {
        reason: String,
    },
    ReadyCheckPassed,
    ReadyTimeout,
    NotReady,
    /// sd_notify `MAINPID=`: another process of the service is now its main one.
    MainPid {
        pid: i32,
    },
    /// The main process was reaped.
    MainExited {
        status: ExitStatus,
    },
    /// Every process of the service is gone.
    Empty,
    Stop {
        reason: StopReason,
        deadline: Instant,
    },
    /// The stop deadline passed.
    Deadline,
    /// The service asked for more time to stop (sd_notify `EXTEND_TIMEOUT_USEC=`):
    /// the deadline moves to `deadline` if that is later and SIGKILL has not gone
    /// out yet. The engine caps it by the budget.
    Extend {
        deadline: Instant,
    },
    /// Processes survived SIGKILL.
    KillFailed {
        pids: Vec<i32>,
    },
    BackoffElapsed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Spawn,
    /// Start the readiness check; no check configured means ready at once.
    WatchReadiness {
        deadline: Instant,
    },
    /// The stop signal, by the service's stop mode.
    SignalStop,
    /// SIGKILL to everything of the service.
    KillAll,
    /// Wake the machine with `Deadline` or `BackoffElapsed` at this time.
    Timer {
        at: Instant,
    },
    /// Something an operator should read in the log.
    Log(String),
}

/// What the machine needs from the configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    pub oneshot: bool,
    pub has_ready_check: bool,
    pub ready_timeout: Duration,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub limit: StartLimit,
    /// A run this long resets the backoff.
    pub stable: Duration,
}

/// A service's state and the history its restart decisions need.
#[derive(Clone, Debug)]
pub struct Machine {
    pub state: State,
    pub policy: Policy,
    /// Start times within the start-limit window.
    starts: VecDeque<Instant>,
    /// Consecutive failed runs, for the backoff exponent.
    failures: u32,
    /// Set once a stop is asked for: no restart until the next Start.
    stop_wanted: bool,
}

impl Machine {
    pub fn new(policy: Policy) -> Machine {
        Machine {
            state: State::Pending,
            policy,
            starts: VecDeque::new(),
            failures: 0,
            stop_wanted: false,
        }
    }

    /// Applies `event` at `now`; `jitter` in `[0, 1)` spreads restart delays.
    pub fn step(&mut self, event: Event, now: Instant, jitter: f64) -> Vec<Effect> {
        use Event as E;
        use State as S;
        let state = std::mem::replace(&mut self.state, S::Pending);
        let (next, effects) = match (state, event) {
            (S::Pending | S::Stopped | S::Exited { .. } | S::Failed { .. }, E::Start) => {
                // Restarts go through Backoff; a Start is a first start or an
                // operator's, and begins a fresh history (the start limit included).
                self.stop_wanted = false;
                self.starts.clear();
                self.failures = 0;
                self.begin_start(now)
            }
            (S::Backoff { .. }, E::BackoffElapsed) => self.begin_start(now),
            (S::Starting { .. }, E::Spawned { pid }) => {
                let effects = if self.policy.has_ready_check {
                    vec![Effect::WatchReadiness {
                        deadline: now + self.policy.ready_timeout,
                    }]
                } else {
                    Vec::new()
                };
                if self.policy.has_ready_check || self.policy.oneshot {
                    (S::Starting { pid, since: now }, effects)
                } else {
                    (S::Ready { pid, since: now }, effects)
                }
            }
            (S::Starting { .. }, E::SpawnShort { reason }) => {
                self.failures += 1;
                let delay = backoff_delay(&self.policy.backoff, self.failures, jitter);
                let (state, mut effects) = self.schedule_restart(delay, now);
                effects.insert(
                    0,
                    Effect::Log(format!(
                        "cannot start for now ({reason}); trying again in {}",
                        herd_config::units::format_duration(delay)
                    )),
                );
                (state, effects)
            }
            (S::Starting { .. }, E::SpawnFailed { reason }) => {
                // A command that cannot start will not start on retry either.
                (S::Failed { reason }, Vec::new())
            }
            (
                S::Starting { pid, since } | S::RunningNotReady { pid, since },
                E::ReadyCheckPassed,
            ) => (S::Ready { pid, since }, Vec::new()),
            (S::Ready { pid, since }, E::NotReady) => {
                (S::RunningNotReady { pid, since }, Vec::new())
            }
            (S::Starting { since, .. }, E::MainPid { pid }) => {
                (S::Starting { pid, since }, Vec::new())
            }
            (S::Ready { since, .. }, E::MainPid { pid }) => (S::Ready { pid, since }, Vec::new()),
            (S::RunningNotReady { since, .. }, E::MainPid { pid }) => {
                (S::RunningNotReady { pid, since }, Vec::new())
            }
            (S::Starting { pid, .. }, E::ReadyTimeout) => (
                // Still running but useless: kill it, and decide on a restart once
                // every process is gone.
                S::Stopping {
                    reason: StopReason::Failure,
                    deadline: now,
                    escalated: true,
                    main: Some(pid),
                },
                vec![
                    Effect::Log("readiness check timed out".into()),
                    Effect::KillAll,
                ],
            ),
            (
                S::Starting { since, .. }
                | S::Ready { since, .. }
                | S::RunningNotReady { since, .. },
                E::MainExited { status },
            ) => self.after_exit(status, now.saturating_duration_since(since), now, jitter),
            (
                S::Starting { pid, .. } | S::Ready { pid, .. } | S::RunningNotReady { pid, .. },
                E::Stop { reason, deadline },
            ) => {
                self.stop_wanted = !reason.is_failure();
                (
                    S::Stopping {
                        reason,
                        deadline,
                        escalated: false,
                        main: Some(pid),
                    },
                    vec![Effect::SignalStop, Effect::Timer { at: deadline }],
                )
            }
            (S::Pending | S::Backoff { .. }, E::Stop { .. }) => {
                self.stop_wanted = true;
                (S::Stopped, Vec::new())
            }
            (s @ (S::Stopping { .. } | S::Stuck { .. }), e) => {
                self.while_stopping(s, e, now, jitter)
            }
            // Anything else does not apply in this state: ignored, state unchanged.
            (s, _) => (s, Vec::new()),
        };
        self.state = next;
        effects
    }

    /// The steps of a service being stopped: from `Stopping` or `Stuck`.
    fn while_stopping(
        &mut self,
        state: State,
        event: Event,
        now: Instant,
        jitter: f64,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        use State as S;
        match (state, event) {
            (
                S::Stopping {
                    reason,
                    deadline,
                    escalated,
                    ..
                },
                E::MainExited { .. },
            ) => (
                S::Stopping {
                    reason,
                    deadline,
                    escalated,
                    main: None,
                },
                Vec::new(),
            ),
            (
                S::Stopping {
                    reason,
                    deadline,
                    escalated: false,
                    main,
                },
                E::Deadline,
            ) => (
                S::Stopping {
                    reason,
                    deadline,
                    escalated: true,
                    main,
                },
                vec![
                    Effect::Log("stop timeout reached: SIGKILL".into()),
                    Effect::KillAll,
                ],
            ),
            (
                S::Stopping {
                    reason,
                    deadline,
                    escalated: false,
                    main,
                },
                E::Extend { deadline: later },
            ) if later > deadline => (
                S::Stopping {
                    reason,
                    deadline: later,
                    escalated: false,
                    main,
                },
                vec![Effect::Timer { at: later }],
            ),
            (S::Stopping { deadline, .. }, E::KillFailed { pids }) => {
                (S::Stuck { pids, deadline }, Vec::new())
            }
            (s @ (S::Stopping { .. } | S::Stuck { .. }), E::Stop { reason, .. }) => {
                // Asked to stop while stopping for a failure: it stays down.
                if !reason.is_failure() {
                    self.stop_wanted = true;
                }
                (s, Vec::new())
            }
            (S::Stopping { reason, .. }, E::Empty) => {
                if reason.is_failure() && !self.stop_wanted {
                    // Stopped for failing: every process is gone, now decide on
                    // a restart.
                    self.after_failure(reason.failure().into(), now, jitter)
                } else {
                    (S::Stopped, Vec::new())
                }
            }
            (S::Stuck { .. }, E::Empty) => (S::Stopped, Vec::new()),
            (S::Stuck { deadline, .. }, E::KillFailed { pids }) => {
                (S::Stuck { pids, deadline }, Vec::new())
            }
            // Anything else does not apply in this state: ignored, state unchanged.
            (s, _) => (s, Vec::new()),
        }
    }

    fn begin_start(&mut self, now: Instant) -> (State, Vec<Effect>) {
        let window = self.policy.limit.window;
        while self
            .starts
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= window)
        {
            self.starts.pop_front();
        }
        if self.starts.len() >= self.policy.limit.starts as usize {
            let reason = format!(
                "start limit reached ({} starts within {})",
                self.policy.limit.starts,
                herd_config::units::format_duration(window)
            );
            return (State::Failed { reason }, Vec::new());
        }
        self.starts.push_back(now);
        (State::Starting { pid: 0, since: now }, vec![Effect::Spawn])
    }

    fn after_exit(
        &mut self,
        status: ExitStatus,
        ran: Duration,
        now: Instant,
        jitter: f64,
    ) -> (State, Vec<Effect>) {
        if ran >= self.policy.stable {
            self.failures = 0;
        }
        let restart = match self.policy.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !status.success(),
            RestartPolicy::Never => false,
        };
        if !restart {
            // A long service that is not restarted shows how it ended; a oneshot
            // that did not succeed has failed (its dependents will not start).
            return if status.success() || !self.policy.oneshot {
                (State::Exited { status }, Vec::new())
            } else {
                (
                    State::Failed {
                        reason: format!("{status}"),
                    },
                    Vec::new(),
                )
            };
        }
        if status.success() {
            // A clean exit under `always` is no failure: no growing delay.
            return self.schedule_restart(self.policy.backoff.floor, now);
        }
        self.after_failure(format!("{status}"), now, jitter)
    }

    fn after_failure(&mut self, why: String, now: Instant, jitter: f64) -> (State, Vec<Effect>) {
        if self.policy.restart == RestartPolicy::Never {
            return (State::Failed { reason: why }, Vec::new());
        }
        self.failures += 1;
        let delay = backoff_delay(&self.policy.backoff, self.failures, jitter);
        self.schedule_restart(delay, now)
    }

    fn schedule_restart(&mut self, delay: Duration, now: Instant) -> (State, Vec<Effect>) {
        let until = now + delay;
        (State::Backoff { until }, vec![Effect::Timer { at: until }])
    }
}

/// The delay before restart number `failures` (1-based): the floor doubled per
/// failure up to the ceiling, then jittered down by up to half, never below the floor.
pub fn backoff_delay(b: &Backoff, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(32);
    let base = b.floor.saturating_mul(1u32 << exp.min(31)).min(b.ceiling);
    let jittered = base.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0));
    jittered.max(b.floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect as F;
    use Event as E;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(restart: RestartPolicy) -> Policy {
        Policy {
            oneshot: false,
            has_ready_check: false,
            ready_timeout: ms(5_000),
            restart,
            backoff: Backoff {
                floor: ms(100),
                ceiling: ms(1_000),
            },
            limit: StartLimit {
                starts: 3,
                window: ms(10_000),
            },
            stable: ms(5_000),
        }
    }

    /// Runs `(at ms, event, expected state name, expected effects)` rows.
    fn run(m: &mut Machine, t0: Instant, rows: &[(u64, Event, &str, Vec<Effect>)]) {
        for (i, (at, ev, state, effects)) in rows.iter().enumerate() {
            let got = m.step(ev.clone(), t0 + ms(*at), 0.0);
            assert_eq!(m.state.name(), *state, "row {i}: {ev:?} -> {:?}", m.state);
            assert_eq!(&got, effects, "row {i}: effects of {ev:?}");
        }
    }

    #[test]
    fn start_without_check_is_ready_when_spawned() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Never));
        run(
            &mut m,
            t0,
            &[
                (0, E::Start, "starting", vec![F::Spawn]),
                (1, E::Spawned { pid: 42 }, "ready", vec![]),
            ],
        );
        assert_eq!(m.state.pid(), Some(42));
    }

    #[test]
    fn readiness_check_gates_ready() {
        let t0 = Instant::now();
        let mut m = Machine::new(Policy {
            has_ready_check: true,
            ..policy(RestartPolicy::Never)
        });
        run(
            &mut m,
            t0,
            &[
                (0, E::Start, "starting", vec![F::Spawn]),
                (
                    1,
                    E::Spawned { pid: 7 },
                    "starting",
                    vec![F::WatchReadiness {
                        deadline: t0 + ms(5_001),
                    }],
                ),
                (2, E::ReadyCheckPassed, "ready", vec![]),
                (3, E::NotReady, "running-not-ready", vec![]),
                (4, E::ReadyCheckPassed, "ready", vec![]),
            ],
        );
    }

    #[test]
    fn mainpid_moves_the_main_process_without_a_restart() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Always));
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 10 }, t0, 0.0);
        assert_eq!(m.step(E::MainPid { pid: 11 }, t0, 0.0), vec![]);
        assert_eq!(m.state, State::Ready { pid: 11, since: t0 });
        // Not applicable before a start.
        let mut idle = Machine::new(policy(RestartPolicy::Always));
        idle.step(E::MainPid { pid: 11 }, t0, 0.0);
        assert_eq!(idle.state, State::Pending);
    }

    #[test]
    fn readiness_timeout_kills_then_restarts_after_backoff() {
        let t0 = Instant::now();
        let mut m = Machine::new(Policy {
            has_ready_check: true,
            ..policy(RestartPolicy::OnFailure)
        });
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 7 }, t0, 0.0);
        run(
            &mut m,
            t0,
            &[
                (
                    5_000,
                    E::ReadyTimeout,
                    "stopping",
                    vec![F::Log("readiness check timed out".into()), F::KillAll],
                ),
                (
                    5_001,
                    E::MainExited {
                        status: ExitStatus::Signal(9),
                    },
                    "stopping",
                    vec![],
                ),
                (
                    5_002,
                    E::Empty,
                    "backoff",
                    vec![F::Timer { at: t0 + ms(5_102) }],
                ),
                (5_102, E::BackoffElapsed, "starting", vec![F::Spawn]),
            ],
        );
    }

    #[test]
    fn spawn_failure_is_final_with_its_reason() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Always));
        m.step(E::Start, t0, 0.0);
        m.step(
            E::SpawnFailed {
                reason: "program \"x\" not found".into(),
            },
            t0,
            0.0,
        );
        assert_eq!(
            m.state,
            State::Failed {
                reason: "program \"x\" not found".into()
            }
        );
    }

    #[test]
    fn exit_under_each_policy() {
        let t0 = Instant::now();
        let cases = [
            (RestartPolicy::Never, ExitStatus::Code(0), "exited"),
            (RestartPolicy::Never, ExitStatus::Code(1), "exited"),
            (RestartPolicy::OnFailure, ExitStatus::Code(0), "exited"),
            (RestartPolicy::OnFailure, ExitStatus::Code(1), "backoff"),
            (RestartPolicy::OnFailure, ExitStatus::Signal(11), "backoff"),
            (RestartPolicy::Always, ExitStatus::Code(0), "backoff"),
        ];
        for (p, status, expect) in cases {
            let mut m = Machine::new(policy(p));
            m.step(E::Start, t0, 0.0);
            m.step(E::Spawned { pid: 1 }, t0, 0.0);
            m.step(E::MainExited { status }, t0 + ms(10), 0.0);
            assert_eq!(m.state.name(), expect, "{p:?} {status:?}");
        }
    }

    #[test]
    fn oneshot_success_exits_and_failure_fails() {
        let t0 = Instant::now();
        for (status, expect) in [
            (ExitStatus::Code(0), "exited"),
            (ExitStatus::Code(2), "failed"),
        ] {
            let mut m = Machine::new(Policy {
                oneshot: true,
                ..policy(RestartPolicy::Never)
            });
            m.step(E::Start, t0, 0.0);
            m.step(E::Spawned { pid: 1 }, t0, 0.0);
            // A oneshot is not ready while it runs: dependents wait for its exit.
            assert_eq!(m.state.name(), "starting");
            m.step(E::MainExited { status }, t0, 0.0);
            assert_eq!(m.state.name(), expect);
        }
    }

    #[test]
    fn crash_loop_backs_off_exponentially_then_hits_the_start_limit() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Always));
        let crash = E::MainExited {
            status: ExitStatus::Code(1),
        };
        run(
            &mut m,
            t0,
            &[
                (0, E::Start, "starting", vec![F::Spawn]),
                (1, E::Spawned { pid: 1 }, "ready", vec![]),
                (
                    2,
                    crash.clone(),
                    "backoff",
                    vec![F::Timer { at: t0 + ms(102) }],
                ),
                (102, E::BackoffElapsed, "starting", vec![F::Spawn]),
                (103, E::Spawned { pid: 2 }, "ready", vec![]),
                (
                    104,
                    crash.clone(),
                    "backoff",
                    vec![F::Timer { at: t0 + ms(304) }],
                ),
                (304, E::BackoffElapsed, "starting", vec![F::Spawn]),
                (305, E::Spawned { pid: 3 }, "ready", vec![]),
                (
                    306,
                    crash.clone(),
                    "backoff",
                    vec![F::Timer { at: t0 + ms(706) }],
                ),
                // A fourth start within the 10 s window exceeds the limit of 3.
                (706, E::BackoffElapsed, "failed", vec![]),
            ],
        );
        assert_eq!(
            m.state,
            State::Failed {
                reason: "start limit reached (3 starts within 10s)".into()
            }
        );
        // Asked for again, it starts afresh.
        assert_eq!(m.step(E::Start, t0 + ms(800), 0.0), vec![F::Spawn]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Always));
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 1 }, t0, 0.0);
        m.step(
            E::MainExited {
                status: ExitStatus::Code(1),
            },
            t0 + ms(1),
            0.0,
        );
        m.step(E::BackoffElapsed, t0 + ms(101), 0.0);
        m.step(E::Spawned { pid: 2 }, t0 + ms(101), 0.0);
        // Ran 6 s (> stable 5 s): the next delay is the floor again, not 200 ms.
        let eff = m.step(
            E::MainExited {
                status: ExitStatus::Code(1),
            },
            t0 + ms(6_101),
            0.0,
        );
        assert_eq!(eff, vec![F::Timer { at: t0 + ms(6_201) }]);
    }

    #[test]
    fn stop_waits_for_empty_not_for_the_main_exit() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Always));
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 9 }, t0, 0.0);
        let deadline = t0 + ms(1_000);
        run(
            &mut m,
            t0,
            &[
                (
                    10,
                    E::Stop {
                        reason: StopReason::Requested,
                        deadline,
                    },
                    "stopping",
                    vec![F::SignalStop, F::Timer { at: deadline }],
                ),
                // The main process is gone but children live: still stopping, and
                // no restart despite `always`.
                (
                    20,
                    E::MainExited {
                        status: ExitStatus::Signal(15),
                    },
                    "stopping",
                    vec![],
                ),
                (
                    1_000,
                    E::Deadline,
                    "stopping",
                    vec![F::Log("stop timeout reached: SIGKILL".into()), F::KillAll],
                ),
                // A second deadline does not kill twice.
                (1_001, E::Deadline, "stopping", vec![]),
                (1_002, E::Empty, "stopped", vec![]),
            ],
        );
    }

    #[test]
    fn extend_moves_the_deadline_later_only_before_sigkill() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Never));
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 9 }, t0, 0.0);
        let deadline = t0 + ms(1_000);
        run(
            &mut m,
            t0,
            &[
                (
                    0,
                    E::Stop {
                        reason: StopReason::Shutdown,
                        deadline,
                    },
                    "stopping",
                    vec![F::SignalStop, F::Timer { at: deadline }],
                ),
                // Earlier than the deadline: no change.
                (
                    10,
                    E::Extend {
                        deadline: t0 + ms(500),
                    },
                    "stopping",
                    vec![],
                ),
                (
                    20,
                    E::Extend {
                        deadline: t0 + ms(3_000),
                    },
                    "stopping",
                    vec![F::Timer { at: t0 + ms(3_000) }],
                ),
                // The old timer fires: the engine only steps Deadline once the
                // state's deadline has passed, so the machine sees the new one.
                (
                    3_000,
                    E::Deadline,
                    "stopping",
                    vec![F::Log("stop timeout reached: SIGKILL".into()), F::KillAll],
                ),
                // Once SIGKILL has gone out there is nothing to extend.
                (
                    3_001,
                    E::Extend {
                        deadline: t0 + ms(9_000),
                    },
                    "stopping",
                    vec![],
                ),
            ],
        );
        assert!(matches!(m.state, State::Stopping { deadline: d, .. } if d == t0 + ms(3_000)));
    }

    #[test]
    fn survivors_of_sigkill_are_stuck_until_gone() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Never));
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 9 }, t0, 0.0);
        m.step(
            E::Stop {
                reason: StopReason::Shutdown,
                deadline: t0,
            },
            t0,
            0.0,
        );
        m.step(E::Deadline, t0, 0.0);
        m.step(E::KillFailed { pids: vec![11, 12] }, t0, 0.0);
        assert_eq!(
            m.state,
            State::Stuck {
                pids: vec![11, 12],
                deadline: t0
            }
        );
        m.step(E::Empty, t0, 0.0);
        assert_eq!(m.state, State::Stopped);
    }

    #[test]
    fn stopping_a_service_that_is_not_running() {
        let t0 = Instant::now();
        for setup in [
            vec![],
            vec![
                E::Start,
                E::Spawned { pid: 1 },
                E::MainExited {
                    status: ExitStatus::Code(1),
                },
            ],
        ] {
            let mut m = Machine::new(policy(RestartPolicy::Always));
            for e in setup {
                m.step(e, t0, 0.0);
            }
            let eff = m.step(
                E::Stop {
                    reason: StopReason::Shutdown,
                    deadline: t0,
                },
                t0,
                0.0,
            );
            assert_eq!((m.state.name(), eff), ("stopped", vec![]));
            // A late backoff timer does not bring it back.
            m.step(E::BackoffElapsed, t0 + ms(500), 0.0);
            assert_eq!(m.state.name(), "stopped");
        }
    }

    #[test]
    fn events_that_do_not_apply_change_nothing() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Never));
        for e in [
            E::Spawned { pid: 1 },
            E::ReadyCheckPassed,
            E::Deadline,
            E::Empty,
            E::BackoffElapsed,
        ] {
            assert_eq!(m.step(e, t0, 0.0), vec![]);
            assert_eq!(m.state, State::Pending);
        }
    }

    #[test]
    fn backoff_delays_double_jitter_and_stay_within_bounds() {
        let b = Backoff {
            floor: ms(200),
            ceiling: ms(30_000),
        };
        assert_eq!(backoff_delay(&b, 1, 0.0), ms(200));
        assert_eq!(backoff_delay(&b, 2, 0.0), ms(400));
        assert_eq!(backoff_delay(&b, 3, 0.0), ms(800));
        assert_eq!(backoff_delay(&b, 9, 0.0), ms(30_000));
        assert_eq!(backoff_delay(&b, 200, 0.0), ms(30_000));
        // Jitter takes off up to half, never going under the floor.
        assert_eq!(backoff_delay(&b, 3, 0.5), ms(600));
        assert_eq!(backoff_delay(&b, 1, 0.99), ms(200));
    }

    #[test]
    fn a_shortage_at_spawn_is_retried_even_without_restarts_until_the_limit() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Never));
        m.policy.limit = StartLimit {
            starts: 2,
            window: ms(60_000),
        };
        assert_eq!(m.step(E::Start, t0, 0.0), vec![F::Spawn]);
        let short = E::SpawnShort {
            reason: "Too many open files".into(),
        };
        let effects = m.step(short.clone(), t0, 0.0);
        assert_eq!(
            effects,
            vec![
                F::Log("cannot start for now (Too many open files); trying again in 100ms".into()),
                F::Timer { at: t0 + ms(100) },
            ]
        );
        assert_eq!(
            m.state,
            State::Backoff {
                until: t0 + ms(100)
            }
        );
        assert_eq!(m.step(E::BackoffElapsed, t0 + ms(100), 0.0), vec![F::Spawn]);
        m.step(short, t0 + ms(100), 0.0);
        // The third attempt is over the start limit.
        m.step(E::BackoffElapsed, t0 + ms(400), 0.0);
        assert!(matches!(m.state, State::Failed { .. }), "{:?}", m.state);
    }

    #[test]
    fn a_stop_for_failing_health_restarts_by_policy_and_counts_as_a_failure() {
        let t0 = Instant::now();
        let unhealthy = |at| E::Stop {
            reason: StopReason::Unhealthy,
            deadline: at,
        };
        for (restart, after) in [
            (RestartPolicy::OnFailure, "backoff"),
            (RestartPolicy::Always, "backoff"),
            (RestartPolicy::Never, "failed"),
        ] {
            let mut m = Machine::new(policy(restart));
            m.step(E::Start, t0, 0.0);
            m.step(E::Spawned { pid: 5 }, t0, 0.0);
            run(
                &mut m,
                t0,
                &[
                    (
                        10,
                        unhealthy(t0 + ms(1_010)),
                        "stopping",
                        vec![F::SignalStop, F::Timer { at: t0 + ms(1_010) }],
                    ),
                    (
                        20,
                        E::MainExited {
                            status: ExitStatus::Signal(15),
                        },
                        "stopping",
                        vec![],
                    ),
                ],
            );
            m.step(E::Empty, t0 + ms(30), 0.0);
            assert_eq!(m.state.name(), after, "{restart:?}");
        }
        // Each such run counts towards the start limit (3 within 10 s).
        let mut m = Machine::new(policy(RestartPolicy::Always));
        let mut t = t0;
        for _ in 0..3 {
            if m.state.name() == "backoff" {
                m.step(E::BackoffElapsed, t, 0.0);
            } else {
                m.step(E::Start, t, 0.0);
            }
            m.step(E::Spawned { pid: 5 }, t, 0.0);
            m.step(unhealthy(t + ms(100)), t, 0.0);
            m.step(E::Empty, t + ms(10), 0.0);
            t += ms(2_000);
        }
        m.step(E::BackoffElapsed, t, 0.0);
        assert!(matches!(m.state, State::Failed { .. }), "{:?}", m.state);
    }

    #[test]
    fn an_operator_stop_during_a_watchdog_stop_keeps_the_service_down() {
        let t0 = Instant::now();
        let mut m = Machine::new(policy(RestartPolicy::Always));
        m.step(E::Start, t0, 0.0);
        m.step(E::Spawned { pid: 5 }, t0, 0.0);
        let stop = |reason| E::Stop {
            reason,
            deadline: t0 + ms(1_000),
        };
        m.step(stop(StopReason::Watchdog), t0, 0.0);
        assert_eq!(m.step(stop(StopReason::Requested), t0, 0.0), vec![]);
        m.step(E::Empty, t0 + ms(10), 0.0);
        assert_eq!(m.state, State::Stopped);
    }
}
