//! Operators' requests through [`Handle`], against real processes (none backend):
//! a stop takes what requires the service down first and answers when all is gone;
//! a start brings up what it requires; a restart brings the dependents back; other
//! services are not touched. Order is read from the services' own timestamps.

use std::collections::BTreeMap;
use std::time::Duration;

mod common;

use herd_core::engine::{ControlError, Handle, ServiceStatus};

/// A service that logs `term NAME NS` / `exit NAME NS` to `stamps`, taking `delay`
/// to stop.
fn service(dir: &std::path::Path, name: &str, delay: &str, requires: &[&str]) -> String {
    let stamps = dir.join("stamps");
    let s = stamps.display();
    format!(
        r#"
[services.{name}]
shell = true
command = "trap 'echo term {name} $(date +%s%N) >> {s}; sleep {delay}; echo exit {name} $(date +%s%N) >> {s}; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
ready = {{ log = "ready" }}
requires = {requires:?}
"#
    )
}

fn stamps(dir: &std::path::Path) -> BTreeMap<(String, String), Vec<u128>> {
    let mut out: BTreeMap<(String, String), Vec<u128>> = BTreeMap::new();
    for l in std::fs::read_to_string(dir.join("stamps"))
        .unwrap_or_default()
        .lines()
    {
        let f: Vec<&str> = l.split_whitespace().collect();
        out.entry((f[0].into(), f[1].into()))
            .or_default()
            .push(f[2].parse().unwrap());
    }
    out
}

async fn state(h: &Handle) -> BTreeMap<String, ServiceStatus> {
    h.status()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect()
}

#[test]
fn stop_start_and_restart_follow_the_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let toml = [
        service(d, "db", "0.2", &[]),
        service(d, "api", "0.1", &["db"]),
        service(d, "web", "0", &["api"]),
        service(d, "other", "0", &[]),
    ]
    .concat();
    let outcome = common::run_engine(d, &toml, |h| async move {
        let steps = async {
            // A start of a service on its way up answers when it is ready.
            assert!(h.start("web").await.unwrap().starts_with("web is ready"));
            assert!(h.start("other").await.is_ok());
            let before = state(&h).await;

            assert_eq!(h.stop("db").await, Ok("db stopped".to_string()));
            let now = state(&h).await;
            for s in ["db", "api", "web"] {
                assert_eq!(now[s].state, "stopped", "{:?}", now[s]);
                assert!(now[s].pids.is_empty());
            }
            assert_eq!(now["other"].state, "ready");
            assert_eq!(now["other"].pid, before["other"].pid, "other untouched");
            let st = stamps(d);
            let at = |w: &str, n: &str| st[&(w.to_string(), n.to_string())][0];
            assert!(at("exit", "web") <= at("term", "api"), "{st:?}");
            assert!(at("exit", "api") <= at("term", "db"), "{st:?}");

            // Starting web brings up what it requires.
            assert!(h.start("web").await.unwrap().starts_with("web is ready"));
            let now = state(&h).await;
            for s in ["db", "api", "web"] {
                assert_eq!(now[s].state, "ready", "{:?}", now[s]);
                assert_eq!(now[s].runs, 2);
            }

            // A restart of db takes api and web down first and brings all back.
            assert!(h.restart("db").await.unwrap().starts_with("db is ready"));
            assert!(h.start("web").await.unwrap().starts_with("web is ready"));
            let now = state(&h).await;
            for s in ["db", "api", "web"] {
                assert_eq!(now[s].runs, 3, "{:?}", now[s]);
            }
            assert_eq!(now["other"].runs, 1);
            assert_eq!(now["other"].pid, before["other"].pid);

            let unknown = h.stop("nope").await.unwrap_err();
            assert_eq!(unknown, ControlError::UnknownService("nope".into()));
            assert_eq!(unknown.to_string(), "no service named nope");
            h.shutdown("test");
            let late = h.stop("other").await.unwrap_err();
            assert!(matches!(late, ControlError::ShuttingDown(_)), "{late:?}");
            assert!(late.to_string().contains("shutting down"));
        };
        tokio::time::timeout(Duration::from_secs(30), steps)
            .await
            .expect("requests answered in time");
    });
    assert!(outcome.killed.is_empty(), "{:?}", outcome.killed);
}
