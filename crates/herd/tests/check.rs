//! `herd check` end to end: each broken configuration must give exit code 1 and
//! exactly the expected `file:line:col: key: message` lines, all of them at once.

mod common;

use common::herd;

/// Writes `files` (the first is `herd.toml`'s content when named so) into a fresh
/// directory, runs `herd check` there and compares stderr with `expected`.
#[track_caller]
fn fails(files: &[(&str, &str)], expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let out = herd(dir.path(), &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr, expected, "stderr differs");
    assert_eq!(out.status.code(), Some(1), "exit code");
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

#[track_caller]
fn fails1(toml: &str, expected: &str) {
    fails(&[("herd.toml", toml)], expected);
}

/// Every example's herd.toml passes `herd check`, and the deployment examples'
/// deadlines fit together: the Pod's grace period holds its preStop hook, the
/// shutdown budget and a margin; Nomad's kill_timeout and the systemd unit's
/// TimeoutStopSec hold the budget.
#[test]
fn deployment_examples_check_and_their_deadlines_fit() {
    for file in [
        "examples/container/herd.toml",
        "examples/host/herd.toml",
        "examples/drain/herd.toml",
    ] {
        let out = herd(common::repo(), &["check", "-f", file]);
        assert!(out.status.success(), "{file}: {out:?}");
    }
    let read = |p: &str| std::fs::read_to_string(common::repo().join(p)).unwrap();
    // The number after `key` (and any of `: ="`) on its line.
    let number = |text: &str, key: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"));
        let digits: String = line[line.find(key).unwrap() + key.len()..]
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().unwrap()
    };
    let budget = |file: &str| {
        let c = herd_config::load(&common::repo().join(file)).unwrap();
        c.shutdown.timeout.as_secs()
    };
    let container = budget("examples/container/herd.toml");
    let pod = read("examples/container/pod.yaml");
    let grace = number(&pod, "terminationGracePeriodSeconds:");
    let pre_stop = number(&pod, "command: [\"sleep\",");
    const MARGIN: u64 = 5;
    assert!(
        container + pre_stop + MARGIN <= grace,
        "{container} + {pre_stop} + {MARGIN} > {grace}"
    );
    let nomad = number(&read("examples/container/nomad.hcl"), "kill_timeout");
    assert!(container < nomad, "{container} >= {nomad}");
    let unit = number(&read("examples/host/herd.service"), "TimeoutStopSec=");
    assert!(budget("examples/host/herd.toml") < unit);
}

#[test]
fn valid_example_passes() {
    let out = herd(common::repo(), &["check", "-f", "examples/stack/herd.toml"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "examples/stack/herd.toml: ok (5 services, 4 start waves, 4 stop waves, 2 files read)\n"
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty());
}

#[test]
fn missing_file() {
    fails(
        &[],
        "herd.toml: cannot read: No such file or directory\nherd.toml: 1 error\n",
    );
}

#[test]
fn syntax_error_is_reported_once_with_its_position() {
    fails1(
        "[services.a]\ncommand = [\"x\"\n\n[services.b]\n",
        "herd.toml:4:1: invalid TOML: missing comma between array elements, expected `,`\n\
         herd.toml: 1 error\n",
    );
}

#[test]
fn service_defined_twice_in_one_file_is_a_toml_error() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\n[services.a]\ncommand = [\"y\"]\n",
        "herd.toml:3:11: invalid TOML: duplicate key\nherd.toml: 1 error\n",
    );
}

#[test]
fn unknown_top_level_key() {
    fails1(
        "bogus = 1\n",
        "herd.toml:1:1: bogus: unknown key (expected one of: include, main, shutdown, supervisor, logs, services)\n\
         herd.toml: 1 error\n",
    );
}

#[test]
fn unknown_service_key_suggests_the_near_one() {
    fails1(
        "[services.api]\ncommand = [\"x\"]\nrequries = []\n",
        "herd.toml:3:1: services.api.requries: unknown key (did you mean \"requires\"?)\n\
         herd.toml: 1 error\n",
    );
}

