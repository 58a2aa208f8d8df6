//! The shutdown budget planner: which deadline each service gets in a full shutdown.
//!
//! # The rule
//!
//! A full shutdown runs the stop waves of [`crate::graph`] one after another and must
//! end, every process verified gone, within `shutdown.timeout` (the budget `B`). Each of
//! the `k` waves needs two things:
//!
//! 1. a **graceful window**: the shutdown event, the `stop.exec` hook and the wait for
//!    every process to exit. A service asks for its `stop.timeout`; a wave asks for the
//!    longest of its services' (they stop in parallel).
//! 2. a **kill reserve** `R` after the window: SIGKILL of what is left, the kernel
//!    tearing it down, and herder verifying the service is empty. `R` is
//!    `shutdown.kill_reserve`, but the reserves together never take more than half the
//!    budget: `R = min(kill_reserve, B / 2k)`. A deep chain therefore still leaves
//!    graceful time.
//!
//! What remains, `G = B − k·R`, is the graceful time to share. When the waves' requests
//! fit in `G`, every wave gets what it asked for. When they do not, `G` is shared
//! **max–min fairly** (water-filling): waves asking less than an equal share get all
//! they ask, and the rest split what is left equally. So one slow service cannot
//! starve the waves after it, and a quick wave is never cut for the sake of a slow one.
//! A service then gets `min(its stop.timeout, its wave's window)`.
//!
//! The plan is the worst case: each wave starting when the one before it has used its
//! whole share. At run time the engine plans again over the services that run when
//! the shutdown begins, a wave starts as soon as the one before it is empty, and a
//! service's deadline is `min(start + stop_timeout, latest_kill_at)`, where
//! `latest_kill_at` keeps back exactly the shares of the waves after it
//! ([`StopWave::latest_kill_at`]).
//! Time a quick wave leaves unused thus flows to later ones (or to a service asking for
//! more with `EXTEND_TIMEOUT_USEC`), and the budget holds either way.
//!
//! All arithmetic is in whole milliseconds, rounding down, so sums never exceed `B`.

use std::time::Duration;

use crate::graph::DepGraph;
use crate::schema::Config;

/// The shutdown of a whole configuration, wave by wave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownPlan {
    /// `shutdown.timeout`.
    pub budget: Duration,
    /// The kill reserve each wave gets (after the cap at half the budget).
    pub kill_reserve: Duration,
    /// Whether the stop timeouts had to be cut to fit the budget.
    pub squeezed: bool,
    /// When the last wave ends in the worst case; never after `budget`.
    pub end: Duration,
    pub waves: Vec<StopWave>,
}

/// One stop wave; offsets are from the start of the shutdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopWave {
    pub start: Duration,
    /// The graceful window granted to the wave.
    pub window: Duration,
    /// The wave's planned SIGKILL time: `start + window`.
    pub kill_at: Duration,
    /// The latest SIGKILL time at run time that still leaves every later wave its
    /// share; never before `kill_at`.
    pub latest_kill_at: Duration,
    /// `kill_at` plus the kill reserve: the wave is verified empty by then.
    pub end: Duration,
    pub services: Vec<ServiceDeadline>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDeadline {
    pub name: String,
    /// What the service asked for (`stop.timeout`).
    pub stop_timeout: Duration,
    /// What it gets: `min(stop_timeout, wave window)`.
    pub granted: Duration,
    /// When it is SIGKILLed at the latest in the planned worst case.
    pub kill_at: Duration,
}

/// The services whose `stop.timeout` the plan cuts to fit the budget, each as
/// `services.NAME.stop.timeout 10s is cut to 5.25s ...`: what `herd check`,
/// `herd up` and `herd reload` say.
pub fn cut_timeouts(plan: &ShutdownPlan) -> Vec<String> {
    plan.waves
        .iter()
        .flat_map(|w| &w.services)
        .filter(|s| s.granted < s.stop_timeout)
        .map(|s| {
            format!(
                "services.{}.stop.timeout {} is cut to {} in the worst case of a full shutdown (budget {}, {} stop waves); it gets up to {} when the waves before it end early (herd plan)",
                s.name,
                crate::units::format_duration(s.stop_timeout),
                crate::units::format_duration(s.granted),
                crate::units::format_duration(plan.budget),
                plan.waves.len(),
                crate::units::format_duration(s.stop_timeout),
            )
        })
        .collect()
}

/// Plans the shutdown of `config`, which must be valid (acyclic).
pub fn shutdown_plan(config: &Config) -> ShutdownPlan {
    let waves: Vec<Vec<(String, Duration)>> = DepGraph::new(&config.services)
        .stop_waves()
        .into_iter()
        .map(|w| {
            w.into_iter()
                .map(|n| {
                    let t = config.services[&n].stop.timeout;
                    (n, t)
                })
                .collect()
        })
        .collect();
    plan(
        config.shutdown.timeout,
        config.shutdown.kill_reserve,
        &waves,
    )
}

