//! `herd up`: supervise the configuration in the foreground until SIGINT or SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use herd_config::{Config, Containment};
use herd_core::engine::{Engine, note};

/// Exit code when the shutdown had to SIGKILL something.
pub const EXIT_KILLED: u8 = 3;

pub fn run(file: &Path) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for key in unhonoured(&config) {
        note(&format!(
            "warning: {key} is not honoured yet; this version ignores it"
        ));
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
        let engine = Engine::new(&config, state_dir)?;
        engine.run().await
    });
    match outcome {
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
    if config.supervisor.containment != Containment::Auto {
        out.push("supervisor.containment".into());
    }
    if config.supervisor.socket.is_some() {
        out.push("supervisor.socket".into());
    }
    if config.supervisor.socket_group.is_some() {
        out.push("supervisor.socket_group".into());
    }
    for (name, s) in &config.services {
        let p = format!("services.{name}");
        if s.stop.exec.is_some() {
            out.push(format!("{p}.stop.exec"));
        }
        if s.stop.notify {
            out.push(format!("{p}.stop.notify"));
        }
        for (key, set) in [
            ("memory", s.limits.memory.is_some()),
            ("pids", s.limits.pids.is_some()),
            ("cpu", s.limits.cpu.is_some()),
        ] {
            if set {
                out.push(format!("{p}.limits.{key}"));
            }
        }
    }
    out
}
