//! A full shutdown, seen from the services: the order they are stopped in (their own
//! timestamps), the budget, shutdown events, `main`, `herd down`, the report, and
//! recovery after herder itself was SIGKILLed. Survivors are found by scanning /proc
//! for the test's marker.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Opts, Up, herd, wait_gone};

const LONG: Duration = Duration::from_secs(30);

/// `term`/`exit` stamps the helper's `stamp` mode wrote: service -> (what -> ns).
fn stamps(up: &Up) -> BTreeMap<String, BTreeMap<String, u128>> {
    let mut out: BTreeMap<String, BTreeMap<String, u128>> = BTreeMap::new();
    for line in std::fs::read_to_string(up.path("stamps"))
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        out.entry(f[1].to_string())
            .or_default()
            .insert(f[0].to_string(), f[2].parse().unwrap());
    }
    out
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Six services in three stop waves: web and worker (wave 0) need api and queue
/// (wave 1), which need db and cache (wave 2). worker ignores SIGTERM; api and db
/// are slow to stop.
const STACK: &str = r#"
[shutdown]
timeout = "8s"

[services.db]
command = ["{helper}", "{dir}", "stamp", "{dir}/stamps", "400"]
ready = { log = "ready" }
stop = { timeout = "3s" }

[services.cache]
command = ["{helper}", "{dir}", "stamp", "{dir}/stamps", "50"]
ready = { log = "ready" }

[services.api]
command = ["{helper}", "{dir}", "stamp", "{dir}/stamps", "300"]
requires = ["db", "cache"]
ready = { log = "ready" }

[services.queue]
command = ["{helper}", "{dir}", "stamp", "{dir}/stamps", "0"]
requires = ["db"]
ready = { log = "ready" }

[services.web]
command = ["{helper}", "{dir}", "stamp", "{dir}/stamps", "100"]
requires = ["api"]
ready = { log = "ready" }

[services.worker]
command = ["{helper}", "{dir}", "stamp", "{dir}/stamps", "ignore"]
requires = ["api", "queue"]
ready = { log = "ready" }
stop = { timeout = "1s" }
"#;