/// Plans stop waves of `(name, stop timeout)` within `budget`; see the module docs.
pub fn plan(
    budget: Duration,
    kill_reserve: Duration,
    waves: &[Vec<(String, Duration)>],
) -> ShutdownPlan {
    let b = millis(budget);
    let k = waves.len() as u64;
    let reserve = if k == 0 {
        millis(kill_reserve)
    } else {
        millis(kill_reserve).min(b / (2 * k))
    };
    let graceful = b - k * reserve;
    let asks: Vec<u64> = waves
        .iter()
        .map(|w| w.iter().map(|(_, t)| millis(*t)).max().unwrap_or(0))
        .collect();
    let windows = water_fill(&asks, graceful);
    let squeezed = windows != asks;

    let mut out = Vec::with_capacity(waves.len());
    let mut start = 0;
    // What the waves after wave i keep back: their windows and reserves.
    let mut after: u64 = windows.iter().map(|w| w + reserve).sum();
    for (w, &window) in waves.iter().zip(&windows) {
        after -= window + reserve;
        let kill_at = start + window;
        out.push(StopWave {
            start: dur(start),
            window: dur(window),
            kill_at: dur(kill_at),
            latest_kill_at: dur(b - reserve - after),
            end: dur(kill_at + reserve),
            services: w
                .iter()
                .map(|(name, t)| {
                    let granted = millis(*t).min(window);
                    ServiceDeadline {
                        name: name.clone(),
                        stop_timeout: *t,
                        granted: dur(granted),
                        kill_at: dur(start + granted),
                    }
                })
                .collect(),
        });
        start = kill_at + reserve;
    }
    ShutdownPlan {
        budget: dur(b),
        kill_reserve: dur(reserve),
        squeezed,
        end: dur(start),
        waves: out,
    }
}

/// Max–min fair shares of `capacity` for `asks`: everyone gets what they ask when it
/// all fits; otherwise the smallest asks are met in full and the rest share equally.
/// The result never sums to more than `capacity`.
fn water_fill(asks: &[u64], capacity: u64) -> Vec<u64> {
    if asks.iter().sum::<u64>() <= capacity {
        return asks.to_vec();
    }
    let mut order: Vec<usize> = (0..asks.len()).collect();
    order.sort_by_key(|&i| asks[i]);
    let mut grants = vec![0; asks.len()];
    let mut left = capacity;
    for (served, &i) in order.iter().enumerate() {
        let fair = left / (asks.len() - served) as u64;
        grants[i] = asks[i].min(fair);
        left -= grants[i];
    }
    grants
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4)
}

