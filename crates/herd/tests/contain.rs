//! Containment and verified stop, for each backend forced in turn and for herder
//! running unprivileged: adversarial services (the test helper) are stopped with zero
//! survivors, found by scanning /proc for the test's marker, not by asking herder.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, Up};

const LONG: Duration = Duration::from_secs(30);

/// Where a scenario runs: a backend forced with `--containment`, or herder run
/// as nobody, which gets the none backend.
#[derive(Clone, Copy)]
enum On {
    Forced(&'static str),
    Unprivileged,
}

const CGROUP2: On = On::Forced("cgroup2");
const FREEZER: On = On::Forced("freezer");
const NONE: On = On::Forced("none");
const UNPRIVILEGED: On = On::Unprivileged;

impl On {
    fn backend(self) -> &'static str {
        match self {
            On::Forced(b) => b,
            On::Unprivileged => "none",
        }
    }

    fn opts(self) -> Opts<'static> {
        const NOBODY: u32 = 65534;
        match self {
            On::Forced(b) => Opts {
                args: match b {
                    "cgroup2" => &["--containment", "cgroup2"],
                    "freezer" => &["--containment", "freezer"],
                    _ => &["--containment", "none"],
                },
                ..Opts::default()
            },
            On::Unprivileged => Opts {
                user: Some(NOBODY),
                ..Opts::default()
            },
        }
    }
}

/// One test per row: `scenario { test_name: ON, ... }`.
macro_rules! on_backends {
    ($($scenario:ident { $($test:ident: $on:expr),+ $(,)? })+) => {
        $($(
            #[test]
            fn $test() {
                $scenario($on);
            }
        )+)+
    };
}

on_backends! {
    a_stopped_process_is_continued {
        cgroup2_continues_a_stopped_service: CGROUP2,
        freezer_continues_a_stopped_service: FREEZER,
        none_continues_a_stopped_service: NONE,
        unprivileged_continues_a_stopped_service: UNPRIVILEGED,
    }
    escapee_goes_with_its_service {
        cgroup2_stops_an_escapee_with_its_service: CGROUP2,
        freezer_stops_an_escapee_with_its_service: FREEZER,
        none_stops_an_escapee_with_its_service: NONE,
        unprivileged_stops_an_escapee_with_its_service: UNPRIVILEGED,
    }
    escapee_is_attributed {
        cgroup2_attributes_a_double_forked_escapee: CGROUP2,
        freezer_attributes_a_double_forked_escapee: FREEZER,
        none_attributes_a_double_forked_escapee: NONE,
    }
    adversaries {
        cgroup2_stops_every_adversary: CGROUP2,
        freezer_stops_every_adversary: FREEZER,
        none_stops_every_adversary: NONE,
        unprivileged_herder_uses_none_and_stops_every_adversary: UNPRIVILEGED,
    }
    deadline_kept {
        cgroup2_keeps_the_stop_deadline: CGROUP2,
        freezer_keeps_the_stop_deadline: FREEZER,
        none_keeps_the_stop_deadline: NONE,
        unprivileged_keeps_the_stop_deadline: UNPRIVILEGED,
    }
    waits_for_children {
        cgroup2_stopping_lasts_until_children_are_gone: CGROUP2,
        freezer_stopping_lasts_until_children_are_gone: FREEZER,
        none_stopping_lasts_until_children_are_gone: NONE,
        unprivileged_stopping_lasts_until_children_are_gone: UNPRIVILEGED,
    }
    bomb {
        cgroup2_stops_a_fork_bomb: CGROUP2,
        freezer_stops_a_fork_bomb: FREEZER,
        none_stops_a_fork_bomb: NONE,
    }
    stuck {
        cgroup2_reports_stuck_processes_and_retries: CGROUP2,
        none_reports_stuck_processes_and_retries: NONE,
    }
    usage {
        cgroup2_reads_cpu_memory_and_processes: CGROUP2,
        freezer_reads_cpu_memory_and_processes: FREEZER,
        none_reads_cpu_memory_and_processes: NONE,
        unprivileged_reads_cpu_memory_and_processes: UNPRIVILEGED,
    }
    v1_limits {
        cgroup2_takes_limits_from_cgroup_v1_on_a_hybrid_host: CGROUP2,
        freezer_takes_limits_from_cgroup_v1: FREEZER,
    }
    many_services {
        cgroup2_runs_and_stops_many_services: CGROUP2,
        freezer_runs_and_stops_many_services: FREEZER,
        none_runs_and_stops_many_services: NONE,
        unprivileged_runs_and_stops_many_services: UNPRIVILEGED,
    }
}

