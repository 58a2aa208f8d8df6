//! `herd plan`: the order services start and stop in, and each one's shutdown deadline.

use std::path::Path;
use std::process::ExitCode;

use herd_config::units::format_duration;
use herd_config::{DepGraph, ShutdownPlan, shutdown_plan};

use crate::output::{self, Table};

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
pub fn document(config: &herd_config::Config) -> herd_api::Plan {
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let plan = shutdown_plan(config);
    herd_api::Plan {
        start_waves: DepGraph::new(&config.services).start_waves(),
        shutdown: herd_api::plan::ShutdownPlan {
            budget_ms: ms(plan.budget),
            kill_reserve_ms: ms(plan.kill_reserve),
            squeezed: plan.squeezed,
            end_ms: ms(plan.end),
            waves: plan
                .waves
                .iter()
                .map(|w| herd_api::plan::StopWave {
                    start_ms: ms(w.start),
                    window_ms: ms(w.window),
                    kill_at_ms: ms(w.kill_at),
                    latest_kill_at_ms: ms(w.latest_kill_at),
                    end_ms: ms(w.end),
                    services: w
                        .services
                        .iter()
                        .map(|s| herd_api::plan::ServiceDeadline {
                            name: s.name.clone(),
                            stop_timeout_ms: ms(s.stop_timeout),
                            granted_ms: ms(s.granted),
                            kill_at_ms: ms(s.kill_at),
                        })
                        .collect(),
                })
                .collect(),
        },
    }
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
    if plan.squeezed {
        out.push_str(
            "This is the worst case, every wave taking its whole window. At run time a wave\n\
             begins as soon as the one before is done, and a service whose stop.timeout was\n\
             cut gets up to its stop.timeout, as long as the later waves keep their share.\n",
        );
    }
    out
}
