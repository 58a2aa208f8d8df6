//! `examples/embed`, the standalone program that embeds herd-contain, built as
//! its users build it (a cargo project of its own) and run on every backend
//! with a double-forking tree that ignores SIGTERM: nothing may be left, in
//! /proc or in the cgroup tree, and the stop must end within its deadline plus
//! 50 ms. Each run starts in the test's own cgroups, so the example's subtree
//! is made below them.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{TestCgroups, can_run, is_root, marked, repo};

/// Builds examples/embed once per test binary, into the workspace's target
/// directory so that the dependencies it shares with herder are not built
/// again.
fn example() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // target/debug/deps/<test> -> target
        let exe = std::env::current_exe().unwrap();
        let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args([
                "build",
                "-q",
                "--manifest-path",
                "examples/embed/Cargo.toml",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(repo())
            .status()
            .expect("run cargo");
        assert!(built.success(), "cannot build examples/embed");
        target.join("debug/herd-embed-example")
    })
}

/// Ends and removes the test's cgroups however the test ends.
struct Cleanup(TestCgroups);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.clean();
    }
}

const TIMEOUT: Duration = Duration::from_millis(500);
const SLACK: Duration = Duration::from_millis(50);

fn stop_a_tree(backend: &str) {
    let test = format!("embed_{backend}");
    let cgroups = Cleanup(TestCgroups::create(None));
    let has = match backend {
        "cgroup2" => cgroups.0.v2.is_some(),
        "freezer" => cgroups.0.freezer.is_some(),
        _ => true,
    };
    if !can_run(&test, is_root() && has, &format!("root and {backend}")) {
        return;
    }
    let marker = format!("embed-{}-{backend}", std::process::id());
    // Two daemons (one in a session of its own) and the main process, all
    // ignoring SIGTERM; the example starts its clock once all three are there.
    let script = "trap '' TERM
        (sh -c \"trap '' TERM; exec sleep 600\" &)
        (setsid sh -c \"trap '' TERM; exec sleep 601\" &)
        exec sleep 602";
    let mut cmd = Command::new(example());
    cmd.args(["--backend", backend, "--for", "100ms", "--timeout", "500ms"])
        .args(["--processes", "3", "--", "sh", "-c", script])
        .env("HERD_TEST_MARKER", &marker);
    let _joined = common::join_on_exec(&mut cmd, &cgroups.0);
    let out = cmd.output().expect("run the example");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{text}\n{err}", out.status);
    assert!(
        text.contains(&format!("backend: {backend}")),
        "{text}\n{err}"
    );
    assert!(text.contains("SIGTERM sent to 3 process(es)"), "{text}");
    assert!(text.contains("SIGKILL after"), "{text}");

    // Nothing of the tree is left, by /proc.
    let left = marked(&marker);
    assert!(left.is_empty(), "still running: {left:?}\n{text}");
    // Nor in the cgroup tree: the example's subtree went with its close.
    for dir in cgroups.0.dirs() {
        let below: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect();
        assert!(below.is_empty(), "left in the cgroup tree: {below:?}");
    }
    let gone = text
        .lines()
        .find_map(|l| l.strip_prefix("all gone after "))
        .and_then(|l| l.strip_suffix(" ms"))
        .and_then(|ms| ms.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .unwrap_or_else(|| panic!("no stop time in:\n{text}"));
    assert!(
        gone <= TIMEOUT + SLACK,
        "the stop took {gone:?}, past its deadline of {TIMEOUT:?} + {SLACK:?}\n{text}"
    );
}

#[test]
fn embed_cgroup2() {
    stop_a_tree("cgroup2");
}

#[test]
fn embed_freezer() {
    stop_a_tree("freezer");
}

#[test]
fn embed_none() {
    stop_a_tree("none");
}
