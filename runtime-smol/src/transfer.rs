//! One running transfer, as an async function: moves a body between a file (or rendered
//! bytes) and a data connection through one buffer allocated for the transfer's life.
//!
//! The layers are kept apart so that a transform can sit between the body and the
//! socket:
//!
//! ```text
//! file / rendered bytes  <->  TYPE A codec (optional)  <->  DataStream  <->  socket
//! ```
//!
//! [`DataStream`] carries plaintext: straight to the socket (offering `sendfile(2)` when
//! nothing transforms the bytes), or under `PROT P` through the core's `DataTls`, which
//! it pumps: handshake first (no plaintext moves until the core has checked the
//! connection's session binding), encryption in `write`, decryption in `read`, and
//! close_notify written out in `finish` before the transfer reports itself done.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use smol::{Async, Timer};
use wharf_core::backend::OpenFile;
use wharf_core::policy::TokenBucket;
use wharf_core::tls::{DataTls, DataTlsError};
use wharf_core::typea::{FromNetAscii, ToNetAscii};
use wharf_core::{FileHandle, FsError, TransferId, TransferOutcome};

use wharf_net::{is_socket_error, sendfile};

/// The limits a transfer runs under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PumpLimits {
    pub buffer: usize,
    pub budget: usize,
    pub use_sendfile: bool,
}

/// Why a [`DataStream`] operation failed.
pub(crate) enum StreamError {
    /// The socket failed (the peer went away).
    Io(io::Error),
    /// The data connection's TLS failed.
    Tls(DataTlsError),
}

/// A data connection's TLS and the ciphertext read ahead of it.
struct TlsLayer {
    conn: DataTls,
    /// Ciphertext read from the socket; `cipher[start..end]` is not yet taken by TLS (one
    /// socket read feeds TLS many records, and the bytes a client sends right after its
    /// handshake are kept for the body).
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket reached end-of-stream.
    eof: bool,
    /// A socket error met while decrypted bytes were waiting to be returned; the next
    /// read returns it.
    error: Option<io::Error>,
}

/// A data connection carrying a body's plaintext: straight to the socket, or through
/// the core's [`DataTls`] under `PROT P` (handshake first, close_notify at the end).
pub(crate) struct DataStream {
    sock: Arc<Async<TcpStream>>,
    tls: Option<Box<TlsLayer>>,
}

/// Writes all queued ciphertext to the socket, waiting while it is full.
async fn flush_tls(sock: &Async<TcpStream>, tls: &mut TlsLayer) -> Result<(), StreamError> {
    while tls.conn.wants_write() {
        let n = sock
            .write_with(|s| tls.conn.write_tls(&mut &*s))
            .await
            .map_err(StreamError::Io)?;
        if n == 0 {
            return Err(StreamError::Io(io::ErrorKind::WriteZero.into()));
        }
    }
    Ok(())
}

/// Gives TLS the ciphertext read ahead; returns how much it took.
fn feed_tls(tls: &mut TlsLayer) -> Result<usize, StreamError> {
    let taken = tls
        .conn
        .read_tls(&mut &tls.cipher[tls.start..tls.end])
        .map_err(|e| StreamError::Tls(DataTlsError::Protocol(e.to_string())))?;
    tls.start += taken;
    tls.conn.process().map_err(StreamError::Tls)?;
    Ok(taken)
}

/// Reads ciphertext from the socket into the read-ahead buffer (waiting for it).
async fn read_ahead(sock: &Async<TcpStream>, tls: &mut TlsLayer) -> Result<(), StreamError> {
    let cipher = &mut tls.cipher;
    let n = sock
        .read_with(|s| (&*s).read(cipher))
        .await
        .map_err(StreamError::Io)?;
    match n {
        0 => tls.eof = true,
        n => (tls.start, tls.end) = (0, n),
    }
    Ok(())
}

impl DataStream {
    /// `tls` (from `TransferSpec::tls`) wraps the connection; `read_ahead` sizes its
    /// ciphertext buffer (an upload's transfer buffer; a download reads only the
    /// handshake).
    pub(crate) fn new(
        sock: Arc<Async<TcpStream>>,
        tls: Option<DataTls>,
        read_ahead: usize,
    ) -> DataStream {
        let tls = tls.map(|conn| {
            Box::new(TlsLayer {
                conn,
                cipher: vec![0; read_ahead.max(16 * 1024)],
                start: 0,
                end: 0,
                eof: false,
                error: None,
            })
        });
        DataStream { sock, tls }
    }

