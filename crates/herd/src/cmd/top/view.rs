//! Drawing the [`Model`]: the services' table, the selected log and the
//! events; during a shutdown its waves, countdowns and the processes each
//! stop still waits on; at the end the shutdown report. Fits 80×24 and
//! grows with the terminal.

use std::time::{Duration, Instant};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState};

use herd_api::ServiceStatus;
use herd_api::answer::split_stamp;

use super::model::{ALL_LOGS_MAX, Model, Prompt};
use crate::cmd::ctl::format_bytes;

/// Colours, unless `NO_COLOR` is set (then bold and reverse only).
#[derive(Clone, Copy, Debug)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Theme {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn bad(self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    fn state(self, state: &str) -> Style {
        match state {
            "ready" => self.fg(Color::Green),
            "starting" | "stopping" | "running-not-ready" => self.fg(Color::Yellow),
            "failed" | "stuck" | "backoff" => self.bad(),
            _ => Style::default(),
        }
    }
}

pub fn draw(f: &mut Frame, m: &Model, theme: Theme, now: Instant) {
    let area = f.area();
    let [head, body, events, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(8),
        Constraint::Length(if area.height >= 30 { 8 } else { 5 }),
        Constraint::Length(1),
    ])
    .areas(area);
    f.render_widget(
        Paragraph::new(header(m)).style(Style::default().add_modifier(Modifier::BOLD)),
        head,
    );
    if let Some((code, report)) = &m.finished {
        let title = format!(" shutdown report (exit code {code}) ");
        let text: Vec<Line> = report
            .table()
            .lines()
            .map(|l| Line::raw(l.to_string()))
            .collect();
        f.render_widget(
            Paragraph::new(text).block(Block::bordered().title(title)),
            body,
        );
    } else if m.shutting_down {
        shutdown(f, m, theme, now, body);
    } else {
        let rows = m.visible().len() as u16 + 3;
        let [table, log] =
            Layout::vertical([Constraint::Max(rows.max(5)), Constraint::Min(4)]).areas(body);
        services(f, m, theme, now, table);
        logs(f, m, log);
    }
    let lines: Vec<Line> = m
        .events
        .iter()
        .rev()
        .take(events.height.saturating_sub(2) as usize)
        .rev()
        .map(|e| Line::raw(e.clone()))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" events ")),
        events,
    );
    f.render_widget(Paragraph::new(footer(m)), foot);
    if m.help {
        help(f, area);
    }
}

fn header(m: &Model) -> String {
    let n = m.services.len();
    let ready = m.services.iter().filter(|s| s.ready).count();
    let failing = m.services.iter().filter(|s| Model::failing(s)).count();
    let mut t = format!("herd top: {n} services, {ready} ready");
    if failing > 0 {
        t.push_str(&format!(", {failing} failing"));
    }
    if !m.filter.is_empty() {
        t.push_str(&format!(" (filter: {})", m.filter));
    }
    t.push_str("   ? help");
    t
}

fn footer(m: &Model) -> Line<'static> {
    let reverse = Style::default().add_modifier(Modifier::REVERSED);
    match &m.prompt {
        Some(Prompt::Filter(t)) => Line::styled(format!("filter services: {t}_"), reverse),
        Some(Prompt::Search(t)) => Line::styled(format!("search the log: {t}_"), reverse),
        Some(Prompt::Signal(t)) => Line::styled(format!("signal to send: {t}_"), reverse),
        Some(Prompt::Confirm { question, .. }) => Line::styled(question.clone(), reverse),
        None => match &m.message {
            Some(msg) => Line::raw(msg.clone()),
            None => Line::raw(
                "q quit  s start  x stop  r restart  g signal  K kill  l logs  f filter  / search",
            ),
        },
    }
}

/// `12.3s`, `4m10s`, `2h05m`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    }
}

