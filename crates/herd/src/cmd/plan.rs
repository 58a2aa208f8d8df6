//! `herd plan`: the order services start and stop in, and each one's shutdown deadline.

use std::path::Path;
use std::process::ExitCode;

use herd_config::units::format_duration;
use herd_config::{DepGraph, ShutdownPlan, shutdown_plan};
use serde::Serialize;

use crate::output::{self, Table};

/// The `--json` shape.
#[derive(Serialize)]
struct Plan<'a> {
    start_waves: &'a [Vec<String>],
    shutdown: &'a ShutdownPlan,
}

pub fn run(file: &Path, json: bool) -> ExitCode {
    let config = match super::load_or_report(file) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if json {
        let mut text =
            serde_json::to_string_pretty(&document(&config)).expect("plain data serialises");
        text.push('\n');
        return output::stdout(&text);
    }
    let start_waves = DepGraph::new(&config.services).start_waves();
    output::stdout(&render(&start_waves, &shutdown_plan(&config)))
}

/// The `--json` document (also `GET /v1/plan`).
pub fn document(config: &herd_config::Config) -> serde_json::Value {
    let start_waves = DepGraph::new(&config.services).start_waves();
    let shutdown = shutdown_plan(config);
    serde_json::to_value(Plan {
        start_waves: &start_waves,
        shutdown: &shutdown,
    })
    .expect("plain data serialises")
}

fn render(start_waves: &[Vec<String>], plan: &ShutdownPlan) -> String {
    let mut out = String::from("Start (a wave starts when the services it requires are ready)\n");
    let mut t = Table::new(&["wave", "services"]);
    for (i, w) in start_waves.iter().enumerate() {
        t.row(vec![(i + 1).to_string(), w.join(", ")]);
    }
    out.push_str(&t.render("  "));

    out.push_str(&format!(
        "\nShutdown (budget {}, kill reserve {} per wave{})\n",
        format_duration(plan.budget),
        format_duration(plan.kill_reserve),
        if plan.squeezed {
            "; stop timeouts cut to fit, shared fairly"
        } else {
            ""
        }
    ));
    let plus = |d| format!("+{}", format_duration(d));
    let mut t = Table::new(&[
        "wave",
        "service",
        "stop.timeout",
        "granted",
        "SIGKILL at",
        "wave done by",
    ]);
    for (i, w) in plan.waves.iter().enumerate() {
        for (j, s) in w.services.iter().enumerate() {
            let first = j == 0;
            t.row(vec![
                if first {
                    (i + 1).to_string()
                } else {
                    String::new()
                },
                s.name.clone(),
                format_duration(s.stop_timeout),
                format_duration(s.granted),
                plus(s.kill_at),
                if first { plus(w.end) } else { String::new() },
            ]);
        }
    }
    out.push_str(&t.render("  "));
    out.push_str(&format!(
        "Everything is stopped and verified by {} at the latest, within the {} budget.\n",
        plus(plan.end),
        format_duration(plan.budget)
    ));
    out
}
