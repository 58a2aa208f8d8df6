//! Readiness probes that run as tasks: `tcp`, `http` and `delay`. (`log` is matched
//! by the output reader, `exec` runs through the reaper, `notify` arrives on the
//! notify socket.) Each probe gives one answer: ready, or timed out.
//!
//! Polled checks wait `interval` between attempts and nothing else: an idle,
//! ready service costs no timer at all.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use herd_config::ReadyCheck;

/// Runs `check` until it passes (true) or `deadline` passes (false).
pub async fn probe(check: ReadyCheck, interval: Duration, deadline: Instant) -> bool {
    match check {
        ReadyCheck::Delay(d) => {
            let at = Instant::now() + d;
            if at > deadline {
                sleep_until(deadline).await;
                return false;
            }
            sleep_until(at).await;
            true
        }
        ReadyCheck::Tcp(addr) => poll(interval, deadline, || tcp(addr.clone())).await,
        ReadyCheck::Http(url) => poll(interval, deadline, || http(url.clone())).await,
        // Answered by the engine: the output reader, the reaper, the notify socket.
        ReadyCheck::Log(_) | ReadyCheck::Exec(_) | ReadyCheck::Notify => {
            unreachable!("the engine answers log, exec and notify checks itself")
        }
    }
}

async fn poll<F, Fut>(interval: Duration, deadline: Instant, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    loop {
        if let Ok(true) = timeout_at(deadline, attempt()).await {
            return true;
        }
        if Instant::now() + interval >= deadline {
            sleep_until(deadline).await;
            return false;
        }
        sleep(interval).await;
    }
}

async fn tcp(addr: String) -> bool {
    TcpStream::connect(addr.as_str()).await.is_ok()
}

/// A plain HTTP/1.0 GET; ready on a 2xx status line.
async fn http(url: String) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(&url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let Ok(mut s) = TcpStream::connect(addr.as_str()).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: herd\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_err() {
        return false;
    }
    // "HTTP/1.x 2xx"
    head.starts_with(b"HTTP/1.") && head[8] == b' ' && head[9] == b'2'
}