fn services(f: &mut Frame, m: &Model, theme: Theme, now: Instant, area: Rect) {
    let visible = m.visible();
    // HEALTH only where a service has a check: 80 columns leave STATUS little.
    let with_health = m.services.iter().any(|s| s.health.is_some());
    let name_width = visible.iter().map(|s| s.name.len() + 1).max().unwrap_or(7);
    let rows = visible.iter().map(|s| {
        let failing = Model::failing(s);
        let (name, name_style) = if failing {
            (format!("!{}", s.name), theme.bad())
        } else {
            (s.name.clone(), Style::default())
        };
        let unhealthy = s
            .health
            .as_deref()
            .is_some_and(|h| h.starts_with("unhealthy"));
        let mut cells = vec![
            Cell::from(name).style(name_style),
            Cell::from(s.state.clone()).style(theme.state(&s.state)),
        ];
        if with_health {
            let style = if unhealthy {
                theme.bad()
            } else {
                Style::default()
            };
            cells.push(Cell::from(health(s)).style(style));
        }
        cells.extend([
            Cell::from(s.pid.map_or("-".into(), |p| p.to_string())),
            Cell::from(s.processes.to_string()),
            Cell::from(m.cpu.get(&s.name).map_or("-".into(), |c| format!("{c:.1}"))),
            Cell::from(s.memory_bytes.map_or("-".into(), format_bytes)),
            Cell::from(s.uptime_ms.map_or("-".into(), |ms| {
                short(Duration::from_millis(ms) + now.saturating_duration_since(m.snapshot_at))
            })),
            Cell::from(s.runs.to_string()),
            // A stop under way says how long until SIGKILL (its step is in
            // the shutdown view and the events).
            Cell::from(match (&s.stop, m.kill_in(s, now)) {
                (Some(_), Some(left)) => format!("SIGKILL in {}", short(left)),
                (Some(stop), None) => stop.step.clone(),
                _ => detail(s),
            }),
        ]);
        Row::new(cells)
    });
    let mut titles = vec!["SERVICE", "STATE"];
    let mut widths = vec![
        Constraint::Length(name_width.clamp(7, 20) as u16),
        Constraint::Length(9),
    ];
    if with_health {
        titles.push("HEALTH");
        widths.push(Constraint::Length(9));
    }
    titles.extend(["PID", "PROCS", "CPU%", "MEM", "UP", "RUNS", "STATUS"]);
    widths.extend([
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Min(10),
    ]);
    let header = Row::new(titles).style(Style::default().add_modifier(Modifier::BOLD));
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(1)
        .block(Block::new().borders(Borders::TOP | Borders::BOTTOM))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let at = m
        .selected
        .as_ref()
        .and_then(|n| visible.iter().position(|s| &s.name == n));
    let mut state = TableState::default().with_selected(at);
    f.render_stateful_widget(table, area, &mut state);
}

/// The health column: its first word (`healthy`, `unhealthy 2/3`,
/// `starting`), the watchdog's time in the status column's detail.
fn health(s: &ServiceStatus) -> String {
    match &s.health {
        None => "-".into(),
        Some(h) => h.split(", ").next().unwrap_or(h).to_string(),
    }
}

/// What else there is to say: `STATUS=`, why it failed, how it last exited.
fn detail(s: &ServiceStatus) -> String {
    s.status_text
        .clone()
        .or_else(|| s.detail.clone())
        .or_else(|| s.last_exit.clone().map(|e| format!("last: {e}")))
        .unwrap_or_default()
}

