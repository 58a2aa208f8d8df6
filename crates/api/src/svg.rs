//! The shutdown report drawn as an SVG timeline (`herd report --svg`).
//!
//! One row per service, a bar from its stop to its last process gone: the
//! `stop.exec` part, the graceful wait and the time after SIGKILL in their own
//! colours (`stuck` where processes were left); the event, the signal and SIGKILL
//! marked; the deadline a dashed line; each wave's start and the budget on the
//! axis. The time axis ends a little after the last thing that happened; the
//! budget is marked where it falls inside it, and named in the heading.

use crate::report::{Report, ServiceReport, escape, ms};

const LEFT: f64 = 150.0;
const WIDTH: f64 = 640.0;
const ROW: f64 = 26.0;
const TOP: f64 = 40.0;

const STYLE: &str = "<style>.hook{fill:#8e7cc3}.wait{fill:#6fa8dc}.kill{fill:#e06666}.stuck{fill:#990000}.deadline{stroke:#444;stroke-dasharray:3,2}.mark{stroke:#000;stroke-width:2}.sigkill{fill:#cc0000}.event{fill:#38761d}</style>\n";

impl Report {
    /// The timeline, as an SVG document.
    pub fn svg(&self) -> String {
        let span = self
            .services
            .iter()
            .flat_map(|s| [s.gone_at_ms, s.deadline_at_ms])
            .flatten()
            .chain([self.ended_at_ms])
            .fold(1.0_f64, f64::max)
            * 1.05;
        let mut c = Canvas {
            span,
            out: String::new(),
        };
        c.heading(self);
        c.axis(self);
        for (i, s) in self.services.iter().enumerate() {
            c.service(TOP + ROW * i as f64, s, self.ended_at_ms);
        }
        c.out.push_str("</svg>\n");
        c.out
    }
}

/// The document being drawn, and the time its width stands for.
struct Canvas {
    span: f64,
    out: String,
}

impl Canvas {
    /// The x of time `t` (ms since the shutdown began).
    fn x(&self, t: f64) -> f64 {
        ((LEFT + t / self.span * WIDTH) * 100.0).round() / 100.0
    }

