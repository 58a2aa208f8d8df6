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

/// A running `herd up` in its own temporary directory and its own cgroups. Every
/// process it starts inherits `HERD_TEST_MARKER=<that directory>`, and the test
/// helper carries the directory in its command line too; dropping this kills herder,
/// everything in the test's cgroups and every live process carrying the marker, by
/// pid or by the test's own cgroup, so a failing test leaves nothing behind.
pub struct Up {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    pub cgroups: TestCgroups,
}

/// How to start herd.
#[derive(Default)]
pub struct Opts<'a> {
    /// Arguments after `up`.
    pub args: &'a [&'a str],
    /// Run herder as this uid and gid (no supplementary groups).
    pub user: Option<u32>,
    /// Bound every process of the test (herder included) with pids.max.
    pub pids_max: Option<u32>,
    /// A command herd runs under (`unshare --pid --fork --mount-proc`): herd is then
    /// that command's child.
    pub wrap: &'a [&'a str],
    /// herd's descriptor limit, soft and hard alike (`ulimit -n`).
    pub nofile: Option<u64>,
    /// Start herd in another test's cgroups (two herders side by side).
    pub beside: Option<&'a TestCgroups>,
    /// Environment variables herd gets besides the test's.
    pub env: &'a [(&'a str, &'a str)],
    /// Start herd in the cgroup2 hierarchy's root instead of the test's own v2
    /// cgroup; the test's v1 cgroups still hold everything it starts.
    pub v2_root: bool,
}

/// The test helper program (adversarial services): the example
/// `herd-test-helper`, built once per test binary with the cargo that runs the
/// tests (an example, so that `cargo install` does not install it; cargo gives
/// integration tests the path of bins only).
pub fn helper() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-q", "-p", "herd", "--example", "herd-test-helper"])
            .current_dir(repo());
        // In the profile the tests were built with, so it lands beside them.
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let built = build.status().expect("run cargo");
        assert!(built.success(), "cannot build the test helper");
        // target/debug/deps/<test> -> target/debug/examples/herd-test-helper
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).expect("target/debug");
        dir.join("examples/herd-test-helper")
            .to_str()
            .unwrap()
            .to_string()
    })
}

impl Up {
    /// Writes `toml` as herd.toml (`{dir}` replaced by the directory, `{helper}` by
    /// the test helper) and starts `herd up`.
    pub fn start(toml: &str) -> Up {
        Up::with(toml, Opts::default())
    }

    pub fn with(toml: &str, opts: Opts) -> Up {
        let dir = tempfile::tempdir().unwrap();
        let (mut herd, mut helper) = (env!("CARGO_BIN_EXE_herd").to_string(), helper().to_string());
        if opts.user.is_some() {
            use std::os::unix::fs::PermissionsExt;
            // The checkout may sit where another user cannot reach (a home directory
            // with mode 0700): run copies from the temporary directory instead.
            let open = std::fs::Permissions::from_mode(0o755);
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
            for (name, path) in [("herd", &mut herd), ("helper", &mut helper)] {
                let copy = dir.path().join(name);
                std::fs::copy(&*path, &copy).unwrap();
                std::fs::set_permissions(&copy, open.clone()).unwrap();
                *path = copy.to_str().unwrap().to_string();
            }
        }
        let text = toml
            .replace("{dir}", dir.path().to_str().unwrap())
            .replace("{helper}", &helper);
        std::fs::write(dir.path().join("herd.toml"), text).unwrap();
        let cgroups = match opts.beside {
            Some(c) => c.clone(),
            None => TestCgroups::create(opts.pids_max),
        };
        let (child, lines) = launch(dir.path(), &herd, &cgroups, &opts);
        Up {
            dir,
            child: Some(child),
            lines,
            seen: Vec::new(),
            cgroups,
        }
    }

    /// Starts `herd up` again in the same directory and cgroups, once the previous
    /// one has exited (it was killed, say).
    pub fn relaunch(&mut self, args: &[&str]) {
        assert!(
            self.child.is_none(),
            "the previous herd has not been waited for"
        );
        let opts = Opts {
            args,
            ..Opts::default()
        };
        let (child, lines) = launch(
            self.dir.path(),
            env!("CARGO_BIN_EXE_herd"),
            &self.cgroups,
            &opts,
        );
        self.child = Some(child);
        self.lines = lines;
        self.seen.clear();
    }

    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// herd's own pid (as this test sees it) when it runs under `Opts::wrap`: the
    /// wrapper's child, once it has forked.
    #[track_caller]
    pub fn herd_pid(&mut self, timeout: Duration) -> i32 {
        // herd's first line means it runs, so the wrapper has forked it.
        self.wait_for("herd: ", timeout);
        let wrapper = self.pid();
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
            .unwrap_or_default();
        children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("herd has started but the wrapper has no child"))
    }
}

/// Makes `cmd`'s child join `cgroups` before exec; the files returned must live
/// until it is spawned.
pub fn join_on_exec(cmd: &mut Command, cgroups: &TestCgroups) -> Vec<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let procs: Vec<std::fs::File> = cgroups
        .dirs()
        .iter()
        .map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .unwrap()
        })
        .collect();
    let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: only write(2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    procs
}

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over TCP: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (code, body)
}

