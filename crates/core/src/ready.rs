//! Readiness probes that run as tasks: `tcp`, `http` and `delay`. (`log` is matched
//! by the output reader, `exec` runs through the reaper, `notify` arrives on the
//! notify socket.) Each probe gives one answer: ready, or timed out.
//!
//! Polled checks wait `interval` between attempts and nothing else: an idle,
//! ready service costs no readiness timer at all. A health check's attempt
//! ([`attempt`]) is one of the same `tcp` or `http` probes, bounded by its
//! timeout, with the reason it failed.

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

/// One attempt of a `tcp` or `http` check, bounded by `timeout`: why it failed,
/// if it did.
pub async fn attempt(check: &ReadyCheck, timeout: Duration) -> Result<(), String> {
    let outcome = match check {
        ReadyCheck::Tcp(addr) => tokio::time::timeout(timeout, connect(addr)).await,
        ReadyCheck::Http(url) => tokio::time::timeout(timeout, get(url)).await,
        _ => unreachable!("the engine runs exec checks itself"),
    };
    outcome.unwrap_or_else(|_| {
        Err(format!(
            "no answer within {}",
            herd_config::units::format_duration(timeout)
        ))
    })
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
    connect(&addr).await.is_ok()
}

async fn http(url: String) -> bool {
    get(&url).await.is_ok()
}

async fn connect(addr: &str) -> Result<(), String> {
    TcpStream::connect(addr)
        .await
        .map(drop)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// A plain HTTP/1.0 GET; passes on a 2xx status line.
async fn get(url: &str) -> Result<(), String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut s = TcpStream::connect(addr.as_str())
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let req = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: herd\r\n\r\n");
    let mut head = [0u8; 12];
    let exchange = async {
        s.write_all(req.as_bytes()).await?;
        s.read_exact(&mut head).await
    };
    exchange.await.map_err(|e| format!("{url}: {e}"))?;
    // "HTTP/1.x 2xx"
    if !(head.starts_with(b"HTTP/1.") && head[8] == b' ') {
        return Err(format!("{url}: not an HTTP answer"));
    }
    match head[9] {
        b'2' => Ok(()),
        _ => Err(format!(
            "{url} answered {}",
            String::from_utf8_lossy(&head[9..12])
        )),
    }
}
