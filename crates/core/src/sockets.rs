//! Listening sockets herder binds for a service and holds across its runs
//! (`sockets = [...]`), passed to each run with systemd's protocol: from
//! descriptor 3 on, `LISTEN_FDS`, `LISTEN_PID` (written by the child itself,
//! see [`herd_sys::Spec::pid_env`]) and `LISTEN_FDNAMES`.
//!
//! # How it works
//!
//! - A service's sockets are bound at its first start and kept while it
//!   restarts (a crash, `herd restart`, a reload that leaves them as they
//!   were): connections that arrive meanwhile wait in the backlog, and the next
//!   run accepts them. They are closed when it is stopped for good (stopped,
//!   exited or failed with no restart coming), or when a reload changes them;
//!   a Unix socket's file is removed then.
//! - TCP sockets get `SO_REUSEADDR`; a Unix socket's stale file (a socket left
//!   by a herder that was killed) is removed before binding, and its mode and
//!   owner are set before `listen`, so no one else can connect in between.
//!
//! # Caveats
//!
//! - The descriptors are blocking, as systemd passes them by default.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use herd_config::{Listen, Socket};

/// Binds and listens on `s`.
pub fn bind(s: &Socket) -> io::Result<OwnedFd> {
    let backlog = i32::try_from(s.backlog).unwrap_or(i32::MAX);
    match &s.listen {
        Listen::Tcp(addr) => {
            let family = match addr {
                std::net::SocketAddr::V4(_) => AddressFamily::INET,
                std::net::SocketAddr::V6(_) => AddressFamily::INET6,
            };
            let fd =
                rustix::net::socket_with(family, SocketType::STREAM, SocketFlags::CLOEXEC, None)?;
            rustix::net::sockopt::set_socket_reuseaddr(&fd, true)?;
            rustix::net::bind(&fd, addr)?;
            rustix::net::listen(&fd, backlog)?;
            Ok(fd)
        }
        Listen::Unix(path) => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            let fd = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )?;
            rustix::net::bind(&fd, &SocketAddrUnix::new(path.as_path())?)?;
            if let Some(mode) = s.mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            if let Some(owner) = &s.owner {
                let c = herd_sys::user::credentials(owner, None)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                std::os::unix::fs::chown(path, Some(c.uid), Some(c.gid))?;
            }
            rustix::net::listen(&fd, backlog)?;
            Ok(fd)
        }
    }
}

/// A service's sockets, held: closed when dropped, their Unix socket files
/// removed with them.
#[derive(Debug)]
pub struct Bound {
    pub fds: Vec<Arc<OwnedFd>>,
    paths: Vec<PathBuf>,
}

impl Drop for Bound {
    fn drop(&mut self) {
        for p in &self.paths {
            if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Binds every socket of a service, or says which could not be bound.
pub fn bind_all(sockets: &[Socket]) -> Result<Bound, String> {
    let mut bound = Bound {
        fds: Vec::new(),
        paths: Vec::new(),
    };
    for s in sockets {
        let fd = bind(s).map_err(|e| format!("cannot listen on {}: {e}", s.listen))?;
        bound.fds.push(Arc::new(fd));
        if let Listen::Unix(p) = &s.listen {
            bound.paths.push(p.clone());
        }
    }
    Ok(bound)
}

/// A wait for a connection on any of a service's sockets; ends when dropped.
#[derive(Debug)]
pub struct Watch {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Calls `ready` when a connection waits on one of `fds` (they turn readable
/// with a connection in their backlog; it is left there for the service to
/// accept). Woken by epoll: nothing polls. A socket that cannot be watched
/// calls `ready` at once: the service then starts now rather than never.
pub fn watch(fds: &[Arc<OwnedFd>], ready: impl Fn() + Send + Sync + 'static) -> Watch {
    let ready = Arc::new(ready);
    each(fds, move |fd| {
        let ready = ready.clone();
        async move {
            if let Err(e) = herd_sys::watch::readable(fd).await {
                crate::log::note(&format!(
                    "cannot wait for a connection ({e}): starting the service now"
                ));
            }
            ready();
        }
    })
}

/// Calls `arrived` for every connection that arrives on one of `fds` while
/// the service accepts them (an on-demand service's activity, for
/// `idle_stop`); ends when dropped.
pub fn activity(fds: &[Arc<OwnedFd>], arrived: impl Fn() + Send + Sync + 'static) -> Watch {
    let arrived = Arc::new(arrived);
    each(fds, move |fd| {
        let arrived = arrived.clone();
        async move {
            let arrivals = match herd_sys::watch::Arrivals::new(fd) {
                Ok(a) => a,
                Err(e) => return crate::log::note(&format!("cannot watch a socket: {e}")),
            };
            while arrivals.next().await.is_ok() {
                arrived();
            }
        }
    })
}

/// A task per socket of `fds`, each `task` of it; all end with the [`Watch`].
fn each<F>(fds: &[Arc<OwnedFd>], task: impl Fn(Arc<OwnedFd>) -> F) -> Watch
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    Watch {
        tasks: fds
            .iter()
            .map(|fd| tokio::spawn(task(fd.clone())))
            .collect(),
    }
}

/// Connections open now on `sockets` (accepted, not yet closed), from
/// /proc/net: TCP connections whose local address is one of them, Unix ones
/// connected to one of their paths.
pub fn open_connections(sockets: &[Socket]) -> usize {
    let mut open = 0;
    let tcp: Vec<std::net::SocketAddr> = sockets
        .iter()
        .filter_map(|s| match s.listen {
            Listen::Tcp(a) => Some(a),
            Listen::Unix(_) => None,
        })
        .collect();
    if !tcp.is_empty() {
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            open += text
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // local_address is HEXIP:HEXPORT; st 01 is ESTABLISHED, 03
                    // SYN_RECV, 08 CLOSE_WAIT (TIME_WAIT, 06, is over).
                    let port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
                    ["01", "03", "08"].contains(f.get(3)?).then_some(port)
                })
                .filter(|port| tcp.iter().any(|a| a.port() == *port))
                .count();
        }
    }
    let unix: Vec<&std::path::Path> = sockets
        .iter()
        .filter_map(|s| match &s.listen {
            Listen::Unix(p) => Some(p.as_path()),
            Listen::Tcp(_) => None,
        })
        .collect();
    if !unix.is_empty() {
        let text = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        // Num RefCount Protocol Flags Type St Inode Path; St 03 is connected.
        open += text
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(5) == Some(&"03")
                    && f.get(7)
                        .is_some_and(|p| unix.iter().any(|u| u.as_os_str() == *p))
            })
            .count();
    }
    open
}
