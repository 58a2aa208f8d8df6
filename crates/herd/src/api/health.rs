//! The optional TCP listener (`herd up --http ADDR`): `/healthz`, `/readyz` and
//! `/metrics` only, for Kubernetes probes and Prometheus. Nothing on it can change
//! anything; everything else is `404`.
//!
//! - `/healthz`: `200 ok` while the engine answers (within 2 s), `503` otherwise.
//! - `/readyz`: `200` when every long service that matters is ready and not
//!   failing its health check: the `main` service and what it requires
//!   (transitively), or without `main` every long service; `503` naming those
//!   that are not, and `503` once a shutdown has begun (so a load balancer stops
//!   sending work).
//! - `/metrics`: Prometheus text format 0.0.4.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use herd_api::Overview;
use herd_core::engine::Handle;

/// The machine states a service can be in, one time series each.
const STATES: &[&str] = &[
    "pending",
    "starting",
    "ready",
    "running-not-ready",
    "stopping",
    "stopped",
    "exited",
    "failed",
    "backoff",
    "stuck",
];

pub struct HealthCtx {
    pub handle: Handle,
    /// The `main` service, if set.
    pub main: Option<String>,
}

pub async fn serve(listener: TcpListener, ctx: Arc<HealthCtx>) {
    let mut errors = super::AcceptErrors::new("http listener");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                errors.accepted();
                s
            }
            Err(e) => {
                errors.failed(e).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| route(req, ctx.clone()));
            let _ = super::server::http1()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn text(status: StatusCode, body: String, kind: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", kind)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

async fn route(
    req: Request<Incoming>,
    ctx: Arc<HealthCtx>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if req.method() != Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".into(),
            PLAIN,
        ));
    }
    let path = req.uri().path().to_string();
    let overview = match tokio::time::timeout(Duration::from_secs(2), ctx.handle.overview()).await {
        Ok(Ok(o)) => Some(o),
        _ => None,
    };
    let answer = match (path.as_str(), overview) {
        ("/healthz", Some(_)) => text(StatusCode::OK, "ok\n".into(), PLAIN),
        ("/healthz" | "/readyz" | "/metrics", None) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "herder's engine does not answer\n".into(),
            PLAIN,
        ),
        ("/readyz", Some(o)) => match not_ready(&o, ctx.main.as_deref()) {
            None => text(StatusCode::OK, "ready\n".into(), PLAIN),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why + "\n", PLAIN),
        },
        ("/metrics", Some(o)) => text(
            StatusCode::OK,
            metrics(&o),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "only /healthz, /readyz and /metrics are served here\n".into(),
            PLAIN,
        ),
    };
    Ok(answer)
}

/// Why the herd is not ready, or `None` when it is.
fn not_ready(o: &Overview, main: Option<&str>) -> Option<String> {
    if o.shutting_down {
        return Some("shutting down".into());
    }
    let by_name = |n: &str| o.services.iter().find(|s| s.name == n);
    let wanted: BTreeSet<&str> = match main {
        Some(m) => {
            let mut set = BTreeSet::new();
            let mut todo = vec![m];
            while let Some(n) = todo.pop() {
                if set.insert(n)
                    && let Some(s) = by_name(n)
                {
                    todo.extend(s.requires.iter().map(String::as_str));
                }
            }
            set
        }
        None => o.services.iter().map(|s| s.name.as_str()).collect(),
    };
    let waiting: Vec<String> = o
        .services
        .iter()
        .filter(|s| wanted.contains(s.name.as_str()) && s.kind == "long")
        .filter_map(|s| match unhealthy(s) {
            _ if s.state != "ready" => Some(format!("{} is {}", s.name, s.state)),
            Some(h) => Some(format!("{} is {h}", s.name)),
            None => None,
        })
        .collect();
    (!waiting.is_empty()).then(|| format!("not ready: {}", waiting.join(", ")))
}

