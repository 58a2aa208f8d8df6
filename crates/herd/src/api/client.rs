//! The client side of the control socket, for the commands that talk to a running
//! herder.

use std::path::Path;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

/// Why a request got no answer from herder.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no herder is running at {0} ({1})")]
    NotRunning(String, String),
    #[error("talking to herder at {0}: {1}")]
    Io(String, String),
    #[error("cannot ask for {0}: {1}")]
    Invalid(String, String),
}

/// One request; the status and the body of the answer.
pub async fn request(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    let (status, body) = open(socket, method, path).await?;
    let body = body
        .collect()
        .await
        .map_err(|e| ClientError::Io(socket.display().to_string(), e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

/// Reads a streamed answer chunk by chunk until it ends or `each` says stop
/// (returns false). Whether it ended is the answer.
pub async fn read_stream(
    socket: &Path,
    mut body: Incoming,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<bool, ClientError> {
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ClientError::Io(socket.display().to_string(), e.to_string()))?;
        if let Some(data) = frame.data_ref()
            && !each(data)
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Sends a request; the status and the body still to be read.
pub async fn open(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Incoming), ClientError> {
    let at = socket.display().to_string();
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound | K::ConnectionRefused => {
                ClientError::NotRunning(at.clone(), e.to_string())
            }
            _ => ClientError::Io(at.clone(), e.to_string()),
        }
    })?;
    let io_err = |e: hyper::Error| ClientError::Io(at.clone(), e.to_string());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io_err)?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "herd")
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Invalid(path.to_string(), e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(io_err)?;
    Ok((resp.status(), resp.into_body()))
}

/// The rest of an answer's body (empty if it breaks off), for its error message.
pub async fn rest(body: Incoming) -> Bytes {
    body.collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default()
}

/// The `error` or `message` field of a JSON answer, or the body as text.
pub fn message(body: &[u8]) -> String {
    herd_api::answer::text_of(body)
}