/// Issue 24: `herd ps --json` carries each service's CPU time, memory and
/// process count on every backend: a service burning CPU shows it and an idle
/// one does not; one holding 64 MiB shows at least that.
fn usage(on: On) {
    let mut up = Up::with(
        r#"
[services.burner]
shell = true
command = "sh -c 'while :; do :; done' & exec sleep 1000"

[services.idle]
command = ["sleep", "1000"]

[services.holder]
command = ["python3", "-c", "import time; x = b'\x01' * (64 << 20); time.sleep(1000)"]
"#,
        on.opts(),
    );
    up.wait_for(&format!("containment: {}", on.backend()), LONG);
    let deadline = Instant::now() + LONG;
    let list = loop {
        let list = common::ps(&up);
        let get = |name: &str, key: &str| common::service(&list, name)[key].as_f64();
        let burned = get("burner", "cpu_seconds").is_some_and(|c| c >= 0.5);
        let held = get("holder", "memory_bytes").is_some_and(|m| m >= (64 << 20) as f64);
        if burned && held {
            break list;
        }
        assert!(Instant::now() < deadline, "usage never showed: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let burner = common::service(&list, "burner");
    let idle = common::service(&list, "idle");
    assert_eq!(burner["processes"], 2, "{burner}");
    assert_eq!(idle["processes"], 1, "{idle}");
    let idle_cpu = idle["cpu_seconds"].as_f64().expect("read");
    assert!(idle_cpu < 0.25, "{idle}");
    assert!(idle["memory_bytes"].as_u64().expect("read") > 0, "{idle}");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// Issue 24 and 25: on a hybrid host (cgroup2 without controllers) and with
/// the freezer backend, `limits` are the v1 hierarchies' and so is the memory
/// in use: read back from the kernel's files, not from herder.
fn v1_limits(on: On) {
    let hierarchies = ["memory", "cpu", "pids"]
        .iter()
        .all(|c| herd_contain::mounts::v1(c).is_some());
    if !common::can_run(
        "v1_limits",
        hierarchies,
        "cgroup v1 memory, cpu and pids hierarchies",
    ) {
        return;
    }
    let mut up = Up::with(
        r#"
[services.hog]
command = ["python3", "-c", "import time; x = b'\x01' * (200 << 20); time.sleep(1000)"]
limits = { memory = "64M", cpu = 0.5 }
restart = { policy = "never" }

[services.capped]
command = ["sleep", "1000"]
limits = { memory = "64M", cpu = 0.5 }

[services.forks]
command = ["python3", "-c", """
import os, time
for i in range(8):
    try:
        if os.fork() == 0:
            time.sleep(1000)
            os._exit(0)
    except OSError:
        pass
time.sleep(1000)
"""]
limits = { pids = 4 }
"#,
        on.opts(),
    );
    up.wait_for(&format!("containment: {}", on.backend()), LONG);
    let mut cgroups = up.cgroups.v1.clone();
    cgroups.extend(up.cgroups.pids.clone());
    // The test's cgroup in that hierarchy, and below it herder's instance.
    let controller = |c: &str| {
        let mounts = herd_contain::mounts::v1(c);
        let test = cgroups
            .iter()
            .find(|d| mounts.as_ref().is_some_and(|m| d.starts_with(&m.point)))?;
        let instance = std::fs::read_dir(test)
            .ok()?
            .flatten()
            .find(|e| e.path().join("services").is_dir())?;
        Some(instance.path())
    };
    let memory = controller("memory").expect("checked before the start");
    let hog = memory.join("services/hog");
    // A service under its limit keeps its leaf: the kernel's file says 64M.
    up.wait_for("herd: capped started", LONG);
    let capped = memory.join("services/capped/memory.limit_in_bytes");
    let limit = std::fs::read_to_string(&capped).unwrap();
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    // The hog never gets past its limit: killed by the OOM killer (or, with
    // swap, held at it).
    let deadline = Instant::now() + LONG;
    loop {
        let list = common::ps(&up);
        let s = common::service(&list, "hog");
        if s["state"] != "ready" {
            assert_eq!(s["last_exit"], "killed by signal 9 (out of memory)", "{s}");
            up.wait_for(
                "hog: the OOM killer killed 1 of its processes (limits.memory = 67108864 bytes)",
                LONG,
            );
            break;
        }
        let failed: u64 = std::fs::read_to_string(hog.join("memory.failcnt"))
            .map_or(0, |t| t.trim().parse().unwrap_or(0));
        if failed > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the hog is not held: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // 0.5 CPU: 50 ms in each 100 ms period.
    let cpu = controller("cpu").expect("checked before the start");
    let quota = std::fs::read_to_string(cpu.join("services/capped/cpu.cfs_quota_us")).unwrap();
    assert_eq!(quota.trim(), "50000");
    // Eight forks asked for, four processes at most.
    let deadline = Instant::now() + LONG;
    loop {
        let list = common::ps(&up);
        let s = common::service(&list, "forks");
        if s["state"] == "ready" && s["processes"] == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "forks is not bounded: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = controller("pids").expect("a pids hierarchy");
    let max = std::fs::read_to_string(pids.join("services/forks/pids.max")).unwrap();
    assert_eq!(max.trim(), "4");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    // What herder made in the v1 hierarchies went with it.
    for d in [&memory, &cpu, &pids] {
        assert!(!d.exists(), "{} left", d.display());
    }
}

/// Issue 22: hundreds of services start, every one is listed by `herd ps` with
/// its process, and a shutdown leaves none of their processes (/proc scan).
/// Before the none backend shared its /proc scans, a shutdown of 1,000 took 17 s
/// (every unit read all of /proc for each check, signal and kill). How long
/// start and stop take, up to 10,000 services, is the benchmark's to measure
/// (`bench/run --scenarios start`), in a release build: a debug build of herder
/// in a test is some ten times slower.
fn many_services(on: On) {
    const N: usize = 300;
    let toml: String = (0..N)
        .map(|i| {
            format!("[services.s{i:04}]\ncommand = [\"{{helper}}\", \"{{dir}}\", \"term-exit\"]\n")
        })
        .collect();
    let mut up = Up::with(&toml, on.opts());
    up.wait_for(&format!("containment: {}", on.backend()), LONG);
    let deadline = Instant::now() + LONG;
    let list = loop {
        let list = common::ps(&up);
        let running = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["state"] == "ready" && common::pids(s).len() == 1)
            .count();
        if running == N {
            break list;
        }
        assert!(Instant::now() < deadline, "{running} of {N} running");
        std::thread::sleep(Duration::from_millis(100));
    };
    let listed: std::collections::HashSet<i32> = list
        .as_array()
        .unwrap()
        .iter()
        .flat_map(common::pids)
        .collect();
    assert_eq!(listed.len(), N);
    let mut found = up.survivors();
    found.sort_unstable();
    let mut expected: Vec<i32> = listed.into_iter().collect();
    expected.sort_unstable();
    assert_eq!(found, expected, "herd ps lists the services' processes");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// One service per adversarial mode. `stop.timeout` is short where SIGTERM is
/// ignored, so the run needs SIGKILL; the others end on SIGTERM.
const ADVERSARIES: &str = r#"
[shutdown]
timeout = "20s"

[services.term-exit]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }

[services.slow-exit]
command = ["{helper}", "{dir}", "slow-exit", "300"]
ready = { log = "^ready$" }

[services.ignore-term]
command = ["{helper}", "{dir}", "ignore-term"]
ready = { log = "^ready$" }
stop = { timeout = "1s" }

[services.escape]
command = ["{helper}", "{dir}", "escape"]
ready = { log = "^ready$" }
stop = { timeout = "1s" }

[services.tree]
command = ["{helper}", "{dir}", "tree", "60"]
ready = { log = "^ready$" }
stop = { timeout = "1s" }

[services.linger]
command = ["{helper}", "{dir}", "linger", "300"]
ready = { log = "^ready$" }
"#;

fn adversaries(on: On) {
    let (opts, backend) = (on.opts(), on.backend());
    let mut up = Up::with(ADVERSARIES, opts);
    up.wait_for(&format!("containment: {backend}"), LONG);
    for s in [
        "term-exit",
        "slow-exit",
        "ignore-term",
        "escape",
        "tree",
        "linger",
    ] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    // 1 + 1 + 1 + 2 (main, escapee) + 60 + 2.
    let before = up.survivors();
    assert_eq!(
        before.len(),
        67,
        "helpers running: {before:?}\n{}",
        up.seen.join("\n")
    );

    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    let left = up.survivors();
    assert!(
        left.is_empty(),
        "survivors: {left:?}\n{}",
        up.seen.join("\n")
    );
    let in_cgroups = up.cgroups.procs();
    assert!(
        in_cgroups.is_empty(),
        "left in the test's cgroups: {in_cgroups:?}"
    );
    for s in ["ignore-term", "tree"] {
        let line = up.wait_for(&format!("herd: {s}: SIGTERM at +"), LONG);
        assert!(line.contains(", SIGKILL at +"), "{line}");
    }
    // The escapee is the escape service's on every backend (without cgroups, by
    // the run's id in its environment), so that stop needs SIGKILL.
    let escape = up.wait_for("herd: escape: SIGTERM at +", LONG);
    assert!(escape.contains(", SIGKILL at +"), "{escape}");
}

/// Live processes of the test running the helper in `mode`.
fn in_mode(up: &Up, mode: &str) -> Vec<i32> {
    up.survivors()
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .split(|&b| b == 0)
                .any(|a| a == mode.as_bytes())
        })
        .collect()
}

/// With other services running, a double-forked escapee still goes with its
/// service: stopping that service alone ends it (as /proc shows), before the stop
/// answers, and the others run on. Without cgroups, herder cannot have seen the
/// escapee's short-lived parent, nor tell by timing which of three services it
/// came from; the run's id in its environment tells.
fn escapee_goes_with_its_service(on: On) {
    let (opts, backend) = (on.opts(), on.backend());
    let mut up = Up::with(
        r#"
[services.escape]
command = ["{helper}", "{dir}", "escape"]
ready = { log = "^ready$" }
stop = { timeout = "500ms" }

[services.one]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }

[services.two]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }
"#,
        opts,
    );
    up.wait_for(&format!("containment: {backend}"), LONG);
    for s in ["escape", "one", "two"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    assert_eq!(in_mode(&up, "escape").len(), 2, "main and escapee");
    let out = common::herd(
        up.dir.path(),
        &["--socket", ".herd/herd.sock", "stop", "escape"],
    );
    assert!(out.status.success(), "{out:?}\n{}", up.seen.join("\n"));
    let left = in_mode(&up, "escape");
    assert!(
        left.is_empty(),
        "escape left {left:?}\n{}",
        up.seen.join("\n")
    );
    assert_eq!(in_mode(&up, "term-exit").len(), 2, "the others run on");
    let line = up.wait_for("herd: escape: SIGTERM at +", LONG);
    assert!(line.contains(", SIGKILL at +"), "{line}");
    up.signal(libc::SIGTERM);
    assert!(up.wait_exit(LONG).is_some(), "{}", up.seen.join("\n"));
    assert!(up.survivors().is_empty());
}

/// Alone, a double-forked escapee is attributed to its service even without
/// cgroups: the service's stop waits for it (SIGKILL at the deadline).
fn escapee_is_attributed(on: On) {
    let (opts, backend) = (on.opts(), on.backend());
    let mut up = Up::with(
        r#"
[services.escape]
command = ["{helper}", "{dir}", "escape"]
ready = { log = "^ready$" }
stop = { timeout = "500ms" }
"#,
        opts,
    );
    up.wait_for(&format!("containment: {backend}"), LONG);
    up.wait_for("escape ready", LONG);
    assert_eq!(up.survivors().len(), 2);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3));
    let line = up.wait_for("herd: escape: SIGTERM at +", LONG);
    assert!(line.contains(", SIGKILL at +"), "{}", up.seen.join("\n"));
    assert!(
        !up.seen.iter().any(|l| l.contains("no service could claim")),
        "{}",
        up.seen.join("\n")
    );
    assert!(up.survivors().is_empty());
}

