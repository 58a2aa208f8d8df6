//! The sd_notify socket: one datagram socket per service, in the abstract namespace,
//! with the sender's credentials attached by the kernel to every message.
//!
//! The protocol is systemd's: newline-separated `KEY=VALUE` assignments in one
//! datagram (`READY=1`, `STATUS=…`, …). `SO_PASSCRED` makes the kernel attach the
//! sender's pid, uid and gid, which the caller checks so one service cannot speak for
//! another. File descriptors sent along (`BARRIER=1` passes one and waits for it to be
//! closed) are handed to the caller, who closes them once it has acted on the message.
//!
//! `$NOTIFY_SOCKET` is `@herd-<herder pid>-<service>`: abstract names need no file,
//! no cleanup and no path-length care.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketAddrUnix,
    SocketFlags, SocketType, bind, recvmsg, socket_with, sockopt,
};

/// One received notification.
#[derive(Debug)]
pub struct Notification {
    /// The sender's pid as the kernel saw it.
    pub pid: Option<i32>,
    pub text: String,
    /// Descriptors sent along. A `BARRIER=1` sender waits until they are closed, so
    /// dropping them only once the message has been acted on orders that action
    /// before anything the sender does next.
    pub fds: Vec<OwnedFd>,
}

#[derive(Debug)]
pub struct NotifySocket {
    fd: OwnedFd,
    name: String,
}

impl NotifySocket {
    /// Binds `@<name>`.
    pub fn bind(name: &str) -> io::Result<NotifySocket> {
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        bind(&fd, &SocketAddrUnix::new_abstract_name(name.as_bytes())?)?;
        sockopt::set_socket_passcred(&fd, true)?;
        Ok(NotifySocket {
            fd,
            name: name.to_string(),
        })
    }

    /// The value for `$NOTIFY_SOCKET`.
    pub fn env_value(&self) -> String {
        format!("@{}", self.name)
    }

    /// The socket as std's type, for an event loop to watch; read it with [`recv`].
    pub fn into_std(self) -> std::os::unix::net::UnixDatagram {
        self.fd.into()
    }
}

/// Reads one datagram from a notify socket if one is waiting (`Ok(None)` if none).
pub fn recv(fd: impl AsFd) -> io::Result<Option<Notification>> {
    {
        let mut data = vec![0u8; 4096];
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(16))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match recvmsg(
            &fd,
            &mut [IoSliceMut::new(&mut data)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT,
        ) {
            Ok(m) => m,
            Err(rustix::io::Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut pid = None;
        let mut fds = Vec::new();
        for m in control.drain() {
            match m {
                RecvAncillaryMessage::ScmCredentials(c) => pid = Some(c.pid.as_raw_nonzero().get()),
                RecvAncillaryMessage::ScmRights(received) => fds.extend(received),
                _ => {}
            }
        }
        data.truncate(msg.bytes.min(data.len()));
        Ok(Some(Notification {
            pid,
            text: String::from_utf8_lossy(&data).into_owned(),
            fds,
        }))
    }
}
