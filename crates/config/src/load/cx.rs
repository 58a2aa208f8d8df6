//! Reading one TOML value as the type a key wants: each reader reports a value of
//! the wrong shape as a diagnostic at its span, with the dotted key, and returns
//! `None` so the walk goes on.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::{Cx, Loc, Val, closest, get, join};
use crate::units::{self, Signal};

impl Cx<'_> {
    pub(super) fn err(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.diags.push(self.src.diag(span, key, message));
    }

    pub(super) fn loc(&self, span: Range<usize>) -> Loc {
        Loc {
            file: self.src.path.clone(),
            position: self.src.position(span.start),
        }
    }

    pub(super) fn unknown(&mut self, span: Range<usize>, prefix: &str, key: &str, known: &[&str]) {
        let full = join(prefix, key);
        let hint = match closest(key, known) {
            Some(k) => format!(" (did you mean \"{k}\"?)"),
            None => format!(" (expected one of: {})", known.join(", ")),
        };
        self.err(span, &full, format!("unknown key{hint}"));
    }

    /// Reports every key of `t` that is not in `known`.
    pub(super) fn keys(&mut self, t: &DeTable<'_>, prefix: &str, known: &[&str]) {
        for (k, _) in t.iter() {
            let key = k.get_ref().as_ref();
            if !known.contains(&key) {
                self.unknown(k.span(), prefix, key, known);
            }
        }
    }

    /// Reads `t.name` with `read` when present.
    pub(super) fn field<T>(
        &mut self,
        t: &DeTable<'_>,
        prefix: &str,
        name: &str,
        read: impl FnOnce(&mut Self, &Val<'_>, &str) -> Option<T>,
    ) -> Option<T> {
        let v = get(t, name)?;
        read(self, v, &join(prefix, name))
    }

    pub(super) fn mismatch(&mut self, v: &Val<'_>, key: &str, expected: &str) {
        let found = match v.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.err(v.span(), key, format!("expected {expected}, found {found}"));
    }

    pub(super) fn table<'t, 'i>(&mut self, v: &'t Val<'i>, key: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.mismatch(v, key, "a table");
                None
            }
        }
    }

    pub(super) fn string(&mut self, v: &Val<'_>, key: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.mismatch(v, key, "a string");
                None
            }
        }
    }

    /// A non-empty string.
    pub(super) fn name(&mut self, v: &Val<'_>, key: &str) -> Option<String> {
        let s = self.string(v, key)?;
        if s.is_empty() {
            self.err(v.span(), key, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub(super) fn path(&mut self, v: &Val<'_>, key: &str) -> Option<PathBuf> {
        self.name(v, key).map(PathBuf::from)
    }

    pub(super) fn boolean(&mut self, v: &Val<'_>, key: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.mismatch(v, key, "a boolean");
                None
            }
        }
    }

    pub(super) fn integer(&mut self, v: &Val<'_>, key: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => {
                let n = i64::from_str_radix(i.as_str(), i.radix()).ok();
                if n.is_none() {
                    self.err(v.span(), key, "integer out of range");
                }
                n
            }
            _ => {
                self.mismatch(v, key, "an integer");
                None
            }
        }
    }

    pub(super) fn uint(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        let n = self.integer(v, key)?;
        u64::try_from(n).ok().or_else(|| {
            self.err(v.span(), key, "must not be negative");
            None
        })
    }

    /// A whole number of at least 1.
    pub(super) fn count(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        match self.uint(v, key)? {
            0 => {
                self.err(v.span(), key, "must be at least 1");
                None
            }
            n => Some(n),
        }
    }

    /// Runs a text parser on a string value, reporting its message.
    pub(super) fn parsed<T>(
        &mut self,
        v: &Val<'_>,
        key: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let DeValue::String(s) = v.get_ref() else {
            self.mismatch(v, key, expected);
            return None;
        };
        parse(s).map_err(|e| self.err(v.span(), key, e)).ok()
    }

    pub(super) fn duration(&mut self, v: &Val<'_>, key: &str) -> Option<Duration> {
        self.parsed(
            v,
            key,
            "a duration string such as \"10s\"",
            units::parse_duration,
        )
    }

    pub(super) fn positive_duration(&mut self, v: &Val<'_>, key: &str) -> Option<Duration> {
        let d = self.duration(v, key)?;
        if d.is_zero() {
            self.err(v.span(), key, "must be above zero");
            return None;
        }
        Some(d)
    }

    /// A size as text with a unit, or a plain integer of bytes.
    pub(super) fn size(&mut self, v: &Val<'_>, key: &str) -> Option<u64> {
        if let DeValue::Integer(_) = v.get_ref() {
            return self.uint(v, key);
        }
        self.parsed(v, key, "a size such as \"512M\"", units::parse_size)
    }

    pub(super) fn signal(&mut self, v: &Val<'_>, key: &str) -> Option<Signal> {
        if let DeValue::Integer(_) = v.get_ref() {
            let n = self.integer(v, key)?;
            return Signal::from_number(n)
                .map_err(|e| self.err(v.span(), key, e))
                .ok();
        }
        self.parsed(
            v,
            key,
            "a signal name such as \"SIGTERM\" or a number",
            Signal::parse,
        )
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        v: &Val<'_>,
        key: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let s = self.string(v, key)?;
        if let Some((_, t)) = choices.iter().find(|(c, _)| *c == s) {
            return Some(*t);
        }
        let names: Vec<&str> = choices.iter().map(|(c, _)| *c).collect();
        self.err(
            v.span(),
            key,
            format!(
                "unknown value \"{s}\" (expected one of: {})",
                names.join(", ")
            ),
        );
        None
    }

    /// An array of strings, each with its span.
    pub(super) fn strings(
        &mut self,
        v: &Val<'_>,
        key: &str,
    ) -> Option<Vec<(String, Range<usize>)>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.mismatch(v, key, "an array of strings");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                _ => {
                    self.mismatch(item, key, "a string");
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// A command line: a non-empty array of strings whose program is not empty.
    pub(super) fn argv(&mut self, v: &Val<'_>, key: &str) -> Option<Vec<String>> {
        let list = self.strings(v, key)?;
        match list.first() {
            None => {
                self.err(v.span(), key, "empty command");
                None
            }
            Some((prog, span)) if prog.is_empty() => {
                self.err(span.clone(), key, "the program name is empty");
                None
            }
            Some(_) => Some(list.into_iter().map(|(s, _)| s).collect()),
        }
    }
}
