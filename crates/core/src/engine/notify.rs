//! sd_notify: a service's datagrams on its `$NOTIFY_SOCKET`, in systemd's
//! protocol, so existing daemons work unchanged.
//!
//! # How it works
//!
//! Each service that speaks it (readiness by `notify`, a `watchdog`, or
//! `stop.notify`) has its own socket, kept across runs; a task forwards every
//! datagram, with the sender's kernel-attested pid, to the loop. A datagram is
//! acted on only if that pid is the main process or a process of the service's
//! unit: `READY=1`, `RELOADING=1`, `STATUS=` (kept for `herd ps` and
//! published as an event), `STOPPING=1`, `MAINPID=`, `EXTEND_TIMEOUT_USEC=`
//! (see [`super::stop`]), `WATCHDOG=1`, `WATCHDOG=trigger` and
//! `WATCHDOG_USEC=` (see [`super::health`]). Descriptors sent along are closed
//! once it is handled, which releases a `BARRIER=1` sender.
//!
//! # Caveats
//!
//! - `FDSTORE=1` (with `FDNAME=`) and `FDSTOREREMOVE=1` keep and drop
//!   descriptors of the service's fd store (`fd_store_max`); `FDPOLL=` and the
//!   rest of systemd's keys are not acted on.

use tokio::sync::mpsc;

use herd_config::ReadyCheck;
use herd_sys::notify::{Notification, NotifySocket};

use super::{Engine, Msg, Waker};
use crate::log::note;
use crate::machine::Event;

/// The `FDNAME=` of a message.
fn fd_name(text: &str) -> Option<&str> {
    text.lines().find_map(|l| l.strip_prefix("FDNAME="))
}

/// Forwards every datagram of `sock` to the loop, as [`Msg::Notify`] for `name`.
pub(super) fn listen(
    name: String,
    sock: NotifySocket,
    tx: mpsc::UnboundedSender<Msg>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let sock = tokio::net::UnixDatagram::from_std(sock.into_std())?;
    Ok(tokio::spawn(async move {
        loop {
            if sock.readable().await.is_err() {
                return;
            }
            // None (nothing waiting) becomes WouldBlock, so readiness is cleared.
            let got = sock.try_io(tokio::io::Interest::READABLE, || {
                herd_sys::notify::recv(&sock)?.ok_or_else(|| std::io::ErrorKind::WouldBlock.into())
            });
            match got {
                Ok(note) => {
                    let name = name.clone();
                    if tx.send(Msg::Notify { name, note }).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    // Retrying would spin on the same error.
                    crate::log::note(&format!(
                        "{name}: notify socket failed ({e}); its notifications are no longer heard"
                    ));
                    return;
                }
            }
        }
    }))
}

impl Engine {
    /// An sd_notify datagram: acted on only if a process of the service sent it.
    pub(super) fn on_notify(&mut self, name: &str, msg: Notification) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let main = svc.m.state.pid();
        let ours = msg
            .pid
            .is_some_and(|p| Some(p) == main || svc.unit().is_some_and(|u| u.owns(p)));
        if !ours {
            note(&format!(
                "{name}: ignored a notification from pid {}: not a process of this service",
                msg.pid.map_or("unknown".into(), |p| p.to_string())
            ));
            return;
        }
        let by_notify = matches!(
            svc.cfg.ready.as_ref().map(|r| &r.check),
            Some(ReadyCheck::Notify)
        );
        let mut msg = msg;
        if msg.text.lines().any(|l| l == "FDSTORE=1") {
            self.fd_store(name, &msg.text, std::mem::take(&mut msg.fds));
        } else if msg.text.lines().any(|l| l == "FDSTOREREMOVE=1") {
            self.fd_store_remove(name, &msg.text);
        }
        for line in msg.text.lines() {
            match line.split_once('=') {
                Some(("READY", "1")) if by_notify => self.post(name, Event::ReadyCheckPassed),
                Some(("RELOADING", "1")) => self.post(name, Event::NotReady),
                Some(("STATUS", status)) => self.status_text(name, status),
                Some(("WATCHDOG", value)) => self.watchdog_note(name, value),
                Some(("WATCHDOG_USEC", usec)) => self.watchdog_period(name, usec),
                Some(("STOPPING", "1")) => note(&format!("{name}: says it is stopping")),
                Some(("MAINPID", pid)) => self.main_pid(name, pid),
                Some(("EXTEND_TIMEOUT_USEC", usec)) => self.extend(name, usec),
                _ => {}
            }
        }
        // Only now may a BARRIER=1 sender go on.
        drop(msg.fds);
    }

    /// sd_notify `FDSTORE=1`: the descriptors sent along are kept under the
    /// message's `FDNAME=` (`stored` without one), up to `fd_store_max`, and
    /// passed to the service's next runs.
    fn fd_store(&mut self, name: &str, text: &str, fds: Vec<std::os::fd::OwnedFd>) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let fdname = fd_name(text).unwrap_or("stored").to_string();
        let max = svc.cfg.fd_store_max as usize;
        let room = max.saturating_sub(svc.fd_store.len());
        let (kept, over) = (fds.len().min(room), fds.len().saturating_sub(room));
        for fd in fds.into_iter().take(kept) {
            svc.fd_store.push((fdname.clone(), std::sync::Arc::new(fd)));
        }
        match over {
            0 => note(&format!(
                "{name}: keeps {kept} descriptor(s) as {fdname} in its fd store"
            )),
            _ => note(&format!(
                "{name}: fd store full (fd_store_max = {max}): {over} descriptor(s) of {fdname} closed"
            )),
        }
    }

    /// sd_notify `FDSTOREREMOVE=1` with `FDNAME=`: those descriptors are closed.
    fn fd_store_remove(&mut self, name: &str, text: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Some(fdname) = fd_name(text) else {
            return note(&format!("{name}: FDSTOREREMOVE=1 without FDNAME=; ignored"));
        };
        let before = svc.fd_store.len();
        svc.fd_store.retain(|(n, _)| n != fdname);
        note(&format!(
            "{name}: removed {} descriptor(s) named {fdname} from its fd store",
            before - svc.fd_store.len()
        ));
    }

    /// sd_notify `STATUS=`: kept as the service's status text until the next
    /// one or its next run, and published.
    fn status_text(&mut self, name: &str, status: &str) {
        note(&format!("{name}: status: {status}"));
        let svc = self.svcs.get_mut(name).expect("known service");
        svc.status_text = (!status.is_empty()).then(|| status.to_string());
        self.publish(super::Change::Status {
            at_ms: super::events::now_ms(),
            service: name.to_string(),
            status: status.to_string(),
        });
    }

    /// sd_notify `MAINPID=`: accepted for a process of the service's unit, which
    /// then is the process whose exit ends the run.
    fn main_pid(&mut self, name: &str, value: &str) {
        let svc = self.svcs.get_mut(name).expect("known service");
        let Ok(pid) = value.trim().parse::<i32>() else {
            return note(&format!("{name}: MAINPID={value}: not a pid; ignored"));
        };
        if svc.m.state.pid() == Some(pid) {
            return;
        }
        // Checked after opening the pidfd: it then names the process that was
        // checked, whatever becomes of the pid number later.
        match svc.unit().and_then(|u| u.pidfd(pid)) {
            Some(pidfd) => {
                note(&format!("{name}: main process is now pid {pid}"));
                self.procs.adopt(pidfd, name, &Waker(self.tx.clone()));
                self.post(name, Event::MainPid { pid });
            }
            None => note(&format!(
                "{name}: MAINPID={pid} ignored: not a process of this service"
            )),
        }
    }
}
