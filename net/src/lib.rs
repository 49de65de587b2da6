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

pub mod proxy;
pub use proxy::{read_proxy_header, HeaderRead};

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

pub mod queue;
pub mod timers;
use wharf_core::backend::OpenFile;
use wharf_core::{DataError, DataIo};

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

/// The open-file table lives in the core (every driver needs one).
pub use wharf_core::backend::OpenFiles as Files;

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

/// The tuning every runtime shares; each runtime's own configuration embeds it (as
/// `driver`) beside what only it has.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Event-loop (or executor) threads, and groups of `SO_REUSEPORT` listeners, each
    /// with its own `Server`; 0 means one per available core.
    pub shards: usize,
    /// Answers `Request::ReverseLookup` (IP rules with host names); the default knows
    /// no names.
    pub resolver: std::sync::Arc<dyn wharf_core::Resolver>,
    /// Size of the buffer a transfer's pump allocates when it starts (and frees when it
    /// ends).
    pub transfer_buffer: usize,
    /// Bytes one transfer moves before it lets other connections run.
    pub transfer_budget: usize,
    /// Control-channel reads in a row per session before yielding.
    pub control_reads_budget: usize,
    /// Use `sendfile(2)` for binary downloads from files that expose a descriptor.
    pub use_sendfile: bool,
    /// Listen backlog of every control listener.
    pub backlog: i32,
    /// Where `Action::Log` records (and refused connections' records) go; `None` drops
    /// them. The sink must not block (see [`wharf_core::log::LogSink`]).
    pub log: Option<std::sync::Arc<dyn wharf_core::log::LogSink>>,
    /// The passive port pool to lease from; `None`: a new one ([`port_pool`]). Given,
    /// its owner can read how many ports are in use.
    pub ports: Option<std::sync::Arc<wharf_core::ports::PortPool>>,
}

impl DriverConfig {
    /// The passive port pool: the one given, or a new one.
    pub fn port_pool(&self) -> std::sync::Arc<wharf_core::ports::PortPool> {
        self.ports.clone().unwrap_or_else(port_pool)
    }
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            shards: 0,
            resolver: std::sync::Arc::new(wharf_core::NoResolver),
            transfer_buffer: 128 * 1024,
            transfer_budget: 4 * 1024 * 1024,
            control_reads_budget: 8,
            use_sendfile: true,
            backlog: 1024,
            log: None,
            ports: None,
        }
    }
}

/// How a runtime runs transfers: the buffer their pumps get, how many bytes one moves
/// before others get a turn, and whether plain downloads may use `sendfile(2)`.
#[derive(Debug, Clone, Copy)]
pub struct PumpLimits {
    pub buffer: usize,
    pub budget: usize,
    pub use_sendfile: bool,
}

impl DriverConfig {
    /// The transfer limits, within sane bounds.
    pub fn pump_limits(&self) -> PumpLimits {
        PumpLimits {
            buffer: self.transfer_buffer.max(4096),
            budget: self.transfer_budget.max(64 * 1024),
            use_sendfile: self.use_sendfile,
        }
    }

