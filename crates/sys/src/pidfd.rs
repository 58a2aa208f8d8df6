//! Signalling through pidfds, so a signal can never reach a recycled pid.
//!
//! A pidfd names one process for as long as the descriptor is open: if the process
//! has exited (and even been reaped and its pid reused), sending a signal through the
//! pidfd fails with `ESRCH` instead of hitting a stranger.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::process::Signal;
use rustix::process::{Pid, PidfdFlags, pidfd_open, pidfd_send_signal};

#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: i32,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. Only race-free while `pid` is an unreaped child of
    /// ours, or otherwise known not to have been recycled.
    pub fn open(pid: i32) -> io::Result<Pidfd> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let p = Pid::from_raw(pid).expect("positive");
        let fd = pidfd_open(p, PidfdFlags::empty())?;
        Ok(Pidfd { fd, pid })
    }

    /// A pidfd the kernel handed over with the process (`CLONE_PIDFD`).
    pub(crate) fn from_owned(fd: OwnedFd, pid: i32) -> Pidfd {
        Pidfd { fd, pid }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// A second descriptor for the same process (to wait on while this one
    /// stays to signal it).
    pub fn try_clone(&self) -> io::Result<Pidfd> {
        Ok(Pidfd {
            fd: self.fd.try_clone()?,
            pid: self.pid,
        })
    }

    /// Reaps the process if it is a child of ours that has exited; `None`
    /// while it runs, or when it is not ours to reap (already reaped, or
    /// another's child). Through the pidfd (`waitid(P_PIDFD)`), so it can
    /// only ever reap this process, never one that took its pid.
    pub fn reap(&self) -> Option<crate::ExitStatus> {
        use rustix::process::{WaitId, WaitIdOptions, waitid};
        loop {
            match waitid(
                WaitId::PidFd(self.fd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            ) {
                Ok(Some(st)) => {
                    return match (st.exit_status(), st.terminating_signal()) {
                        (Some(code), _) => Some(crate::ExitStatus::Code(code)),
                        (None, Some(sig)) => Some(crate::ExitStatus::Signal(sig)),
                        _ => None,
                    };
                }
                Err(rustix::io::Errno::INTR) => continue,
                _ => return None,
            }
        }
    }

    /// Sends `signal`; `Ok(false)` if the process has already exited.
    pub fn signal(&self, signal: i32) -> io::Result<bool> {
        let sig = to_signal(signal)?;
        match pidfd_send_signal(&self.fd, sig) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

impl Pidfd {
    /// Resolves once the process has exited, whoever its parent is and whoever
    /// reaps it: a pidfd turns readable when its process ends. Needs a tokio runtime.
    pub async fn exited(self) -> io::Result<()> {
        // SAFETY: the AsyncFd owns the descriptor, so it stays open and refers to
        // the same pidfd for the AsyncFd's whole life, as `register` requires.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(self.fd, tokio::io::Interest::READABLE)
        }?;
        let _ready = afd.readable().await?;
        Ok(())
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

pub(crate) fn to_signal(signal: i32) -> io::Result<Signal> {
    let valid =
        (1..=31).contains(&signal) || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal);
    if !valid {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: checked above to be a signal number the kernel accepts and that the
    // C library does not reserve for itself.
    Ok(Signal::from_named_raw(signal)
        .unwrap_or_else(|| unsafe { Signal::from_raw_unchecked(signal) }))
}

/// Signals `pid`, which must be a child of this process not yet reaped: a
/// zombie child keeps its pid until its parent collects it, so the signal
/// cannot reach a recycled one, and no pidfd need be held for it (one
/// descriptor a service fewer, for herders of thousands).
pub fn signal_child(pid: i32, signal: i32) -> io::Result<bool> {
    let sig = to_signal(signal)?;
    // Never 0 (our own group) or -1 (everything), nor init.
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let p = Pid::from_raw(pid).expect("positive");
    match rustix::process::kill_process(p, sig) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Signals the process group `pgid`.
///
/// Safe from recycling only while the group is known to exist: herder signals a
/// service's group while its leader (the main process) is unreaped, since a zombie
/// leader keeps the group id in use.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<bool> {
    let sig = to_signal(signal)?;
    // Never 0 (our own group), 1 or -1 (everything): only a service's own group.
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let p = Pid::from_raw(pgid).expect("positive");
    match rustix::process::kill_process_group(p, sig) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::SRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
