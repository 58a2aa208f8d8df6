//! The shutdown report: what every service's stop did during one shutdown, kept as
//! JSON in the state directory (`shutdown-report.json`, the last one) and drawn as
//! an SVG timeline by `herd report --svg`.
//!
//! Times are milliseconds since the shutdown began (`at_ms` fields), so a report
//! reads the same on any clock; `started_unix_ms` anchors it in wall-clock time.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file name of the last shutdown's report in the state directory.
pub const FILE: &str = "shutdown-report.json";

/// One shutdown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What began it: `SIGTERM`, `SIGINT`, `main service NAME ended (exit code 3)`.
    pub trigger: String,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    pub budget_ms: f64,
    /// The containment backend.
    pub backend: String,
    /// When each stop wave began.
    pub waves_at_ms: Vec<f64>,
    pub services: Vec<ServiceReport>,
    /// Processes no service could claim (none backend), killed at the end.
    pub strays_killed: usize,
    /// Those processes: `pid (state) command` (none backend).
    #[serde(default)]
    pub unclaimed: Vec<String>,
    /// When herder was done: every process gone, or the budget spent.
    pub ended_at_ms: f64,
    /// `clean`, `killed` (SIGKILL was needed) or `stuck` (processes survived).
    pub outcome: String,
    /// The code herder exited with.
    pub exit_code: u8,
}

/// One service's part in a shutdown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub name: String,
    /// Its stop wave (0 stops first).
    pub wave: usize,
    /// Its state when the shutdown reached it; a service that was not running
    /// (`exited`, `failed`, `pending`, …) has no times below.
    pub state: String,
    /// Why it was stopped (`shutdown`, `failure`, …).
    pub reason: Option<String>,
    /// When its stop began.
    pub stop_at_ms: Option<f64>,
    /// When SIGKILL was due, as planned (and as extended, see `extended`).
    pub deadline_at_ms: Option<f64>,
    /// Whether the service asked for more time (`EXTEND_TIMEOUT_USEC=`).
    pub extended: bool,
    /// When the shutdown event went out on its event pipe (`stop.notify`).
    pub event_at_ms: Option<f64>,
    /// Why the event could not be delivered, if it could not.
    pub event_error: Option<String>,
    /// The `stop.exec` hook: when it ended and how.
    pub hook_ended_at_ms: Option<f64>,
    pub hook_status: Option<String>,
    /// The stop signal and when it was sent.
    pub signal: Option<String>,
    pub signal_at_ms: Option<f64>,
    /// When SIGKILL went out, if it had to.
    pub killed_at_ms: Option<f64>,
    pub killed: bool,
    /// When its last process was gone; `None` if some never went.
    pub gone_at_ms: Option<f64>,
    /// How its main process ended.
    pub exit_status: Option<String>,
    /// The most processes that survived a SIGKILL at once.
    pub stuck_max: usize,
    /// Processes still there when herder exited: `pid state command`.
    pub leftovers: Vec<String>,
}

impl Report {
    /// The report as its file holds it (`shutdown-report.json`).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data") + "\n"
    }

    /// The last report kept in `dir`.
    pub fn load(dir: &Path) -> io::Result<Report> {
        let text = std::fs::read_to_string(dir.join(FILE))?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// A table for people: one line per service.
    pub fn table(&self) -> String {
        let mut out = format!(
            "shutdown: {}, budget {}, {} backend; done at {} ({}, exit code {})\n",
            self.trigger,
            ms(self.budget_ms),
            self.backend,
            ms(self.ended_at_ms),
            self.outcome,
            self.exit_code
        );
        let width = self
            .services
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(7)
            .max(7);
        out.push_str(&format!(
            "{:<width$}  WAVE  {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  RESULT\n",
            "SERVICE",
            "STATE",
            "STOP",
            "DEADLINE",
            "EVENT",
            "HOOK DONE",
            "SIGNAL",
            "SIGKILL",
            "GONE"
        ));
        let opt = |v: Option<f64>| v.map_or("-".to_string(), ms);
        for s in &self.services {
            let result = if !s.leftovers.is_empty() {
                format!("{} process(es) left", s.leftovers.len())
            } else if s.stop_at_ms.is_none() {
                "not running".to_string()
            } else if s.killed {
                "killed".to_string()
            } else {
                "stopped".to_string()
            };
            let event = match (&s.event_at_ms, &s.event_error) {
                (Some(t), _) => ms(*t),
                (None, Some(_)) => "failed".into(),
                _ => "-".into(),
            };
            out.push_str(&format!(
                "{:<width$}  {:>4}  {:<9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {result}\n",
                s.name,
                s.wave,
                s.state,
                opt(s.stop_at_ms),
                opt(s.deadline_at_ms),
                event,
                opt(s.hook_ended_at_ms),
                opt(s.signal_at_ms),
                opt(s.killed_at_ms),
                opt(s.gone_at_ms),
            ));
            for l in &s.leftovers {
                out.push_str(&format!("{:<width$}    left: {l}\n", ""));
            }
        }
        if self.strays_killed > 0 {
            out.push_str(&format!(
                "{} process(es) no service claimed were killed at the end\n",
                self.strays_killed
            ));
            for l in &self.unclaimed {
                out.push_str(&format!("  {l}\n"));
            }
        }
        out
    }
}

/// `1.234s`, `12.3ms`.
pub(crate) fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.3}s", v / 1000.0)
    } else {
        format!("{v:.1}ms")
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            trigger: "SIGTERM".into(),
            budget_ms: 3000.0,
            backend: "cgroup2".into(),
            waves_at_ms: vec![0.0, 10.0],
            services: vec![
                ServiceReport {
                    name: "web<1>".into(),
                    state: "ready".into(),
                    stop_at_ms: Some(0.0),
                    deadline_at_ms: Some(1000.0),
                    signal: Some("SIGTERM".into()),
                    signal_at_ms: Some(0.1),
                    killed_at_ms: Some(1000.0),
                    killed: true,
                    gone_at_ms: Some(1003.0),
                    ..Default::default()
                },
                ServiceReport {
                    name: "db".into(),
                    wave: 1,
                    state: "exited".into(),
                    ..Default::default()
                },
            ],
            ended_at_ms: 1004.0,
            outcome: "killed".into(),
            exit_code: 3,
            ..Default::default()
        }
    }

    #[test]
    fn json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let r = sample();
        std::fs::write(dir.path().join(FILE), r.json()).unwrap();
        assert_eq!(Report::load(dir.path()).unwrap(), r);
    }

    #[test]
    fn svg_escapes_names_and_marks_the_escalation() {
        let svg = sample().svg();
        assert!(svg.contains("web&lt;1&gt;"));
        assert!(!svg.contains("web<1>"));
        assert_eq!(svg.matches("class=\"bar\"").count(), 1);
        assert_eq!(svg.matches("escalation").count(), 1);
        assert!(svg.contains("not running"));
    }

    #[test]
    fn table_says_what_happened() {
        let t = sample().table();
        assert!(t.contains("killed"), "{t}");
        assert!(t.contains("not running"), "{t}");
    }
}