    /// The number of shards a runtime runs: `shards`, or one per core when it is 0.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// What a session that failed inside the server (a panic) is told before its connection
/// closes.
pub const INTERNAL_ERROR: &[u8] = b"421 Internal server error; closing the connection.\r\n";

/// Runs `f`, catching a panic: `Err` carries the panic's message. Runtimes run each
/// session's work through it, so that a bug met by one session ends that session alone.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic".to_string(),
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

/// A passive data listener on `ip`, on a free port of `ports` from the pool (`0..=0`:
/// any), with the lease that gives the port back when dropped, and the port; the
/// `DataError` the core is to hear otherwise.
pub fn listen_passive(
    pool: &std::sync::Arc<wharf_core::ports::PortPool>,
    ip: IpAddr,
    ports: &std::ops::RangeInclusive<u16>,
) -> Result<(TcpListener, Option<wharf_core::ports::PortLease>, u16), DataError> {
    match pool.bind(ports, |port| data_listener(SocketAddr::new(ip, port))) {
        Ok(Some((l, lease))) => {
            let port = l.local_addr().map_err(|e| data_error(&e))?.port();
            Ok((l, lease, port))
        }
        Ok(None) => Err(DataError::NoFreePort),
        Err(e) => Err(data_error(&e)),
    }
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

/// Answers a connection the core refused (best effort: a fresh socket's buffer takes a
/// short reply; an empty one means close without a word) and hands the refusal's
/// record, if any, to the log sink.
pub fn refuse<S>(
    sock: &S,
    refusal: wharf_core::Refusal,
    log: Option<&std::sync::Arc<dyn wharf_core::log::LogSink>>,
) where
    for<'a> &'a S: Write,
{
    if !refusal.reply.is_empty() {
        let _ = { sock }.write(&refusal.reply);
    }
    if let (Some(sink), Some(record)) = (log, refusal.log) {
        sink.log(record);
    }
}

/// The process-wide passive port pool, its draws seeded from the process's hasher keys
/// (std reads them from the OS), so passive ports cannot be predicted.
pub fn port_pool() -> std::sync::Arc<wharf_core::ports::PortPool> {
    let keys = std::collections::hash_map::RandomState::new();
    let seed = std::hash::BuildHasher::hash_one(&keys, 0u8);
    std::sync::Arc::new(wharf_core::ports::PortPool::with_seed(seed))
}

/// What one read of a control connection did (see [`read_control`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRead {
    /// Bytes were fed to the session.
    Bytes,
    /// The peer closed its side; the session was told (`ControlEof`).
    Closed,
    /// The socket failed; the session was told the peer is gone.
    Broken,
    /// Nothing to read now.
    WouldBlock,
    /// Interrupted: read again.
    Retry,
}

/// One read of a control connection into `buf` (a scratch buffer shared by many
/// sessions), fed to its session at `now`. The driver drains the session afterwards
/// unless nothing was fed.
pub fn read_control<S>(
    session: &mut wharf_core::Session,
    sock: &S,
    buf: &mut [u8],
    now: std::time::Instant,
) -> ControlRead
where
    for<'a> &'a S: Read,
{
    use wharf_core::Input;
    match { sock }.read(buf) {
        Ok(0) => {
            session.handle_input(now, Input::ControlEof);
            ControlRead::Closed
        }
        Ok(n) => {
            session.handle_input(now, Input::ControlBytes(&buf[..n]));
            ControlRead::Bytes
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => ControlRead::WouldBlock,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => ControlRead::Retry,
        Err(_) => {
            session.handle_input(now, Input::ControlEof);
            ControlRead::Broken
        }
    }
}

/// Writes a session's pending control output until it is all out or the socket would
/// block. Once `broken` (the socket failed, now or before), output is dropped: nobody
/// will read it, and the session was told the peer is gone.
pub fn flush_control<S>(session: &mut wharf_core::Session, sock: &S, broken: &mut bool)
where
    for<'a> &'a S: Write,
{
    while let Some(out) = session.poll_transmit() {
        if *broken {
            let n = out.len();
            session.handle_written(n);
            continue;
        }
        match { sock }.write(out) {
            Ok(n) if n > 0 => session.handle_written(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(_) | Err(_) => {
                *broken = true;
                let now = std::time::Instant::now();
                session.handle_input(now, wharf_core::Input::ControlEof);
            }
        }
    }
}

/// How a non-blocking connect went, once its socket is writable: `None` while it is
/// still in progress, else connected (`Ok`) or the error.
pub fn connect_outcome<S: AsRawFd>(sock: &S) -> Option<io::Result<()>> {
    // SAFETY: the descriptor stays open for this borrow (`sock` outlives it).
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    let s = socket2::SockRef::from(&fd);
    match s.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match s.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
    }
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

/// Readies an accepted control connection: `TCP_NODELAY` (replies are small and
/// latency-bound) and `SO_OOBINLINE` (clients send ABOR as TCP urgent data: Python's
/// ftplib sends "ABOR\r\n" with MSG_OOB, and without OOBINLINE the kernel takes its last
/// byte out of the stream, so the line never ends).
pub fn prepare_control<S: AsRawFd>(sock: &S) {
    let fd = sock.as_raw_fd();
    let on: libc::c_int = 1;
    for (level, opt) in [
        (libc::IPPROTO_TCP, libc::TCP_NODELAY),
        (libc::SOL_SOCKET, libc::SO_OOBINLINE),
    ] {
        // SAFETY: a valid descriptor and a c_int option value that outlives the call.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// A descriptor held in reserve, so that out of descriptors the backlog can still be
/// accepted, told the server is busy, and closed, rather than left hanging.
pub struct Spare(Option<std::fs::File>);

impl Default for Spare {
    fn default() -> Spare {
        Spare(std::fs::File::open("/dev/null").ok())
    }
}

impl Spare {
    /// Out of descriptors: accepts (with `accept`) and refuses up to `budget` waiting
    /// connections, each through the reserved descriptor, which is taken back after each
    /// connection is closed (so it is there for the next burst too). Returns how many
    /// were refused.
    pub fn refuse_backlog<S>(
        &mut self,
        mut accept: impl FnMut() -> io::Result<(S, SocketAddr)>,
        reply: &[u8],
        budget: usize,
    ) -> usize
    where
        for<'a> &'a S: Write,
    {
        let mut refused = 0;
        for _ in 0..budget {
            self.0 = None;
            let accepted = accept();
            if let Ok((stream, peer)) = accepted {
                tracing::debug!(%peer, "refused: out of descriptors");
                // Best effort: a fresh socket's buffer takes a short reply.
                let _ = (&stream).write(reply);
                drop(stream);
                refused += 1;
                self.0 = std::fs::File::open("/dev/null").ok();
                continue;
            }
            self.0 = std::fs::File::open("/dev/null").ok();
            break;
        }
        refused
    }
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
