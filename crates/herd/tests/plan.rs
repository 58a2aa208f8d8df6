//! `herd plan` end to end: waves follow the dependencies and every deadline fits the
//! shutdown budget.

use std::collections::HashMap;
use std::path::Path;
mod common;

use common::{herd, repo};

use serde_json::Value;

fn plan_json(dir: &Path, file: &str) -> Value {
    let out = herd(dir, &["plan", "-f", file, "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("plan --json is JSON")
}

fn names(v: &Value) -> Vec<Vec<String>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

fn ms(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Checks a plan against the budget, wave by wave, and returns each service's
/// `(stop wave, granted, kill_at)`.
fn check_budget(plan: &Value) -> HashMap<String, (usize, u64, u64)> {
    let s = &plan["shutdown"];
    let budget = ms(s, "budget_ms");
    let reserve = ms(s, "kill_reserve_ms");
    let mut t = 0;
    let mut out = HashMap::new();
    for (i, w) in s["waves"].as_array().unwrap().iter().enumerate() {
        assert_eq!(ms(w, "start_ms"), t, "waves run back to back");
        let window = ms(w, "window_ms");
        assert_eq!(ms(w, "kill_at_ms"), t + window);
        assert_eq!(ms(w, "end_ms"), t + window + reserve);
        assert!(ms(w, "latest_kill_at_ms") + reserve <= budget);
        for svc in w["services"].as_array().unwrap() {
            let granted = ms(svc, "granted_ms");
            assert!(granted <= window && granted <= ms(svc, "stop_timeout_ms"));
            assert_eq!(ms(svc, "kill_at_ms"), t + granted);
            out.insert(
                svc["name"].as_str().unwrap().to_string(),
                (i, granted, ms(svc, "kill_at_ms")),
            );
        }
        t += window + reserve;
    }
    assert_eq!(ms(s, "end_ms"), t);
    assert!(
        t <= budget,
        "the whole shutdown ({t} ms) fits the budget ({budget} ms)"
    );
    out
}

#[test]
fn example_plan_fits_the_budget_and_follows_dependencies() {
    let plan = plan_json(repo(), "examples/stack/herd.toml");
    assert_eq!(
        names(&plan["start_waves"]),
        [
            vec!["db"],
            vec!["migrate", "worker"],
            vec!["api"],
            vec!["web"]
        ]
    );
    let stop = check_budget(&plan);
    assert_eq!(ms(&plan["shutdown"], "budget_ms"), 25_000);
    assert_eq!(plan["shutdown"]["squeezed"], false);
    // Everything that waits for a service stops in an earlier wave than it.
    for (svc, dep) in [
        ("api", "db"),
        ("api", "migrate"),
        ("migrate", "db"),
        ("worker", "db"),
        ("web", "api"),
        ("web", "worker"),
    ] {
        assert!(stop[svc].0 < stop[dep].0, "{svc} stops before {dep}");
    }
    // Unsqueezed: each gets its own stop.timeout.
    let expect = [
        ("web", 3_000, 3_000),
        ("worker", 4_000, 7_500),
        ("api", 8_000, 11_500),
        ("migrate", 2_000, 14_000),
        ("db", 5_000, 19_500),
    ];
    for (name, granted, kill_at) in expect {
        assert_eq!((stop[name].1, stop[name].2), (granted, kill_at), "{name}");
    }
    assert_eq!(ms(&plan["shutdown"], "end_ms"), 20_000);
}

#[test]
fn example_plan_reads_as_tables() {
    let out = herd(repo(), &["plan", "-f", "examples/stack/herd.toml"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "\
Start (a wave starts when the services it requires are ready)
  wave  services
  1     db
  2     migrate, worker
  3     api
  4     web

Shutdown (budget 25s, kill reserve 500ms per wave)
  wave  service  stop.timeout  granted  SIGKILL at  wave done by
  1     web      3s            3s       +3s         +3.5s
  2     api      8s            8s       +11.5s      +12s
        worker   4s            4s       +7.5s
  3     migrate  2s            2s       +14s        +14.5s
  4     db       5s            5s       +19.5s      +20s
Everything is stopped and verified by +20s at the latest, within the 25s budget.
"
    );
}

#[test]
fn budget_smaller_than_the_timeouts_is_shared_fairly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("herd.toml"),
        r#"
[shutdown]
timeout = "10s"

[services.front]
command = ["x"]
requires = ["mid"]
stop = { timeout = "1s" }

[services.mid]
command = ["x"]
requires = ["back"]
stop = { timeout = "60s" }

[services.back]
command = ["x"]
stop = { timeout = "30s" }
"#,
    )
    .unwrap();
    let plan = plan_json(dir.path(), "herd.toml");
    assert_eq!(plan["shutdown"]["squeezed"], true);
    let stop = check_budget(&plan);
    // 10 s − 3 × 500 ms = 8.5 s: front keeps its 1 s, mid and back split 7.5 s.
    assert_eq!(stop["front"].1, 1_000);
    assert_eq!(stop["mid"].1, 3_750);
    assert_eq!(stop["back"].1, 3_750);
    assert_eq!(ms(&plan["shutdown"], "end_ms"), 10_000);

    let out = herd(dir.path(), &["plan"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Shutdown (budget 10s, kill reserve 500ms per wave; stop timeouts cut to fit, shared fairly)"),
        "{text}"
    );
}

#[test]
fn plan_of_an_invalid_config_prints_the_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("herd.toml"),
        "[services.a]\ncommand = [\"x\"]\nrequires = [\"b\"]\n",
    )
    .unwrap();
    let out = herd(dir.path(), &["plan", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "herd.toml:3:13: services.a.requires: unknown service \"b\"\nherd.toml: 1 error\n"
    );
}
