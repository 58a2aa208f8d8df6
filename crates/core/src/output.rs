//! Capturing a service's stdout and stderr without ever blocking it.
//!
//! # How it works
//!
//! Each pipe has a reader task that drains it as fast as the kernel fills it. Every
//! line goes to the service's log file (rotated by size), stamped with the time it
//! was read (`2026-11-30T21:48:44.123Z line`), and is offered to the one
//! printer task that shows it, prefixed, on herder's stdout. The offer never waits:
//! when the terminal is slower than the service, lines the printer cannot take are
//! counted and dropped from the display (never from the log file), and the printer
//! says how many it skipped. A line is cut at [`MAX_LINE`] bytes, so a flood without
//! newlines cannot grow herder's memory either.
//!
//! A log file that cannot be written (a full disk, a quota, an I/O error) costs the
//! service nothing: its output is still read, and what could not be written is
//! counted per service ([`Output::log_dropped`]). herder says so once when writing
//! fails, and once, with the count, when it works again.

use std::fs::File;

use crate::private::Private;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// Longest line kept whole; longer ones are split.
pub const MAX_LINE: usize = 16 * 1024;
/// Lines waiting for the terminal; beyond this they are dropped from the display.
const QUEUE: usize = 512;

thread_local! {
    /// Where every pipe of this thread is read into.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 64 << 10]);
}

/// Where lines go: the printer queue and the per-service log files.
#[derive(Clone)]
pub struct Output {
    tx: mpsc::Sender<(Arc<str>, String)>,
    dropped: Arc<AtomicU64>,
    log_dir: Option<PathBuf>,
    max_size: u64,
    keep: u32,
    private: Private,
    /// Each service's log file's health, shared by its stdout and stderr readers.
    logs: Arc<Mutex<HashMap<Arc<str>, Arc<LogHealth>>>>,
}

/// Whether a service's log file can be written, and what could not be.
#[derive(Default)]
struct LogHealth {
    failing: AtomicBool,
    /// Bytes of output not written to the log file, over the service's life.
    dropped: AtomicU64,
    /// Of those, since writing last failed.
    dropped_now: AtomicU64,
}

impl Output {
    /// Starts the printer. `width` aligns the service-name prefixes.
    pub fn start(
        width: usize,
        log_dir: Option<PathBuf>,
        max_size: u64,
        keep: u32,
        private: Private,
    ) -> Output {
        let (tx, mut rx) = mpsc::channel::<(Arc<str>, String)>(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let d = dropped.clone();
        let color = use_colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        );
        tokio::spawn(async move {
            while let Some((name, line)) = rx.recv().await {
                let mut out = std::io::stdout().lock();
                let skipped = d.swap(0, Ordering::Relaxed);
                if skipped > 0 {
                    let _ = writeln!(
                        out,
                        "{:>width$} | [herd: {skipped} lines not shown; they are in the log files]",
                        "herd"
                    );
                }
                let _ = if color {
                    let c = colour_of(&name);
                    writeln!(out, "\x1b[{c}m{name:>width$}\x1b[0m | {line}")
                } else {
                    writeln!(out, "{name:>width$} | {line}")
                };
            }
        });
        Output {
            tx,
            dropped,
            log_dir,
            max_size,
            keep,
            private,
            logs: Arc::default(),
        }
    }

    /// Bytes of `name`'s output its log file could not take (a full disk).
    pub fn log_dropped(&self, name: &str) -> u64 {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.get(name)
            .map_or(0, |h| h.dropped.load(Ordering::Relaxed))
    }

