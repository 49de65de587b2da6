//! Thin wrappers over the system calls the runtime needs beyond mio: `SO_REUSEPORT`
//! listeners, passive data listeners on a port range, non-blocking connects from a
//! chosen address, `sendfile(2)`, and the open-files limit.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
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

/// Picks passive ports over a range, starting after the last one handed out, so that
/// consecutive PASV commands do not all probe the same busy ports.
#[derive(Debug, Default)]
pub(crate) struct PortCursor {
    next: u32,
}

impl PortCursor {
    /// Listens on `ip` on the first free port of `ports` from the cursor on. `Ok(None)`
    /// when every port is busy. `0..=0` asks the kernel for any port.
    pub(crate) fn listen(
        &mut self,
        ip: IpAddr,
        ports: &RangeInclusive<u16>,
    ) -> io::Result<Option<mio::net::TcpListener>> {
        let (lo, hi) = (u32::from(*ports.start()), u32::from(*ports.end()));
        if hi < lo {
            return Ok(None);
        }
        let span = hi - lo + 1;
        for i in 0..span {
            let port = lo + (self.next + i) % span;
            let addr = SocketAddr::new(ip, port as u16);
            match data_listener(addr) {
                Ok(l) => {
                    self.next = (self.next + i + 1) % span;
                    return Ok(Some(l));
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

fn data_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
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
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
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
