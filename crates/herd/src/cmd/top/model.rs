//! What `herd top` knows and what a key does: a pure state, fed [`Input`]s,
//! answering with [`Effect`]s for the loop to carry out (fetch, act, follow a
//! log, quit). No terminal and no socket here, so it is tested from tables.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use herd_api::{Change, Report, ServiceStatus, ShutdownProgress};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Log lines kept, and events.
const LOG_LINES: usize = 1000;
const EVENTS: usize = 200;
/// How many services' logs the "all" view follows at most: each is a
/// connection to herder, which serves `supervisor.max_connections`.
pub const ALL_LOGS_MAX: usize = 32;

/// What reaches the model.
#[derive(Debug)]
pub enum Input {
    Key(KeyEvent),
    /// The terminal changed size: only a redraw.
    Resize,
    Snapshot {
        services: Vec<ServiceStatus>,
        shutdown: Option<ShutdownProgress>,
    },
    Change(Change),
    /// A line of a followed log; `stream` says which follow it came from.
    Log {
        stream: u64,
        service: String,
        line: String,
    },
    /// A snapshot could not be had.
    NoSnapshot(String),
    /// What herder answered an action.
    Answer(Result<String, String>),
    /// herder cannot be reached any more.
    Gone(String),
}

/// What the loop should do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Quit,
    /// A new snapshot of the services.
    Fetch,
    /// `POST /v1/services/NAME/{verb}`: start, stop, restart.
    Act {
        verb: &'static str,
        name: String,
    },
    /// `POST /v1/services/NAME/signal`.
    Signal {
        name: String,
        signal: String,
        all: bool,
    },
    /// Follow these services' logs (and no other) as `stream`.
    Follow {
        stream: u64,
        services: Vec<String>,
    },
}

/// A question at the bottom line.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Filter(String),
    Search(String),
    /// A signal name for the selected service's main process.
    Signal(String),
    /// `y` does `effect`.
    Confirm {
        question: String,
        effect: Effect,
    },
}

/// Everything the view shows.
#[derive(Debug)]
pub struct Model {
    pub services: Vec<ServiceStatus>,
    /// When the last snapshot came: countdowns run on from it.
    pub snapshot_at: Instant,
    /// CPU% of each service between the last two snapshots.
    pub cpu: HashMap<String, f64>,
    cpu_seen: HashMap<String, (f64, Instant)>,
    /// The selected service, by name (it stays selected as the list changes).
    pub selected: Option<String>,
    /// Services whose name contains this are shown.
    pub filter: String,
    /// Every service's log interleaved, not the selected one's.
    pub log_all: bool,
    /// The log lines kept: service, and the line as herder sent it.
    pub log: VecDeque<(String, String)>,
    /// Only log lines with this are shown (case-insensitive).
    pub search: String,
    stream: u64,
    pub events: VecDeque<String>,
    pub shutdown: Option<ShutdownProgress>,
    /// A shutdown has begun (from its event, before any snapshot shows it).
    pub shutting_down: bool,
    /// herder has finished: its report, and the code it exits with.
    pub finished: Option<(u8, Box<Report>)>,
    pub prompt: Option<Prompt>,
    /// The last answer or note, for the bottom line.
    pub message: Option<String>,
    pub help: bool,
    /// Why top ends on its own (herder gone), said after the terminal is back.
    pub gone: Option<String>,
}

impl Model {
    pub fn new(services: Vec<ServiceStatus>, shutdown: Option<ShutdownProgress>) -> Model {
        let mut m = Model {
            services: Vec::new(),
            snapshot_at: Instant::now(),
            cpu: HashMap::new(),
            cpu_seen: HashMap::new(),
            selected: None,
            filter: String::new(),
            log_all: false,
            log: VecDeque::new(),
            search: String::new(),
            stream: 0,
            events: VecDeque::new(),
            shutting_down: shutdown.is_some(),
            shutdown: None,
            finished: None,
            prompt: None,
            message: None,
            help: false,
            gone: None,
        };
        m.snapshot(services, shutdown, Instant::now());
        m
    }

