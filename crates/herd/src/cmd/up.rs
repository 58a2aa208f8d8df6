//! `herd up`: supervise the configuration in the foreground until SIGINT or SIGTERM
//! (or `herd down`, or the end of the `main` service).
//!
//! Before anything starts, what a killed herder left is stopped (see
//! [`herd_core::state`]); a herder still running with the same state directory is
//! refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use herd_config::{Config, Containment};
use herd_core::engine::{Engine, Options, Outcome};
use herd_core::log::note;
use herd_core::private::Private;

use crate::api::health::{self, HealthCtx};
use crate::api::server::{self, Access, Ctx};

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
    let pid1 = std::process::id() == 1;
    if pid1 {
        note("running as PID 1: reaping every orphan, forwarding SIGUSR1, SIGUSR2 and SIGWINCH");
    } else if init {
        note(
            "--init without being PID 1: subreaper duty only (orphans of services are reaped, and killed at the end)",
        );
    }
    let how = How {
        file,
        socket,
        forced,
        init: init || pid1,
        http,
    };
    match supervise(config, &how) {
        Ok(outcome) => finish(&outcome),
        Err(e) => {
            note(&e);
            ExitCode::from(1)
        }
    }
}

/// What the command line asked of `herd up`.
struct How<'a> {
    file: &'a Path,
    socket: Option<&'a Path>,
    forced: Option<Containment>,
    init: bool,
    http: Option<std::net::SocketAddr>,
}

/// Everything from the state directory to the end of the run; an error is what
/// kept herder from starting.
fn supervise(owned: Config, how: &How) -> Result<Outcome, String> {
    let config = &owned;
    let access = access(config)?;
    let private = Private { group: access.gid };
    let state_dir = make_state_dir(config, how.file, private)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let r = rt
        .block_on(herd_core::state::recover(&state_dir))
        .map_err(|e| e.to_string())?;
    for line in &r.lines {
        note(line);
    }
    for l in &r.left {
        note(&format!("  still there: {l}"));
    }
    // The listeners come before the backend claims its cgroups, so a socket in use
    // stops herder before it has made anything it would have to undo.
    let sock = crate::api::socket_path(config, how.file, how.socket);
    let (listener, probes) = rt
        .block_on(listen(&sock, access.gid, how.http))
        .map_err(|e| e.to_string())?;
    let _socket_file = SocketFile(sock);
    let instance = instance(config, how.file);
    let backend = backend(config, how.forced, &instance)?;
    if let Err(e) = descriptors(config, &*backend) {
        for problem in backend.close() {
            note(&problem);
        }
        return Err(e);
    }
    let opts = Options {
        state_dir: state_dir.clone(),
        config_file: Some(how.file.to_path_buf()),
        init: how.init,
        private,
    };
    rt.block_on(async move {
        let engine = Engine::new(&owned, opts, backend)?;
        let (main, max_connections) = (owned.main.clone(), owned.supervisor.max_connections);
        // The engine keeps its own copy; this one (some 1.4 KB a service)
        // would only sit in memory for the whole run.
        drop(owned);
        let probing = probes.map(|l| {
            let ctx = Arc::new(HealthCtx {
                handle: engine.handle(),
                main,
            });
            tokio::spawn(health::serve(l, ctx))
        });
        let ctx = Arc::new(Ctx::new(engine.handle(), state_dir, max_connections));
        let serving = tokio::spawn(server::serve(listener, access, ctx.clone()));
        let outcome = engine.run().await;
        serving.abort();
        // Streams hear the end (`herd down --wait` its report) before herder exits.
        server::drain(&ctx, STREAMS_DRAIN).await;
        if let Some(p) = probing {
            p.abort();
        }
        outcome
    })
    .map_err(|e| e.to_string())
}

/// Who may use the control socket.
fn access(config: &Config) -> Result<Access, String> {
    let gid = match &config.supervisor.socket_group {
        None => None,
        Some(g) => Some(
            herd_sys::user::group_only(g).map_err(|e| format!("supervisor.socket_group: {e}"))?,
        ),
    };
    Ok(Access {
        uid: rustix::process::getuid().as_raw(),
        gid,
    })
}

