//! The control socket end to end: `herd ps`, `start`, `stop`, `restart` against a
//! running herder, `--json` parsed back, and access control with a second uid.
//! Processes are checked in /proc, not only through herder's answers.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use common::{Up, herd, wait_gone};

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

fn ps(up: &Up) -> serde_json::Value {
    let out = herd(up.dir.path(), &["ps", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn service<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn pids(s: &serde_json::Value) -> Vec<i32> {
    s["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap() as i32)
        .collect()
}

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
    let out = herd(up.dir.path(), &["start", "api"]);
    assert!(out.status.success(), "{out:?}");
    let now = ps(&up);
    assert_eq!(service(&now, "db")["runs"], 3);
    assert_eq!(service(&now, "api")["runs"], 3);
    assert_eq!(service(&now, "other")["runs"], 1);

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
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) < 0
                || libc::setgid(65534) < 0
                || libc::setuid(65534) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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
        ["--socket", s, "stop", "db"],
        ["--socket", s, "ps", "--json"],
    ] {
        let out = herd_as_nobody(&up, &args);
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