/// `ps` lists every process of a service whose cgroup.procs takes more than one
/// read (1,000 pids are over 4 KiB): the same pids /proc shows with the test's
/// marker, none missed at a read's boundary.
#[test]
fn cgroup2_lists_every_process_of_a_large_service() {
    let mut up = Up::with(
        r#"
[services.tree]
command = ["{helper}", "{dir}", "tree", "1000"]
ready = { log = "^ready$" }
stop = { timeout = "1s" }
"#,
        CGROUP2.opts(),
    );
    up.wait_for("containment: cgroup2", LONG);
    up.wait_for("herd: tree ready", LONG);
    let mut seen = up.survivors();
    seen.sort_unstable();
    assert_eq!(seen.len(), 1000);
    let mut listed = common::pids(common::service(&common::ps(&up), "tree"));
    listed.sort_unstable();
    assert_eq!(listed, seen);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    assert!(up.survivors().is_empty());
}

/// `stop.timeout = 1s` on a service that ignores SIGTERM: every process of it is
/// gone within 1 s + 100 ms of the stop request, as seen from /proc.
fn deadline_kept(on: On) {
    let (opts, backend) = (on.opts(), on.backend());
    let mut up = Up::with(
        r#"
[services.stubborn]
command = ["{helper}", "{dir}", "tree", "20"]
ready = { log = "^ready$" }
stop = { timeout = "1s" }
"#,
        opts,
    );
    up.wait_for(&format!("containment: {backend}"), LONG);
    up.wait_for("stubborn ready", LONG);
    let tree = up.survivors();
    assert_eq!(tree.len(), 20);
    let asked = Instant::now();
    up.signal(libc::SIGTERM);
    assert!(common::wait_gone(&tree, LONG), "never stopped");
    let took = asked.elapsed();
    assert!(up.survivors().is_empty());
    assert_eq!(up.wait_exit(LONG), Some(3));
    assert!(
        took < Duration::from_millis(1_100),
        "stopped after {took:?}\n{}",
        up.seen.join("\n")
    );
    assert!(
        took >= Duration::from_millis(950),
        "SIGKILLed early, after {took:?}"
    );
}

