//! Runs a command contained, stops it after `--for` (or on Ctrl-C) within
//! `--timeout`, and prints what the stop did. See README.md.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use herd_contain::{Containment, Jobs, SIGTERM, Spec, StopReport};

struct Args {
    backend: Option<Containment>,
    run_for: Duration,
    timeout: Duration,
    processes: usize,
    repeat: u32,
    command: Vec<String>,
}

const USAGE: &str = "usage: herd-embed-example [--backend cgroup2|freezer|none] [--for DURATION] \
[--timeout DURATION] [--processes N] [--repeat R] -- COMMAND [ARGS...]
DURATION: 250ms, 2s, 1.5s";

fn parse() -> Result<Args, String> {
    let mut args = Args {
        backend: None,
        run_for: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        processes: 1,
        repeat: 1,
        command: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            args.command = it.by_ref().collect();
            break;
        }
        let value = it.next().ok_or(format!("{a} needs a value"))?;
        let bad = |_| format!("{a}: cannot read {value:?}");
        match a.as_str() {
            "--backend" => args.backend = Some(value.parse().map_err(|_| bad(()))?),
            "--for" => args.run_for = duration(&value).ok_or_else(|| bad(()))?,
            "--timeout" => args.timeout = duration(&value).ok_or_else(|| bad(()))?,
            "--processes" => args.processes = value.parse().map_err(|_| bad(()))?,
            "--repeat" => args.repeat = value.parse().map_err(|_| bad(()))?,
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if args.command.is_empty() {
        return Err("no command".into());
    }
    Ok(args)
}

/// `250ms`, `2s`, `1.5s`.
fn duration(s: &str) -> Option<Duration> {
    let (n, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s')?, 1.0),
    };
    Duration::try_from_secs_f64(n.parse::<f64>().ok()? * scale).ok()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn print(report: &StopReport) {
    // This program only ever sends SIGTERM.
    println!("SIGTERM sent to {} process(es)", report.signalled.len());
    for p in &report.signalled {
        println!("  {p}");
    }
    match report.killed_after {
        Some(after) => {
            println!(
                "SIGKILL after {} to {} process(es)",
                ms(after),
                report.killed.len()
            );
            for p in &report.killed {
                println!("  {p}");
            }
        }
        None => println!("SIGKILL not needed"),
    }
    if let Some(status) = report.status {
        println!("main process: {status}");
    }
    match report.empty_after {
        Some(after) => println!("all gone after {}", ms(after)),
        None => println!("NOT all gone: {} survived", report.survivors.len()),
    }
    for p in &report.survivors {
        println!("  survivor {p}");
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // No limits are used: an empty list keeps this process out of the cgroup
    // v1 hierarchies that would provide them.
    let jobs = match Jobs::open_with("herd-embed-example", args.backend, &[]) {
        Ok(jobs) => jobs,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for e in jobs.passed_over() {
        println!("{} not used: {}", e.kind, e.reason);
    }
    println!("backend: {}", jobs.kind());
    let mut complete = true;
    for run in 1..=args.repeat {
        if args.repeat > 1 {
            println!("== run {run}");
        }
        let mut job = match jobs.spawn("job", Spec::command(args.command.clone())) {
            Ok(job) => job,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        println!("started pid {}", job.pid());
        // The command's output is its own business here.
        drop(job.take_output());
        // Building the tree is not part of the time it runs for. No event
        // says a tree has N processes: it is looked at every 5 ms.
        let building = Instant::now();
        while job.pids().len() < args.processes && building.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("{} process(es)", job.pids().len());
        tokio::select! {
            status = job.wait() => match status {
                Ok(status) => println!("main process ended: {status}"),
                Err(e) => println!("cannot wait for the main process: {e}"),
            },
            () = tokio::time::sleep(args.run_for) => {}
            _ = tokio::signal::ctrl_c() => println!("interrupted"),
        }
        let report = job.stop(SIGTERM, args.timeout).await;
        print(&report);
        complete &= report.complete();
    }
    // What was made for the jobs is removed: said here if it could not be.
    for problem in jobs.close() {
        eprintln!("{problem}");
        complete = false;
    }
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
