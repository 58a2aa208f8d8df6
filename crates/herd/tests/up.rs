//! `herd up` with real processes. Order and timing are observed from the services'
//! own side (timestamps they write); survivors are found by scanning /proc for the
//! test's marker, never by asking herder.

mod common;

use std::time::{Duration, Instant};

use common::{Up, free_port};

const T: Duration = Duration::from_secs(20);

/// Nanosecond timestamps a script wrote with `date +%s%N`.
fn stamps(up: &Up, file: &str) -> Vec<u128> {
    std::fs::read_to_string(up.path(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

fn stamp(up: &Up, file: &str) -> u128 {
    stamps(up, file)[0]
}

#[track_caller]
fn shut_down(up: &mut Up) -> Option<i32> {
    up.signal(libc::SIGINT);
    let code = up.wait_exit(T);
    assert_eq!(up.survivors(), Vec::<i32>::new(), "processes survived");
    code
}

#[test]
fn dependencies_start_in_order_and_wait_for_readiness() {
    let mut up = Up::start(
        r#"
[services.db]
shell = true
command = "sleep 0.3; date +%s%N > {dir}/db.ready; echo 'db: accepting connections'; exec sleep 1000"
ready = { log = "accepting connections", timeout = "10s" }

[services.migrate]
kind = "oneshot"
shell = true
command = "date +%s%N > {dir}/migrate.start; sleep 0.2; date +%s%N > {dir}/migrate.end"
requires = ["db"]

[services.api]
shell = true
command = "date +%s%N > {dir}/api.start; exec sleep 1000"
requires = ["db", "migrate"]

[services.side]
shell = true
command = "date +%s%N > {dir}/side.start; exec sleep 1000"
"#,
    );
    up.wait_file("api.start", T);
    up.wait_file("side.start", T);
    let (db, m0, m1, api) = (
        stamp(&up, "db.ready"),
        stamp(&up, "migrate.start"),
        stamp(&up, "migrate.end"),
        stamp(&up, "api.start"),
    );
    assert!(m0 >= db, "migrate started before db was ready");
    assert!(api >= m1, "api started before migrate finished");
    // Independent services start at once, not after the chain.
    assert!(stamp(&up, "side.start") < db);
    assert_eq!(shut_down(&mut up), Some(0));
}

#[test]
fn tcp_http_and_delay_readiness() {
    let (p1, p2) = (free_port(), free_port());
    let mut up = Up::start(&format!(
        r#"
[services.tcp]
command = ["python3", "-c", "import socket,time; time.sleep(0.3); s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {p1})); s.listen(); time.sleep(1000)"]
ready = {{ tcp = "127.0.0.1:{p1}", interval = "50ms", timeout = "10s" }}

[services.http]
command = ["python3", "-m", "http.server", "{p2}", "--bind", "127.0.0.1"]
ready = {{ http = "http://127.0.0.1:{p2}/", interval = "50ms", timeout = "10s" }}

[services.slow]
shell = true
command = "date +%s%N > {{dir}}/slow.start; exec sleep 1000"
ready = {{ delay = "400ms" }}

[services.client]
shell = true
command = "python3 -c \"import socket, urllib.request; socket.create_connection(('127.0.0.1', {p1})); urllib.request.urlopen('http://127.0.0.1:{p2}/')\" && date +%s%N > {{dir}}/client.start && exec sleep 1000"
requires = ["tcp", "http", "slow"]
"#
    ));
    up.wait_file("client.start", T);
    // The client's own connections succeeded (else it would not have written this),
    // and it started no earlier than the delay allowed.
    let waited = stamp(&up, "client.start") - stamp(&up, "slow.start");
    assert!(
        waited >= 400_000_000,
        "client started {waited} ns after slow"
    );
    assert_eq!(shut_down(&mut up), Some(0));
}

#[test]
fn readiness_timeout_is_a_start_failure() {
    let mut up = Up::start(
        r#"
[services.mute]
shell = true
command = "exec sleep 1000"
ready = { log = "never printed", timeout = "300ms" }
restart = { policy = "never" }

[services.dependent]
command = ["sleep", "1000"]
requires = ["mute"]
"#,
    );
    up.wait_for("mute: readiness check timed out", T);
    up.wait_for("mute failed: readiness check timed out", T);
    assert_eq!(shut_down(&mut up), Some(5));
    assert!(!up.seen.iter().any(|l| l.contains("dependent starting")));
}

#[test]
fn crash_loop_backs_off_then_hits_the_start_limit() {
    let mut up = Up::start(
        r#"
[services.crash]
shell = true
command = "date +%s%N >> {dir}/starts; exit 1"
restart = { policy = "always", backoff = "100ms..1s", limit = "5/1m" }
"#,
    );
    up.wait_for("crash failed: start limit reached (5 starts within 1m)", T);
    let starts = stamps(&up, "starts");
    assert_eq!(starts.len(), 5, "{starts:?}");
    // Delays double from the floor (100, 200, 400, 800 ms); jitter takes off at
    // most half, and never goes below the floor.
    for (i, w) in starts.windows(2).enumerate() {
        let gap_ms = (w[1] - w[0]) / 1_000_000;
        let full = 100u128 << i;
        assert!(
            gap_ms >= (full / 2).max(100) && gap_ms < full + 500,
            "gap {i} was {gap_ms} ms, expected about {full} ms"
        );
    }
    assert_eq!(shut_down(&mut up), Some(5));
}

#[test]
fn failed_oneshot_blocks_its_dependents_with_a_clear_state() {
    let mut up = Up::start(
        r#"
[services.migrate]
kind = "oneshot"
command = ["sh", "-c", "exit 3"]

[services.api]
shell = true
command = "touch {dir}/api.started; exec sleep 1000"
requires = ["migrate"]
"#,
    );
    up.wait_for("migrate failed: exit code 3", T);
    // A service that ended failed makes herd up's exit code 5, and is named.
    assert_eq!(shut_down(&mut up), Some(5));
    assert!(
        up.seen
            .iter()
            .any(|l| l == "herd: migrate ended failed: exit code 3")
    );
    assert!(
        !up.path("api.started").exists(),
        "api started despite its failed oneshot"
    );
}

#[test]
fn bad_input_fails_the_service_not_herder() {
    let mut up = Up::start(
        r#"
[services.noprog]
command = ["no-such-program-herd"]

[services.nouser]
command = ["true"]
user = "no-such-user-herd"

[services.nodir]
command = ["true"]
workdir = "no/such/dir"

[services.good]
shell = true
command = "echo fine; exec sleep 1000"
ready = { log = "fine" }
"#,
    );
    up.wait_for("good ready", T);
    let mut reasons = Vec::new();
    for name in ["noprog", "nouser", "nodir"] {
        reasons.push(up.wait_for(&format!("{name} failed"), T));
    }
    let dir = up.dir.path().display().to_string();
    let reasons: Vec<String> = reasons
        .into_iter()
        .map(|r| r.replace(&dir, "DIR"))
        .collect();
    assert!(
        reasons.iter().any(
            |r| r.contains("noprog failed: program \"no-such-program-herd\" not found in PATH")
        ),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(
            &"herd: nouser failed: user \"no-such-user-herd\" does not exist".to_string()
        ),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(
            &"herd: nodir failed: working directory ./no/such/dir: No such file or directory"
                .to_string()
        ),
        "{reasons:?}"
    );
    assert_eq!(shut_down(&mut up), Some(5));
}

#[test]
fn a_service_ignoring_sigterm_is_killed_at_its_deadline() {
    let mut up = Up::start(
        r#"
[services.stubborn]
shell = true
command = "trap '' TERM; echo up; while :; do sleep 0.1; done"
ready = { log = "up" }
stop = { timeout = "1s" }
"#,
    );
    up.wait_for("stubborn ready", T);
    let t0 = Instant::now();
    up.signal(libc::SIGTERM);
    up.wait_for("stubborn: stop timeout reached: SIGKILL", T);
    let code = up.wait_exit(T);
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "killed before its stop timeout"
    );
    assert_eq!(code, Some(3), "SIGKILL during shutdown is exit code 3");
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn children_left_by_a_crashed_main_process_are_killed() {
    let mut up = Up::start(
        r#"
[services.leaky]
shell = true
command = "sleep 1000 & echo started; sleep 0.2; exit 1"
restart = { policy = "never" }
"#,
    );
    up.wait_for("leaky: main process gone; killing the rest of it", T);
    up.wait_for("leaky exited", T);
    // Nothing new starts (no restart, the main process is gone): wait on the
    // pidfds of what is left, then look again.
    let left = up.survivors();
    assert!(common::wait_gone(&left, T), "the background child survived");
    assert_eq!(up.survivors(), Vec::<i32>::new());
    assert_eq!(shut_down(&mut up), Some(0));
}

#[test]
fn a_stdout_flood_neither_blocks_the_child_nor_grows_herder() {
    let mut up = Up::start(
        r#"
[logs]
max_size = "8M"
keep = 1

[services.flood]
kind = "oneshot"
shell = true
command = "head -c 120000000 /dev/zero | tr '\\000' 'x' | fold -w 1000; date +%s%N > {dir}/flood.done"
"#,
    );
    up.wait_for("flood exited (exit code 0)", Duration::from_secs(120));
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{}/status", up.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    assert!(
        rss_kb < 64 * 1024,
        "herder's peak RSS was {rss_kb} kB for a 120 MB flood"
    );
    // Logs were rotated, not grown without bound.
    let log = std::fs::metadata(up.path(".herd/logs/flood.log"))
        .unwrap()
        .len();
    assert!(log <= 8 << 20, "log file is {log} bytes");
    assert!(up.path(".herd/logs/flood.log.1").exists());
    assert_eq!(shut_down(&mut up), Some(0));
}

#[test]
fn notify_readiness_with_a_real_sd_notify_client() {
    let mut up = Up::start(
        r#"
[services.daemon]
shell = true
command = "sleep 0.3; date +%s%N > {dir}/daemon.ready; systemd-notify --ready --status='warmed up'; exec sleep 1000"
ready = { notify = true, timeout = "10s" }

[services.dependent]
shell = true
command = "date +%s%N > {dir}/dependent.start; exec sleep 1000"
requires = ["daemon"]
"#,
    );
    up.wait_for("daemon: status: warmed up", T);
    up.wait_for("daemon ready", T);
    up.wait_file("dependent.start", T);
    assert!(stamp(&up, "dependent.start") >= stamp(&up, "daemon.ready"));
    assert_eq!(shut_down(&mut up), Some(0));
}

#[test]
fn one_service_cannot_notify_for_another() {
    let mut up = Up::start(
        r#"
[services.victim]
command = ["sleep", "1000"]
ready = { notify = true, timeout = "1500ms" }
restart = { policy = "never" }

[services.impostor]
shell = true
command = "NOTIFY_SOCKET=@herd-$PPID-victim systemd-notify --ready; exec sleep 1000"
"#,
    );
    up.wait_for("victim: ignored a notification from pid", T);
    up.wait_for("victim failed: readiness check timed out", T);
    assert!(!up.seen.iter().any(|l| l.contains("victim ready")));
    assert_eq!(shut_down(&mut up), Some(5));
}

#[test]
fn exec_readiness_polls_until_the_command_succeeds() {
    let mut up = Up::start(
        r#"
[services.slow]
shell = true
command = "sleep 0.4; date +%s%N > {dir}/flag; exec sleep 1000"
ready = { exec = ["test", "-s", "{dir}/flag"], interval = "50ms", timeout = "10s" }

[services.dependent]
shell = true
command = "date +%s%N > {dir}/dependent.start; exec sleep 1000"
requires = ["slow"]
"#,
    );
    up.wait_file("dependent.start", T);
    assert!(stamp(&up, "dependent.start") >= stamp(&up, "flag"));
    assert_eq!(shut_down(&mut up), Some(0));
}

#[test]
fn mainpid_hands_the_run_to_a_forked_daemon() {
    let mut up = Up::start(
        r#"
[services.daemon]
shell = true
command = "sleep 1000 & echo $! > {dir}/daemon.pid; systemd-notify --ready MAINPID=$!; exit 0"
ready = { notify = true, timeout = "10s" }
restart = { policy = "never" }
"#,
    );
    let line = up.wait_for("daemon: main process is now pid", T);
    up.wait_for("daemon ready", T);
    let pid: i32 = std::fs::read_to_string(up.path("daemon.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(line.ends_with(&format!("pid {pid}")), "{line}");
    // The forking parent's exit 0 did not end the run; the daemon's death does.
    common::kill(pid, libc::SIGKILL);
    // Whether herder or the forking shell (if still there) reaps it is timing;
    // either way herder sees the end, through the daemon's pidfd.
    let end = up.wait_for("daemon exited (", T);
    assert!(
        end.ends_with("(killed by signal 9)")
            || end.ends_with("(ended; reaped by another process, status unknown)"),
        "{end}"
    );
    assert!(
        !up.seen
            .iter()
            .any(|l| l.contains("daemon exited (exit code 0)")),
        "{:?}",
        up.seen
    );
    assert_eq!(shut_down(&mut up), Some(0));
}

/// Regression: an `exec` readiness check still running at shutdown was orphaned.
#[test]
fn shutdown_leaves_no_readiness_check_behind() {
    let mut up = Up::start(
        r#"
[services.never]
command = ["sleep", "1000"]
ready = { exec = ["sh", "-c", "touch {dir}/checking; sleep 1000"], timeout = "60s" }
"#,
    );
    up.wait_file_exists("checking", T);
    assert_eq!(shut_down(&mut up), Some(0));
}

/// Regression: a service that crashed during a shutdown was restarted by its backoff
/// timer while the waves before it were still stopping.
#[test]
fn no_restart_during_shutdown() {
    let mut up = Up::start(
        r#"
[services.front]
shell = true
command = "trap '' TERM; echo up; while :; do sleep 0.1; done"
requires = ["back"]
ready = { log = "up" }
stop = { timeout = "1500ms" }

[services.back]
shell = true
command = "echo up; sleep 0.3; exit 1"
ready = { log = "up" }
restart = { policy = "always", backoff = "50ms..50ms", limit = "1000/1m" }
"#,
    );
    up.wait_for("front ready", T);
    up.signal(libc::SIGINT);
    up.wait_for("shutting down", T);
    assert_eq!(up.wait_exit(T), Some(3), "front needed SIGKILL");
    let after: Vec<&String> = up
        .seen
        .iter()
        .skip_while(|l| !l.contains("shutting down"))
        .collect();
    assert!(
        !after.iter().any(|l| l.contains("back starting")),
        "back was restarted during the shutdown: {after:?}"
    );
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

const LONG: Duration = Duration::from_secs(30);

/// A small tmpfs, unmounted (lazily, whatever still uses it) when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Regression test: a log file that could not be written (a full disk) lost the
/// service's output silently. herder says so once, counts what it drops (in
/// `herd ps --json`), says how much when writing works again, and the service
/// runs on, never blocked.
#[test]
fn a_full_disk_is_said_and_counted_not_silent() {
    use common::{can_run, is_root};
    if !can_run(
        "a_full_disk_is_said_and_counted_not_silent",
        is_root(),
        "root (it mounts a small tmpfs)",
    ) {
        return;
    }
    let fs = Tmpfs::mount("256k");
    let state = fs.0.path().to_str().unwrap().to_string();
    let mut up = Up::start(&format!(
        r#"
[supervisor]
state_dir = "{state}"
socket = "{{dir}}/.herd/herd.sock"

[services.chatty]
command = ["sh", "-c", "echo ready; while :; do echo 0123456789012345678901234567890123456789; sleep 0.01; done"]
ready = {{ log = "^ready$" }}
"#
    ));
    up.wait_for("herd: chatty ready", LONG);
    // Fill what is left of the file system.
    let filler = fs.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 << 10]);
    up.wait_for("chatty: cannot write", LONG);
    let line = up.seen.last().unwrap().clone();
    assert!(line.contains("No space left on device"), "{line}");
    // Said once, however many writes fail.
    let dropped = || {
        common::service(&common::ps(&up), "chatty")["log_dropped_bytes"]
            .as_u64()
            .unwrap()
    };
    let end = std::time::Instant::now() + LONG;
    while dropped() < 1000 {
        assert!(
            std::time::Instant::now() < end,
            "nothing counted as dropped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_file(&filler).unwrap();
    let back = up.wait_for("chatty.log is written again;", LONG);
    assert!(
        back.contains("bytes of output were dropped from it"),
        "{back}"
    );
    assert_eq!(
        up.seen
            .iter()
            .filter(|l| l.contains("cannot write"))
            .count(),
        1,
        "{}",
        up.seen.join("\n")
    );
    assert_eq!(
        common::service(&common::ps(&up), "chatty")["state"],
        "ready"
    );
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
}

/// A detached herder in `dir`: whatever a test leaves of it (the herder, its
/// services, all carrying the test's marker) is stopped when this is dropped.
struct Detached(tempfile::TempDir);

impl Detached {
    fn new(toml: &str) -> Detached {
        let dir = tempfile::tempdir().unwrap();
        let text = toml
            .replace("{dir}", dir.path().to_str().unwrap())
            .replace("{helper}", common::helper());
        std::fs::write(dir.path().join("herd.toml"), text).unwrap();
        Detached(dir)
    }

    fn herd(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(args)
            .current_dir(self.0.path())
            .env("HERD_TEST_MARKER", self.0.path())
            .output()
            .unwrap()
    }

    fn left(&self) -> Vec<i32> {
        common::marked(self.0.path().to_str().unwrap())
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        let _ = self.herd(&["down", "--wait"]);
        for pid in self.left() {
            common::kill(pid, libc::SIGKILL);
        }
    }
}

/// `herd up -d` returns once every service is up, herder running on in the
/// background with its messages in herd.log; a second one says one runs; `herd
/// down` stops it, and nothing is left.
#[test]
fn detached_up_returns_once_everything_is_up() {
    let d = Detached::new(
        r#"
[services.db]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }

[services.migrate]
kind = "oneshot"
command = ["true"]
requires = ["db"]
"#,
    );
    let out = d.herd(&["up", "-d"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        said.contains("runs in the background: 2 service(s) up"),
        "{said}"
    );
    let ps = d.herd(&["ps", "--json"]);
    let ps: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(common::service(&ps, "db")["state"], "ready");
    assert_eq!(common::service(&ps, "migrate")["state"], "exited");
    let log = std::fs::read_to_string(d.0.path().join(".herd/herd.log")).unwrap();
    assert!(log.contains("herd: db ready"), "{log}");
    let again = d.herd(&["up", "-d"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is already running for herd.toml"),
        "{again:?}"
    );
    let down = d.herd(&["down", "--wait"]);
    assert_eq!(down.status.code(), Some(0), "{down:?}");
    assert_eq!(d.left(), Vec::<i32>::new());
}

/// `herd up -d` with a service that cannot start returns 1 at once, naming it
/// and why; herder runs on.
#[test]
fn detached_up_says_which_service_failed() {
    let d = Detached::new(
        r#"
[services.ok]
command = ["{helper}", "{dir}", "term-exit"]

[services.broken]
command = ["/no/such/program-herd-test"]
"#,
    );
    let out = d.herd(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.starts_with("herd: broken failed: "), "{said}");
    assert!(said.contains("runs on (herd down stops it)"), "{said}");
    let down = d.herd(&["down", "--wait"]);
    assert_eq!(down.status.code(), Some(5), "{down:?}");
    assert_eq!(d.left(), Vec::<i32>::new());
}

/// Issue 22: where the descriptor limit cannot hold every service, `herd up`
/// starts none and says how many it can hold. Run as nobody, who cannot raise
/// the hard limit (root may, with CAP_SYS_RESOURCE): 1,000 descriptors, of
/// which herder keeps 384 for itself and its connections, hold 616 services of
/// one descriptor each; 700 are asked for.
#[test]
fn too_many_services_for_the_descriptor_limit_are_refused_before_any_starts() {
    let toml: String = (0..700)
        .map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"1000\"]\n"))
        .collect();
    let mut up = Up::with(
        &toml,
        common::Opts {
            nofile: Some(1000),
            user: common::is_root().then_some(65534),
            args: &["--containment", "none"],
            ..common::Opts::default()
        },
    );
    let said = up.wait_for("descriptors", T);
    assert_eq!(up.wait_exit(T), Some(1));
    assert!(
        said.contains("700 services need 1084 descriptors")
            && said.contains("the limit is 1000")
            && said.contains("it can hold 616 services"),
        "{said}"
    );
    assert!(
        !up.seen.iter().any(|l| l.contains(" starting")),
        "{}",
        up.seen.join("\n")
    );
}

/// Issue 22: a limit that holds every service but not their cgroup files as
/// well has herder open those files when used: 300 services on cgroup2 need 684
/// descriptors, and 1,284 with their files held; with 1,000 they still run,
/// `herd ps` lists their processes, and they stop with nothing left. (Root with
/// CAP_SYS_RESOURCE raises the limit instead, and says so.)
#[test]
fn a_tight_descriptor_limit_keeps_cgroup_files_closed() {
    if !common::can_run(
        "a_tight_descriptor_limit_keeps_cgroup_files_closed",
        common::is_root(),
        "root, for the cgroup2 backend",
    ) {
        return;
    }
    let toml: String = (0..300)
        .map(|i| {
            format!("[services.s{i}]\ncommand = [\"{{helper}}\", \"{{dir}}\", \"term-exit\"]\n")
        })
        .collect();
    let mut up = Up::with(
        &toml,
        common::Opts {
            nofile: Some(1000),
            args: &["--containment", "cgroup2"],
            ..common::Opts::default()
        },
    );
    let said = up.wait_for("descriptors:", T);
    assert!(
        said.contains("the limit of 1000 holds 300 services, not their cgroup files as well")
            || said.contains("raised to 1284"),
        "{said}"
    );
    let deadline = Instant::now() + T;
    loop {
        let list = common::ps(&up);
        let running: Vec<i32> = list
            .as_array()
            .unwrap()
            .iter()
            .flat_map(common::pids)
            .collect();
        if running.len() == 300 {
            let mut mine = up.survivors();
            mine.sort_unstable();
            let mut listed = running;
            listed.sort_unstable();
            assert_eq!(mine, listed);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 300 running",
            running.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(shut_down(&mut up), Some(0));
}

/// Issue 25: with a read-only root file system (here /tmp, where the project
/// is, remounted read-only in a mount namespace of herd's own), `herd up`
/// needs no configuration change: its state goes to `$XDG_RUNTIME_DIR/herd/`,
/// it says so, and the commands find it there; `logs.files = false` makes no
/// log files, and `herd logs` says why it has nothing.
#[test]
fn a_read_only_root_sends_the_state_to_the_runtime_dir() {
    let test = "a_read_only_root_sends_the_state_to_the_runtime_dir";
    if !common::can_run(test, common::is_root(), "root (a mount namespace)") {
        return;
    }
    let runtime = tempfile::Builder::new()
        .prefix("herd-xdg-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let xdg = runtime.path().to_str().unwrap().to_string();
    // `cd` again: the working directory resolved before the remount would still
    // reach the writable mount under it.
    let ro =
        "mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp && cd \"$PWD\" && exec \"$@\"";
    let wrap = ["unshare", "--mount", "--", "sh", "-c", ro, "sh"];
    let env = [("XDG_RUNTIME_DIR", xdg.as_str())];
    let mut up = Up::with(
        r#"
[logs]
files = false

[services.s]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }
"#,
        common::Opts {
            wrap: &wrap,
            env: &env,
            ..common::Opts::default()
        },
    );
    let said = up.wait_for("herd: state directory: ", T);
    assert!(
        said.contains(&format!("herd: state directory: {xdg}/herd/")),
        "{said}"
    );
    assert!(
        said.contains(".herd cannot be created: Read-only file system"),
        "{said}"
    );
    up.wait_for("herd: s ready", T);
    assert!(!up.path(".herd").exists());
    let state = std::fs::read_dir(runtime.path().join("herd"))
        .unwrap()
        .flatten()
        .next()
        .expect("the instance's state directory")
        .path();
    assert!(state.join("herd.sock").exists());
    assert!(
        !state.join("logs").exists(),
        "logs.files = false made log files"
    );
    // The commands find it, with the same environment.
    let herd = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(args)
            .current_dir(up.dir.path())
            .env("XDG_RUNTIME_DIR", &xdg)
            .output()
            .unwrap()
    };
    let ps = herd(&["ps", "--json"]);
    assert!(ps.status.success(), "{ps:?}");
    let list: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(common::service(&list, "s")["state"], "ready");
    let logs = herd(&["logs", "s"]);
    assert!(!logs.status.success());
    assert!(
        String::from_utf8_lossy(&logs.stderr).contains("logs.files = false"),
        "{logs:?}"
    );
    assert_eq!(shut_down(&mut up), Some(0));
}