/// Starts `herd up` in `dir`, in the test's cgroups; returns it and its stderr lines.
fn launch(dir: &Path, herd: &str, cgroups: &TestCgroups, opts: &Opts) -> (Child, Receiver<String>) {
    let mut cmd = match opts.wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(herd);
            c
        }
        None => Command::new(herd),
    };
    cmd.arg("up")
        .args(opts.args)
        .current_dir(dir)
        // Services inherit herder's environment, so every descendant carries it.
        .env("HERD_TEST_MARKER", dir)
        .envs(opts.env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let procs = match herd_contain::mounts::cgroup2().filter(|_| opts.v2_root) {
        Some(mount) => {
            let mut join = cgroups.clone();
            join.v2 = Some(mount.point);
            join_on_exec(&mut cmd, &join)
        }
        None => join_on_exec(&mut cmd, cgroups),
    };
    let user = opts.user;
    let nofile = opts.nofile.map(|n| libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    });
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if let Some(limit) = &nofile
                && libc::setrlimit(libc::RLIMIT_NOFILE, limit) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(uid) = user
                && (libc::setgroups(0, std::ptr::null()) < 0
                    || libc::setgid(uid) < 0
                    || libc::setuid(uid) < 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(procs);
    let (tx, lines) = channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

impl Up {
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
        kill(self.pid(), sig);
    }

    /// Waits for herder to exit and returns its exit code.
    #[track_caller]
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        assert!(
            wait_gone(&[self.pid()], timeout),
            "herd did not exit within {timeout:?}"
        );
        let st = self.child.as_mut().unwrap().wait().unwrap();
        // Drain what herder said last (its stderr closes when it exits).
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(1)) {
            self.seen.push(l);
        }
        self.child = None;
        st.code()
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
        self.cgroups.kill_all();
        for pid in self.survivors() {
            // These processes run this test's own scripts (its marker).
            kill(pid, libc::SIGKILL);
        }
        self.cgroups.remove();
    }
}

/// The test's own cgroups (when root and the hierarchy exists): herd starts in them,
/// so all it does stays below them whatever backend it uses.
#[derive(Clone, Default)]
pub struct TestCgroups {
    pub v2: Option<std::path::PathBuf>,
    pub freezer: Option<std::path::PathBuf>,
    pub pids: Option<std::path::PathBuf>,
    /// The v1 memory, cpu and cpuacct hierarchies' (one each, a shared mount
    /// once): herder's limits and usage on a hybrid host go below them.
    pub v1: Vec<std::path::PathBuf>,
}

impl TestCgroups {
    /// The test's own cgroups, for a program it starts itself
    /// ([`join_on_exec`]); [`TestCgroups::clean`] ends what is left in them.
    pub fn create(pids_max: Option<u32>) -> TestCgroups {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        if !rustix::process::geteuid().is_root() {
            return TestCgroups::default();
        }
        let leaf = format!(
            "herd-tests/{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let make = |mount: Option<herd_contain::mounts::Mount>, own: Option<String>| {
            let base = herd_contain::mounts::dir_of(&mount?, &own?)?;
            let d = base.join(&leaf);
            // Another test may remove the shared parent just as this one makes it.
            (0..5).find(|_| std::fs::create_dir_all(&d).is_ok())?;
            Some(d)
        };
        let pids = make(
            herd_contain::mounts::v1("pids"),
            herd_contain::mounts::own_v1("pids"),
        );
        let bounded = pids_max.is_none_or(|max| {
            pids.as_ref()
                .is_some_and(|d| std::fs::write(d.join("pids.max"), max.to_string()).is_ok())
        });
        assert!(
            bounded,
            "this test needs a cgroup v1 pids hierarchy to bound its processes"
        );
        let mut v1: Vec<std::path::PathBuf> = Vec::new();
        for c in ["memory", "cpu", "cpuacct"] {
            let d = make(herd_contain::mounts::v1(c), herd_contain::mounts::own_v1(c));
            if let Some(d) = d.filter(|d| !v1.contains(d)) {
                v1.push(d);
            }
        }
        TestCgroups {
            v2: make(
                herd_contain::mounts::cgroup2(),
                herd_contain::mounts::own_v2(),
            ),
            freezer: make(
                herd_contain::mounts::v1("freezer"),
                herd_contain::mounts::own_v1("freezer"),
            ),
            pids,
            v1,
        }
    }

    pub fn dirs(&self) -> Vec<std::path::PathBuf> {
        [&self.v2, &self.freezer, &self.pids]
            .into_iter()
            .flatten()
            .chain(&self.v1)
            .cloned()
            .collect()
    }

