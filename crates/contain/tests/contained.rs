//! The embeddable API, with the none backend (the cgroup backends move the calling
//! process into their subtree, which a test binary should not do to itself; herder's
//! end-to-end tests cover them).

use std::time::Duration;

use herd_contain::{Contained, Containment, Limits, StopOptions};

fn alive(pid: i32) -> bool {
    herd_contain::procfs::stat(pid).is_some_and(|s| s.alive())
}

#[test]
fn stop_kills_a_tree_that_ignores_sigterm_and_reports_it() {
    herd_sys::become_subreaper().unwrap();
    let backend = herd_contain::detect(Some(Containment::None)).unwrap();
    let spec = herd_sys::Spec {
        argv: [
            "sh",
            "-c",
            "trap '' TERM; sleep 1000 & sleep 1000 & echo x; wait",
        ]
        .map(String::from)
        .to_vec(),
        env: vec![("PATH".into(), herd_sys::spawn::DEFAULT_PATH.into())],
        workdir: "/".into(),
        ..Default::default()
    };
    let mut job = Contained::spawn(backend.as_ref(), "job", spec, &Limits::default()).unwrap();
    // The shell says "x" once both background jobs are forked.
    let (out, _) = job.take_output();
    let mut buf = [0u8; 2];
    let n = rustix::io::read(out.as_ref().unwrap(), &mut buf).unwrap();
    assert_eq!(&buf[..n], b"x\n");
    let pids = job.unit().pids();
    assert_eq!(pids.len(), 3, "{pids:?}");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let record = rt.block_on(job.stop(&StopOptions::new(Duration::from_millis(300))));
    assert_eq!(record.processes, 3);
    let killed = record
        .killed_after
        .expect("SIGTERM is ignored: SIGKILL needed");
    assert!(killed >= Duration::from_millis(300), "{killed:?}");
    assert!(record.empty_after.is_some());
    assert!(record.leftovers.is_empty());
    assert_eq!(
        record.status,
        Some(herd_sys::ExitStatus::Signal(libc::SIGKILL))
    );
    herd_sys::reap();
    let left: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive: {left:?}");
}
