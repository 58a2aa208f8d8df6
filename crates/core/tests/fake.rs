//! The engine's orchestration with no process at all: a fake process layer and a
//! fake containment backend, under tokio's paused clock, so every time in the
//! shutdown report is exact and the test takes no real time.
//!
//! A fake process's command says how it behaves: `exit-on-term:MS` exits MS
//! milliseconds after SIGTERM, `ignore-term` only dies of SIGKILL, `exit-now`
//! exits 0 as soon as it has started.

use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herd_contain::{Backend, Containment, Limits, Unit};
use herd_core::engine::{Engine, Options, Processes, Started, Waker};
use herd_sys::{ExitStatus, Pidfd, SpawnError, Spec};

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

/// Every fake process, and who to wake when one exits.
#[derive(Default)]
struct World {
    next_pid: i32,
    /// Live processes and what their command says to do on SIGTERM.
    alive: HashMap<i32, Vec<String>>,
    /// Exited, not reaped yet.
    exited: Vec<(i32, ExitStatus)>,
    waker: Option<Waker>,
}

type Shared = Arc<Mutex<World>>;

impl World {
    fn exit(world: &Shared, pid: i32, status: ExitStatus) {
        let mut w = world.lock().unwrap();
        if w.alive.remove(&pid).is_some() {
            w.exited.push((pid, status));
            if let Some(waker) = &w.waker {
                waker.children_exited();
            }
        }
    }

    /// Delivers `sig` to `pid`; whether it was alive.
    fn signal(world: &Shared, pid: i32, sig: i32) -> bool {
        let Some(argv) = world.lock().unwrap().alive.get(&pid).cloned() else {
            return false;
        };
        match (sig, argv[0].split_once(':')) {
            (SIGKILL, _) => World::exit(world, pid, ExitStatus::Signal(SIGKILL)),
            (SIGTERM, Some(("exit-on-term", ms))) => {
                let (world, ms) = (world.clone(), ms.parse().unwrap());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    World::exit(&world, pid, ExitStatus::Code(0));
                });
            }
            _ => {}
        }
        true
    }
}

struct FakeProcesses(Shared);

impl Processes for FakeProcesses {
    fn spawn(&mut self, spec: &Spec) -> Result<Started, SpawnError> {
        let mut w = self.0.lock().unwrap();
        // Far above any real pid (pid_max is at most 2^22), so nothing that reads
        // /proc for one can meet a real process.
        w.next_pid = w.next_pid.max(5_000_000) + 1;
        let pid = w.next_pid;
        w.alive.insert(pid, spec.argv.clone());
        if spec.argv[0] == "exit-now" {
            let world = self.0.clone();
            tokio::spawn(async move { World::exit(&world, pid, ExitStatus::Code(0)) });
        }
        Ok(Started { pid, output: None })
    }

    fn reap(&mut self) -> Vec<(i32, ExitStatus)> {
        std::mem::take(&mut self.0.lock().unwrap().exited)
    }

    fn signal(&self, pid: i32, sig: i32) -> io::Result<bool> {
        Ok(World::signal(&self.0, pid, sig))
    }

    fn signal_group(&self, pid: i32, sig: i32) {
        World::signal(&self.0, pid, sig);
    }

    fn adopt(&mut self, _pidfd: Pidfd, _name: &str, _waker: &Waker) {
        unreachable!("no fake process sends MAINPID=")
    }

    fn forget(&mut self, _pid: i32) {}

    fn wake_on_exit(&mut self, waker: Waker) {
        self.0.lock().unwrap().waker = Some(waker);
    }
}

#[derive(Debug)]
struct FakeBackend(SharedDebug);

/// The world, for the backend's and units' `Debug`.
#[derive(Clone)]
struct SharedDebug(Shared);

impl std::fmt::Debug for SharedDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fake world")
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> Containment {
        Containment::None
    }
    fn location(&self) -> Option<&Path> {
        None
    }
    fn create(&self, _name: &str, _limits: &Limits) -> io::Result<Box<dyn Unit>> {
        Ok(Box::new(FakeUnit {
            world: self.0.clone(),
            members: Vec::new(),
        }))
    }
    fn unsupported(&self, _limits: &Limits) -> Vec<String> {
        Vec::new()
    }
}

#[derive(Debug)]
struct FakeUnit {
    world: SharedDebug,
    members: Vec<i32>,
}

