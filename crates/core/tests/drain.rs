//! The engine drains: once a shutdown has begun it refuses to start anything, and
//! says why. Driven through [`Handle`], as the control socket will drive it.

use herd_core::engine::{ControlError, Engine, Options};

#[test]
fn no_start_is_accepted_once_a_shutdown_has_begun() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herd.toml");
    std::fs::write(
        &file,
        r#"
[shutdown]
timeout = "5s"

[services.busy]
shell = true
command = "trap '' TERM; while :; do sleep 0.05; done"
stop = { timeout = "500ms" }

[services.later]
kind = "oneshot"
command = ["true"]
"#,
    )
    .unwrap();
    let config = herd_config::load(&file).unwrap();
    let backend = Box::new(herd_contain::none::Tracking::open());
    let opts = Options {
        state_dir: dir.path().join(".herd"),
        ..Options::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (outcome, answers) = rt.block_on(async {
        let engine = Engine::new(&config, opts, backend).unwrap();
        let handle = engine.handle();
        let requests = async move {
            // Requests are handled in order: the shutdown is under way before the
            // second start is looked at.
            let unknown = handle.start("nope").await;
            handle.shutdown("test");
            let refused = handle.start("later").await;
            (unknown, refused)
        };
        tokio::join!(engine.run(), requests)
    });
    let (unknown, refused) = answers;
    let unknown = unknown.unwrap_err();
    assert_eq!(unknown, ControlError::UnknownService("nope".into()));
    assert_eq!(unknown.to_string(), "no service named nope");
    let refused = refused.unwrap_err();
    assert!(matches!(refused, ControlError::ShuttingDown(_)));
    assert_eq!(
        refused.to_string(),
        "herder is shutting down: later is not started"
    );
    let outcome = outcome.unwrap();
    assert_eq!(outcome.report.trigger, "test");
    // busy ignores SIGTERM: killed at its deadline, and gone.
    assert_eq!(outcome.killed, vec!["busy".to_string()]);
    assert!(outcome.stuck.is_empty());
}
