//! `herd doctor`: what this host offers for containment, which backend `herd up`
//! would use, and what each backend guarantees.
//!
//! With a valid `herd.toml` at hand it decides as `herd up` there would: the
//! backend its `supervisor.containment` asks for, in its instance's subtree
//! (so a subtree another herder of the same project holds shows as in use).

use std::path::Path;
use std::process::ExitCode;

use herd_contain::Containment;

pub fn run(file: &Path, forced: Option<Containment>, json: bool) -> ExitCode {
    let mut out = String::new();
    let config = herd_config::load(file).ok();
    let instance = config.as_ref().map(|c| super::up::instance(c, file));
    let forced = forced.or(config.as_ref().and_then(|c| c.supervisor.containment));
    let probes = herd_contain::report(herd_contain::Place::Herder(instance.as_deref()));
    let chosen = match forced {
        Some(k) => probes
            .iter()
            .find(|p| p.kind == k)
            .filter(|p| p.result.is_ok())
            .map(|p| p.kind),
        None => probes.iter().find(|p| p.result.is_ok()).map(|p| p.kind),
    };
    if json {
        let doc = serde_json::json!({
            "backends": probes.iter().map(|p| serde_json::json!({
                "name": p.kind.name(),
                "available": p.result.is_ok(),
                "detail": match &p.result { Ok(d) | Err(d) => d },
                "guarantees": herd_contain::guarantees(p.kind),
            })).collect::<Vec<_>>(),
            "chosen": chosen.map(Containment::name),
            "instance": instance,
        });
        let code = crate::output::stdout(&format!("{doc:#}\n"));
        return if chosen.is_some() {
            code
        } else {
            ExitCode::from(1)
        };
    }
    out.push_str("containment backends, best first:\n");
    for p in &probes {
        let mark = if Some(p.kind) == chosen { "*" } else { " " };
        let (state, detail) = match &p.result {
            Ok(d) => ("available", d.as_str()),
            Err(e) => ("unavailable", e.as_str()),
        };
        out.push_str(&format!("{mark} {:<8} {state}: {detail}\n", p.kind.name()));
    }
    out.push_str(&format!(
        "\nherd up would use: {}{}\n",
        chosen.map_or(
            "nothing (the backend asked for is unavailable)",
            Containment::name
        ),
        instance.as_ref().map_or(String::new(), |i| format!(
            ", instance {i} ({})",
            file.display()
        ))
    ));
    for k in Containment::ALL {
        out.push_str(&format!("\n{} guarantees:\n", k.name()));
        for g in herd_contain::guarantees(k) {
            out.push_str(&format!("  - {g}\n"));
        }
    }
    let code = crate::output::stdout(&out);
    if chosen.is_some() {
        code
    } else {
        ExitCode::from(1)
    }
}