#[test]
fn unknown_key_in_a_nested_table() {
    fails1(
        "[services.api]\ncommand = [\"x\"]\nstop = { sginal = \"TERM\" }\n",
        "herd.toml:3:10: services.api.stop.sginal: unknown key (did you mean \"signal\"?)\n\
         herd.toml: 1 error\n",
    );
}

#[test]
fn wrong_type() {
    fails1(
        "[services.api]\ncommand = 5\nshell = \"yes\"\n",
        "herd.toml:2:11: services.api.command: expected an array of strings, found an integer\n\
         herd.toml:3:9: services.api.shell: expected a boolean, found a string\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn missing_command() {
    fails1(
        "[services.api]\nkind = \"long\"\n",
        "herd.toml:1:11: services.api: missing required key \"command\"\nherd.toml: 1 error\n",
    );
}

#[test]
fn empty_command() {
    fails1(
        "[services.a]\ncommand = []\n[services.b]\ncommand = [\"\", \"x\"]\n[services.c]\nshell = true\ncommand = \"  \"\n",
        "herd.toml:2:11: services.a.command: empty command\n\
         herd.toml:4:12: services.b.command: the program name is empty\n\
         herd.toml:7:11: services.c.command: empty command\n\
         herd.toml: 3 errors\n",
    );
}

#[test]
fn shell_and_command_shape_must_agree() {
    fails1(
        "[services.a]\ncommand = \"sleep 1\"\n[services.b]\nshell = true\ncommand = [\"sleep\", \"1\"]\n",
        "herd.toml:2:11: services.a.command: a string command needs shell = true; or give an argv array such as [\"prog\", \"arg\"]\n\
         herd.toml:5:11: services.b.command: with shell = true the command is one string for /bin/sh -c\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn bad_durations() {
    fails1(
        "[shutdown]\ntimeout = 25\nkill_reserve = \"1.5s\"\n[services.a]\ncommand = [\"x\"]\nstop = { timeout = \"10\" }\n",
        "herd.toml:2:11: shutdown.timeout: expected a duration string such as \"10s\", found an integer\n\
         herd.toml:3:16: shutdown.kill_reserve: invalid duration \"1.5s\": unknown unit \".\" (use ms, s, m or h)\n\
         herd.toml:6:20: services.a.stop.timeout: invalid duration \"10\": missing unit (ms, s, m or h)\n\
         herd.toml: 3 errors\n",
    );
}

#[test]
fn bad_signals() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nstop = { signal = \"SIGFOO\" }\n[services.b]\ncommand = [\"x\"]\nstop = { signal = 99 }\n",
        "herd.toml:3:19: services.a.stop.signal: unknown signal \"SIGFOO\"\n\
         herd.toml:6:19: services.b.stop.signal: signal number 99 is out of range (1-31, 34-64)\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn bad_sizes_and_limits() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nlimits = { memory = \"12Q\", pids = 0, cpu = -1, nofile = \"many\" }\n",
        "herd.toml:3:21: services.a.limits.memory: invalid size \"12Q\": unknown unit \"q\" (use K, M, G or T)\n\
         herd.toml:3:35: services.a.limits.pids: must be at least 1\n\
         herd.toml:3:44: services.a.limits.cpu: must be a number of CPUs above zero\n\
         herd.toml:3:57: services.a.limits.nofile: expected an integer, found a string\n\
         herd.toml: 4 errors\n",
    );
}

#[test]
fn unknown_enum_values() {
    fails1(
        "[supervisor]\ncontainment = \"docker\"\n[services.a]\ncommand = [\"x\"]\nkind = \"daemon\"\nstop = { mode = \"all\" }\nrestart = { policy = \"sometimes\" }\n",
        "herd.toml:2:15: supervisor.containment: unknown value \"docker\" (expected one of: auto, cgroup2, freezer, none)\n\
         herd.toml:5:8: services.a.kind: unknown value \"daemon\" (expected one of: long, oneshot)\n\
         herd.toml:6:17: services.a.stop.mode: unknown value \"all\" (expected one of: group, main, mixed)\n\
         herd.toml:7:22: services.a.restart.policy: unknown value \"sometimes\" (expected one of: always, on-failure, never)\n\
         herd.toml: 4 errors\n",
    );
}

#[test]
fn bad_backoff_and_start_limit() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nrestart = { backoff = \"30s..1s\", limit = \"0/1m\" }\n",
        "herd.toml:3:23: services.a.restart.backoff: invalid backoff \"30s..1s\": the floor is above the ceiling\n\
         herd.toml:3:42: services.a.restart.limit: invalid start limit \"0/1m\": the number of starts must be at least 1\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn unknown_dependencies() {
    fails1(
        "[services.db]\ncommand = [\"x\"]\n[services.api]\ncommand = [\"x\"]\nrequires = [\"dbx\"]\nafter = [\"cache\"]\n",
        "herd.toml:5:13: services.api.requires: unknown service \"dbx\" (did you mean \"db\"?)\n\
         herd.toml:6:10: services.api.after: unknown service \"cache\"\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn dependency_listed_twice() {
    fails1(
        "[services.db]\ncommand = [\"x\"]\n[services.api]\ncommand = [\"x\"]\nrequires = [\"db\", \"db\"]\n",
        "herd.toml:5:19: services.api.requires: \"db\" is listed twice\nherd.toml: 1 error\n",
    );
}

#[test]
fn dependency_cycle_is_named_whole() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nrequires = [\"b\"]\n\
         [services.b]\ncommand = [\"x\"]\nafter = [\"c\"]\n\
         [services.c]\ncommand = [\"x\"]\nrequires = [\"a\"]\n",
        "herd.toml:3:13: services.a.requires: dependency cycle: a -> b -> c -> a\nherd.toml: 1 error\n",
    );
}

#[test]
fn service_requiring_itself() {
    fails1(
        "[services.loop]\ncommand = [\"x\"]\nafter = [\"loop\"]\n",
        "herd.toml:3:10: services.loop.after: dependency cycle: loop -> loop\nherd.toml: 1 error\n",
    );
}

#[test]
fn main_names_no_service() {
    fails1(
        "main = \"ap\"\n[services.api]\ncommand = [\"x\"]\n",
        "herd.toml:1:8: main: unknown service \"ap\" (did you mean \"api\"?)\nherd.toml: 1 error\n",
    );
}

#[test]
fn include_that_matches_nothing() {
    fails1(
        "include = [\"conf.d/*.toml\"]\n",
        "herd.toml:1:12: include: \"conf.d/*.toml\" matches no file\nherd.toml: 1 error\n",
    );
}

#[test]
fn include_with_an_invalid_pattern() {
    fails1(
        "include = [\"conf.d/[.toml\"]\n",
        "herd.toml:1:12: include: invalid pattern \"conf.d/[.toml\": invalid range pattern\nherd.toml: 1 error\n",
    );
}

#[test]
fn include_defining_a_service_twice() {
    fails(
        &[
            (
                "herd.toml",
                "include = [\"conf.d/*.toml\"]\n[services.db]\ncommand = [\"x\"]\n",
            ),
            ("conf.d/a.toml", "[services.web]\ncommand = [\"x\"]\n"),
            ("conf.d/b.toml", "[services.db]\ncommand = [\"y\"]\n"),
        ],
        "conf.d/b.toml:1:11: services.db: defined twice (first at herd.toml:2:11)\nherd.toml: 1 error\n",
    );
}

#[test]
fn included_file_may_only_define_services() {
    fails(
        &[
            ("herd.toml", "include = [\"conf.d/*.toml\"]\n"),
            (
                "conf.d/a.toml",
                "main = \"x\"\n[services.x]\ncommand = [\"x\"]\n",
            ),
        ],
        "conf.d/a.toml:1:1: main: only [services] may be set in an included file\nherd.toml: 1 error\n",
    );
}

#[test]
fn errors_in_included_files_name_that_file() {
    fails(
        &[
            ("herd.toml", "include = [\"conf.d/*.toml\"]\n"),
            (
                "conf.d/a.toml",
                "[services.x]\ncommand = [\"x\"]\nkind = 1\n",
            ),
        ],
        "conf.d/a.toml:3:8: services.x.kind: expected a string, found an integer\nherd.toml: 1 error\n",
    );
}

#[test]
fn ready_takes_exactly_one_check() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nready = { tcp = \"127.0.0.1:1\", http = \"http://x/\" }\n\
         [services.b]\ncommand = [\"x\"]\nready = { timeout = \"5s\" }\n",
        "herd.toml:3:39: services.a.ready: takes one check, found tcp and http\n\
         herd.toml:6:9: services.b.ready: needs one check: tcp, http, exec, log, notify, delay\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn health_and_watchdog_values() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nhealth = { log = \"up\" }\n\
         [services.b]\ncommand = [\"x\"]\nhealth = { tcp = \"127.0.0.1:1\", failures = 0, interval = \"0s\" }\n\
         [services.c]\ncommand = [\"x\"]\nkind = \"oneshot\"\nhealth = { exec = [\"true\"] }\nwatchdog = \"1s\"\n\
         [services.d]\ncommand = [\"x\"]\nwatchdog = \"0s\"\nwatchdog_signal = \"SIGNOPE\"\n",
        "herd.toml:3:10: services.a.health: needs one check: tcp, http, exec\n\
         herd.toml:3:12: services.a.health.log: unknown key (expected one of: tcp, http, exec, interval, timeout, failures, start_period)\n\
         herd.toml:6:44: services.b.health.failures: must be at least 1\n\
         herd.toml:6:58: services.b.health.interval: must be above zero\n\
         herd.toml:10:10: services.c.health: a oneshot runs to its end; it takes no health check\n\
         herd.toml:11:12: services.c.watchdog: a oneshot runs to its end; it takes no watchdog\n\
         herd.toml:14:12: services.d.watchdog: must be above zero\n\
         herd.toml:15:19: services.d.watchdog_signal: unknown signal \"SIGNOPE\"\n\
         herd.toml: 8 errors\n",
    );
}