/// The main process exits at once on SIGTERM, its child 1.5 s later: the service is
/// `stopping` until the child is gone, and only then `stopped`.
fn waits_for_children(on: On) {
    let (opts, backend) = (on.opts(), on.backend());
    let mut up = Up::with(
        r#"
[services.linger]
command = ["{helper}", "{dir}", "linger", "1500"]
ready = { log = "^ready$" }
stop = { timeout = "10s" }
"#,
        opts,
    );
    up.wait_for(&format!("containment: {backend}"), LONG);
    up.wait_for("linger ready", LONG);
    let procs = up.survivors();
    assert_eq!(procs.len(), 2);
    let (main, child): (Vec<i32>, Vec<i32>) = procs
        .iter()
        .partition(|&&p| herd_contain::procfs::stat(p).is_some_and(|s| s.ppid == up.pid()));
    assert_eq!((main.len(), child.len()), (1, 1));
    up.signal(libc::SIGTERM);
    up.wait_for("linger stopping", LONG);
    // The main process goes first; the child is still there.
    assert!(common::wait_gone(&main, LONG), "main process never exited");
    assert_eq!(up.survivors(), child);
    let stopped = up.wait_for("herd: linger stopped", LONG);
    let alive: Vec<i32> = child
        .iter()
        .copied()
        .filter(|p| up.survivors().contains(p))
        .collect();
    assert!(
        alive.is_empty(),
        "herder said {stopped:?} while {alive:?} lived"
    );
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
}

