//! Diagnostics: one error, where it is, and which key it is about.
//!
//! Every problem found while loading a configuration becomes a [`Diagnostic`];
//! loading never stops at the first one, so an operator fixes a file in one pass.
//! The rendered form is one line, compiler style, so it can be grepped and jumped to:
//!
//! ```text
//! herd.toml:7:10: services.api.stop.signal: unknown signal "SIGFOO"
//! ```

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A position in a configuration file, 1-based; the column counts characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One problem in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as it was named (relative paths stay relative).
    pub file: PathBuf,
    /// Where in the file; `None` when the problem is the file itself (unreadable).
    pub position: Option<Position>,
    /// The dotted key the problem is about (`services.api.stop.signal`); empty for
    /// syntax errors, which are about the text rather than a key.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the problems found in a configuration, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// Orders by file (in the order files were read) and position, so output reads
    /// top to bottom however the checks happened to run.
    pub(crate) fn sort(&mut self, file_order: &[PathBuf]) {
        let rank = |p: &Path| file_order.iter().position(|f| f == p).unwrap_or(usize::MAX);
        self.0.sort_by_key(|d| (rank(&d.file), d.position));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The text of one file, kept to turn byte spans into line and column.
pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(path: PathBuf, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            path,
            text,
            line_starts,
        }
    }

    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        // A span can in principle start inside a multi-byte character; count the
        // characters of the valid prefix only.
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Position {
            line: line + 1,
            column,
        }
    }

    pub fn diag(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.path.clone(),
            position: Some(self.position(span.start)),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let s = Source::new("f".into(), "ab\né = 1\n\nx".into());
        assert_eq!(s.position(0), Position { line: 1, column: 1 });
        assert_eq!(s.position(1), Position { line: 1, column: 2 });
        assert_eq!(s.position(3), Position { line: 2, column: 1 });
        // "é" is two bytes: the '=' after "é " is the third character.
        assert_eq!(s.position(6), Position { line: 2, column: 3 });
        assert_eq!(s.position(10), Position { line: 3, column: 1 });
        assert_eq!(s.position(11), Position { line: 4, column: 1 });
        assert_eq!(s.position(999), Position { line: 4, column: 2 });
    }

    #[test]
    fn renders_one_line() {
        let d = Diagnostic {
            file: "conf.d/a.toml".into(),
            position: Some(Position { line: 3, column: 7 }),
            key: "services.a.kind".into(),
            message: "unknown kind \"daemon\"".into(),
        };
        assert_eq!(
            d.to_string(),
            "conf.d/a.toml:3:7: services.a.kind: unknown kind \"daemon\""
        );
        let d = Diagnostic {
            position: None,
            key: String::new(),
            message: "cannot read: No such file".into(),
            ..d
        };
        assert_eq!(d.to_string(), "conf.d/a.toml: cannot read: No such file");
    }
}
