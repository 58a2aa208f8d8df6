//! Helpers shared by the end-to-end tests.
// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the real `herd` binary in `dir` and waits for it.
pub fn herd(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_herd"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run herd")
}

/// The repository root, where `examples/` lives.
pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running `herd up` in its own temporary directory. Every process it starts
/// inherits `HERD_TEST_MARKER=<that directory>`; dropping this kills herder and every
/// live process carrying the marker, by pid, so a failing test leaves nothing behind.
pub struct Up {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Up {
    /// Writes `toml` as herd.toml (`{dir}` replaced by the directory) and starts herd.
    pub fn start(toml: &str) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let text = toml.replace("{dir}", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("herd.toml"), text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_herd"))
            .arg("up")
            .current_dir(dir.path())
            // Services inherit herder's environment, so every descendant carries it.
            .env("HERD_TEST_MARKER", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            dir,
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Waits for a line of herder's stderr containing `needle` (lines already seen
    /// count too: herder's order between services is not the test's business).
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "no line with {needle:?} within {timeout:?}; saw:\n{}",
                        self.seen.join("\n")
                    )
                }
            }
        }
    }

    /// Waits for a file a service writes to hold a whole line (`>` creates the file
    /// before the command writes it).
    #[track_caller]
    pub fn wait_file(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let complete =
            |p: std::path::PathBuf| std::fs::read_to_string(p).is_ok_and(|t| t.ends_with('\n'));
        while !complete(self.path(name)) {
            assert!(
                Instant::now() < deadline,
                "{name} not written within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a file to exist (for files created empty).
    #[track_caller]
    pub fn wait_file_exists(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.path(name).exists() {
            assert!(
                Instant::now() < deadline,
                "{name} not created within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for herder to exit and returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                // Drain what herder said last.
                while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.seen.push(l);
                }
                self.child = None;
                return st.code();
            }
            assert!(
                Instant::now() < deadline,
                "herd did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pids of live processes carrying this test's marker, herder itself excepted.
    pub fn survivors(&self) -> Vec<i32> {
        let herd = self.child.as_ref().map(|c| c.id() as i32);
        let mut pids = marked(self.dir.path().to_str().unwrap());
        pids.retain(|p| Some(*p) != herd);
        pids
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        for pid in self.survivors() {
            // SAFETY: these processes run this test's own scripts (its marker).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Live (non-zombie) processes whose environment has `HERD_TEST_MARKER=<marker>`.
pub fn marked(marker: &str) -> Vec<i32> {
    let needle = format!("HERD_TEST_MARKER={marker}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie && String::from_utf8_lossy(&env).contains(&needle) {
            out.push(pid);
        }
    }
    out
}
