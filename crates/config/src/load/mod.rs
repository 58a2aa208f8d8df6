//! Reading herd.toml and its includes into a [`Config`], collecting every problem.
//!
//! # How it works
//!
//! Each file is parsed into `toml`'s spanned tree with syntax-error recovery, so even
//! several syntax errors are reported together. The tree is then walked by hand rather
//! than deserialised with serde: serde stops at the first error, and herder promises all
//! of them at once, each with file, line, column and the dotted key. Every table is
//! checked for unknown keys before its known keys are read; a value of the wrong shape
//! is reported and skipped, and the walk goes on with the next key.
//!
//! Checks that need the whole configuration (names defined twice across includes,
//! unknown dependencies, dependency cycles, `main`) run after every file is read.
//!
//! Relative paths (`workdir`, `env_file`, `include`, `supervisor.state_dir`, …) are
//! resolved against the directory of the file that contains them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diag::{Diagnostic, Diagnostics, Position, Source};
use crate::graph::DepGraph;
use crate::schema::*;

mod cx;
mod files;
mod service;

use service::check_name;

type Val<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "include",
    "main",
    "shutdown",
    "supervisor",
    "logs",
    "services",
];
const SERVICE_KEYS: &[&str] = &[
    "command",
    "shell",
    "env",
    "env_file",
    "workdir",
    "user",
    "group",
    "kind",
    "requires",
    "after",
    "ready",
    "health",
    "watchdog",
    "watchdog_signal",
    "restart",
    "stop",
    "limits",
    "sockets",
    "fd_store_max",
    "on_demand",
    "idle_stop",
];
const SOCKET_KEYS: &[&str] = &["listen", "name", "backlog", "mode", "owner"];
const READY_CHECKS: &[&str] = &["tcp", "http", "exec", "log", "notify", "delay"];
const READY_KEYS: &[&str] = &[
    "tcp", "http", "exec", "log", "notify", "delay", "interval", "timeout",
];
const HEALTH_CHECKS: &[&str] = &["tcp", "http", "exec"];
const HEALTH_KEYS: &[&str] = &[
    "tcp",
    "http",
    "exec",
    "interval",
    "timeout",
    "failures",
    "start_period",
];
const RESTART_KEYS: &[&str] = &["policy", "backoff", "limit", "stable"];
const STOP_KEYS: &[&str] = &["signal", "timeout", "mode", "exec", "notify"];
const LIMIT_KEYS: &[&str] = &["memory", "pids", "cpu", "nofile", "nproc", "core"];
const SHUTDOWN_KEYS: &[&str] = &["timeout", "kill_reserve"];
const SUPERVISOR_KEYS: &[&str] = &[
    "containment",
    "state_dir",
    "socket",
    "socket_group",
    "max_connections",
    "instance",
];
const LOGS_KEYS: &[&str] = &["max_size", "keep", "files"];

/// Loads `path` and everything it includes.
///
/// On failure the [`Diagnostics`] hold every problem found, in file order.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    finish(path, None)
}

/// As [`load`], with the main file's text given rather than read: for
/// configuration that does not come from a file, and for the fuzzer. Includes
/// are still read from disk, relative to `path`.
pub fn load_str(path: &Path, text: &str) -> Result<Config, Diagnostics> {
    finish(path, Some(text.to_string()))
}

fn finish(path: &Path, text: Option<String>) -> Result<Config, Diagnostics> {
    let mut loader = Loader::default();
    let config = loader.run(path, text);
    let mut diags = Diagnostics(loader.diags);
    if diags.is_empty() {
        return Ok(config);
    }
    diags.sort(&config.files);
    Err(diags)
}

/// A place in a file, kept for checks that run after the file's tree is gone.
#[derive(Clone, Debug)]
struct Loc {
    file: PathBuf,
    position: Position,
}