#[test]
fn ready_check_values() {
    fails1(
        "[services.a]\ncommand = [\"x\"]\nready = { tcp = \"localhost\" }\n\
         [services.b]\ncommand = [\"x\"]\nready = { http = \"https://x/\" }\n\
         [services.c]\ncommand = [\"x\"]\nready = { log = \"([a\" }\n\
         [services.d]\ncommand = [\"x\"]\nready = { log = \"up\", interval = \"1s\" }\n\
         [services.e]\ncommand = [\"x\"]\nready = { notify = false }\n",
        "herd.toml:3:17: services.a.ready.tcp: invalid address \"localhost\": write host:port, e.g. \"127.0.0.1:5432\"\n\
         herd.toml:6:18: services.b.ready.http: invalid URL \"https://x/\": only http:// URLs are checked (no TLS)\n\
         herd.toml:9:17: services.c.ready.log: invalid regular expression: non-empty character class has no closing bracket\n\
         herd.toml:12:34: services.d.ready.interval: applies only to tcp, http and exec checks\n\
         herd.toml:15:20: services.e.ready.notify: notify = false is no check; remove it\n\
         herd.toml: 5 errors\n",
    );
}

#[test]
fn oneshot_rules() {
    fails1(
        "[services.job]\nkind = \"oneshot\"\ncommand = [\"true\"]\nready = { delay = \"1s\" }\nrestart = { policy = \"always\" }\n",
        "herd.toml:4:9: services.job.ready: a oneshot is ready when it exits 0; it takes no ready check\n\
         herd.toml:5:22: services.job.restart.policy: a oneshot cannot restart always (it would run forever); use on-failure\n\
         herd.toml: 2 errors\n",
    );
}