    /// The socket, when bytes go to it untransformed (so `sendfile` may bypass the pump).
    fn raw(&self) -> Option<&Async<TcpStream>> {
        match self.tls {
            None => Some(&self.sock),
            Some(_) => None,
        }
    }

    /// One step of the TLS handshake: `Ok(true)` when bytes moved, `Ok(false)` once the
    /// handshake (and the core's check of the session binding) is complete, or at once
    /// without TLS.
    async fn handshake_step(&mut self) -> Result<bool, StreamError> {
        let Some(tls) = &mut self.tls else {
            return Ok(false);
        };
        if tls.conn.wants_write() {
            flush_tls(&self.sock, tls).await?;
            return Ok(true);
        }
        if !tls.conn.is_handshaking() {
            return Ok(false);
        }
        if tls.start < tls.end {
            if feed_tls(tls)? == 0 {
                let error = DataTlsError::Handshake("TLS takes no more handshake data".into());
                return Err(StreamError::Tls(error));
            }
            return Ok(true);
        }
        if tls.eof {
            let error =
                DataTlsError::Handshake("the connection closed during the handshake".into());
            return Err(StreamError::Tls(error));
        }
        read_ahead(&self.sock, tls).await?;
        Ok(true)
    }

    /// Writes some of `buf`; waits while the socket is full. Under TLS it encrypts
    /// into rustls' buffer (64 KiB) and writes the ciphertext out only when that is full
    /// (backpressure stays the socket's) or at [`Self::finish`]: a small body and its
    /// close_notify leave in one write, one segment.
    async fn write(&mut self, buf: &[u8]) -> Result<usize, StreamError> {
        let Some(tls) = &mut self.tls else {
            return (self.sock.write_with(|s| (&*s).write(buf)).await).map_err(StreamError::Io);
        };
        let n = tls.conn.write_plain(buf);
        if n > 0 {
            return Ok(n);
        }
        flush_tls(&self.sock, tls).await?;
        let n = tls.conn.write_plain(buf);
        if n == 0 && !buf.is_empty() {
            let error = DataTlsError::Protocol("the connection takes no more data".into());
            return Err(StreamError::Tls(error));
        }
        Ok(n)
    }

    /// Reads some bytes; `Ok(0)` is the end of the body (under TLS: the peer's
    /// close_notify, or end-of-stream when [`DataTls::end_of_stream`] accepts it).
    ///
    /// Under TLS it gathers decrypted records until `buf` is full or the socket has
    /// nothing more without waiting, so the file gets one write per buffer rather than
    /// one per TLS record (at most 16 KiB). A socket error behind gathered bytes is
    /// returned by the next call.
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, StreamError> {
        let Some(tls) = &mut self.tls else {
            return (self.sock.read_with(|s| (&*s).read(buf)).await).map_err(StreamError::Io);
        };
        if let Some(e) = tls.error.take() {
            return Err(StreamError::Io(e));
        }
        let mut filled = 0;
        loop {
            if tls.conn.wants_write() {
                flush_tls(&self.sock, tls).await?;
            }
            if filled == buf.len() {
                return Ok(filled);
            }
            match tls.conn.read_plain(&mut buf[filled..]) {
                Some(0) if filled > 0 => return Ok(filled),
                Some(0) => {
                    // Answer the close_notify (best effort: the peer may be gone).
                    tls.conn.close();
                    let _ = tls.conn.write_tls(&mut self.sock.get_ref());
                    return Ok(0);
                }
                Some(n) => {
                    filled += n;
                    continue;
                }
                None => {}
            }
            if tls.start < tls.end {
                if feed_tls(tls)? == 0 && !tls.conn.peer_closed() {
                    let error = DataTlsError::Protocol("data after close_notify".into());
                    return Err(StreamError::Tls(error));
                }
                continue;
            }
            if tls.eof {
                if filled > 0 {
                    return Ok(filled);
                }
                return tls
                    .conn
                    .end_of_stream()
                    .map(|()| 0)
                    .map_err(StreamError::Tls);
            }
            if filled == 0 {
                read_ahead(&self.sock, tls).await?;
                continue;
            }
            // Bytes are gathered: read more only if the socket has them now.
            match (&mut self.sock.get_ref()).read(&mut tls.cipher) {
                Ok(0) => tls.eof = true,
                Ok(n) => (tls.start, tls.end) = (0, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tls.error = Some(e);
                    return Ok(filled);
                }
            }
        }
    }

