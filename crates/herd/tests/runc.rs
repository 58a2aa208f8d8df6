//! Issue 25: herder as PID 1 under a real OCI runtime, runc (Debian's), from a
//! bundle whose root holds the host's /usr read-only and herder and the test
//! helper bound in. In it, `main` is an app that drains on SIGTERM, beside a
//! service that ignores SIGTERM and one whose double-forked escapee does too.
//! `runc kill CONTAINER TERM`, then: the app's graceful exit, SIGKILL at the
//! stop timeout, herder's exit code 3 (something needed SIGKILL) as the
//! container's, nothing left on the host (/proc scanned for the test's marker)
//! and no cgroup left behind. Twice: as root with a writable cgroup mount, and
//! as uid 1000 with a read-only root and a read-only cgroup mount, where the
//! state goes to /tmp (a tmpfs, as a pod's emptyDir) and herder says so.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

#[derive(Clone, Copy)]
struct Variant {
    /// The container's user: 0, or 1000 with a read-only root and cgroups.
    uid: u32,
}

fn runc_available() -> bool {
    Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `runc spec`'s config, made into this test's container.
fn config(bundle: &Path, v: Variant, marker: &str, cgroups_path: &str) -> Value {
    let out = Command::new("runc")
        .args(["spec", "--bundle"])
        .arg(bundle)
        .output()
        .expect("runc spec");
    assert!(out.status.success(), "runc spec: {out:?}");
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let read_only = v.uid != 0;
    c["process"]["terminal"] = json!(false);
    c["process"]["user"] = json!({ "uid": v.uid, "gid": v.uid });
    c["process"]["args"] = json!(["/herd/herd", "up", "-f", "/app/herd.toml"]);
    c["process"]["env"] = json!([
        "PATH=/usr/local/bin:/usr/bin:/bin",
        format!("HERD_TEST_MARKER={marker}"),
    ]);
    c["root"]["readonly"] = json!(read_only);
    c["linux"]["cgroupsPath"] = json!(cgroups_path);
    let mut mounts: Vec<Value> = c["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["destination"] != "/sys/fs/cgroup")
        .cloned()
        .collect();
    let ro = |read_only: bool| if read_only { "ro" } else { "rw" };
    mounts.push(json!({
        "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
        "options": ["nosuid", "noexec", "nodev", "relatime", ro(read_only)],
    }));
    let bind = |src: &str, dst: &str, read_only: bool| {
        json!({
            "destination": dst, "type": "bind", "source": src,
            "options": ["rbind", ro(read_only)],
        })
    };
    mounts.push(bind("/usr", "/usr", true));
    mounts.push(bind(env!("CARGO_BIN_EXE_herd"), "/herd/herd", true));
    mounts.push(bind(common::helper(), "/herd/herd-test-helper", true));
    mounts.push(bind(
        bundle.parent().unwrap().join("app").to_str().unwrap(),
        "/app",
        read_only,
    ));
    // The container user's own, as a pod's emptyDir with its fsGroup (runc
    // 1.1 drops a tmpfs's `mode=`).
    mounts.push(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=16m", format!("uid={}", v.uid), format!("gid={}", v.uid)],
    }));
    c["mounts"] = json!(mounts);
    c
}

fn bundle(root: &Path, v: Variant, marker: &str, cgroups_path: &str) -> std::path::PathBuf {
    let bundle = root.join("bundle");
    let rootfs = bundle.join("rootfs");
    for d in ["usr", "proc", "dev", "sys", "tmp", "app", "herd"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for f in ["herd/herd", "herd/herd-test-helper"] {
        std::fs::write(rootfs.join(f), "").unwrap();
    }
    for (link, to) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(to, rootfs.join(link)).unwrap();
    }
    let app = root.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("herd.toml"),
        format!(
            r#"
main = "app"

[services.app]
shell = true
command = "trap 'echo draining; sleep 0.2; echo drained; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
ready = {{ log = "ready" }}

[services.stubborn]
command = ["/herd/herd-test-helper", "{marker}", "ignore-term"]
ready = {{ log = "ready" }}
stop = {{ timeout = "1s" }}

[services.esc]
command = ["/herd/herd-test-helper", "{marker}", "escape"]
ready = {{ log = "ready" }}
stop = {{ timeout = "1s" }}
"#
        ),
    )
    .unwrap();
    let c = config(&bundle, v, marker, cgroups_path);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&c).unwrap(),
    )
    .unwrap();
    bundle
}