/// The control socket, and the `--http` listener if asked for.
async fn listen(
    sock: &Path,
    group: Option<u32>,
    http: Option<std::net::SocketAddr>,
) -> std::io::Result<(tokio::net::UnixListener, Option<tokio::net::TcpListener>)> {
    let listener = server::bind(sock, group).map_err(|e| {
        std::io::Error::new(e.kind(), format!("control socket {}: {e}", sock.display()))
    })?;
    note(&format!("control socket: {}", sock.display()));
    let probes = match http {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("--http {addr}: {e}")))?;
            note(&format!("health and metrics: http://{}/", l.local_addr()?));
            Some(l)
        }
        None => None,
    };
    Ok((listener, probes))
}

/// The containment backend, said with what it cannot honour here.
fn backend(
    config: &Config,
    forced: Option<Containment>,
    instance: &str,
) -> Result<Box<dyn herd_contain::Backend>, String> {
    // The limit controllers some service uses: only those come from cgroup v1.
    let mut limits: Vec<&str> = Vec::new();
    for s in config.services.values() {
        for (c, set) in [
            ("memory", s.limits.memory.is_some()),
            ("pids", s.limits.pids.is_some()),
            ("cpu", s.limits.cpu.is_some()),
        ] {
            if set && !limits.contains(&c) {
                limits.push(c);
            }
        }
    }
    let chosen = herd_contain::choose(
        forced.or(config.supervisor.containment),
        herd_contain::Place::Herder(Some(instance)),
        &limits,
    )
    .map_err(|e| e.to_string())?;
    // Never a weaker backend without saying why the better ones were not used.
    for e in &chosen.passed_over {
        note(&format!("{} not used: {}", e.kind, e.reason));
    }
    let backend = chosen.backend;
    let limits = backend.limit_controllers();
    note(&format!(
        "containment: {}{}{}",
        backend.kind(),
        backend
            .location()
            .map(|p| format!(" under {}", p.display()))
            .unwrap_or_default(),
        match limits.is_empty() {
            true => String::new(),
            false => format!("; limits: {}", limits.join(", ")),
        }
    ));
    for n in backend.notices() {
        note(&n);
    }
    for cut in herd_config::plan::cut_timeouts(&herd_config::shutdown_plan(config)) {
        note(&format!("warning: {cut}"));
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
    Ok(backend)
}

/// Raises the descriptor limit to what every service running at once needs
/// (the services get the limit herder was started with back), with room for
/// the backend to hold files that make answers faster where it can have it; an
/// error, before anything starts, where the limit cannot hold them all.
fn descriptors(config: &Config, backend: &dyn herd_contain::Backend) -> Result<(), String> {
    let per_unit = backend.descriptors_per_unit();
    let need = herd_core::engine::descriptors(config, per_unit);
    let n = config.services.len();
    let held = need.total() + n as u64 * backend.descriptors_to_hold();
    let limit = match herd_sys::raise_nofile(held) {
        Ok(n) => {
            if n.now > n.was {
                note(&format!(
                    "descriptors: raised to {} (services get {})",
                    n.now, n.was
                ));
            }
            n.now
        }
        Err(e) => {
            note(&format!("descriptors: cannot raise the limit: {e}"));
            return Ok(());
        }
    };
    backend.hold_files(limit >= held);
    if limit >= need.total() {
        if limit < held {
            note(&format!(
                "descriptors: the limit of {limit} holds {n} services, not their cgroup files as well: those are opened when used"
            ));
        }
        return Ok(());
    }
    Err(format!(
        "{n} services need {} descriptors ({} a service on {}, {} more with sd_notify; \
         {} for herder and its connections) but the limit is {limit}, which herder may \
         not raise: it can hold {} services like these. Raise the hard limit \
         (ulimit -Hn; LimitNOFILE= in a systemd unit; --ulimit nofile= for docker), \
         run herd up as root, or split the stack",
        need.total(),
        per_unit + herd_core::engine::DESCRIPTORS_PER_RUN,
        backend.kind(),
        herd_core::engine::DESCRIPTORS_NOTIFY,
        need.fixed,
        need.room(limit, n),
    ))
}

/// Says how the run ended; herder's exit code.
fn finish(o: &Outcome) -> ExitCode {
    let code = o.exit_code();
    if !o.stuck.is_empty() {
        note(&format!(
            "exiting with processes of {} left (stuck)",
            o.stuck.join(", ")
        ));
    } else if o.killed.is_empty() {
        note("all services stopped");
    } else {
        note(&format!(
            "all services stopped; SIGKILL was needed for: {}",
            o.killed.join(", ")
        ));
    }
    if let Some((name, status)) = &o.main {
        note(&format!("the main service {name} ended the run ({status})"));
    }
    for (name, why) in &o.failed {
        note(&format!("{name} ended failed: {why}"));
    }
    note(&format!("exit code {code}"));
    ExitCode::from(code)
}

/// How long, at most, streaming clients get to receive the last event.
const STREAMS_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Removes the control socket's file when `herd up` returns, however it returns.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Where logs, the state file and reports go: `supervisor.state_dir`, else
/// `.herd` beside herd.toml, unless that could not be made (a read-only root
/// file system) and `herd up` put the state in its fallback instead
/// ([`fallback_state_dir`]), where every command then finds it.
pub fn state_dir(config: &Config, file: &Path) -> PathBuf {
    let wanted = wanted_state_dir(config, file);
    if config.supervisor.state_dir.is_some() || wanted.is_dir() {
        return wanted;
    }
    let fallback = fallback_state_dir(config, &wanted);
    if fallback.is_dir() { fallback } else { wanted }
}

/// The name of this project's herder instance (its cgroup subtree), the same
/// wherever its state went.
pub fn instance(config: &Config, file: &Path) -> String {
    config
        .supervisor
        .instance_name(&wanted_state_dir(config, file))
}

fn wanted_state_dir(config: &Config, file: &Path) -> PathBuf {
    config
        .supervisor
        .state_dir
        .clone()
        .unwrap_or_else(|| base_dir(file).join(".herd"))
}

/// Where the state goes when `.herd` cannot be made: `$XDG_RUNTIME_DIR/herd/`,
/// else a directory of this user's own under /tmp (`/tmp/herd-UID/`, mode
/// 0700), and in it the instance's (named after `wanted`, as its cgroups are).
fn fallback_state_dir(config: &Config, wanted: &Path) -> PathBuf {
    let instance = config.supervisor.instance_name(wanted);
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(run).join("herd").join(instance);
    }
    let uid = rustix::process::geteuid().as_raw();
    PathBuf::from(format!("/tmp/herd-{uid}")).join(instance)
}

