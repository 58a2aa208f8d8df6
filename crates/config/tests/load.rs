//! What a valid configuration loads into: values, defaults and resolved paths.

use std::time::Duration;

use herd_config::units::Signal;
use herd_config::*;

fn write(dir: &std::path::Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn values_defaults_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(
        root,
        "herd.toml",
        r#"
include = ["conf.d/*.toml"]
main = "api"

[shutdown]
timeout = "20s"

[supervisor]
containment = "freezer"
state_dir = "state"
socket_group = "ops"

[logs]
max_size = "1M"
keep = 7

[services.api]
command = ["./api", "--port", "8080"]
requires = ["db"]
after = ["db", "cache"]
env = { RUST_LOG = "info" }
env_file = "api.env"
workdir = "srv"
user = "app"
ready = { http = "http://127.0.0.1:8080/health", interval = "250ms" }
health = { http = "http://127.0.0.1:8080/live", interval = "30s", timeout = "2s", failures = 5, start_period = "1m" }
watchdog = "20s"
restart = { policy = "always", backoff = "1s..1m", limit = "3/10s", stable = "30s" }
stop = { signal = "INT", timeout = "8s", mode = "mixed", exec = ["./api", "drain"], notify = true }
limits = { memory = "512M", pids = 256, cpu = 1.5, nofile = 4096, nproc = 100, core = 0 }

[services.cache]
shell = true
command = "redis-server --port 0"
stop = { signal = 10 }
health = { tcp = "127.0.0.1:6379" }
watchdog_signal = "SIGQUIT"
"#,
    );
    write(
        root,
        "conf.d/db.toml",
        "[services.db]\ncommand = [\"postgres\"]\nready = { tcp = \"127.0.0.1:5432\" }\nworkdir = \"data\"\n",
    );
    let path = root.join("herd.toml");
    let c = load(&path).unwrap_or_else(|d| panic!("{d}"));

    assert_eq!(c.files, [path.clone(), root.join("conf.d/db.toml")]);
    assert_eq!(c.main.as_deref(), Some("api"));
    assert_eq!(c.shutdown.timeout, Duration::from_secs(20));
    assert_eq!(c.shutdown.kill_reserve, defaults::KILL_RESERVE);
    assert_eq!(c.supervisor.containment, Some(Containment::Freezer));
    assert_eq!(c.supervisor.state_dir, Some(root.join("state")));
    assert_eq!(c.supervisor.socket, None);
    assert_eq!(c.supervisor.socket_group.as_deref(), Some("ops"));
    assert_eq!((c.logs.max_size, c.logs.keep), (1 << 20, 7));

    let api = &c.services["api"];
    assert_eq!(
        api.command,
        Command::Argv(vec!["./api".into(), "--port".into(), "8080".into()])
    );
    assert_eq!(api.requires, ["db"]);
    assert_eq!(api.after, ["db", "cache"]);
    assert_eq!(api.ordering_deps().collect::<Vec<_>>(), ["db", "cache"]);
    assert_eq!(api.env["RUST_LOG"], "info");
    assert_eq!(api.env_file, Some(root.join("api.env")));
    assert_eq!(api.workdir, root.join("srv"));
    assert_eq!(api.user.as_deref(), Some("app"));
    assert_eq!(api.group, None);
    assert_eq!(api.kind, Kind::Long);
    assert_eq!(
        api.ready,
        Some(Ready {
            check: ReadyCheck::Http("http://127.0.0.1:8080/health".into()),
            interval: Duration::from_millis(250),
            timeout: defaults::READY_TIMEOUT,
        })
    );
    assert_eq!(
        api.health,
        Some(Health {
            check: ReadyCheck::Http("http://127.0.0.1:8080/live".into()),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            failures: 5,
            start_period: Duration::from_secs(60),
        })
    );
    assert_eq!(api.watchdog, Some(Duration::from_secs(20)));
    assert_eq!(api.watchdog_signal, Signal::ABRT);
    assert_eq!(api.restart.policy, RestartPolicy::Always);
    assert_eq!(api.restart.backoff.floor, Duration::from_secs(1));
    assert_eq!(api.restart.backoff.ceiling, Duration::from_secs(60));
    assert_eq!(api.restart.limit.starts, 3);
    assert_eq!(api.restart.limit.window, Duration::from_secs(10));
    assert_eq!(api.restart.stable, Duration::from_secs(30));
    assert_eq!(
        api.stop,
        Stop {
            signal: Signal(2),
            timeout: Duration::from_secs(8),
            mode: StopMode::Mixed,
            exec: Some(vec!["./api".into(), "drain".into()]),
            notify: true,
        }
    );
    assert_eq!(
        api.limits,
        Limits {
            memory: Some(512 << 20),
            pids: Some(256),
            cpu: Some(1.5),
            nofile: Some(4096),
            nproc: Some(100),
            core: Some(0),
        }
    );

    let cache = &c.services["cache"];
    assert_eq!(
        cache.command,
        Command::Shell("redis-server --port 0".into())
    );
    assert_eq!(cache.stop.signal, Signal(10));
    // Defaults.
    assert_eq!(cache.stop.timeout, defaults::STOP_TIMEOUT);
    assert_eq!(cache.stop.mode, StopMode::Group);
    assert_eq!(cache.restart.policy, RestartPolicy::OnFailure);
    assert_eq!(cache.workdir, root);
    assert!(cache.ready.is_none());
    assert_eq!(
        cache.health,
        Some(Health {
            check: ReadyCheck::Tcp("127.0.0.1:6379".into()),
            interval: defaults::HEALTH_INTERVAL,
            timeout: defaults::HEALTH_TIMEOUT,
            failures: defaults::HEALTH_FAILURES,
            start_period: Duration::ZERO,
        })
    );
    assert_eq!((cache.watchdog, cache.watchdog_signal), (None, Signal(3)));

    // An included service's paths are relative to its own file.
    let db = &c.services["db"];
    assert_eq!(db.workdir, root.join("conf.d/data"));
    assert_eq!(db.defined_in, root.join("conf.d/db.toml"));
    assert_eq!(db.line, 1);
    assert_eq!(
        db.ready.as_ref().map(|r| &r.check),
        Some(&ReadyCheck::Tcp("127.0.0.1:5432".into()))
    );

    let graph = DepGraph::new(&c.services);
    assert_eq!(
        graph.start_waves(),
        [vec!["cache".to_string(), "db".into()], vec!["api".into()]]
    );
}

#[test]
fn oneshots_default_to_no_restart() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "herd.toml",
        "[services.job]\nkind = \"oneshot\"\ncommand = [\"true\"]\n",
    );
    let c = load(&dir.path().join("herd.toml")).unwrap();
    assert_eq!(c.services["job"].kind, Kind::Oneshot);
    assert_eq!(c.services["job"].restart.policy, RestartPolicy::Never);
    assert_eq!(c.shutdown.timeout, defaults::SHUTDOWN_TIMEOUT);
}

#[test]
fn an_empty_file_is_a_valid_empty_configuration() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "herd.toml", "");
    let c = load(&dir.path().join("herd.toml")).unwrap();
    assert!(c.services.is_empty());
    assert!(shutdown_plan(&c).waves.is_empty());
}
