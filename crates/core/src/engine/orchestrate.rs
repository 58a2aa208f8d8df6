//! The decisions that span services, as pure functions over a view of them:
//! what may start now, when a stop wave is over, in which order a stop request
//! takes down what depends on the service, which queued stop is due, whether a
//! shutdown has nothing left to wait for, what a reload does to each changed
//! service. The engine only carries them out; the tests below check them from
//! tables, without a process or a clock.
//!
//! # How it works
//!
//! Each function reads services through [`Member`], which the engine's service
//! and the tests' plain rows both implement, from a map by name (the engine's
//! own table, so nothing is copied on the loop's every turn).
//!
//! # Caveats
//!
//! - Each call walks every service: the loop calls them once per settle, so their
//!   cost grows with the number of services, not with the events.

use std::collections::{BTreeMap, BTreeSet};

use crate::machine::{State, StopReason};

/// What the cross-service decisions read of one service.
pub trait Member {
    fn state(&self) -> &State;
    /// Something of its current run is still alive (its unit is not empty).
    fn has_run(&self) -> bool;
    /// Marked to start again like a pending service (an operator's start).
    fn rejoin(&self) -> bool;
    /// A reload is still to be applied to it (new definition, or removal).
    fn reloading(&self) -> bool;
    fn requires(&self) -> &[String];
    fn after(&self) -> &[String];
    /// Its wave in a full shutdown.
    fn stop_wave(&self) -> usize;
    /// An on-demand service waiting for its first connection, its sockets
    /// bound: not started with the others, and ready enough for `requires`.
    fn on_hold(&self) -> bool {
        false
    }
}

/// Whether a service a dependent `requires` is satisfied.
pub fn is_ready(s: &State) -> bool {
    match s {
        State::Ready { .. } => true,
        State::Exited { status } => status.success(),
        _ => false,
    }
}

/// Whether an `after` dependency has finished starting (either way).
pub fn settled_up(s: &State) -> bool {
    !matches!(
        s,
        State::Pending | State::Starting { .. } | State::Backoff { .. }
    )
}

/// Whether the machine says nothing of the service runs any more.
pub fn settled_down(s: &State) -> bool {
    matches!(
        s,
        State::Stopped | State::Exited { .. } | State::Failed { .. } | State::Pending
    )
}

/// Nothing of the service runs: the machine says so and its unit is empty.
pub fn down(m: &impl Member) -> bool {
    settled_down(m.state()) && !m.has_run()
}

/// Whether nothing of the service runs any more, or all that does survived
/// SIGKILL: a stuck service does not hold up the services stopping after it.
pub fn gone_or_stuck(m: &impl Member) -> bool {
    down(m) || matches!(m.state(), State::Stuck { .. })
}

/// Whether anything of the service runs or is about to.
pub fn running(m: &impl Member) -> bool {
    !down(m) || m.rejoin()
}

/// The services that may start now: pending (or rejoining and down), not being
/// reloaded, every `requires` ready and every `after` settled.
pub fn startable<M: Member>(svcs: &BTreeMap<String, M>) -> Vec<String> {
    svcs.iter()
        .filter(|(_, s)| !s.reloading() && !s.on_hold())
        .filter(|(_, s)| *s.state() == State::Pending || (s.rejoin() && down(*s)))
        .filter(|(_, s)| {
            s.requires()
                .iter()
                .all(|d| is_ready(svcs[d].state()) || svcs[d].on_hold())
                && s.after().iter().all(|d| settled_up(svcs[d].state()))
        })
        .map(|(n, _)| n.clone())
        .collect()
}

/// Whether every service of stop wave `wave` is gone (or stuck).
pub fn wave_done<M: Member>(svcs: &BTreeMap<String, M>, wave: usize) -> bool {
    svcs.values()
        .filter(|s| s.stop_wave() == wave)
        .all(|s| gone_or_stuck(s))
}

/// Whether every service is down: a shutdown whose waves are over has nothing
/// of a service left to wait for.
pub fn all_down<M: Member>(svcs: &BTreeMap<String, M>) -> bool {
    svcs.values().all(|s| down(s))
}

