//! herder's engine.
//!
//! - [`machine`]: the per-service state machine, a pure `step` tested from tables;
//! - [`engine`]: the supervisor loop that carries out its effects;
//! - [`log`]: herder's own lines, one write each;
//! - [`output`]: capturing services' output without blocking them;
//! - [`private`]: what herder writes, readable by its user (and group) only;
//! - [`spec`]: from configuration to what is spawned;
//! - [`state`]: the state file of what runs, and recovery after herder was killed.

#![forbid(unsafe_code)]

pub mod engine;
pub mod log;
pub mod machine;
pub mod output;
pub mod private;
mod ready;
pub mod sockets;
pub mod spec;
pub mod state;

pub use machine::{Effect, Event, Machine, Policy, State, StopReason};