fn logs(f: &mut Frame, m: &Model, area: Rect) {
    let mut title = if m.log_all {
        let n = m.services.len();
        if n > ALL_LOGS_MAX {
            format!(" logs: the first {ALL_LOGS_MAX} of {n} services ")
        } else {
            " logs: every service ".to_string()
        }
    } else {
        format!(" log: {} ", m.selected.as_deref().unwrap_or("-"))
    };
    if !m.search.is_empty() {
        title.push_str(&format!("/{}/ ", m.search));
    }
    let height = area.height.saturating_sub(2) as usize;
    let shown: Vec<&(String, String)> = m.log_lines().collect();
    let lines: Vec<Line> = shown[shown.len().saturating_sub(height)..]
        .iter()
        .map(|(svc, line)| {
            let (stamp, text) = split_stamp(line);
            // The time of day only: the date is today's.
            let time = stamp.map_or(String::new(), |s| format!("{} ", &s[11..19]));
            let mut spans = vec![Span::styled(
                time,
                Style::default().add_modifier(Modifier::DIM),
            )];
            if m.log_all {
                spans.push(Span::raw(format!("{svc} | ")));
            }
            spans.push(Span::raw(text.to_string()));
            Line::from(spans)
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn shutdown(f: &mut Frame, m: &Model, theme: Theme, now: Instant, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    let by_name = |n: &str| m.services.iter().find(|s| s.name == n);
    let title = match (&m.shutdown, m.shutdown_elapsed(now)) {
        (Some(sd), Some(elapsed)) => format!(
            " shutting down: {} of {}, wave {} of {} ",
            short(elapsed),
            short(Duration::from_millis(sd.budget_ms)),
            (sd.wave + 1).min(sd.waves.len()),
            sd.waves.len()
        ),
        _ => " shutting down ".to_string(),
    };
    let Some(sd) = &m.shutdown else {
        f.render_widget(
            Paragraph::new("waiting for the shutdown's progress…")
                .block(Block::bordered().title(title)),
            area,
        );
        return;
    };
    lines.push(Line::raw(format!("asked by: {}", sd.trigger)));
    for (i, wave) in sd.waves.iter().enumerate() {
        let label = format!("wave {} ", i + 1);
        if i != sd.wave {
            // Waves before and after the current one: a line each.
            let what = if i < sd.wave { "done" } else { "waiting" };
            let names: Vec<String> = wave
                .iter()
                .map(|n| match by_name(n) {
                    Some(s) if i < sd.wave => format!(
                        "{n} {}{}",
                        s.state,
                        s.last_stop_ms.map_or(String::new(), |ms| format!(
                            " in {}",
                            short(Duration::from_secs_f64(ms / 1000.0))
                        ))
                    ),
                    _ => n.clone(),
                })
                .collect();
            lines.push(Line::raw(format!("{label}{what}: {}", names.join(", "))));
            continue;
        }
        lines.push(Line::styled(
            format!("{label}stopping"),
            Style::default().add_modifier(Modifier::BOLD),
        ));
        for name in wave {
            let Some(s) = by_name(name) else { continue };
            let Some(stop) = &s.stop else {
                lines.push(Line::raw(format!("  {name:<14} {}", s.state)));
                continue;
            };
            let countdown = match m.kill_in(s, now) {
                Some(left) => format!("SIGKILL in {}", short(left)),
                None => String::new(),
            };
            lines.push(Line::from(vec![
                Span::raw(format!("  {name:<14} ")),
                Span::styled(format!("{:<10}", s.state), theme.state(&s.state)),
                Span::raw(format!("{:<14} ", stop.step)),
                Span::styled(
                    countdown,
                    theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
                ),
            ]));
            for p in &stop.waiting_on {
                let stuck = p.state.starts_with('D');
                let state = if stuck {
                    format!("{} (stuck in the kernel)", p.state)
                } else {
                    p.state.clone()
                };
                let style = if stuck { theme.bad() } else { Style::default() };
                lines.push(Line::from(vec![
                    Span::raw(format!("      {:>7} ", p.pid)),
                    Span::styled(format!("{state:<12} "), style),
                    Span::raw(p.command.clone()),
                ]));
            }
        }
    }
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(title)),
        area,
    );
}

fn help(f: &mut Frame, area: Rect) {
    let text = [
        "j/k, arrows   select a service",
        "s             start it (and what it requires)",
        "x             stop it (asks first)",
        "r             restart it",
        "g             send its main process a signal (by name)",
        "K             SIGKILL every process of it (asks first)",
        "l             its log / every service's log",
        "f             filter services by name",
        "/             search the log (Esc clears)",
        "q, Ctrl-C     leave",
        "",
        "A shutdown shows its waves, each service's countdown to",
        "SIGKILL and the processes its stop still waits for.",
    ];
    let w = 62.min(area.width);
    let h = (text.len() as u16 + 2).min(area.height);
    let at = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, at);
    let lines: Vec<Line> = text.iter().map(|l| Line::raw(*l)).collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" herd top: keys (any key closes) ")),
        at,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use herd_api::{ProcessInfo, ShutdownProgress, StopProgress};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn screen(m: &Model) -> String {
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, m, Theme { color: false }, m.snapshot_at))
            .unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn svc(name: &str, state: &str) -> ServiceStatus {
        serde_json::from_value(serde_json::json!({
            "name": name, "kind": "long", "requires": [], "state": state, "detail": null,
            "pid": 4242, "pids": [4242], "uptime_ms": null, "runs": 1, "ready": false,
            "last_exit": null, "stops": 0, "kills": 0, "last_stop_ms": null,
            "log_dropped_bytes": 0, "health": null, "status_text": null,
            "cpu_seconds": null, "memory_bytes": null, "processes": 1, "stop": null
        }))
        .unwrap()
    }

    #[test]
    fn a_shutdown_shows_its_waves_countdowns_and_a_stuck_process() {
        let mut nfs = svc("nfs-client", "stopping");
        nfs.stop = Some(StopProgress {
            reason: "shutdown".into(),
            step: "SIGTERM sent".into(),
            elapsed_ms: 1200,
            kill_in_ms: Some(1800),
            waiting_on: vec![ProcessInfo {
                pid: 4242,
                state: "D uninterruptible sleep".into(),
                command: "cp -r /mnt/nfs /tmp".into(),
            }],
        });
        let shutdown = ShutdownProgress {
            trigger: "SIGTERM".into(),
            elapsed_ms: 1200,
            budget_ms: 30_000,
            wave: 1,
            waves: vec![
                vec!["web".into()],
                vec!["nfs-client".into()],
                vec!["db".into()],
            ],
        };
        let m = Model::new(
            vec![svc("web", "stopped"), nfs, svc("db", "ready")],
            Some(shutdown),
        );
        let text = screen(&m);
        assert!(
            text.contains("shutting down: 1.2s of 30.0s, wave 2 of 3"),
            "{text}"
        );
        assert!(text.contains("wave 1 done: web stopped"), "{text}");
        assert!(text.contains("SIGTERM sent"), "{text}");
        assert!(text.contains("SIGKILL in 1.8s"), "{text}");
        assert!(
            text.contains("4242 D uninterruptible sleep (stuck in the kernel) cp -r /mnt/nfs"),
            "{text}"
        );
        assert!(text.contains("wave 3 waiting: db"), "{text}");
    }

    #[test]
    fn the_table_marks_failing_services_and_fits_80_columns() {
        let mut failed = svc("worker", "failed");
        failed.detail = Some("exited 3 times in 10s".into());
        let m = Model::new(vec![svc("api", "ready"), failed], None);
        let text = screen(&m);
        let row = text.lines().find(|l| l.contains("worker")).unwrap();
        assert!(row.starts_with("!worker"), "{row}");
        assert!(row.contains("exited 3 times"), "{row}");
        assert!(text.contains("1 failing"), "{text}");
    }
}
