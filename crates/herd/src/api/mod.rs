//! The control socket: [`server`] runs inside `herd up`, [`client`] in the commands
//! that talk to it. See `docs/api.md` for the routes.

pub mod client;
pub mod health;
pub mod logs;
pub mod request;
pub mod server;

use std::path::{Path, PathBuf};

use herd_config::Config;
use herd_core::log::note;

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

/// Failed accepts on one listener. Out of descriptors, say, nothing announces when
/// one is free again: the listener pauses a little before its next try, and says so
/// once per run of failures rather than twenty times a second.
pub(crate) struct AcceptErrors {
    what: &'static str,
    failed: u64,
}

impl AcceptErrors {
    const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

    pub(crate) fn new(what: &'static str) -> Self {
        AcceptErrors { what, failed: 0 }
    }

    /// An accept worked: ends a run of failures.
    pub(crate) fn accepted(&mut self) {
        if self.failed > 0 {
            note(&format!(
                "{}: accepting again after {} failed accept(s)",
                self.what, self.failed
            ));
            self.failed = 0;
        }
    }

    pub(crate) async fn failed(&mut self, e: std::io::Error) {
        if self.failed == 0 {
            note(&format!("{}: accept failed: {e}; retrying", self.what));
        }
        self.failed += 1;
        tokio::time::sleep(Self::PAUSE).await;
    }
}

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
