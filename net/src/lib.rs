//! wharf-net: thin wrappers over the system calls both runtimes need beyond their event
//! loops: `SO_REUSEPORT` control listeners, passive data listeners (`SO_REUSEADDR`;
//! their ports come from the core's pool, `wharf_core::ports`), non-blocking connects
//! from a chosen address and port, `sendfile(2)`, the open-files limit, and which errors mean
//! what. The core stays free of sockets; this crate holds them for the runtimes.
//!
//! Every socket is returned non-blocking as a std type; runtime-mio wraps it with
//! `from_std`, runtime-smol with `smol::Async`.
//!
//! It also holds the few pieces of driver glue both runtimes share: [`Wire`], which
//! lends a data socket and an open file to the core's transfer pump, the open-file
//! table [`Files`], and [`data_error`], the error classes the core's data-connection
//! events carry.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};
use wharf_core::backend::OpenFile;
use wharf_core::{DataError, DataIo, FileHandle};

/// A data socket and the transfer's open file, lent to a [`wharf_core::Pump`] for one
/// `run`. `sendfile` allows `sendfile(2)` for downloads whose file has a descriptor.
pub struct Wire<'a, S> {
    pub socket: &'a S,
    pub file: Option<&'a mut OpenFile>,
    pub sendfile: bool,
}

impl<S> DataIo for Wire<'_, S>
where
    S: AsRawFd,
    for<'b> &'b S: Read + Write,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.read(buf)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.socket.write_vectored(bufs)
    }
    fn shutdown_write(&mut self) {
        // SAFETY: the descriptor is open for the call; errors do not matter here.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_WR) };
    }
    fn read_file(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(OpenFile::Read(r)) => r.read(buf),
            _ => Err(io::Error::other("the download's file is not open")),
        }
    }
    fn write_file(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(OpenFile::Write(w)) => w.write(buf),
            _ => Err(io::Error::other("the upload's file is not open")),
        }
    }
    fn flush_file(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(OpenFile::Write(w)) => w.flush(),
            _ => Ok(()),
        }
    }
    fn send_file(&mut self, max: usize) -> Option<io::Result<usize>> {
        let fd = match &self.file {
            Some(OpenFile::Read(r)) if self.sendfile => r.raw_fd()?,
            _ => return None,
        };
        Some(sendfile(self.socket, fd, max))
    }
}

/// The files a session has open and not lent to a running transfer, by the core's
/// handle. A session opens one or two at a time, so a vector does.
#[derive(Default)]
pub struct Files(Vec<(FileHandle, OpenFile)>);

impl Files {
    pub fn put(&mut self, handle: FileHandle, file: OpenFile) {
        self.0.push((handle, file));
    }
    pub fn take(&mut self, handle: FileHandle) -> Option<OpenFile> {
        let i = self.0.iter().position(|(h, _)| *h == handle)?;
        Some(self.0.swap_remove(i).1)
    }
    /// Every file left, for disposal when the session ends.
    pub fn drain(&mut self) -> impl Iterator<Item = OpenFile> + '_ {
        self.0.drain(..).map(|(_, f)| f)
    }
    /// Every file left, with its handle.
    pub fn drain_handles(&mut self) -> Vec<(FileHandle, OpenFile)> {
        std::mem::take(&mut self.0)
    }
}

