//! The generated parts of the CLI: completions and the man page.

mod common;

use common::{herd, repo};

#[test]
fn completions_are_valid_shell() {
    let dir = tempfile::tempdir().unwrap();
    let out = herd(dir.path(), &["completions", "bash"]);
    assert!(out.status.success());
    let script = dir.path().join("herd.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in ["up", "ps", "stop", "signal", "report", "completions"] {
        assert!(text.contains(cmd), "{cmd} missing");
    }
    let bad = herd(dir.path(), &["completions", "nosuchshell"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn the_committed_man_page_is_what_the_cli_generates() {
    let dir = tempfile::tempdir().unwrap();
    let out = herd(dir.path(), &["man"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(repo().join("docs/herd.1")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        committed,
        "docs/herd.1 is stale: run `cargo run -q -- man > docs/herd.1`"
    );
}

/// `cargo install --path crates/herd` installs `herd` alone: the herd package has
/// that one binary (the test helper is an example, which cargo never installs).
#[test]
fn the_package_installs_herd_alone() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let herd = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "herd")
        .unwrap();
    let bins: Vec<&str> = herd["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(bins, ["herd"]);
}