#[test]
fn bad_names() {
    fails1(
        "[services.\"bad.name\"]\ncommand = [\"x\"]\n[services.ok]\ncommand = [\"x\"]\nenv = { \"A=B\" = \"x\", N = 1 }\n",
        "herd.toml:1:11: services.\"bad.name\": a service name is 1 to 64 letters, digits, '-' or '_', starting with a letter or digit\n\
         herd.toml:5:9: services.ok.env.\"A=B\": an environment variable name must be non-empty, without '=' or NUL\n\
         herd.toml:5:26: services.ok.env.N: expected a string, found an integer\n\
         herd.toml: 3 errors\n",
    );
}

/// An error in one service must not make the services that depend on it look
/// undefined: only the real error is reported.
#[test]
fn a_broken_service_is_still_known_to_its_dependents() {
    fails1(
        "[services.db]\ncommand = [\"x\"]\nstop = { signal = \"NOPE\" }\n[services.api]\ncommand = [\"x\"]\nrequires = [\"db\"]\n",
        "herd.toml:3:19: services.db.stop.signal: unknown signal \"NOPE\"\nherd.toml: 1 error\n",
    );
}

#[test]
fn every_error_in_one_file_at_once_in_file_order() {
    fails1(
        r#"include = ["nothing/*.toml"]
main = "ap"

[shutdown]
timeout = 25

[services.api]
comand = ["x"]
requires = ["dbx", "db"]
stop = { signal = "SIGFOO", timeout = "10x" }

[services.db]
command = "postgres -D data"
requires = ["cache"]

[services.cache]
command = ["cache"]
after = ["db"]
"#,
        r#"herd.toml:1:12: include: "nothing/*.toml" matches no file
herd.toml:2:8: main: unknown service "ap" (did you mean "api"?)
herd.toml:5:11: shutdown.timeout: expected a duration string such as "10s", found an integer
herd.toml:7:11: services.api: missing required key "command"
herd.toml:8:1: services.api.comand: unknown key (did you mean "command"?)
herd.toml:9:13: services.api.requires: unknown service "dbx" (did you mean "db"?)
herd.toml:10:19: services.api.stop.signal: unknown signal "SIGFOO"
herd.toml:10:39: services.api.stop.timeout: invalid duration "10x": unknown unit "x" (use ms, s, m or h)
herd.toml:13:11: services.db.command: a string command needs shell = true; or give an argv array such as ["prog", "arg"]
herd.toml:18:10: services.cache.after: dependency cycle: cache -> db -> cache
herd.toml: 10 errors
"#,
    );
}

