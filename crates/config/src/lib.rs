//! herd.toml for herder: the schema, validation that reports every error at once with
//! its file, line, column and key, the dependency graph and the shutdown budget planner.
//!
//! This crate does no I/O beyond reading the configuration files, and starts nothing:
//! the engine takes a validated [`Config`], the [`DepGraph`]'s waves and the
//! [`ShutdownPlan`] from here.
//!
//! ```no_run
//! let config = match herd_config::load("herd.toml".as_ref()) {
//!     Ok(c) => c,
//!     Err(diagnostics) => {
//!         eprint!("{diagnostics}"); // one `file:line:col: key: message` per line
//!         std::process::exit(1);
//!     }
//! };
//! let plan = herd_config::shutdown_plan(&config);
//! assert!(plan.end <= plan.budget);
//! ```
//!
//! # How it works
//!
//! - [`load()`] parses each file into a spanned TOML tree and walks it by hand (see the
//!   [`load`](mod@load) module for why not serde), then runs the checks that need every file.
//! - [`DepGraph`] computes cycles and the start and stop waves.
//! - [`plan`](mod@plan) shares the shutdown budget among stop waves; its module docs
//!   state the rule.
//!
//! # Caveats
//!
//! - Users, groups, programs, `workdir` and `env_file` are not looked up here: they may
//!   legitimately exist only on the host that runs the services, and are checked when a
//!   service starts.
//! - TOML syntax errors are recovered from on a best-effort basis; after one, a later
//!   error in the same file may be a consequence of the first.

#![forbid(unsafe_code)]

mod diag;
pub mod graph;
mod load;
pub mod plan;
mod schema;
pub mod units;

pub use diag::{Diagnostic, Diagnostics, Position};
pub use graph::DepGraph;
pub use load::{load, load_str};
pub use plan::{ShutdownPlan, shutdown_plan};
pub use schema::*;
