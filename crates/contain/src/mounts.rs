//! Where the cgroup hierarchies are, and where herder sits in them.
//!
//! Nothing is assumed about `/sys/fs/cgroup`: the cgroup2 mount and the v1 freezer
//! mount are read from `/proc/self/mountinfo` (on hybrid hosts cgroup2 is often at
//! `/sys/fs/cgroup/unified`), and herder's own cgroup from `/proc/self/cgroup`,
//! relative to the mount's root (in a container the mount may show only a subtree).

use std::path::{Path, PathBuf};

/// A mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The cgroup that the mount shows as its top (`/` unless in a container).
    pub root: String,
    /// Mounted read-only (a container's usual cgroup mount): no cgroup can be
    /// made in it, whoever asks.
    pub read_only: bool,
}

/// The cgroup2 mount, if any.
pub fn cgroup2() -> Option<Mount> {
    find(&read("/proc/self/mountinfo"), |fstype, _| {
        fstype == "cgroup2"
    })
}

/// The cgroup v1 hierarchy with `controller` (`freezer`, `pids`, …), if any.
pub fn v1(controller: &str) -> Option<Mount> {
    find(&read("/proc/self/mountinfo"), |fstype, opts| {
        fstype == "cgroup" && opts.split(',').any(|o| o == controller)
    })
}

/// herder's cgroup in the v2 hierarchy (`0::/path`).
pub fn own_v2() -> Option<String> {
    // Only the unified hierarchy has no controllers in its line (v1 named
    // hierarchies say `name=…`).
    own(&read("/proc/self/cgroup"), str::is_empty)
}

/// This process's cgroup in the v1 hierarchy with `controller`.
pub fn own_v1(controller: &str) -> Option<String> {
    own(&read("/proc/self/cgroup"), |c| {
        c.split(',').any(|x| x == controller)
    })
}

/// The directory of cgroup `path` (as /proc/self/cgroup names it) under `mount`.
pub fn dir_of(mount: &Mount, path: &str) -> Option<PathBuf> {
    let rel = if mount.root == "/" {
        path
    } else {
        path.strip_prefix(mount.root.as_str())?
    };
    let rel = rel.trim_start_matches('/');
    if rel.split('/').any(|c| c == "..") {
        return None;
    }
    Some(if rel.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(rel)
    })
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The first mount whose filesystem type and super options satisfy `want`.
fn find(mountinfo: &str, want: impl Fn(&str, &str) -> bool) -> Option<Mount> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (fstype, superopts) = (*r.first()?, *r.get(2).unwrap_or(&""));
        if !want(fstype, superopts) {
            return None;
        }
        Some(Mount {
            point: PathBuf::from(unescape(l.get(4)?)),
            root: unescape(l.get(3)?),
            read_only: l.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro")),
        })
    })
}

/// `hierarchy:controllers:path` lines; the path of the first whose controllers match.
fn own(cgroup: &str, want: impl Fn(&str) -> bool) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let (_, controllers, path) = (it.next()?, it.next()?, it.next()?);
        want(controllers).then(|| path.to_string())
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether this process may create cgroups in `dir` (write access to the directory).
pub fn writable(dir: &Path) -> bool {
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn finds_hybrid_mounts() {
        let v2 = find(HYBRID, |t, _| t == "cgroup2").unwrap();
        assert_eq!(v2.point, PathBuf::from("/sys/fs/cgroup/unified"));
        let fz = find(HYBRID, |t, o| {
            t == "cgroup" && o.split(',').any(|x| x == "freezer")
        });
        assert_eq!(fz.unwrap().point, PathBuf::from("/sys/fs/cgroup/freezer"));
        assert!(find("", |t, _| t == "cgroup2").is_none());
        assert!(!v2.read_only);
        let ro = "41 31 0:38 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n";
        assert!(find(ro, |t, _| t == "cgroup2").unwrap().read_only);
    }

    #[test]
    fn escaped_mount_points_and_subtree_roots() {
        let info = "50 1 0:40 /kube/pod1 /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = find(info, |t, _| t == "cgroup2").unwrap();
        assert_eq!(m.point, PathBuf::from("/mnt/my cgroups"));
        assert_eq!(m.root, "/kube/pod1");
        assert_eq!(
            dir_of(&m, "/kube/pod1/app"),
            Some(PathBuf::from("/mnt/my cgroups/app"))
        );
        assert_eq!(dir_of(&m, "/kube/pod1"), Some(m.point.clone()));
        assert_eq!(dir_of(&m, "/elsewhere"), None);
        let plain = Mount {
            point: "/sys/fs/cgroup".into(),
            root: "/".into(),
            read_only: false,
        };
        assert_eq!(dir_of(&plain, "/../x"), None);
        assert_eq!(dir_of(&plain, "/"), Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn own_cgroup_lines() {
        let text = "6:freezer:/t/a\n4:memory:/m\n0::/svc/x\n";
        assert_eq!(own(text, |c| c.is_empty()), Some("/svc/x".into()));
        assert_eq!(
            own(text, |c| c.split(',').any(|x| x == "freezer")),
            Some("/t/a".into())
        );
    }
}
