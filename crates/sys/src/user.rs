//! Looking up users and groups, in the parent before the clone (NSS lookups allocate and
//! take locks, so they cannot run in the child, which shares herder's memory).

use std::ffi::{CStr, CString};

use crate::spawn::Credentials;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    #[error("user \"{0}\" does not exist")]
    NoUser(String),
    #[error("group \"{0}\" does not exist")]
    NoGroup(String),
}

struct Passwd {
    uid: u32,
    gid: u32,
    name: CString,
}

fn passwd(user: &str) -> Option<Passwd> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: getpwnam_r/getpwuid_r write into our buffer and struct only.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let rc = match user.parse::<u32>() {
            Ok(uid) => libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out),
            Err(_) => {
                let c = CString::new(user).ok()?;
                libc::getpwnam_r(
                    c.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                )
            }
        };
        if rc != 0 || out.is_null() {
            return None;
        }
        Some(Passwd {
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            name: CStr::from_ptr(pw.pw_name).to_owned(),
        })
    }
}

fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let c = CString::new(group).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in `passwd`.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            c.as_ptr(),
            &mut gr,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        );
        (rc == 0 && !out.is_null()).then_some(gr.gr_gid)
    }
}

/// The credentials for `user` (name or numeric uid) and optionally `group`: the
/// user's primary group unless `group` is given, and the user's supplementary groups.
/// A numeric uid without a passwd entry runs with gid = `group` or the uid itself,
/// and no supplementary groups.
pub fn credentials(user: &str, group: Option<&str>) -> Result<Credentials, LookupError> {
    let gid_override = group
        .map(|g| group_id(g).ok_or_else(|| LookupError::NoGroup(g.to_string())))
        .transpose()?;
    let Some(pw) = passwd(user) else {
        return match user.parse::<u32>() {
            Ok(uid) => Ok(Credentials {
                uid,
                gid: gid_override.unwrap_or(uid),
                groups: Vec::new(),
            }),
            Err(_) => Err(LookupError::NoUser(user.to_string())),
        };
    };
    let gid = gid_override.unwrap_or(pw.gid);
    let mut groups = vec![0 as libc::gid_t; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: getgrouplist writes at most `n` entries and updates `n`.
        let rc = unsafe { libc::getgrouplist(pw.name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            break;
        }
        groups.resize((n as usize).max(groups.len() * 2), 0);
    }
    Ok(Credentials {
        uid: pw.uid,
        gid,
        groups,
    })
}

/// Only the given group, for `group = "…"` without `user`.
pub fn group_only(group: &str) -> Result<u32, LookupError> {
    group_id(group).ok_or_else(|| LookupError::NoGroup(group.to_string()))
}

/// herder's own uid.
pub fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}
