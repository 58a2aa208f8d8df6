//! herder as PID 1 of its own pid namespace (`unshare --pid --fork --mount-proc`), as
//! a container entrypoint: orphans reaped, exit codes. The test signals herd by its
//! pid as seen from outside the namespace, and looks for zombies in /proc.

mod common;

use std::time::{Duration, Instant};

use common::{Opts, Up, can_run, wait_gone};

const LONG: Duration = Duration::from_secs(30);
const UNSHARE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc"];

/// A service that exits on SIGTERM and one that leaves orphans, on cgroup2.
const ON_CGROUP2: &str = r#"
[supervisor]
containment = "cgroup2"

[services.plain]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }

[services.forks]
command = ["{helper}", "{dir}", "orphans", "3", "100000"]
ready = { log = "ready" }
"#;

fn pid1(toml: &str) -> Up {
    Up::with(
        toml,
        Opts {
            args: &["--init"],
            wrap: UNSHARE,
            ..Opts::default()
        },
    )
}

/// (pid, ppid, sid, state) of every process, from this test's /proc.
fn procs() -> Vec<(i32, i32, i32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let state = f[0].chars().next().unwrap_or('?');
        out.push((pid, f[1].parse().unwrap(), f[3].parse().unwrap(), state));
    }
    out
}