impl Loc {
    fn diag(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            position: Some(self.position),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn short(&self) -> String {
        format!(
            "{}:{}:{}",
            self.file.display(),
            self.position.line,
            self.position.column
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DepKind {
    Requires,
    After,
}

impl DepKind {
    fn key(self) -> &'static str {
        match self {
            DepKind::Requires => "requires",
            DepKind::After => "after",
        }
    }
}

struct Dep {
    name: String,
    kind: DepKind,
    loc: Loc,
}

/// A service as read from its file, with the places later checks point at.
struct Parsed {
    service: Service,
    loc: Loc,
    deps: Vec<Dep>,
}

#[derive(Default)]
struct Loader {
    diags: Vec<Diagnostic>,
}

/// Settings of the main file; defaults are applied once every file is read.
#[derive(Default)]
struct Top {
    main: Option<(String, Loc)>,
    includes: Vec<(String, Range<usize>)>,
    shutdown_timeout: Option<Duration>,
    kill_reserve: Option<Duration>,
    containment: Option<Option<Containment>>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    max_connections: Option<u64>,
    instance: Option<String>,
    log_max_size: Option<u64>,
    log_keep: Option<u32>,
    log_files: Option<bool>,
}

impl Loader {
    fn run(&mut self, path: &Path, text: Option<String>) -> Config {
        let mut files = vec![path.to_path_buf()];
        let mut parsed = Vec::new();
        let mut top = Top::default();
        let main_src = match text {
            Some(text) => Some(Source::new(path.to_path_buf(), text)),
            None => self.read(path, None),
        }
        .filter(|src| self.file(src, true, &mut top, &mut parsed));
        if let Some(src) = &main_src {
            let mut seen: HashSet<PathBuf> = [canonical(path)].into_iter().collect();
            for (pattern, span) in std::mem::take(&mut top.includes) {
                for inc in self.expand(src, &pattern, span.clone()) {
                    if !seen.insert(canonical(&inc)) {
                        continue;
                    }
                    files.push(inc.clone());
                    let loc = src.diag(span.clone(), "include", "");
                    if let Some(isrc) = self.read(&inc, Some(loc)) {
                        self.file(&isrc, false, &mut top, &mut parsed);
                    }
                }
            }
        }
        let services = self.merge(parsed, &top);
        let base = base_dir(path);
        Config {
            services,
            main: top.main.map(|(m, _)| m),
            shutdown: Shutdown {
                timeout: top.shutdown_timeout.unwrap_or(defaults::SHUTDOWN_TIMEOUT),
                kill_reserve: top.kill_reserve.unwrap_or(defaults::KILL_RESERVE),
            },
            supervisor: Supervisor {
                containment: top.containment.flatten(),
                state_dir: top.state_dir.map(|p| base.join(p)),
                socket: top.socket.map(|p| base.join(p)),
                socket_group: top.socket_group,
                instance: top.instance,
                max_connections: top
                    .max_connections
                    .map_or(defaults::MAX_CONNECTIONS, |n| n.min(u32::MAX.into()) as u32),
            },
            logs: Logs {
                max_size: top.log_max_size.unwrap_or(defaults::LOG_MAX_SIZE),
                keep: top.log_keep.unwrap_or(defaults::LOG_KEEP),
                files: top.log_files.unwrap_or(true),
            },
            files,
        }
    }

    /// Reads a file; `from` is the include that named it, where the error belongs.
    fn read(&mut self, path: &Path, from: Option<Diagnostic>) -> Option<Source> {
        match files::read(path) {
            Ok(text) => Some(Source::new(path.to_path_buf(), text)),
            Err(why) => {
                let message = format!("cannot read {}: {why}", path.display());
                self.diags.push(match from {
                    Some(d) => Diagnostic { message, ..d },
                    None => Diagnostic {
                        file: path.to_path_buf(),
                        position: None,
                        key: String::new(),
                        message: format!("cannot read: {why}"),
                    },
                });
                None
            }
        }
    }

    fn expand(&mut self, src: &Source, pattern: &str, span: Range<usize>) -> Vec<PathBuf> {
        let found = match files::expand(&base_dir(&src.path), pattern) {
            Ok(found) => found,
            Err(why) => {
                self.diags.push(src.diag(span, "include", why));
                return Vec::new();
            }
        };
        if found.is_empty() {
            self.diags
                .push(src.diag(span, "include", format!("\"{pattern}\" matches no file")));
        }
        found
    }

    /// Reads one file's settings and services; false if it is not valid TOML.
    fn file(&mut self, src: &Source, is_main: bool, top: &mut Top, out: &mut Vec<Parsed>) -> bool {
        let (doc, errors) = DeTable::parse_recoverable(&src.text);
        // After a syntax error the recovered tree, and the parser's later errors, are
        // mostly echoes of the first one: report it alone and check no keys.
        if let Some(e) = errors.first() {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().replace('\n', "; ");
            self.diags
                .push(src.diag(span, "", format!("invalid TOML: {msg}")));
            return false;
        }
        let mut cx = Cx {
            src,
            diags: &mut self.diags,
        };
        let doc = doc.get_ref();
        for (k, _) in doc.iter() {
            let key = k.get_ref().as_ref();
            if !TOP_KEYS.contains(&key) {
                cx.unknown(k.span(), "", key, TOP_KEYS);
            } else if !is_main && key != "services" {
                cx.err(
                    k.span(),
                    key,
                    "only [services] may be set in an included file",
                );
            }
        }
        if let Some(v) = get(doc, "services")
            && let Some(t) = cx.table(v, "services")
        {
            for (k, v) in t.iter() {
                let name = k.get_ref().as_ref();
                let key = join("services", name);
                let loc = cx.loc(k.span());
                if let Err(why) = check_name(name) {
                    cx.err(k.span(), &key, why);
                    continue;
                }
                if let Some(t) = cx.table(v, &key) {
                    out.push(cx.service(name, t, loc));
                }
            }
        }
        if !is_main {
            return true;
        }
        if let Some(v) = get(doc, "include")
            && let Some(list) = cx.strings(v, "include")
        {
            top.includes = list;
        }
        if let Some(v) = get(doc, "main")
            && let Some(name) = cx.string(v, "main")
        {
            top.main = Some((name, cx.loc(v.span())));
        }
        if let Some(t) = get(doc, "shutdown").and_then(|v| cx.table(v, "shutdown")) {
            cx.keys(t, "shutdown", SHUTDOWN_KEYS);
            top.shutdown_timeout = cx.field(t, "shutdown", "timeout", Cx::duration);
            top.kill_reserve = cx.field(t, "shutdown", "kill_reserve", Cx::duration);
        }
        if let Some(t) = get(doc, "supervisor").and_then(|v| cx.table(v, "supervisor")) {
            cx.keys(t, "supervisor", SUPERVISOR_KEYS);
            top.containment = cx.field(t, "supervisor", "containment", |cx, v, key| {
                cx.choice(
                    v,
                    key,
                    &[
                        ("auto", None),
                        ("cgroup2", Some(Containment::Cgroup2)),
                        ("freezer", Some(Containment::Freezer)),
                        ("none", Some(Containment::None)),
                    ],
                )
            });
            top.state_dir = cx.field(t, "supervisor", "state_dir", Cx::path);
            top.socket = cx.field(t, "supervisor", "socket", Cx::path);
            top.socket_group = cx.field(t, "supervisor", "socket_group", Cx::name);
            top.max_connections = cx.field(t, "supervisor", "max_connections", Cx::count);
            top.instance = cx.field(t, "supervisor", "instance", |cx, v, key| {
                cx.parsed(v, key, "a name string", |s| {
                    check_name(s)
                        .map(|()| s.to_string())
                        .map_err(|_| "an instance name is 1 to 64 letters, digits, '-' or '_', starting with a letter or digit".to_string())
                })
            });
        }
        if let Some(t) = get(doc, "logs").and_then(|v| cx.table(v, "logs")) {
            cx.keys(t, "logs", LOGS_KEYS);
            top.log_max_size = cx.field(t, "logs", "max_size", |cx, v, key| {
                let size = cx.size(v, key)?;
                if size < 4096 {
                    cx.err(v.span(), key, "must be at least 4K");
                    return None;
                }
                Some(size)
            });
            top.log_keep = cx.field(t, "logs", "keep", |cx, v, key| {
                let n = cx.uint(v, key)?;
                u32::try_from(n).ok().or_else(|| {
                    cx.err(v.span(), key, "too large");
                    None
                })
            });
            top.log_files = cx.field(t, "logs", "files", Cx::boolean);
        }
        true
    }

    /// Checks that need every file: duplicates, dependencies, cycles, `main`.
    fn merge(&mut self, parsed: Vec<Parsed>, top: &Top) -> BTreeMap<String, Service> {
        let mut services = BTreeMap::new();
        let mut locs: HashMap<String, Loc> = HashMap::new();
        let mut deps: HashMap<String, Vec<Dep>> = HashMap::new();
        for p in parsed {
            let name = p.service.name.clone();
            if let Some(first) = locs.get(&name) {
                self.diags.push(p.loc.diag(
                    &format!("services.{name}"),
                    format!("defined twice (first at {})", first.short()),
                ));
                continue;
            }
            locs.insert(name.clone(), p.loc);
            deps.insert(name.clone(), p.deps);
            services.insert(name, p.service);
        }
        let names: Vec<&str> = services.keys().map(String::as_str).collect();
        for (name, list) in &deps {
            for d in list {
                if !services.contains_key(&d.name) {
                    let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
                    self.diags.push(d.loc.diag(
                        &format!("services.{name}.{}", d.kind.key()),
                        format!(
                            "unknown service \"{}\"{}",
                            d.name,
                            suggest(&d.name, &others)
                        ),
                    ));
                }
            }
        }
        let graph = DepGraph::new(&services);
        for cycle in graph.cycles() {
            let (from, to) = (&cycle[0], &cycle[1 % cycle.len()]);
            let dep = deps[from.as_str()]
                .iter()
                .find(|d| &d.name == to)
                .expect("a cycle follows declared edges");
            let mut path = cycle.clone();
            path.push(cycle[0].clone());
            self.diags.push(dep.loc.diag(
                &format!("services.{from}.{}", dep.kind.key()),
                format!("dependency cycle: {}", path.join(" -> ")),
            ));
        }
        if let Some((main, loc)) = &top.main
            && !services.contains_key(main)
        {
            self.diags.push(loc.diag(
                "main",
                format!("unknown service \"{main}\"{}", suggest(main, &names)),
            ));
        }
        services
    }
}

/// The reading context for one file: turns spans into diagnostics.
struct Cx<'a> {
    src: &'a Source,
    diags: &'a mut Vec<Diagnostic>,
}

fn get<'t, 'i>(t: &'t DeTable<'i>, key: &str) -> Option<&'t Val<'i>> {
    t.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map(|(_, v)| v)
}

/// `prefix.key`, with `key` quoted as TOML would need it (`env."A=B"`).
fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// The OS's reason without Rust's " (os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// " (did you mean \"x\"?)" when a known name is a small edit away.
fn suggest(word: &str, known: &[&str]) -> String {
    closest(word, known)
        .map(|k| format!(" (did you mean \"{k}\"?)"))
        .unwrap_or_default()
}

fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    // A third of the word may be wrong: "comand" finds "command", "bogus" not "logs".
    let limit = (word.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("requries", "requires"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(closest("comand", SERVICE_KEYS), Some("command"));
        assert_eq!(closest("zzzzzz", SERVICE_KEYS), None);
    }
}