    /// Pids in the test's cgroups, anywhere below.
    pub fn procs(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for d in self.dirs() {
            for_each_dir(&d, &mut |dir| {
                if let Ok(t) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                    out.extend(t.lines().filter_map(|l| l.parse::<i32>().ok()));
                }
            });
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills what is left in them and removes them, sub-cgroups first.
    pub fn clean(&self) {
        self.kill_all();
        self.remove();
    }

    /// SIGKILL to everything in the test's own cgroups, and wait for it to go.
    fn kill_all(&self) {
        if let Some(v2) = &self.v2 {
            let _ = std::fs::write(v2.join("cgroup.kill"), "1");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = self.procs();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            // Frozen processes die only once thawed.
            if let Some(f) = &self.freezer {
                for_each_dir(f, &mut |d| {
                    let _ = std::fs::write(d.join("freezer.state"), "THAWED");
                });
            }
            for pid in left {
                // A process in this test's own cgroups.
                kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn remove(&self) {
        for d in self.dirs() {
            let mut all = Vec::new();
            for_each_dir(&d, &mut |dir| all.push(dir.to_path_buf()));
            // Deepest first.
            all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
            for dir in all {
                let _ = std::fs::remove_dir(dir);
            }
            // The shared `herd-tests` parent goes with the last test (busy until then).
            if let Some(parent) = d.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

fn for_each_dir(d: &Path, f: &mut dyn FnMut(&Path)) {
    f(d);
    if let Ok(entries) = std::fs::read_dir(d) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                for_each_dir(&e.path(), f);
            }
        }
    }
}

/// Live (non-zombie) processes whose environment has `HERD_TEST_MARKER=<marker>`,
/// or whose command line holds the marker (the test helper's first argument).
pub fn marked(marker: &str) -> Vec<i32> {
    let needle = format!("HERD_TEST_MARKER={marker}\0");
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        let in_cmdline = String::from_utf8_lossy(&cmdline)
            .split('\0')
            .any(|a| a == marker);
        if !zombie && (String::from_utf8_lossy(&env).contains(&needle) || in_cmdline) {
            out.push(pid);
        }
    }
    out
}

/// Waits, through pidfds, until every process of `pids` has ended; false on timeout.
/// The pidfds are opened at once, so a pid recycled later is not waited for.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let mut fds: Vec<libc::pollfd> = pids
        .iter()
        .filter_map(|&p| {
            // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
            (fd >= 0).then_some(libc::pollfd {
                fd: fd as i32,
                events: libc::POLLIN,
                revents: 0,
            })
        })
        .collect();
    // A pidfd is readable once its process has exited (zombie or reaped). A zero
    // timeout still polls once: "are they all gone now?".
    let deadline = Instant::now() + timeout;
    let mut ok = true;
    let mut first = true;
    while fds.iter().any(|f| f.revents == 0) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() && !first {
            ok = false;
            break;
        }
        first = false;
        let mut waiting: Vec<libc::pollfd> =
            fds.iter().copied().filter(|f| f.revents == 0).collect();
        // SAFETY: poll reads and writes `waiting`, an array of valid pollfds.
        unsafe {
            libc::poll(
                waiting.as_mut_ptr(),
                waiting.len() as _,
                left.as_millis() as i32,
            )
        };
        for w in waiting.iter().filter(|w| w.revents != 0) {
            if let Some(f) = fds.iter_mut().find(|f| f.fd == w.fd) {
                f.revents = w.revents;
            }
        }
    }
    for f in &fds {
        // SAFETY: closes the descriptors opened above.
        unsafe { libc::close(f.fd) };
    }
    ok
}

/// `herd ps --json` of the herder `up` runs, through its socket (so a broken
/// herd.toml, on purpose, does not stop it).
#[track_caller]
pub fn ps(up: &Up) -> serde_json::Value {
    let out = herd(
        up.dir.path(),
        &["--socket", ".herd/herd.sock", "ps", "--json"],
    );
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One service of `ps`'s list; null when there is none of that name.
pub fn service<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    static NONE: serde_json::Value = serde_json::Value::Null;
    list.as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or(&NONE)
}

/// Every live process of a service, as `ps` lists them.
pub fn pids(s: &serde_json::Value) -> Vec<i32> {
    s["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap() as i32)
        .collect()
}

/// Sends `sig` to `pid`: a process the calling test started (never a group,
/// never -1). The tests' one use of `kill(2)` by pid.
pub fn kill(pid: i32, sig: i32) {
    assert!(pid > 0, "kill({pid}) would signal more than one process");
    // SAFETY: kill(2) with a positive pid touches no memory of ours.
    unsafe { libc::kill(pid, sig) };
}

/// Whether a test that needs `what` (root, cgroup2, …) can run; when it cannot,
/// says so on the real stderr (past the harness's capture: `SKIPPED test: why`,
/// which `.ci/run` counts), and under CI, where everything is there, fails
/// instead: a test that CI runs must never pass by not running.
pub fn can_run(test: &str, available: bool, what: &str) -> bool {
    use std::io::Write;
    if available {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {what}, which CI has: it must run there"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {what}");
    false
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Waits until process `pid` is in state `state` (`T`: stopped), from
/// /proc/PID/stat; panics after `limit`. There is no event for another process's
/// stop that a test can wait on without ptrace, so this polls every millisecond.
pub fn wait_state(pid: i32, state: char, limit: Duration) {
    let end = Instant::now() + limit;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let now = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if now == Some(state) {
            return;
        }
        assert!(
            Instant::now() < end,
            "pid {pid} never reached state {state}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