/// `unhealthy 2/3` while the service's last health checks failed.
fn unhealthy(s: &herd_api::ServiceStatus) -> Option<&str> {
    s.health
        .as_deref()
        .and_then(|h| h.split(", ").find(|part| part.starts_with("unhealthy")))
}

/// A label value in the text format: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Label values are service names (letters, digits, `-_.@`), so need no escaping.
fn metrics(o: &Overview) -> String {
    let mut out = format!(
        "# HELP herd_shutting_down 1 once a shutdown has begun.\n# TYPE herd_shutting_down gauge\nherd_shutting_down {}\n",
        u8::from(o.shutting_down)
    );
    let mut series = |name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let each = |f: &dyn Fn(&herd_api::ServiceStatus) -> String| {
        o.services
            .iter()
            .map(|s| (format!("service=\"{}\"", s.name), f(s)))
            .collect::<Vec<_>>()
    };
    series(
        "herd_service_state",
        "gauge",
        "1 for the state the service is in, 0 for the others.",
        o.services
            .iter()
            .flat_map(|s| {
                STATES.iter().map(move |st| {
                    (
                        format!("service=\"{}\",state=\"{st}\"", s.name),
                        u8::from(s.state == *st).to_string(),
                    )
                })
            })
            .collect(),
    );
    series(
        "herd_service_processes",
        "gauge",
        "Live processes of the service's current run.",
        each(&|s| s.pids.len().to_string()),
    );
    series(
        "herd_service_cpu_seconds_total",
        "counter",
        "CPU time the service's current run has used, user and system.",
        each(&|s| s.cpu_seconds.map_or("NaN".into(), |c| format!("{c:.6}"))),
    );
    series(
        "herd_service_memory_bytes",
        "gauge",
        "Memory the service's processes use now.",
        each(&|s| s.memory_bytes.map_or("NaN".into(), |m| m.to_string())),
    );
    series(
        "herd_service_healthy",
        "gauge",
        "1 while its health check passes, 0 while it fails (services with a check, running).",
        o.services
            .iter()
            .filter(|s| s.health.as_deref().is_some_and(|h| h.contains("health")))
            .map(|s| {
                (
                    format!("service=\"{}\"", s.name),
                    u8::from(unhealthy(s).is_none()).to_string(),
                )
            })
            .collect(),
    );
    series(
        "herd_service_status_info",
        "gauge",
        "The service's last sd_notify STATUS= text, as a label.",
        o.services
            .iter()
            .filter_map(|s| {
                let text = s.status_text.as_deref()?;
                Some((
                    format!("service=\"{}\",status=\"{}\"", s.name, label(text)),
                    "1".to_string(),
                ))
            })
            .collect(),
    );
    series(
        "herd_service_starts_total",
        "counter",
        "Times the service was started (restarts included).",
        each(&|s| s.runs.to_string()),
    );
    series(
        "herd_service_stops_total",
        "counter",
        "Stops that ended with every process gone.",
        each(&|s| s.stops.to_string()),
    );
    series(
        "herd_service_kills_total",
        "counter",
        "Stops that needed SIGKILL.",
        each(&|s| s.kills.to_string()),
    );
    series(
        "herd_service_last_stop_seconds",
        "gauge",
        "How long the last stop took, request to last process gone (NaN before any).",
        each(&|s| {
            s.last_stop_ms
                .map_or("NaN".into(), |ms| format!("{:.6}", ms / 1000.0))
        }),
    );
    series(
        "herd_service_leftover_processes",
        "gauge",
        "Processes that survived SIGKILL (state stuck).",
        each(&|s| if s.state == "stuck" { s.pids.len() } else { 0 }.to_string()),
    );
    series(
        "herd_service_log_dropped_bytes_total",
        "counter",
        "Output its log file could not take (a full disk, a quota, an I/O error).",
        each(&|s| s.log_dropped_bytes.to_string()),
    );
    out
}
