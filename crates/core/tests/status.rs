//! Status requests through `Handle` (what `herd ps` asks), in a test binary of
//! its own: an engine reaps every child of its process, so two cannot share one.

mod common;

/// `herd ps` from several clients at once: the requests that reach the engine
/// together share one snapshot (one read of every cgroup), and are answered in
/// the order they were asked, the longest-waiting first.
#[test]
fn status_requests_made_together_share_a_snapshot_and_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[services.only]\ncommand = [\"sleep\", \"1000\"]\n";
    common::run_engine(dir.path(), toml, |h| async move {
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
    });
}
