//! Runs a command in containment, waits until it has N processes, stops it with a
//! deadline, and prints what the stop did.
//!
//! ```text
//! cargo run -p herd-contain --example contain -- \
//!     [--backend cgroup2|freezer|none] [--timeout 1s-in-ms] [--processes N] [--repeat R] \
//!     -- COMMAND [ARGS...]
//! ```
//!
//! For example, a shell that starts a background job which ignores SIGTERM:
//!
//! ```text
//! cargo run -p herd-contain --example contain -- --processes 2 --timeout 500 -- \
//!     sh -c 'trap "" TERM; sleep 1000 & wait'
//! ```
//!
//! `bench/stop-tree` uses it to time the stop of a 1,000-process tree.

use std::time::{Duration, Instant};

use herd_contain::{Contained, Containment, Limits, StopOptions};

fn usage() -> ! {
    eprintln!(
        "usage: contain [--backend cgroup2|freezer|none] [--timeout MS] [--processes N] [--repeat R] -- COMMAND [ARGS...]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut backend, mut timeout, mut processes, mut repeat) = (None, 1000u64, 1usize, 1u32);
    let mut argv = Vec::new();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--backend" => {
                backend = Some(match value().as_str() {
                    "cgroup2" => Containment::Cgroup2,
                    "freezer" => Containment::Freezer,
                    "none" => Containment::None,
                    _ => usage(),
                })
            }
            "--timeout" => timeout = value().parse().unwrap_or_else(|_| usage()),
            "--processes" => processes = value().parse().unwrap_or_else(|_| usage()),
            "--repeat" => repeat = value().parse().unwrap_or_else(|_| usage()),
            "--" => {
                argv.extend(args.by_ref());
                break;
            }
            _ => usage(),
        }
    }
    if argv.is_empty() {
        usage();
    }
    // Orphans of the command come to us rather than to init (the none backend
    // needs this to find them).
    if let Err(e) = herd_sys::become_subreaper() {
        eprintln!("cannot become a subreaper: {e}");
    }
    let backend = herd_contain::detect(backend).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    println!("backend: {}", backend.kind());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for run in 1..=repeat {
        let spec = herd_sys::Spec {
            argv: argv.clone(),
            env: std::env::vars().collect(),
            workdir: std::env::current_dir().expect("current directory"),
            discard_output: true,
            ..Default::default()
        };
        let mut job = Contained::spawn(backend.as_ref(), "example", spec, &Limits::default())
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            });
        // Waiting for the command to build its processes is not part of the stop.
        let started = Instant::now();
        while job.unit().pids().len() < processes {
            if started.elapsed() > Duration::from_secs(60) {
                eprintln!("the command never reached {processes} processes");
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let record = rt.block_on(job.stop(&StopOptions::new(Duration::from_millis(timeout))));
        let ms = |d: Option<Duration>| {
            d.map_or("-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1e3))
        };
        println!(
            "run {run}: {} processes; SIGKILL after {}; all gone after {}; leftovers {}",
            record.processes,
            ms(record.killed_after),
            ms(record.empty_after),
            record.leftovers.len()
        );
        for l in &record.leftovers {
            println!("  {l}");
        }
        // Orphans that came to us as zombies.
        herd_sys::reap();
    }
    for problem in backend.close() {
        eprintln!("{problem}");
    }
}
