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

/// An inotify instance watching files for modification.
///
/// One instance can watch many files ([`FileWatch::add`]); prefer that to one
/// instance per file: closing an inotify instance waits for an SRCU grace period
/// in the kernel (about a millisecond), so 500 instances cost half a second to
/// close. A watched file that is deleted (a removed cgroup) drops its watch by
/// itself, with one last wake-up.
#[derive(Debug)]
pub struct FileWatch {
    fd: AsyncFd<OwnedFd>,
}

impl FileWatch {
    /// Watches `path`. Needs a tokio runtime.
    pub fn new(path: &Path) -> io::Result<FileWatch> {
        let w = FileWatch::empty()?;
        w.add(path)?;
        Ok(w)
    }

    /// An instance watching nothing yet. Needs a tokio runtime.
    pub fn empty() -> io::Result<FileWatch> {
        let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)?;
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and names the
        // same inotify instance for the AsyncFd's whole life, as `register` requires.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(FileWatch { fd })
    }

    /// Watches `path` too: its modifications wake [`FileWatch::changed`].
    pub fn add(&self, path: &Path) -> io::Result<()> {
        inotify::add_watch(self.fd.get_ref(), path, inotify::WatchFlags::MODIFY)?;
        Ok(())
    }

    /// Resolves at the next modification of any watched file (or at once if one is
    /// already queued).
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
