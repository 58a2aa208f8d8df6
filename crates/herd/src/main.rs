//! `herd`, the command-line front of herder.
//!
//! The binary is thin: configuration lives in `herd-config`; each subcommand is a file
//! under `cmd/`.
//!
//! Exit codes: 0 success; 1 the configuration is invalid (every error is printed) or
//! herder could not run (for `doctor`: the backend asked for is unavailable; for
//! `down`/`report`: no herder or no report); 2 the command line is wrong. `up` (and
//! `down --wait`, which passes on `up`'s code): 3 the shutdown had to SIGKILL
//! something, 4 processes survived SIGKILL and were left (stuck); when the `main`
//! service ended the run, its exit code (128+N for signal N) unless 4 applies.

#![forbid(unsafe_code)]

mod api;
mod cmd;
mod output;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use herd_config::Containment;

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "herder: a process supervisor whose stop is complete, bounded and explained"
)]
struct Cli {
    /// The configuration file [default: $HERD_FILE, else the nearest herd.toml
    /// in this directory or one above it; as root, /etc/herd/herd.toml when
    /// there is none].
    #[arg(short = 'f', long = "file", global = true)]
    file: Option<PathBuf>,

    /// The control socket (default: `supervisor.socket`; else /run/herd.sock for a
    /// configuration under /etc, herd.sock in the state directory otherwise).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration; print every error with file:line:column.
    Check,
    /// Run the services in the foreground until SIGINT or SIGTERM.
    Up {
        /// Use this containment backend instead of `supervisor.containment`.
        #[arg(long, value_parser = containment())]
        containment: Option<Containment>,
        /// Act as init: at the end, kill and reap every orphan re-parented to
        /// herder. Implied when herder is PID 1.
        #[arg(long)]
        init: bool,
        /// Serve /healthz, /readyz and /metrics (only) over TCP at this address.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
        /// Run in the background: return once every service is up (0), or one
        /// has failed (1); herder's messages go to herd.log in the state
        /// directory, and `herd down` stops it.
        #[arg(short = 'd', long)]
        detach: bool,
    },
    /// Shut down the running herder, as SIGTERM would.
    Down {
        /// Wait until it has exited, print its shutdown report and exit with its code.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (default: the shutdown budget + 5s).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// A live view of the services, their logs and events, and of a
    /// shutdown as it happens (keys: ? for help, q to leave).
    Top,
    /// List the services of the running herder with their state.
    Ps {
        /// Only these services (all without).
        names: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a service (and what it requires); returns once it is ready.
    Start(ActArgs),
    /// Stop a service (after what requires it); returns once every process is gone.
    Stop(ActArgs),
    /// Stop and start a service and what requires it; returns once it is ready.
    Restart(ActArgs),
    /// Send a signal to a service's main process (or, with --all, every process).
    Signal {
        /// The service.
        name: String,
        /// SIGHUP, HUP, 1, …
        signal: String,
        /// Every process of the service, not only the main one.
        #[arg(long)]
        all: bool,
    },
    /// Print a service's log: the last lines, and with -f what follows.
    Logs {
        /// The services (default: every one).
        names: Vec<String>,
        /// Keep printing new lines as they are written (after `logs`, `-f` means
        /// this; give the file before the subcommand or as --file).
        #[arg(long)]
        follow: bool,
        /// Only the last N lines of each (default: the whole current log file).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
        /// One JSON object a line: {"service", "line", "time"}.
        #[arg(long)]
        json: bool,
        /// Show the time each line was read (UTC).
        #[arg(short = 't', long)]
        timestamps: bool,
    },
    /// Print every state change as it happens, until herder finishes.
    Events {
        /// One JSON object a line, as the socket sends them.
        #[arg(long)]
        json: bool,
    },
    /// Apply the changed configuration file by difference: added services start,
    /// removed ones stop, changed ones restart, the others keep running.
    Reload {
        /// Give up waiting after this long (the reload goes on); default 60s.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Print the JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions.
    Man,
    /// Show the last shutdown's report.
    Report {
        /// Print the JSON record.
        #[arg(long)]
        json: bool,
        /// Write the timeline as SVG to FILE (`-` for stdout).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// Show the containment backends this host offers and what each guarantees.
    Doctor {
        /// Report on this backend as the one asked for.
        #[arg(long, value_parser = containment())]
        containment: Option<Containment>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the start waves, the stop waves and each service's shutdown deadline.
    Plan {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct ActArgs {
    /// The service.
    name: String,
    /// Give up waiting after this long (the action goes on); default 60s.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<std::time::Duration>,
}

/// Parses a backend's name into the one enum that names it everywhere; the help
/// lists the names.
fn containment() -> impl clap::builder::TypedValueParser<Value = Containment> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Containment::ALL.map(Containment::name)).map(|s| {
        s.parse::<Containment>()
            .expect("one of the possible values")
    })
}

fn act(file: &Path, cli: &Cli, verb: &str, a: &ActArgs) -> ExitCode {
    let action = cmd::ctl::Action::Act {
        verb,
        name: &a.name,
        timeout: a.timeout,
    };
    cmd::ctl::run(file, cli.socket.as_deref(), action)
}

/// The configuration file: `-f`, else `$HERD_FILE`, else ./herd.toml or the
/// nearest one above, else (as root) the host's /etc/herd/herd.toml if there is
/// one, else ./herd.toml (which then is said to be missing).
fn config_file(flag: Option<&Path>) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(f) = std::env::var_os("HERD_FILE").filter(|f| !f.is_empty()) {
        return PathBuf::from(f);
    }
    let local = PathBuf::from("herd.toml");
    if local.exists() {
        return local;
    }
    // As git finds its repository: the nearest directory above that has one.
    let above = std::env::current_dir().ok().and_then(|cwd| {
        cwd.ancestors()
            .skip(1)
            .map(|d| d.join("herd.toml"))
            .find(|f| f.is_file())
    });
    if let Some(found) = above {
        return found;
    }
    let host = PathBuf::from(HOST_CONFIG);
    if rustix::process::geteuid().is_root() && host.exists() {
        return host;
    }
    local
}

const HOST_CONFIG: &str = "/etc/herd/herd.toml";

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    herd_config::units::parse_duration(s)
}

/// `herd logs -f` follows, as `tail -f` does, although `-f` names the file
/// everywhere else: after the `logs` subcommand, `-f` is read as `--follow`.
fn follow_flag(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let takes_value = |a: &std::ffi::OsString| a == "-f" || a == "--file" || a == "--socket";
    let sub = (1..args.len()).find(|&i| args[i] == "logs" && !takes_value(&args[i - 1]));
    let Some(sub) = sub else { return args };
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > sub && a == "-f" {
                "--follow".into()
            } else {
                a
            }
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(follow_flag(std::env::args_os().collect()));
    let file = &config_file(cli.file.as_deref());
    let socket = cli.socket.as_deref();
    match &cli.command {
        Command::Check => cmd::check::run(file),
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "herd", &mut text);
            output::stdout(&String::from_utf8_lossy(&text))
        }
        Command::Man => {
            let mut text = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut text) {
                Ok(()) => output::stdout(&String::from_utf8_lossy(&text)),
                Err(e) => {
                    output::stderr(&format!("herd: {e}\n"));
                    ExitCode::from(1)
                }
            }
        }
        Command::Up {
            containment,
            init,
            http,
            detach: true,
        } => cmd::detach::run(file, socket, *containment, *init, *http),
        Command::Up {
            containment,
            init,
            http,
            detach: false,
        } => cmd::up::run(file, socket, *containment, *init, *http),
        Command::Top => match cmd::ctl::socket(file, socket) {
            Ok(sock) => cmd::top::run(&sock),
            Err(code) => code,
        },
        Command::Ps { names, json } => {
            let action = cmd::ctl::Action::Ps { names, json: *json };
            cmd::ctl::run(file, socket, action)
        }
        Command::Start(a) => act(file, &cli, "start", a),
        Command::Stop(a) => act(file, &cli, "stop", a),
        Command::Restart(a) => act(file, &cli, "restart", a),
        Command::Logs {
            names,
            follow,
            lines,
            json,
            timestamps,
        } => cmd::ctl::run(
            file,
            socket,
            cmd::ctl::Action::Logs {
                names,
                follow: *follow,
                lines: *lines,
                json: *json,
                timestamps: *timestamps,
            },
        ),
        Command::Events { json } => {
            cmd::ctl::run(file, socket, cmd::ctl::Action::Events { json: *json })
        }
        Command::Reload { timeout, json } => cmd::ctl::run(
            file,
            socket,
            cmd::ctl::Action::Reload {
                timeout: *timeout,
                json: *json,
            },
        ),
        Command::Signal { name, signal, all } => cmd::ctl::run(
            file,
            socket,
            cmd::ctl::Action::Signal {
                name,
                signal,
                all: *all,
            },
        ),
        Command::Down { wait, timeout } => cmd::down::run(file, socket, *wait, *timeout),
        Command::Report { json, svg } => cmd::report::run(file, *json, svg.as_deref()),
        Command::Doctor { containment, json } => cmd::doctor::run(file, *containment, *json),
        Command::Plan { json } => cmd::plan::run(file, *json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dash_f_after_logs_is_follow_and_names_the_file_before_it() {
        let v = |args: &[&str]| -> Vec<String> {
            follow_flag(args.iter().map(Into::into).collect())
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            v(&["herd", "-f", "x.toml", "logs", "-f", "web"]),
            ["herd", "-f", "x.toml", "logs", "--follow", "web"]
        );
        // A file named `logs` is a file.
        assert_eq!(
            v(&["herd", "-f", "logs", "ps"]),
            ["herd", "-f", "logs", "ps"]
        );
        assert_eq!(v(&["herd", "up", "-f", "a"]), ["herd", "up", "-f", "a"]);
        let cli = Cli::try_parse_from(v(&["herd", "logs", "-f", "-n", "3", "web"])).unwrap();
        assert!(matches!(
            cli.command,
            Command::Logs {
                follow: true,
                lines: Some(3),
                ..
            }
        ));
    }
}