#[test]
fn check_reports_the_file_given_with_f() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("conf")).unwrap();
    std::fs::write(
        dir.path().join("conf/stack.toml"),
        "[services.a]\nkind = 2\ncommand = [\"x\"]\n",
    )
    .unwrap();
    let out = herd(dir.path(), &["check", "-f", "conf/stack.toml"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "conf/stack.toml:2:8: services.a.kind: expected a string, found an integer\nconf/stack.toml: 1 error\n"
    );
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = herd(dir.path(), &["check", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Regression test: `herd check -f /dev/zero` read for ever (4.4 GB in 4 s,
/// growing). A device, or a link to one, is refused before a byte is read.
#[test]
fn a_device_as_the_configuration_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("herd.toml")).unwrap();
    for args in [&["check", "-f", "/dev/zero"][..], &["check"]] {
        let out = herd(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("cannot read: a character device, not a regular file"),
            "{stderr}"
        );
    }
}

/// Regression test: `include = ["/**/*.toml"]` walked the whole file system
/// (herd check hung). The walk is bounded and the error names the pattern.
#[test]
fn an_include_that_walks_the_whole_file_system_gives_up() {
    let out_of_bounds = "herd.toml:1:12: include: \"/**/*.toml\" looks at more than 100000 directory entries; name the files more narrowly\nherd.toml: 1 error\n";
    fails1("include = [\"/**/*.toml\"]\n", out_of_bounds);
}

/// `herd check` says what `herd up` would refuse about its paths: a control
/// socket path too long for `sun_path`, a state directory that cannot be made.
#[test]
fn paths_herd_up_would_refuse_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("x".repeat(120)).join("herd.sock");
    std::fs::write(dir.path().join("file"), "").unwrap();
    let toml = format!(
        "[supervisor]\nstate_dir = \"file/state\"\nsocket = \"{}\"\n\n[services.a]\ncommand = [\"true\"]\n",
        long.display()
    );
    std::fs::write(dir.path().join("herd.toml"), toml).unwrap();
    let out = herd(dir.path(), &["check"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let len = long.as_os_str().len();
    let expected = format!(
        "herd.toml: supervisor.socket: {} is {len} bytes; a Unix socket's path may have 107 at most (set supervisor.socket)\n\
         herd.toml: supervisor.state_dir: ./file/state cannot be created: ./file is not a directory\n\
         herd.toml: 2 errors\n",
        long.display(),
    );
    assert_eq!(stderr, expected);
}

/// Every command finds the project as git finds its repository: from a
/// subdirectory, the nearest herd.toml above; `HERD_FILE` names one instead.
#[test]
fn the_nearest_herd_toml_above_is_found_and_herd_file_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(
        root.join("herd.toml"),
        "[services.a]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let deep = root.join("src/deeper");
    std::fs::create_dir_all(&deep).unwrap();
    let out = herd(&deep, &["check"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}: ok (1 service, 1 start waves, 1 stop waves, 1 file read)\n",
            root.join("herd.toml").display()
        )
    );
    std::fs::write(
        deep.join("other.toml"),
        "[services.a]\ncommand = [\"true\"]\n[services.b]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herd"))
        .arg("check")
        .current_dir(&deep)
        .env("HERD_FILE", "other.toml")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "other.toml: ok (2 services, 1 start waves, 1 stop waves, 1 file read)\n"
    );
}

