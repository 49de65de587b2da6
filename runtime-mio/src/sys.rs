//! Thin wrappers over the system calls the runtime needs beyond mio: `SO_REUSEPORT`
//! listeners, passive data listeners, non-blocking connects from a
//! chosen address, `sendfile(2)`, and the open-files limit.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every session needs a descriptor.
pub(crate) fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-files limit");
            }
        }
    }
}

/// The control listeners of every shard.
pub(crate) struct BoundListeners {
    /// One address per requested listen address, with its real port.
    pub addrs: Vec<SocketAddr>,
    /// For each shard: (index of the listen address, its listener).
    pub per_shard: Vec<Vec<(usize, mio::net::TcpListener)>>,
}

/// Binds every address in each of `shards` shards with `SO_REUSEPORT`. Port 0 is
/// resolved by the first shard's bind; the others bind the port it got.
pub(crate) fn bind_listeners(
    addrs: &[SocketAddr],
    shards: usize,
    backlog: i32,
) -> io::Result<BoundListeners> {
    let mut per_shard: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
    let mut real = Vec::with_capacity(addrs.len());
    for (i, &addr) in addrs.iter().enumerate() {
        let mut addr = addr;
        for shard in per_shard.iter_mut() {
            let l = reuseport_listener(addr, backlog)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            addr = l.local_addr()?;
            shard.push((i, l));
        }
        real.push(addr);
    }
    Ok(BoundListeners {
        addrs: real,
        per_shard,
    })
}

fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<mio::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// A non-blocking listener for one passive data connection (`SO_REUSEADDR`, backlog 8).
pub(crate) fn data_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    // Non-blocking from the start (and close-on-exec: socket2 always asks for it), which
    // saves three fcntl calls per PASV.
    let s = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // The server closes data connections first, so each passive port keeps TIME-WAIT
    // sockets for a minute; without SO_REUSEADDR a busy server runs out of ports (at
    // ~800 sessions/s a 7,000-port range ran dry). It still refuses a second listener.
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(8)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// Starts a non-blocking connect from `local_ip` (any port) to `target`.
pub(crate) fn connect_from(
    local_ip: IpAddr,
    target: SocketAddr,
) -> io::Result<mio::net::TcpStream> {
    let s = Socket::new(
        Domain::for_address(target),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    s.bind(&SocketAddr::new(local_ip, 0).into())?;
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    // SAFETY: the descriptor is a connected-or-connecting TCP socket we own.
    Ok(unsafe { mio::net::TcpStream::from_raw_fd(s.into_raw_fd()) })
}

/// `sendfile(2)` from the current offset of `file` to `sock`, at most `count` bytes.
pub(crate) fn sendfile(sock: &impl AsRawFd, file: RawFd, count: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call; a null offset
    // makes the kernel use and advance the file's own offset.
    let n = unsafe { libc::sendfile(sock.as_raw_fd(), file, std::ptr::null_mut(), count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether an error means the process (or system) ran out of descriptors or memory.
pub(crate) fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A passive port whose last data connection the server closed first (so it holds a
    /// TIME-WAIT socket) must be usable again at once.
    #[test]
    fn a_passive_port_in_time_wait_is_reusable() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let port = std::net::TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::new(ip, port);
        let listener = data_listener(addr).expect("the port is free");
        let mut client = std::net::TcpStream::connect((ip, port)).unwrap();
        // The loopback connect has completed, so the accept is ready or nearly so.
        let server_side = (0..100_000)
            .find_map(|_| match listener.accept() {
                Ok((stream, _)) => Some(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::yield_now();
                    None
                }
                Err(e) => panic!("accept: {e}"),
            })
            .expect("the connection was accepted");
        drop(listener);
        // The server closes first, as after a download; the client sees EOF and closes.
        drop(server_side);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        client.write_all(b"").unwrap();
        drop(client);
        let again = data_listener(addr);
        assert!(
            again.is_ok(),
            "port {port} stayed unusable after its data connection closed"
        );
        assert!(
            data_listener(addr).is_err(),
            "but never two listeners on one port"
        );
    }
}
