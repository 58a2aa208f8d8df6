//! Reading configuration files and expanding `include` patterns, both bounded
//! against hostile input.
//!
//! # How it works
//!
//! - A file is opened without blocking (a FIFO would otherwise wait for a
//!   writer) and checked with `fstat` before a byte is read: anything but a
//!   regular file (`/dev/zero`, a FIFO, a directory; a symlink counts as what it
//!   points to) is refused, and so is one over [`MAX_FILE`]; the read itself stops
//!   past that size, should the file grow meanwhile.
//! - An `include` pattern is walked by hand, one path component at a time
//!   (`glob`'s patterns within a component, `**` for any number of directories),
//!   counting every directory entry it looks at: past [`MAX_WALK`] the walk gives
//!   up with an error that names the pattern, so `/**/*.toml` fails in well under
//!   a second instead of walking the whole file system. `**` does not follow
//!   symbolic links to directories (no loop can form).

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest configuration file read: far above any real one.
pub const MAX_FILE: u64 = 16 << 20;
/// Directory entries an `include` pattern may look at.
pub const MAX_WALK: usize = 100_000;

/// The text of the configuration file at `path`, or why it is not read.
pub fn read(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| super::io_reason(&e))?;
    let meta = file.metadata().map_err(|e| super::io_reason(&e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a file"
        };
        return Err(format!("{what}, not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(too_big(meta.len()));
    }
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| super::io_reason(&e))?;
    if text.len() as u64 > MAX_FILE {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

fn too_big(size: u64) -> String {
    format!(
        "{size} bytes; a configuration file may have {} MiB at most",
        MAX_FILE >> 20
    )
}

/// The regular files matching `pattern`, relative to `base` unless absolute,
/// in order; an error names the pattern.
pub fn expand(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, String> {
    glob::Pattern::new(pattern).map_err(|e| format!("invalid pattern \"{pattern}\": {}", e.msg))?;
    let (root, rest) = match pattern.strip_prefix('/') {
        Some(rest) => (PathBuf::from("/"), rest),
        None => (base.to_path_buf(), pattern),
    };
    let parts: Vec<&str> = rest
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let mut walk = Walk {
        seen: 0,
        found: Vec::new(),
    };
    if walk.step(&root, &parts).is_err() {
        return Err(format!(
            "\"{pattern}\" looks at more than {MAX_WALK} directory entries; name the files more narrowly"
        ));
    }
    let mut found = walk.found;
    found.sort();
    found.dedup();
    // Relative patterns give paths relative to the current directory, as before.
    if root == Path::new(".") {
        found = found
            .into_iter()
            .map(|p| p.strip_prefix(".").map(Path::to_path_buf).unwrap_or(p))
            .collect();
    }
    Ok(found)
}

/// A walk under way: entries looked at so far, files found.
struct Walk {
    seen: usize,
    found: Vec<PathBuf>,
}

/// The walk looked at more than [`MAX_WALK`] entries.
struct TooMany;

impl Walk {
    /// Matches `parts` below `dir`.
    fn step(&mut self, dir: &Path, parts: &[&str]) -> Result<(), TooMany> {
        let Some((&part, rest)) = parts.split_first() else {
            if dir.is_file() {
                self.found.push(dir.to_path_buf());
            }
            return Ok(());
        };
        if part == "**" {
            // None of the directories, or one more and `**` again.
            self.step(dir, rest)?;
            for (path, is_dir) in self.entries(dir)? {
                if is_dir {
                    self.step(&path, parts)?;
                }
            }
            return Ok(());
        }
        if !part.contains(['*', '?', '[']) {
            return self.step(&dir.join(part), rest);
        }
        let want = glob::Pattern::new(part).expect("checked with the whole pattern");
        for (path, _) in self.entries(dir)? {
            let name = path.file_name().map(|n| n.to_string_lossy());
            if name.is_some_and(|n| want.matches(&n)) {
                self.step(&path, rest)?;
            }
        }
        Ok(())
    }

    /// The entries of `dir` (none if it cannot be read), each with whether it is a
    /// directory itself (not a link to one); counted against the bound.
    fn entries(&mut self, dir: &Path) -> Result<Vec<(PathBuf, bool)>, TooMany> {
        let Ok(read) = std::fs::read_dir(dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for e in read.flatten() {
            self.seen += 1;
            if self.seen > MAX_WALK {
                return Err(TooMany);
            }
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            out.push((e.path(), is_dir));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_a_fifo_and_a_directory_are_refused_at_once() {
        assert_eq!(
            read(Path::new("/dev/zero")).unwrap_err(),
            "a character device, not a regular file"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read(dir.path()).unwrap_err(),
            "a directory, not a regular file"
        );
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        // Opened without blocking, though nothing writes to it.
        assert_eq!(read(&fifo).unwrap_err(), "a FIFO, not a regular file");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert_eq!(
            read(&link).unwrap_err(),
            "a character device, not a regular file"
        );
    }

    #[test]
    fn a_file_over_the_cap_is_refused_with_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_FILE + 1).unwrap();
        assert_eq!(
            read(&big).unwrap_err(),
            "16777217 bytes; a configuration file may have 16 MiB at most"
        );
    }

    #[test]
    fn patterns_match_as_globs_do() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "conf.d/a.toml",
            "conf.d/b.toml",
            "conf.d/c.txt",
            "deep/x/y/z.toml",
        ] {
            std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
            std::fs::write(d.join(f), "").unwrap();
        }
        std::fs::create_dir(d.join("conf.d/sub.toml")).unwrap();
        let names = |p: &str| -> Vec<String> {
            expand(d, p)
                .unwrap()
                .iter()
                .map(|f| f.strip_prefix(d).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names("conf.d/*.toml"), ["conf.d/a.toml", "conf.d/b.toml"]);
        assert_eq!(
            names("conf.d/[ab].toml"),
            ["conf.d/a.toml", "conf.d/b.toml"]
        );
        assert_eq!(names("**/z.toml"), ["deep/x/y/z.toml"]);
        assert_eq!(names("deep/**/*.toml"), ["deep/x/y/z.toml"]);
        assert_eq!(names("conf.d/a.toml"), ["conf.d/a.toml"]);
        assert!(names("nothing/*.toml").is_empty());
        let abs = d.join("conf.d/*.toml");
        assert_eq!(
            expand(Path::new("/"), abs.to_str().unwrap()).unwrap().len(),
            2
        );
        assert!(
            expand(d, "conf.d/[.toml")
                .unwrap_err()
                .starts_with("invalid pattern")
        );
    }

    #[test]
    fn a_pattern_that_walks_too_much_gives_up_naming_itself() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..(MAX_WALK / 1000 + 1) {
            let sub = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&sub).unwrap();
            for j in 0..1000 {
                std::fs::write(sub.join(format!("f{j}")), "").unwrap();
            }
        }
        let err = expand(dir.path(), "**/*.toml").unwrap_err();
        assert_eq!(
            err,
            "\"**/*.toml\" looks at more than 100000 directory entries; name the files more narrowly"
        );
    }
}
