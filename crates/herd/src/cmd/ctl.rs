//! The commands that talk to a running herder over its control socket: `ps`,
//! `start`, `stop`, `restart`, `signal`, `logs`, `events`, `reload`.
//!
//! Exit codes: 0 done; 1 herder refused or could not do it (the reason is printed),
//! or no herder runs at the socket. A reader that goes away (`| head`) is not an
//! error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use hyper::Method;

use herd_api::answer::{LogLine, split_stamp};
use herd_api::{Change, ReloadAnswer, ServiceStatus};

use crate::api::client;
use crate::output::{self, Table};

/// What to do.
pub enum Action<'a> {
    Ps {
        /// Only these (all when empty).
        names: &'a [String],
        json: bool,
    },
    Act {
        verb: &'a str,
        name: &'a str,
        timeout: Option<std::time::Duration>,
    },
    Signal {
        name: &'a str,
        signal: &'a str,
        all: bool,
    },
    Logs {
        names: &'a [String],
        follow: bool,
        lines: Option<usize>,
        json: bool,
        /// Show the time each line was read.
        timestamps: bool,
    },
    Events {
        json: bool,
    },
    Reload {
        timeout: Option<std::time::Duration>,
        json: bool,
    },
}

/// The socket to talk to: `--socket`, else the configuration's.
pub fn socket(file: &Path, flag: Option<&Path>) -> Result<PathBuf, ExitCode> {
    // With --socket the configuration is not needed (nor, perhaps, readable).
    match flag {
        Some(s) => Ok(s.to_path_buf()),
        None => super::load_or_report(file).map(|c| crate::api::socket_path(&c, file, None)),
    }
}

/// A runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&format!("cannot start the runtime: {e}")))
}

pub fn run(file: &Path, socket: Option<&Path>, action: Action) -> ExitCode {
    let sock = match self::socket(file, socket) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (method, path) = match &action {
        Action::Logs {
            names,
            follow,
            lines,
            json,
            timestamps,
        } => {
            let how = LogsHow {
                follow: *follow,
                lines: *lines,
                json: *json,
                timestamps: *timestamps,
            };
            let config = super::load_quietly(file);
            if config.as_ref().is_some_and(|c| !c.logs.files) {
                return fail(
                    "no log files: logs.files = false sends services' output to herder's stdout only",
                );
            }
            let dir = config.map(|c| super::up::state_dir(&c, file).join("logs"));
            return rt.block_on(logs(&sock, dir.as_deref(), names, &how));
        }
        Action::Events { json } => return rt.block_on(events(&sock, *json)),
        Action::Reload { timeout, .. } => (
            Method::POST,
            format!(
                "/v1/reload{}",
                timeout.map_or(String::new(), |t| format!("?timeout={}ms", t.as_millis()))
            ),
        ),
        Action::Ps { .. } => (Method::GET, "/v1/services".to_string()),
        Action::Signal { name, signal, all } => (
            Method::POST,
            format!(
                "/v1/services/{name}/signal?signal={signal}{}",
                if *all { "&all=true" } else { "" }
            ),
        ),
        Action::Act {
            verb,
            name,
            timeout,
        } => (
            Method::POST,
            format!(
                "/v1/services/{name}/{verb}{}",
                timeout.map_or(String::new(), |t| format!("?timeout={}ms", t.as_millis()))
            ),
        ),
    };
    let (status, body) = match rt.block_on(client::request(&sock, method, &path)) {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if let Action::Reload { json, .. } = action {
        return reloaded(status, &body, json);
    }
    if !status.is_success() {
        return fail(&client::message(&body));
    }
    match action {
        Action::Ps { names, json } => {
            let list = match serde_json::from_slice::<Vec<ServiceStatus>>(&body) {
                Ok(list) => list,
                Err(e) => return fail(&format!("unexpected answer from herder: {e}")),
            };
            let list = match only(list, names) {
                Ok(list) => list,
                Err(unknown) => return fail(&format!("no service named {unknown}")),
            };
            if json {
                let text = serde_json::to_string(&list).expect("plain data");
                return output::stdout(&(text + "\n"));
            }
            // The processes no service claims concern every service.
            let unclaimed = rt.block_on(unclaimed(&sock));
            output::stdout(&(table(&list) + &unclaimed))
        }
        Action::Act { .. } | Action::Signal { .. } => {
            output::stdout(&(client::message(&body) + "\n"))
        }
        Action::Logs { .. } | Action::Events { .. } | Action::Reload { .. } => {
            unreachable!("answered above")
        }
    }
}

/// The services of `list` named in `names` (all of them when it is empty), in
/// `list`'s order; the first name no service has, if one does not.
fn only(list: Vec<ServiceStatus>, names: &[String]) -> Result<Vec<ServiceStatus>, String> {
    if let Some(unknown) = names.iter().find(|n| !list.iter().any(|s| &s.name == *n)) {
        return Err(unknown.clone());
    }
    Ok(list
        .into_iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect())
}

/// The footer of `herd ps` that lists processes re-parented to herder that no
/// service claims (none backend), if there are any.
async fn unclaimed(sock: &Path) -> String {
    let Ok((status, body)) = client::request(sock, Method::GET, "/v1/unclaimed").await else {
        return String::new();
    };
    let list = match serde_json::from_slice::<herd_api::Unclaimed>(&body) {
        Ok(u) if status.is_success() => u.unclaimed,
        _ => return String::new(),
    };
    if list.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n{} unclaimed process(es), re-parented to herder, of no service (killed at shutdown):\n",
        list.len()
    );
    for l in list {
        out.push_str(&format!("  {l}\n"));
    }
    out
}

