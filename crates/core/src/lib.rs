//! herder's engine.
//!
//! - [`machine`]: the per-service state machine, a pure `step` tested from tables.
//!
//! Orchestration (waves, readiness, output, the stop path) builds on it.

pub mod machine;

pub use machine::{Effect, Event, Machine, Policy, State, StopReason};
