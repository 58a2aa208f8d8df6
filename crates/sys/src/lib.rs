//! herder's system layer: the only crate with `unsafe`.
//!
//! - [`spawn`](mod@spawn): start a process in its own session, with default signal
//!   dispositions, an empty mask, rlimits and credentials set between clone and
//!   exec, and only the descriptors it is given;
//! - [`reap`](mod@reap): the one reaper, and subreaper duty;
//! - [`pidfd`]: signals that cannot hit a recycled pid;
//! - [`user`]: user and group lookups, done before the clone;
//! - [`notify`]: the sd_notify socket, with kernel-attested sender credentials;
//! - [`watch`]: inotify and epoll under tokio: files, and `cgroup.events` (`POLLPRI`);
//! - [`memory`]: giving freed memory back to the system after a burst.
//!
//! Containment itself (cgroups, process tracking) is the `herd-contain` crate.

pub mod memory;
pub mod notify;
pub mod pidfd;
pub mod reap;
pub mod spawn;
pub mod user;
pub mod watch;

pub use pidfd::Pidfd;
pub use reap::{ExitStatus, become_subreaper, has_children, reap};
pub use spawn::{Child, Credentials, Nofile, Rlimit, SpawnError, Spec, raise_nofile, spawn};
