//! `herd up --detach`: herder in the background, as `docker compose up -d` does.
//!
//! # How it works
//!
//! The command starts `herd up` again, without `--detach`, in a process group of
//! its own (the terminal's Ctrl-C does not reach it), with its messages going to
//! `herd.log` in the state directory, and waits, woken by what herder writes
//! there and by its pidfd (no polling): once its control socket answers,
//! it follows the event stream, and after each event looks at the services. It
//! returns 0 once every service is up (ready, or a oneshot that ran to
//! completion), or 1 as soon as one has failed, naming it and why; herder runs on
//! either way (`herd down` stops it). If herder ends before its socket answers
//! (a configuration it refuses, another herder running for this project), the
//! command says so with the end of its log, and exits 1.
//!
//! # Caveats
//!
//! - A service that waits for ever for something (a readiness check with a long
//!   timeout) keeps the command waiting as long; `herd ps` in another terminal
//!   shows where it is.

use std::path::Path;
use std::process::{Child, ExitCode};

use http_body_util::BodyExt;
use hyper::Method;

use herd_api::ServiceStatus;
use herd_config::Containment;
use herd_core::private::Private;

use crate::api::client;
use crate::cmd::ctl::fail;
use crate::output;

/// Where the detached herder's messages go, in its state directory.
pub const LOG: &str = "herd.log";

pub fn run(
    file: &Path,
    socket: Option<&Path>,
    forced: Option<Containment>,
    init: bool,
    http: Option<std::net::SocketAddr>,
) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let state_dir = super::up::state_dir(&config, file);
    if let Ok(Some(state)) = herd_core::state::StateFile::load(&state_dir)
        && let Some(h) = state.herder.filter(|h| h.alive())
    {
        return fail(&format!(
            "herd (pid {}) is already running for {}",
            h.pid,
            file.display()
        ));
    }
    let sock = crate::api::socket_path(&config, file, socket);
    let log = state_dir.join(LOG);
    let child = match spawn(file, socket, forced, init, http, &state_dir, &log) {
        Ok(c) => c,
        Err(e) => return fail(&format!("cannot start herd up: {e}")),
    };
    let rt = match super::ctl::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(wait_up(&sock, &log, &child)) {
        Ok(n) => output::stdout(&format!(
            "herd (pid {}) runs in the background: {n} service(s) up; its messages are in {}\n",
            child.id(),
            log.display()
        )),
        Err(Ended::Failed(why)) => fail(&format!(
            "{why}; herd (pid {}) runs on (herd down stops it), its messages are in {}",
            child.id(),
            log.display()
        )),
        Err(Ended::Exited) => {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            fail(&format!("herd up ended at once:\n{}", tail.join("\n")))
        }
    }
}

/// Starts `herd up` without `--detach`, its output in `log`.
fn spawn(
    file: &Path,
    socket: Option<&Path>,
    forced: Option<Containment>,
    init: bool,
    http: Option<std::net::SocketAddr>,
    state_dir: &Path,
    log: &Path,
) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    Private::default().state_dir(state_dir)?;
    let out = Private::default().append(log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg("up").arg("-f").arg(file);
    if let Some(s) = socket {
        cmd.arg("--socket").arg(s);
    }
    if let Some(c) = forced {
        cmd.args(["--containment", c.name()]);
    }
    if init {
        cmd.arg("--init");
    }
    if let Some(addr) = http {
        cmd.arg("--http").arg(addr.to_string());
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        // Out of the terminal's foreground group: its Ctrl-C is not herder's.
        .process_group(0)
        .spawn()
}

/// How waiting ended without every service up.
enum Ended {
    /// A service failed: why, in words.
    Failed(String),
    /// herder itself ended.
    Exited,
}

/// Waits for the socket, then follows the events until every service is up
/// (their number) or one has failed.
///
/// Until the socket answers, herder's own log wakes the wait: it says
/// `control socket: …` right after binding it, so each write to `log` is a
/// moment to try again; the child's pidfd says if it ends first.
async fn wait_up(sock: &Path, log: &Path, child: &Child) -> Result<usize, Ended> {
    let watch = herd_sys::watch::FileWatch::new(log)
        .map_err(|e| Ended::Failed(format!("cannot watch {}: {e}", log.display())))?;
    // Not reaped by anyone but this process, which does not: the pid is its.
    let ended = herd_sys::Pidfd::open(child.id() as i32)
        .map_err(|_| Ended::Exited)?
        .exited();
    tokio::pin!(ended);
    let mut events = loop {
        match client::open(sock, Method::GET, "/v1/events").await {
            Ok((status, body)) if status.is_success() => break body,
            Ok((_, body)) => {
                let body = client::rest(body).await;
                return Err(Ended::Failed(client::message(&body)));
            }
            // Not bound yet.
            Err(_) => {}
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = &mut ended => return Err(Ended::Exited),
        }
    };
    loop {
        if let Some(verdict) = verdict(&services(sock).await.map_err(|_| Ended::Exited)?) {
            return verdict;
        }
        match events.frame().await {
            Some(Ok(_)) => {}
            _ => return Err(Ended::Exited),
        }
    }
}

async fn services(sock: &Path) -> Result<Vec<ServiceStatus>, ()> {
    match client::request(sock, Method::GET, "/v1/services").await {
        Ok((status, body)) if status.is_success() => serde_json::from_slice(&body).map_err(drop),
        _ => Err(()),
    }
}

/// Whether waiting is over: every service up, or one failed.
fn verdict(list: &[ServiceStatus]) -> Option<Result<usize, Ended>> {
    if let Some(s) = list.iter().find(|s| s.state == "failed") {
        let why = s.detail.clone().unwrap_or_default();
        return Some(Err(Ended::Failed(format!("{} failed: {why}", s.name))));
    }
    let up = |s: &ServiceStatus| {
        s.ready || (s.state == "exited" && s.last_exit.as_deref() == Some("exit code 0"))
    };
    list.iter().all(up).then_some(Ok(list.len()))
}
