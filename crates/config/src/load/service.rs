//! Reading one `[services.NAME]` table: its command, environment, readiness
//! check, restart and stop policies and limits, each key checked and every
//! problem collected.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{
    Cx, Dep, DepKind, HEALTH_CHECKS, HEALTH_KEYS, LIMIT_KEYS, Loc, Parsed, READY_CHECKS,
    READY_KEYS, RESTART_KEYS, SERVICE_KEYS, SOCKET_KEYS, STOP_KEYS, Val, base_dir, get, join,
};
use crate::schema::*;
use crate::units::{Backoff, Signal, StartLimit};

impl Cx<'_> {
    /// Reads one service. It is returned even when it has errors, so that services
    /// depending on it are not also told it does not exist; the values of bad keys
    /// are placeholders, never seen because [`load`](crate::load()) then fails.
    pub(super) fn service(&mut self, name: &str, t: &DeTable<'_>, loc: Loc) -> Parsed {
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
        let oneshot_refuses = |cx: &mut Self, key: &str, what: &str| {
            let v = get(t, key)?;
            if kind == Kind::Oneshot {
                cx.err(
                    v.span(),
                    &format!("{p}.{key}"),
                    format!("a oneshot runs to its end; it takes no {what}"),
                );
                return None;
            }
            Some(v)
        };
        let health = oneshot_refuses(self, "health", "health check")
            .and_then(|v| self.health(v, &format!("{p}.health")));
        let watchdog = oneshot_refuses(self, "watchdog", "watchdog")
            .and_then(|v| self.positive_duration(v, &format!("{p}.watchdog")));
        let watchdog_signal = self
            .field(t, &p, "watchdog_signal", Cx::signal)
            .unwrap_or(Signal::ABRT);
        let restart = self.restart(get(t, "restart"), &format!("{p}.restart"), kind);
        let stop = self.stop(get(t, "stop"), &format!("{p}.stop"));
        let limits = get(t, "limits")
            .map(|v| self.limits(v, &format!("{p}.limits")))
            .unwrap_or_default();
        let sockets = get(t, "sockets")
            .map(|v| self.sockets(v, &format!("{p}.sockets"), name, &base))
            .unwrap_or_default();
        let on_demand = match get(t, "on_demand") {
            None => false,
            Some(v) => {
                let key = format!("{p}.on_demand");
                let on = self.boolean(v, &key).unwrap_or(false);
                if on && (sockets.is_empty() || kind == Kind::Oneshot) {
                    self.err(
                        v.span(),
                        &key,
                        "needs sockets to be connected to, and a long service",
                    );
                }
                on
            }
        };
        let idle_stop = get(t, "idle_stop").and_then(|v| {
            let key = format!("{p}.idle_stop");
            let d = self.positive_duration(v, &key)?;
            if !on_demand {
                self.err(v.span(), &key, "applies to on_demand services only");
            }
            Some(d)
        });
        let fd_store_max = match get(t, "fd_store_max") {
            None => 0,
            Some(v) => {
                let key = format!("{p}.fd_store_max");
                let n = self.uint(v, &key).unwrap_or(0);
                // A child gets 16 descriptors besides stdio: the sockets, the
                // store and the event pipe share them.
                let room = 15u64.saturating_sub(sockets.len() as u64);
                if n > room {
                    self.err(
                        v.span(),
                        &key,
                        format!("at most {room} beside {} socket(s)", sockets.len()),
                    );
                }
                n.min(room) as u32
            }
        };

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
                health,
                watchdog,
                watchdog_signal,
                restart,
                stop,
                limits,
                sockets,
                fd_store_max,
                on_demand,
                idle_stop,
            },
            loc,
            deps,
        }
    }

    pub(super) fn command(&mut self, v: &Val<'_>, key: &str, shell: bool) -> Option<Command> {
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

    pub(super) fn env(&mut self, v: &Val<'_>, key: &str) -> Option<BTreeMap<String, String>> {
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

    pub(super) fn ready(&mut self, v: &Val<'_>, p: &str) -> Option<Ready> {
        let t = self.table(v, p)?;
        self.keys(t, p, READY_KEYS);
        let check = self.check(t, v, p, READY_CHECKS)?;
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
        let timeout = self.or_default(t, p, "timeout", defaults::READY_TIMEOUT)?;
        Some(Ready {
            check,
            interval,
            timeout,
        })
    }

    pub(super) fn health(&mut self, v: &Val<'_>, p: &str) -> Option<Health> {
        let t = self.table(v, p)?;
        self.keys(t, p, HEALTH_KEYS);
        let check = self.check(t, v, p, HEALTH_CHECKS);
        let interval = self.or_default(t, p, "interval", defaults::HEALTH_INTERVAL);
        let timeout = self.or_default(t, p, "timeout", defaults::HEALTH_TIMEOUT);
        let failures = match get(t, "failures") {
            Some(fv) => {
                let key = join(p, "failures");
                let n = self.count(fv, &key)?;
                match u32::try_from(n) {
                    Ok(n) if n <= 1000 => Some(n),
                    _ => {
                        self.err(fv.span(), &key, "must be at most 1000");
                        None
                    }
                }
            }
            None => Some(defaults::HEALTH_FAILURES),
        };
        let start_period = match get(t, "start_period") {
            Some(sv) => self.duration(sv, &join(p, "start_period")),
            None => Some(Duration::ZERO),
        };
        Some(Health {
            check: check?,
            interval: interval?,
            timeout: timeout?,
            failures: failures?,
            start_period: start_period?,
        })
    }

    /// A positive duration at `t.name`, or `default` without one; `None` after
    /// an error.
    fn or_default(
        &mut self,
        t: &DeTable<'_>,
        p: &str,
        name: &str,
        default: Duration,
    ) -> Option<Duration> {
        match get(t, name) {
            Some(v) => self.positive_duration(v, &join(p, name)),
            None => Some(default),
        }
    }

    /// The one check of table `t` (at `p`, value `v`), among `checks`.
    fn check(
        &mut self,
        t: &DeTable<'_>,
        v: &Val<'_>,
        p: &str,
        checks: &[&str],
    ) -> Option<ReadyCheck> {
        let present: Vec<&str> = checks
            .iter()
            .copied()
            .filter(|c| get(t, c).is_some())
            .collect();
        let check_name = match present.as_slice() {
            [] => {
                self.err(
                    v.span(),
                    p,
                    format!("needs one check: {}", checks.join(", ")),
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
        Some(match check_name {
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
        })
    }

    pub(super) fn restart(&mut self, v: Option<&Val<'_>>, p: &str, kind: Kind) -> Restart {
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

    pub(super) fn stop(&mut self, v: Option<&Val<'_>>, p: &str) -> Stop {
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

    /// `sockets = ["tcp://…", "unix:…", { listen = …, name, backlog, mode, owner }]`.
    pub(super) fn sockets(
        &mut self,
        v: &Val<'_>,
        p: &str,
        service: &str,
        base: &std::path::Path,
    ) -> Vec<Socket> {
        let DeValue::Array(items) = v.get_ref() else {
            self.mismatch(v, p, "an array of addresses or tables");
            return Vec::new();
        };
        let mut out: Vec<Socket> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("{p}[{i}]");
            let mut s = Socket {
                listen: Listen::Unix(Default::default()),
                name: service.to_string(),
                backlog: defaults::SOCKET_BACKLOG,
                mode: None,
                owner: None,
            };
            let listen = match item.get_ref() {
                DeValue::String(_) => item,
                DeValue::Table(_) => {
                    let Some(t) = self.table(item, &key) else {
                        continue;
                    };
                    self.keys(t, &key, SOCKET_KEYS);
                    if let Some(n) = self.field(t, &key, "name", Cx::name) {
                        s.name = n;
                    }
                    if let Some(b) = self.field(t, &key, "backlog", Cx::count) {
                        s.backlog = u32::try_from(b).unwrap_or(u32::MAX);
                    }
                    s.mode = self.field(t, &key, "mode", |cx, v, key| {
                        cx.parsed(v, key, "an octal mode string such as \"0660\"", |m| {
                            u32::from_str_radix(m, 8)
                                .ok()
                                .filter(|m| *m <= 0o7777)
                                .ok_or_else(|| {
                                    format!(
                                        "invalid mode \"{m}\": write it in octal, e.g. \"0660\""
                                    )
                                })
                        })
                    });
                    s.owner = self.field(t, &key, "owner", Cx::name);
                    match get(t, "listen") {
                        Some(l) => l,
                        None => {
                            self.err(item.span(), &key, "missing required key \"listen\"");
                            continue;
                        }
                    }
                }
                _ => {
                    self.mismatch(item, &key, "an address string or a table");
                    continue;
                }
            };
            let Some(addr) = self.parsed(
                listen,
                &key,
                "an address such as \"tcp://127.0.0.1:8080\"",
                |a| parse_listen(a, base),
            ) else {
                continue;
            };
            if matches!(addr, Listen::Tcp(_)) && (s.mode.is_some() || s.owner.is_some()) {
                self.err(
                    item.span(),
                    &key,
                    "mode and owner apply to unix: sockets only",
                );
                continue;
            }
            if out.iter().any(|o| o.listen == addr) {
                self.err(listen.span(), &key, format!("{addr} is listed twice"));
                continue;
            }
            if s.name.is_empty() || s.name.len() > 255 || s.name.contains([':', '\0']) {
                self.err(
                    item.span(),
                    &key,
                    "a socket name is 1 to 255 characters, without ':'",
                );
                continue;
            }
            s.listen = addr;
            out.push(s);
        }
        // A child gets at most 16 descriptors besides stdio; one is kept for
        // the event pipe.
        if out.len() > 15 {
            self.err(v.span(), p, "at most 15 sockets");
        }
        out
    }

    pub(super) fn limits(&mut self, v: &Val<'_>, p: &str) -> Limits {
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

/// Service names become cgroup directory names, environment values and parts of
/// dotted keys, so they are kept to a safe alphabet.
pub(super) fn check_name(name: &str) -> Result<(), String> {
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

/// `tcp://HOST:PORT` (an IP address; `[::1]:80` for IPv6) or `unix:PATH`.
fn parse_listen(s: &str, base: &std::path::Path) -> Result<Listen, String> {
    if let Some(addr) = s.strip_prefix("tcp://") {
        return addr.parse().map(Listen::Tcp).map_err(|_| {
            format!("invalid address \"{s}\": write tcp://IP:PORT, e.g. \"tcp://127.0.0.1:8080\"")
        });
    }
    if let Some(path) = s.strip_prefix("unix:") {
        // A socket's path has room for 107 bytes.
        let path = base.join(path);
        if path.as_os_str().len() > 107 || path.as_os_str().is_empty() {
            return Err(format!(
                "invalid address \"{s}\": a Unix socket's path has 1 to 107 bytes"
            ));
        }
        return Ok(Listen::Unix(path));
    }
    Err(format!(
        "invalid address \"{s}\": tcp://IP:PORT or unix:PATH"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

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
