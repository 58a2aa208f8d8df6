//! `docs/api.md` against the wire types: every JSON example in it must read as
//! its type and write back to the very same JSON, so a field renamed, added or
//! dropped on either side fails here.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use herd_api::{
    Change, ErrorAnswer, Message, ReloadAnswer, Report, ServiceStatus, ShutdownAnswer,
    ShutdownProgress, StopProgress, Unclaimed,
};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    std::fs::read_to_string(path).expect("docs/api.md")
}

/// `text` as a `T`, written back: it must be the same JSON.
fn round_trips<T: Serialize + DeserializeOwned>(text: &str) {
    let doc: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| {
        panic!("docs/api.md: {e} in\n{text}");
    });
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, doc, "docs/api.md and the type differ");
}

/// The fenced block that follows the first line containing `after`.
fn block_after(doc: &str, after: &str) -> String {
    let from = doc.find(after).unwrap_or_else(|| panic!("no {after:?}"));
    let rest = &doc[from..];
    let start = rest.find("```").expect("a block") + 3;
    let body = &rest[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```").expect("its end")].to_string()
}

#[test]
fn a_service_as_documented() {
    round_trips::<ServiceStatus>(&block_after(&doc(), "`GET /v1/services` answers"));
}

#[test]
fn a_stop_and_a_shutdown_under_way_as_documented() {
    let stop = block_after(&doc(), "`stop` is there while");
    // The block is the field as it sits in a service: its value alone here.
    let value = stop.trim().trim_start_matches("\"stop\":").trim();
    round_trips::<StopProgress>(value);
    round_trips::<ShutdownProgress>(&block_after(&doc(), "`GET /v1/shutdown`, while"));
}

#[test]
fn every_event_as_documented() {
    let events = block_after(&doc(), "## Events");
    let report = serde_json::to_string(&Report::default()).unwrap();
    let mut kinds = Vec::new();
    for line in events.lines().filter(|l| !l.trim().is_empty()) {
        // The document elides the report of `finished`; any report stands in.
        let line = line.replace("{…}", &report);
        round_trips::<Change>(&line);
        let v: Value = serde_json::from_str(&line).unwrap();
        kinds.push(v["event"].as_str().unwrap().to_string());
    }
    assert_eq!(
        kinds,
        [
            "state", "health", "status", "reload", "shutdown", "finished", "lagged"
        ]
    );
}

#[test]
fn a_reload_as_documented() {
    round_trips::<ReloadAnswer>(&block_after(
        &doc(),
        "`POST /v1/reload?timeout=60s` answers",
    ));
}

#[test]
fn the_small_answers_in_the_routes_table() {
    let doc = doc();
    let inline: Vec<&str> = doc
        .split('`')
        .filter(|s| s.starts_with("200 {") || s.starts_with("202 {") || s.starts_with("422 {"))
        .collect();
    assert!(inline.len() >= 4, "{inline:?}");
    for s in inline {
        let json = &s[4..];
        match &s[..3] {
            _ if json.contains("\"unclaimed\"") => round_trips::<Unclaimed>(json),
            "202" => round_trips::<ShutdownAnswer>(json),
            "422" => round_trips::<ErrorAnswer>(&json.replace('…', "errors")),
            _ => round_trips::<Message>(json),
        }
    }
}