/// `herd reload`: what changed, and how each service it started or removed ended
/// up; 1 if the file was refused or a service did not come up.
fn reloaded(status: hyper::StatusCode, body: &[u8], json: bool) -> ExitCode {
    // Anything else than an answer of a reload applied is a refusal.
    let Ok(answer) = serde_json::from_slice::<ReloadAnswer>(body) else {
        return fail(&client::message(body));
    };
    let code = if json {
        output::stdout(&(String::from_utf8_lossy(body).into_owned() + "\n"))
    } else {
        let mut out = format!("{}\n", answer.message);
        for note in &answer.plan.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for r in &answer.results {
            let ok = if r.ok { " ok " } else { "FAIL" };
            out.push_str(&format!("{ok} {}\n", r.message));
        }
        output::stdout(&out)
    };
    if status.is_success() {
        code
    } else {
        ExitCode::from(1)
    }
}

/// `herd events`: every state change until herder finishes (or the reader goes).
async fn events(sock: &Path, json: bool) -> ExitCode {
    let (status, body) = match client::open(sock, Method::GET, "/v1/events").await {
        Ok(r) => r,
        Err(e) => return fail(&e.to_string()),
    };
    if !status.is_success() {
        let body = client::rest(body).await;
        return fail(&client::message(&body));
    }
    let mut lines = Lines::default();
    let read = client::read_stream(sock, body, |chunk| {
        lines.feed(chunk, |line| {
            let text = if json {
                format!("{line}\n")
            } else {
                match serde_json::from_str::<Change>(line) {
                    Ok(c) => c.describe(),
                    Err(_) => format!("{line}\n"),
                }
            };
            output::emit(&text)
        })
    })
    .await;
    match read {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Splits a byte stream into lines; a last line without its end is kept until
/// [`Lines::finish`].
#[derive(Default)]
pub struct Lines {
    pending: Vec<u8>,
}

impl Lines {
    /// Calls `each` with every whole line; false from it stops (and is returned).
    pub fn feed(&mut self, chunk: &[u8], mut each: impl FnMut(&str) -> bool) -> bool {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        let mut go_on = true;
        while let Some(i) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + i]).into_owned();
            start += i + 1;
            if !each(&line) {
                go_on = false;
                break;
            }
        }
        self.pending.drain(..start);
        go_on
    }

    fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())
    }
}

/// How `herd logs` shows lines.
pub struct LogsHow {
    pub follow: bool,
    pub lines: Option<usize>,
    pub json: bool,
    pub timestamps: bool,
}