/// A fork bomb, bounded by the test's own pids.max, is stopped whole.
fn bomb(on: On) {
    let backend = on.backend();
    let mut up = Up::with(
        r#"
[services.bomb]
command = ["{helper}", "{dir}", "bomb"]
ready = { log = "^ready$" }
stop = { timeout = "500ms" }
"#,
        Opts {
            pids_max: Some(300),
            ..on.opts()
        },
    );
    up.wait_for(&format!("containment: {backend}"), LONG);
    up.wait_for("bomb ready", LONG);
    let n = up.survivors().len();
    assert!(n > 200, "the bomb made only {n} processes");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    let left = up.survivors();
    assert!(left.is_empty(), "survivors: {}", left.len());
}

/// Processes that survive SIGKILL (here: frozen by the test in its own v1 freezer
/// cgroup, which SIGKILL cannot wake) make the service `stuck`, with their pids,
/// states and command lines, and SIGKILL is retried until they go.
fn stuck(on: On) {
    let mut up = Up::with(
        r#"
[services.frozen]
command = ["{helper}", "{dir}", "tree", "3"]
ready = { log = "^ready$" }
stop = { timeout = "300ms" }
"#,
        on.opts(),
    );
    up.wait_for("frozen ready", LONG);
    let pids = up.survivors();
    let ice = up
        .cgroups
        .freezer
        .clone()
        .expect("a v1 freezer")
        .join("ice");
    std::fs::create_dir(&ice).unwrap();
    for p in &pids {
        std::fs::write(ice.join("cgroup.procs"), p.to_string()).unwrap();
    }
    std::fs::write(ice.join("freezer.state"), "FROZEN").unwrap();
    up.signal(libc::SIGTERM);
    up.wait_for("herd: frozen stuck", LONG);
    let line = up.wait_for("still there", LONG);
    assert!(line.contains("3 process(es)"), "{line}");
    up.wait_for("uninterruptible sleep", LONG);
    assert_eq!(up.survivors().len(), 3, "frozen processes died");
    std::fs::write(ice.join("freezer.state"), "THAWED").unwrap();
    up.wait_for("herd: frozen stopped", LONG);
    assert_eq!(up.wait_exit(LONG), Some(3));
    assert!(up.survivors().is_empty());
}

/// `stop.exec` runs before the stop signal, with the reason and deadline in its
/// environment; the signal follows when it ends.
#[test]
fn stop_exec_runs_before_the_signal() {
    let mut up = Up::start(
        r#"
[services.drained]
command = "trap 'date +%s%N > {dir}/term; exit 0' TERM; echo up; while :; do sleep 0.05; done"
shell = true
ready = { log = "^up$" }
stop = { timeout = "10s", exec = ["sh", "-c", "echo $HERD_STOP_REASON $HERD_STOP_DEADLINE_MS > {dir}/hook; sleep 0.3; date +%s%N >> {dir}/hook"] }
"#,
    );
    up.wait_for("drained ready", LONG);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    let hook = std::fs::read_to_string(up.path("hook")).unwrap();
    let mut lines = hook.lines();
    let first: Vec<&str> = lines.next().unwrap().split(' ').collect();
    assert_eq!(first[0], "shutdown");
    let left: u64 = first[1].parse().unwrap();
    assert!((9_000..=10_000).contains(&left), "deadline {left} ms");
    let hook_end: u128 = lines.next().unwrap().parse().unwrap();
    let term: u128 = std::fs::read_to_string(up.path("term"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(hook_end <= term, "SIGTERM came before the hook ended");
    let line = up.wait_for("herd: drained: stop.exec took", LONG);
    assert!(line.contains("SIGTERM at +"), "{line}");
    assert!(up.survivors().is_empty());
}

/// A hook that outlives the deadline is SIGKILLed with the service: the stop stays
/// bounded.
#[test]
fn stop_exec_is_bounded_by_the_deadline() {
    let mut up = Up::start(
        r#"
[services.hung]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }
stop = { timeout = "500ms", exec = ["{helper}", "{dir}", "ignore-term"] }
"#,
    );
    up.wait_for("hung ready", LONG);
    assert_eq!(up.survivors().len(), 1);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    // The hook never ended, so the stop signal was never sent: SIGKILL ended both.
    let line = up.wait_for("herd: hung: stop.exec took", LONG);
    assert!(line.contains("SIGKILL at +"), "{line}");
    assert!(!line.contains("SIGTERM"), "{line}");
    assert!(up.survivors().is_empty());
}

/// A stuck service neither holds up the services that stop after it nor keeps
/// herder past the shutdown budget: herder exits with code 3 and names what is left.
#[test]
fn stuck_processes_do_not_hold_the_shutdown_past_its_budget() {
    let mut up = Up::start(
        r#"
[shutdown]
timeout = "3s"

[services.base]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }

[services.frozen]
command = ["{helper}", "{dir}", "tree", "2"]
ready = { log = "^ready$" }
requires = ["base"]
stop = { timeout = "300ms" }
"#,
    );
    up.wait_for("frozen ready", LONG);
    let frozen: Vec<i32> = up
        .survivors()
        .into_iter()
        .filter(|&p| herd_contain::procfs::cmdline(p).ends_with(" tree 2"))
        .collect();
    assert_eq!(frozen.len(), 2);
    let ice = up
        .cgroups
        .freezer
        .clone()
        .expect("a v1 freezer")
        .join("ice");
    std::fs::create_dir(&ice).unwrap();
    for p in &frozen {
        std::fs::write(ice.join("cgroup.procs"), p.to_string()).unwrap();
    }
    std::fs::write(ice.join("freezer.state"), "FROZEN").unwrap();
    let asked = Instant::now();
    up.signal(libc::SIGTERM);
    up.wait_for("herd: frozen stuck", LONG);
    // The next wave goes on while `frozen` is stuck.
    let base = up.wait_for("herd: base: SIGTERM at +", LONG);
    assert!(!base.contains("SIGKILL"), "{base}");
    // 4: processes survived SIGKILL and were left behind.
    assert_eq!(up.wait_exit(LONG), Some(4), "{}", up.seen.join("\n"));
    assert!(asked.elapsed() < Duration::from_secs(10));
    up.wait_for("leaving with processes of frozen still there", LONG);
    let mut left = up.survivors();
    left.sort_unstable();
    assert_eq!(left, frozen, "only the frozen processes are left");
    std::fs::write(ice.join("freezer.state"), "THAWED").unwrap();
}

