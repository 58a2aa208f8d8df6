//! Reading a service's log file for `GET /v1/services/NAME/logs`: the last lines,
//! and with `follow` everything written after them, as `tail -F` would.
//!
//! # How it works
//!
//! The tail is read backwards from the end of `NAME.log` in blocks until enough
//! line ends are found (falling back on `NAME.log.1` when the current file holds
//! fewer lines). Following waits on inotify for the log directory (no polling):
//! every write to any log file wakes the follower, which reads what its open file
//! has gained; when the path names a new file (herder rotated it), the old one is
//! read to its end first and the new one from its start. The watch is set before
//! the tail is read, so nothing written in between is missed.
//!
//! Lines are sent as they are in the file: herder's log files hold exactly what the
//! service wrote.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use http_body_util::channel::Sender;
use hyper::body::Bytes;
use tokio::sync::watch;

use herd_sys::watch::FileWatch;

const BLOCK: u64 = 64 << 10;

/// The service's current log file in `dir`.
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// The last `n` lines of `file` (all of it with `None`), and the end offset they
/// were read up to; an absent file is empty.
pub fn tail(file: &Path, n: Option<usize>) -> std::io::Result<(Vec<u8>, u64)> {
    let mut f = match File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let Some(n) = n else {
        let mut all = Vec::new();
        f.read_to_end(&mut all)?;
        let end = all.len() as u64;
        return Ok((all, end));
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut start = len;
    // One more line end than lines wanted, unless the file has no more.
    while start > 0 && count_lines(&buf) <= n {
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - from) as usize];
        f.seek(SeekFrom::Start(from))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        start = from;
    }
    let mut lines = count_lines(&buf);
    let mut cut = 0;
    while lines > n {
        cut += buf[cut..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        lines -= 1;
    }
    buf.drain(..cut);
    if lines < n && start == 0 {
        // Fewer lines than asked: the rest may be in the file rotated last.
        let older = PathBuf::from(format!("{}.1", file.display()));
        if let Ok((mut more, _)) = tail_without_fallback(&older, n - lines) {
            more.extend_from_slice(&buf);
            buf = more;
        }
    }
    Ok((buf, len))
}

fn tail_without_fallback(file: &Path, n: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let data = std::fs::read(file)?;
    let mut cut = data.len();
    let mut seen = 0;
    // Skip the final line end, then count back n line ends.
    let body = data.strip_suffix(b"\n").unwrap_or(&data);
    for (i, &b) in body.iter().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                cut = i + 1;
                break;
            }
        }
    }
    if seen < n {
        cut = 0;
    }
    Ok((data[cut..].to_vec(), data.len() as u64))
}

/// Lines in `buf`: line ends, plus a last line without one.
fn count_lines(buf: &[u8]) -> usize {
    let ends = buf.iter().filter(|&&b| b == b'\n').count();
    ends + usize::from(!buf.is_empty() && !buf.ends_with(b"\n"))
}

/// Sends what `file` gains after `offset` until the client goes away or
/// `closing` turns true. `watch` must have been set before `offset` was read.
pub async fn follow(
    watch: FileWatch,
    file: PathBuf,
    offset: u64,
    mut tx: Sender<Bytes>,
    mut closing: watch::Receiver<bool>,
) {
    let mut open = File::open(&file).ok().map(|mut f| {
        let _ = f.seek(SeekFrom::Start(offset));
        f
    });
    loop {
        // What the open file has gained; then, if the path is a new file, the
        // rest of the old one and all of the new.
        loop {
            if let Some(f) = open.as_mut() {
                let mut data = Vec::new();
                if f.read_to_end(&mut data).is_ok()
                    && !data.is_empty()
                    && tx.send_data(Bytes::from(data)).await.is_err()
                {
                    return;
                }
            }
            let current = std::fs::metadata(&file).ok().map(|m| (m.dev(), m.ino()));
            let ours = open
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map(|m| (m.dev(), m.ino()));
            if current.is_none() || current == ours {
                break;
            }
            open = File::open(&file).ok();
        }
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = closing.wait_for(|c| *c) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_finds_the_last_lines_across_blocks_and_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("svc.log");
        let lines: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, &lines).unwrap();
        let (got, end) = tail(&f, Some(3)).unwrap();
        assert_eq!(got, b"line 19997\nline 19998\nline 19999\n");
        assert_eq!(end, lines.len() as u64);
        let (all, _) = tail(&f, None).unwrap();
        assert_eq!(all.len(), lines.len());
        assert_eq!(tail(&f, Some(0)).unwrap().0, b"");

        // A last line without its end counts as a line.
        std::fs::write(&f, "a\nb\nc").unwrap();
        assert_eq!(tail(&f, Some(2)).unwrap().0, b"b\nc");

        // Two lines in the current file, the third from the rotated one.
        std::fs::write(dir.path().join("svc.log.1"), "old 1\nold 2\n").unwrap();
        std::fs::write(&f, "new 1\nnew 2\n").unwrap();
        assert_eq!(tail(&f, Some(3)).unwrap().0, b"old 2\nnew 1\nnew 2\n");
        assert_eq!(
            tail(&f, Some(9)).unwrap().0,
            b"old 1\nold 2\nnew 1\nnew 2\n"
        );

        assert_eq!(tail(&dir.path().join("none.log"), Some(5)).unwrap().0, b"");
    }
}
