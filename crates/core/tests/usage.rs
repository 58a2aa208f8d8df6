//! Usage readings (CPU time, memory) in status answers, in a test binary of its
//! own: an engine reaps every child of its process, so two cannot share one.

mod common;

use std::time::{Duration, Instant};

use herd_core::engine::ServiceStatus;

/// Enough services that taking their readings from /proc (the none backend's
/// way) takes several slices of the engine's loop.
const SERVICES: usize = 30;

/// A status shows a usage reading under five seconds old as it is; one a second
/// old is then taken again by the engine, a slice at a time, with no other
/// request: long before it would be stale enough for a status to wait for it.
#[test]
fn usage_readings_found_old_are_taken_again_just_after_the_status_that_showed_them() {
    let dir = tempfile::tempdir().unwrap();
    // Each service burns a little CPU all the time, so a new reading differs.
    let toml: String = (0..SERVICES)
        .map(|i| {
            format!(
                "[services.s{i:02}]\ncommand = [\"sh\", \"-c\", \"while :; do i=0; while [ $i -lt 300 ]; do i=$((i+1)); done; sleep 0.02; done\"]\n"
            )
        })
        .collect();
    // Checked after the engine has stopped: a failed check must not leave the
    // services running.
    let failure = std::cell::RefCell::new(None);
    let failed = &failure;
    common::run_engine(dir.path(), &toml, |h| async move {
        *failed.borrow_mut() = check(&h).await.err();
        h.shutdown("test");
    });
    if let Some(f) = failure.take() {
        panic!("{f}");
    }
}

async fn check(h: &herd_core::engine::Handle) -> Result<(), String> {
    let cpu = |list: &[ServiceStatus]| -> Vec<Option<f64>> {
        list.iter().map(|s| s.cpu_seconds).collect()
    };
    // Waited for without a status, so the first status takes every reading.
    for i in 0..SERVICES {
        h.wait(&format!("s{i:02}"), false)
            .await
            .map_err(|e| e.to_string())?;
    }
    let first = h.status().await.map_err(|e| e.to_string())?;
    let taken = Instant::now();
    if !cpu(&first).iter().all(Option::is_some) {
        return Err(format!("no readings: {first:?}"));
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let shown = h.status().await.map_err(|e| e.to_string())?;
    if cpu(&shown) != cpu(&first) {
        return Err(format!(
            "readings under five seconds old were not shown as read:\n{:?}\n{:?}",
            cpu(&first),
            cpu(&shown)
        ));
    }
    // Each ask below comes under a second after the readings the engine took
    // meanwhile, so it shows them as they are.
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = h.status().await.map_err(|e| e.to_string())?;
        if now
            .iter()
            .zip(&first)
            .all(|(a, b)| a.cpu_seconds != b.cpu_seconds)
        {
            return Ok(());
        }
        if taken.elapsed() >= Duration::from_secs(4) {
            return Err(format!(
                "the readings were not taken again:\n{:?}\n{:?}",
                cpu(&first),
                cpu(&now)
            ));
        }
    }
}
