//! `herd top` in a real terminal: tmux runs it against a running stack, keys
//! go in with `send-keys`, and the screen is read with `capture-pane`.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Up, can_run, herd};

const LONG: Duration = Duration::from_secs(20);

/// A tmux server of the test's own (its own socket), with one 80×24 window
/// running `herd top` in `dir`; killed, with what runs in it, when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Tmux {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "herd-top-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tmux { socket };
        let mut cmd = format!("{} top", env!("CARGO_BIN_EXE_herd"));
        for (k, v) in env {
            cmd = format!("{k}={v} {cmd}");
        }
        // The pane stays after top exits, so the screen it leaves can be read.
        let ok = t
            .tmux(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "80",
                "-y",
                "24",
            ])
            .args([
                "-c",
                dir.to_str().unwrap(),
                "sh",
                "-c",
                &format!("{cmd}; echo top-exited-$?; sleep 600"),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "tmux cannot start");
        t
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]).args(args);
        c
    }

    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            assert!(self.tmux(&["send-keys", k]).status().unwrap().success());
        }
    }

    /// A tmux format of the pane (`#{alternate_on}`).
    fn pane(&self, format: &str) -> String {
        let out = self
            .tmux(&["display-message", "-p", format])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until the screen shows every one of `needles` (tmux has no event
    /// for a change of the screen: it is read again every 50 ms).
    #[track_caller]
    fn wait_for(&self, needles: &[&str], limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let screen = self.screen();
            if needles.iter().all(|n| screen.contains(n)) {
                return screen;
            }
            assert!(
                Instant::now() < until,
                "the screen never showed {needles:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The screen's line that contains `needle`.
    fn line(&self, needle: &str) -> String {
        self.screen()
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The server of this test's own socket, and the pane's processes.
        let _ = self.tmux(&["kill-server"]).status();
    }
}

fn have_tmux(test: &str) -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    can_run(test, found, "tmux")
}

/// The example stack, up, with `herd top` watching it (`None`: no tmux here,
/// and the test says it skipped).
fn watched(test: &str, env: &[(&str, &str)]) -> Option<(Up, Tmux)> {
    if !have_tmux(test) {
        return None;
    }
    let mut up = Up::start(STACK);
    up.wait_for("herd: web started", LONG);
    let t = Tmux::start(up.dir.path(), env);
    t.wait_for(&["SERVICE", "web"], LONG);
    Some((up, t))
}

impl Tmux {
    /// Whether the screen, read with its attributes, has a colour: SGR codes
    /// 30-38 and 90-97 set a foreground one, 40-48 and 100-107 a background
    /// one (39 and 49 are the defaults). Also whether it has any SGR at all,
    /// so that a capture without attributes cannot pass for colourless.
    fn colours(&self) -> (bool, bool) {
        let out = self.tmux(&["capture-pane", "-p", "-e"]).output().unwrap();
        let styled = String::from_utf8_lossy(&out.stdout);
        let sgrs: Vec<&str> = styled
            .split("\u{1b}[")
            .skip(1)
            .map(|sgr| sgr.split('m').next().unwrap_or(""))
            .collect();
        let colour = sgrs.iter().any(|codes| {
            codes.split(';').any(|c| {
                let n: u32 = c.parse().unwrap_or(0);
                matches!(n, 30..=38 | 40..=48 | 90..=97 | 100..=107)
            })
        });
        (colour, !sgrs.is_empty())
    }
}

const STACK: &str = r#"
[services.db]
command = ["sh", "-c", "echo db is up; exec sleep 100000"]

[services.web]
command = ["sh", "-c", "trap 'echo got-usr1-{dir}' USR1; trap '' TERM; while :; do sleep 0.1; done"]
requires = ["db"]
stop = { timeout = "3s" }
"#;

#[test]
fn the_view_shows_the_services_acts_on_them_and_follows_a_shutdown() {
    let Some((mut up, t)) = watched("top", &[]) else {
        return;
    };

    // The services with their states, and the first one's log.
    t.wait_for(
        &["SERVICE", "db", "web", "ready", "log: db", "db is up"],
        LONG,
    );
    assert_eq!(t.pane("#{alternate_on}"), "1");
    // In colour (`ready` is green), unlike with NO_COLOR below.
    assert_eq!(t.colours(), (true, true));

    // A signal from the view, and the line the service writes on it.
    t.keys(&["j"]);
    t.wait_for(&["log: web"], LONG);
    t.keys(&["g"]);
    t.wait_for(&["signal to send: SIGHUP_"], LONG);
    for _ in 0.."SIGHUP".len() {
        t.keys(&["BSpace"]);
    }
    t.keys(&["USR1", "Enter"]);
    // The log pane may be narrower than the line: its start is enough.
    t.wait_for(&["got-usr1-/"], LONG);

    // Stopping it from the view: asked first, then its row changes.
    t.keys(&["x"]);
    t.wait_for(&["stop web? (y/n)"], LONG);
    t.keys(&["y"]);
    // SIGTERM is ignored: its row counts down to SIGKILL, then says stopped.
    t.wait_for(&["SIGKILL in"], LONG);
    let row = t.line("web ");
    assert!(row.contains("stopping"), "{row}");
    t.wait_for(&["web stopped"], LONG);
    let row = t.wait_for(&["stopped"], LONG);
    assert!(
        row.lines()
            .any(|l| l.starts_with("web") && l.contains("stopped")),
        "{row}"
    );

    // Back up, then the shutdown, watched as it happens.
    t.keys(&["s"]);
    t.wait_for(&["web is ready"], LONG);
    let out = herd(up.dir.path(), &["down"]);
    assert!(out.status.success(), "{out:?}");
    let screen = t.wait_for(&["shutting down", "wave 1 stopping", "SIGKILL in"], LONG);
    let web = screen
        .lines()
        .find(|l| l.contains("web") && l.contains("SIGTERM sent"))
        .unwrap_or_else(|| panic!("no countdown for web:\n{screen}"));
    assert!(web.contains("stopping"), "{web}");
    // The process its stop waits for, by pid, state and command line.
    let main = screen
        .lines()
        .find(|l| l.contains("sh -c trap"))
        .unwrap_or_else(|| panic!("no process line:\n{screen}"));
    let pid: i32 = main
        .trim_start_matches(['│', ' '])
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {main:?}"));
    assert!(
        up.survivors().contains(&pid),
        "{pid} is web's shell: {main}"
    );
    assert!(main.contains("S sleeping"), "{main}");
    assert!(screen.contains("wave 2 waiting: db"), "{screen}");

    // At the end, the report; then q gives the terminal back.
    t.wait_for(&["shutdown report (exit code 3)", "web         0"], LONG);
    t.keys(&["q"]);
    let after = t.wait_for(&["top-exited-0"], LONG);
    assert!(after.contains("RESULT"), "the report is printed: {after}");
    assert_eq!(
        t.pane("#{alternate_on}"),
        "0",
        "still on the alternate screen"
    );
    assert_eq!(t.pane("#{cursor_flag}"), "1", "the cursor is hidden");
    assert_eq!(up.wait_exit(LONG), Some(3));
}

#[test]
fn q_restores_the_terminal_and_no_color_is_honoured() {
    let Some((up, t)) = watched("top_quit", &[("NO_COLOR", "1")]) else {
        return;
    };
    // No colour: bold and reverse video only.
    assert_eq!(t.colours(), (false, true), "a colour with NO_COLOR set");
    // A bigger terminal: drawn again to its width.
    assert!(
        t.tmux(&["resize-window", "-x", "120", "-y", "30"])
            .status()
            .unwrap()
            .success()
    );
    let until = Instant::now() + LONG;
    while !t
        .screen()
        .lines()
        .any(|l| l.chars().count() == 120 && l.starts_with('┌'))
    {
        assert!(
            Instant::now() < until,
            "not redrawn at 120 columns:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Help, then q.
    t.keys(&["?"]);
    t.wait_for(&["herd top: keys"], LONG);
    // Any key closes it (Escape and q sent together would read as Alt-q).
    t.keys(&["Escape"]);
    t.wait_for(&["q quit"], LONG);
    t.keys(&["q"]);
    t.wait_for(&["top-exited-0"], LONG);
    assert_eq!(t.pane("#{alternate_on}"), "0");
    assert_eq!(t.pane("#{cursor_flag}"), "1");
    // herder is untouched by a viewer leaving.
    let ps = herd(up.dir.path(), &["ps"]);
    assert!(String::from_utf8_lossy(&ps.stdout).contains("ready"));
}

#[test]
fn with_no_herder_it_says_so_plainly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("herd.toml"), STACK).unwrap();
    let out = herd(dir.path(), &["top"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no herder is running at"), "{err}");
}

#[test]
fn herder_killed_under_it_gives_the_terminal_back() {
    let Some((up, t)) = watched("top_gone", &[]) else {
        return;
    };
    up.signal(libc::SIGKILL);
    let screen = t.wait_for(&["top-exited-1"], LONG);
    assert!(screen.contains("herder has gone"), "{screen}");
    assert_eq!(t.pane("#{alternate_on}"), "0");
    assert_eq!(t.pane("#{cursor_flag}"), "1");
}