    fn health(&self, name: &Arc<str>) -> Arc<LogHealth> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        logs.entry(name.clone()).or_default().clone()
    }

    /// Drains `fd` until the pipe closes. Each line is also given to `on_line`
    /// (readiness by log line).
    pub fn capture(
        &self,
        name: &str,
        fd: OwnedFd,
        mut on_line: impl FnMut(&str) + Send + 'static,
    ) -> std::io::Result<()> {
        let rx = pipe::Receiver::from_owned_fd(fd)?;
        let name: Arc<str> = Arc::from(name);
        let me = self.clone();
        let mut log = self.log_dir.as_ref().map(|d| {
            let path = d.join(format!("{name}.log"));
            let mut f = LogFile::new(path, me.max_size, me.keep, me.private);
            f.health = Some((name.clone(), me.health(&name)));
            f
        });
        tokio::spawn(async move {
            let mut pending: Vec<u8> = Vec::new();
            // Lines stdout had no room for, without log files: sent once it
            // has, before the pipe is read again (the service waits meanwhile).
            let mut waiting: Vec<(Arc<str>, String)> = Vec::new();
            // The log file's lines of one read, each stamped with its time.
            let mut batch: Vec<u8> = Vec::new();
            loop {
                if rx.readable().await.is_err() {
                    break;
                }
                // Read into the thread's one buffer, used only between awaits: a
                // buffer per pipe would cost 64 KiB a pipe, 13 MB for 100 services.
                let read = READ_BUF.with_borrow_mut(|buf| {
                    let n = match rx.try_read(buf) {
                        Ok(0) => return Err(()),
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                        Err(_) => return Err(()),
                    };
                    pending.extend_from_slice(&buf[..n]);
                    Ok(())
                });
                if read.is_err() {
                    break;
                }
                let stamp = crate::log::timestamp(std::time::SystemTime::now());
                let mut start = 0;
                while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
                    let line = &pending[start..start + i];
                    waiting.extend(me.line(&name, line, &mut on_line));
                    stamped(&mut batch, &stamp, line);
                    start += i + 1;
                }
                pending.drain(..start);
                while pending.len() >= MAX_LINE {
                    let rest = pending.split_off(MAX_LINE);
                    waiting.extend(me.line(&name, &pending, &mut on_line));
                    stamped(&mut batch, &stamp, &pending);
                    pending = rest;
                }
                if let Some(l) = log.as_mut()
                    && !batch.is_empty()
                {
                    l.write(&batch);
                }
                batch.clear();
                for line in waiting.drain(..) {
                    let _ = me.tx.send(line).await;
                }
                // A long line once must not keep its memory.
                if pending.is_empty() && pending.capacity() > 4096 {
                    pending = Vec::new();
                }
                if batch.capacity() > 64 << 10 {
                    batch = Vec::new();
                }
            }
            if !pending.is_empty() {
                if let Some(line) = me.line(&name, &pending, &mut on_line) {
                    let _ = me.tx.send(line).await;
                }
                if let Some(l) = log.as_mut() {
                    let stamp = crate::log::timestamp(std::time::SystemTime::now());
                    stamped(&mut batch, &stamp, &pending);
                    l.write(&batch);
                }
            }
        });
        Ok(())
    }

    /// One line to stdout, skipped (and counted) when stdout is behind, as its
    /// log file has it; without log files, handed back to wait for room
    /// instead, so no line is lost.
    fn line(
        &self,
        name: &Arc<str>,
        bytes: &[u8],
        on_line: &mut impl FnMut(&str),
    ) -> Option<(Arc<str>, String)> {
        let text = String::from_utf8_lossy(bytes);
        on_line(&text);
        match self.tx.try_send((name.clone(), text.into_owned())) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(line)) if self.log_dir.is_none() => Some(line),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }
}

/// Appends `stamp line\n` to `batch`: a log file's line, with the time it was
/// read (see [`crate::log::timestamp`]).
fn stamped(batch: &mut Vec<u8>, stamp: &str, line: &[u8]) {
    batch.extend_from_slice(stamp.as_bytes());
    batch.push(b' ');
    batch.extend_from_slice(line);
    batch.push(b'\n');
}

/// Colours for service names (ANSI SGR): none of red and yellow, which say
/// errors and warnings.
const PALETTE: [u8; 8] = [32, 34, 35, 36, 92, 94, 95, 96];