#[test]
fn a_stack_stops_in_the_planned_order_within_its_budget() {
    let mut up = Up::start(STACK);
    for s in ["db", "cache", "api", "queue", "web", "worker"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let plan = json(&herd(up.dir.path(), &["plan", "--json"]));
    let waves: Vec<Vec<String>> = plan["shutdown"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(waves.len(), 3, "{waves:?}");

    let asked = Instant::now();
    up.signal(libc::SIGTERM);
    let code = up.wait_exit(LONG);
    let took = asked.elapsed();
    assert_eq!(up.survivors(), Vec::<i32>::new(), "processes survived");
    assert_eq!(
        code,
        Some(3),
        "worker needed SIGKILL: {}",
        up.seen.join("\n")
    );
    assert!(took < Duration::from_secs(8), "budget is 8s, took {took:?}");

    // From the services' own clocks: every service of a wave got SIGTERM only after
    // every service of the wave before had exited (or, for worker, been killed at
    // its 1s deadline).
    let st = stamps(&up);
    for (i, pair) in waves.windows(2).enumerate() {
        let (before, after) = (&pair[0], &pair[1]);
        let first_term = after.iter().map(|s| st[s]["term"]).min().unwrap();
        for s in before {
            let done = st[s]
                .get("exit")
                .copied()
                .unwrap_or(st[s]["term"] + 950_000_000);
            assert!(
                first_term >= done,
                "wave {} began before {s} of wave {i} was gone: {st:?}",
                i + 1
            );
        }
    }
    // Within a wave, stops are parallel: both of wave 2 got SIGTERM together.
    let w2: Vec<u128> = waves[2].iter().map(|s| st[s]["term"]).collect();
    assert!(
        w2.iter().max().unwrap() - w2.iter().min().unwrap() < 200_000_000,
        "{st:?}"
    );
    assert!(!st["worker"].contains_key("exit"), "worker ignores SIGTERM");

    // The report agrees, and says worker was killed and the rest were not.
    let report = json(&herd(up.dir.path(), &["report", "--json"]));
    assert_eq!(report["trigger"], "SIGTERM");
    assert_eq!(report["exit_code"], 3);
    let services = report["services"].as_array().unwrap();
    assert_eq!(services.len(), 6);
    for s in services {
        let name = s["name"].as_str().unwrap();
        let wave = waves
            .iter()
            .position(|w| w.iter().any(|n| n == name))
            .unwrap();
        assert_eq!(s["wave"], wave, "{s}");
        assert_eq!(s["killed"], name == "worker", "{s}");
        assert!(s["gone_at_ms"].as_f64().unwrap() >= s["signal_at_ms"].as_f64().unwrap());
        assert!(s["leftovers"].as_array().unwrap().is_empty());
    }
    let table = herd(up.dir.path(), &["report"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("worker") && text.contains("killed"), "{text}");

    // The SVG is well-formed XML with one bar per service.
    let svg_path = up.path("timeline.svg");
    let out = herd(
        up.dir.path(),
        &["report", "--svg", svg_path.to_str().unwrap()],
    );
    assert!(out.status.success());
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let bars: Vec<_> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("bar"))
        .collect();
    assert_eq!(bars.len(), 6, "one bar per service");
    let escalations = doc
        .descendants()
        .filter(|n| {
            n.attribute("class")
                .is_some_and(|c| c.contains("escalation"))
        })
        .count();
    assert_eq!(escalations, 1, "worker's SIGKILL is marked");
}

#[test]
fn draining_services_get_the_event_before_the_signal_and_may_extend() {
    let examples = common::repo().join("examples/drain");
    let toml = std::fs::read_to_string(examples.join("herd.toml"))
        .unwrap()
        .replace("./drain", &format!("{}/drain", examples.display()));
    let mut up = Up::start(&toml);
    // py-worker is ready once drain.py says "working" (its readiness check).
    up.wait_for("herd: py-worker ready", LONG);
    // shell-worker has no readiness check: it is said to have started, not to be
    // ready.
    up.wait_for("herd: shell-worker started (pid ", LONG);
    let log = |up: &Up, name: &str| {
        std::fs::read_to_string(up.path(&format!(".herd/logs/{name}.log"))).unwrap_or_default()
    };
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    for name in ["py-worker", "shell-worker"] {
        let text = log(&up, name);
        assert!(
            text.contains("event: stop reason=shutdown deadline_ms="),
            "{name}: {text}"
        );
        assert!(text.contains("drained; exiting"), "{name}: {text}");
    }
    up.wait_for("py-worker: asked for 1s more", LONG);
    let report = json(&herd(up.dir.path(), &["report", "--json"]));
    for s in report["services"].as_array().unwrap() {
        let event = s["event_at_ms"].as_f64().expect("event delivered");
        assert!(event <= s["signal_at_ms"].as_f64().unwrap(), "{s}");
        assert_eq!(s["killed"], false, "{s}");
    }
    let py = report["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "py-worker")
        .unwrap();
    // It ran past its 1s stop.timeout, on extensions, and was not killed.
    assert_eq!(py["extended"], true);
    assert!(py["gone_at_ms"].as_f64().unwrap() > 1500.0, "{py}");
}

#[test]
fn an_extension_never_goes_past_the_budget() {
    // One wave, a 2s budget: SIGKILL can come no later than 1.5s (2s less the
    // 500ms kill reserve), whatever the service asks for.
    let mut up = Up::start(
        r#"
[shutdown]
timeout = "2s"

[services.greedy]
command = ["{helper}", "{dir}", "ignore-term"]
ready = { log = "ready" }
# systemd-notify speaks for its parent (as root it may): a shell, which is a
# process of the service while it waits.
stop = { timeout = "300ms", notify = true, exec = ["sh", "-c", "systemd-notify EXTEND_TIMEOUT_USEC=60000000; true"] }
"#,
    );
    up.wait_for("herd: greedy ready", LONG);
    let asked = Instant::now();
    up.signal(libc::SIGTERM);
    up.wait_for("greedy: asked for 1m more; SIGKILL now due in", LONG);
    assert!(
        up.wait_for("capped by the shutdown budget", LONG)
            .contains("greedy")
    );
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(2), "budget 2s, took {took:?}");
    assert_eq!(up.survivors(), Vec::<i32>::new());
    let report = json(&herd(up.dir.path(), &["report", "--json"]));
    let s = &report["services"][0];
    assert_eq!(s["extended"], true, "{s}");
    assert_eq!(s["killed"], true, "{s}");
    let killed = s["killed_at_ms"].as_f64().unwrap();
    assert!((1400.0..1600.0).contains(&killed), "SIGKILL at {killed}ms");
}

#[test]
fn the_main_service_ends_the_run_with_its_exit_code() {
    let mut up = Up::start(
        r#"
main = "job"

[services.sidecar]
command = ["{helper}", "{dir}", "term-exit"]

[services.job]
shell = true
command = "sleep 0.3; exit 7"
"#,
    );
    up.wait_for("main service job ended (exit code 7): shutting down", LONG);
    assert_eq!(up.wait_exit(LONG), Some(7), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    let report = json(&herd(up.dir.path(), &["report", "--json"]));
    assert_eq!(report["exit_code"], 7);
}

#[test]
fn a_second_sigterm_kills_everything_at_once() {
    let mut up = Up::start(
        r#"
[services.slow]
command = ["{helper}", "{dir}", "ignore-term"]
ready = { log = "ready" }
stop = { timeout = "20s" }
"#,
    );
    up.wait_for("herd: slow ready", LONG);
    up.signal(libc::SIGTERM);
    up.wait_for("herd: slow stopping", LONG);
    let asked = Instant::now();
    up.signal(libc::SIGTERM);
    up.wait_for("SIGTERM again: SIGKILL to everything left", LONG);
    assert_eq!(up.wait_exit(LONG), Some(3));
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn sighup_sigquit_and_forwarded_signals_leave_herder_running() {
    let mut up = Up::start(
        r#"
[services.app]
shell = true
command = "trap 'echo usr1 >> {dir}/usr1' USR1; echo ready; while :; do sleep 0.05; done"
ready = { log = "ready" }
"#,
    );
    up.wait_for("herd: app ready", LONG);
    up.signal(libc::SIGQUIT);
    up.wait_for("SIGQUIT: state dump", LONG);
    up.wait_for("  app: ready (run 1", LONG);
    up.signal(libc::SIGUSR1);
    up.wait_for("SIGUSR1: forwarded to app", LONG);
    up.wait_file("usr1", LONG);
    // A broken file is reported and changes nothing.
    let good = std::fs::read_to_string(up.path("herd.toml")).unwrap();
    std::fs::write(up.path("herd.toml"), "[services.app]\ncommand = 5\n").unwrap();
    up.signal(libc::SIGHUP);
    up.wait_for("is not valid; nothing changes", LONG);
    std::fs::write(
        up.path("herd.toml"),
        good + "\n[services.extra]\nkind = \"oneshot\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    // A valid one is applied (tests/reload.rs covers what it does in detail).
    up.signal(libc::SIGHUP);
    up.wait_for("herd: SIGHUP: reloading (added: extra)", LONG);
    up.wait_for("herd: extra exited (exit code 0)", LONG);
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn herd_down_waits_for_the_shutdown_and_prints_the_report() {
    let mut up = Up::start(
        r#"
[services.a]
command = ["{helper}", "{dir}", "slow-exit", "200"]
ready = { log = "ready" }
"#,
    );
    up.wait_for("herd: a ready", LONG);
    // Another `herd up` with the same state directory is refused.
    let second = herd(up.dir.path(), &["up"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is already running"),
        "{second:?}"
    );
    let out = herd(up.dir.path(), &["down", "--wait"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Asked over the socket, by this test's `herd down` (its uid); the report
    // came with the stream's last event.
    let by = format!(
        "shutdown: shutdown asked on the control socket by uid {} (pid ",
        rustix::process::getuid().as_raw()
    );
    assert!(text.contains(&by), "{text}");
    assert!(text.contains("stopped"), "{text}");
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    // Nothing runs now.
    let out = herd(up.dir.path(), &["down"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no herder is running"));

    // With its socket gone, herder is still found through the state file and
    // sent SIGTERM.
    up.relaunch(&[]);
    up.wait_for("herd: a ready", LONG);
    std::fs::remove_file(up.path(".herd/herd.sock")).unwrap();
    let out = herd(up.dir.path(), &["down", "--wait"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text.contains("shutdown: SIGTERM"), "{text}");
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// herd is SIGKILLed with adversarial services running; the next `herd up` in the
/// same directory finds and stops every process the first one left, then starts.
fn recovers_after_herder_was_killed(containment: &str) {
    let toml = r#"
[services.tree]
command = ["{helper}", "{dir}", "tree", "20"]
ready = { log = "ready" }
stop = { timeout = "1s" }

[services.escape]
command = ["{helper}", "{dir}", "escape"]
ready = { log = "ready" }
stop = { timeout = "1s" }

[services.plain]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }
"#;
    let args = ["--containment", containment];
    let mut up = Up::with(
        toml,
        Opts {
            args: &args,
            ..Opts::default()
        },
    );
    for s in ["tree", "escape", "plain"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    up.signal(libc::SIGKILL);
    up.wait_exit(LONG);
    let left = up.survivors();
    assert!(
        left.len() >= 22,
        "the killed herd left its services: {left:?}"
    );

    up.relaunch(&args);
    up.wait_for("ended without stopping its services", LONG);
    up.wait_for("all gone after", LONG);
    assert!(
        wait_gone(&left, LONG),
        "the previous run's processes are gone"
    );
    for s in ["tree", "escape", "plain"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let now = up.survivors();
    assert!(now.iter().all(|p| !left.contains(p)), "{now:?} vs {left:?}");
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
    assert_eq!(up.survivors(), Vec::<i32>::new());
    assert!(
        !up.path(".herd/state.json").exists(),
        "a clean exit removes the state file"
    );
}

#[test]
fn recovery_cgroup2() {
    recovers_after_herder_was_killed("cgroup2");
}

#[test]
fn recovery_freezer() {
    recovers_after_herder_was_killed("freezer");
}

#[test]
fn recovery_none() {
    recovers_after_herder_was_killed("none");
}

/// herd is SIGKILLed half-way through a shutdown, with one service stopped and
/// one still ignoring SIGTERM. The state file, written only at a shutdown's end,
/// still lists both: the next `herd up` finds the stopped one gone (no error), stops
/// the other and starts.
fn recovers_after_herder_was_killed_while_stopping(containment: &str) {
    let toml = r#"
[services.plain]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }

[services.stubborn]
command = ["{helper}", "{dir}", "ignore-term"]
ready = { log = "ready" }
stop = { timeout = "3s" }
"#;
    let args = ["--containment", containment];
    let mut up = Up::with(
        toml,
        Opts {
            args: &args,
            ..Opts::default()
        },
    );
    for s in ["plain", "stubborn"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    up.signal(libc::SIGTERM);
    // Well inside stubborn's 3 s: herder is still waiting for it.
    up.wait_for("herd: plain stopped", LONG);
    up.signal(libc::SIGKILL);
    up.wait_exit(LONG);
    let left = up.survivors();
    assert_eq!(left.len(), 1, "only stubborn is left: {left:?}");

    up.relaunch(&args);
    up.wait_for("ended without stopping its services", LONG);
    let gone = up.wait_for("all gone after", LONG);
    assert!(wait_gone(&left, LONG), "stubborn's process is gone");
    for s in ["plain", "stubborn"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let said = up.seen.join("\n");
    let recovery = &said[..said.find(&gone).expect("seen")];
    assert!(!recovery.contains("cannot"), "{said}");
    up.signal(libc::SIGTERM);
    up.wait_for("herd: stubborn stopping", LONG);
    up.signal(libc::SIGTERM); // a second one kills at once
    up.wait_exit(LONG);
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn recovery_mid_shutdown_cgroup2() {
    recovers_after_herder_was_killed_while_stopping("cgroup2");
}

#[test]
fn recovery_mid_shutdown_none() {
    recovers_after_herder_was_killed_while_stopping("none");
}

/// herd is SIGKILLed and its state file lost: the next `herd up` still finds the
/// earlier run's processes in its cgroups at start-up, kills them and says so;
/// none is left, as seen from /proc.
fn cgroups_left_without_a_state_file_are_emptied(containment: &str) {
    let toml = r#"
[services.tree]
command = ["{helper}", "{dir}", "tree", "20"]
ready = { log = "ready" }
stop = { timeout = "1s" }
"#;
    let args = ["--containment", containment];
    let mut up = Up::with(
        toml,
        Opts {
            args: &args,
            ..Opts::default()
        },
    );
    up.wait_for("herd: tree ready", LONG);
    up.signal(libc::SIGKILL);
    up.wait_exit(LONG);
    let left = up.survivors();
    assert_eq!(left.len(), 20, "the killed herd left its service: {left:?}");
    std::fs::remove_file(up.path(".herd/state.json")).unwrap();

    up.relaunch(&args);
    let line = up.wait_for("left by an earlier run", LONG);
    assert!(line.contains("killed 20 process(es)"), "{line}");
    assert!(
        wait_gone(&left, LONG),
        "the earlier run's processes are gone"
    );
    up.wait_for("herd: tree ready", LONG);
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn stale_cgroups_cgroup2() {
    cgroups_left_without_a_state_file_are_emptied("cgroup2");
}

#[test]
fn stale_cgroups_freezer() {
    cgroups_left_without_a_state_file_are_emptied("freezer");
}

/// What herder writes holds the services' output and run ids: the logs, the state
/// file and the report are 0600 in 0700 directories, or 0640 in 0750 directories
/// owned by `supervisor.socket_group`. Regression test: they were 0644 in 0755.
#[test]
fn what_herder_writes_is_private() {
    for group in [None, Some("nogroup")] {
        let supervisor = group.map_or(String::new(), |g| {
            format!("[supervisor]\nsocket_group = \"{g}\"\n")
        });
        let mut up = Up::start(&format!(
            r#"{supervisor}
[services.talk]
command = ["sh", "-c", "echo hello; exec {{helper}} {{dir}} term-exit"]
ready = {{ log = "^ready$" }}
"#
        ));
        up.wait_for("herd: talk ready", LONG);
        let root = up.dir.path().to_path_buf();
        let mode = |p: &str| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
            (m.mode() & 0o777, m.gid())
        };
        let gid = group.map_or(0, |_| 65534);
        let (dir, file) = if group.is_some() {
            (0o750, 0o640)
        } else {
            (0o700, 0o600)
        };
        for (p, want) in [
            (".herd", dir),
            (".herd/logs", dir),
            (".herd/logs/talk.log", file),
            (".herd/state.json", file),
        ] {
            assert_eq!(mode(p), (want, gid), "{p}, socket_group {group:?}");
        }
        up.signal(libc::SIGTERM);
        assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
        assert_eq!(mode(".herd/shutdown-report.json"), (file, gid));
    }
}
