//! The control socket: HTTP/1.1 + JSON on a Unix socket, served by `herd up`.
//!
//! # How it works
//!
//! The socket is created mode 0600 (0660 with `supervisor.socket_group`), so the
//! kernel keeps most strangers out; every connection is then checked with
//! `SO_PEERCRED`: the same uid as herder, root, or a member of the socket group may
//! talk; anyone else gets a `403` to whatever it asks, and the connection is closed. Each connection is served by hyper on its own task; actions go to the
//! engine through its [`Handle`] and answer once their effect has happened (or time
//! out with `504`, the action going on). Request bodies are not used; any body over
//! 64 KiB is refused.
//!
//! Routes (`docs/api.md`):
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/v1/services` | every service's status |
//! | GET | `/v1/services/NAME` | one service |
//! | POST | `/v1/services/NAME/start`, `/stop`, `/restart` | `{"message"}` once done; `?timeout=10s` |
//! | POST | `/v1/services/NAME/signal?signal=SIGHUP[&all=true]` | the main process, or every process |
//! | GET | `/v1/services/NAME/logs?n=100[&follow=true]` | the log's last lines, then what follows |
//! | GET | `/v1/events` | every state change, one JSON object a line (SSE with `Accept: text/event-stream`) |
//! | POST | `/v1/reload` | the new file applied by difference; answers once done |
//! | POST | `/v1/shutdown` | `202`, the shutdown has begun |
//! | GET | `/v1/report` | the last shutdown report |
//! | GET | `/v1/plan` | start and stop waves, deadlines |
//! | GET | `/v1/unclaimed` | processes re-parented to herder that no service claims |
//!
//! Streams (events, followed logs) end when herder does: once the engine has
//! finished, [`drain`] ends them and lets the connections finish writing, within a
//! bound, so a `herd down --wait` hears the last event.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::watch;

use herd_api::{
    Change, ErrorAnswer, Message, Overview, ReloadAnswer, ReloadResult, ShutdownAnswer,
};
use herd_core::engine::{ControlError, Handle};
use herd_core::log::note;

use super::request::{self, Action, Call};

/// No route takes a body; one larger than this is refused, not read.
const MAX_BODY: usize = 64 << 10;
/// A client that has not sent a whole request head by then is dropped, so a
/// half-sent request cannot hold a connection (and its task) forever.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may use the socket besides root.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub uid: u32,
    pub gid: Option<u32>,
}

impl Access {
    /// Whether a peer with these credentials may talk. Supplementary groups are
    /// read from /proc/PID/status (the peer is connected, so its pid is live).
    fn allows(&self, uid: u32, gid: u32, pid: i32) -> bool {
        if uid == 0 || uid == self.uid {
            return true;
        }
        let Some(group) = self.gid else { return false };
        gid == group || supplementary(pid).contains(&group)
    }
}

fn supplementary(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// What the routes read besides the engine.
pub struct Ctx {
    pub handle: Handle,
    pub state_dir: PathBuf,
    /// Turns true once the engine has finished: streams end, connections close.
    closing: watch::Sender<bool>,
    /// Connections being served.
    open: watch::Sender<usize>,
    /// The most served at once (`supervisor.max_connections`).
    max_open: usize,
    /// The most open at once since memory was last given back.
    peak: std::sync::atomic::AtomicUsize,
    /// Bursts of connections so far (see [`after_close`]).
    bursts: std::sync::atomic::AtomicU64,
    /// Connections that have not sent a request yet, oldest first: at the cap,
    /// the oldest of them makes room for a new one.
    silent: std::sync::Mutex<std::collections::VecDeque<Silent>>,
    next_id: std::sync::atomic::AtomicU64,
    /// The last service list sent, as JSON, with the snapshot it was made from:
    /// requests answered from one snapshot are serialised once.
    services_json: std::sync::Mutex<Option<(Arc<Overview>, Bytes)>>,
}

impl Ctx {
    pub fn new(handle: Handle, state_dir: PathBuf, max_open: u32) -> Ctx {
        Ctx {
            handle,
            state_dir,
            closing: watch::Sender::new(false),
            open: watch::Sender::new(0),
            max_open: max_open as usize,
            peak: std::sync::atomic::AtomicUsize::new(0),
            bursts: std::sync::atomic::AtomicU64::new(0),
            silent: std::sync::Mutex::new(std::collections::VecDeque::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            services_json: std::sync::Mutex::new(None),
        }
    }
}

/// Ends the streams and waits, at most `limit`, for every connection to finish
/// writing its answer (a stream's last event included).
pub async fn drain(ctx: &Ctx, limit: Duration) {
    ctx.closing.send_replace(true);
    let mut open = ctx.open.subscribe();
    let _ = tokio::time::timeout(limit, open.wait_for(|n| *n == 0)).await;
}

/// Counts a connection while it lives.
struct Open(watch::Sender<usize>);

impl Open {
    fn new(ctx: &Ctx) -> Open {
        ctx.open.send_modify(|n| *n += 1);
        ctx.peak
            .fetch_max(*ctx.open.borrow(), std::sync::atomic::Ordering::Relaxed);
        Open(ctx.open.clone())
    }
}

/// A connection that has sent no request yet.
struct Silent {
    id: u64,
    since: tokio::time::Instant,
    /// Ends the connection.
    close: Arc<tokio::sync::Notify>,
}

/// How long a connection may stay silent before, at the cap, it is closed to
/// make room: a client in a burst sends its request well within it.
const SILENT_GRACE: Duration = Duration::from_millis(100);

/// What the cap allows now.
enum Room {
    /// A silent connection was closed: one more may be accepted.
    Made,
    /// The oldest silent connection may be closed at this time, unless a slot
    /// frees before.
    At(tokio::time::Instant),
    /// Every connection is busy with a request: a new one is answered 503.
    Busy,
}

impl Ctx {
    /// Registers a new connection as silent; the id to call [`Ctx::spoke`] with
    /// once it has sent something (or ended), and what closes it if it is evicted.
    fn silent(&self) -> (u64, Arc<tokio::sync::Notify>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let close = Arc::new(tokio::sync::Notify::new());
        let mut list = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        list.push_back(Silent {
            id,
            since: tokio::time::Instant::now(),
            close: close.clone(),
        });
        (id, close)
    }

    /// Connection `id` has sent something (or ended): it is no longer evictable.
    fn spoke(&self, id: u64) {
        let mut list = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = list.iter().position(|s| s.id == id) {
            list.remove(i);
        }
    }

    /// At the cap: closes the oldest connection that has sent nothing for
    /// [`SILENT_GRACE`], or says when it may be, or that every one is busy.
    fn make_room(&self) -> Room {
        let mut list = self.silent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(oldest) = list.front() else {
            return Room::Busy;
        };
        let at = oldest.since + SILENT_GRACE;
        if at > tokio::time::Instant::now() {
            return Room::At(at);
        }
        let s = list.pop_front().expect("looked at above");
        s.close.notify_one();
        Room::Made
    }
}

/// Connections open at once past which their end gives memory back.
const TRIM_AFTER: usize = 32;

/// How long after a burst its memory is given back: soon enough that a flood's
/// memory goes within seconds, late enough that a client asking in rounds (a
/// dashboard, `herd ps` in a loop, the benchmark) does not fault the pages of
/// its answers in again on each round.
const TRIM_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

/// The last connection of a burst has closed: what serving it took goes back to
/// the system (see [`herd_sys::memory`]) once no other burst has come for
/// [`TRIM_DELAY`].
fn after_close(ctx: &Arc<Ctx>) {
    use std::sync::atomic::Ordering;
    if *ctx.open.borrow() == 0 && ctx.peak.load(Ordering::Relaxed) >= TRIM_AFTER {
        ctx.peak.store(0, Ordering::Relaxed);
        let burst = ctx.bursts.fetch_add(1, Ordering::Relaxed) + 1;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRIM_DELAY).await;
            // A later burst gives back after itself.
            if ctx.bursts.load(Ordering::Relaxed) == burst && *ctx.open.borrow() == 0 {
                herd_sys::memory::trim();
            }
        });
    }
}

/// Answers `503` and closes at once: the connection is over the most served at
/// once. Written without waiting (a client that does not read misses it).
fn refuse_busy(stream: tokio::net::UnixStream, max: usize) {
    let body = serde_json::to_string(&ErrorAnswer {
        error: format!(
            "herder is serving {max} connections, the most it serves at once (supervisor.max_connections); try again"
        ),
    })
    .expect("plain data");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

/// Binds the socket at `path`: a stale file (nothing accepts on it) is replaced;
/// one something still listens on is refused, since another herder with a
/// different state directory may share a configured socket path. The mode is set
/// before anyone can be let in.
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            "another process is listening on it",
        ));
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        std::os::unix::fs::chown(path, None, Some(g))?;
    }
    Ok(listener)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, access: Access, ctx: Arc<Ctx>) {
    let mut errors = super::AcceptErrors::new("control socket");
    // Connections refused, and silent ones closed, at the cap since last said.
    let (mut refused, mut evicted) = (0u64, 0u64);
    loop {
        // At the cap, a connection that has been silent for a while makes room (a
        // flood of silent connections cannot keep a client out); a newer silent
        // one is given its grace, the next connection waiting in the kernel's
        // backlog meanwhile; if every connection is busy, the new one costs a
        // descriptor for an instant and is answered 503. Either way a flood
        // cannot take the descriptors a restarting service needs.
        let full = *ctx.open.borrow() >= ctx.max_open;
        let mut busy = false;
        if full {
            match ctx.make_room() {
                Room::Made => {
                    if evicted == 0 {
                        note(&format!(
                            "control socket: {} connections open, the most served at once (supervisor.max_connections); closing silent ones to make room",
                            ctx.max_open
                        ));
                    }
                    evicted += 1;
                }
                Room::At(t) => {
                    let mut open = ctx.open.subscribe();
                    tokio::select! {
                        _ = open.changed() => {}
                        _ = tokio::time::sleep_until(t) => {}
                    }
                    continue;
                }
                Room::Busy => busy = true,
            }
        }
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
        if busy {
            if refused == 0 {
                note(&format!(
                    "control socket: {} connections open and busy, the most served at once (supervisor.max_connections); answering 503 to more",
                    ctx.max_open
                ));
            }
            refused += 1;
            refuse_busy(stream, ctx.max_open);
            continue;
        }
        if !full && refused + evicted > 0 {
            note(&format!(
                "control socket: below the cap again; {evicted} silent connection(s) were closed, {refused} answered 503"
            ));
            (refused, evicted) = (0, 0);
        }
        // Counted from here, refused or not.
        let open = Open::new(&ctx);
        let opened = ctx.clone();
        let cred = rustix::net::sockopt::socket_peercred(&stream);
        let allowed = cred.as_ref().is_ok_and(|c| {
            access.allows(c.uid.as_raw(), c.gid.as_raw(), c.pid.as_raw_nonzero().get())
        });
        // `uid 1000 (pid 4242)`, for herder's lines and a shutdown's trigger.
        let who = cred.map_or("unknown peer".to_string(), |c| {
            format!(
                "uid {} (pid {})",
                c.uid.as_raw(),
                c.pid.as_raw_nonzero().get()
            )
        });
        if !allowed {
            note(&format!("control socket: refused {who}: not allowed"));
            let msg = format!(
                "{who} may not use this socket: only uid {}, root{} may",
                access.uid,
                access
                    .gid
                    .map_or(String::new(), |g| format!(" and group {g}"))
            );
            // The request is read (so the client hears the answer) and answered
            // 403 whatever it was; nothing reaches the engine.
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let answer = error(StatusCode::FORBIDDEN, msg.clone());
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = http1()
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                drop(open);
                after_close(&opened);
            });
            continue;
        }
        let ctx = ctx.clone();
        let peer: Arc<str> = who.into();
        let mut closing = ctx.closing.subscribe();
        let (id, evicted) = ctx.silent();
        tokio::spawn(async move {
            // Silent until its first bytes arrive. Picked to make room, it is
            // closed only if it has still sent nothing: a client whose request
            // waits unread (this task not run yet) is served all the same.
            let spoke = loop {
                tokio::select! {
                    biased;
                    r = stream.readable() => {
                        if r.is_err() {
                            break false;
                        }
                        // Readiness may be spurious: a peek tells (EOF counts as
                        // having spoken: hyper ends it).
                        let peek = stream.try_io(tokio::io::Interest::READABLE, || {
                            rustix::net::recv(&stream, &mut [0u8; 1], rustix::net::RecvFlags::PEEK)
                                .map_err(std::io::Error::from)
                        });
                        match peek {
                            Ok(_) => break true,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                            Err(_) => break false,
                        }
                    }
                    _ = evicted.notified() => break false,
                    _ = closing.wait_for(|c| *c) => break false,
                }
            };
            ctx.spoke(id);
            if !spoke {
                drop(open);
                after_close(&opened);
                return;
            }
            let service =
                hyper::service::service_fn(move |req| route(req, ctx.clone(), peer.clone()));
            // A client that sends garbage or goes away ends its own connection only.
            let conn = http1().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let finished = tokio::select! {
                _ = conn.as_mut() => true,
                _ = closing.wait_for(|c| *c) => false,
            };
            if !finished {
                // Idle connections close now; answers being written finish.
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
            drop(open);
            after_close(&opened);
        });
    }
}

/// Every connection, allowed or not, must send its request head in time.
pub(super) fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    b
}

type Answer = Response<BoxBody<Bytes, Infallible>>;

fn json(status: StatusCode, value: &impl serde::Serialize) -> Answer {
    let body = serde_json::to_vec(value).expect("plain data serialises");
    json_body(status, Bytes::from(body))
}

fn json_body(status: StatusCode, body: Bytes) -> Answer {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body).boxed())
        .expect("a valid response")
}

/// A streamed answer: what the task given the sender writes, as it writes it. The
/// connection closes after it, so the end of the stream is the end of the answer.
fn stream(
    content_type: &str,
    write: impl FnOnce(http_body_util::channel::Sender<Bytes>) -> tokio::task::JoinHandle<()>,
) -> Answer {
    let (tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(16);
    write(tx);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .header("connection", "close")
        .body(body.boxed())
        .expect("a valid response")
}

fn error(status: StatusCode, msg: impl Into<String>) -> Answer {
    json(status, &ErrorAnswer { error: msg.into() })
}

fn message(message: String) -> Answer {
    json(StatusCode::OK, &Message { message })
}

/// The one place an engine's refusal becomes an HTTP status.
pub fn status_of(e: &ControlError) -> StatusCode {
    match e {
        ControlError::UnknownService(_) => StatusCode::NOT_FOUND,
        ControlError::Gone => StatusCode::SERVICE_UNAVAILABLE,
        ControlError::InvalidConfig { .. } | ControlError::NoConfigFile => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        ControlError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        ControlError::ShuttingDown(_)
        | ControlError::AlreadyStopping(_)
        | ControlError::Stopping(_)
        | ControlError::NoProcess { .. }
        | ControlError::Signal(_)
        | ControlError::NotDone(_)
        | ControlError::ReloadBusy(_) => StatusCode::CONFLICT,
    }
}

/// An engine's refusal, answered.
fn refused(e: ControlError) -> Answer {
    error(status_of(&e), e.to_string())
}

/// Answers one request from `peer` (`uid 0 (pid 4242)`).
async fn route(
    req: Request<Incoming>,
    ctx: Arc<Ctx>,
    peer: Arc<str>,
) -> Result<Answer, Infallible> {
    let (parts, body) = req.into_parts();
    // Nothing takes a body; read (bounded) and drop it so the connection stays usable.
    if Limited::new(body, MAX_BODY).collect().await.is_err() {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies are limited to {MAX_BODY} bytes"),
        ));
    }
    let accept = parts.headers.get("accept").and_then(|v| v.to_str().ok());
    let call = match request::parse(
        &parts.method,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        accept,
    ) {
        Ok(call) => call,
        Err(refusal) => {
            let mut answer = error(refusal.status, refusal.message);
            if let Some(allow) = refusal.allow {
                answer.headers_mut().insert(
                    hyper::header::ALLOW,
                    hyper::header::HeaderValue::from_static(allow),
                );
            }
            return Ok(answer);
        }
    };
    let h = &ctx.handle;
    let answer = match call {
        Call::List => match h.overview().await {
            Ok(ov) => services_json(&ctx, ov),
            Err(e) => refused(e),
        },
        Call::Show(name) => match h.status().await {
            Ok(list) => match list.iter().find(|s| s.name == name) {
                Some(s) => json(StatusCode::OK, s),
                None => refused(ControlError::UnknownService(name.to_string())),
            },
            Err(e) => refused(e),
        },
        Call::Signal { name, signal, all } => match h.signal(name, signal, all).await {
            Ok(msg) => message(msg),
            Err(e) => refused(e),
        },
        Call::Act { name, action, wait } => {
            let run = async {
                match action {
                    Action::Start => h.start(name).await,
                    Action::Stop => h.stop(name).await,
                    Action::Restart => h.restart(name).await,
                }
            };
            match tokio::time::timeout(wait, run).await {
                Ok(Ok(msg)) => message(msg),
                Ok(Err(e)) => refused(e),
                Err(_) => refused(ControlError::Timeout {
                    what: name.to_string(),
                    after: wait,
                }),
            }
        }
        Call::Events { sse } => events(&ctx, sse),
        Call::Logs { name, n, follow } => logs(&ctx, name, n, follow).await,
        Call::Reload { wait } => reload(h, wait).await,
        Call::Shutdown => {
            h.shutdown(&format!("shutdown asked on the control socket by {peer}"));
            json(
                StatusCode::ACCEPTED,
                &ShutdownAnswer {
                    message: "shutting down".into(),
                    pid: std::process::id(),
                },
            )
        }
        Call::ShutdownProgress => match h.overview().await {
            Ok(ov) => match &ov.shutdown {
                Some(progress) => json(StatusCode::OK, progress),
                None => error(StatusCode::NOT_FOUND, "no shutdown under way"),
            },
            Err(e) => refused(e),
        },
        Call::Report => match herd_api::Report::load(&ctx.state_dir) {
            Ok(r) => json(StatusCode::OK, &r),
            Err(_) => error(StatusCode::NOT_FOUND, "no shutdown report yet"),
        },
        Call::Unclaimed => match h.unclaimed().await {
            Ok(unclaimed) => json(StatusCode::OK, &herd_api::Unclaimed { unclaimed }),
            Err(e) => refused(e),
        },
        Call::Plan => match h.config().await {
            Ok(c) => json(StatusCode::OK, &crate::cmd::plan::document(&c)),
            Err(e) => refused(e),
        },
    };
    Ok(answer)
}

/// `GET /v1/services`, serialised once per engine snapshot.
fn services_json(ctx: &Ctx, ov: Arc<Overview>) -> Answer {
    let mut last = ctx.services_json.lock().unwrap_or_else(|e| e.into_inner());
    let body = match &*last {
        Some((seen, body)) if Arc::ptr_eq(seen, &ov) => body.clone(),
        _ => {
            // Sized like the last one (about 200 bytes a service): a Vec grown
            // from empty would copy the list over and over as it doubles.
            let size = last.as_ref().map_or(4096, |(_, b)| b.len() + b.len() / 8);
            let mut buf = Vec::with_capacity(size);
            serde_json::to_writer(&mut buf, &ov.services).expect("plain data");
            let body = Bytes::from(buf);
            *last = Some((ov, body.clone()));
            body
        }
    };
    json_body(StatusCode::OK, body)
}

/// `/v1/events`: one JSON object a line (or a server-sent event each), until
/// herder finishes; the last is `finished`, with the shutdown report.
fn events(ctx: &Ctx, sse: bool) -> Answer {
    // Subscribed before the answer's head goes out: a client that has the head
    // hears every change after it.
    let mut rx = ctx.handle.subscribe();
    let mut closing = ctx.closing.subscribe();
    let frame = move |line: String| {
        Bytes::from(if sse {
            format!("data: {line}\n\n")
        } else {
            format!("{line}\n")
        })
    };
    stream(
        if sse {
            "text/event-stream"
        } else {
            "application/x-ndjson"
        },
        move |mut tx| {
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    // Events already published come before the end of the stream.
                    let got = tokio::select! {
                        biased;
                        got = rx.recv() => got,
                        _ = closing.wait_for(|c| *c) => return,
                    };
                    let (line, last) = match got {
                        Ok(change) => {
                            let last = matches!(*change, Change::Finished { .. });
                            (serde_json::to_string(&*change).expect("plain data"), last)
                        }
                        Err(RecvError::Lagged(missed)) => (
                            serde_json::to_string(&Change::Lagged { missed }).expect("plain data"),
                            false,
                        ),
                        Err(RecvError::Closed) => return,
                    };
                    if tx.send_data(frame(line)).await.is_err() || last {
                        return;
                    }
                }
            })
        },
    )
}

/// `/v1/services/NAME/logs`: the last `n` lines (all of the current file without
/// `n`), then with `follow` what is written after them.
async fn logs(ctx: &Ctx, name: &str, n: Option<usize>, follow: bool) -> Answer {
    let dir = ctx.state_dir.join("logs");
    let file = super::logs::path(&dir, name);
    let known = match ctx.handle.status().await {
        Ok(list) => list.iter().any(|s| s.name == name),
        Err(e) => return refused(e),
    };
    // A service removed by a reload still has its log.
    if !known && !file.exists() {
        return refused(ControlError::UnknownService(name.to_string()));
    }
    // Set before the tail is read, so no write in between is missed.
    let watch = if follow {
        match herd_sys::watch::FileWatch::new(&dir) {
            Ok(w) => Some(w),
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot watch {}: {e}", dir.display()),
                );
            }
        }
    } else {
        None
    };
    let (head, end) = match super::logs::tail(&file, n) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read {}: {e}", file.display()),
            );
        }
    };
    let Some(watch) = watch else {
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(head)).boxed())
            .expect("a valid response");
    };
    let closing = ctx.closing.subscribe();
    stream("text/plain; charset=utf-8", move |mut tx| {
        tokio::spawn(async move {
            if !head.is_empty() && tx.send_data(Bytes::from(head)).await.is_err() {
                return;
            }
            super::logs::follow(watch, file, end, tx, closing).await;
        })
    })
}

/// `/v1/reload`: the new file applied; answers once the services it starts are
/// up and those it removes are gone (or with why not), within `wait`.
async fn reload(h: &Handle, wait: Duration) -> Answer {
    let plan = match h.reload().await {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    type Wait = tokio::task::JoinHandle<Result<String, ControlError>>;
    let waits: Vec<(String, Wait)> = plan
        .starting()
        .map(|n| (n, false))
        .chain(plan.removed.iter().map(|n| (n, true)))
        .map(|(n, gone)| {
            let (h, name) = (h.clone(), n.clone());
            (
                n.clone(),
                tokio::spawn(async move { h.wait(&name, gone).await }),
            )
        })
        .collect();
    let deadline = tokio::time::Instant::now() + wait;
    let mut results = Vec::new();
    let mut failed = Vec::new();
    for (name, task) in waits {
        let r = match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(r)) => r.map_err(|e| e.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(ControlError::Timeout {
                what: name.clone(),
                after: wait,
            }
            .to_string()),
        };
        if let Err(e) = &r {
            failed.push(e.clone());
        }
        results.push(ReloadResult {
            service: name,
            ok: r.is_ok(),
            message: r.unwrap_or_else(|e| e),
        });
    }
    let summary = plan.summary();
    let answer = ReloadAnswer {
        message: format!("reloaded ({summary})"),
        error: (!failed.is_empty())
            .then(|| format!("reloaded ({summary}), but: {}", failed.join("; "))),
        plan,
        results,
    };
    let status = if answer.error.is_none() {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    json(status, &answer)
}
