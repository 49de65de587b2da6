//! The system resolver for IP rules with host names (reverse DNS): the PTR name of a
//! client address through `getnameinfo(3)` with `NI_NAMEREQD`, confirmed by a forward
//! lookup (`getaddrinfo(3)`) that must lead back to the same address, so a PTR record
//! cannot claim a name its owner does not control.
//!
//! It blocks (DNS, `/etc/hosts`), so the runtimes call it from their workers through
//! `wharf_core::backend::execute`, never from an event loop.

use std::ffi::CStr;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use wharf_core::Resolver;

/// The C library's resolver (whatever `/etc/nsswitch.conf` says: files, DNS, ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn reverse_lookup(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let name = normalize(&ptr_name(ip)?)?;
        if confirms(&name, ip) {
            Some(name)
        } else {
            tracing::debug!(%ip, %name, "reverse name does not resolve back to the address");
            None
        }
    }
}

/// The PTR name of `ip`: `getnameinfo` with `NI_NAMEREQD` (an error rather than the
/// address in text when there is no name).
fn ptr_name(ip: IpAddr) -> Option<String> {
    let addr = socket2::SockAddr::from(SocketAddr::new(ip, 0));
    let mut host = [0 as libc::c_char; 1025]; // NI_MAXHOST in glibc
                                              // SAFETY: `addr` is a valid socket address of `addr.len()` bytes; `host` is a
                                              // writable buffer whose length is passed; no service is asked for (null, 0).
                                              // getnameinfo is thread-safe (POSIX) and NUL-terminates what it writes on success.
    let rc = unsafe {
        libc::getnameinfo(
            addr.as_ptr().cast::<libc::sockaddr>(),
            addr.len(),
            host.as_mut_ptr(),
            host.len() as libc::socklen_t,
            std::ptr::null_mut(),
            0,
            libc::NI_NAMEREQD,
        )
    };
    if rc != 0 {
        return None;
    }
    // The buffer ends in NUL whatever getnameinfo did (it was zeroed, and the last byte
    // is never written past its length limit).
    host[host.len() - 1] = 0;
    // SAFETY: `host` is NUL-terminated (just ensured) and lives through the call.
    let name = unsafe { CStr::from_ptr(host.as_ptr()) };
    name.to_str().ok().map(str::to_owned)
}

/// A host name as the rules compare it: lower case, no trailing dot, only the characters
/// of host names, not an address in disguise. `None` for anything else.
fn normalize(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let plain = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let numeric = name.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    (plain && !numeric && !name.is_empty() && name.len() <= 253 && !name.contains(".."))
        .then_some(name)
}

/// Whether `name` resolves (forward, `getaddrinfo` through std) to `ip`.
fn confirms(name: &str, ip: IpAddr) -> bool {
    match (name, 0u16).to_socket_addrs() {
        Ok(mut addrs) => addrs.any(|a| a.ip().to_canonical() == ip),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized_or_refused() {
        assert_eq!(
            normalize("Host.Example.COM.").as_deref(),
            Some("host.example.com")
        );
        assert_eq!(normalize("localhost").as_deref(), Some("localhost"));
        for bad in [
            "",
            ".",
            "127.0.0.1",
            "a b.com",
            "a..b",
            "évil.com",
            "x\ny.com",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
        assert_eq!(normalize(&"a".repeat(254)), None);
    }

    #[test]
    fn loopback_is_localhost_when_the_hosts_file_says_so() {
        // Only where /etc/hosts maps 127.0.0.1 to localhost (the usual case): then the
        // reverse name is confirmed forward. Otherwise there is nothing to check here.
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let listed = hosts.lines().any(|l| {
            let mut words = l.split('#').next().unwrap_or("").split_whitespace();
            words.next() == Some("127.0.0.1") && words.next() == Some("localhost")
        });
        if !listed {
            eprintln!("skipped: /etc/hosts does not map 127.0.0.1 to localhost first");
            return;
        }
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            SystemResolver.reverse_lookup(ip).as_deref(),
            Some("localhost")
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(
            SystemResolver.reverse_lookup(mapped).as_deref(),
            Some("localhost")
        );
        assert!(confirms("localhost", ip));
        assert!(!confirms("localhost", "192.0.2.1".parse().unwrap()));
    }
}
