//! Waiting, without polling, for a file to change: inotify, driven by tokio.
//!
//! herder watches a cgroup's `cgroup.events`; the kernel signals a modification of it
//! whenever `populated` or `frozen` changes, so each wake-up is a real change.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::inotify;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An inotify instance watching one file for modification.
#[derive(Debug)]
pub struct FileWatch {
    fd: AsyncFd<OwnedFd>,
}

impl FileWatch {
    /// Watches `path`. Needs a tokio runtime.
    pub fn new(path: &Path) -> io::Result<FileWatch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        inotify::add_watch(&fd, path, inotify::WatchFlags::MODIFY)?;
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and names the
        // same inotify instance for the AsyncFd's whole life, as `register` requires.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(FileWatch { fd })
    }

    /// Resolves at the next modification (or at once if one is already queued).
    pub async fn changed(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let mut buf = [MaybeUninit::<u8>::uninit(); 1024];
            let mut got = false;
            // Drain everything queued: one wake-up per batch of changes.
            loop {
                match rustix::io::read(self.fd.get_ref(), &mut buf) {
                    Ok((filled, _)) if !filled.is_empty() => got = true,
                    Ok(_) => break,
                    Err(rustix::io::Errno::AGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if got {
                return Ok(());
            }
        }
    }
}
