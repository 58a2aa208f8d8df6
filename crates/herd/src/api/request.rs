//! What a control request asks, from its method, path, query and `Accept`
//! header alone: no engine, no I/O. The server acts on a [`Call`]; anything
//! that is not one gets the [`Refusal`] to send back.
//!
//! Kept free of the rest of the crate (only `hyper`'s types and `herd_config`)
//! so that the fuzzer in `fuzz/` compiles this file as it is.

use std::time::Duration;

use hyper::{Method, StatusCode};

/// How long a request that waits (start, stop, restart, reload) waits by
/// default before answering 504; the action goes on either way.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq)]
pub enum Call<'a> {
    List,
    Show(&'a str),
    Signal {
        name: &'a str,
        signal: i32,
        all: bool,
    },
    Act {
        name: &'a str,
        action: Action,
        wait: Duration,
    },
    Events {
        sse: bool,
    },
    Logs {
        name: &'a str,
        n: Option<usize>,
        follow: bool,
    },
    Reload {
        wait: Duration,
    },
    Shutdown,
    Report,
    Plan,
    Unclaimed,
    /// `GET /v1/shutdown`.
    ShutdownProgress,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
    /// With `405`: the method the path takes (the `Allow` header).
    pub allow: Option<&'static str>,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
        allow: None,
    }
}

/// The method a known path takes, if the path is one.
fn allowed(segs: &[&str]) -> Option<&'static str> {
    match segs {
        ["v1", "services"] | ["v1", "services", _] | ["v1", "services", _, "logs"] => Some("GET"),
        ["v1", "services", _, "signal" | "start" | "stop" | "restart"] => Some("POST"),
        ["v1", "events" | "report" | "plan" | "unclaimed"] => Some("GET"),
        // GET for its progress, POST to begin it.
        ["v1", "shutdown"] => Some("GET, POST"),
        ["v1", "reload"] => Some("POST"),
        _ => None,
    }
}

/// The call `method` on `path?query` makes.
pub fn parse<'a>(
    method: &Method,
    path: &'a str,
    query: &'a str,
    accept: Option<&str>,
) -> Result<Call<'a>, Refusal> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Ok(match (method, segs.as_slice()) {
        (&Method::GET, ["v1", "services"]) => Call::List,
        (&Method::GET, ["v1", "services", name]) => Call::Show(name),
        (&Method::POST, ["v1", "services", name, "signal"]) => {
            let sig = param(query, "signal").ok_or_else(|| {
                refuse(StatusCode::BAD_REQUEST, "signal: missing (?signal=SIGHUP)")
            })?;
            let sig = herd_config::units::Signal::parse(sig)
                .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("signal: {e}")))?;
            Call::Signal {
                name,
                signal: sig.0,
                all: param(query, "all") == Some("true"),
            }
        }
        (&Method::POST, ["v1", "services", name, action]) => {
            let action = match *action {
                "start" => Action::Start,
                "stop" => Action::Stop,
                "restart" => Action::Restart,
                _ => {
                    return Err(refuse(
                        StatusCode::NOT_FOUND,
                        format!("unknown action {action:?}: start, stop or restart"),
                    ));
                }
            };
            Call::Act {
                name,
                action,
                wait: timeout(query)?,
            }
        }
        (&Method::GET, ["v1", "events"]) => Call::Events {
            sse: accept.is_some_and(|v| v.contains("text/event-stream")),
        },
        (&Method::GET, ["v1", "services", name, "logs"]) => Call::Logs {
            name,
            n: match param(query, "n").map(str::parse::<usize>) {
                None => None,
                Some(Ok(n)) => Some(n),
                Some(Err(_)) => {
                    return Err(refuse(StatusCode::BAD_REQUEST, "n: not a number of lines"));
                }
            },
            follow: param(query, "follow") == Some("true"),
        },
        (&Method::POST, ["v1", "reload"]) => Call::Reload {
            wait: timeout(query)?,
        },
        (&Method::POST, ["v1", "shutdown"]) => Call::Shutdown,
        (&Method::GET, ["v1", "report"]) => Call::Report,
        (&Method::GET, ["v1", "plan"]) => Call::Plan,
        (&Method::GET, ["v1", "unclaimed"]) => Call::Unclaimed,
        (&Method::GET, ["v1", "shutdown"]) => Call::ShutdownProgress,
        (_, ["v1", ..]) => {
            return Err(match allowed(&segs) {
                Some(allow) => Refusal {
                    allow: Some(allow),
                    ..refuse(
                        StatusCode::METHOD_NOT_ALLOWED,
                        format!("{path} takes {allow}, not {method}"),
                    )
                },
                None => refuse(StatusCode::NOT_FOUND, format!("no route {method} {path}")),
            });
        }
        _ => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("no route {path}; the API is under /v1/"),
            ));
        }
    })
}