/// `herd logs`: each service's last lines (all of its current log without `-n`),
/// every service's interleaved by the time they were read; with `-f`, then every
/// new line of all of them as it comes. Lines carry a `NAME | ` prefix when there
/// is more than one service, and their time with `-t`. With no herder running,
/// the log files in `dir` are read instead (not with `-f`).
async fn logs(sock: &Path, dir: Option<&Path>, names: &[String], how: &LogsHow) -> ExitCode {
    let names: Vec<String> = if names.is_empty() {
        match service_names(sock).await {
            Ok(n) => n,
            Err(_) if !how.follow && dir.is_some_and(Path::is_dir) => {
                return offline(dir.expect("checked"), &[], how);
            }
            Err(e) => return fail(&e),
        }
    } else if !how.follow
        && dir.is_some_and(Path::is_dir)
        && client::request(sock, Method::GET, "/v1/services")
            .await
            .is_err()
    {
        return offline(dir.expect("checked"), names, how);
    } else {
        names.to_vec()
    };
    let query = {
        let mut q = Vec::new();
        if let Some(n) = how.lines {
            q.push(format!("n={n}"));
        }
        if how.follow {
            q.push("follow=true".into());
        }
        q.join("&")
    };
    let show = Show::new(&names, how);
    // Every stream's lines go through one channel to the one writer.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(String, String), String>>(256);
    let sock = sock.to_path_buf();
    let fetch = move |name: String, tx| {
        let path = format!("/v1/services/{name}/logs?{query}");
        fetch_log(sock.clone(), path, name, tx)
    };
    if how.follow {
        for n in names {
            tokio::spawn(fetch(n, tx.clone()));
        }
    } else {
        let tx = tx.clone();
        tokio::spawn(async move {
            for n in names {
                if !fetch(n, tx.clone()).await {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut failed = false;
    // Without -f, every line is in before any is shown: they are shown by time.
    let mut tails = Vec::new();
    while let Some(item) = rx.recv().await {
        match item {
            Ok(line) if !how.follow => tails.push(line),
            Ok((name, line)) => {
                if !output::emit(&show.line(&name, &line)) {
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) => {
                failed = true;
                output::stderr(&format!("herd: {e}\n"));
            }
        }
    }
    if !show.all(tails) {
        return ExitCode::SUCCESS;
    }
    ExitCode::from(u8::from(failed))
}

/// `herd logs` with no herder running: the files of `dir` (`NAME.log` and its
/// rotated `NAME.log.N`, oldest first), every service's when `names` is empty.
fn offline(dir: &Path, names: &[String], how: &LogsHow) -> ExitCode {
    let names: Vec<String> = if names.is_empty() {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".log").map(str::to_string)
            })
            .collect();
        found.sort();
        found
    } else {
        names.to_vec()
    };
    let mut tails = Vec::new();
    for name in &names {
        let file = crate::api::logs::path(dir, name);
        if !file.exists() {
            return fail(&format!(
                "no herder runs, and no log of {name} in {}",
                dir.display()
            ));
        }
        let mut all: Vec<String> = Vec::new();
        for k in (1..=99).rev() {
            let rotated = PathBuf::from(format!("{}.{k}", file.display()));
            if let Ok(text) = std::fs::read_to_string(&rotated) {
                all.extend(text.lines().map(str::to_string));
            }
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        all.extend(text.lines().map(str::to_string));
        let skip = how.lines.map_or(0, |n| all.len().saturating_sub(n));
        tails.extend(all.into_iter().skip(skip).map(|l| (name.clone(), l)));
    }
    Show::new(&names, how).all(tails);
    ExitCode::SUCCESS
}

/// How each line of `herd logs` is written.
struct Show {
    prefix: bool,
    width: usize,
    json: bool,
    timestamps: bool,
}

impl Show {
    fn new(names: &[String], how: &LogsHow) -> Show {
        Show {
            prefix: names.len() > 1,
            width: names.iter().map(String::len).max().unwrap_or(0),
            json: how.json,
            timestamps: how.timestamps,
        }
    }

    /// One line of the log file of `name` (`STAMP text`), as shown.
    fn line(&self, name: &str, line: &str) -> String {
        let (stamp, text) = split_stamp(line);
        if self.json {
            let line = LogLine {
                service: name.to_string(),
                line: text.to_string(),
                time: stamp.map(str::to_string),
            };
            return serde_json::to_string(&line).expect("plain data") + "\n";
        }
        let text = match stamp {
            Some(s) if self.timestamps => format!("{s} {text}"),
            _ => text.to_string(),
        };
        if self.prefix {
            format!("{name:>width$} | {text}\n", width = self.width)
        } else {
            format!("{text}\n")
        }
    }

    /// Every line of `tails`, interleaved by the time each was read (a stable
    /// sort: each service's own order is kept); false if the reader went away.
    fn all(&self, mut tails: Vec<(String, String)>) -> bool {
        tails.sort_by(|a, b| split_stamp(&a.1).0.cmp(&split_stamp(&b.1).0));
        tails.iter().all(|(n, l)| output::emit(&self.line(n, l)))
    }
}

/// Every service's name, from the running herder.
async fn service_names(sock: &Path) -> Result<Vec<String>, String> {
    match client::request(sock, Method::GET, "/v1/services").await {
        Ok((st, body)) if st.is_success() => serde_json::from_slice::<Vec<ServiceStatus>>(&body)
            .map(|list| list.into_iter().map(|s| s.name).collect())
            .map_err(|e| format!("unexpected answer from herder: {e}")),
        Ok((_, body)) => Err(client::message(&body)),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends every line of one service's log (`path` on the socket) to `tx`, tagged
/// with its `name`; false once nobody reads any more.
async fn fetch_log(
    sock: PathBuf,
    path: String,
    name: String,
    tx: tokio::sync::mpsc::Sender<Result<(String, String), String>>,
) -> bool {
    let (status, body) = match client::open(&sock, Method::GET, &path).await {
        Ok(r) => r,
        Err(e) => return tx.send(Err(e.to_string())).await.is_ok(),
    };
    if !status.is_success() {
        let body = client::rest(body).await;
        return tx.send(Err(client::message(&body))).await.is_ok();
    }
    let mut split = Lines::default();
    let mut body = body;
    while let Some(Ok(frame)) = http_body_util::BodyExt::frame(&mut body).await {
        let Some(chunk) = frame.data_ref() else {
            continue;
        };
        let mut got = Vec::new();
        split.feed(chunk, |line| {
            got.push(line.to_string());
            true
        });
        for line in got {
            if tx.send(Ok((name.clone(), line))).await.is_err() {
                return false;
            }
        }
    }
    match split.finish() {
        Some(rest) => tx.send(Ok((name.clone(), rest))).await.is_ok(),
        None => true,
    }
}

pub fn fail(msg: &str) -> ExitCode {
    output::stderr(&format!("herd: {msg}\n"));
    ExitCode::from(1)
}

fn table(list: &[ServiceStatus]) -> String {
    let mut t = Table::new(&[
        "SERVICE", "STATE", "PID", "PROCS", "CPU%", "MEM", "UPTIME", "RUNS", "HEALTH", "DETAIL",
    ]);
    for s in list {
        t.row(vec![
            s.name.clone(),
            s.state.clone(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.processes.to_string(),
            cpu_percent(s),
            s.memory_bytes.map_or("-".into(), format_bytes),
            s.uptime_ms.map_or("-".into(), |ms| {
                herd_config::units::format_duration(std::time::Duration::from_secs(ms / 1000))
            }),
            s.runs.to_string(),
            s.health.clone().unwrap_or_else(|| "-".into()),
            s.detail
                .clone()
                .or_else(|| s.status_text.clone())
                .or_else(|| s.last_exit.clone().map(|e| format!("last: {e}")))
                .unwrap_or_default(),
        ]);
    }
    t.render("")
}

/// CPU time over time running, as ps(1) reckons `%CPU`: the average of the
/// current run (100 is one CPU busy the whole time).
fn cpu_percent(s: &ServiceStatus) -> String {
    match (s.cpu_seconds, s.uptime_ms) {
        (Some(cpu), Some(ms)) if ms > 0 => format!("{:.1}", cpu * 100_000.0 / ms as f64),
        _ => "-".into(),
    }
}

/// `512K`, `12.3M`, `1.5G`: a size in the units `limits.memory` takes.
pub(crate) fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["K", "M", "G", "T"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1}{}", UNITS[unit])
    } else {
        format!("{v:.0}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_short() {
        let f = super::format_bytes;
        assert_eq!(
            [f(512), f(2048), f(12 << 20), f(1536 << 20)],
            ["512B", "2.0K", "12M", "1.5G"]
        );
    }
}
