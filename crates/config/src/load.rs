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
use crate::units::{self, Backoff, Signal, StartLimit};

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
    "command", "shell", "env", "env_file", "workdir", "user", "group", "kind", "requires", "after",
    "ready", "restart", "stop", "limits",
];
const READY_CHECKS: &[&str] = &["tcp", "http", "exec", "log", "notify", "delay"];
const READY_KEYS: &[&str] = &[
    "tcp", "http", "exec", "log", "notify", "delay", "interval", "timeout",
];
const RESTART_KEYS: &[&str] = &["policy", "backoff", "limit", "stable"];
const STOP_KEYS: &[&str] = &["signal", "timeout", "mode", "exec", "notify"];
const LIMIT_KEYS: &[&str] = &["memory", "pids", "cpu", "nofile", "nproc", "core"];
const SHUTDOWN_KEYS: &[&str] = &["timeout", "kill_reserve"];
const SUPERVISOR_KEYS: &[&str] = &["containment", "state_dir", "socket", "socket_group"];
const LOGS_KEYS: &[&str] = &["max_size", "keep"];

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
    log_max_size: Option<u64>,
    log_keep: Option<u32>,
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
            },
            logs: Logs {
                max_size: top.log_max_size.unwrap_or(defaults::LOG_MAX_SIZE),
                keep: top.log_keep.unwrap_or(defaults::LOG_KEEP),
            },
            files,
        }
    }

    /// Reads a file; `from` is the include that named it, where the error belongs.
    fn read(&mut self, path: &Path, from: Option<Diagnostic>) -> Option<Source> {
        match std::fs::read_to_string(path) {
            Ok(text) => Some(Source::new(path.to_path_buf(), text)),
            Err(e) => {
                let message = format!("cannot read {}: {}", path.display(), io_reason(&e));
                self.diags.push(match from {
                    Some(d) => Diagnostic { message, ..d },
                    None => Diagnostic {
                        file: path.to_path_buf(),
                        position: None,
                        key: String::new(),
                        message: format!("cannot read: {}", io_reason(&e)),
                    },
                });
                None
            }
        }
    }

    fn expand(&mut self, src: &Source, pattern: &str, span: Range<usize>) -> Vec<PathBuf> {
        let base = base_dir(&src.path);
        let full = if Path::new(pattern).is_absolute() {
            pattern.to_string()
        } else {
            let escaped = glob::Pattern::escape(&base.to_string_lossy());
            match escaped.as_str() {
                "." => pattern.to_string(),
                b => format!("{b}/{pattern}"),
            }
        };
        let paths = match glob::glob(&full) {
            Ok(paths) => paths,
            Err(e) => {
                self.diags.push(src.diag(
                    span,
                    "include",
                    format!("invalid pattern \"{pattern}\": {}", e.msg),
                ));
                return Vec::new();
            }
        };
        let found: Vec<PathBuf> = paths
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
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

impl Cx<'_> {
    fn err(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.push(self.src.diag(span, key, message));
    }

    fn loc(&self, span: Range<usize>) -> Loc {
        Loc {
            file: self.src.path.clone(),
            position: self.src.position(span.start),
        }
    }

    fn unknown(&mut self, span: Range<usize>, prefix: &str, key: &str, known: &[&str]) {
        let full = join(prefix, key);
        let hint = match closest(key, known) {
            Some(k) => format!(" (did you mean \"{k}\"?)"),
            None => format!(" (expected one of: {})", known.join(", ")),
        };
        self.err(span, &full, format!("unknown key{hint}"));
    }

    /// Reports every key of `t` that is not in `known`.
    fn keys(&mut self, t: &DeTable<'_>, prefix: &str, known: &[&str]) {
        for (k, _) in t.iter() {
            let key = k.get_ref().as_ref();
            if !known.contains(&key) {
                self.unknown(k.span(), prefix, key, known);
            }
        }
    }

    /// Reads `t.name` with `read` when present.
    fn field<T>(
        &mut self,
        t: &DeTable<'_>,
        prefix: &str,
        name: &str,
        read: impl FnOnce(&mut Self, &Val<'_>, &str) -> Option<T>,
    ) -> Option<T> {
        let v = get(t, name)?;
        read(self, v, &join(prefix, name))
    }

    fn mismatch(&mut self, v: &Val<'_>, key: &str, expected: &str) {
        let found = match v.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.err(v.span(), key, format!("expected {expected}, found {found}"));
    }

    fn table<'t, 'i>(&mut self, v: &'t Val<'i>, key: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.mismatch(v, key, "a table");
                None
            }
        }
    }

    fn string(&mut self, v: &Val<'_>, key: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.mismatch(v, key, "a string");
                None
            }
        }
    }

    /// A non-empty string.
    fn name(&mut self, v: &Val<'_>, key: &str) -> Option<String> {
        let s = self.string(v, key)?;
        if s.is_empty() {
            self.err(v.span(), key, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn path(&mut self, v: &Val<'_>, key: &str) -> Option<PathBuf> {
        self.name(v, key).map(PathBuf::from)
    }

    fn boolean(&mut self, v: &Val<'_>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.mismatch(v, key, "a boolean");
                None
            }
        }
    }

    fn integer(&mut self, v: &Val<'_>, key: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                if n.is_none() {
                    self.err(v.span(), key, "integer out of range");
                }
                n
            }
            _ => {
                self.mismatch(v, key, "an integer");
                None
            }
        }
    }

    fn uint(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        let n = self.integer(v, key)?;
        u64::try_from(n).ok().or_else(|| {
            self.err(v.span(), key, "must not be negative");
            None
        })
    }

    /// A whole number of at least 1.
    fn count(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        match self.uint(v, key)? {
            0 => {
                self.err(v.span(), key, "must be at least 1");
                None
            }
            n => Some(n),
        }
    }

    /// Runs a text parser on a string value, reporting its message.
    fn parsed<T>(
        &mut self,
        v: &Val<'_>,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let DeValue::String(s) = v.get_ref() else {
            self.mismatch(v, key, expected);
            return None;
        };
        parse(s).map_err(|e| self.err(v.span(), key, e)).ok()
    }

    fn duration(&mut self, v: &Val<'_>, key: &str) -> Option<Duration> {
        self.parsed(
            v,
            key,
            "a duration string such as \"10s\"",
            units::parse_duration,
        )
    }

    fn positive_duration(&mut self, v: &Val<'_>, key: &str) -> Option<Duration> {
        let d = self.duration(v, key)?;
        if d.is_zero() {
            self.err(v.span(), key, "must be above zero");
            return None;
        }
        Some(d)
    }

    /// A size as text with a unit, or a plain integer of bytes.
    fn size(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        if let DeValue::Integer(_) = v.get_ref() {
            return self.uint(v, key);
        }
        self.parsed(v, key, "a size such as \"512M\"", units::parse_size)
    }

    fn signal(&mut self, v: &Val<'_>, key: &str) -> Option<Signal> {
        if let DeValue::Integer(_) = v.get_ref() {
            let n = self.integer(v, key)?;
            return Signal::from_number(n)
                .map_err(|e| self.err(v.span(), key, e))
                .ok();
        }
        self.parsed(
            v,
            key,
            "a signal name such as \"SIGTERM\" or a number",
            Signal::parse,
        )
    }

    fn choice<T: Copy>(&mut self, v: &Val<'_>, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let s = self.string(v, key)?;
        if let Some((_, t)) = choices.iter().find(|(c, _)| *c == s) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(c, _)| *c).collect();
        self.err(
            v.span(),
            key,
            format!(
                "unknown value \"{s}\" (expected one of: {})",
                names.join(", ")
            ),
        );
        None
    }

    /// An array of strings, each with its span.
    fn strings(&mut self, v: &Val<'_>, key: &str) -> Option<Vec<(String, Range<usize>)>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.mismatch(v, key, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                _ => {
                    self.mismatch(item, key, "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A command line: a non-empty array of strings whose program is not empty.
    fn argv(&mut self, v: &Val<'_>, key: &str) -> Option<Vec<String>> {
        let list = self.strings(v, key)?;
        match list.first() {
            None => {
                self.err(v.span(), key, "empty command");
                None
            }
            Some((prog, span)) if prog.is_empty() => {
                self.err(span.clone(), key, "the program name is empty");
                None
            }
            Some(_) => Some(list.into_iter().map(|(s, _)| s).collect()),
        }
    }

    /// Reads one service. It is returned even when it has errors, so that services
    /// depending on it are not also told it does not exist; the values of bad keys
    /// are placeholders, never seen because [`load`] then fails.
    fn service(&mut self, name: &str, t: &DeTable<'_>, loc: Loc) -> Parsed {
        let p = format!("services.{name}");
        self.keys(t, &p, SERVICE_KEYS);
        let base = base_dir(&self.src.path);

        let shell = self.field(t, &p, "shell", Cx::boolean).unwrap_or(false);
        let command = match get(t, "command") {
            None => {
                self.diags
                    .push(loc.diag(&p, "missing required key \"command\""));
                None
            }
            Some(v) => self.command(v, &format!("{p}.command"), shell),
        };
        let kind = self
            .field(t, &p, "kind", |cx, v, key| {
                cx.choice(v, key, &[("long", Kind::Long), ("oneshot", Kind::Oneshot)])
            })
            .unwrap_or(Kind::Long);
        let env = self.field(t, &p, "env", Cx::env).unwrap_or_default();
        let env_file = self
            .field(t, &p, "env_file", Cx::path)
            .map(|f| base.join(f));
        let workdir = self
            .field(t, &p, "workdir", Cx::path)
            .map_or_else(|| base.clone(), |w| base.join(w));
        let user = self.field(t, &p, "user", Cx::name);
        let group = self.field(t, &p, "group", Cx::name);

        let mut deps = Vec::new();
        let mut lists = [Vec::new(), Vec::new()];
        for (kind, list) in [DepKind::Requires, DepKind::After]
            .into_iter()
            .zip(&mut lists)
        {
            let key = format!("{p}.{}", kind.key());
            let Some(items) = get(t, kind.key()).and_then(|v| self.strings(v, &key)) else {
                continue;
            };
            for (dep, span) in items {
                if list.contains(&dep) {
                    self.err(span, &key, format!("\"{dep}\" is listed twice"));
                    continue;
                }
                deps.push(Dep {
                    name: dep.clone(),
                    kind,
                    loc: self.loc(span),
                });
                list.push(dep);
            }
        }
        let [requires, after] = lists;

        let ready = match get(t, "ready") {
            Some(v) if kind == Kind::Oneshot => {
                self.err(
                    v.span(),
                    &format!("{p}.ready"),
                    "a oneshot is ready when it exits 0; it takes no ready check",
                );
                None
            }
            Some(v) => self.ready(v, &format!("{p}.ready")),
            None => None,
        };
        let restart = self.restart(get(t, "restart"), &format!("{p}.restart"), kind);
        let stop = self.stop(get(t, "stop"), &format!("{p}.stop"));
        let limits = get(t, "limits")
            .map(|v| self.limits(v, &format!("{p}.limits")))
            .unwrap_or_default();

        Parsed {
            service: Service {
                name: name.to_string(),
                defined_in: self.src.path.clone(),
                line: loc.position.line,
                command: command.unwrap_or(Command::Argv(Vec::new())),
                env,
                env_file,
                workdir,
                user,
                group,
                kind,
                requires,
                after,
                ready,
                restart,
                stop,
                limits,
            },
            loc,
            deps,
        }
    }

    fn command(&mut self, v: &Val<'_>, key: &str, shell: bool) -> Option<Command> {
        match (v.get_ref(), shell) {
            (DeValue::String(s), true) if s.trim().is_empty() => {
                self.err(v.span(), key, "empty command");
                None
            }
            (DeValue::String(s), true) => Some(Command::Shell(s.to_string())),
            (DeValue::String(_), false) => {
                self.err(
                    v.span(),
                    key,
                    "a string command needs shell = true; or give an argv array such as [\"prog\", \"arg\"]",
                );
                None
            }
            (DeValue::Array(_), true) => {
                self.err(
                    v.span(),
                    key,
                    "with shell = true the command is one string for /bin/sh -c",
                );
                None
            }
            (_, false) => self.argv(v, key).map(Command::Argv),
            (_, true) => {
                self.mismatch(v, key, "a string");
                None
            }
        }
    }

    fn env(&mut self, v: &Val<'_>, key: &str) -> Option<BTreeMap<String, String>> {
        let t = self.table(v, key)?;
        let mut env = BTreeMap::new();
        for (k, v) in t.iter() {
            let name = k.get_ref().as_ref();
            let key = join(key, name);
            if name.is_empty() || name.contains(['=', '\0']) {
                self.err(
                    k.span(),
                    &key,
                    "an environment variable name must be non-empty, without '=' or NUL",
                );
                continue;
            }
            if let Some(val) = self.string(v, &key) {
                if val.contains('\0') {
                    self.err(v.span(), &key, "an environment value cannot contain NUL");
                    continue;
                }
                env.insert(name.to_string(), val);
            }
        }
        Some(env)
    }

    fn ready(&mut self, v: &Val<'_>, p: &str) -> Option<Ready> {
        let t = self.table(v, p)?;
        self.keys(t, p, READY_KEYS);
        let present: Vec<&str> = READY_CHECKS
            .iter()
            .copied()
            .filter(|c| get(t, c).is_some())
            .collect();
        let check_name = match present.as_slice() {
            [] => {
                self.err(
                    v.span(),
                    p,
                    format!("needs one check: {}", READY_CHECKS.join(", ")),
                );
                return None;
            }
            [one] => *one,
            [first, rest @ ..] => {
                let second = get(t, rest[0]).expect("present");
                self.err(
                    second.span(),
                    p,
                    format!("takes one check, found {first} and {}", rest.join(" and ")),
                );
                return None;
            }
        };
        let cv = get(t, check_name).expect("present");
        let key = join(p, check_name);
        let check = match check_name {
            "tcp" => self.parsed(cv, &key, "a string \"host:port\"", |s| {
                check_host_port(s).map(|()| ReadyCheck::Tcp(s.to_string()))
            })?,
            "http" => self.parsed(cv, &key, "a URL string", |s| {
                check_http_url(s).map(|()| ReadyCheck::Http(s.to_string()))
            })?,
            "exec" => ReadyCheck::Exec(self.argv(cv, &key)?),
            "log" => self.parsed(cv, &key, "a regular expression string", |s| {
                match regex_lite::Regex::new(s) {
                    Ok(_) => Ok(ReadyCheck::Log(s.to_string())),
                    Err(e) => Err(format!(
                        "invalid regular expression: {}",
                        e.to_string().lines().last().unwrap_or("").trim()
                    )),
                }
            })?,
            "notify" => match self.boolean(cv, &key)? {
                true => ReadyCheck::Notify,
                false => {
                    self.err(cv.span(), &key, "notify = false is no check; remove it");
                    return None;
                }
            },
            "delay" => ReadyCheck::Delay(self.duration(cv, &key)?),
            _ => unreachable!("READY_CHECKS"),
        };
        let interval = match get(t, "interval") {
            Some(iv) if !check.is_polled() => {
                self.err(
                    iv.span(),
                    &join(p, "interval"),
                    "applies only to tcp, http and exec checks",
                );
                return None;
            }
            Some(iv) => self.positive_duration(iv, &join(p, "interval"))?,
            None => defaults::READY_INTERVAL,
        };
        let timeout = match self.field(t, p, "timeout", Cx::positive_duration) {
            Some(d) => d,
            None if get(t, "timeout").is_some() => return None,
            None => defaults::READY_TIMEOUT,
        };
        Some(Ready {
            check,
            interval,
            timeout,
        })
    }

    fn restart(&mut self, v: Option<&Val<'_>>, p: &str, kind: Kind) -> Restart {
        let default_policy = match kind {
            Kind::Long => RestartPolicy::OnFailure,
            Kind::Oneshot => RestartPolicy::Never,
        };
        let mut r = Restart {
            policy: default_policy,
            backoff: Backoff::parse(defaults::BACKOFF).expect("valid default"),
            limit: StartLimit::parse(defaults::START_LIMIT).expect("valid default"),
            stable: defaults::STABLE,
        };
        let Some(t) = v.and_then(|v| self.table(v, p)) else {
            return r;
        };
        self.keys(t, p, RESTART_KEYS);
        if let Some(pv) = get(t, "policy") {
            let key = join(p, "policy");
            if let Some(policy) = self.choice(
                pv,
                &key,
                &[
                    ("always", RestartPolicy::Always),
                    ("on-failure", RestartPolicy::OnFailure),
                    ("never", RestartPolicy::Never),
                ],
            ) {
                if kind == Kind::Oneshot && policy == RestartPolicy::Always {
                    self.err(
                        pv.span(),
                        &key,
                        "a oneshot cannot restart always (it would run forever); use on-failure",
                    );
                }
                r.policy = policy;
            }
        }
        r.backoff = self
            .field(t, p, "backoff", |cx, v, key| {
                cx.parsed(
                    v,
                    key,
                    "a range string such as \"200ms..30s\"",
                    Backoff::parse,
                )
            })
            .unwrap_or(r.backoff);
        r.limit = self
            .field(t, p, "limit", |cx, v, key| {
                cx.parsed(v, key, "a string such as \"5/1m\"", StartLimit::parse)
            })
            .unwrap_or(r.limit);
        r.stable = self.field(t, p, "stable", Cx::duration).unwrap_or(r.stable);
        r
    }

    fn stop(&mut self, v: Option<&Val<'_>>, p: &str) -> Stop {
        let mut s = Stop {
            signal: Signal::TERM,
            timeout: defaults::STOP_TIMEOUT,
            mode: StopMode::Group,
            exec: None,
            notify: false,
        };
        let Some(t) = v.and_then(|v| self.table(v, p)) else {
            return s;
        };
        self.keys(t, p, STOP_KEYS);
        s.signal = self.field(t, p, "signal", Cx::signal).unwrap_or(s.signal);
        s.timeout = self
            .field(t, p, "timeout", Cx::duration)
            .unwrap_or(s.timeout);
        s.mode = self
            .field(t, p, "mode", |cx, v, key| {
                cx.choice(
                    v,
                    key,
                    &[
                        ("group", StopMode::Group),
                        ("main", StopMode::Main),
                        ("mixed", StopMode::Mixed),
                    ],
                )
            })
            .unwrap_or(s.mode);
        s.exec = self.field(t, p, "exec", Cx::argv);
        s.notify = self.field(t, p, "notify", Cx::boolean).unwrap_or(false);
        s
    }

    fn limits(&mut self, v: &Val<'_>, p: &str) -> Limits {
        let Some(t) = self.table(v, p) else {
            return Limits::default();
        };
        self.keys(t, p, LIMIT_KEYS);
        Limits {
            memory: self.field(t, p, "memory", |cx, v, key| {
                let n = cx.size(v, key)?;
                if n == 0 {
                    cx.err(v.span(), key, "must be above zero");
                    return None;
                }
                Some(n)
            }),
            pids: self.field(t, p, "pids", Cx::count),
            cpu: self.field(t, p, "cpu", |cx, v, key| {
                let n = match v.get_ref() {
                    DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
                    DeValue::Integer(_) => cx.integer(v, key).map(|i| i as f64),
                    _ => {
                        cx.mismatch(v, key, "a number of CPUs such as 0.5 or 2");
                        return None;
                    }
                };
                match n {
                    Some(n) if n.is_finite() && n > 0.0 => Some(n),
                    _ => {
                        cx.err(v.span(), key, "must be a number of CPUs above zero");
                        None
                    }
                }
            }),
            nofile: self.field(t, p, "nofile", Cx::count),
            nproc: self.field(t, p, "nproc", Cx::count),
            core: self.field(t, p, "core", Cx::size),
        }
    }
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

/// Service names become cgroup directory names, environment values and parts of
/// dotted keys, so they are kept to a safe alphabet.
fn check_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok_first && ok_rest && name.len() <= 64 {
        Ok(())
    } else {
        Err("a service name is 1 to 64 letters, digits, '-' or '_', starting with a letter or digit".into())
    }
}

fn check_host_port(s: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "invalid address \"{s}\": write host:port, e.g. \"127.0.0.1:5432\""
        ))
    };
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => bad(),
    }
}

fn check_http_url(s: &str) -> Result<(), String> {
    let Some(rest) = s.strip_prefix("http://") else {
        return Err(format!(
            "invalid URL \"{s}\": only http:// URLs are checked (no TLS)"
        ));
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("invalid URL \"{s}\": no host"));
    }
    Ok(())
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

    #[test]
    fn names_and_addresses() {
        assert!(check_name("api-v2_x").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-api").is_err());
        assert!(check_name("a.b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
        assert!(check_host_port("127.0.0.1:5432").is_ok());
        assert!(check_host_port("[::1]:80").is_ok());
        assert!(check_host_port("localhost").is_err());
        assert!(check_host_port(":80").is_err());
        assert!(check_host_port("h:0").is_err());
        assert!(check_http_url("http://127.0.0.1:8080/health").is_ok());
        assert!(check_http_url("https://x").is_err());
        assert!(check_http_url("http:///x").is_err());
    }
}
