//! What herder writes is private: services' output (logs), run ids and pids (the
//! state file), what a shutdown did (the report). Files are mode 0600 in 0700
//! directories, or 0640 in 0750 owned by the control socket's group when
//! `supervisor.socket_group` shares herder with a group.
//!
//! # How it works
//!
//! New files are created with the mode (so there is no moment they are more
//! open), and a file or directory that already exists, from an older herder or
//! made by hand, is set to it when herder opens it. With a group, each is given
//! that group too.
//!
//! # Caveats
//!
//! - The umask can only take bits away: a umask of 0077 makes group-shared files
//!   0600 at creation; they are set to 0640 right after.
//! - A directory herder does not own (a `state_dir` an operator made) cannot be
//!   changed by an unprivileged herder: that failure is returned for the caller to
//!   say.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Who may read what herder writes besides its own user.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Private {
    /// The group that may read too (`supervisor.socket_group`).
    pub group: Option<u32>,
}

impl Private {
    pub fn file_mode(self) -> u32 {
        if self.group.is_some() { 0o640 } else { 0o600 }
    }

    pub fn dir_mode(self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o700 }
    }

    /// Makes `dir` (and its parents, as `create_dir_all` does) and sets its mode
    /// and group: for directories that are herder's alone (`logs/`).
    pub fn dir(self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        self.own(dir, self.dir_mode())
    }

    /// Makes the state directory if it is not there, with the mode and group;
    /// one that exists keeps its own: an operator's `state_dir` may be a
    /// directory with other uses, whose mode herder has no business changing (what
    /// herder writes in it is private either way).
    pub fn state_dir(self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        self.dir(dir)
    }

    /// Opens `path` for appending, created with the mode if it is new. A
    /// symbolic link is not followed: nothing planted in the directory can make
    /// herder write to, or change the mode of, another file.
    pub fn append(self, path: &Path) -> io::Result<File> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(self.file_mode())
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        self.own_file(&f)?;
        Ok(f)
    }

    /// Replaces `path` with `bytes` atomically: written to a private temporary
    /// file beside it, then renamed over it.
    pub fn write(self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let name = path
            .file_name()
            .map_or("file".into(), |n| n.to_string_lossy());
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.file_mode())
            .open(&tmp)?;
        self.own_file(&f)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// Sets the mode and group of the directory `path`.
    fn own(self, path: &Path, mode: u32) -> io::Result<()> {
        if let Some(g) = self.group {
            std::os::unix::fs::chown(path, None, Some(g))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }

    /// Sets the mode and group of an open file, through its descriptor.
    fn own_file(self, f: &File) -> io::Result<()> {
        if let Some(g) = self.group {
            std::os::unix::fs::fchown(f, None, Some(g))?;
        }
        f.set_permissions(std::fs::Permissions::from_mode(self.file_mode()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    #[test]
    fn a_planted_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("a.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(Private::default().append(&link).is_err());
        assert_eq!(mode(&target), 0o644);
    }

    #[test]
    fn files_and_directories_are_private_or_shared_with_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let own = Private::default();
        let d = dir.path().join("state");
        own.dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        own.write(&d.join("state.json"), b"{}").unwrap();
        assert_eq!(mode(&d.join("state.json")), 0o600);
        // An existing file left open by an older herder is closed up.
        let log = d.join("a.log");
        std::fs::write(&log, "x").unwrap();
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(own.append(&log).unwrap());
        assert_eq!(mode(&log), 0o600);

        // An existing state directory keeps its mode; a new one is private.
        let mine = dir.path().join("mine");
        own.state_dir(&mine).unwrap();
        assert_eq!(mode(&mine), 0o700);
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o755)).unwrap();
        own.state_dir(&mine).unwrap();
        assert_eq!(mode(&mine), 0o755);

        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        let shared = Private { group: Some(gid) };
        shared.dir(&d).unwrap();
        assert_eq!(mode(&d), 0o750);
        drop(shared.append(&log).unwrap());
        assert_eq!(mode(&log), 0o640);
        assert_eq!(std::fs::metadata(&log).unwrap().gid(), gid);
    }
}
