//! `herd up`: supervise the configuration in the foreground until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use herd_config::{Config, Containment};
use herd_core::engine::{Engine, note};

/// Exit code when the shutdown had to SIGKILL a service or left processes stuck.
pub const EXIT_KILLED: u8 = 3;

pub fn run(file: &Path, forced: Option<herd_contain::Kind>) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for key in unhonoured(&config) {
        note(&format!(
            "warning: {key} is not honoured yet; this version ignores it"
        ));
    }
    let want = forced.or_else(|| wanted(config.supervisor.containment));
    let backend = match herd_contain::detect(want) {
        Ok(b) => b,
        Err(e) => {
            note(&e.to_string());
            return ExitCode::from(1);
        }
    };
    note(&format!(
        "containment: {}{}",
        backend.kind(),
        backend
            .location()
            .map(|p| format!(" under {}", p.display()))
            .unwrap_or_default()
    ));
    for n in backend.notices() {
        note(&n);
    }
    for (name, s) in &config.services {
        let limits = herd_contain::Limits {
            memory: s.limits.memory,
            pids: s.limits.pids,
            cpu: s.limits.cpu,
        };
        for why in backend.unsupported(&limits) {
            note(&format!("warning: services.{name}.{why}; not honoured"));
        }
    }
    let state_dir = config
        .supervisor
        .state_dir
        .clone()
        .unwrap_or_else(|| base_dir(file).join(".herd"));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            note(&format!("cannot start the runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let outcome = rt.block_on(async {
        let engine = Engine::new(&config, state_dir, backend)?;
        engine.run().await
    });
    match outcome {
        Ok(o) if !o.stuck.is_empty() => {
            note(&format!(
                "exiting with processes of {} left (stuck)",
                o.stuck.join(", ")
            ));
            ExitCode::from(EXIT_KILLED)
        }
        Ok(o) if o.killed.is_empty() => {
            note("all services stopped");
            ExitCode::SUCCESS
        }
        Ok(o) => {
            note(&format!(
                "all services stopped; SIGKILL was needed for: {}",
                o.killed.join(", ")
            ));
            ExitCode::from(EXIT_KILLED)
        }
        Err(e) => {
            note(&format!("{e}"));
            ExitCode::from(1)
        }
    }
}

/// The backend the configuration asks for; `None` is the best available.
pub fn wanted(c: Containment) -> Option<herd_contain::Kind> {
    match c {
        Containment::Auto => None,
        Containment::Cgroup2 => Some(herd_contain::Kind::Cgroup2),
        Containment::Freezer => Some(herd_contain::Kind::Freezer),
        Containment::None => Some(herd_contain::Kind::None),
    }
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The keys set in `config` whose behaviour this version does not have yet.
pub fn unhonoured(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if config.main.is_some() {
        out.push("main".to_string());
    }
    if config.supervisor.socket.is_some() {
        out.push("supervisor.socket".into());
    }
    if config.supervisor.socket_group.is_some() {
        out.push("supervisor.socket_group".into());
    }
    for (name, s) in &config.services {
        if s.stop.notify {
            out.push(format!("services.{name}.stop.notify"));
        }
    }
    out
}
