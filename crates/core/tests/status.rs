//! Status requests through `Handle` (what `herd ps` asks), in a test binary of
//! its own: an engine reaps every child of its process, so two cannot share one.

use herd_core::engine::{Engine, Options};

/// `herd ps` from several clients at once: the requests that reach the engine
/// together share one snapshot (one read of every cgroup), and are answered in
/// the order they were asked, the longest-waiting first.
#[test]
fn status_requests_made_together_share_a_snapshot_and_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = d.join("herd.toml");
    std::fs::write(&file, "[services.only]\ncommand = [\"sleep\", \"1000\"]\n").unwrap();
    let config = herd_config::load(&file).unwrap();
    let backend = herd_contain::detect(Some(herd_contain::Kind::None)).unwrap();
    let opts = Options {
        state_dir: d.join(".herd"),
        ..Options::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = Engine::new(&config, opts, backend).unwrap();
        let h = engine.handle();
        let test = async {
            let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            // Spawned in this order, so they ask in this order, before the engine
            // (woken by the first) takes its turn.
            let asks: Vec<_> = (0..5)
                .map(|i| {
                    let (h, answered) = (h.clone(), answered.clone());
                    tokio::spawn(async move {
                        let ov = h.overview().await.unwrap();
                        answered.lock().unwrap().push(i);
                        ov
                    })
                })
                .collect();
            let mut snapshots = Vec::new();
            for a in asks {
                snapshots.push(a.await.unwrap());
            }
            assert!(
                snapshots
                    .iter()
                    .all(|s| std::sync::Arc::ptr_eq(s, &snapshots[0]))
            );
            assert_eq!(*answered.lock().unwrap(), [0, 1, 2, 3, 4]);
            h.shutdown("test");
        };
        let (outcome, ()) = tokio::join!(engine.run(), test);
        outcome.unwrap();
    });
}