/// The value of `key` in a query string (values are plain words; no decoding).
fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// `timeout=10s` from a query string; the default otherwise.
fn timeout(query: &str) -> Result<Duration, Refusal> {
    match param(query, "timeout") {
        Some(v) => herd_config::units::parse_duration(v)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("timeout: {e}"))),
        None => Ok(DEFAULT_WAIT),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &'static str, query: &'static str) -> Result<Call<'static>, Refusal> {
        parse(&Method::GET, path, query, None)
    }

    fn post(path: &'static str, query: &'static str) -> Result<Call<'static>, Refusal> {
        parse(&Method::POST, path, query, None)
    }

    #[test]
    fn routes() {
        assert_eq!(get("/v1/services/", ""), Ok(Call::List));
        assert_eq!(get("/v1/services/db", ""), Ok(Call::Show("db")));
        assert_eq!(
            post("/v1/services/db/signal", "signal=HUP&all=true"),
            Ok(Call::Signal {
                name: "db",
                signal: libc::SIGHUP,
                all: true
            })
        );
        assert_eq!(
            post("/v1/services/db/restart", "timeout=2s"),
            Ok(Call::Act {
                name: "db",
                action: Action::Restart,
                wait: Duration::from_secs(2)
            })
        );
        assert_eq!(
            get("/v1/services/db/logs", "n=5&follow=true"),
            Ok(Call::Logs {
                name: "db",
                n: Some(5),
                follow: true
            })
        );
        assert_eq!(
            parse(&Method::GET, "/v1/events", "", Some("text/event-stream")),
            Ok(Call::Events { sse: true })
        );
        assert_eq!(
            post("/v1/reload", ""),
            Ok(Call::Reload { wait: DEFAULT_WAIT })
        );
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let status = |r: Result<Call, Refusal>| r.unwrap_err().status;
        assert_eq!(
            status(post("/v1/services/db/signal", "")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(post("/v1/services/db/signal", "signal=SIGNOPE")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(post("/v1/services/db/dance", "")),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(post("/v1/services/db/stop", "timeout=soon")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(get("/v1/services/db/logs", "n=-1")),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(status(get("/v2/anything", "")), StatusCode::NOT_FOUND);
        assert_eq!(status(post("/v1/nothing", "")), StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_known_path_with_the_wrong_method_is_405_with_allow() {
        for (method, path, allow) in [
            (Method::POST, "/v1/services", "GET"),
            (Method::DELETE, "/v1/services/db", "GET"),
            (Method::GET, "/v1/services/db/stop", "POST"),
            (Method::DELETE, "/v1/shutdown", "GET, POST"),
            (Method::PUT, "/v1/events", "GET"),
        ] {
            let r = parse(&method, path, "", None).unwrap_err();
            assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_eq!(r.allow, Some(allow), "{method} {path}");
            assert_eq!(r.message, format!("{path} takes {allow}, not {method}"));
        }
    }
}
