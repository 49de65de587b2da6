//! systemd integration without libsystemd: the `sd_notify` datagram protocol, the
//! watchdog, and the check that no sockets were passed for activation.
//!
//! With `Type=notify`, systemd gives the service `NOTIFY_SOCKET`, a Unix datagram socket
//! (a path, or `@name` in the abstract namespace), and reads newline-separated
//! `KEY=value` assignments from it: `READY=1` once the server serves, `RELOADING=1`
//! (with `MONOTONIC_USEC`, for `Type=notify-reload`) and `READY=1` again around a
//! reload, `STOPPING=1` at shutdown, `STATUS=` for `systemctl status`, and `WATCHDOG=1`
//! at least every `WATCHDOG_USEC` when `WatchdogSec=` is set. Without `NOTIFY_SOCKET`
//! every call here does nothing.

use std::io;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

/// The service manager's notification socket, connected once (before the server drops
/// its privileges: a socket path the account may not write to still works).
pub struct Notifier {
    sock: UnixDatagram,
}

impl Notifier {
    /// The socket `NOTIFY_SOCKET` names; `None` when it is unset (not run by systemd,
    /// or not `Type=notify`).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Ok(None);
        };
        use std::os::unix::ffi::OsStrExt;
        let addr = match name.as_bytes().first() {
            Some(b'/') => UnixAddr::from_pathname(&name)?,
            Some(b'@') => {
                use std::os::linux::net::SocketAddrExt;
                UnixAddr::from_abstract_name(&name.as_bytes()[1..])?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "NOTIFY_SOCKET={:?} is neither a path nor an @abstract name",
                        name.to_string_lossy()
                    ),
                ))
            }
        };
        Notifier::connect(&addr).map(Some)
    }

    fn connect(addr: &UnixAddr) -> io::Result<Notifier> {
        let sock = UnixDatagram::unbound()?;
        sock.connect_addr(addr)?;
        Ok(Notifier { sock })
    }

    /// Sends `state` (`KEY=value` lines) in one datagram.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.sock.send(state.as_bytes())?;
        Ok(())
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set for this
/// process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, for `MONOTONIC_USEC=` with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// The number of sockets systemd passed for socket activation (`LISTEN_FDS`, when
/// `LISTEN_PID` is this process).
pub fn passed_sockets() -> usize {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    match ours {
        true => std::env::var("LISTEN_FDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
        false => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_sockets_receive_what_is_sent() {
        // Path-named.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(&UnixAddr::from_pathname(&path).unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 64];
        let got = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1\nSTATUS=ok");
        // Abstract.
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wharf-test-{}", std::process::id());
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        let n = Notifier::connect(&addr).unwrap();
        n.notify("STOPPING=1").unwrap();
        let got = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"STOPPING=1");
    }
}
