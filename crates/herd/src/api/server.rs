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
//! | POST | `/v1/shutdown` | `202`, the shutdown has begun |
//! | GET | `/v1/report` | the last shutdown report |
//! | GET | `/v1/plan` | start and stop waves, deadlines |

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

use herd_core::engine::{Handle, note};

/// How long an action is waited for unless `?timeout=` says otherwise.
const DEFAULT_WAIT: Duration = Duration::from_secs(60);
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
    /// `herd plan --json`'s document.
    pub plan: serde_json::Value,
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
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors, say: carry on, the next accept may work.
                note(&format!("control socket: accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let cred = rustix::net::sockopt::socket_peercred(&stream);
        let allowed = cred.as_ref().is_ok_and(|c| {
            access.allows(c.uid.as_raw(), c.gid.as_raw(), c.pid.as_raw_nonzero().get())
        });
        if !allowed {
            let who = cred.map_or("unknown peer".to_string(), |c| {
                format!(
                    "uid {} (pid {})",
                    c.uid.as_raw(),
                    c.pid.as_raw_nonzero().get()
                )
            });
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
            });
            continue;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| route(req, ctx.clone()));
            // A client that sends garbage or goes away ends its own connection only.
            let _ = http1()
                .serve_connection(TokioIo::new(stream), service)
                .await;
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

type Answer = Response<Full<Bytes>>;

fn json(status: StatusCode, value: &impl serde::Serialize) -> Answer {
    let body = serde_json::to_vec(value).expect("plain data serialises");
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

fn error(status: StatusCode, msg: impl Into<String>) -> Answer {
    json(status, &serde_json::json!({ "error": msg.into() }))
}

async fn route(req: Request<Incoming>, ctx: Arc<Ctx>) -> Result<Answer, Infallible> {
    let (parts, body) = req.into_parts();
    // Nothing takes a body; read (bounded) and drop it so the connection stays usable.
    if Limited::new(body, MAX_BODY).collect().await.is_err() {
        return Ok(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies are limited to {MAX_BODY} bytes"),
        ));
    }
    let path = parts.uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let query = parts.uri.query().unwrap_or("");
    let h = &ctx.handle;
    let answer = match (&parts.method, segs.as_slice()) {
        (&Method::GET, ["v1", "services"]) => match h.status().await {
            Ok(list) => json(StatusCode::OK, &list),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (&Method::GET, ["v1", "services", name]) => match h.status().await {
            Ok(list) => match list.iter().find(|s| s.name == *name) {
                Some(s) => json(StatusCode::OK, s),
                None => error(StatusCode::NOT_FOUND, format!("no service named {name}")),
            },
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
        },
        (&Method::POST, ["v1", "services", name, "signal"]) => {
            let Some(sig) = param(query, "signal") else {
                return Ok(error(
                    StatusCode::BAD_REQUEST,
                    "signal: missing (?signal=SIGHUP)",
                ));
            };
            let sig = match herd_config::units::Signal::parse(sig) {
                Ok(s) => s,
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, format!("signal: {e}"))),
            };
            let all = param(query, "all") == Some("true");
            match h.signal(name, sig.0, all).await {
                Ok(msg) => json(StatusCode::OK, &serde_json::json!({ "message": msg })),
                Err(e) if e.starts_with("no service named") => error(StatusCode::NOT_FOUND, e),
                Err(e) => error(StatusCode::CONFLICT, e),
            }
        }
        (&Method::POST, ["v1", "services", name, action]) => {
            let wait = match timeout(query) {
                Ok(w) => w,
                Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e)),
            };
            let name = name.to_string();
            let run = async {
                match *action {
                    "start" => Some(h.start(&name).await),
                    "stop" => Some(h.stop(&name).await),
                    "restart" => Some(h.restart(&name).await),
                    _ => None,
                }
            };
            match tokio::time::timeout(wait, run).await {
                Ok(Some(Ok(msg))) => json(StatusCode::OK, &serde_json::json!({ "message": msg })),
                Ok(Some(Err(e))) if e.starts_with("no service named") => {
                    error(StatusCode::NOT_FOUND, e)
                }
                Ok(Some(Err(e))) => error(StatusCode::CONFLICT, e),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    format!("unknown action {action:?}: start, stop or restart"),
                ),
                Err(_) => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "{name}: not done after {}; it goes on",
                        herd_config::units::format_duration(wait)
                    ),
                ),
            }
        }
        (&Method::POST, ["v1", "shutdown"]) => {
            h.shutdown("herd down");
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "message": "shutting down", "pid": std::process::id() }),
            )
        }
        (&Method::GET, ["v1", "report"]) => match herd_core::report::Report::load(&ctx.state_dir) {
            Ok(r) => json(StatusCode::OK, &r),
            Err(_) => error(StatusCode::NOT_FOUND, "no shutdown report yet"),
        },
        (&Method::GET, ["v1", "plan"]) => json(StatusCode::OK, &ctx.plan),
        (_, ["v1", ..]) => error(
            StatusCode::NOT_FOUND,
            format!("no route {} {}", parts.method, parts.uri.path()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no route {}; the API is under /v1/", parts.uri.path()),
        ),
    };
    Ok(answer)
}

/// The value of `key` in a query string (values are plain words; no decoding).
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// `timeout=10s` from a query string; the default otherwise.
fn timeout(query: &str) -> Result<Duration, String> {
    match param(query, "timeout") {
        Some(v) => herd_config::units::parse_duration(v).map_err(|e| format!("timeout: {e}")),
        None => Ok(DEFAULT_WAIT),
    }
}