/// A service stopped with SIGSTOP acts on SIGTERM only once it runs again: its
/// stop continues it (SIGCONT after the stop signal), so its TERM handler exits
/// at once instead of waiting out the 3 s timeout for SIGKILL. Regression test:
/// every backend waited the whole timeout and SIGKILLed it.
fn a_stopped_process_is_continued(on: On) {
    stopped_then_stop(on, "group");
}

fn stopped_then_stop(on: On, mode: &str) {
    let mut up = Up::with(
        &format!(
            r#"
[services.paused]
command = ["{{helper}}", "{{dir}}", "slow-exit", "0"]
ready = {{ log = "^ready$" }}
stop = {{ timeout = "3s", mode = "{mode}" }}
"#
        ),
        on.opts(),
    );
    up.wait_for(&format!("containment: {}", on.backend()), LONG);
    up.wait_for("herd: paused ready", LONG);
    let main = in_mode(&up, "slow-exit");
    assert_eq!(main.len(), 1);
    common::kill(main[0], libc::SIGSTOP);
    common::wait_state(main[0], 'T', LONG);
    let asked = Instant::now();
    let out = common::herd(
        up.dir.path(),
        &["--socket", ".herd/herd.sock", "stop", "paused"],
    );
    let took = asked.elapsed();
    assert!(out.status.success(), "{out:?}\n{}", up.seen.join("\n"));
    let line = up.wait_for("herd: paused: SIGTERM at +", LONG);
    assert!(!line.contains("SIGKILL"), "{line}");
    // Well under the 3 s timeout (about a millisecond here; the margin is for a
    // loaded machine, not a target).
    assert!(took < Duration::from_millis(2_000), "stop took {took:?}");
    assert!(in_mode(&up, "slow-exit").is_empty());
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
}

#[test]
fn a_stopped_main_process_is_continued_in_main_mode() {
    stopped_then_stop(CGROUP2, "main");
}

#[test]
fn a_stopped_main_process_is_continued_in_mixed_mode() {
    stopped_then_stop(NONE, "mixed");
}