/// The cgroup directories `path` names in every mounted hierarchy.
fn cgroup_dirs(path: &str) -> Vec<std::path::PathBuf> {
    let rel = path.trim_start_matches('/');
    let mut out = Vec::new();
    if let Some(m) = herd_contain::mounts::cgroup2() {
        out.push(m.point.join(rel));
    }
    for c in [
        "freezer",
        "memory",
        "pids",
        "cpu",
        "cpuacct",
        "devices",
        "blkio",
        "cpuset",
        "name=systemd",
    ] {
        if let Some(m) = herd_contain::mounts::v1(c) {
            out.push(m.point.join(rel));
        }
    }
    out
}

fn in_runc(v: Variant, test: &str) {
    if !common::can_run(test, common::is_root() && runc_available(), "root and runc") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("herdrunc{}x{}", std::process::id(), v.uid);
    let id = format!("herd-test-{}-{}", std::process::id(), v.uid);
    // One level, which runc removes with the container: nothing is left.
    let cgroups_path = format!("/{id}");
    let bundle = bundle(tmp.path(), v, &marker, &cgroups_path);
    // World-readable, so uid 1000 can reach /app's herd.toml.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runc run");
    // Whatever happens next, the container goes (runc kill, then delete).
    struct Container(String);
    impl Drop for Container {
        fn drop(&mut self) {
            let _ = Command::new("runc")
                .args(["kill", &self.0, "KILL"])
                .output();
            let _ = Command::new("runc")
                .args(["delete", "--force", &self.0])
                .output();
        }
    }
    let _container = Container(id.clone());
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = child.stderr.take().unwrap();
    let out = child.stdout.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx2.send(l);
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let wait_for = |needle: &str, seen: &mut Vec<String>| -> String {
        if let Some(l) = seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => {
                    seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; saw:\n{}", seen.join("\n")),
            }
        }
    };
    // runc mounts the v1 hierarchies on a hybrid host: the freezer as root,
    // nothing writable as uid 1000 with the mount read-only.
    let backend = wait_for("herd: containment: ", &mut seen);
    let expected = if v.uid == 0 { "freezer" } else { "none" };
    assert!(
        backend.contains(&format!("containment: {expected}")),
        "{backend}"
    );
    wait_for("herd: app ready", &mut seen);
    wait_for("herd: stubborn ready", &mut seen);
    wait_for("herd: esc ready", &mut seen);
    if v.uid != 0 {
        let said = wait_for("herd: state directory: /tmp/herd-1000/", &mut seen);
        assert!(said.contains("Read-only file system"), "{said}");
        let said = wait_for("herd: freezer not used: ", &mut seen);
        assert!(said.contains("read-only"), "{said}");
    }
    // herder, the app and its sleeps carry the marker in their environment;
    // stubborn, esc and its escapee in their command lines too.
    let running = common::marked(&marker);
    assert!(running.len() >= 4, "herder and the services: {running:?}");
    let kill = Command::new("runc")
        .args(["kill", &id, "TERM"])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    let status = {
        let deadline = std::time::Instant::now() + LONG;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the container did not end"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        seen.push(l);
    }
    let all = seen.join("\n");
    assert_eq!(
        status.code(),
        Some(3),
        "herder's exit code 3 (SIGKILL needed):\n{all}"
    );
    assert!(all.contains("app | drained"), "the app drained:\n{all}");
    assert!(
        all.contains("stubborn: stop timeout reached: SIGKILL"),
        "{all}"
    );
    assert!(
        common::wait_gone(&running, LONG),
        "survivors on the host: {running:?}"
    );
    assert_eq!(common::marked(&marker), Vec::<i32>::new());
    let delete = Command::new("runc").args(["delete", &id]).output().unwrap();
    let _ = delete;
    for d in cgroup_dirs(&cgroups_path) {
        assert!(!d.exists(), "{} left", d.display());
    }
}

#[test]
fn herder_as_pid1_in_runc_as_root() {
    in_runc(Variant { uid: 0 }, "herder_as_pid1_in_runc_as_root");
}

#[test]
fn herder_as_pid1_in_runc_as_uid_1000_with_a_read_only_root() {
    in_runc(
        Variant { uid: 1000 },
        "herder_as_pid1_in_runc_as_uid_1000_with_a_read_only_root",
    );
}
