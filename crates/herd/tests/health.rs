//! Health while running (issue 24), with real clients: python3-systemd's
//! `systemd.daemon.notify` feeding the watchdog, `systemd-notify --status`, an
//! HTTP service whose health endpoint fails or hangs, an `exec` check that
//! hangs; `/readyz` over the TCP listener meanwhile. Survivors are found by
//! scanning /proc for the test's marker.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, Up, free_port, herd, http_get as get, ps, service};

const LONG: Duration = Duration::from_secs(30);

/// Nanoseconds since the epoch, as `date +%s%N` and the services write them.
fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The time (ns) a service wrote first in `file`.
fn stamp(up: &Up, file: &str) -> u128 {
    std::fs::read_to_string(up.path(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{file}: no time"))
}

#[track_caller]
fn shut_down(up: &mut Up) {
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
    assert_eq!(up.survivors(), Vec::<i32>::new(), "processes survived");
}

/// Polls `herd ps --json` until `test` holds for service `name`; its entry then.
#[track_caller]
fn wait_ps(
    up: &Up,
    name: &str,
    what: &str,
    test: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + LONG;
    loop {
        let list = ps(up);
        let s = service(&list, name);
        if test(s) {
            return s.clone();
        }
        assert!(Instant::now() < deadline, "{name} never {what}: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A daemon written as systemd expects: python3-systemd's `notify` (Debian's,
/// so Debian's python3 runs it), pinging
/// `WATCHDOG=1` four times a period until `{dir}/stop` exists, `STATUS=` as
/// it goes. Its environment and pid are written for the test to check.
const WATCHED: &str = r#"
import os, sys, time
from systemd import daemon
d = sys.argv[1]
run = len([f for f in os.listdir(d) if f.startswith("run.")]) + 1
with open(f"{d}/run.{run}", "w") as f:
    f.write(f"{time.time_ns()} {os.getpid()} {os.environ.get('WATCHDOG_PID')} {os.environ.get('WATCHDOG_USEC')}\n")
daemon.notify("READY=1")
period = int(os.environ["WATCHDOG_USEC"]) / 1e6
while not os.path.exists(f"{d}/stop"):
    daemon.notify("WATCHDOG=1\nSTATUS=run %d feeding the watchdog" % run)
    time.sleep(period / 4)
with open(f"{d}/stopped.{run}", "w") as f:
    f.write(f"{time.time_ns()}\n")
daemon.notify("STATUS=run %d hung" % run)
time.sleep(1000)
"#;

#[test]
fn a_python_daemon_that_stops_feeding_its_watchdog_is_restarted() {
    let mut up = Up::start(
        &(r#"
[services.daemon]
command = ["/usr/bin/python3", "-c", '''"#
            .to_string()
            + WATCHED
            + r#"''', "{dir}"]
ready = { notify = true, timeout = "10s" }
watchdog = "1s"
stop = { timeout = "2s" }
restart = { policy = "on-failure", backoff = "100ms..100ms" }
limits = { core = 0 }
"#),
    );
    up.wait_for("herd: daemon ready", LONG);
    let first = std::fs::read_to_string(up.path("run.1")).unwrap();
    let f: Vec<&str> = first.split_whitespace().collect();
    assert_eq!(f[2], f[1], "WATCHDOG_PID is the daemon's own pid: {first}");
    assert_eq!(f[3], "1000000", "WATCHDOG_USEC: {first}");
    // Fed, it stays up well past its period, and says so.
    let s = wait_ps(&up, "daemon", "said its status", |s| {
        s["status_text"] == "run 1 feeding the watchdog"
    });
    assert!(
        s["health"].as_str().unwrap().starts_with("watchdog "),
        "{s}"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let s = service(&ps(&up), "daemon").clone();
    assert_eq!(
        (s["runs"].as_u64(), s["state"].as_str()),
        (Some(1), Some("ready")),
        "{s}"
    );

    // It stops feeding: SIGABRT (watchdog_signal's default), and a restart.
    std::fs::write(up.path("stop"), "").unwrap();
    up.wait_for(
        "daemon: watchdog: no WATCHDOG=1 within 1s; sending SIGABRT",
        LONG,
    );
    up.wait_for("daemon stopping (reason: watchdog)", LONG);
    up.wait_file("run.2", LONG);
    let (stopped, restarted) = (stamp(&up, "stopped.1"), stamp(&up, "run.2"));
    // Its watchdog period, then its stop (at most stop.timeout), then the 100ms
    // backoff; the rest is the machine's slack.
    let took = Duration::from_nanos((restarted - stopped) as u64);
    assert!(
        took < Duration::from_millis(1000 + 2000 + 100 + 2000),
        "{took:?}"
    );
    let s = wait_ps(&up, "daemon", "ran again", |s| {
        s["runs"] == 2 && s["state"] == "ready"
    });
    assert_eq!(s["last_exit"], "killed by signal 6", "{s}");
    // The old run's STATUS= went with it.
    assert_ne!(s["status_text"], "run 1 hung", "{s}");
    shut_down(&mut up);
}

#[test]
fn watchdog_trigger_and_a_new_period_from_the_service() {
    let mut up = Up::start(
        r#"
[services.svc]
shell = true
command = "systemd-notify WATCHDOG_USEC=60000000; while [ ! -e {dir}/trigger ]; do sleep 0.05; done; systemd-notify WATCHDOG=trigger; exec sleep 1000"
watchdog = "500ms"
watchdog_signal = "SIGTERM"
restart = { policy = "never" }
"#,
    );
    up.wait_for("herd: svc started", LONG);
    up.wait_for("svc: watchdog period now 1m", LONG);
    // A minute now: the first 500ms period passes without a restart.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(service(&ps(&up), "svc")["state"], "ready");
    std::fs::write(up.path("trigger"), "").unwrap();
    up.wait_for("svc: watchdog: WATCHDOG=trigger; sending SIGTERM", LONG);
    // No restart under `never`: the watchdog's stop is a failure.
    let s = wait_ps(&up, "svc", "failed", |s| s["state"] == "failed");
    assert_eq!(s["detail"], "watchdog deadline missed", "{s}");
    shut_down(&mut up);
}

#[test]
fn systemd_notify_status_is_shown_by_herd_ps() {
    let mut up = Up::start(
        r#"
[services.app]
shell = true
command = "systemd-notify --ready --status='warming caches: 3 of 8'; exec sleep 1000"
ready = { notify = true, timeout = "10s" }
"#,
    );
    up.wait_for("herd: app ready", LONG);
    let s = wait_ps(&up, "app", "said its status", |s| {
        !s["status_text"].is_null()
    });
    assert_eq!(s["status_text"], "warming caches: 3 of 8");
    let table = herd(up.dir.path(), &["ps"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("warming caches: 3 of 8"), "{text}");
    shut_down(&mut up);
}

/// An HTTP service whose `/health` answers 200, or 500 while `{dir}/sick`
/// exists, or never while `{dir}/hang` exists.
const WEB: &str = r#"
import http.server, os, sys, time
d, port = sys.argv[1], int(sys.argv[2])
with open(f"{d}/web.{time.time_ns()}", "w") as f:
    f.write("started\n")
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists(f"{d}/hang"):
            time.sleep(1000)
        code = 500 if os.path.exists(f"{d}/sick") else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn web_stack(port: u16) -> String {
    let command = format!(r#"command = ["python3", "-c", '''{WEB}''', "{{dir}}", "{port}"]"#);
    format!(
        r#"
[services.web]
{command}
ready = {{ http = "http://127.0.0.1:{port}/health", interval = "50ms", timeout = "10s" }}
health = {{ http = "http://127.0.0.1:{port}/health", interval = "300ms", timeout = "500ms", failures = 3 }}
stop = {{ timeout = "2s" }}
restart = {{ backoff = "100ms..100ms", limit = "100/1m" }}
"#
    )
}

/// The web service's runs so far (each writes a `web.<ns>` file).
fn web_runs(up: &Up) -> usize {
    std::fs::read_dir(up.dir.path())
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().starts_with("web.")
        })
        .count()
}

/// Polls `/readyz` until its answer satisfies `test`.
#[track_caller]
fn wait_readyz(addr: &str, what: &str, test: impl Fn(u16, &str) -> bool) -> String {
    let deadline = Instant::now() + LONG;
    loop {
        let (code, body) = get(addr, "/readyz");
        if test(code, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz never {what}: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failing_health_restarts(mode: &str, why: &str) {
    let (port, listen) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{listen}");
    let args = ["--http", addr.as_str()];
    let mut up = Up::with(
        &web_stack(port),
        Opts {
            args: &args,
            ..Opts::default()
        },
    );
    up.wait_for("herd: web ready", LONG);
    let s = wait_ps(&up, "web", "healthy", |s| s["health"] == "healthy");
    assert_eq!(s["runs"], 1);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".into()));

    let broke = now_ns();
    std::fs::write(up.path(mode), "").unwrap();
    up.wait_for(&format!("web: health check failed ({why}"), LONG);
    // Unhealthy before it is stopped: /readyz says so.
    let body = wait_readyz(&addr, "said unhealthy", |code, body| {
        code == 503 && body.contains("web is unhealthy")
    });
    assert!(body.starts_with("not ready: web is unhealthy "), "{body}");
    up.wait_for("web: unhealthy: stopping it", LONG);
    up.wait_for("web stopping (reason: unhealthy)", LONG);
    let deadline = Instant::now() + LONG;
    while web_runs(&up) < 2 {
        assert!(Instant::now() < deadline, "web was not restarted");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Three failures 300ms apart (each up to its 500ms timeout), its stop (up to
    // 2s), the 100ms backoff; the rest is the machine's slack.
    let took = Duration::from_nanos((now_ns() - broke) as u64);
    assert!(
        took < Duration::from_millis(3 * 800 + 2000 + 100 + 2000),
        "{took:?}"
    );

    // Well again: healthy, and ready over TCP.
    std::fs::remove_file(up.path(mode)).unwrap();
    let s = wait_ps(&up, "web", "healthy again", |s| {
        s["health"] == "healthy" && s["state"] == "ready"
    });
    assert!(s["runs"].as_u64().unwrap() >= 2, "{s}");
    wait_readyz(&addr, "ready again", |code, _| code == 200);
    let (_, metrics) = get(&addr, "/metrics");
    assert!(
        metrics.contains("herd_service_healthy{service=\"web\"} 1"),
        "{metrics}"
    );
    shut_down(&mut up);
}

#[test]
fn a_health_endpoint_answering_500_gets_the_service_restarted() {
    failing_health_restarts("sick", "http://127.0.0.1");
}

#[test]
fn a_health_endpoint_that_hangs_past_its_timeout_gets_the_service_restarted() {
    failing_health_restarts("hang", "no answer within 500ms");
}

#[test]
fn an_exec_check_that_hangs_is_killed_at_its_timeout_and_counts_as_failed() {
    let mut up = Up::start(
        r#"
[services.app]
command = ["{helper}", "{dir}", "term-exit"]
health = { exec = ["sh", "-c", "[ ! -e {dir}/sick ] || exec sleep 1000"], interval = "200ms", timeout = "300ms", failures = 2 }
restart = { policy = "never" }
stop = { timeout = "2s" }
"#,
    );
    up.wait_for("herd: app started", LONG);
    wait_ps(&up, "app", "healthy", |s| s["health"] == "healthy");
    std::fs::write(up.path("sick"), "").unwrap();
    up.wait_for(
        "app: health check failed (no answer within 300ms); 1/2 in a row",
        LONG,
    );
    up.wait_for(
        "app: health check failed (no answer within 300ms); 2/2 in a row",
        LONG,
    );
    let s = wait_ps(&up, "app", "failed", |s| s["state"] == "failed");
    assert_eq!(s["detail"], "health check failed", "{s}");
    // The hung checks were killed with their process group, not left behind.
    assert_eq!(up.survivors(), Vec::<i32>::new());
    shut_down(&mut up);
}

#[test]
fn failures_in_the_start_period_do_not_count() {
    let mut up = Up::start(
        r#"
[services.app]
command = ["{helper}", "{dir}", "term-exit"]
health = { exec = ["test", "-e", "{dir}/well"], interval = "100ms", failures = 1, start_period = "1s" }
"#,
    );
    up.wait_for("herd: app started", LONG);
    up.wait_for(
        "app: health check failed (the check exited 1); in its start period",
        LONG,
    );
    std::fs::write(up.path("well"), "").unwrap();
    wait_ps(&up, "app", "healthy", |s| s["health"] == "healthy");
    // Passed once, the start period is over: the next failure counts.
    std::fs::remove_file(up.path("well")).unwrap();
    up.wait_for(
        "app: health check failed (the check exited 1); 1/1 in a row",
        LONG,
    );
    up.wait_for("app stopping (reason: unhealthy)", LONG);
    shut_down(&mut up);
}