/// A service's colour, the same on every run.
fn colour_of(name: &str) -> u8 {
    PALETTE[name.bytes().map(usize::from).sum::<usize>() % PALETTE.len()]
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything but empty
/// (no-color.org).
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// A log file rotated by size: `name.log`, `name.log.1`, … `name.log.keep`.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
    private: Private,
    /// The service, and its log's health (which says when writing fails).
    health: Option<(Arc<str>, Arc<LogHealth>)>,
}

impl LogFile {
    fn new(path: PathBuf, max_size: u64, keep: u32, private: Private) -> LogFile {
        LogFile {
            path,
            file: None,
            size: 0,
            max_size,
            keep,
            private,
            health: None,
        }
    }

    fn write(&mut self, data: &[u8]) {
        let mut opened = Ok(());
        if self.file.is_none() {
            opened = self.private.append(&self.path).map(|f| self.file = Some(f));
            self.size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        }
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.file = None;
            rotate(&self.path, self.keep);
            opened = self.private.append(&self.path).map(|f| self.file = Some(f));
            self.size = 0;
        }
        let written = match (opened, self.file.as_mut()) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(f)) => f.write_all(data),
            (Ok(()), None) => Err(std::io::ErrorKind::NotFound.into()),
        };
        match written {
            Ok(()) => {
                self.size += data.len() as u64;
                self.recovered();
            }
            Err(e) => {
                // Reopened on the next write: the file may have been removed.
                self.file = None;
                self.dropped(data.len() as u64, &e);
            }
        }
    }

    /// `n` bytes could not be written: counted, and said the first time.
    fn dropped(&self, n: u64, e: &std::io::Error) {
        let Some((name, h)) = &self.health else {
            return;
        };
        h.dropped.fetch_add(n, Ordering::Relaxed);
        h.dropped_now.fetch_add(n, Ordering::Relaxed);
        if !h.failing.swap(true, Ordering::Relaxed) {
            crate::log::note(&format!(
                "{name}: cannot write {} ({e}); its output is dropped from the log until it can be, and counted",
                self.path.display()
            ));
        }
    }

    /// Writing works again after it failed: how much was lost is said.
    fn recovered(&self) {
        let Some((name, h)) = &self.health else {
            return;
        };
        if h.failing.swap(false, Ordering::Relaxed) {
            let lost = h.dropped_now.swap(0, Ordering::Relaxed);
            crate::log::note(&format!(
                "{name}: {} is written again; {lost} bytes of output were dropped from it",
                self.path.display()
            ));
        }
    }
}

fn rotate(path: &Path, keep: u32) {
    let numbered = |i: u32| PathBuf::from(format!("{}.{i}", path.display()));
    if keep == 0 {
        let _ = std::fs::remove_file(path);
        return;
    }
    let _ = std::fs::remove_file(numbered(keep));
    for i in (1..keep).rev() {
        let _ = std::fs::rename(numbered(i), numbered(i + 1));
    }
    let _ = std::fs::rename(path, numbered(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_rotate_by_size_and_keep_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut log = LogFile::new(path.clone(), 10, 2, Private::default());
        for chunk in ["aaaaaa\n", "bbbbbb\n", "cccccc\n", "dddddd\n"] {
            log.write(chunk.as_bytes());
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "dddddd\n");
        assert_eq!(read(&dir.path().join("svc.log.1")), "cccccc\n");
        assert_eq!(read(&dir.path().join("svc.log.2")), "bbbbbb\n");
        assert!(!dir.path().join("svc.log.3").exists());
    }

    #[test]
    fn names_are_coloured_on_a_terminal_without_no_color_and_never_red_or_yellow() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
        for name in ["db", "api", "web", "worker", "a", "zz", "migrate"] {
            let c = colour_of(name);
            assert!(![31, 33, 91, 93].contains(&c), "{name}: {c}");
            assert_eq!(c, colour_of(name));
        }
    }
}
