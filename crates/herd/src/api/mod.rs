//! The control socket: [`server`] runs inside `herd up`, [`client`] in the commands
//! that talk to it. See `docs/api.md` for the routes.

pub mod client;
pub mod health;
pub mod server;

use std::path::{Path, PathBuf};

use herd_config::Config;

/// The socket: `--socket`, else `supervisor.socket`, else `herd.sock` in the state
/// directory.
pub fn socket_path(config: &Config, file: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| config.supervisor.socket.clone())
        .unwrap_or_else(|| crate::cmd::up::state_dir(config, file).join("herd.sock"))
}
