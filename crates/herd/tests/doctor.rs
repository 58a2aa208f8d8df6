//! `herd doctor`: which backends this host offers and what each guarantees.

mod common;

use std::process::Command;

use common::{can_run, is_root};

fn doctor(args: &[&str], uid: Option<u32>) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herd"));
    if let Some(uid) = uid {
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        // The checkout may be out of another user's reach: run a copy.
        let copy = tmp.path().join("herd");
        std::fs::copy(env!("CARGO_BIN_EXE_herd"), &copy).unwrap();
        let open = std::fs::Permissions::from_mode(0o755);
        std::fs::set_permissions(tmp.path(), open.clone()).unwrap();
        std::fs::set_permissions(&copy, open).unwrap();
        cmd = Command::new(copy);
        cmd.uid(uid).gid(uid).current_dir(tmp.path());
    }
    cmd.arg("doctor").args(args);
    let out = cmd.output().unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn lists_every_backend_and_its_guarantees() {
    let (code, out) = doctor(&[], None);
    assert_eq!(code, Some(0), "{out}");
    for kind in ["cgroup2", "freezer", "none"] {
        assert!(out.contains(&format!("{kind} guarantees:")), "{out}");
    }
    assert!(out.contains("SIGKILL through cgroup.kill"), "{out}");
    // none is always available.
    assert!(out.contains("  none     available:") || out.contains("* none     available:"));
    let cgroup2 = is_root() && herd_contain::mounts::cgroup2().is_some();
    if can_run(
        "lists_every_backend_and_its_guarantees (cgroup2 part)",
        cgroup2,
        "root and cgroup2",
    ) {
        assert!(
            out.contains("* cgroup2  available: services under"),
            "{out}"
        );
        assert!(out.contains("herd up would use: cgroup2"), "{out}");
    }
}

#[test]
fn a_forced_backend_is_the_one_marked() {
    let (code, out) = doctor(&["--containment", "none"], None);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("* none     available"), "{out}");
    assert!(out.contains("herd up would use: none"), "{out}");
}

#[test]
fn unprivileged_gets_none_and_is_told_why() {
    // The test switches to an unprivileged user, which needs root.
    if !can_run("unprivileged_gets_none_and_is_told_why", is_root(), "root") {
        return;
    }
    let (code, out) = doctor(&[], Some(65534));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("herd up would use: none"), "{out}");
    assert!(out.contains("  cgroup2  unavailable:"), "{out}");
    let (code, out) = doctor(&["--containment", "cgroup2"], Some(65534));
    assert_eq!(code, Some(1), "{out}");
}
