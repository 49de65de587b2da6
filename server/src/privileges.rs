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

/// [`drop_to`], keeping `CAP_NET_BIND_SERVICE` (and nothing else) on one thread of its
/// own, which then binds active-mode sockets to ports below 1024 for the event loops
/// (`active_source_port = 20`, or the control port minus one for a control port up to
/// 1024).
///
/// Capabilities belong to threads, not to the process: `setuid` away from root clears
/// every thread's, and `PR_SET_KEEPCAPS` and `capset` act only on the calling thread.
/// The event loops are already running when the switch happens, so none of them could
/// keep the capability; a thread made for it can. It sets `PR_SET_KEEPCAPS` on itself
/// before the switch (so its permitted set survives the C library applying `setuid` to
/// every thread), then narrows its permitted and effective sets to
/// `CAP_NET_BIND_SERVICE` alone and checks that it cannot become root again. Every
/// other thread ends with no capability at all. The binder is installed with
/// [`wharf_net::set_privileged_binder`]: `connect_from` uses it when a bind is refused
/// for lack of the capability.
#[cfg(target_os = "linux")]
pub fn drop_to_keeping_bind(to: &RunAs) -> io::Result<()> {
    use std::net::SocketAddr;
    use std::sync::mpsc;
    type Job = (SocketAddr, mpsc::SyncSender<io::Result<socket2::Socket>>);

    let (ready_tx, ready_rx) = mpsc::sync_channel::<io::Result<()>>(0);
    let (go_tx, go_rx) = mpsc::sync_channel::<bool>(0);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("wharf-bind".into())
        .spawn(move || {
            let keep = rustix::thread::set_keep_capabilities(true).map_err(io::Error::from);
            let failed = keep.is_err();
            if ready_tx.send(keep).is_err() || failed {
                return;
            }
            // The other threads switch with this one, inside the C library's setuid.
            if go_rx.recv() != Ok(true) {
                return;
            }
            if ready_tx.send(narrow_to_bind_capability()).is_err() {
                return;
            }
            for (addr, reply) in job_rx {
                let _ = reply.send(wharf_net::active_socket(addr));
            }
        })?;
    let not_ready = || io::Error::other("the binder thread ended early");
    ready_rx.recv().map_err(|_| not_ready())??;
    // Installed before the switch: a bind refused while it happens waits in the queue
    // until the binder has its capability back.
    let jobs = std::sync::Mutex::new(job_tx);
    let installed = wharf_net::set_privileged_binder(Box::new(move |addr| {
        let (tx, rx) = mpsc::sync_channel(1);
        let sent = jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((addr, tx));
        sent.map_err(|_| io::Error::other("the binder thread is gone"))?;
        rx.recv()
            .map_err(|_| io::Error::other("the binder thread is gone"))?
    }));
    if !installed {
        let _ = go_tx.send(false);
        return Err(io::Error::other(
            "a privileged binder was installed already",
        ));
    }
    if let Err(e) = drop_to(to) {
        let _ = go_tx.send(false);
        return Err(e);
    }
    go_tx.send(true).map_err(|_| not_ready())?;
    ready_rx.recv().map_err(|_| not_ready())??;
    Ok(())
}

/// On the binder thread, after the switch: `CAP_NET_BIND_SERVICE` permitted and
/// effective, nothing else, no keep-caps, and root out of reach.
#[cfg(target_os = "linux")]
fn narrow_to_bind_capability() -> io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let bind = CapabilitySet::NET_BIND_SERVICE;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: bind,
            permitted: bind,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    rustix::thread::set_keep_capabilities(false)?;
    let now = rustix::thread::capabilities(None)?;
    if now.permitted != bind || now.effective != bind {
        return Err(io::Error::other(format!(
            "the binder thread holds {:?}, not CAP_NET_BIND_SERVICE alone",
            now.permitted
        )));
    }
    // The raw system call: this thread only (the C library's would act on all).
    // SAFETY: setuid with a plain integer argument; it must fail here.
    if unsafe { libc::syscall(libc::SYS_setuid, 0) } == 0 {
        return Err(io::Error::other(
            "root could be regained on the binder thread",
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
