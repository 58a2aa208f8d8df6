//! The shutdown report drawn as an SVG timeline (`herd report --svg`).
//!
//! One row per service, a bar from its stop to its last process gone: the
//! `stop.exec` part, the graceful wait and the time after SIGKILL in their own
//! colours (`stuck` where processes were left); the event, the signal and SIGKILL
//! marked; the deadline a dashed line; each wave's start and the budget on the
//! axis.
//!
//! The time axis spans what happened (a 30 ms shutdown is drawn across the whole
//! width, not as slivers beside its 10 s deadlines): a deadline or the budget past
//! its end is named in a column to the right of the axis instead. Wave labels
//! never overlap: one that would is raised a line, and when neither line has
//! room it joins the label before it (`wave 1–3`).

use crate::report::{Report, ServiceReport, escape, ms};

const LEFT: f64 = 150.0;
const WIDTH: f64 = 640.0;
/// The column right of the axis for what falls past its end.
const RIGHT: f64 = 120.0;
const ROW: f64 = 26.0;
const TOP: f64 = 52.0;
/// The width of a character of the 12 px monospace text.
const CHAR: f64 = 7.2;

const STYLE: &str = "<style>.hook{fill:#8e7cc3}.wait{fill:#6fa8dc}.kill{fill:#e06666}.stuck{fill:#990000}.deadline{stroke:#444;stroke-dasharray:3,2}.mark{stroke:#000;stroke-width:2}.sigkill{fill:#cc0000}.event{fill:#38761d}</style>\n";

impl Report {
    /// The timeline, as an SVG document.
    pub fn svg(&self) -> String {
        let span = self
            .services
            .iter()
            .flat_map(|s| {
                [
                    s.stop_at_ms,
                    s.event_at_ms,
                    s.hook_ended_at_ms,
                    s.signal_at_ms,
                    s.killed_at_ms,
                    s.gone_at_ms,
                ]
            })
            .flatten()
            .chain([self.ended_at_ms])
            .fold(1.0_f64, f64::max)
            * 1.1;
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
            w = LEFT + WIDTH + RIGHT
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
        let xs: Vec<f64> = r.waves_at_ms.iter().map(|&t| self.x(t)).collect();
        for &w in &xs {
            self.out.push_str(&format!(
                "<line class=\"wave\" x1=\"{w}\" y1=\"{}\" x2=\"{w}\" y2=\"{axis_y}\" stroke=\"#bbb\" stroke-dasharray=\"1,3\"/>\n",
                TOP - 6.0,
            ));
        }
        for (x, y, text) in wave_labels(&xs) {
            self.out.push_str(&format!(
                "<text class=\"wave\" x=\"{x}\" y=\"{y}\" fill=\"#888\">{text}</text>\n"
            ));
        }
        if r.budget_ms > span {
            self.out.push_str(&format!(
                "<text class=\"off-axis\" x=\"{}\" y=\"{}\" fill=\"#cc0000\">budget {}</text>\n",
                xend + 6.0,
                axis_y + 4.0,
                ms(r.budget_ms)
            ));
        }
    }