    /// The first log to follow.
    pub fn start(&mut self) -> Vec<Effect> {
        self.follow()
    }

    /// The services the filter lets through, in herder's order.
    pub fn visible(&self) -> Vec<&ServiceStatus> {
        self.services
            .iter()
            .filter(|s| s.name.contains(&self.filter))
            .collect()
    }

    /// Log lines to show: the search's matches, oldest first.
    pub fn log_lines(&self) -> impl Iterator<Item = &(String, String)> {
        let needle = self.search.to_lowercase();
        self.log
            .iter()
            .filter(move |(_, l)| needle.is_empty() || l.to_lowercase().contains(&needle))
    }

    /// Whether the view changes with time alone (countdowns), so the loop
    /// redraws and fetches often.
    pub fn lively(&self) -> bool {
        self.finished.is_none()
            && (self.shutting_down || self.services.iter().any(|s| s.stop.is_some()))
    }

    pub fn apply(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::Key(k) => self.key(k),
            Input::Resize => Vec::new(),
            Input::Snapshot { services, shutdown } => {
                let (before, selected) = (self.names(), self.selected.clone());
                self.snapshot(services, shutdown, Instant::now());
                // A reload changed the services: the logs shown follow them.
                let moved = if self.log_all {
                    self.names() != before
                } else {
                    self.selected != selected
                };
                if moved {
                    return self.follow();
                }
                Vec::new()
            }
            Input::Change(c) => self.change(c),
            Input::Log {
                stream,
                service,
                line,
            } => {
                if stream == self.stream {
                    if self.log.len() == LOG_LINES {
                        self.log.pop_front();
                    }
                    self.log.push_back((service, line));
                }
                Vec::new()
            }
            Input::NoSnapshot(why) => {
                if self.finished.is_none() {
                    self.message = Some(format!("cannot read the services: {why}"));
                }
                Vec::new()
            }
            Input::Answer(a) => {
                self.message = Some(match a {
                    Ok(m) => m,
                    Err(e) => format!("refused: {e}"),
                });
                vec![Effect::Fetch]
            }
            Input::Gone(why) => {
                if self.finished.is_some() {
                    return Vec::new();
                }
                self.gone = Some(why);
                vec![Effect::Quit]
            }
        }
    }

    fn names(&self) -> Vec<String> {
        self.services.iter().map(|s| s.name.clone()).collect()
    }

    fn snapshot(
        &mut self,
        services: Vec<ServiceStatus>,
        shutdown: Option<ShutdownProgress>,
        now: Instant,
    ) {
        for s in &services {
            let Some(cpu) = s.cpu_seconds else {
                self.cpu.remove(&s.name);
                self.cpu_seen.remove(&s.name);
                continue;
            };
            // Between two snapshots; the run's average (as `herd ps`) at first.
            let pct = match self.cpu_seen.get(&s.name) {
                Some(&(was, at)) if cpu >= was && now > at => {
                    (cpu - was) * 100.0 / now.duration_since(at).as_secs_f64()
                }
                _ => s
                    .uptime_ms
                    .filter(|&ms| ms > 0)
                    .map_or(0.0, |ms| cpu * 100_000.0 / ms as f64),
            };
            self.cpu.insert(s.name.clone(), pct);
            self.cpu_seen.insert(s.name.clone(), (cpu, now));
        }
        self.services = services;
        self.snapshot_at = now;
        if shutdown.is_some() {
            self.shutting_down = true;
            self.shutdown = shutdown;
        }
        let still = self
            .selected
            .as_ref()
            .is_some_and(|n| self.services.iter().any(|s| &s.name == n));
        if !still {
            self.selected = self.visible().first().map(|s| s.name.clone());
        }
    }

    fn change(&mut self, c: Change) -> Vec<Effect> {
        let line = c.describe();
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(line.trim_end().to_string());
        match c {
            Change::Shutdown { .. } => {
                self.shutting_down = true;
                self.help = false;
                vec![Effect::Fetch]
            }
            Change::Finished {
                exit_code, report, ..
            } => {
                self.finished = Some((exit_code, report));
                self.prompt = None;
                self.help = false;
                self.message = Some(format!(
                    "herder has exited (code {exit_code}): any key leaves"
                ));
                Vec::new()
            }
            Change::Lagged { .. } => vec![Effect::Fetch],
            _ => vec![Effect::Fetch],
        }
    }

    /// Follows the log the view shows now, as a new stream.
    fn follow(&mut self) -> Vec<Effect> {
        self.stream += 1;
        self.log.clear();
        let services = if self.log_all {
            self.services
                .iter()
                .take(ALL_LOGS_MAX)
                .map(|s| s.name.clone())
                .collect()
        } else {
            self.selected.iter().cloned().collect()
        };
        vec![Effect::Follow {
            stream: self.stream,
            services,
        }]
    }

    fn key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if k.kind == KeyEventKind::Release {
            return Vec::new();
        }
        let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl_c || self.finished.is_some() {
            return vec![Effect::Quit];
        }
        if let Some(p) = self.prompt.take() {
            return self.prompt_key(p, k);
        }
        if self.help {
            self.help = false;
            return Vec::new();
        }
        self.message = None;
        let name = self.selected.clone();
        match (k.code, name) {
            (KeyCode::Char('q'), _) => vec![Effect::Quit],
            (KeyCode::Char('?'), _) => {
                self.help = true;
                Vec::new()
            }
            (KeyCode::Down | KeyCode::Char('j'), _) => self.select_by(1),
            (KeyCode::Up | KeyCode::Char('k'), _) => self.select_by(-1),
            (KeyCode::Char('l'), _) => {
                self.log_all = !self.log_all;
                self.follow()
            }
            (KeyCode::Char('f'), _) => {
                self.prompt = Some(Prompt::Filter(self.filter.clone()));
                Vec::new()
            }
            (KeyCode::Char('/'), _) => {
                self.prompt = Some(Prompt::Search(self.search.clone()));
                Vec::new()
            }
            (KeyCode::Esc, _) => {
                self.search.clear();
                Vec::new()
            }
            (KeyCode::Char('s'), Some(name)) => vec![Effect::Act {
                verb: "start",
                name,
            }],
            (KeyCode::Char('r'), Some(name)) => vec![Effect::Act {
                verb: "restart",
                name,
            }],
            (KeyCode::Char('x'), Some(name)) => {
                self.prompt = Some(Prompt::Confirm {
                    question: format!("stop {name}? (y/n)"),
                    effect: Effect::Act { verb: "stop", name },
                });
                Vec::new()
            }
            (KeyCode::Char('K'), Some(name)) => {
                self.prompt = Some(Prompt::Confirm {
                    question: format!("SIGKILL every process of {name}? (y/n)"),
                    effect: Effect::Signal {
                        name,
                        signal: "SIGKILL".into(),
                        all: true,
                    },
                });
                Vec::new()
            }
            (KeyCode::Char('g'), Some(_)) => {
                self.prompt = Some(Prompt::Signal("SIGHUP".into()));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn prompt_key(&mut self, p: Prompt, k: KeyEvent) -> Vec<Effect> {
        let (mut text, make): (String, fn(String) -> Prompt) = match p {
            Prompt::Confirm { effect, .. } => {
                return match k.code {
                    KeyCode::Char('y' | 'Y') => vec![effect],
                    _ => {
                        self.message = Some("cancelled".into());
                        Vec::new()
                    }
                };
            }
            Prompt::Filter(t) => (t, Prompt::Filter),
            Prompt::Search(t) => (t, Prompt::Search),
            Prompt::Signal(t) => (t, Prompt::Signal),
        };
        match k.code {
            // Filter and search applied as they were typed: both keys keep
            // them and close the prompt; Enter sends a signal.
            KeyCode::Esc => Vec::new(),
            KeyCode::Enter => match (make(text), self.selected.clone()) {
                (Prompt::Signal(signal), Some(name)) if !signal.is_empty() => {
                    vec![Effect::Signal {
                        name,
                        signal,
                        all: false,
                    }]
                }
                _ => Vec::new(),
            },
            KeyCode::Backspace | KeyCode::Char(_) => {
                match k.code {
                    KeyCode::Char(c) => text.push(c),
                    _ => {
                        text.pop();
                    }
                }
                self.prompt = Some(make(text));
                self.live()
            }
            _ => {
                self.prompt = Some(make(text));
                Vec::new()
            }
        }
    }

    /// Filter and search apply as they are typed.
    fn live(&mut self) -> Vec<Effect> {
        match self.prompt.clone() {
            Some(Prompt::Filter(t)) => {
                self.filter = t;
                let keep = self
                    .selected
                    .as_ref()
                    .is_some_and(|n| n.contains(&self.filter));
                if !keep {
                    let first = self.visible().first().map(|s| s.name.clone());
                    if first != self.selected {
                        self.selected = first;
                        if !self.log_all {
                            return self.follow();
                        }
                    }
                }
                Vec::new()
            }
            Some(Prompt::Search(t)) => {
                self.search = t;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn select_by(&mut self, by: isize) -> Vec<Effect> {
        let visible = self.visible();
        if visible.is_empty() {
            return Vec::new();
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|n| visible.iter().position(|s| &s.name == n))
            .unwrap_or(0) as isize;
        let next = (at + by).clamp(0, visible.len() as isize - 1) as usize;
        let name = visible[next].name.clone();
        if self.selected.as_ref() == Some(&name) {
            return Vec::new();
        }
        self.selected = Some(name);
        if self.log_all {
            Vec::new()
        } else {
            self.follow()
        }
    }

    /// How long until `s`'s SIGKILL, counted on from the snapshot.
    pub fn kill_in(&self, s: &ServiceStatus, now: Instant) -> Option<Duration> {
        let ms = s.stop.as_ref()?.kill_in_ms?;
        Some(
            Duration::from_millis(ms)
                .saturating_sub(now.saturating_duration_since(self.snapshot_at)),
        )
    }

    /// Since the shutdown began, counted on from the snapshot.
    pub fn shutdown_elapsed(&self, now: Instant) -> Option<Duration> {
        let sd = self.shutdown.as_ref()?;
        Some(Duration::from_millis(sd.elapsed_ms) + now.saturating_duration_since(self.snapshot_at))
    }

    /// A service to mark: failed, stuck, backing off or unhealthy.
    pub fn failing(s: &ServiceStatus) -> bool {
        matches!(s.state.as_str(), "failed" | "stuck" | "backoff")
            || s.health
                .as_deref()
                .is_some_and(|h| h.starts_with("unhealthy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, state: &str) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            kind: "long".into(),
            requires: Vec::new(),
            state: state.into(),
            detail: None,
            pid: Some(42),
            pids: vec![42],
            uptime_ms: Some(10_000),
            runs: 1,
            ready: true,
            last_exit: None,
            stops: 0,
            kills: 0,
            last_stop_ms: None,
            log_dropped_bytes: 0,
            health: None,
            status_text: None,
            cpu_seconds: Some(1.0),
            memory_bytes: Some(1 << 20),
            processes: 1,
            stop: None,
        }
    }

    fn key(c: char) -> Input {
        Input::Key(KeyEvent::from(KeyCode::Char(c)))
    }

    fn model() -> Model {
        let mut m = Model::new(vec![svc("db", "ready"), svc("web", "ready")], None);
        m.start();
        m
    }

    #[test]
    fn moving_the_selection_follows_the_new_services_log() {
        let mut m = model();
        assert_eq!(m.selected.as_deref(), Some("db"));
        let fx = m.apply(key('j'));
        assert_eq!(
            fx,
            vec![Effect::Follow {
                stream: 2,
                services: vec!["web".into()]
            }]
        );
        // A line of the old stream is dropped.
        m.apply(Input::Log {
            stream: 1,
            service: "db".into(),
            line: "old".into(),
        });
        assert!(m.log.is_empty());
        // The end of the list stays there.
        assert!(m.apply(key('j')).is_empty());
        // All logs: every service's, one stream.
        let fx = m.apply(key('l'));
        assert_eq!(
            fx,
            vec![Effect::Follow {
                stream: 3,
                services: vec!["db".into(), "web".into()]
            }]
        );
    }

    #[test]
    fn stop_and_kill_ask_first_start_and_restart_do_not() {
        let mut m = model();
        assert_eq!(
            m.apply(key('s')),
            vec![Effect::Act {
                verb: "start",
                name: "db".into()
            }]
        );
        assert!(m.apply(key('x')).is_empty(), "asks first");
        assert!(matches!(m.prompt, Some(Prompt::Confirm { .. })));
        assert!(m.apply(key('n')).is_empty(), "anything but y cancels");
        assert!(m.prompt.is_none());
        m.apply(key('x'));
        assert_eq!(
            m.apply(key('y')),
            vec![Effect::Act {
                verb: "stop",
                name: "db".into()
            }]
        );
        m.apply(key('K'));
        assert_eq!(
            m.apply(key('y')),
            vec![Effect::Signal {
                name: "db".into(),
                signal: "SIGKILL".into(),
                all: true
            }]
        );
        // A signal by name, to the main process.
        m.apply(key('g'));
        for _ in 0.."SIGHUP".len() {
            m.apply(Input::Key(KeyEvent::from(KeyCode::Backspace)));
        }
        for c in "USR1".chars() {
            m.apply(key(c));
        }
        assert_eq!(
            m.apply(Input::Key(KeyEvent::from(KeyCode::Enter))),
            vec![Effect::Signal {
                name: "db".into(),
                signal: "USR1".into(),
                all: false
            }]
        );
    }

    #[test]
    fn filter_and_search_apply_as_typed() {
        let mut m = model();
        m.apply(key('f'));
        m.apply(key('w'));
        assert_eq!(m.visible().len(), 1);
        assert_eq!(m.selected.as_deref(), Some("web"));
        m.apply(Input::Key(KeyEvent::from(KeyCode::Enter)));
        assert!(m.prompt.is_none());
        assert_eq!(m.filter, "w");
        let stream = m.stream;
        for line in ["GET /a", "POST /b", "get /c"] {
            m.apply(Input::Log {
                stream,
                service: "web".into(),
                line: line.into(),
            });
        }
        m.apply(key('/'));
        for c in "get".chars() {
            m.apply(key(c));
        }
        assert_eq!(m.log_lines().count(), 2, "case-insensitive");
        m.apply(Input::Key(KeyEvent::from(KeyCode::Enter)));
        m.apply(Input::Key(KeyEvent::from(KeyCode::Esc)));
        assert_eq!(m.log_lines().count(), 3, "Esc clears the search");
    }

    #[test]
    fn a_selected_service_removed_by_a_reload_gives_way_to_the_first() {
        let mut m = model();
        m.apply(key('j'));
        let fx = m.apply(Input::Snapshot {
            services: vec![svc("db", "ready")],
            shutdown: None,
        });
        assert_eq!(m.selected.as_deref(), Some("db"));
        assert_eq!(
            fx,
            vec![Effect::Follow {
                stream: 3,
                services: vec!["db".into()]
            }]
        );
    }

    #[test]
    fn cpu_percent_is_between_two_snapshots() {
        let mut m = model();
        let t0 = m.snapshot_at;
        let mut busy = svc("db", "ready");
        busy.cpu_seconds = Some(1.5);
        m.snapshot(vec![busy], None, t0 + Duration::from_secs(1));
        assert!((m.cpu["db"] - 50.0).abs() < 1e-6, "{:?}", m.cpu);
    }

    #[test]
    fn herder_finishing_keeps_the_report_until_a_key() {
        let mut m = model();
        let report: Report =
            serde_json::from_str(include_str!("../../../../../docs/shutdown-report.json")).unwrap();
        m.apply(Input::Change(Change::Finished {
            at_ms: 0,
            exit_code: 0,
            report: Box::new(report),
        }));
        assert!(m.finished.is_some());
        assert!(m.apply(Input::Gone("closed".into())).is_empty());
        assert_eq!(m.apply(key('j')), vec![Effect::Quit]);
    }
}