/// The state directory `herd up` uses, made if it is not there: the one
/// [`state_dir`] names, or, when that cannot be made for want of a writable
/// file system or permission and herd.toml does not set one, the fallback,
/// which herder then names.
fn make_state_dir(config: &Config, file: &Path, private: Private) -> Result<PathBuf, String> {
    let wanted = state_dir(config, file);
    let why = match private.state_dir(&wanted) {
        Ok(()) => return Ok(wanted),
        Err(e) => e,
    };
    let cannot = |dir: &Path, e: &std::io::Error| format!("cannot create {}: {e}", dir.display());
    let refused =
        [libc::EROFS, libc::EACCES, libc::EPERM].contains(&why.raw_os_error().unwrap_or(0));
    if !refused || config.supervisor.state_dir.is_some() {
        return Err(cannot(&wanted, &why));
    }
    let fallback = fallback_state_dir(config, &wanted);
    if let Some(parent) = fallback.parent() {
        own_private_dir(parent).map_err(|e| cannot(parent, &e))?;
    }
    private
        .state_dir(&fallback)
        .map_err(|e| cannot(&fallback, &e))?;
    note(&format!(
        "state directory: {} ({} cannot be created: {why})",
        fallback.display(),
        wanted.display()
    ));
    Ok(fallback)
}

/// A directory only this user may enter, made if missing; one that is there
/// must be a real directory of this user's with no access for others (/tmp
/// is everyone's: a directory planted there is not taken).
fn own_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(false)
        .create(dir)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            if let Some(parent) = dir.parent().filter(|p| !p.exists()) {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(parent)?;
                return own_private_dir(dir);
            }
            return Err(e);
        }
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir)?;
    let uid = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private directory of uid {uid}",
            dir.display()
        )));
    }
    Ok(())
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
