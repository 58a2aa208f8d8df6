//! herder's engine.
//!
//! - [`machine`]: the per-service state machine, a pure `step` tested from tables;
//! - [`engine`]: the supervisor loop that carries out its effects;
//! - [`output`]: capturing services' output without blocking them;
//! - [`spec`]: from configuration to what is spawned.

pub mod engine;
pub mod machine;
pub mod output;
mod ready;
pub mod spec;

pub use machine::{Effect, Event, Machine, Policy, State, StopReason};
