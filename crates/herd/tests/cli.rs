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
