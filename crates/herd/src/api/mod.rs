//! The control socket: [`server`] runs inside `herd up`, [`client`] in the commands
//! that talk to it. See `docs/api.md` for the routes.

pub mod client;
pub mod health;
pub mod logs;
pub mod request;
pub mod server;

use std::path::{Path, PathBuf};

use herd_config::Config;

/// The socket: `--socket`, else `supervisor.socket`, else for a host's
/// configuration (a file under /etc, which root runs) [`HOST_SOCKET`], else
/// `herd.sock` in the project's state directory.
pub fn socket_path(config: &Config, file: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| config.supervisor.socket.clone())
        .unwrap_or_else(|| {
            if is_host_config(file) {
                PathBuf::from(HOST_SOCKET)
            } else {
                crate::cmd::up::state_dir(config, file).join("herd.sock")
            }
        })
}

/// The socket of the host's herder.
pub const HOST_SOCKET: &str = "/run/herd.sock";

/// A configuration under /etc is the host's, not a project's.
fn is_host_config(file: &Path) -> bool {
    std::fs::canonicalize(file).is_ok_and(|p| p.starts_with("/etc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_under_etc_gets_the_host_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herd.toml");
        std::fs::write(&file, "[services.a]\ncommand = [\"true\"]\n").unwrap();
        let config = herd_config::load(&file).unwrap();
        assert_eq!(
            socket_path(&config, &file, None),
            dir.path().join(".herd/herd.sock")
        );
        // Any file that exists under /etc will do: only its place is looked at.
        assert_eq!(
            socket_path(&config, Path::new("/etc/passwd"), None),
            PathBuf::from(HOST_SOCKET)
        );
        let flag = Path::new("/tmp/x.sock");
        assert_eq!(socket_path(&config, &file, Some(flag)), flag);
    }
}