/// The none backend with three services, one of which (`esc`) leaves an escapee
/// that cleared its environment, whose parent lived only an instant: running.
fn unclaimable() -> Up {
    let mut up = Up::with(
        r#"
[services.esc]
command = ["sh", "-c", "(setsid env -i {helper} {dir} ignore-term &); exec {helper} {dir} term-exit"]
ready = { log = "^ready$" }
stop = { timeout = "500ms" }

[services.one]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }

[services.two]
command = ["{helper}", "{dir}", "slow-exit", "0"]
ready = { log = "^ready$" }
"#,
        NONE.opts(),
    );
    up.wait_for("containment: none", LONG);
    for s in ["esc", "one", "two"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let end = Instant::now() + LONG;
    while in_mode(&up, "ignore-term").is_empty() {
        assert!(Instant::now() < end, "the escapee never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    up
}

/// `herd stop esc`: its answer, and the escapee if herder could not claim it.
fn stop_esc(up: &Up) -> (String, Vec<i32>) {
    let out = common::herd(
        up.dir.path(),
        &["--socket", ".herd/herd.sock", "stop", "esc"],
    );
    assert!(out.status.success(), "{out:?}");
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    let left = in_mode(up, "ignore-term");
    eprintln!(
        "the escapee was {}",
        if left.is_empty() {
            "claimed"
        } else {
            "unclaimed"
        }
    );
    if left.is_empty() {
        // herder claimed it after all: the stop took it (SIGKILL at the deadline:
        // it ignores SIGTERM), and said nothing of unclaimed processes.
        assert!(
            answer.starts_with("esc stopped (SIGKILL at +5") && answer.ends_with("ms)\n"),
            "{answer}"
        );
    } else {
        assert!(
            answer.starts_with(
                "esc stopped; 1 unclaimed process(es) re-parented to herder still running: "
            ) && answer.contains(&left[0].to_string()),
            "{answer}"
        );
    }
    (answer, left)
}

/// Regression test: without cgroups, a double-forked escapee that cleared its
/// environment (no `HERD_INVOCATION`) and whose parent lived and died between two
/// scans cannot be attributed while other services run; `herd stop esc` answered
/// `esc stopped` while it ran on, and the shutdown said nothing of it. Now
/// whatever herder cannot claim is named: in the stop's answer, in `herd ps`, in
/// the shutdown report, which lists it among what it killed.
#[test]
fn none_names_what_it_cannot_claim() {
    let mut up = unclaimable();
    let (_, left) = stop_esc(&up);
    let ps = common::herd(up.dir.path(), &["--socket", ".herd/herd.sock", "ps"]);
    let ps = String::from_utf8_lossy(&ps.stdout).to_string();
    for pid in &left {
        assert!(
            ps.contains("1 unclaimed process(es)") && ps.contains(&pid.to_string()),
            "{ps}"
        );
    }
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(up.path(".herd/shutdown-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["strays_killed"].as_u64().unwrap() as usize,
        left.len()
    );
    for pid in &left {
        let listed = report["unclaimed"].as_array().unwrap();
        assert!(
            listed
                .iter()
                .any(|l| l.as_str().unwrap().starts_with(&format!("{pid} "))),
            "{report}"
        );
    }
    assert!(up.survivors().is_empty());
}

/// After herder is SIGKILLed, the next one names (and stops) what the last could
/// not claim, from its state file.
#[test]
fn none_recovery_names_what_was_unclaimed() {
    let mut up = unclaimable();
    let (_, left) = stop_esc(&up);
    up.signal(libc::SIGKILL);
    up.wait_exit(LONG);
    up.relaunch(&["--containment", "none"]);
    let line = up.wait_for("ended without stopping its services", LONG);
    assert!(!line.is_empty());
    if let Some(pid) = left.first() {
        let named = up.wait_for("(processes no service could claim): 1 process(es)", LONG);
        assert!(!named.is_empty());
        let detail = up.wait_for(&format!("    {pid} "), LONG);
        assert!(detail.contains("ignore-term"), "{detail}");
    }
    up.wait_for("herd: one ready", LONG);
    // Gone (the new run's esc leaves an escapee of its own).
    assert!(
        common::wait_gone(&left, Duration::ZERO),
        "{}",
        up.seen.join("\n")
    );
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
    assert!(up.survivors().is_empty());
}

/// Whether `test` can run: it needs root and a cgroup2 mount.
fn root_and_cgroup2(test: &str) -> bool {
    let there = common::is_root() && herd_contain::mounts::cgroup2().is_some();
    common::can_run(test, there, "root and cgroup2")
}

/// Issue 25: two projects' herders at once in one cgroup, as two `herd up` from
/// one shell are: each gets a subtree of its own (`INSTANCE/`), so both run on
/// cgroup2 with nothing passed over; each stops its own escapee; and one
/// SIGKILLed and started again cleans up its own subtree only, leaving the
/// other's services running.
#[test]
fn two_herders_in_one_cgroup_each_get_a_subtree_of_their_own() {
    if !root_and_cgroup2("two_herders_in_one_cgroup_each_get_a_subtree_of_their_own") {
        return;
    }
    let toml = r#"
[services.esc]
command = ["{helper}", "{dir}", "escape"]
ready = { log = "ready" }
stop = { timeout = "500ms" }
"#;
    let mut a = Up::start(toml);
    let mut b = Up::with(
        toml,
        Opts {
            beside: Some(&a.cgroups),
            ..Opts::default()
        },
    );
    for up in [&mut a, &mut b] {
        up.wait_for("herd: containment: cgroup2 under", LONG);
        up.wait_for("herd: esc ready", LONG);
        assert!(
            !up.seen.iter().any(|l| l.contains("not used")),
            "a backend was passed over:\n{}",
            up.seen.join("\n")
        );
    }
    let subtree = |up: &Up| {
        up.seen
            .iter()
            .find_map(|l| l.strip_prefix("herd: containment: cgroup2 under "))
            .and_then(|l| l.split(';').next())
            .map(String::from)
            .expect("said where")
    };
    assert_ne!(subtree(&a), subtree(&b), "one subtree for two herders");
    let (a_esc, b_esc) = (a.survivors(), b.survivors());
    assert_eq!(
        (a_esc.len(), b_esc.len()),
        (2, 2),
        "a service and its escapee each"
    );

    // Each stops its own: a's escapee goes, b's stays.
    let out = common::herd(a.dir.path(), &["stop", "esc"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(a.survivors(), Vec::<i32>::new());
    assert_eq!(b.survivors(), b_esc);

    // a again, then b SIGKILLed and started again: b's start-up kills what b
    // left, and nothing of a's.
    let out = common::herd(a.dir.path(), &["start", "esc"]);
    assert!(out.status.success(), "{out:?}");
    let a_esc = a.survivors();
    assert_eq!(a_esc.len(), 2);
    common::kill(b.pid(), libc::SIGKILL);
    b.wait_exit(LONG);
    assert_eq!(b.survivors(), b_esc, "b's services outlive its SIGKILL");
    b.relaunch(&[]);
    b.wait_for("herd: esc ready", LONG);
    assert!(
        common::wait_gone(&b_esc, LONG),
        "b's leftovers were not killed"
    );
    assert_eq!(a.survivors(), a_esc, "b's clean-up touched a's services");
    // The escapees ignore SIGTERM: SIGKILLed at the timeout, so exit code 3.
    for up in [&mut a, &mut b] {
        up.signal(libc::SIGTERM);
        assert_eq!(up.wait_exit(LONG), Some(3));
        assert_eq!(up.survivors(), Vec::<i32>::new());
    }
}

/// One service that exits on SIGTERM, in instance `name`.
fn one_service(name: &str) -> String {
    format!(
        r#"
[supervisor]
instance = "{name}"

[services.s]
command = ["{{helper}}", "{{dir}}", "term-exit"]
ready = {{ log = "ready" }}
"#
    )
}

/// What `herd doctor` says for a second project with `toml`, run as that
/// project's `herd up` would be: in the same cgroups as `first`.
fn doctor_beside(toml: &str, first: &Up) -> String {
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("herd.toml"),
        toml.replace("{helper}", common::helper()),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_herd"));
    cmd.arg("doctor").current_dir(other.path());
    let _procs = common::join_on_exec(&mut cmd, &first.cgroups);
    String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
}

/// Issue 25: a weaker backend is never chosen silently, and `herd doctor`
/// decides as `herd up` does. Two projects that name the same instance share
/// one subtree: with the first on cgroup2, `herd doctor` for the second says
/// it would use the freezer, and the second does, saying why not cgroup2.
#[test]
fn a_backend_passed_over_is_named_and_doctor_agrees() {
    if !root_and_cgroup2("a_backend_passed_over_is_named_and_doctor_agrees") {
        return;
    }
    let toml = &one_service("shared-by-two");
    let mut a = Up::start(toml);
    a.wait_for("herd: containment: cgroup2", LONG);
    a.wait_for("herd: s ready", LONG);
    let text = doctor_beside(toml, &a);
    assert!(
        text.contains("herd up would use: freezer, instance shared-by-two"),
        "{text}"
    );
    assert!(
        text.contains("shared-by-two is in use by another supervisor"),
        "{text}"
    );

    let mut b = Up::with(
        toml,
        Opts {
            beside: Some(&a.cgroups),
            ..Opts::default()
        },
    );
    let said = b.wait_for("herd: cgroup2 not used: ", LONG);
    assert!(
        said.contains("shared-by-two is in use by another supervisor"),
        "{said}"
    );
    b.wait_for("herd: containment: freezer", LONG);
    b.wait_for("herd: s ready", LONG);
    for up in [&mut a, &mut b] {
        up.signal(libc::SIGTERM);
        assert_eq!(up.wait_exit(LONG), Some(0));
        assert_eq!(up.survivors(), Vec::<i32>::new());
    }
}

/// Where no rule makes it move (cgroup v1 has no no-internal-processes rule),
/// herder stays in its own cgroup: there is no `supervisor/`, and its instance
/// is held by a lock on the directory instead, so a second herder of the same
/// instance is still refused, by the first one's pid. At exit the instance's
/// directory is gone.
#[test]
fn in_a_v1_hierarchy_herder_stays_put_and_still_holds_its_instance() {
    let test = "in_a_v1_hierarchy_herder_stays_put_and_still_holds_its_instance";
    if !common::can_run(
        test,
        common::is_root() && herd_contain::mounts::v1("freezer").is_some(),
        "root and a cgroup v1 freezer",
    ) {
        return;
    }
    let toml = &one_service("held-by-one");
    let freezer = ["--containment", "freezer"];
    let mut a = Up::with(
        toml,
        Opts {
            args: &freezer,
            ..Opts::default()
        },
    );
    a.wait_for("herd: containment: freezer", LONG);
    a.wait_for("herd: s ready", LONG);
    let own = a
        .cgroups
        .freezer
        .clone()
        .expect("root has the test's freezer");
    let instance = own.join("held-by-one");
    let listed = |dir: &std::path::Path| -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    assert!(
        listed(&own).contains(&a.pid()),
        "herder left {}",
        own.display()
    );
    assert!(!instance.join("supervisor").exists());
    assert!(instance.join("services/s").is_dir());

    // `herd doctor` finds the lock without taking it.
    let text = doctor_beside(toml, &a);
    assert!(
        text.contains(&format!(
            "held-by-one is in use by another supervisor (pid {})",
            a.pid()
        )),
        "{text}"
    );

    let mut b = Up::with(
        toml,
        Opts {
            args: &freezer,
            beside: Some(&a.cgroups),
            ..Opts::default()
        },
    );
    let said = b.wait_for("in use by another supervisor", LONG);
    assert!(said.contains(&format!("(pid {})", a.pid())), "{said}");
    assert_ne!(b.wait_exit(LONG), Some(0), "{}", b.seen.join("\n"));

    a.signal(libc::SIGTERM);
    assert_eq!(a.wait_exit(LONG), Some(0), "{}", a.seen.join("\n"));
    assert_eq!(a.survivors(), Vec::<i32>::new());
    assert!(!instance.exists(), "{} is left", instance.display());
}