impl Unit for FakeUnit {
    fn join(&self) -> std::io::Result<Vec<Arc<OwnedFd>>> {
        Ok(Vec::new())
    }
    fn started(&mut self, pid: i32) {
        self.members.push(pid);
    }
    fn events(&self) -> Option<BorrowedFd<'_>> {
        None
    }
    fn pids(&mut self) -> Vec<i32> {
        let w = self.world.0.lock().unwrap();
        self.members
            .iter()
            .copied()
            .filter(|p| w.alive.contains_key(p))
            .collect()
    }
    fn owns(&mut self, pid: i32) -> bool {
        self.pids().contains(&pid)
    }
    fn signal(&mut self, signal: i32) -> io::Result<usize> {
        let pids = self.pids();
        for &pid in &pids {
            World::signal(&self.world.0, pid, signal);
        }
        Ok(pids.len())
    }
    fn kill(&mut self) -> io::Result<()> {
        self.signal(SIGKILL).map(drop)
    }
    fn pidfd(&mut self, _pid: i32) -> Option<Pidfd> {
        None
    }
    fn remove(&mut self) -> io::Result<()> {
        assert!(self.pids().is_empty(), "a unit is removed only once empty");
        Ok(())
    }
}

/// web requires api requires db: three stop waves. web leaves 100 ms after
/// SIGTERM, api ignores it (SIGKILL at its 2 s timeout), db leaves 300 ms after.
const STACK: &str = r#"
[shutdown]
timeout = "20s"

[services.db]
command = ["exit-on-term:300"]
stop = { timeout = "5s" }

[services.api]
command = ["ignore-term"]
requires = ["db"]
stop = { timeout = "2s" }

[services.web]
command = ["exit-on-term:100"]
requires = ["api"]
stop = { timeout = "3s" }
"#;

/// Runs an engine over `toml` with fake processes and units; `test` gets its
/// handle and the fake world, and ends by asking for a shutdown. The outcome, and
/// whether any fake process was left.
async fn run_fake<F, Fut>(toml: &str, test: F) -> (herd_core::engine::Outcome, bool)
where
    F: FnOnce(herd_core::engine::Handle, Shared) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herd.toml");
    std::fs::write(&file, toml).unwrap();
    let config = herd_config::load(&file).unwrap();
    let world: Shared = Arc::default();
    let engine = Engine::with_processes(
        &config,
        Options {
            state_dir: dir.path().join(".herd"),
            ..Options::default()
        },
        Box::new(FakeBackend(SharedDebug(world.clone()))),
        Box::new(FakeProcesses(world.clone())),
    )
    .unwrap();
    let h = engine.handle();
    let (outcome, ()) = tokio::join!(engine.run(), test(h, world.clone()));
    let left = !world.lock().unwrap().alive.is_empty();
    (outcome.unwrap(), left)
}

/// `got` is within a millisecond of `want`.
#[track_caller]
fn near(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1.0, "{what}: {got} ms, want {want}");
}

/// An exited oneshot (migrate, which requires nginx, which requires db) runs
/// nothing: it is no stop wave and takes no share of the budget. Regression
/// test: it made a wave of its own, the budget was shared three ways, and db's
/// 10 s stop.timeout was cut to 5.25 s though the waves before it took 100 ms.
#[tokio::test(start_paused = true)]
async fn what_runs_nothing_takes_no_share_of_the_budget() {
    let toml = r#"
[shutdown]
timeout = "15s"

[services.db]
command = ["ignore-term"]
stop = { timeout = "10s" }

[services.nginx]
command = ["exit-on-term:100"]
requires = ["db"]
stop = { timeout = "3s" }

[services.migrate]
kind = "oneshot"
command = ["exit-now"]
requires = ["nginx"]
"#;
    let (outcome, left) = run_fake(toml, |h, _| async move {
        let done = h.wait("migrate", false).await.unwrap();
        assert_eq!(done, "migrate ran to completion");
        h.shutdown("test");
    })
    .await;
    assert!(!left);
    let r = &outcome.report;
    assert_eq!(r.waves_at_ms.len(), 2, "{:?}", r.waves_at_ms);
    near(r.waves_at_ms[1], 100.0, "db's wave");
    let db = r.services.iter().find(|s| s.name == "db").unwrap();
    near(
        db.deadline_at_ms.unwrap(),
        10_100.0,
        "db's whole stop.timeout",
    );
    near(db.killed_at_ms.unwrap(), 10_100.0, "db SIGKILL");
    let migrate = r.services.iter().find(|s| s.name == "migrate").unwrap();
    assert_eq!(migrate.state, "exited");
    assert_eq!(migrate.stop_at_ms, None);
}