fn dur(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn m(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn waves(spec: &[&[u64]]) -> Vec<Vec<(String, Duration)>> {
        spec.iter()
            .enumerate()
            .map(|(i, w)| {
                w.iter()
                    .enumerate()
                    .map(|(j, ms)| (format!("w{i}s{j}"), m(*ms)))
                    .collect()
            })
            .collect()
    }

    /// What must hold for every plan, whatever its input.
    fn check_invariants(p: &ShutdownPlan, input: &[Vec<(String, Duration)>]) {
        assert!(p.end <= p.budget, "plan ends after the budget: {p:?}");
        let mut prev_end = Duration::ZERO;
        for (w, inp) in p.waves.iter().zip(input) {
            assert_eq!(w.start, prev_end, "waves run back to back");
            assert_eq!(w.kill_at, w.start + w.window);
            assert_eq!(w.end, w.kill_at + p.kill_reserve);
            assert!(w.latest_kill_at >= w.kill_at, "{w:?}");
            assert!(w.latest_kill_at + p.kill_reserve <= p.budget);
            for (sd, (name, t)) in w.services.iter().zip(inp) {
                assert_eq!(&sd.name, name);
                assert_eq!(sd.granted, (*t).min(w.window));
                assert!(sd.kill_at <= w.kill_at);
            }
            prev_end = w.end;
        }
        assert_eq!(p.end, prev_end);
        if !p.waves.is_empty() {
            assert!(p.kill_reserve * p.waves.len() as u32 * 2 <= p.budget);
        }
    }

    #[test]
    fn everything_fits_everyone_gets_their_timeout() {
        let input = waves(&[&[5_000, 2_000], &[10_000], &[3_000]]);
        let p = plan(s(25), m(500), &input);
        check_invariants(&p, &input);
        assert!(!p.squeezed);
        assert_eq!(p.kill_reserve, m(500));
        let windows: Vec<_> = p.waves.iter().map(|w| w.window).collect();
        assert_eq!(windows, [m(5_000), m(10_000), m(3_000)]);
        assert_eq!(p.end, m(19_500));
        // The last wave may run late by the 5.5 s of slack, the first by the same.
        assert_eq!(p.waves[2].latest_kill_at, m(24_500));
        assert_eq!(p.waves[0].latest_kill_at, m(10_500));
        assert_eq!(p.waves[0].services[1].kill_at, m(2_000));
    }

    #[test]
    fn one_slow_service_does_not_starve_the_others() {
        // Budget 25 s, three waves: the quick wave keeps its 5 s, the slow (60 s) and
        // the 10 s wave split the remaining 23.5 − 5 = 18.5 s equally.
        let input = waves(&[&[5_000], &[60_000], &[10_000]]);
        let p = plan(s(25), m(500), &input);
        check_invariants(&p, &input);
        assert!(p.squeezed);
        let windows: Vec<_> = p.waves.iter().map(|w| w.window).collect();
        assert_eq!(windows, [m(5_000), m(9_250), m(9_250)]);
        assert_eq!(p.end, s(25));
    }

    #[test]
    fn budget_smaller_than_the_sum_is_shared_to_the_millisecond() {
        let input = waves(&[&[10_000], &[10_000], &[10_000]]);
        let p = plan(s(10), m(500), &input);
        check_invariants(&p, &input);
        // 10 s − 3 × 0.5 s = 8.5 s over three equal asks: 2833, 2833, 2834 ms.
        let windows: Vec<u64> = p
            .waves
            .iter()
            .map(|w| w.window.as_millis() as u64)
            .collect();
        assert_eq!(windows.iter().sum::<u64>(), 8_500);
        assert!(windows.iter().all(|&w| (2_833..=2_834).contains(&w)));
        assert_eq!(p.end, s(10));
    }

    #[test]
    fn deep_chains_keep_graceful_time() {
        // 100 waves with a 25 s budget: reserves are capped at half the budget
        // (125 ms each), and every wave still gets a graceful window of 125 ms.
        let input: Vec<_> = (0..100).map(|i| vec![(format!("s{i}"), s(10))]).collect();
        let p = plan(s(25), m(500), &input);
        check_invariants(&p, &input);
        assert_eq!(p.kill_reserve, m(125));
        assert!(p.waves.iter().all(|w| w.window == m(125)));
        assert_eq!(p.end, s(25));
    }

    #[test]
    fn zero_timeouts_mean_sigkill_at_once() {
        let input = waves(&[&[0, 0], &[0]]);
        let p = plan(s(25), m(500), &input);
        check_invariants(&p, &input);
        assert!(!p.squeezed);
        assert_eq!(p.waves[0].kill_at, Duration::ZERO);
        assert_eq!(p.waves[1].start, m(500));
        assert_eq!(p.waves[1].kill_at, m(500));
        assert_eq!(p.end, s(1));
    }

    #[test]
    fn zero_budget_kills_everything_at_once() {
        let input = waves(&[&[5_000], &[5_000]]);
        let p = plan(Duration::ZERO, m(500), &input);
        check_invariants(&p, &input);
        assert_eq!(p.kill_reserve, Duration::ZERO);
        assert!(
            p.waves
                .iter()
                .all(|w| w.kill_at.is_zero() && w.end.is_zero())
        );
    }

    #[test]
    fn no_services_no_waves() {
        let p = plan(s(25), m(500), &[]);
        assert!(p.waves.is_empty());
        assert_eq!(p.end, Duration::ZERO);
        assert!(!p.squeezed);
    }

    #[test]
    fn a_service_shorter_than_its_wave_keeps_its_own_deadline() {
        let input = waves(&[&[1_000, 60_000]]);
        let p = plan(s(5), m(500), &input);
        check_invariants(&p, &input);
        assert_eq!(p.waves[0].window, m(4_500));
        assert_eq!(p.waves[0].services[0].granted, m(1_000));
        assert_eq!(p.waves[0].services[1].granted, m(4_500));
    }

    #[test]
    fn water_fill_is_max_min_fair() {
        assert_eq!(water_fill(&[1, 2, 3], 10), [1, 2, 3]);
        assert_eq!(water_fill(&[1, 100, 100], 11), [1, 5, 5]);
        assert_eq!(water_fill(&[100, 1, 100], 12), [5, 1, 6]);
        assert_eq!(water_fill(&[7, 7], 0), [0, 0]);
        assert_eq!(water_fill(&[], 0), Vec::<u64>::new());
    }

    #[test]
    fn invariants_hold_across_many_shapes() {
        // A small deterministic generator instead of a property-testing dependency.
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..2_000 {
            let k = next(12) as usize;
            let input: Vec<Vec<(String, Duration)>> = (0..k)
                .map(|i| {
                    (0..1 + next(4))
                        .map(|j| (format!("w{i}s{j}"), m(next(40_000))))
                        .collect()
                })
                .collect();
            let p = plan(m(next(60_000)), m(next(2_000)), &input);
            check_invariants(&p, &input);
            let total: Duration = p.waves.iter().map(|w| w.window).sum();
            if !p.squeezed {
                // Unsqueezed: every service got exactly what it asked for.
                for (w, inp) in p.waves.iter().zip(&input) {
                    for (sd, (_, t)) in w.services.iter().zip(inp) {
                        assert_eq!(sd.granted, *t);
                    }
                }
            } else {
                // Squeezed: the whole graceful time is handed out.
                assert_eq!(total + p.kill_reserve * k as u32, p.budget);
            }
        }
    }
}