/// The services with something still running (stuck, when the budget is spent).
pub fn not_down<M: Member>(svcs: &BTreeMap<String, M>) -> Vec<String> {
    svcs.iter()
        .filter(|(_, s)| !down(*s))
        .map(|(n, _)| n.clone())
        .collect()
}

/// The stop waves of a shutdown that begins now: the configuration's `waves`,
/// each without the services that have nothing running (an exited oneshot, a
/// failed or stopped service: nothing to stop, so no share of the budget), and
/// without the waves that are left empty.
pub fn running_waves<M: Member>(
    svcs: &BTreeMap<String, M>,
    waves: &[Vec<String>],
) -> Vec<Vec<String>> {
    waves
        .iter()
        .map(|w| {
            w.iter()
                .filter(|n| svcs.get(*n).is_some_and(|s| s.has_run()))
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// A stop that waits for `after` (services requiring this one) to be down.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedStop {
    pub name: String,
    pub reason: StopReason,
    pub after: Vec<String>,
    /// A restart: these (the service and the dependents stopped for it) start
    /// again once the service has been stopped — not before, or a dependent would
    /// come back while what it requires is still going down.
    pub rejoin: Vec<String>,
}

/// The stops a request to stop `name` (for `reason`) queues: first everything
/// that requires it, transitively, that is up, each after its own dependents;
/// `name` last. With `restart` they all rejoin once `name` is down.
pub fn stop_order<M: Member>(
    svcs: &BTreeMap<String, M>,
    name: &str,
    reason: StopReason,
    restart: bool,
) -> Vec<QueuedStop> {
    let up = |n: &str| !gone_or_stuck(&svcs[n]) || svcs[n].rejoin();
    let requirers = |n: &str| -> Vec<String> {
        svcs.iter()
            .filter(|(_, s)| s.requires().iter().any(|r| r == n))
            .map(|(d, _)| d.clone())
            .collect()
    };
    let mut set = BTreeSet::new();
    let mut todo = requirers(name);
    while let Some(d) = todo.pop() {
        if up(&d) && set.insert(d.clone()) {
            todo.extend(requirers(&d));
        }
    }
    set.iter()
        .map(String::as_str)
        .chain([name])
        .map(|n| QueuedStop {
            name: n.to_string(),
            reason: if n == name {
                reason
            } else {
                StopReason::Dependency
            },
            after: requirers(n)
                .into_iter()
                .filter(|d| set.contains(d))
                .collect(),
            rejoin: if restart && n == name {
                set.iter().cloned().chain([name.to_string()]).collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// The first queued stop whose dependents are all down (a service a reload has
/// removed may be gone from the table already).
pub fn due_stop<M: Member>(svcs: &BTreeMap<String, M>, queue: &[QueuedStop]) -> Option<usize> {
    queue.iter().position(|q| {
        q.after
            .iter()
            .all(|a| svcs.get(a).is_none_or(|s| gone_or_stuck(s) && !s.rejoin()))
    })
}

/// What a reload does to a service whose definition changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Being stopped already: it stays stopped, and takes the new definition
    /// once down.
    ReplaceWhenDown,
    /// Running: restarted (with what requires it), taking the new definition
    /// while down.
    Restart,
    /// Not running: takes the new definition now and stays as it is.
    Redefine,
}

pub fn on_change(m: &impl Member) -> Change {
    if matches!(m.state(), State::Stopping { .. } | State::Stuck { .. }) {
        Change::ReplaceWhenDown
    } else if running(m) {
        Change::Restart
    } else {
        Change::Redefine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_sys::ExitStatus;
    use std::time::Instant;

    /// One service as a table row: its state, whether its unit is still there,
    /// whether it rejoins, and what it requires.
    struct Row {
        state: State,
        run: bool,
        rejoin: bool,
        reloading: bool,
        requires: Vec<String>,
        after: Vec<String>,
        wave: usize,
    }

    impl Member for Row {
        fn state(&self) -> &State {
            &self.state
        }
        fn has_run(&self) -> bool {
            self.run
        }
        fn rejoin(&self) -> bool {
            self.rejoin
        }
        fn reloading(&self) -> bool {
            self.reloading
        }
        fn requires(&self) -> &[String] {
            &self.requires
        }
        fn after(&self) -> &[String] {
            &self.after
        }
        fn stop_wave(&self) -> usize {
            self.wave
        }
    }

    fn ready() -> State {
        State::Ready {
            pid: 1,
            since: Instant::now(),
        }
    }

    fn starting() -> State {
        State::Starting {
            pid: 1,
            since: Instant::now(),
        }
    }

    fn stopping() -> State {
        State::Stopping {
            reason: StopReason::Shutdown,
            deadline: Instant::now(),
            escalated: false,
            main: None,
        }
    }

    fn exited(code: i32) -> State {
        State::Exited {
            status: ExitStatus::Code(code),
        }
    }

    fn list(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// `(name, state, "requires|after")` rows.
    type Rows = Vec<(&'static str, State, &'static str)>;

    /// `(name, state, "requires|after")`, one row a service; its unit is alive
    /// while the state has a process.
    fn herd(rows: &[(&str, State, &str)]) -> BTreeMap<String, Row> {
        rows.iter()
            .map(|(n, st, req)| {
                let (req, after) = req.split_once('|').unwrap_or((req, ""));
                (
                    n.to_string(),
                    Row {
                        run: st.pid().is_some()
                            || matches!(st, State::Stopping { .. } | State::Stuck { .. }),
                        state: st.clone(),
                        rejoin: false,
                        reloading: false,
                        requires: list(req),
                        after: list(after),
                        wave: 0,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn what_may_start_now() {
        let cases: &[(&str, Rows, &str)] = &[
            (
                "independent services start together",
                vec![("a", State::Pending, ""), ("b", State::Pending, "")],
                "a b",
            ),
            (
                "a requirement that is only starting holds its dependent",
                vec![("db", starting(), ""), ("api", State::Pending, "db")],
                "",
            ),
            (
                "a ready requirement lets it start",
                vec![("db", ready(), ""), ("api", State::Pending, "db")],
                "api",
            ),
            (
                "a oneshot that exited 0 satisfies, one that failed does not",
                vec![
                    ("ok", exited(0), ""),
                    ("bad", exited(1), ""),
                    ("x", State::Pending, "ok"),
                    ("y", State::Pending, "bad"),
                ],
                "x",
            ),
            (
                "after waits for starting to end either way",
                vec![
                    ("a", starting(), ""),
                    ("b", exited(1), ""),
                    ("c", State::Pending, "|a"),
                    ("d", State::Pending, "|b"),
                ],
                "d",
            ),
        ];
        for (what, rows, want) in cases {
            assert_eq!(startable(&herd(rows)), list(want), "{what}");
        }
    }

    #[test]
    fn a_rejoining_service_starts_once_down_and_a_reloading_one_waits() {
        let mut svcs = herd(&[("a", State::Stopped, ""), ("b", State::Stopped, "")]);
        svcs.get_mut("a").unwrap().rejoin = true;
        svcs.get_mut("b").unwrap().rejoin = true;
        svcs.get_mut("b").unwrap().run = true; // leftovers of its last run
        assert_eq!(startable(&svcs), list("a"));
        svcs.get_mut("a").unwrap().reloading = true;
        assert_eq!(startable(&svcs), list(""));
    }

    #[test]
    fn a_wave_is_done_when_each_of_its_services_is_gone_or_stuck() {
        let stuck = State::Stuck {
            pids: vec![7],
            deadline: Instant::now(),
        };
        let cases: &[(&str, Rows, bool)] = &[
            ("all stopped", vec![("a", State::Stopped, "")], true),
            (
                "one still stopping",
                vec![("a", State::Stopped, ""), ("b", stopping(), "")],
                false,
            ),
            (
                "a stuck one does not hold it up",
                vec![("a", stuck, "")],
                true,
            ),
            (
                "an exited oneshot is gone",
                vec![("a", exited(0), "")],
                true,
            ),
        ];
        for (what, rows, want) in cases {
            assert_eq!(wave_done(&herd(rows), 0), *want, "{what}");
        }
        // Only the wave's own services count.
        let mut svcs = herd(&[("a", State::Stopped, ""), ("b", stopping(), "")]);
        svcs.get_mut("b").unwrap().wave = 1;
        assert!(wave_done(&svcs, 0));
        assert!(!wave_done(&svcs, 1));
        // A stopped service whose unit still has a process is not gone.
        let mut svcs = herd(&[("a", State::Stopped, "")]);
        svcs.get_mut("a").unwrap().run = true;
        assert!(!wave_done(&svcs, 0));
        assert!(!all_down(&svcs));
        assert_eq!(not_down(&svcs), list("a"));
    }

    #[test]
    fn a_stop_request_takes_down_what_requires_it_first() {
        // web -> api -> db, worker -> db; cache stands alone.
        let svcs = herd(&[
            ("db", ready(), ""),
            ("api", ready(), "db"),
            ("web", ready(), "api"),
            ("worker", ready(), "db"),
            ("cache", ready(), ""),
        ]);
        let order = stop_order(&svcs, "db", StopReason::Requested, false);
        let got: Vec<(&str, StopReason, Vec<String>)> = order
            .iter()
            .map(|q| (q.name.as_str(), q.reason, q.after.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("api", StopReason::Dependency, list("web")),
                ("web", StopReason::Dependency, list("")),
                ("worker", StopReason::Dependency, list("")),
                ("db", StopReason::Requested, list("api worker")),
            ]
        );
        assert!(order.iter().all(|q| q.rejoin.is_empty()));
        // A restart brings back the service and every dependent it stopped.
        let order = stop_order(&svcs, "api", StopReason::Restart, true);
        assert_eq!(order.last().unwrap().rejoin, list("web api"));
        // A dependent that is already down is left out.
        let svcs = herd(&[
            ("db", ready(), ""),
            ("api", State::Stopped, "db"),
            ("web", State::Stopped, "api"),
        ]);
        let order = stop_order(&svcs, "db", StopReason::Requested, false);
        assert_eq!(order.len(), 1);
        assert!(order[0].after.is_empty());
    }

    #[test]
    fn a_queued_stop_is_due_once_its_dependents_are_down() {
        let mut svcs = herd(&[("db", ready(), ""), ("api", stopping(), "db")]);
        let queue = stop_order(&svcs, "db", StopReason::Requested, false);
        // api, still stopping, counts as up: db's stop waits for it.
        assert_eq!(queue.len(), 2);
        let db_only = &queue[1..];
        assert_eq!(db_only[0].after, list("api"));
        assert_eq!(due_stop(&svcs, db_only), None);
        let api = svcs.get_mut("api").unwrap();
        api.state = State::Stopped;
        api.run = false;
        assert_eq!(due_stop(&svcs, db_only), Some(0));
        // A dependent removed by a reload meanwhile holds nothing up.
        svcs.remove("api");
        assert_eq!(due_stop(&svcs, db_only), Some(0));
    }

    #[test]
    fn what_a_reload_does_to_a_changed_service() {
        let cases: &[(&str, State, bool, Change)] = &[
            ("ready", ready(), true, Change::Restart),
            ("stopping", stopping(), true, Change::ReplaceWhenDown),
            ("stopped", State::Stopped, false, Change::Redefine),
            ("pending", State::Pending, false, Change::Redefine),
            ("exited with leftovers", exited(0), true, Change::Restart),
        ];
        for (what, state, run, want) in cases {
            let row = Row {
                state: state.clone(),
                run: *run,
                rejoin: false,
                reloading: false,
                requires: Vec::new(),
                after: Vec::new(),
                wave: 0,
            };
            assert_eq!(on_change(&row), *want, "{what}");
        }
    }

    #[test]
    fn a_shutdown_stops_only_what_runs_and_drops_empty_waves() {
        // migrate (an exited oneshot) requires nginx requires db.
        let svcs = herd(&[
            ("db", ready(), ""),
            ("nginx", ready(), "db"),
            ("migrate", exited(0), "nginx"),
            ("cron", State::Failed { reason: "x".into() }, "db"),
        ]);
        let waves = vec![list("migrate"), list("cron nginx"), list("db")];
        assert_eq!(
            running_waves(&svcs, &waves),
            vec![list("nginx"), list("db")]
        );
        // An exited service with a process left still has something to stop.
        let mut svcs = svcs;
        svcs.get_mut("migrate").unwrap().run = true;
        assert_eq!(running_waves(&svcs, &waves).len(), 3);
    }
}
