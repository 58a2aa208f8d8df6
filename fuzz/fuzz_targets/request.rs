//! Control API requests: the first line of the input is "METHOD URI", the
//! second the Accept header; the URI goes through hyper's own parser, as a
//! request on the socket does, and then through herder's router.
#![no_main]

use hyper::{Method, Uri};
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/herd/src/api/request.rs"]
#[allow(dead_code)]
mod request;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(2, '\n');
    let first = lines.next().unwrap_or("");
    let accept = lines.next();
    let Some((method, uri)) = first.split_once(' ') else {
        return;
    };
    let (Ok(method), Ok(uri)) = (Method::from_bytes(method.as_bytes()), uri.parse::<Uri>()) else {
        return;
    };
    if let Err(refusal) = request::parse(&method, uri.path(), uri.query().unwrap_or(""), accept) {
        // Every refusal is an error status with something to read.
        assert!(refusal.status.is_client_error(), "{refusal:?}");
        assert!(!refusal.message.is_empty());
    }
});
