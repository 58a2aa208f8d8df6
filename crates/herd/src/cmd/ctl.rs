//! The commands that talk to a running herder over its control socket: `ps`,
//! `start`, `stop`, `restart`, `signal`.
//!
//! Exit codes: 0 done; 1 herder refused or could not do it (the reason is printed),
//! or no herder runs at the socket.

use std::path::Path;
use std::process::ExitCode;

use hyper::Method;

use herd_core::engine::ServiceStatus;

use crate::api::client;
use crate::output::{self, Table};

/// What to do.
pub enum Action<'a> {
    Ps {
        json: bool,
    },
    Act {
        verb: &'a str,
        name: &'a str,
        timeout: Option<std::time::Duration>,
    },
    Signal {
        name: &'a str,
        signal: &'a str,
        all: bool,
    },
}

pub fn run(file: &Path, socket: Option<&Path>, action: Action) -> ExitCode {
    // With --socket the configuration is not needed (nor, perhaps, readable).
    let sock = match socket {
        Some(s) => s.to_path_buf(),
        None => match super::load_or_report(file) {
            Ok(c) => crate::api::socket_path(&c, file, None),
            Err(code) => return code,
        },
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    let (method, path) = match &action {
        Action::Ps { .. } => (Method::GET, "/v1/services".to_string()),
        Action::Signal { name, signal, all } => (
            Method::POST,
            format!(
                "/v1/services/{name}/signal?signal={signal}{}",
                if *all { "&all=true" } else { "" }
            ),
        ),
        Action::Act {
            verb,
            name,
            timeout,
        } => (
            Method::POST,
            format!(
                "/v1/services/{name}/{verb}{}",
                timeout.map_or(String::new(), |t| format!("?timeout={}ms", t.as_millis()))
            ),
        ),
    };
    let (status, body) = match rt.block_on(client::request(&sock, method, &path)) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if !status.is_success() {
        return fail(&client::message(&body));
    }
    match action {
        Action::Ps { json: true } => {
            output::stdout(&(String::from_utf8_lossy(&body).into_owned() + "\n"))
        }
        Action::Ps { json: false } => match serde_json::from_slice::<Vec<ServiceStatus>>(&body) {
            Ok(list) => output::stdout(&table(&list)),
            Err(e) => fail(&format!("unexpected answer from herder: {e}")),
        },
        Action::Act { .. } | Action::Signal { .. } => {
            output::stdout(&(client::message(&body) + "\n"))
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    output::stderr(&format!("herd: {msg}\n"));
    ExitCode::from(1)
}

fn table(list: &[ServiceStatus]) -> String {
    let mut t = Table::new(&[
        "SERVICE", "STATE", "PID", "PROCS", "UPTIME", "RUNS", "DETAIL",
    ]);
    for s in list {
        t.row(vec![
            s.name.clone(),
            s.state.clone(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.pids.len().to_string(),
            s.uptime_ms.map_or("-".into(), |ms| {
                herd_config::units::format_duration(std::time::Duration::from_secs(ms / 1000))
            }),
            s.runs.to_string(),
            s.detail
                .clone()
                .or_else(|| s.last_exit.clone().map(|e| format!("last: {e}")))
                .unwrap_or_default(),
        ]);
    }
    t.render("")
}
