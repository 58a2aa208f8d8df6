//! What `herd top` hears from herder: snapshots of the services, the event
//! stream, log lines and the answers to its actions, each turned into an
//! [`Input`] for the model. Only the control socket and the protocol crate.

use std::path::{Path, PathBuf};

use hyper::{Method, StatusCode};
use tokio::sync::mpsc::UnboundedSender as Sender;

use herd_api::{Change, ServiceStatus, ShutdownProgress};

use super::model::Input;
use crate::api::client;

/// Every service, and the shutdown's progress if one is under way.
pub async fn snapshot(
    sock: &Path,
) -> Result<(Vec<ServiceStatus>, Option<ShutdownProgress>), String> {
    let (status, body) = client::request(sock, Method::GET, "/v1/services")
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(client::message(&body));
    }
    let services: Vec<ServiceStatus> =
        serde_json::from_slice(&body).map_err(|e| format!("unexpected answer from herder: {e}"))?;
    // Asked only when something is stopping: most snapshots are of a calm herd.
    let shutdown = if services.iter().any(|s| s.stop.is_some()) {
        match client::request(sock, Method::GET, "/v1/shutdown").await {
            Ok((StatusCode::OK, body)) => serde_json::from_slice(&body).ok(),
            _ => None,
        }
    } else {
        None
    };
    Ok((services, shutdown))
}

/// Sends a snapshot to `tx` (or why there is none: only the event stream's
/// end says herder has gone, as its last events may still be on their way).
pub async fn fetch(sock: PathBuf, tx: Sender<Input>) {
    let input = match snapshot(&sock).await {
        Ok((services, shutdown)) => Input::Snapshot { services, shutdown },
        Err(e) => Input::NoSnapshot(e),
    };
    let _ = tx.send(input);
}

/// Follows `/v1/events` until herder finishes; says so if it ends without
/// its `finished` event (herder was killed).
pub async fn events(sock: PathBuf, tx: Sender<Input>) {
    let gone = |e: String| Input::Gone(e);
    let body = match client::open(&sock, Method::GET, "/v1/events").await {
        Ok((StatusCode::OK, body)) => body,
        Ok((_, body)) => {
            let _ = tx.send(gone(client::message(&client::rest(body).await)));
            return;
        }
        Err(e) => {
            let _ = tx.send(gone(e.to_string()));
            return;
        }
    };
    let mut partial: Vec<u8> = Vec::new();
    let mut finished = false;
    // Unbounded: no event may be lost (the view would miss `finished`), and
    // the loop takes every input before it draws again.
    let ended = client::read_stream(&sock, body, |chunk| {
        partial.extend_from_slice(chunk);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            if let Ok(c) = serde_json::from_slice::<Change>(&line) {
                finished |= matches!(c, Change::Finished { .. });
                if tx.send(Input::Change(c)).is_err() {
                    return false;
                }
            }
        }
        true
    })
    .await;
    if !finished {
        let why = match ended {
            Ok(_) => "the event stream ended".to_string(),
            Err(e) => e.to_string(),
        };
        let _ = tx.send(gone(format!("herder has gone ({why})")));
    }
}

/// Follows `service`'s log: its last `n` lines, then every new one, tagged
/// with `stream` so that lines of a log no longer shown are dropped.
pub async fn log(sock: PathBuf, service: String, n: usize, stream: u64, tx: Sender<Input>) {
    let path = format!("/v1/services/{service}/logs?n={n}&follow=true");
    let Ok((StatusCode::OK, body)) = client::open(&sock, Method::GET, &path).await else {
        return;
    };
    let mut partial: Vec<u8> = Vec::new();
    let _ = client::read_stream(&sock, body, |chunk| {
        partial.extend_from_slice(chunk);
        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let input = Input::Log {
                stream,
                service: service.clone(),
                line,
            };
            if tx.send(input).is_err() {
                return false;
            }
        }
        true
    })
    .await;
}

/// Asks herder to act (`POST path`) and sends its answer back.
pub async fn act(sock: PathBuf, path: String, tx: Sender<Input>) {
    let answer = match client::request(&sock, Method::POST, &path).await {
        Ok((status, body)) if status.is_success() => Ok(client::message(&body)),
        Ok((_, body)) => Err(client::message(&body)),
        Err(e) => Err(e.to_string()),
    };
    let _ = tx.send(Input::Answer(answer));
}
