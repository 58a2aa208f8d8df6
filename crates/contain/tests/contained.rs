//! The embeddable API ([`Jobs`], [`Job`]) with the none backend. The cgroup
//! backends move the calling process into their subtree, which a test binary
//! running tests on several threads should not do to itself: the crate's doc
//! test and `examples/embed` (crates/herd/tests/embed.rs) run them, each in a
//! process of its own.

use std::io::{BufRead, BufReader};
use std::time::Duration;

use herd_contain::{Containment, Job, Jobs, Spec, StopOptions};
use herd_sys::ExitStatus;

fn alive(pid: i32) -> bool {
    herd_contain::procfs::stat(pid).is_some_and(|s| s.alive())
}

/// Whether /proc still lists `pid`, a zombie included.
fn listed(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Jobs of the test's own name: a name is open once in a process.
fn jobs(test: &str) -> Jobs {
    Jobs::open_with(test, Some(Containment::None), &[]).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Starts `script` and waits for its first line, which it prints once its
/// processes are there.
fn start(jobs: &Jobs, script: &str) -> Job {
    let mut job = jobs
        .spawn("job", Spec::command(["sh", "-c", script]))
        .unwrap();
    let (out, _) = job.take_output();
    let mut line = String::new();
    BufReader::new(std::fs::File::from(out.unwrap()))
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "x\n");
    job
}

#[test]
fn stop_kills_a_tree_that_ignores_sigterm_and_reports_it() {
    let jobs = jobs("stop_kills_a_tree_that_ignores_sigterm_and_reports_it");
    let mut job = start(
        &jobs,
        "trap '' TERM; sleep 1000 & (setsid sleep 1000 &); echo x; wait",
    );
    let pids = job.pids();
    assert_eq!(pids.len(), 3, "{pids:?}");

    let record = runtime().block_on(job.stop(herd_contain::SIGTERM, Duration::from_millis(300)));
    assert_eq!(record.signalled.len(), 3, "{record:?}");
    let killed = record
        .killed_after
        .expect("SIGTERM is ignored: SIGKILL needed");
    assert!(killed >= Duration::from_millis(300), "{killed:?}");
    assert_eq!(record.killed.len(), 3, "{record:?}");
    assert!(record.complete(), "{record:?}");
    assert_eq!(record.status, Some(ExitStatus::Signal(libc::SIGKILL)));
    let left: Vec<i32> = pids.into_iter().filter(|&p| alive(p)).collect();
    assert!(left.is_empty(), "still alive: {left:?}");
    drop(job);
    assert_eq!(jobs.close(), Vec::<String>::new());
}

#[test]
fn the_main_process_and_the_whole_unit_are_waited_for_apart() {
    let jobs = jobs("the_main_process_and_the_whole_unit_are_waited_for_apart");
    // The main process exits at once; its child lives on until its stdin,
    // a pipe the test holds, closes.
    let (r, w) = rustix::pipe::pipe().unwrap();
    let mut spec = Spec::command(["sh", "-c", "(read x <&3; echo x) & exit 3"]);
    spec.inherit = vec![std::sync::Arc::new(r)];
    let mut job = jobs.spawn("job", spec).unwrap();
    let rt = runtime();
    assert_eq!(rt.block_on(job.wait()).unwrap(), ExitStatus::Code(3));
    let rest = job.pids();
    assert_eq!(rest.len(), 1, "the background child is still there");
    assert!(
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), job.wait_empty()).await
        })
        .is_err(),
        "not empty while the child waits on its pipe"
    );
    drop(w);
    rt.block_on(job.wait_empty());
    assert!(!alive(rest[0]));
    // The orphan was re-parented to us; the scan that found it gone reaped it.
    assert!(!listed(rest[0]), "the orphan was left a zombie");
}

#[test]
fn a_dropped_job_is_killed_and_its_stop_can_be_cancelled() {
    let jobs = jobs("a_dropped_job_is_killed_and_its_stop_can_be_cancelled");
    let rt = runtime();
    let mut job = start(&jobs, "trap '' TERM; sleep 1000 & echo x; wait");
    let pids = job.pids();
    assert_eq!(pids.len(), 2, "{:?}", herd_contain::procfs::describe(&pids));
    // A stop cancelled before its deadline leaves the job usable...
    let cancelled = rt.block_on(async {
        let stop = job.stop(herd_contain::SIGTERM, Duration::from_secs(60));
        tokio::time::timeout(Duration::from_millis(20), stop).await
    });
    assert!(cancelled.is_err());
    let dead: Vec<i32> = pids.iter().copied().filter(|&p| !alive(p)).collect();
    assert!(
        dead.is_empty(),
        "SIGTERM is ignored, yet {dead:?} of {pids:?} died"
    );
    // ...and dropping it kills everything.
    drop(job);
    let closed = jobs.close();
    assert!(closed.is_empty(), "{closed:?}");
    let left: Vec<i32> = pids.into_iter().filter(|&p| listed(p)).collect();
    assert!(left.is_empty(), "still there after the close: {left:?}");
}

#[test]
fn a_command_runs_in_the_callers_directory_with_its_environment() {
    let jobs = jobs("a_command_runs_in_the_callers_directory_with_its_environment");
    let mut spec = Spec::command(["sh", "-c", "echo \"$PWD $HERD_TEST_MARK\""]);
    spec.env.push(("HERD_TEST_MARK".into(), "here".into()));
    let mut job = jobs.spawn("pwd", spec).unwrap();
    let (out, _) = job.take_output();
    let mut line = String::new();
    BufReader::new(std::fs::File::from(out.unwrap()))
        .read_line(&mut line)
        .unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(line.trim(), format!("{} here", cwd.display()));
    let status = runtime().block_on(job.wait()).unwrap();
    assert_eq!(status, ExitStatus::Code(0));
}

#[test]
fn usage_counts_the_whole_unit() {
    let jobs = jobs("usage_counts_the_whole_unit");
    let mut job = start(&jobs, "sleep 1000 & sleep 1000 & echo x; wait");
    let usage = job.usage();
    assert_eq!(usage.processes, 3);
    assert!(usage.memory.is_some_and(|m| m > 0), "{usage:?}");
    let report = runtime().block_on(job.stop_with(&StopOptions::new(Duration::from_secs(5))));
    assert!(report.complete());
    assert!(report.killed_after.is_none(), "SIGTERM was enough");
}

#[test]
fn a_name_is_open_once_in_a_process() {
    let first = jobs("a_name_is_open_once");
    let again = Jobs::open_with("a_name_is_open_once", Some(Containment::None), &[]);
    let err = again.expect_err("the same subtree twice");
    assert!(err.reason.contains("already open in this process"), "{err}");
    assert_eq!(first.close(), Vec::<String>::new());
    // Closed, the name is free again.
    drop(jobs("a_name_is_open_once"));
}
