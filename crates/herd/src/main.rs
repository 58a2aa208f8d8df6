//! `herd`, the command-line front of herder.
//!
//! The binary is thin: configuration lives in `herd-config`; each subcommand is a file
//! under `cmd/`.
//!
//! Exit codes: 0 success; 1 the configuration is invalid (every error is printed) or
//! herder could not run (for `doctor`: the backend asked for is unavailable); 2 the
//! command line is wrong; 3 (`up`) the shutdown had to SIGKILL a service or left
//! processes stuck.

mod cmd;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check => cmd::check::run(&cli.file),
        Command::Up { containment } => cmd::up::run(&cli.file, containment.map(Into::into)),
        Command::Doctor { containment } => cmd::doctor::run(containment.map(Into::into)),
        Command::Plan { json } => cmd::plan::run(&cli.file, json),
    }
}
