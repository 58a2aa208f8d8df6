//! herder's own lines, kept apart from the services' output: one line, one
//! `write(2)` to stderr, prefixed `herd: `.
//!
//! # Caveats
//!
//! `eprintln!` writes the prefix, the message and the newline separately to the
//! unbuffered stderr (three system calls a line), and another thread's line could
//! land between them; [`note`] formats the whole line first. A line longer than a
//! pipe's atomic write size (4 KiB) may still interleave with another writer's.

use std::io::Write;

/// Writes `herd: MSG` as one line to stderr; a closed stderr is not an error.
pub fn note(msg: &str) {
    let line = format!("herd: {msg}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
