//! The control socket end to end: `herd ps`, `start`, `stop`, `restart` against a
//! running herder, `--json` parsed back, and access control with a second uid.
//! Processes are checked in /proc, not only through herder's answers.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{Up, herd, http_get as get, pids, ps, service, wait_gone};

const LONG: Duration = Duration::from_secs(30);

const STACK: &str = r#"
[services.db]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }

[services.api]
command = ["{helper}", "{dir}", "tree", "5"]
requires = ["db"]
ready = { log = "ready" }
stop = { timeout = "300ms" }

[services.other]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }
"#;

#[test]
fn ps_stop_start_restart_through_the_socket() {
    let mut up = Up::start(STACK);
    for s in ["db", "api", "other"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let before = ps(&up);
    assert_eq!(service(&before, "api")["state"], "ready");
    let api = pids(service(&before, "api"));
    let db = pids(service(&before, "db"));
    assert_eq!(api.len(), 5, "{before}");
    let table = herd(up.dir.path(), &["ps"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("SERVICE"));
    // From a subdirectory, as git finds its repository: the same herder.
    let sub = up.path("src/deeper");
    std::fs::create_dir_all(&sub).unwrap();
    let from_sub = herd(&sub, &["ps"]);
    assert!(from_sub.status.success(), "{from_sub:?}");
    // Name, state and pid (the uptime may have ticked).
    let rows = |out: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(out)
            .lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(rows(&from_sub.stdout), rows(&table.stdout));
    // Names filter, in the list's order; one that is no service is an error.
    let some = herd(up.dir.path(), &["ps", "other", "db"]);
    let some = String::from_utf8_lossy(&some.stdout).to_string();
    let rows: Vec<&str> = some
        .lines()
        .skip(1)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(rows, ["db", "other"], "{some}");
    let json = herd(up.dir.path(), &["ps", "--json", "api"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["name"], "api");
    let nope = herd(up.dir.path(), &["ps", "nope"]);
    assert_eq!(nope.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&nope.stderr),
        "herd: no service named nope\n"
    );

    // Stopping db stops api (which requires it) first; the answer comes once
    // every process is gone, which /proc confirms at once.
    let out = herd(up.dir.path(), &["stop", "db"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "db stopped\n");
    assert!(wait_gone(&api, Duration::ZERO) && wait_gone(&db, Duration::ZERO));
    let now = ps(&up);
    assert_eq!(service(&now, "api")["state"], "stopped");
    assert_eq!(
        service(&now, "other")["pid"],
        service(&before, "other")["pid"]
    );
    up.wait_for("herd: api: SIGTERM at", LONG);

    // Starting api brings db back first.
    let out = herd(up.dir.path(), &["start", "api"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("api is ready"));
    let now = ps(&up);
    assert_eq!(service(&now, "db")["state"], "ready");
    assert_eq!(service(&now, "db")["runs"], 2);

    // A restart of db: api and db new, other untouched.
    let old_api = pids(service(&now, "api"));
    let out = herd(up.dir.path(), &["restart", "db"]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait_gone(&old_api, Duration::ZERO));
    // It answers once what it restarted, the dependent api included, is back.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("db is ready (pid ") && said.ends_with("; back too: api\n"),
        "{said}"
    );
    assert_eq!(service(&ps(&up), "api")["state"], "ready");
    let out = herd(up.dir.path(), &["start", "api"]);
    assert!(out.status.success(), "{out:?}");
    let now = ps(&up);
    assert_eq!(service(&now, "db")["runs"], 3);
    assert_eq!(service(&now, "api")["runs"], 3);
    assert_eq!(service(&now, "other")["runs"], 1);

    // api's tree ignores SIGTERM: its stop says SIGKILL was needed, and when.
    let out = herd(up.dir.path(), &["stop", "api"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.starts_with("api stopped (SIGKILL at +3") && said.ends_with("ms)\n"),
        "{said}"
    );
    assert!(herd(up.dir.path(), &["start", "api"]).status.success());

    // Clear errors, exit code 1.
    let out = herd(up.dir.path(), &["stop", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "herd: no service named nope\n"
    );

    up.signal(libc::SIGTERM);
    // api's tree ignores SIGTERM: 3.
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    assert!(
        !up.path(".herd/herd.sock").exists(),
        "socket removed at exit"
    );
    let out = herd(up.dir.path(), &["ps"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no herder is running at"));
}

/// `ps` lists a service's processes as they are now, under every backend: after
/// one look, a process forked later is in the next (cgroup v2 keeps cgroup.procs
/// open and reads it again from the start).
#[test]
fn ps_sees_processes_forked_since_the_last_look() {
    for backend in ["cgroup2", "freezer", "none"] {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("go");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let mut up = Up::start(&format!(
            r#"
[supervisor]
containment = "{backend}"

[services.grow]
shell = true
command = "echo ready; read x < {fifo}; sleep 1000 & touch forked; wait"
ready = {{ log = "ready" }}
stop = {{ timeout = "300ms" }}
"#,
            fifo = fifo.display()
        ));
        up.wait_for("herd: grow ready", LONG);
        let one = pids(service(&ps(&up), "grow"));
        assert_eq!(one.len(), 1, "{backend}: {one:?}");
        std::fs::write(&fifo, "go\n").unwrap();
        up.wait_file_exists("forked", LONG);
        let two = pids(service(&ps(&up), "grow"));
        assert_eq!(two.len(), 2, "{backend}: {two:?}");
        assert!(two.contains(&one[0]), "{backend}: {one:?} {two:?}");
        up.signal(libc::SIGTERM);
        assert_eq!(up.wait_exit(LONG), Some(0), "{backend}");
        assert!(wait_gone(&two, Duration::ZERO), "{backend}");
    }
}

/// A list longer than one read of cgroup.procs (1,200 pids, ~6 KiB) is whole.
#[test]
fn ps_lists_every_process_of_a_big_tree() {
    let mut up = Up::start(
        r#"
[supervisor]
containment = "cgroup2"

[services.big]
command = ["{helper}", "{dir}", "tree", "1200"]
ready = { log = "ready" }
stop = { timeout = "300ms" }
"#,
    );
    up.wait_for("herd: big ready", LONG);
    let all = pids(service(&ps(&up), "big"));
    assert_eq!(all.len(), 1200);
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
    assert!(wait_gone(&all, Duration::ZERO));
}

/// Runs the herd binary as uid/gid 65534 (nobody), from a copy it can reach.
fn herd_as_nobody(up: &Up, args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let copy = up.path("herd-copy");
    if !copy.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_herd"), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(up.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::new(&copy);
    cmd.args(args).current_dir("/");
    // As root, std drops the supplementary groups along with uid and gid.
    cmd.uid(65534).gid(65534);
    cmd.output().unwrap()
}

#[test]
fn another_uid_is_refused_and_changes_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let mut up = Up::start(STACK);
    for s in ["db", "api", "other"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let sock = up.path(".herd/herd.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is private");
    std::fs::set_permissions(up.path(".herd"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = sock.to_str().unwrap();
    // The file mode keeps nobody out...
    let out = herd_as_nobody(&up, &["--socket", s, "stop", "db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );
    // ...and with the file opened up, SO_PEERCRED still does.
    let before = ps(&up);
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    for args in [
        &["--socket", s, "stop", "db"][..],
        &["--socket", s, "ps", "--json"],
        &["--socket", s, "reload"],
        &["--socket", s, "events"],
        &["--socket", s, "logs", "-n", "1", "db"],
        &["--socket", s, "down", "--wait"],
    ] {
        let out = herd_as_nobody(&up, args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("uid 65534") && out.stdout.is_empty(),
            "{out:?}"
        );
    }
    up.wait_for("control socket: refused uid 65534", LONG);
    let after = ps(&up);
    for name in ["db", "api", "other"] {
        assert_eq!(service(&after, name)["pid"], service(&before, name)["pid"]);
        assert_eq!(service(&after, name)["state"], "ready");
    }
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn signal_reaches_the_service_and_a_bad_one_is_refused() {
    let mut up = Up::start(
        r#"
[services.app]
shell = true
command = "trap 'echo usr1 >> {dir}/usr1' USR1; echo ready; while :; do sleep 0.05; done"
ready = { log = "ready" }
"#,
    );
    up.wait_for("herd: app ready", LONG);
    let out = herd(up.dir.path(), &["signal", "app", "USR1"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SIGUSR1 sent to 1 process(es) of app\n"
    );
    up.wait_file("usr1", LONG);
    for (args, want) in [
        (["signal", "app", "SIGFOO"], "unknown signal"),
        (["signal", "nope", "HUP"], "no service named nope"),
        (["signal", "app", "bad sig"], "cannot ask for"),
    ] {
        let out = herd(up.dir.path(), &args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{out:?}"
        );
    }
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// Sends raw bytes on the socket; what comes back before the server closes or
/// `wait` passes.
fn raw(sock: &std::path::Path, bytes: &[u8], wait: Duration) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    // The server may answer and close before a large body is all written.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn bad_input_on_the_socket_leaves_herder_and_services_running() {
    let mut up = Up::start(STACK);
    for s in ["db", "api", "other"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let before = ps(&up);
    let sock = up.path(".herd/herd.sock");
    let short = Duration::from_secs(5);

    let garbage = raw(&sock, b"\x00\xff\xfegarbage\r\n\r\n", short);
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    // A truncated request is held until the header timeout; meanwhile others are
    // served.
    let truncated = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    {
        use std::io::Write;
        (&truncated).write_all(b"GET /v1/serv").unwrap();
    }
    let unknown = raw(
        &sock,
        b"GET /v1/services/nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        short,
    );
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown:?}");
    assert!(unknown.contains("no service named nope"));
    let route = raw(
        &sock,
        b"DELETE /v1/everything HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        short,
    );
    assert!(route.starts_with("HTTP/1.1 404"), "{route:?}");
    // A known path with the wrong method: 405 and what it takes.
    let method = raw(
        &sock,
        b"GET /v1/reload HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        short,
    );
    assert!(method.starts_with("HTTP/1.1 405"), "{method:?}");
    assert!(
        method.to_ascii_lowercase().contains("\r\nallow: post\r\n"),
        "{method:?}"
    );
    let timeout = raw(&sock, b"POST /v1/services/db/stop?timeout=forever HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n", short);
    assert!(timeout.starts_with("HTTP/1.1 400"), "{timeout:?}");
    let mut big = format!(
        "POST /v1/services/db/stop HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        10 << 20
    )
    .into_bytes();
    big.resize(big.len() + (10 << 20), b'x');
    let answer = raw(&sock, &big, short);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");

    // 500 connections at once, each asking for the list.
    let threads: Vec<_> = (0..500)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                raw(
                    &sock,
                    b"GET /v1/services HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
                    LONG,
                )
            })
        })
        .collect();
    let ok = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .filter(|a| a.starts_with("HTTP/1.1 200"))
        .count();
    assert_eq!(ok, 500);
    drop(truncated);

    // Nothing changed: same services, same processes; herder still answers.
    let after = ps(&up);
    for name in ["db", "api", "other"] {
        assert_eq!(service(&after, name)["state"], "ready");
        assert_eq!(service(&after, name)["pid"], service(&before, name)["pid"]);
    }
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn health_readiness_and_metrics_over_tcp() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let args = ["--http", addr.as_str()];
    let mut up = Up::with(
        r#"
main = "api"

[services.db]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }

[services.api]
command = ["{helper}", "{dir}", "term-exit"]
requires = ["db"]
ready = { delay = "1500ms" }

[services.stubborn]
command = ["{helper}", "{dir}", "ignore-term"]
ready = { log = "ready" }
stop = { timeout = "200ms" }
"#,
        common::Opts {
            args: &args,
            ..common::Opts::default()
        },
    );
    up.wait_for("health and metrics: http://", LONG);
    up.wait_for("herd: api starting", LONG);
    assert_eq!(get(&addr, "/healthz"), (200, "ok\n".into()));
    // api (main) waits out its 1.5s readiness delay: not ready yet.
    let (code, body) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("api is starting"), "{body}");
    up.wait_for("herd: api ready", LONG);
    assert_eq!(get(&addr, "/readyz"), (200, "ready\n".into()));
    // Only the three probes are served over TCP.
    assert_eq!(get(&addr, "/v1/services").0, 404);

    // A stop that needs SIGKILL shows in the metrics.
    up.wait_for("herd: stubborn ready", LONG);
    let out = herd(up.dir.path(), &["stop", "stubborn"]);
    assert!(out.status.success(), "{out:?}");
    let (code, body) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{body}"));
        match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("{name}: unexpected type"),
        }
    };
    assert_eq!(
        value(
            "herd_service_state",
            &[("service", "api"), ("state", "ready")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "herd_service_state",
            &[("service", "api"), ("state", "stopped")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "herd_service_state",
            &[("service", "stubborn"), ("state", "stopped")]
        ),
        1.0
    );
    assert_eq!(
        value("herd_service_kills_total", &[("service", "stubborn")]),
        1.0
    );
    assert_eq!(
        value("herd_service_stops_total", &[("service", "stubborn")]),
        1.0
    );
    let took = value("herd_service_last_stop_seconds", &[("service", "stubborn")]);
    assert!((0.15..2.0).contains(&took), "{took}");
    assert_eq!(value("herd_service_processes", &[("service", "db")]), 1.0);
    assert_eq!(
        value("herd_service_starts_total", &[("service", "db")]),
        1.0
    );
    assert_eq!(value("herd_shutting_down", &[]), 0.0);

    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn a_socket_in_use_is_not_taken_over() {
    let mut up = Up::start(STACK);
    up.wait_for("herd: db ready", LONG);
    // A second herd with its own state directory but the same socket path.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("herd.toml"),
        "[services.x]\ncommand = [\"sleep\", \"100\"]\n",
    )
    .unwrap();
    let sock = up.path(".herd/herd.sock");
    let out = herd(other.path(), &["--socket", sock.to_str().unwrap(), "up"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("another process is listening on it"),
        "{out:?}"
    );
    // Refused before choosing a backend: no cgroup was made to be left behind.
    assert!(!said.contains("containment:"), "{out:?}");
    // The first herd still answers on it.
    assert_eq!(service(&ps(&up), "db")["state"], "ready");
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// A child `herd` whose stdout lines arrive on a channel.
struct Streaming {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Streaming {
    fn start(dir: &std::path::Path, args: &[&str]) -> Streaming {
        Streaming::reading(dir, args, usize::MAX)
    }

    /// Reads `limit` lines, then closes its end of the pipe: the channel
    /// disconnects once it has.
    fn reading(dir: &std::path::Path, args: &[&str], limit: usize) -> Streaming {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().take(limit) {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Streaming { child, lines }
    }

    /// The next line, within `LONG`.
    #[track_caller]
    fn next(&self) -> String {
        self.lines.recv_timeout(LONG).expect("a line in time")
    }

    /// Every line until one satisfies `done`, that one included.
    #[track_caller]
    fn until(&self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut got = Vec::new();
        loop {
            let l = self.next();
            let end = done(&l);
            got.push(l);
            if end {
                return got;
            }
        }
    }

    /// Its exit code, within `LONG`.
    #[track_caller]
    fn exit(mut self) -> Option<i32> {
        assert!(
            wait_gone(&[self.child.id() as i32], LONG),
            "herd did not exit"
        );
        self.child.wait().unwrap().code()
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn logs_events_down_and_doctor_through_the_socket() {
    let mut up = Up::start(
        r#"
[services.talk]
shell = true
command = "trap 'echo got usr1' USR1; echo one; echo two; echo ready; while :; do sleep 0.05; done"
ready = { log = "ready" }

[services.other]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }
"#,
    );
    up.wait_for("herd: talk ready", LONG);
    up.wait_for("herd: other ready", LONG);
    let d = &up.dir.path().to_path_buf();

    // The tail, and the whole current file without -n.
    let out = herd(d, &["logs", "-n", "2", "talk"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two\nready\n");
    let out = herd(d, &["logs", "talk"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\nready\n");
    // Every service, interleaved by the time each line was read; --json parsed
    // back, with that time.
    let out = herd(d, &["logs", "-n", "1", "--json"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut services: Vec<&str> = lines
        .iter()
        .map(|l| l["service"].as_str().unwrap())
        .collect();
    services.sort();
    assert_eq!(services, ["other", "talk"]);
    assert!(lines.iter().all(|l| l["line"] == "ready"));
    let times: Vec<&str> = lines.iter().map(|l| l["time"].as_str().unwrap()).collect();
    assert!(times[0] <= times[1] && times[0].ends_with('Z'), "{times:?}");
    let out = herd(d, &["logs", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named nope"));

    // Following: the last line, then what the service writes afterwards.
    // It reads two lines and then closes its pipe (see the end of the test).
    let follow = Streaming::reading(d, &["logs", "-f", "-n", "1", "talk"], 2);
    assert_eq!(follow.next(), "ready");
    let events = Streaming::start(d, &["events", "--json"]);
    assert!(herd(d, &["signal", "talk", "USR1"]).status.success());
    assert_eq!(follow.next(), "got usr1");

    // Events: a restart of other, as JSON lines. herd events may connect after
    // the first restart; restarts go on until it has seen one whole.
    let mut seen = Vec::new();
    for _ in 0..20 {
        assert!(herd(d, &["restart", "other"]).status.success());
        match events.lines.recv_timeout(Duration::from_secs(1)) {
            Ok(l) => {
                seen.push(l);
                break;
            }
            Err(_) => continue,
        }
    }
    assert!(!seen.is_empty(), "herd events printed nothing");
    seen.extend(events.until(|l| l.contains(r#""to":"ready""#)));
    let parsed: Vec<serde_json::Value> = seen
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = parsed.last().unwrap();
    assert_eq!(last["event"], "state");
    assert_eq!(last["service"], "other");
    assert_eq!(last["from"], "starting");
    assert!(last["pid"].as_i64().unwrap() > 0);
    assert!(last["at_ms"].as_u64().unwrap() > 0);

    // doctor --json names the backend up would use.
    let out = herd(d, &["doctor", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(doc["chosen"].is_string(), "{doc}");
    assert_eq!(doc["backends"].as_array().unwrap().len(), 3);

    // A reader that goes away ends `herd logs -f` quietly: once the reader has
    // closed its pipe (after its two lines), the next line the service writes meets
    // the closed pipe, and the command exits 0.
    assert_eq!(
        follow.lines.recv_timeout(LONG),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
        "the reader closed its pipe"
    );
    assert!(herd(d, &["signal", "talk", "USR1"]).status.success());
    assert_eq!(follow.exit(), Some(0), "herd logs -f ended with its reader");

    // herd down --wait over the socket: the report, herder's exit code; the event
    // stream ends with `finished` and herd events exits 0.
    let out = herd(d, &["down", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let by = format!(
        "shutdown asked on the control socket by uid {} (pid ",
        rustix::process::getuid().as_raw()
    );
    assert!(text.contains(&format!("shutdown: {by}")), "{text}");
    let tail = events.until(|l| l.contains(r#""event":"finished""#));
    let fin: serde_json::Value = serde_json::from_str(tail.last().unwrap()).unwrap();
    assert_eq!(fin["exit_code"], 0);
    let trigger = fin["report"]["trigger"].as_str().unwrap();
    assert!(
        trigger.starts_with(&by) && trigger.ends_with(')'),
        "{trigger}"
    );
    assert_eq!(events.exit(), Some(0));
    assert_eq!(up.wait_exit(LONG), Some(0));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// herder's resident memory, from /proc.
fn rss_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The `runs` of `name` reaches `at_least` within `limit`.
fn runs_reach(up: &Up, name: &str, at_least: u64, limit: Duration) -> u64 {
    let end = std::time::Instant::now() + limit;
    loop {
        let runs = service(&ps(up), name)["runs"].as_u64().unwrap();
        if runs >= at_least {
            return runs;
        }
        assert!(
            std::time::Instant::now() < end,
            "{name} stuck at {runs} runs\n{}",
            up.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression test: with `ulimit -n 1024`, 2,000 silent connections to the control
/// socket made `herd ps` take 9 s and a restarting service end `failed` for good
/// (`Too many open files`). Connections over `supervisor.max_connections` are
/// answered 503 at once; `herd ps` still answers, the crash-looping service goes on
/// restarting through the flood and after it, and the memory the flood took is
/// given back.
#[test]
fn a_descriptor_flood_never_takes_a_service_down() {
    use std::os::unix::net::UnixStream;
    let mut up = Up::with(
        r#"
[services.crashy]
command = ["sh", "-c", "sleep 0.05; exit 1"]
restart = { policy = "always", backoff = "50ms..100ms", limit = "100000/1m" }
"#,
        common::Opts {
            nofile: Some(1024),
            ..common::Opts::default()
        },
    );
    up.wait_for("herd: crashy exited 1; restart in", LONG);
    let herd = up.pid();
    let before_rss = rss_kb(herd);
    // This test holds 2,000 descriptors of its own.
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        },
    )
    .unwrap();
    let sock = up.path(".herd/herd.sock");
    let before = service(&ps(&up), "crashy")["runs"].as_u64().unwrap();
    let flood: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let asked = std::time::Instant::now();
    let during = runs_reach(&up, "crashy", before + 5, LONG);
    let took = asked.elapsed();
    up.wait_for("closing silent ones to make room", LONG);
    // `herd ps` answered at once, through the flood (the first ps above).
    assert!(took < Duration::from_secs(10), "ps took {took:?}");
    assert!(
        !up.seen
            .iter()
            .any(|l| l.contains("Too many open files") && l.contains("failed")),
        "{}",
        up.seen.join("\n")
    );
    drop(flood);
    runs_reach(&up, "crashy", during + 5, LONG);
    // Memory back within twice what it was, within 10 s of the flood's end.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rss = rss_kb(herd);
        if rss <= 2 * before_rss {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "RSS {rss} kB, was {before_rss} kB before the flood"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
}

/// At `supervisor.max_connections`, with every connection busy (event streams),
/// one more is answered 503 at once, and said; once one ends, requests are served
/// again.
#[test]
fn over_the_connection_cap_a_request_is_answered_503() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    let mut up = Up::start(
        r#"
[supervisor]
max_connections = 3

[services.one]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "^ready$" }
"#,
    );
    up.wait_for("herd: one ready", LONG);
    let sock = up.path(".herd/herd.sock");
    let mut streams: Vec<UnixStream> = (0..3)
        .map(|_| {
            let mut s = UnixStream::connect(&sock).unwrap();
            s.write_all(b"GET /v1/events HTTP/1.1\r\nhost: herd\r\n\r\n")
                .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    let out = herd(up.dir.path(), &["ps"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "herd: herder is serving 3 connections, the most it serves at once (supervisor.max_connections); try again\n"
    );
    up.wait_for("answering 503 to more", LONG);
    streams.pop();
    // The ended stream's slot is free once herder has seen it close.
    let end = std::time::Instant::now() + LONG;
    while !herd(up.dir.path(), &["ps"]).status.success() {
        assert!(std::time::Instant::now() < end, "never served again");
        std::thread::sleep(Duration::from_millis(20));
    }
    up.wait_for("below the cap again", LONG);
    drop(streams);
    up.signal(libc::SIGTERM);
    up.wait_exit(LONG);
}

/// `herd logs` with no herder running reads the log files; lines of several
/// services come out in the order they were read, whatever the service; `-t`
/// shows when.
#[test]
fn logs_without_herder_interleave_by_time() {
    // a says a1, then b says b1 (it starts once a is ready), then a says a2 once
    // b has: the order a1, b1, a2 is the order they were written in.
    let mut up = Up::start(
        r#"
[services.a]
command = ["sh", "-c", "echo a1; while [ ! -e {dir}/b-said ]; do sleep 0.01; done; echo a2; exec sleep 1000"]
ready = { log = "^a1$" }

[services.b]
command = ["sh", "-c", "echo b1; touch {dir}/b-said; exec sleep 1000"]
requires = ["a"]
ready = { log = "^b1$" }
"#,
    );
    up.wait_for("herd: b ready", LONG);
    let end = std::time::Instant::now() + LONG;
    while !std::fs::read_to_string(up.path(".herd/logs/a.log"))
        .unwrap_or_default()
        .contains(" a2\n")
    {
        assert!(std::time::Instant::now() < end, "a never said a2");
        std::thread::sleep(Duration::from_millis(10));
    }
    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0));
    let d = up.dir.path();
    let out = herd(d, &["logs"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "a | a1\nb | b1\na | a2\n"
    );
    let out = herd(d, &["logs", "-t", "-n", "1", "b"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    // `2026-11-30T21:48:44.123Z b1`
    assert_eq!(said.len(), 24 + 4, "{said}");
    assert!(
        said[..24].ends_with('Z') && said[10..11] == *"T" && said.ends_with(" b1\n"),
        "{said}"
    );
    let out = herd(d, &["logs", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no log of nope"),
        "{out:?}"
    );
}