    fn heading(&mut self, r: &Report) {
        let height = TOP + ROW * r.services.len() as f64 + 40.0;
        self.out.push_str(&format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" font-family=\"monospace\" font-size=\"12\">\n",
            w = LEFT + WIDTH + 20.0
        ));
        self.out.push_str(&format!(
            "<title>herder shutdown: {}</title>\n",
            escape(&r.trigger)
        ));
        self.out.push_str(STYLE);
        self.out.push_str(&format!(
            "<text x=\"4\" y=\"16\">{}: done at {} of a {} budget, {} (exit {})</text>\n",
            escape(&r.trigger),
            ms(r.ended_at_ms),
            ms(r.budget_ms),
            escape(&r.outcome),
            r.exit_code
        ));
    }

    /// The axis: its ends, the budget, a tick at each wave's start.
    fn axis(&mut self, r: &Report) {
        let (x0, xend, span) = (self.x(0.0), self.x(self.span), self.span);
        let axis_y = TOP + ROW * r.services.len() as f64 + 6.0;
        self.out.push_str(&format!(
            "<line class=\"axis\" x1=\"{x0}\" y1=\"{axis_y}\" x2=\"{xend}\" y2=\"{axis_y}\" stroke=\"#000\"/>\n",
        ));
        self.out.push_str(&format!(
            "<text x=\"{x0}\" y=\"{y}\">0</text><text x=\"{xend}\" y=\"{y}\" text-anchor=\"end\">{}</text>\n",
            ms(span),
            y = axis_y + 16.0,
        ));
        if r.budget_ms <= span {
            self.out.push_str(&format!(
                "<line class=\"budget\" x1=\"{b}\" y1=\"{TOP}\" x2=\"{b}\" y2=\"{axis_y}\" stroke=\"#cc0000\"><title>budget {}</title></line>\n",
                ms(r.budget_ms),
                b = self.x(r.budget_ms)
            ));
        }
        for (i, &t) in r.waves_at_ms.iter().enumerate() {
            self.out.push_str(&format!(
                "<line class=\"wave\" x1=\"{w}\" y1=\"{}\" x2=\"{w}\" y2=\"{axis_y}\" stroke=\"#bbb\" stroke-dasharray=\"1,3\"/><text x=\"{w}\" y=\"{}\" fill=\"#888\">wave {i}</text>\n",
                TOP - 6.0,
                TOP - 8.0,
                w = self.x(t)
            ));
        }
    }

    /// One service's row at height `y`; `ended` is when herder was done.
    fn service(&mut self, y: f64, s: &ServiceReport, ended: f64) {
        self.out.push_str(&format!(
            "<g class=\"service\" data-name=\"{}\">\n<text x=\"4\" y=\"{}\">{} (wave {})</text>\n",
            escape(&s.name),
            y + 16.0,
            escape(&s.name),
            s.wave
        ));
        let Some(start) = s.stop_at_ms else {
            self.out.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" fill=\"#888\">{}: not running</text>\n</g>\n",
                self.x(0.0),
                y + 16.0,
                escape(&s.state)
            ));
            return;
        };
        let end = s.gone_at_ms.unwrap_or(ended);
        self.bar(y, s, start, end);
        self.marks(y, s);
        self.out.push_str("</g>\n");
    }

    /// The bar: hook, graceful wait, after SIGKILL (stuck if leftovers).
    fn bar(&mut self, y: f64, s: &ServiceReport, start: f64, end: f64) {
        let title = format!(
            "{}: stop at {}, {}{}gone at {}",
            s.name,
            ms(start),
            s.signal_at_ms
                .map(|t| format!("{} at {}, ", s.signal.as_deref().unwrap_or("signal"), ms(t)))
                .unwrap_or_default(),
            s.killed_at_ms
                .map(|t| format!("SIGKILL at {}, ", ms(t)))
                .unwrap_or_default(),
            s.gone_at_ms.map_or("never".into(), ms)
        );
        self.out.push_str(&format!(
            "<g class=\"bar\"><title>{}</title>\n",
            escape(&title)
        ));
        let hook_end = s.hook_ended_at_ms.unwrap_or(start).min(end);
        let kill = s.killed_at_ms.unwrap_or(end).min(end);
        self.segment(y, "hook", start, hook_end);
        self.segment(y, "wait", hook_end, kill);
        let after = if s.leftovers.is_empty() {
            "kill"
        } else {
            "stuck"
        };
        self.segment(y, after, kill, end);
        if end <= start {
            // Gone at once: still one visible bar.
            self.segment(y, "wait", start, start + self.span / 500.0);
        }
        self.out.push_str("</g>\n");
    }

    fn segment(&mut self, y: f64, class: &str, a: f64, b: f64) {
        if b > a {
            let (bar_y, bar_h) = (y + 4.0, ROW - 10.0);
            self.out.push_str(&format!(
                "<rect class=\"{class}\" x=\"{:.2}\" y=\"{bar_y}\" width=\"{:.2}\" height=\"{bar_h}\"/>\n",
                self.x(a),
                (self.x(b) - self.x(a)).max(1.0)
            ));
        }
    }

    /// The deadline, the event, the signal and SIGKILL.
    fn marks(&mut self, y: f64, s: &ServiceReport) {
        let (bar_y, bar_h) = (y + 4.0, ROW - 10.0);
        if let Some(d) = s.deadline_at_ms {
            self.out.push_str(&format!(
                "<line class=\"deadline\" x1=\"{d}\" y1=\"{}\" x2=\"{d}\" y2=\"{}\"><title>deadline {}</title></line>\n",
                y + 1.0,
                y + ROW - 3.0,
                ms(d),
                d = self.x(d)
            ));
        }
        if let Some(t) = s.event_at_ms {
            self.out.push_str(&format!(
                "<circle class=\"event\" cx=\"{}\" cy=\"{}\" r=\"3\"><title>shutdown event at {}</title></circle>\n",
                self.x(t),
                bar_y - 1.0,
                ms(t)
            ));
        }
        if let Some(t) = s.signal_at_ms {
            self.out.push_str(&format!(
                "<line class=\"mark\" x1=\"{t}\" y1=\"{}\" x2=\"{t}\" y2=\"{}\"><title>{} at {}</title></line>\n",
                bar_y,
                bar_y + bar_h,
                escape(s.signal.as_deref().unwrap_or("signal")),
                ms(t),
                t = self.x(t)
            ));
        }
        if let Some(t) = s.killed_at_ms {
            let cx = self.x(t);
            self.out.push_str(&format!(
                "<path class=\"sigkill escalation\" d=\"M{} {} L{} {} L{} {} Z\"><title>SIGKILL at {}</title></path>\n",
                cx - 5.0,
                bar_y - 4.0,
                cx + 5.0,
                bar_y - 4.0,
                cx,
                bar_y + 4.0,
                ms(t)
            ));
        }
    }
}