    /// Marks the end of a body sent: close_notify under TLS (written out), then a FIN,
    /// which tells the client the body is complete.
    async fn finish(&mut self) -> Result<(), StreamError> {
        if let Some(tls) = &mut self.tls {
            tls.conn.close();
            flush_tls(&self.sock, tls).await?;
        }
        // If even the FIN fails, the bytes are out all the same.
        let _ = self.sock.get_ref().shutdown(Shutdown::Write);
        Ok(())
    }

    /// After a TLS failure: writes the alert rustls queued, if the socket takes it now.
    fn send_alert(&mut self) {
        if let Some(tls) = &mut self.tls {
            let _ = tls.conn.write_tls(&mut self.sock.get_ref());
        }
    }
}

/// How far a transfer got, shared with the session for coalesced progress reports: the
/// transfer stores its running total and sends one `Progress` event until the session
/// takes it (clearing `noted`), however many steps happen meanwhile.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    pub bytes: AtomicU64,
    pub noted: AtomicBool,
}

impl Progress {
    /// Records the running total; true when the session should be told.
    pub(crate) fn update(&self, bytes: u64) -> bool {
        self.bytes.store(bytes, Ordering::Release);
        !self.noted.swap(true, Ordering::AcqRel)
    }

    /// Records the running total without noting it.
    pub(crate) fn set(&self, bytes: u64) {
        self.bytes.store(bytes, Ordering::Release);
    }

    /// Takes the total for a report; the next update notes again.
    pub(crate) fn take(&self) -> u64 {
        self.noted.store(false, Ordering::Release);
        self.bytes.load(Ordering::Acquire)
    }

    /// A note whose event could not be sent: let the next update try again.
    pub(crate) fn unnote(&self) {
        self.noted.store(false, Ordering::Release);
    }
}

/// What a transfer moves.
pub(crate) enum Body {
    /// An open file to the socket; `raw_fd` is set when `sendfile` may be used.
    Send {
        raw_fd: Option<RawFd>,
        ascii: Option<ToNetAscii>,
    },
    /// Rendered bytes (a listing), already in the buffer, sent `step` at a time.
    Bytes { step: usize },
    /// The socket into an open file.
    Receive { ascii: Option<FromNetAscii> },
}

pub(crate) struct Transfer {
    pub xfer: TransferId,
    stream: DataStream,
    /// The open file this transfer reads or writes, returned to the session when it ends
    /// (an upload stays open until `CloseFile`).
    pub file: Option<(FileHandle, OpenFile)>,
    body: Body,
    /// The transfer's buffer (for `Bytes`, the rendered body itself).
    buf: Vec<u8>,
    /// A second buffer for the TYPE A codec's raw side.
    raw: Vec<u8>,
    /// Bytes moved over the data connection so far.
    pub bytes: u64,
    progress: Arc<Progress>,
    /// The bandwidth limit (`TransferSpec::rate_limit`): each step waits until the
    /// bucket grants bytes, and is charged what it moved.
    pub rate: Option<TokenBucket>,
    /// An upload's size limit (`TransferSpec::max_bytes`): nothing past it is written.
    pub max_bytes: Option<u64>,
    /// No progress report before this (see [`PROGRESS_EVERY`]).
    next_report: Instant,
}

/// The shortest time between two progress reports of a transfer (and before the first).
/// Each report wakes the session's task, often on another thread; at the speed of a
/// loopback transfer one per step (a buffer) cost more CPU than the transfer's own
/// syscalls, and a small PROT P download paid one per handshake step. The core needs
/// progress for timers counted in seconds (stall, minimum rate) and for STAT, and the
/// end of the transfer carries the final count.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

impl Transfer {
    /// A download of an open file (`ascii`: TYPE A).
    pub(crate) fn send_file(
        xfer: TransferId,
        stream: DataStream,
        file: (FileHandle, OpenFile),
        ascii: bool,
        lim: PumpLimits,
        progress: Arc<Progress>,
    ) -> Transfer {
        let raw_fd = match &file.1 {
            OpenFile::Read(d) if lim.use_sendfile && !ascii && stream.raw().is_some() => d.raw_fd(),
            _ => None,
        };
        let (buf, raw) = match (raw_fd.is_some(), ascii) {
            (true, _) => (Vec::new(), Vec::new()),
            (false, false) => (vec![0; lim.buffer], Vec::new()),
            (false, true) => (Vec::with_capacity(lim.buffer), vec![0; lim.buffer / 2]),
        };
        let body = Body::Send {
            raw_fd,
            ascii: ascii.then(ToNetAscii::default),
        };
        Transfer::new(xfer, stream, Some(file), body, buf, raw, progress)
    }

