//! Waiting, without polling, for a file to change, driven by tokio: inotify
//! ([`FileWatch`]) for ordinary files and directories, epoll's `EPOLLPRI`
//! ([`PriorityWatch`]) for kernfs files such as a cgroup's `cgroup.events`, which the
//! kernel signals whenever `populated` or `frozen` changes.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::event::{Timespec, epoll};
use rustix::fs::inotify;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Resolves once `fd` is readable (a listening socket: a connection waits in
/// its backlog), woken by epoll. Nothing is read. Needs a tokio runtime.
pub async fn readable(fd: std::sync::Arc<OwnedFd>) -> io::Result<()> {
    Arrivals::new(fd)?.next().await
}

/// Connections arriving on a listening socket that another process accepts:
/// epoll reports each arrival (edge-triggered), whether or not the backlog
/// was empty. Nothing is accepted or read.
#[derive(Debug)]
pub struct Arrivals {
    fd: AsyncFd<std::sync::Arc<OwnedFd>>,
}

impl Arrivals {
    /// Needs a tokio runtime.
    pub fn new(fd: std::sync::Arc<OwnedFd>) -> io::Result<Arrivals> {
        // SAFETY: the AsyncFd owns a reference to the descriptor, so it stays
        // open and names the same file for the AsyncFd's whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Arrivals { fd })
    }

    /// The next arrival (or a connection already waiting, the first time).
    pub async fn next(&self) -> io::Result<()> {
        let mut ready = self.fd.readable().await?;
        ready.clear_ready();
        Ok(())
    }
}

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

/// Waiting, without polling, for any of many kernfs files to change: epoll with
/// `EPOLLPRI`, driven by tokio.
///
/// kernfs (cgroupfs, sysfs) tells poll(2) of a change to a file such as
/// `cgroup.events` with `POLLPRI`, as it tells inotify of a modification. For
/// cgroup.events herder uses this rather than [`FileWatch`]: a descriptor added to
/// an epoll set needs no path lookup, and closing an epoll set is immediate, while
/// closing an inotify instance waits for fsnotify's SRCU grace period, which was a
/// good part of a PID 1's shutdown. Descriptors are edge-triggered: each change
/// wakes once, and the file need not be read to re-arm. A descriptor leaves the
/// set by itself when it is closed.
#[derive(Debug)]
pub struct PriorityWatch {
    epoll: AsyncFd<OwnedFd>,
}

impl PriorityWatch {
    /// A set watching nothing yet. Needs a tokio runtime.
    pub fn new() -> io::Result<PriorityWatch> {
        let fd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and names the
        // same epoll set for the AsyncFd's whole life, as `register` requires.
        let epoll = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(PriorityWatch { epoll })
    }

    /// Watches `fd` too, until it is closed. The first wait may wake once at once:
    /// kernfs reports a file never read as changed.
    pub fn add(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let flags = epoll::EventFlags::PRI | epoll::EventFlags::ET;
        epoll::add(
            self.epoll.get_ref(),
            fd,
            epoll::EventData::new_u64(0),
            flags,
        )?;
        Ok(())
    }

    /// Resolves at the next change of any watched file (or at once if one is
    /// already pending).
    pub async fn changed(&self) -> io::Result<()> {
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            let mut guard = self.epoll.readable().await?;
            let mut events = [MaybeUninit::<epoll::Event>::uninit(); 64];
            let mut got = false;
            // Drain everything pending: one wake-up per batch of changes.
            loop {
                match epoll::wait(self.epoll.get_ref(), &mut events, Some(&now)) {
                    Ok((ready, _)) if !ready.is_empty() => got = true,
                    Ok(_) => {
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
