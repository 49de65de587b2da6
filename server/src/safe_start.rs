//! Starting safely: wharf does not share its listen addresses with another process.
//!
//! Every shard binds each address with `SO_REUSEPORT`, which lets the shards of one
//! server share a port, but also lets any other process of the same user join in: a
//! second wharf started by mistake, or a stale one, would silently take most new
//! connections. So before the shards bind, [`probe`] binds each address once *without*
//! `SO_REUSEPORT` (with `SO_REUSEADDR`, so sockets in TIME-WAIT and connections still
//! draining from a previous run do not count): that fails with "address in use" exactly
//! when another socket listens on the address, or on a wildcard address covering it.
//!
//! The probe is closed before the shards bind, so a second process could still slip in
//! between the two. [`foreign_listeners`], run once the shards listen, closes that
//! window: it reads the kernel's table of listening sockets (`/proc/net/tcp`, `tcp6`) and
//! reports any on an overlapping address that is not one of this process's descriptors.
//! Of two servers racing for one address, the one that checks last sees the other; the
//! remaining risk is that both refuse, and that the loser accepted (and then closes)
//! the few connections the kernel queued on its listeners meanwhile.
//!
//! Addresses with port 0 are skipped: the OS picks a port nobody else holds.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds each address with a non-zero port once, without `SO_REUSEPORT`, and closes it
/// again: an error (naming the address, and the process that holds it when it can be
/// found) when another process listens there.
pub fn probe(addrs: &[SocketAddr]) -> io::Result<()> {
    for &addr in addrs.iter().filter(|a| a.port() != 0) {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        if let Err(e) = s.bind(&addr.into()) {
            return Err(match e.kind() {
                io::ErrorKind::AddrInUse => in_use(addr, "is in use by another process"),
                io::ErrorKind::PermissionDenied if addr.port() < 1024 => io::Error::new(
                    e.kind(),
                    format!(
                        "cannot listen on {addr}: {e} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
                    ),
                ),
                _ => io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")),
            });
        }
    }
    Ok(())
}

/// Once this process listens on `addrs`: an error naming the first address (of those
/// with a non-zero port) on which another process listens too.
pub fn check_alone(addrs: &[SocketAddr]) -> io::Result<()> {
    let addrs: Vec<SocketAddr> = addrs.iter().copied().filter(|a| a.port() != 0).collect();
    if addrs.is_empty() {
        return Ok(());
    }
    match foreign_listeners(&addrs)?.first() {
        Some(&addr) => Err(in_use(
            addr,
            "is also listened on by another process, started at the same moment",
        )),
        None => Ok(()),
    }
}

fn in_use(addr: SocketAddr, what: &str) -> io::Error {
    let who = match holder(addr) {
        Some((pid, name)) => format!(" (pid {pid}, {name})"),
        None => String::new(),
    };
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "{addr} {what}{who}; wharf does not share its addresses: stop the other server, or \
             listen elsewhere (server.listen, bindings, --listen)"
        ),
    )
}

/// One listening socket from `/proc/net/tcp{,6}`.
struct Listener {
    addr: SocketAddr,
    inode: u64,
}

/// Which of `addrs` another process listens on (an overlapping address: the same one, or
/// a wildcard of the same family on either side, on the same port).
pub fn foreign_listeners(addrs: &[SocketAddr]) -> io::Result<Vec<SocketAddr>> {
    let ours = own_socket_inodes()?;
    let listening = listening_sockets()?;
    Ok(addrs
        .iter()
        .copied()
        .filter(|a| {
            listening
                .iter()
                .any(|l| !ours.contains(&l.inode) && overlaps(*a, l.addr))
        })
        .collect())
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.is_ipv4() == b.is_ipv4()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The inodes of this process's sockets (`/proc/self/fd/N -> socket:[inode]`).
fn own_socket_inodes() -> io::Result<HashSet<u64>> {
    Ok(socket_inodes_of("self")?.into_iter().collect())
}

fn socket_inodes_of(pid: &str) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if let Some(n) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            if let Ok(n) = n.parse() {
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// Every TCP socket in the LISTEN state in this network namespace.
fn listening_sockets() -> io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            // No IPv6 in this kernel: nothing listens on it.
            Err(e) if v6 && e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("reading {file}: {e}"))),
        };
        out.extend(text.lines().skip(1).filter_map(|l| parse_proc_line(l, v6)));
    }
    Ok(out)
}

/// `sl local_address rem_address st ... uid timeout inode`: a listener, if `st` is 0A.
fn parse_proc_line(line: &str, v6: bool) -> Option<Listener> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.get(3) != Some(&"0A") {
        return None;
    }
    let (ip, port) = f.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address as a number in host byte order.
    let words = |hex: &str| -> Option<Vec<[u8; 4]>> {
        (0..hex.len() / 8)
            .map(|i| {
                u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect()
    };
    let ip = match (v6, ip.len()) {
        (false, 8) => IpAddr::V4(Ipv4Addr::from(*words(ip)?.first()?)),
        (true, 32) => {
            let bytes: Vec<u8> = words(ip)?.concat();
            IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))
        }
        _ => return None,
    };
    Some(Listener {
        addr: SocketAddr::new(ip, port),
        inode: f.get(9)?.parse().ok()?,
    })
}

/// The process (pid and name) that listens on `addr`, when this process may see it.
fn holder(addr: SocketAddr) -> Option<(u32, String)> {
    let ours = own_socket_inodes().ok()?;
    let inodes: HashSet<u64> = listening_sockets()
        .ok()?
        .into_iter()
        .filter(|l| overlaps(addr, l.addr) && !ours.contains(&l.inode))
        .map(|l| l.inode)
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(socks) = socket_inodes_of(&pid.to_string()) else {
            continue;
        };
        if socks.iter().any(|i| inodes.contains(i)) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some((pid, comm.trim().to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_lines_are_read_in_host_byte_order() {
        let v4 = "   0: 0100007F:0849 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let l = parse_proc_line(v4, false).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(l.addr, "127.0.0.1:2121".parse().unwrap());
        }
        assert_eq!(l.inode, 4242);
        let v6 = "   1: 00000000000000000000000001000000:0849 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0";
        let l = parse_proc_line(v6, true).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(l.addr, "[::1]:2121".parse().unwrap());
        }
        let established = v4.replace(" 0A ", " 01 ");
        assert!(parse_proc_line(&established, false).is_none());
    }

    #[test]
    fn a_listener_of_another_process_is_found_and_ours_are_not() {
        // Ours: a listener in this process is not foreign.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(foreign_listeners(&[addr]).unwrap().is_empty());
        assert!(check_alone(&[addr]).is_ok());
        // The probe, however, refuses it: it does not know whose it is.
        let e = probe(&[addr]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
        drop(l);
        assert!(probe(&[addr]).is_ok());
    }

    #[test]
    fn overlapping_addresses() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(overlaps(a("127.0.0.1:21"), a("0.0.0.0:21")));
        assert!(overlaps(a("0.0.0.0:21"), a("10.0.0.1:21")));
        assert!(!overlaps(a("127.0.0.1:21"), a("127.0.0.2:21")));
        assert!(!overlaps(a("127.0.0.1:21"), a("127.0.0.1:22")));
        assert!(!overlaps(a("0.0.0.0:21"), a("[::]:21")));
        assert!(overlaps(a("[::1]:21"), a("[::]:21")));
    }
}