    /// Rendered bytes to the socket, at most `lim.buffer` of them per step (so that a
    /// long listing is paced like a file).
    pub(crate) fn send_bytes(
        xfer: TransferId,
        stream: DataStream,
        bytes: Vec<u8>,
        lim: PumpLimits,
        progress: Arc<Progress>,
    ) -> Transfer {
        let body = Body::Bytes { step: lim.buffer };
        Transfer::new(xfer, stream, None, body, bytes, Vec::new(), progress)
    }

    /// An upload into an open file (`ascii`: TYPE A).
    pub(crate) fn receive(
        xfer: TransferId,
        stream: DataStream,
        file: (FileHandle, OpenFile),
        ascii: bool,
        lim: PumpLimits,
        progress: Arc<Progress>,
    ) -> Transfer {
        let raw = match ascii {
            true => Vec::with_capacity(lim.buffer),
            false => Vec::new(),
        };
        let body = Body::Receive {
            ascii: ascii.then(FromNetAscii::default),
        };
        Transfer::new(
            xfer,
            stream,
            Some(file),
            body,
            vec![0; lim.buffer],
            raw,
            progress,
        )
    }

    fn new(
        xfer: TransferId,
        stream: DataStream,
        file: Option<(FileHandle, OpenFile)>,
        body: Body,
        buf: Vec<u8>,
        raw: Vec<u8>,
        progress: Arc<Progress>,
    ) -> Transfer {
        Transfer {
            xfer,
            stream,
            file,
            body,
            buf,
            raw,
            bytes: 0,
            progress,
            rate: None,
            max_bytes: None,
            // A transfer over within PROGRESS_EVERY (a small file, a short listing) needs
            // no report at all: its end carries the count.
            next_report: Instant::now() + PROGRESS_EVERY,
        }
    }

    fn lost(&self) -> TransferOutcome {
        TransferOutcome::ConnectionLost { bytes: self.bytes }
    }

    /// The outcome of a failed stream operation.
    fn stream_failed(&mut self, e: StreamError) -> TransferOutcome {
        match e {
            StreamError::Io(_) => self.lost(),
            StreamError::Tls(error) => {
                self.stream.send_alert();
                TransferOutcome::Tls {
                    bytes: self.bytes,
                    error,
                }
            }
        }
    }

    fn storage_error(&self, e: &io::Error) -> TransferOutcome {
        TransferOutcome::Storage {
            bytes: self.bytes,
            error: FsError::from_io(e),
        }
    }

    /// Counts `n` more bytes; calls `report` when the session should hear of it: it has
    /// taken the previous report, and [`PROGRESS_EVERY`] has passed since that one.
    fn moved(&mut self, n: usize, report: &mut impl FnMut()) {
        self.bytes += n as u64;
        let now = Instant::now();
        if now < self.next_report {
            self.progress.set(self.bytes);
        } else if self.progress.update(self.bytes) {
            self.next_report = now + PROGRESS_EVERY;
            report();
        }
    }

    /// Runs the transfer to its end. Every `budget` bytes it yields to the executor, so
    /// a fast transfer cannot starve the sessions sharing its thread.
    pub(crate) async fn run(&mut self, budget: usize, mut report: impl FnMut()) -> TransferOutcome {
        let budget = budget.max(1) as u64;
        let mut since_yield = 0u64;
        // The handshake moves no body byte, but it is progress for the stall timer.
        loop {
            match self.stream.handshake_step().await {
                Ok(true) => self.moved(0, &mut report),
                Ok(false) => break,
                Err(e) => return self.stream_failed(e),
            }
        }
        loop {
            if let Some(bucket) = &mut self.rate {
                let now = Instant::now();
                if bucket.available(now) == 0 {
                    Timer::at(bucket.ready_at(now)).await;
                }
            }
            let before = self.bytes;
            let step = match self.body {
                Body::Receive { .. } => self.receive_some(&mut report).await,
                Body::Send { .. } | Body::Bytes { .. } => self.send_some(&mut report).await,
            };
            if let Some(bucket) = &mut self.rate {
                bucket.consume(Instant::now(), self.bytes - before);
            }
            if let Some(outcome) = step {
                return outcome;
            }
            since_yield += self.bytes - before;
            if since_yield >= budget {
                since_yield = 0;
                smol::future::yield_now().await;
            }
        }
    }

