//! herder's wire types: what the control socket (`docs/api.md`) answers and
//! streams, shared by the server in `herd up` and every client (`herd ps`,
//! `herd events`, `herd reload`, `herd down`, `herd report`), so there is one
//! schema and no client decodes loose JSON.
//!
//! - [`status`]: a service as `herd ps` shows it, and the whole herd;
//! - [`event`]: the event stream, one [`Change`] a line;
//! - [`reload`]: what a reload does and how each service came out of it;
//! - [`report`]: the shutdown report (JSON, and a table; [`svg`] draws it);
//! - [`plan`]: the start and stop waves with their deadlines (`herd plan --json`);
//! - [`answer`]: the small bodies (`{"message"}`, `{"error"}`).
//!
//! Only serde here: the server and the clients depend on this crate, and the
//! clients on nothing of the engine.

#![forbid(unsafe_code)]

pub mod answer;
pub mod event;
pub mod plan;
pub mod reload;
pub mod report;
pub mod status;
pub mod svg;

pub use answer::{ErrorAnswer, Message, ShutdownAnswer};
pub use event::Change;
pub use plan::Plan;
pub use reload::{ReloadAnswer, ReloadPlan, ReloadResult};
pub use report::{Report, ServiceReport};
pub use status::{Overview, ProcessInfo, ServiceStatus, ShutdownProgress, StopProgress, Unclaimed};