/// `herd check` says when a service's stop.timeout is cut to fit the budget (the
/// configuration is valid: exit 0), and `herd plan` says what happens at run time.
#[test]
fn a_stop_timeout_cut_to_fit_the_budget_is_said() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("herd.toml"),
        r#"[shutdown]
timeout = "8s"

[services.db]
command = ["true"]
stop = { timeout = "10s" }

[services.web]
command = ["true"]
requires = ["db"]
stop = { timeout = "5s" }
"#,
    )
    .unwrap();
    let out = herd(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "herd.toml: warning: services.web.stop.timeout 5s is cut to 3.5s in the worst case of a full shutdown (budget 8s, 2 stop waves); it gets up to 5s when the waves before it end early (herd plan)\n\
         herd.toml: warning: services.db.stop.timeout 10s is cut to 3.5s in the worst case of a full shutdown (budget 8s, 2 stop waves); it gets up to 10s when the waves before it end early (herd plan)\n"
    );
    let plan = herd(dir.path(), &["plan"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.ends_with(
            "cut gets up to its stop.timeout, as long as the later waves keep their share.\n"
        ),
        "{plan}"
    );
}

/// The README's tour stays true: its `herd check` example is what the binary
/// prints for the tour's file with the two changes the README names, and its
/// `herd plan` example is what the binary prints for the example stack.
#[test]
fn the_readme_tour_is_what_the_binary_prints() {
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let block = |after: &str, fence: &str| -> String {
        let from = readme.find(after).unwrap_or_else(|| panic!("no {after:?}"));
        let rest = &readme[from..];
        let start = rest.find(fence).expect("a block") + fence.len();
        let body = &rest[start..];
        let body = &body[body.find('\n').unwrap() + 1..];
        body[..body.find("```").expect("its end")].to_string()
    };
    let tour = block("## A 60-second tour", "```toml");
    let broken = tour
        .replace(r#"requires = ["db"]"#, r#"requires = ["dbx"]"#)
        .replace(
            r#"stop = { timeout = "8s", notify = true }"#,
            r#"stop = { timeout = "8s", signal = "SIGFOO" }"#,
        );
    assert_ne!(broken, tour);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("herd.toml"), broken).unwrap();
    let check = block(
        "`herd check` validates and names every problem",
        "```console",
    );
    let (cmd, expected) = check.split_once('\n').unwrap();
    assert_eq!(cmd, "$ herd check");
    let out = herd(dir.path(), &["check"]);
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);

    let plan = block("`herd plan` shows the start order", "```console");
    let (cmd, expected) = plan.split_once('\n').unwrap();
    assert_eq!(cmd, "$ herd plan -f examples/stack/herd.toml");
    let out = herd(common::repo(), &["plan", "-f", "examples/stack/herd.toml"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}