    /// One service's row at height `y`; `ended` is when herder was done.
    fn service(&mut self, y: f64, s: &ServiceReport, ended: f64) {
        self.out.push_str(&format!(
            "<g class=\"service\" data-name=\"{}\">\n<text x=\"4\" y=\"{}\">{}</text>\n",
            escape(&s.name),
            y + 16.0,
            escape(&clip(&format!("{} (wave {})", s.name, s.wave))),
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
        if let Some(d) = s.deadline_at_ms.filter(|&d| d > self.span) {
            // Past the axis: named in the column to its right.
            self.out.push_str(&format!(
                "<text class=\"off-axis\" x=\"{}\" y=\"{}\" fill=\"#444\">deadline {}</text>\n",
                self.x(self.span) + 6.0,
                y + 16.0,
                ms(d)
            ));
        } else if let Some(d) = s.deadline_at_ms {
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

/// Where each wave's label goes, `(x, y, text)`: at its tick, on the lower line if
/// it has room, else on the upper; with room on neither, it joins the last label
/// (`wave 1–3`).
fn wave_labels(xs: &[f64]) -> Vec<(f64, f64, String)> {
    let lines = [TOP - 8.0, TOP - 20.0];
    // Per line: where its last label ends, and that label's index in `out`.
    let mut ends: [(f64, Option<usize>); 2] = [(f64::MIN, None), (f64::MIN, None)];
    let mut out: Vec<(f64, f64, String, usize, usize)> = Vec::new();
    for (i, &x) in xs.iter().enumerate() {
        let text = format!("wave {i}");
        let width = text.len() as f64 * CHAR;
        if let Some(l) = (0..2).find(|&l| x >= ends[l].0 + 4.0) {
            ends[l] = (x + width, Some(out.len()));
            out.push((x, lines[l], text, i, i));
        } else if let Some(j) = out.len().checked_sub(1) {
            // Joins the last label placed: its text grows, and so does its line's end.
            let (lx, ly, _, first, _) = out[j].clone();
            let text = format!("wave {first}–{i}");
            let l = usize::from(ly != lines[0]);
            ends[l].0 = lx + text.chars().count() as f64 * CHAR;
            out[j] = (lx, ly, text, first, i);
        }
    }
    out.into_iter().map(|(x, y, t, _, _)| (x, y, t)).collect()
}

/// A row's label, cut to what fits left of the axis.
fn clip(label: &str) -> String {
    let fits = ((LEFT - 8.0) / CHAR) as usize;
    if label.chars().count() <= fits {
        return label.to_string();
    }
    let mut cut: String = label.chars().take(fits - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `<text>`'s box: x from, x to, baseline; from its position, anchor and
    /// length (12 px monospace).
    fn text_boxes(svg: &str) -> Vec<(f64, f64, f64, String)> {
        let doc = roxmltree::Document::parse(svg).unwrap();
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| {
                let x: f64 = n.attribute("x").unwrap().parse().unwrap();
                let y: f64 = n.attribute("y").unwrap().parse().unwrap();
                let text = n.text().unwrap_or_default().to_string();
                let w = text.chars().count() as f64 * CHAR;
                let x0 = if n.attribute("text-anchor") == Some("end") {
                    x - w
                } else {
                    x
                };
                (x0, x0 + w, y, text)
            })
            .collect()
    }

    fn assert_no_overlap(svg: &str) {
        let boxes = text_boxes(svg);
        for (i, a) in boxes.iter().enumerate() {
            for b in &boxes[i + 1..] {
                let apart = a.1 <= b.0 || b.1 <= a.0 || (a.2 - b.2).abs() >= 12.0;
                assert!(apart, "{:?} overlaps {:?}", a.3, b.3);
            }
        }
    }

    fn service(name: &str, wave: usize, stop: f64, gone: f64, deadline: f64) -> ServiceReport {
        ServiceReport {
            name: name.into(),
            wave,
            state: "ready".into(),
            stop_at_ms: Some(stop),
            deadline_at_ms: Some(deadline),
            signal: Some("SIGTERM".into()),
            signal_at_ms: Some(stop),
            gone_at_ms: Some(gone),
            ..Default::default()
        }
    }

    /// A 30 ms shutdown in four waves with 10 s deadlines: the bars span the
    /// axis, the deadlines are named off it, and no two labels overlap.
    #[test]
    fn a_fast_shutdown_is_drawn_across_the_axis_and_its_labels_apart() {
        let r = Report {
            trigger: "SIGTERM".into(),
            budget_ms: 25_000.0,
            waves_at_ms: vec![0.0, 0.4, 1.1, 29.0],
            services: vec![
                service("web", 0, 0.0, 0.4, 10_000.0),
                service("a-rather-long-service-name", 1, 0.4, 1.1, 10_000.0),
                service("db", 2, 1.1, 29.0, 10_000.0),
                service("cache", 3, 29.0, 30.0, 10_000.0),
            ],
            ended_at_ms: 30.0,
            outcome: "clean".into(),
            ..Default::default()
        };
        let svg = r.svg();
        assert_no_overlap(&svg);
        // db's bar (1.1 to 29 ms) is most of the axis, not a sliver.
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let widest = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect"))
            .map(|n| n.attribute("width").unwrap().parse::<f64>().unwrap())
            .fold(0.0, f64::max);
        assert!(widest > WIDTH * 0.7, "widest bar {widest}");
        assert_eq!(svg.matches("deadline 10.000s").count(), 4);
        assert!(svg.contains(">budget 25.000s<"));
        let waves: Vec<String> = text_boxes(&svg)
            .into_iter()
            .map(|b| b.3)
            .filter(|t| t.starts_with("wave "))
            .collect();
        assert!(!waves.is_empty());
        // Every wave is named, alone or in a range.
        assert!(waves.iter().any(|w| w.contains('3')), "{waves:?}");
    }

    /// Deadlines within what happened are drawn on the axis; one past it, and
    /// the budget, are named off it.
    #[test]
    fn a_slow_shutdown_keeps_its_deadlines_on_the_axis_and_its_labels_apart() {
        let r = Report {
            trigger: "SIGTERM".into(),
            budget_ms: 8_000.0,
            waves_at_ms: vec![0.0, 1_003.0, 1_514.0],
            services: vec![
                service("web", 0, 0.1, 308.7, 2_000.0),
                service("api", 1, 1_003.0, 1_513.0, 3_253.0),
                service("db", 2, 1_514.0, 6_915.0, 7_764.0),
            ],
            ended_at_ms: 6_916.0,
            outcome: "clean".into(),
            ..Default::default()
        };
        let svg = r.svg();
        assert_no_overlap(&svg);
        assert_eq!(svg.matches("class=\"deadline\"").count(), 2);
        assert!(svg.contains(">deadline 7.764s<"), "{svg}");
        assert!(svg.contains(">budget 8.000s<"));
    }

    #[test]
    fn crowded_wave_labels_join() {
        let labels = wave_labels(&[100.0, 101.0, 102.0, 103.0, 400.0]);
        let texts: Vec<&str> = labels.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(texts, ["wave 0", "wave 1–3", "wave 4"]);
    }
}