#[test]
fn as_pid1_orphans_are_reaped_and_sigterm_exits_0() {
    let mut up = pid1(
        r#"
[services.orphans]
command = ["{helper}", "{dir}", "orphans", "5", "300"]
ready = { log = "ready" }

[services.plain]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }
"#,
    );
    up.wait_for("running as PID 1", LONG);
    let herd = up.herd_pid(LONG);
    up.wait_for("herd: orphans ready", LONG);
    // The grandchildren: re-parented to herd, not session leaders (the service's
    // main process is).
    let marked = up.survivors();
    let orphans: Vec<i32> = procs()
        .into_iter()
        .filter(|&(pid, ppid, sid, _)| ppid == herd && sid != pid && marked.contains(&pid))
        .map(|p| p.0)
        .collect();
    assert_eq!(orphans.len(), 5, "{:?}", procs());
    assert!(wait_gone(&orphans, LONG), "the orphans exit after 300ms");
    // Exited orphans are zombies until herd reaps them: none may stay. Nothing
    // signals another process's reaping, so this looks again until a deadline.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let zombies: Vec<_> = procs()
            .into_iter()
            .filter(|&(_, ppid, _, st)| ppid == herd && st == 'Z')
            .collect();
        if zombies.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "zombies left: {zombies:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGTERM from outside the namespace, as a container runtime sends it.
    common::kill(herd, libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// An orphan no service started (here entered from outside, as `docker exec`
/// does; its shell exits at once) is re-parented to herder, in no service's
/// cgroup: herder names it and SIGKILLs it before it exits, rather than leave it
/// to the kernel's kill of the namespace, which no report shows.
#[test]
fn as_pid1_orphans_from_outside_every_service_are_named_and_killed() {
    let mut up = pid1(
        r#"
[services.plain]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }
"#,
    );
    let herd = up.herd_pid(LONG);
    up.wait_for("herd: plain ready", LONG);
    let enter = format!("{} {} escape &", common::helper(), up.dir.path().display());
    let mut nsenter = std::process::Command::new("nsenter")
        .args(["-t", &herd.to_string(), "-p", "--", "sh", "-c", &enter])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The helper says "ready" once its intermediate child has exited, leaving the
    // grandchild to herder; the shell's exit (nsenter's) leaves the helper too.
    let out = nsenter.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
        let _ = tx.send(line);
    });
    assert_eq!(rx.recv_timeout(LONG).unwrap(), "ready\n");
    assert!(nsenter.wait().unwrap().success());
    let marked = up.survivors();
    let in_services = up.cgroups.procs();
    let orphans: Vec<i32> = procs()
        .into_iter()
        .filter(|&(pid, ppid, _, _)| ppid == herd && marked.contains(&pid))
        .map(|p| p.0)
        .filter(|pid| !in_services.contains(pid))
        .collect();
    assert_eq!(
        orphans.len(),
        2,
        "the helper and its grandchild: {:?}",
        procs()
    );
    common::kill(herd, libc::SIGTERM);
    up.wait_exit(LONG);
    assert!(
        up.seen
            .iter()
            .any(|l| l.contains("killing 2 orphan(s) re-parented to herder")),
        "{}",
        up.seen.join("\n")
    );
    assert!(wait_gone(&orphans, LONG));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn as_pid1_a_service_stuck_on_sigterm_gives_exit_code_3() {
    let mut up = pid1(
        r#"
[services.stubborn]
command = ["{helper}", "{dir}", "ignore-term"]
ready = { log = "ready" }
stop = { timeout = "300ms" }
"#,
    );
    let herd = up.herd_pid(LONG);
    up.wait_for("herd: stubborn ready", LONG);
    common::kill(herd, libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(3), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

#[test]
fn as_pid1_the_main_service_exit_code_is_herders() {
    let mut up = pid1(
        r#"
main = "job"

[services.db]
command = ["{helper}", "{dir}", "slow-exit", "100"]
ready = { log = "ready" }

[services.job]
shell = true
command = "sleep 0.2; exit 5"
requires = ["db"]
"#,
    );
    up.wait_for("main service job ended (exit code 5)", LONG);
    assert_eq!(up.wait_exit(LONG), Some(5), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}

/// As a container's entrypoint: pid, mount and cgroup namespaces, cgroup2 mounted
/// afresh, so the test's cgroup is the container's and the root herder sees. herder
/// makes `herd/INSTANCE/` there; at exit it removes the services' cgroups and
/// leaves `herd/INSTANCE/supervisor/` (empty) and what is above it to the runtime,
/// which removes the container's cgroup with everything below it (this test's
/// cleanup does, as runc would).
#[test]
fn as_a_containers_pid1_its_own_cgroups_are_left_to_the_runtime() {
    let mount = herd_contain::mounts::cgroup2();
    let test = "as_a_containers_pid1_its_own_cgroups_are_left_to_the_runtime";
    if !can_run(test, mount.is_some(), "a cgroup2 mount") {
        return;
    }
    let mount = mount.expect("checked above");
    let remount = format!(
        "umount {m} && mount -t cgroup2 cgroup2 {m} && exec \"$@\"",
        m = mount.point.display()
    );
    let wrap = [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--cgroup",
        "--",
        "sh",
        "-c",
        &remount,
        "sh",
    ];
    let mut up = Up::with(
        ON_CGROUP2,
        Opts {
            wrap: &wrap,
            ..Opts::default()
        },
    );
    let container = up.cgroups.v2.clone().expect("root runs this test");
    up.wait_for("herd: plain ready", LONG);
    up.wait_for("herd: forks ready", LONG);
    let instance = std::fs::read_dir(container.join("herd"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("services").is_dir())
        .expect("herd/INSTANCE/services");
    assert!(instance.join("services/plain").is_dir());
    let herd = up.herd_pid(LONG);
    common::kill(herd, libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    assert_eq!(up.cgroups.procs(), Vec::<i32>::new());
    assert!(!instance.join("services").exists());
    assert!(instance.join("supervisor").is_dir());
}

/// In a pid namespace alone and in the cgroup2 hierarchy's real root, as
/// bench/harness.py's `pid1 pidns` runs it: the no-internal-processes rule
/// exempts the root, so herder stays there (no `supervisor/`, and no cgroup
/// migration to wait for at its start or its exit), runs its services in
/// `herd/INSTANCE/services/` and removes the instance's directory at exit.
#[test]
fn in_the_cgroup2_root_herder_stays_there_and_removes_its_instance() {
    let test = "in_the_cgroup2_root_herder_stays_there_and_removes_its_instance";
    let mount = herd_contain::mounts::cgroup2()
        .filter(|m| m.root == "/" && !m.point.join("cgroup.type").exists());
    if !can_run(
        test,
        common::is_root() && mount.is_some(),
        "root and the cgroup2 root",
    ) {
        return;
    }
    /// Removes what a failed run leaves of the instance (never `herd/`
    /// itself with another herder's instance in it). Made before `up`, so
    /// dropped after it: once its processes are killed, the cgroups can go.
    struct Instance(Option<std::path::PathBuf>);
    impl Drop for Instance {
        fn drop(&mut self) {
            if let Some(dir) = &self.0 {
                let _ = herd_contain::remove_tree(dir);
                let _ = dir.parent().map(std::fs::remove_dir);
            }
        }
    }
    let mut cleanup = Instance(None);
    let mut up = Up::with(
        ON_CGROUP2,
        Opts {
            wrap: UNSHARE,
            v2_root: true,
            ..Opts::default()
        },
    );
    let said = up.wait_for("herd: containment: cgroup2 under ", LONG);
    let instance = said
        .strip_prefix("herd: containment: cgroup2 under ")
        .and_then(|l| l.split(';').next())
        .map(std::path::PathBuf::from)
        .expect("said where");
    cleanup.0 = Some(instance.clone());
    up.wait_for("herd: plain ready", LONG);
    up.wait_for("herd: forks ready", LONG);
    let herd = up.herd_pid(LONG);
    let own = std::fs::read_to_string(format!("/proc/{herd}/cgroup")).unwrap();
    assert!(own.lines().any(|l| l == "0::/"), "{own}");
    assert_eq!(instance.parent().map(|p| p.ends_with("herd")), Some(true));
    assert!(instance.join("services/plain").is_dir());
    assert!(!instance.join("supervisor").exists());
    common::kill(herd, libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
    assert!(!instance.exists(), "{} is left", instance.display());
}
