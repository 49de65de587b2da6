//! Running as an unprivileged account: `server.user` (and `server.group`) name the
//! account wharf switches to once it has bound its ports and opened its site roots, so
//! that a server started as root (to listen on 21 or 990) serves every session as that
//! account, with no way back.

use std::ffi::{CStr, CString};
use std::io;

/// The account to run as, resolved when the configuration is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub user: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Looks up `user` (and `group`, else the user's primary group) in the system's
/// account databases.
pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, String> {
    let (uid, primary) = lookup_user(user)?;
    let gid = match group {
        Some(g) => lookup_group(g)?,
        None => primary,
    };
    if uid == 0 {
        return Err(format!("{user:?} is root: name an unprivileged account"));
    }
    Ok(RunAs {
        user: user.to_string(),
        uid,
        gid,
    })
}

fn c_string(name: &str) -> Result<CString, String> {
    CString::new(name).map_err(|_| format!("{name:?} holds a NUL byte"))
}

fn lookup_user(name: &str) -> Result<(libc::uid_t, libc::gid_t), String> {
    let c = c_string(name)?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten by getpwnam_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call, `buf` outlives it, and `found` is
    // only read when the call set it.
    let rc = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(format!(
            "looking up user {name:?}: {}",
            io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!("no user {name:?} on this system"));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

fn lookup_group(name: &str) -> Result<libc::gid_t, String> {
    let c = c_string(name)?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in `lookup_user`, for getgrnam_r.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`.
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut gr,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(format!(
            "looking up group {name:?}: {}",
            io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err(format!("no group {name:?} on this system"));
    }
    Ok(gr.gr_gid)
}

/// Switches the whole process (every thread: the C library applies set*id to all of
/// them) to `to`: no supplementary groups, then the group, then the user; then checks
/// that root cannot be regained. Needs root (or CAP_SETUID and CAP_SETGID).
pub fn drop_to(to: &RunAs) -> io::Result<()> {
    let check = |rc: libc::c_int| match rc {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    };
    // SAFETY: plain system calls with valid arguments (an empty group list).
    unsafe {
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setgid(to.gid))?;
        check(libc::setuid(to.uid))?;
    }
    // SAFETY: as above; succeeding here would mean the drop did not hold.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(io::Error::other(
            "root could be regained after dropping privileges",
        ));
    }
    Ok(())
}

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The name of the account `uid` (for messages).
pub fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: as in `lookup_user`, for getpwuid_r.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in `lookup_user`.
    let rc =
        unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r set pw_name to a NUL-terminated string inside `buf`.
    Some(
        unsafe { CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_resolve_and_root_is_refused() {
        // Every Linux system has root (uid 0) and its group.
        assert!(resolve("root", None).unwrap_err().contains("root"));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        let missing = resolve("no-such-user-wharf", None).unwrap_err();
        assert!(missing.contains("no user"), "{missing}");
        let missing = lookup_group("no-such-group-wharf").unwrap_err();
        assert!(missing.contains("no group"), "{missing}");
        assert_eq!(lookup_group("root"), Ok(0));
    }
}