/// The class of a failed listen, accept or connect, for `Input::DataFailed`.
pub fn data_error(e: &io::Error) -> DataError {
    if is_exhaustion(e) {
        DataError::Exhausted
    } else if e.kind() == io::ErrorKind::ConnectionRefused {
        DataError::Refused
    } else {
        DataError::Io(e.to_string())
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every session needs a descriptor.
pub fn raise_nofile_limit() {
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
pub struct BoundListeners {
    /// One address per requested listen address, with its real port.
    pub addrs: Vec<SocketAddr>,
    /// For each shard: its listeners, one per listen address.
    pub per_shard: Vec<Vec<TcpListener>>,
}

/// Binds every address once per shard with `SO_REUSEPORT`. Port 0 is resolved by the
/// first shard's bind; the others bind the port it got.
pub fn bind_listeners(
    addrs: &[SocketAddr],
    shards: usize,
    backlog: i32,
) -> io::Result<BoundListeners> {
    let mut per_shard: Vec<Vec<_>> = (0..shards).map(|_| Vec::new()).collect();
    let mut real = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let mut addr = addr;
        for shard in per_shard.iter_mut() {
            let l = reuseport_listener(addr, backlog)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            addr = l.local_addr()?;
            shard.push(l);
        }
        real.push(addr);
    }
    Ok(BoundListeners {
        addrs: real,
        per_shard,
    })
}

fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
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
    Ok(s.into())
}

/// A non-blocking listener for one passive data connection (`SO_REUSEADDR`, backlog 8).
pub fn data_listener(addr: SocketAddr) -> io::Result<TcpListener> {
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
    // sockets for a minute; without SO_REUSEADDR a busy server runs out of ports. It
    // still refuses a second listener on a port.
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(8)?;
    Ok(s.into())
}

/// Starts a non-blocking connect from `local_ip` to `target`, from `local_port` (0: a
/// port the system picks).
///
/// A fixed source port (active mode from port 20, or the control port minus one) is
/// shared by every concurrent data connection: TCP tells connections apart by their
/// 4-tuple (local address, local port, peer address, peer port), and each client listens
/// on a port of its own, so only the bind needs permission to reuse the port.
/// `SO_REUSEADDR` on every socket bound there gives it (Linux lets sockets that all set
/// it share a port as long as none of them listens), and also lets the port be bound
/// while earlier connections from it sit in TIME-WAIT. `SO_REUSEPORT` is not needed,
/// and not set: it would let another process of the same user join the port.
/// The one collision left is the same client port again while the previous connection
/// to it is in TIME-WAIT: the connect then fails (`EADDRNOTAVAIL`) and the transfer
/// gets a 425.
///
/// A port below 1024 needs `CAP_NET_BIND_SERVICE`. When this thread lacks it (the
/// server switched to an unprivileged account) and [`set_privileged_binder`] installed a
/// binder, the socket is bound by the binder instead.
pub fn connect_from(
    local_ip: IpAddr,
    local_port: u16,
    target: SocketAddr,
) -> io::Result<TcpStream> {
    let local = SocketAddr::new(local_ip, local_port);
    let s = match active_socket(local) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && local_port != 0 => {
            match PRIVILEGED_BINDER.get() {
                Some(bind) => bind(local)?,
                None => return Err(e),
            }
        }
        other => other?,
    };
    s.set_nonblocking(true)?;
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

/// A TCP socket bound to `local` for an active-mode data connection, not yet connected
/// (blocking; [`connect_from`] makes it non-blocking). A fixed port is bound with
/// `SO_REUSEADDR` (see [`connect_from`]).
pub fn active_socket(local: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(local),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if local.port() != 0 {
        s.set_reuse_address(true)?;
    }
    s.bind(&local.into())?;
    Ok(s)
}

/// Binds an active-mode socket on a thread that may bind privileged ports.
pub type PrivilegedBinder = Box<dyn Fn(SocketAddr) -> io::Result<Socket> + Send + Sync>;

static PRIVILEGED_BINDER: std::sync::OnceLock<PrivilegedBinder> = std::sync::OnceLock::new();

/// Installs the process's binder for privileged source ports (the server's, when it
/// keeps `CAP_NET_BIND_SERVICE` on one thread after switching to `server.user`). It
/// must return what [`active_socket`] would. Only the first call installs one; false
/// when one was installed already.
pub fn set_privileged_binder(binder: PrivilegedBinder) -> bool {
    PRIVILEGED_BINDER.set(binder).is_ok()
}

/// `sendfile(2)` from the current offset of `file` to `sock`, at most `count` bytes.
pub fn sendfile(sock: &impl AsRawFd, file: RawFd, count: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call; a null offset
    // makes the kernel use and advance the file's own offset.
    let n = unsafe { libc::sendfile(sock.as_raw_fd(), file, std::ptr::null_mut(), count) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Whether a socket has a pending error, without consuming it (`SO_ERROR` would clear
/// it, and a transfer that starts on the socket afterwards would read a reset upload's
/// end as a clean end of file).
pub fn has_pending_error(sock: &impl AsRawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: sock.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, a zero timeout; the descriptor outlives the call.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & libc::POLLERR != 0
}

/// Whether an error means the process (or system) ran out of descriptors or memory.
pub fn is_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Whether an `accept` error concerns only the connection being accepted (it was reset
/// or aborted in the backlog), so accepting goes on at once.
pub fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO | libc::EPERM))
}

/// Whether a `sendfile` error came from the socket side (the peer went away) rather
/// than from reading the file.
pub fn is_socket_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ETIMEDOUT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A passive port whose last data connection the server closed first (so it holds a
    /// TIME-WAIT socket) must be usable again at once, and never twice.
    #[test]
    fn a_passive_port_in_time_wait_is_reusable() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let port = TcpListener::bind((ip, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::new(ip, port);
        let listener = data_listener(addr).expect("the port is free");
        listener.set_nonblocking(false).unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (server_side, _) = listener.accept().unwrap();
        drop(listener);
        // The server closes first, as after a download; the client sees EOF and closes.
        drop(server_side);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        client.write_all(b"").unwrap();
        drop(client);
        let again = data_listener(addr).expect("usable again");
        let second = data_listener(addr).unwrap_err();
        assert_eq!(
            second.kind(),
            io::ErrorKind::AddrInUse,
            "never two listeners"
        );
        drop(again);
    }

    /// Accepts one connection on `l`, waiting at most ten seconds.
    fn accept_one(l: &TcpListener) -> (TcpStream, SocketAddr) {
        l.set_nonblocking(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match l.accept() {
                Ok((s, peer)) => {
                    s.set_nonblocking(false).unwrap();
                    return (s, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no connection came");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// A free port on loopback to connect from (bound, released).
    fn unused_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Many active-mode connections at once from one fixed source port, each to a
    /// client port of its own: every one connects from that port and carries its own
    /// bytes; then, with the earlier ones closed by us first (TIME-WAIT on our side),
    /// the port serves new connections at once.
    #[test]
    fn one_source_port_serves_many_connections_at_once_and_after() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let source = unused_port();
        for round in 0..2 {
            let clients: Vec<TcpListener> = (0..20)
                .map(|_| TcpListener::bind((ip, 0)).unwrap())
                .collect();
            let mut conns = Vec::new();
            for (i, c) in clients.iter().enumerate() {
                let out = connect_from(ip, source, c.local_addr().unwrap())
                    .unwrap_or_else(|e| panic!("round {round}, connection {i}: {e}"));
                let (mut inbound, peer) = accept_one(c);
                assert_eq!(peer.port(), source, "connected from the port asked for");
                out.set_nonblocking(false).unwrap();
                inbound.write_all(&[i as u8; 3]).unwrap();
                conns.push((out, inbound));
            }
            for (i, (out, _)) in conns.iter_mut().enumerate() {
                let mut got = [0u8; 3];
                out.read_exact(&mut got).unwrap();
                assert_eq!(got, [i as u8; 3], "each connection its own bytes");
                assert_eq!(out.local_addr().unwrap().port(), source);
            }
            // We close first, as the server does after a download.
            drop(conns);
        }
    }

    #[test]
    fn any_source_port_is_the_systems_pick() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let client = TcpListener::bind((ip, 0)).unwrap();
        let out = connect_from(ip, 0, client.local_addr().unwrap()).unwrap();
        let (_, peer) = accept_one(&client);
        assert_ne!(peer.port(), 0);
        assert_eq!(out.local_addr().unwrap().port(), peer.port());
    }

    /// A port a listener holds is not taken for active mode: the bind fails rather than
    /// sharing it with the listener.
    #[test]
    fn a_listening_port_is_not_shared() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let listener = data_listener(SocketAddr::new(ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = TcpListener::bind((ip, 0)).unwrap();
        let err = connect_from(ip, port, client.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    use std::ops::RangeInclusive;
    use std::sync::Arc;
    use wharf_core::ports::PortPool;

    /// A passive listener from the pool, as both runtimes take one.
    fn listen(
        pool: &Arc<PortPool>,
        ip: IpAddr,
        ports: &RangeInclusive<u16>,
    ) -> io::Result<Option<(TcpListener, Option<wharf_core::ports::PortLease>)>> {
        pool.bind(ports, |port| data_listener(SocketAddr::new(ip, port)))
    }

    /// Three consecutive free ports on loopback (best effort: bound and released).
    fn free_ports(n: u16) -> (u16, u16) {
        for _ in 0..200 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let lo = l.local_addr().unwrap().port();
            if lo > u16::MAX - n {
                continue;
            }
            drop(l);
            let all_free =
                (lo..lo + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
            if all_free {
                return (lo, lo + n - 1);
            }
        }
        panic!("no run of {n} free ports");
    }

    #[test]
    fn exhausted_range_answers_none_and_dropped_listeners_return_their_ports() {
        let (lo, hi) = free_ports(3);
        let pool = Arc::new(PortPool::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| listen(&pool, ip, &(lo..=hi)).unwrap().expect("a free port"))
            .collect();
        let mut ports: Vec<u16> = held
            .iter()
            .map(|(l, _)| l.local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, (lo..=hi).collect::<Vec<_>>());
        assert_eq!(pool.free_count(&(lo..=hi)), 0);
        assert!(
            listen(&pool, ip, &(lo..=hi)).unwrap().is_none(),
            "range exhausted"
        );
        drop(held);
        assert_eq!(pool.free_count(&(lo..=hi)), 3, "every port came back");
        assert!(listen(&pool, ip, &(lo..=hi)).unwrap().is_some());
    }

    #[test]
    fn a_port_held_by_someone_else_is_skipped_not_lost() {
        let (lo, hi) = free_ports(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger = std::net::TcpListener::bind((ip, lo)).unwrap();
        let pool = Arc::new(PortPool::default());
        let (l, lease) = listen(&pool, ip, &(lo..=hi))
            .unwrap()
            .expect("the other port");
        assert_eq!(l.local_addr().unwrap().port(), hi);
        // The stranger's port went back to the queue for later.
        assert_eq!(pool.free_count(&(lo..=hi)), 1);
        assert!(listen(&pool, ip, &(lo..=hi)).unwrap().is_none());
        drop(stranger);
        let again = listen(&pool, ip, &(lo..=hi)).unwrap().expect("free now");
        assert_eq!(again.0.local_addr().unwrap().port(), lo);
        drop((l, lease));
    }
}
