//! The validated configuration: what the rest of herder reads. Every value here has
//! passed validation, so consumers never re-check shapes; defaults are filled in.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::units::{Backoff, Signal, StartLimit};

/// A whole herd.toml, includes merged.
#[derive(Clone, Debug)]
pub struct Config {
    /// Services by name (names are unique across all included files).
    pub services: BTreeMap<String, Service>,
    /// The service whose end ends the run (container entrypoint use).
    pub main: Option<String>,
    pub shutdown: Shutdown,
    pub supervisor: Supervisor,
    pub logs: Logs,
    /// Every file read, the main one first.
    pub files: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Service {
    pub name: String,
    /// The file that defines it and the line of its table.
    pub defined_in: PathBuf,
    pub line: usize,
    pub command: Command,
    pub env: BTreeMap<String, String>,
    /// Resolved against the defining file's directory.
    pub env_file: Option<PathBuf>,
    /// Resolved against the defining file's directory, which is also the default.
    pub workdir: PathBuf,
    pub user: Option<String>,
    pub group: Option<String>,
    pub kind: Kind,
    /// Must be ready before this starts; stopping one stops this first.
    pub requires: Vec<String>,
    /// Ordering only.
    pub after: Vec<String>,
    pub ready: Option<Ready>,
    /// Liveness, checked while it runs ready.
    pub health: Option<Health>,
    /// sd_notify's watchdog: `WATCHDOG=1` must come at least this often once
    /// it is ready.
    pub watchdog: Option<Duration>,
    /// Sent when the watchdog deadline is missed (SIGABRT, as systemd: a core
    /// dump shows where it hung).
    pub watchdog_signal: Signal,
    pub restart: Restart,
    pub stop: Stop,
    pub limits: Limits,
    /// Listening sockets herder binds and holds, passed with systemd's
    /// protocol (`LISTEN_FDS`) to every run.
    pub sockets: Vec<Socket>,
    /// Descriptors the service may hand herder to keep across its restarts
    /// (sd_notify `FDSTORE=1`); 0: none.
    pub fd_store_max: u32,
    /// Started by the first connection to one of its `sockets`, not with the
    /// others; after a clean exit (idle), started again by the next one.
    pub on_demand: bool,
    /// With `on_demand`: stopped when no connection has arrived for this
    /// long, and started again by the next.
    pub idle_stop: Option<Duration>,
}

/// A listening socket of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub listen: Listen,
    /// Its `LISTEN_FDNAMES` entry (the service's name unless set).
    pub name: String,
    /// The listen(2) backlog.
    pub backlog: u32,
    /// A Unix socket's file mode.
    pub mode: Option<u32>,
    /// A Unix socket file's owner (name or numeric uid).
    pub owner: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(std::net::SocketAddr),
    /// A path, resolved against the defining file's directory.
    Unix(PathBuf),
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "tcp://{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Service {
    /// Every service this one waits for (requires and after), without repeats.
    pub fn ordering_deps(&self) -> impl Iterator<Item = &str> {
        self.requires
            .iter()
            .chain(self.after.iter().filter(|a| !self.requires.contains(a)))
            .map(String::as_str)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run directly, no shell.
    Argv(Vec<String>),
    /// `shell = true`: run by `/bin/sh -c`.
    Shell(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Long,
    Oneshot,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ready {
    pub check: ReadyCheck,
    /// Between attempts of a polled check (tcp, http, exec).
    pub interval: Duration,
    /// The whole wait; passing it is a start failure.
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ReadyCheck {
    /// `host:port` to connect to.
    Tcp(String),
    /// An `http://` URL that must answer 2xx.
    Http(String),
    /// A command that must exit 0.
    Exec(Vec<String>),
    /// A regular expression matched against each line of output.
    Log(String),
    /// sd_notify `READY=1`.
    Notify,
    /// Ready this long after the start.
    Delay(Duration),
}

impl ReadyCheck {
    /// Whether the check is attempted repeatedly (so `interval` means something).
    pub fn is_polled(&self) -> bool {
        matches!(
            self,
            ReadyCheck::Tcp(_) | ReadyCheck::Http(_) | ReadyCheck::Exec(_)
        )
    }
}

/// A liveness check, run every `interval` once the service is ready.
#[derive(Clone, Debug, PartialEq)]
pub struct Health {
    /// `tcp`, `http` or `exec` (the polled readiness checks).
    pub check: ReadyCheck,
    /// From the end of one attempt to the start of the next.
    pub interval: Duration,
    /// One attempt that takes longer has failed.
    pub timeout: Duration,
    /// Failed attempts in a row that make the service unhealthy.
    pub failures: u32,
    /// After it becomes ready, failures do not count for this long, unless an
    /// attempt has passed since (as Docker's `start_period`).
    pub start_period: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Restart {
    pub policy: RestartPolicy,
    pub backoff: Backoff,
    pub limit: StartLimit,
    /// A run this long resets the backoff to its floor.
    pub stable: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// The stop signal goes to every process of the service.
    Group,
    /// To the main process only; the rest are killed at the end.
    Main,
    /// To the main process first, then SIGKILL to the rest once it has exited.
    Mixed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stop {
    pub signal: Signal,
    /// The whole graceful window: shutdown event, `exec` hook and the wait for every
    /// process to exit. SIGKILL follows it.
    pub timeout: Duration,
    pub mode: StopMode,
    /// A pre-stop (drain) hook, run before the signal, bounded by the deadline.
    pub exec: Option<Vec<String>>,
    /// Deliver a shutdown event (reason, deadline) before the signal.
    pub notify: bool,
}

/// Resource limits: the memory, pids and cpu ones are cgroup limits, the rest rlimits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Bytes (`memory.max`).
    pub memory: Option<u64>,
    /// Tasks (`pids.max`).
    pub pids: Option<u64>,
    /// CPUs, may be fractional (`cpu.max`).
    pub cpu: Option<f64>,
    /// `RLIMIT_NOFILE`.
    pub nofile: Option<u64>,
    /// `RLIMIT_NPROC`.
    pub nproc: Option<u64>,
    /// Bytes (`RLIMIT_CORE`).
    pub core: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Shutdown {
    /// The budget for a whole shutdown, every service together.
    pub timeout: Duration,
    /// Time kept after each wave's SIGKILL for the kernel to tear processes down and
    /// for herder to verify they are gone (see [`crate::plan`]).
    pub kill_reserve: Duration,
}

/// A containment backend: the one name for it from `supervisor.containment`
/// to `herd up --containment` to the `herd-contain` crate that implements it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Containment {
    /// A cgroup v2 per run.
    Cgroup2,
    /// A cgroup v1 freezer cgroup per run.
    Freezer,
    /// No cgroups: the process tree, tracked through /proc.
    None,
}

impl Containment {
    /// Every backend, best first.
    pub const ALL: [Containment; 3] = [
        Containment::Cgroup2,
        Containment::Freezer,
        Containment::None,
    ];

    /// Its name in `herd.toml`, on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Containment::Cgroup2 => "cgroup2",
            Containment::Freezer => "freezer",
            Containment::None => "none",
        }
    }
}

impl std::fmt::Display for Containment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Containment {
    type Err = String;

    fn from_str(s: &str) -> Result<Containment, String> {
        Containment::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown containment {s:?} (cgroup2, freezer or none)"))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Supervisor {
    /// The backend asked for; `None` (`auto`) is the best this host offers.
    pub containment: Option<Containment>,
    /// Logs, state file and reports; resolved against the main file's directory.
    pub state_dir: Option<PathBuf>,
    /// The control socket; resolved against the main file's directory.
    pub socket: Option<PathBuf>,
    /// A group whose members may use the control socket besides its owner and root.
    pub socket_group: Option<String>,
    /// Control connections served at once; more are answered 503 and closed.
    pub max_connections: u32,
    /// The name of this herder's cgroup subtree (`herd/NAME/`); `None`: one
    /// made from the state directory ([`Supervisor::instance_name`]).
    pub instance: Option<String>,
}

impl Supervisor {
    /// The name of this herder's own cgroup subtree: `instance`, or the
    /// project's directory name and a hash of the state directory
    /// (`shop-1f3a9c2e` for `/srv/shop/.herd`), so an operator can tell whose
    /// it is and two projects of one name still differ.
    pub fn instance_name(&self, state_dir: &std::path::Path) -> String {
        if let Some(i) = &self.instance {
            return i.clone();
        }
        let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let own = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // `.herd` says little: the project's directory above it says whose.
        let named = match own.starts_with('.') || own.is_empty() {
            true => dir
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str()),
            false => Some(own),
        };
        let mut name: String = named
            .unwrap_or("herd")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            name.insert(0, 'h');
        }
        // FNV-1a: stable across builds and runs, unlike std's hasher.
        let hash = dir
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("{name}-{:08x}", hash as u32)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Logs {
    /// A service's log file is rotated when it reaches this size.
    pub max_size: u64,
    /// How many rotated files are kept besides the current one.
    pub keep: u32,
    /// Services' output goes to log files as well as herder's stdout; `false`:
    /// stdout only, as container platforms collect it.
    pub files: bool,
}

/// Defaults, in one place so the README's reference can be checked against them.
pub mod defaults {
    use std::time::Duration;

    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(25);
    pub const KILL_RESERVE: Duration = Duration::from_millis(500);
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
    pub const READY_INTERVAL: Duration = Duration::from_millis(500);
    pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
    pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
    pub const HEALTH_FAILURES: u32 = 3;
    pub const BACKOFF: &str = "200ms..30s";
    pub const START_LIMIT: &str = "5/1m";
    pub const STABLE: Duration = Duration::from_secs(10);
    pub const LOG_MAX_SIZE: u64 = 10 << 20;
    pub const LOG_KEEP: u32 = 3;
    pub const MAX_CONNECTIONS: u32 = 256;
    pub const SOCKET_BACKLOG: u32 = 4096;
}