    /// Sends the next piece of the body; `Some` when the transfer is over.
    async fn send_some(&mut self, report: &mut impl FnMut()) -> Option<TransferOutcome> {
        if let Body::Send {
            raw_fd: Some(fd), ..
        } = self.body
        {
            return self.sendfile_some(fd, report).await;
        }
        let len = match self.body {
            Body::Bytes { step } => {
                // The rendered body is the buffer; `bytes` is how much of it is out.
                let at = self.bytes as usize;
                if at >= self.buf.len() {
                    return Some(self.complete_send().await);
                }
                self.buf.len().min(at.saturating_add(step.max(1)))
            }
            _ => match self.fill() {
                Ok(0) => return Some(self.complete_send().await),
                Ok(n) => n,
                Err(outcome) => return Some(outcome),
            },
        };
        let mut start = match self.body {
            Body::Bytes { .. } => self.bytes as usize,
            _ => 0,
        };
        while start < len {
            match self.stream.write(&self.buf[start..len]).await {
                Ok(0) => return Some(self.lost()),
                Ok(n) => {
                    start += n;
                    self.moved(n, report);
                }
                Err(StreamError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Some(self.stream_failed(e)),
            }
        }
        None
    }

    async fn complete_send(&mut self) -> TransferOutcome {
        match self.stream.finish().await {
            Ok(()) => TransferOutcome::Complete { bytes: self.bytes },
            Err(e) => self.stream_failed(e),
        }
    }

    async fn sendfile_some(
        &mut self,
        fd: RawFd,
        report: &mut impl FnMut(),
    ) -> Option<TransferOutcome> {
        let Some(sock) = self.stream.raw() else {
            return Some(self.lost());
        };
        let chunk = 1 << 20;
        match sock.write_with(|s| sendfile(s, fd, chunk)).await {
            Ok(0) => Some(self.complete_send().await),
            Ok(n) => {
                self.moved(n, report);
                None
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) if is_socket_error(&e) => Some(self.lost()),
            Err(e) => Some(self.storage_error(&e)),
        }
    }

    /// Refills the buffer from the file (through the TYPE A encoder if on); returns how
    /// many bytes it holds, 0 at the end of the file.
    fn fill(&mut self) -> Result<usize, TransferOutcome> {
        let Some((_, OpenFile::Read(file))) = &mut self.file else {
            return Ok(0);
        };
        let Body::Send { ascii, .. } = &mut self.body else {
            return Ok(0);
        };
        loop {
            let r = match ascii {
                None => file.read(&mut self.buf),
                Some(codec) => file.read(&mut self.raw).map(|n| {
                    self.buf.clear();
                    codec.encode(&self.raw[..n], &mut self.buf);
                    // An all-empty read is the end; encoded output is never shorter.
                    self.buf.len()
                }),
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.storage_error(&e)),
            }
        }
    }

    /// One read from the connection, written through to the file; `Some` when over.
    async fn receive_some(&mut self, report: &mut impl FnMut()) -> Option<TransferOutcome> {
        let n = match self.stream.read(&mut self.buf).await {
            Ok(n) => n,
            Err(StreamError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => return None,
            Err(e) => return Some(self.stream_failed(e)),
        };
        let Some((_, OpenFile::Write(file))) = &mut self.file else {
            return Some(self.storage_error(&io::Error::other("upload file is not open")));
        };
        let Body::Receive { ascii } = &mut self.body else {
            return Some(self.lost());
        };
        // Bytes past the upload limit are not written: the transfer ends there.
        let room = self.max_bytes.map(|max| max.saturating_sub(self.bytes));
        let keep = room.map_or(n, |room| n.min(usize::try_from(room).unwrap_or(n)));
        let r = match ascii {
            None => file.write_all(&self.buf[..keep]),
            Some(codec) => {
                self.raw.clear();
                if n == 0 {
                    codec.finish(&mut self.raw);
                } else {
                    codec.decode(&self.buf[..keep], &mut self.raw);
                }
                file.write_all(&self.raw)
            }
        };
        let r = r.and_then(|()| if n == 0 { file.flush() } else { Ok(()) });
        if let Err(e) = r {
            return Some(self.storage_error(&e));
        }
        if n == 0 {
            return Some(TransferOutcome::Complete { bytes: self.bytes });
        }
        self.moved(n, report);
        if keep < n {
            return Some(TransferOutcome::Aborted { bytes: self.bytes });
        }
        None
    }
}
