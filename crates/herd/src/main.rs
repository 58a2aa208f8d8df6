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

mod api;
mod cmd;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herd",
    version,
    about = "herder: a process supervisor whose stop is complete, bounded and explained"
)]
struct Cli {
    /// The configuration file.
    #[arg(short = 'f', long = "file", global = true, default_value = "herd.toml")]
    file: PathBuf,

    /// The control socket (default: `supervisor.socket`, else herd.sock in the state
    /// directory).
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
        #[arg(long, value_enum)]
        containment: Option<Backend>,
        /// Act as init: at the end, kill and reap every orphan re-parented to
        /// herder. Implied when herder is PID 1.
        #[arg(long)]
        init: bool,
        /// Serve /healthz, /readyz and /metrics (only) over TCP at this address.
        #[arg(long, value_name = "ADDR")]
        http: Option<std::net::SocketAddr>,
    },
    /// Shut down the herder running this configuration (SIGTERM through a pidfd).
    Down {
        /// Wait until it has exited, print its shutdown report and exit with its code.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (default: the shutdown budget + 5s).
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
    },
    /// List the services of the running herder with their state.
    Ps {
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
        #[arg(long, value_enum)]
        containment: Option<Backend>,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum Backend {
    Cgroup2,
    Freezer,
    None,
}

impl From<Backend> for herd_contain::Kind {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Cgroup2 => herd_contain::Kind::Cgroup2,
            Backend::Freezer => herd_contain::Kind::Freezer,
            Backend::None => herd_contain::Kind::None,
        }
    }
}

fn act(cli: &Cli, verb: &str, a: &ActArgs) -> ExitCode {
    let action = cmd::ctl::Action::Act {
        verb,
        name: &a.name,
        timeout: a.timeout,
    };
    cmd::ctl::run(&cli.file, cli.socket.as_deref(), action)
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    herd_config::units::parse_duration(s)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Check => cmd::check::run(&cli.file),
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
        } => cmd::up::run(
            &cli.file,
            cli.socket.as_deref(),
            containment.map(Into::into),
            *init,
            *http,
        ),
        Command::Ps { json } => cmd::ctl::run(
            &cli.file,
            cli.socket.as_deref(),
            cmd::ctl::Action::Ps { json: *json },
        ),
        Command::Start(a) => act(&cli, "start", a),
        Command::Stop(a) => act(&cli, "stop", a),
        Command::Restart(a) => act(&cli, "restart", a),
        Command::Signal { name, signal, all } => cmd::ctl::run(
            &cli.file,
            cli.socket.as_deref(),
            cmd::ctl::Action::Signal {
                name,
                signal,
                all: *all,
            },
        ),
        Command::Down { wait, timeout } => cmd::down::run(&cli.file, *wait, *timeout),
        Command::Report { json, svg } => cmd::report::run(&cli.file, *json, svg.as_deref()),
        Command::Doctor { containment } => cmd::doctor::run(containment.map(Into::into)),
        Command::Plan { json } => cmd::plan::run(&cli.file, *json),
    }
}
