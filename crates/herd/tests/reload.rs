//! `herd reload` and SIGHUP against a running herder: the new file is applied by
//! difference — untouched services keep their processes, changed ones restart
//! (with what requires them), removed ones are stopped until /proc shows none of
//! their processes, added ones start — and a broken file changes nothing.

mod common;

use std::time::Duration;

use common::{Up, herd, pids, ps, service, wait_gone};

const LONG: Duration = Duration::from_secs(30);

/// `keep` is never touched; `base` changes (its environment); `dep` requires
/// `base`; `old` (a tree of 4 processes) is removed; `new` is added.
const V1: &str = r#"
[services.keep]
command = ["{helper}", "{dir}", "term-exit"]
ready = { log = "ready" }

[services.base]
command = ["{helper}", "{dir}", "term-exit"]
env = { VERSION = "1" }
ready = { log = "ready" }

[services.dep]
command = ["{helper}", "{dir}", "term-exit"]
requires = ["base"]
ready = { log = "ready" }

[services.old]
command = ["{helper}", "{dir}", "tree", "4"]
ready = { log = "ready" }
stop = { timeout = "300ms" }
"#;

fn v2(up: &Up) -> String {
    // A comment on top moves every definition down: where a service is defined
    // does not make it changed.
    let text = "# version 2\n".to_string() + V1;
    let text = text.replace("VERSION = \"1\"", "VERSION = \"2\"");
    let (before, _) = text.split_once("[services.old]").unwrap();
    let text = before.to_string()
        + r#"[services.new]
command = ["{helper}", "{dir}", "term-exit"]
requires = ["keep"]
ready = { log = "ready" }
"#;
    text.replace("{dir}", up.dir.path().to_str().unwrap())
        .replace("{helper}", common::helper())
}

fn names(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// A whole HTTP exchange on the control socket, as text.
fn get(up: &Up, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(up.path(".herd/herd.sock")).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: herd\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn reload_applies_the_difference_and_a_broken_file_changes_nothing() {
    let mut up = Up::start(V1);
    for s in ["keep", "base", "dep", "old"] {
        up.wait_for(&format!("herd: {s} ready"), LONG);
    }
    let before = ps(&up);
    let old = pids(service(&before, "old"));
    assert_eq!(old.len(), 4, "{before}");

    std::fs::write(up.path("herd.toml"), v2(&up)).unwrap();
    let out = herd(up.dir.path(), &["reload", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &answer["plan"];
    assert_eq!(names(&plan["added"]), ["new"], "{answer}");
    assert_eq!(names(&plan["removed"]), ["old"], "{answer}");
    assert_eq!(names(&plan["changed"]), ["base"], "{answer}");
    assert_eq!(names(&plan["restarted"]), ["base", "dep"], "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 4, "{answer}");
    assert!(results.iter().all(|r| r["ok"] == true), "{answer}");

    // The answer came once it was all done: the removed tree is gone now.
    assert!(wait_gone(&old, Duration::ZERO), "old's processes survived");
    let after = ps(&up);
    assert_eq!(service(&after, "old")["name"], serde_json::Value::Null);
    assert_eq!(
        service(&after, "keep")["pid"],
        service(&before, "keep")["pid"]
    );
    assert_eq!(service(&after, "keep")["runs"], 1);
    for s in ["base", "dep"] {
        assert_ne!(service(&after, s)["pid"], service(&before, s)["pid"], "{s}");
        assert_eq!(service(&after, s)["state"], "ready", "{s}");
        assert_eq!(service(&after, s)["runs"], 2, "{s}");
    }
    assert_eq!(service(&after, "new")["state"], "ready");
    // The restarted service runs with its new environment.
    let base = service(&after, "base")["pid"].as_i64().unwrap();
    let env = std::fs::read(format!("/proc/{base}/environ")).unwrap();
    assert!(
        env.split(|b| *b == 0).any(|v| v == b"VERSION=2"),
        "base was not restarted with its new definition"
    );
    // The engine's plan (on the socket) follows the new file.
    let plan = get(&up, "/v1/plan");
    assert!(plan.starts_with("HTTP/1.1 200"), "{plan}");
    assert!(
        plan.contains("\"new\"") && !plan.contains("\"old\""),
        "{plan}"
    );

    // A broken file: refused with its errors (file:line:col), nothing changes.
    // --socket, so the client does not read the file itself.
    let good = std::fs::read_to_string(up.path("herd.toml")).unwrap();
    std::fs::write(
        up.path("herd.toml"),
        good.replace("requires = [\"keep\"]", "requires = [\"nobody\"]") + "\n[services.x]\n",
    )
    .unwrap();
    let out = herd(
        up.dir.path(),
        &["--socket", ".herd/herd.sock", "reload", "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not valid; nothing changes"), "{err}");
    assert!(err.contains("herd.toml:"), "{err}");
    assert!(err.contains("nobody"), "{err}");
    assert!(err.contains("services.x"), "{err}");
    let same = ps(&up);
    for s in ["keep", "base", "dep", "new"] {
        assert_eq!(service(&same, s)["pid"], service(&after, s)["pid"], "{s}");
        assert_eq!(service(&same, s)["runs"], service(&after, s)["runs"], "{s}");
    }

    // SIGHUP applies a file as `herd reload` does.
    std::fs::write(
        up.path("herd.toml"),
        good.replace(
            "\"term-exit\"]\nready",
            "\"term-exit\"]\nenv = { X = \"1\" }\nready",
        ),
    )
    .unwrap();
    up.signal(libc::SIGHUP);
    up.wait_for("herd: SIGHUP: reloading (changed: keep)", LONG);
    up.wait_for("herd: SIGHUP: restarting keep, new", LONG);
    // Lines before the reload's are not about it.
    up.seen.clear();
    // new requires keep: it comes back after it.
    up.wait_for("herd: new ready", LONG);
    let hup = ps(&up);
    assert_ne!(service(&hup, "keep")["pid"], service(&after, "keep")["pid"]);
    assert_eq!(service(&hup, "base")["pid"], service(&after, "base")["pid"]);

    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(LONG), Some(0), "{}", up.seen.join("\n"));
    assert_eq!(up.survivors(), Vec::<i32>::new());
}
