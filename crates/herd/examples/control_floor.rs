//! The floor under `bench/`'s control-latency figures: a server of the same shape
//! as herder's control socket, doing nothing else.
//!
//! ```text
//! cargo run --release -p herd --example control_floor -- SOCKET BYTES
//! ```
//!
//! It listens on the Unix socket SOCKET with tokio's current-thread runtime and
//! hyper's HTTP/1, built as `herd up` builds its own (the same header timeout), and
//! answers every request at once with a fixed JSON body of BYTES bytes: no engine,
//! no cgroup read, no serialisation, no credential check. `bench/harness.py` runs
//! it beside herder with the size of herder's own answer, so `control 100x` can be
//! read against what the machine gives any server of this shape that day: the
//! difference is what herder's answer costs (the engine's snapshot of every
//! service, read from their cgroups after the request was made).
//!
//! Says `listening` on stdout once the socket accepts; runs until killed.

use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(Ok(size))) = (args.next(), args.next().map(|s| s.parse::<usize>()))
    else {
        eprintln!("usage: control_floor SOCKET BYTES");
        std::process::exit(2);
    };
    // A JSON array of the asked size, so a client can parse what it gets.
    let mut body = vec![b' '; size.max(2)];
    body[0] = b'[';
    *body.last_mut().expect("at least two bytes") = b']';
    let body = Bytes::from(body);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).unwrap_or_else(|e| {
            eprintln!("control_floor: cannot listen on {path}: {e}");
            std::process::exit(1);
        });
        println!("listening");
        loop {
            // A failed accept (out of descriptors) would make the figures
            // meaningless: stop rather than spin.
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("control_floor: accept: {e}");
                    std::process::exit(1);
                }
            };
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let answer = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .expect("a valid response");
                    async move { Ok::<_, Infallible>(answer) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