/// Time an earlier wave leaves unused flows on: with a budget that cut both
/// waves' asks to 3.5 s, web leaves after 100 ms and db then gets up to its own
/// 10 s, capped by the latest moment that keeps the budget (7.5 s: 8 s less its
/// kill reserve). Regression test: db was SIGKILLed at its worst-case grant,
/// 3.6 s.
#[tokio::test(start_paused = true)]
async fn time_a_quick_wave_leaves_flows_on() {
    let toml = r#"
[shutdown]
timeout = "8s"

[services.db]
command = ["ignore-term"]
stop = { timeout = "10s" }

[services.web]
command = ["exit-on-term:100"]
requires = ["db"]
stop = { timeout = "5s" }
"#;
    let (outcome, left) = run_fake(toml, |h, _| async move {
        h.wait("web", false).await.unwrap();
        h.shutdown("test");
    })
    .await;
    assert!(!left);
    let db = outcome
        .report
        .services
        .iter()
        .find(|s| s.name == "db")
        .unwrap();
    near(db.signal_at_ms.unwrap(), 100.0, "db SIGTERM");
    near(db.killed_at_ms.unwrap(), 7_500.0, "db SIGKILL");
}

#[tokio::test(start_paused = true)]
async fn a_three_wave_shutdown_under_a_paused_clock() {
    let (outcome, left) = run_fake(STACK, |h, world| async move {
        // Every service is up once the last of the chain is.
        let up = h.wait("web", false).await.unwrap();
        assert!(up.starts_with("web is ready"), "{up}");
        assert_eq!(world.lock().unwrap().alive.len(), 3);
        h.shutdown("test");
    })
    .await;
    assert!(!left, "a fake process left");
    assert_eq!(outcome.killed, vec!["api".to_string()]);
    assert!(outcome.stuck.is_empty());
    assert_eq!(outcome.exit_code(), herd_core::engine::EXIT_KILLED);

    let r = &outcome.report;
    assert_eq!(r.waves_at_ms.len(), 3);
    // Each wave begins as soon as the last ends, not at its planned worst case.
    near(r.waves_at_ms[0], 0.0, "wave 1");
    near(r.waves_at_ms[1], 100.0, "wave 2 (web gone)");
    near(r.waves_at_ms[2], 2100.0, "wave 3 (api killed at its 2 s)");
    near(r.ended_at_ms, 2400.0, "end (db gone 300 ms after SIGTERM)");
    let by_name = |n: &str| r.services.iter().find(|s| s.name == n).unwrap();
    let (web, api, db) = (by_name("web"), by_name("api"), by_name("db"));
    assert_eq!(
        [web.wave, api.wave, db.wave],
        [0, 1, 2],
        "stop waves in reverse dependency order"
    );
    assert!(!web.killed && api.killed && !db.killed);
    near(api.signal_at_ms.unwrap(), 100.0, "api SIGTERM");
    near(api.deadline_at_ms.unwrap(), 2100.0, "api deadline");
    near(api.killed_at_ms.unwrap(), 2100.0, "api SIGKILL");
    near(db.signal_at_ms.unwrap(), 2100.0, "db SIGTERM");
    near(db.gone_at_ms.unwrap(), 2400.0, "db gone");
    assert_eq!(api.exit_status.as_deref(), Some("killed by signal 9"));
}

/// Issue 23's case: an exited oneshot that requires a TERM-ignoring service
/// with `stop.timeout = "3s"`, under a 4 s budget. The oneshot used to make a
/// wave of its own, and the two waves shared the budget, so the service was
/// SIGKILLed at 1.5 s. It now gets its whole 3 s.
#[tokio::test(start_paused = true)]
async fn an_exited_oneshot_leaves_a_service_its_whole_timeout() {
    let toml = r#"
[shutdown]
timeout = "4s"

[services.db]
command = ["ignore-term"]
stop = { timeout = "3s" }

[services.migrate]
kind = "oneshot"
command = ["exit-now"]
requires = ["db"]
"#;
    let (outcome, left) = run_fake(toml, |h, _| async move {
        h.wait("migrate", false).await.unwrap();
        h.shutdown("test");
    })
    .await;
    assert!(!left);
    let db = outcome
        .report
        .services
        .iter()
        .find(|s| s.name == "db")
        .unwrap();
    near(db.killed_at_ms.unwrap(), 3_000.0, "db SIGKILL");
}
