//! One running transfer: moves a body between a file (or rendered bytes) and a data
//! socket, a budget at a time, without ever holding more than one buffer of it.
//!
//! Under `PROT P` the body goes through the core's [`DataTls`]: handshake first (no
//! plaintext moves until the core has checked the connection's session binding), then
//! the body through the transfer buffer (never `sendfile`), and a download ends with
//! close_notify written out before the transfer reports itself done.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::RawFd;

use mio::net::TcpStream;
use wharf_core::backend::OpenFile;
use wharf_core::tls::{DataTls, DataTlsError};
use wharf_core::typea::{FromNetAscii, ToNetAscii};
use wharf_core::{FileHandle, FsError, TransferId, TransferOutcome};

/// Why a pump step stopped.
#[derive(Debug)]
pub(crate) enum Step {
    /// The socket would block: wait for its next readiness event.
    Blocked,
    /// The budget is spent: run again on the next loop iteration.
    Yield,
    /// The transfer is over.
    Done(TransferOutcome),
}

enum Direction {
    /// File or bytes to the socket. `buf[start..end]` is waiting to be written.
    Send {
        sendfile: Option<RawFd>,
        ascii: Option<(ToNetAscii, Vec<u8>)>,
        eof: bool,
    },
    /// Socket to file.
    Receive {
        ascii: Option<(FromNetAscii, Vec<u8>)>,
    },
}

/// The limits a transfer runs under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PumpLimits {
    pub buffer: usize,
    pub budget: usize,
    pub use_sendfile: bool,
}

/// A data connection's TLS and its incoming ciphertext.
struct Tls {
    conn: DataTls,
    /// Ciphertext read from the socket, `cipher[start..end]` not yet taken by TLS (used
    /// by uploads: one big socket read feeds TLS many records).
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket reached end-of-stream.
    eof: bool,
    /// A download's close_notify is queued: done once it is written.
    closing: bool,
}

pub(crate) struct Transfer {
    pub xfer: TransferId,
    pub stream: TcpStream,
    tls: Option<Box<Tls>>,
    /// Handshake bytes moved since the last progress report (progress for the stall
    /// timer, though no body byte moved).
    pub handshake_progress: bool,
    /// The open file this transfer reads or writes, returned to the session's table when
    /// it ends (an upload stays open until `CloseFile`).
    pub file: Option<(FileHandle, OpenFile)>,
    dir: Direction,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes moved over the data connection so far.
    pub bytes: u64,
    /// `bytes` at the last `TransferProgress` report.
    pub reported: u64,
    /// The bandwidth limit (`TransferSpec::rate_limit`), paced by the shard's pump.
    pub rate: Option<wharf_core::policy::TokenBucket>,
    /// An upload's size limit (`TransferSpec::max_bytes`): nothing past it is written.
    pub max_bytes: Option<u64>,
}

impl Transfer {
    /// A download of an open file.
    pub(crate) fn send_file(
        xfer: TransferId,
        stream: TcpStream,
        handle: FileHandle,
        file: OpenFile,
        ascii: bool,
        lim: PumpLimits,
        tls: Option<DataTls>,
    ) -> Transfer {
        let sendfile = match &file {
            OpenFile::Read(d) if lim.use_sendfile && !ascii && tls.is_none() => d.raw_fd(),
            _ => None,
        };
        let buf = if sendfile.is_some() {
            Vec::new()
        } else {
            vec![0; lim.buffer]
        };
        let ascii = ascii.then(|| (ToNetAscii::default(), vec![0; lim.buffer / 2]));
        let dir = Direction::Send {
            sendfile,
            ascii,
            eof: false,
        };
        Transfer::new(xfer, stream, Some((handle, file)), dir, buf, tls, 0)
    }

    /// Rendered bytes (a listing) to the socket.
    pub(crate) fn send_bytes(
        xfer: TransferId,
        stream: TcpStream,
        bytes: Vec<u8>,
        tls: Option<DataTls>,
    ) -> Transfer {
        let dir = Direction::Send {
            sendfile: None,
            ascii: None,
            eof: true,
        };
        let mut t = Transfer::new(xfer, stream, None, dir, bytes, tls, 0);
        t.end = t.buf.len();
        t
    }

    /// An upload into an open file.
    pub(crate) fn receive(
        xfer: TransferId,
        stream: TcpStream,
        handle: FileHandle,
        file: OpenFile,
        ascii: bool,
        lim: PumpLimits,
        tls: Option<DataTls>,
    ) -> Transfer {
        let ascii = ascii.then(|| (FromNetAscii::default(), Vec::with_capacity(lim.buffer)));
        let dir = Direction::Receive { ascii };
        let (handle, buf) = (Some((handle, file)), vec![0; lim.buffer]);
        Transfer::new(xfer, stream, handle, dir, buf, tls, lim.buffer)
    }

    fn new(
        xfer: TransferId,
        stream: TcpStream,
        file: Option<(FileHandle, OpenFile)>,
        dir: Direction,
        buf: Vec<u8>,
        tls: Option<DataTls>,
        cipher_buffer: usize,
    ) -> Transfer {
        let tls = tls.map(|conn| {
            Box::new(Tls {
                conn,
                cipher: vec![0; cipher_buffer],
                start: 0,
                end: 0,
                eof: false,
                closing: false,
            })
        });
        Transfer {
            xfer,
            stream,
            tls,
            handshake_progress: false,
            file,
            dir,
            buf,
            start: 0,
            end: 0,
            bytes: 0,
            reported: 0,
            rate: None,
            max_bytes: None,
        }
    }

    /// Moves bytes until the socket blocks, the budget is spent or the transfer ends.
    pub(crate) fn pump(&mut self, budget: usize) -> Step {
        let before = self.bytes;
        loop {
            if self.bytes - before >= budget as u64 {
                return Step::Yield;
            }
            let r = match (&self.dir, self.tls.is_some()) {
                (Direction::Send { .. }, false) => self.send_some(),
                (Direction::Receive { .. }, false) => self.receive_some(),
                (Direction::Send { .. }, true) => self.tls_send_some(),
                (Direction::Receive { .. }, true) => self.tls_receive_some(),
            };
            match r {
                Ok(true) => continue,
                Ok(false) => return Step::Blocked,
                Err(outcome) => return Step::Done(self.ended(outcome)),
            }
        }
    }

    /// The outcome of a transfer that ended, after [`Self::salvage`] for those that
    /// ended early.
    fn ended(&mut self, outcome: TransferOutcome) -> TransferOutcome {
        match outcome {
            TransferOutcome::ConnectionLost { .. } => TransferOutcome::ConnectionLost {
                bytes: self.salvage(),
            },
            TransferOutcome::Tls { error, .. } => TransferOutcome::Tls {
                bytes: self.salvage(),
                error,
            },
            other => other,
        }
    }

    fn lost(&self) -> TransferOutcome {
        TransferOutcome::ConnectionLost { bytes: self.bytes }
    }

    fn storage_error(&self, e: &io::Error) -> TransferOutcome {
        TransferOutcome::Storage {
            bytes: self.bytes,
            error: FsError::from_io(e),
        }
    }

    /// One write (after refilling the buffer if it is empty). `Ok(false)`: blocked;
    /// `Err`: finished, with its outcome.
    fn send_some(&mut self) -> Result<bool, TransferOutcome> {
        if self.start == self.end {
            let Direction::Send { sendfile, eof, .. } = &self.dir else {
                unreachable!()
            };
            if *eof {
                // A clean FIN tells the client the body is complete.
                let _ = self.stream.shutdown(Shutdown::Write);
                return Err(TransferOutcome::Complete { bytes: self.bytes });
            }
            if let Some(fd) = *sendfile {
                return self.sendfile_some(fd);
            }
            self.fill()?;
            return Ok(true);
        }
        match (&self.stream).write(&self.buf[self.start..self.end]) {
            Ok(0) => Err(self.lost()),
            Ok(n) => {
                self.start += n;
                self.bytes += n as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Err(self.lost()),
        }
    }

    fn sendfile_some(&mut self, fd: RawFd) -> Result<bool, TransferOutcome> {
        match wharf_net::sendfile(&self.stream, fd, self.buf.capacity().max(1 << 20)) {
            Ok(0) => {
                self.set_eof();
                Ok(true)
            }
            Ok(n) => {
                self.bytes += n as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) if is_socket_error(&e) => Err(self.lost()),
            Err(e) => Err(self.storage_error(&e)),
        }
    }

    fn set_eof(&mut self) {
        if let Direction::Send { eof, .. } = &mut self.dir {
            *eof = true;
        }
    }

    /// Refills the empty buffer from the file (through the TYPE A encoder if on).
    fn fill(&mut self) -> Result<(), TransferOutcome> {
        let Some((_, OpenFile::Read(file))) = &mut self.file else {
            self.set_eof();
            return Ok(());
        };
        let Direction::Send { ascii, eof, .. } = &mut self.dir else {
            unreachable!()
        };
        self.start = 0;
        self.end = 0;
        let r = match ascii {
            None => file.read(&mut self.buf).inspect(|&n| self.end = n),
            Some((codec, raw)) => file.read(raw).inspect(|&n| {
                self.buf.clear();
                codec.encode(&raw[..n], &mut self.buf);
                self.end = self.buf.len();
            }),
        };
        match r {
            Ok(0) => *eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(self.storage_error(&e)),
        }
        Ok(())
    }

    /// One read from the socket, written through to the file.
    fn receive_some(&mut self) -> Result<bool, TransferOutcome> {
        let n = match (&self.stream).read(&mut self.buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(true),
            Err(_) => return Err(self.lost()),
        };
        self.store(n)?;
        if n == 0 {
            return Err(TransferOutcome::Complete { bytes: self.bytes });
        }
        Ok(true)
    }

    /// Writes `buf[..n]` to the upload's file (through the TYPE A decoder if on); `n == 0`
    /// is the end of the body: flush. Bytes past `max_bytes` are not written: the
    /// transfer ends there, `Aborted` with every byte received counted.
    fn store(&mut self, n: usize) -> Result<(), TransferOutcome> {
        let room = self.max_bytes.map(|max| max.saturating_sub(self.bytes));
        let keep = room.map_or(n, |room| n.min(usize::try_from(room).unwrap_or(n)));
        let Some((_, OpenFile::Write(file))) = &mut self.file else {
            return Err(self.storage_error(&io::Error::other("upload file is not open")));
        };
        let Direction::Receive { ascii } = &mut self.dir else {
            unreachable!()
        };
        let r = match ascii {
            None => file.write_all(&self.buf[..keep]),
            Some((codec, out)) => {
                out.clear();
                if n == 0 {
                    codec.finish(out);
                } else {
                    codec.decode(&self.buf[..keep], out);
                }
                file.write_all(out)
            }
        };
        let r = r.and_then(|()| if n == 0 { file.flush() } else { Ok(()) });
        if let Err(e) = r {
            return Err(self.storage_error(&e));
        }
        self.bytes += n as u64;
        if keep < n {
            return Err(TransferOutcome::Aborted { bytes: self.bytes });
        }
        Ok(())
    }

    fn tls_failed(&mut self, error: DataTlsError) -> TransferOutcome {
        // Best effort: the alert (or close_notify) rustls queued.
        if let Some(tls) = &mut self.tls {
            let _ = tls.conn.write_tls(&mut &self.stream);
        }
        TransferOutcome::Tls {
            bytes: self.bytes,
            error,
        }
    }

    /// Writes queued ciphertext. `Ok(Some(progress))`: wrote, or had nothing to write
    /// (`false`); `Ok(None)`: the socket would block.
    fn tls_flush(&mut self) -> Result<Option<bool>, TransferOutcome> {
        let Some(tls) = &mut self.tls else {
            return Ok(Some(false));
        };
        if !tls.conn.wants_write() {
            return Ok(Some(false));
        }
        match tls.conn.write_tls(&mut &self.stream) {
            Ok(0) => Err(self.lost()),
            Ok(_) => {
                self.handshake_progress |= tls.conn.is_handshaking();
                Ok(Some(true))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Some(true)),
            Err(_) => Err(self.lost()),
        }
    }

    /// During the handshake: one read of ciphertext from the socket into TLS.
    fn tls_handshake_read(&mut self) -> Result<bool, TransferOutcome> {
        let Some(tls) = &mut self.tls else {
            return Ok(false);
        };
        match tls.conn.read_tls(&mut &self.stream) {
            Ok(0) => {
                let error =
                    DataTlsError::Handshake("the connection closed during the handshake".into());
                Err(self.tls_failed(error))
            }
            Ok(_) => {
                self.handshake_progress = true;
                match tls.conn.process() {
                    Ok(()) => Ok(true),
                    Err(e) => Err(self.tls_failed(e)),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(_) => Err(self.lost()),
        }
    }

    /// A download under TLS: finish the handshake, then flush ciphertext and encrypt
    /// the body a buffer at a time; close_notify once the body is out. The file is read
    /// before the last ciphertext goes out, so the end of the body is known, and
    /// close_notify queued behind it, by then: a small body and its close_notify leave
    /// in one write, one segment.
    fn tls_send_some(&mut self) -> Result<bool, TransferOutcome> {
        let tls = self.tls.as_mut().expect("a TLS transfer");
        if tls.conn.is_handshaking() {
            return match self.tls_flush()? {
                None => Ok(false),
                Some(true) => Ok(true),
                Some(false) => self.tls_handshake_read(),
            };
        }
        if self.start == self.end && !tls.closing {
            let Direction::Send { eof, .. } = &self.dir else {
                unreachable!()
            };
            if *eof {
                tls.conn.close();
                tls.closing = true;
            } else {
                self.fill()?;
            }
            return Ok(true);
        }
        match self.tls_flush()? {
            None => return Ok(false),
            Some(true) => return Ok(true),
            Some(false) => {}
        }
        let tls = self.tls.as_mut().expect("a TLS transfer");
        if tls.closing {
            // close_notify is out: a clean FIN follows.
            let _ = self.stream.shutdown(Shutdown::Write);
            return Err(TransferOutcome::Complete { bytes: self.bytes });
        }
        let n = tls.conn.write_plain(&self.buf[self.start..self.end]);
        if n == 0 && !tls.conn.wants_write() {
            let error = DataTlsError::Protocol("the connection takes no more data".into());
            return Err(self.tls_failed(error));
        }
        self.start += n;
        self.bytes += n as u64;
        Ok(true)
    }

    /// An upload under TLS: decrypted bytes gather in the transfer buffer, then
    /// ciphertext from the read-ahead buffer goes into TLS, then one socket read refills
    /// that. The file gets one write per full buffer, or when the socket has nothing
    /// more for now, rather than one per TLS record (at most 16 KiB). The body ends with
    /// the peer's close_notify, or at end-of-stream as [`DataTls::end_of_stream`] judges.
    fn tls_receive_some(&mut self) -> Result<bool, TransferOutcome> {
        match self.tls_flush()? {
            // Only the handshake needs our bytes to arrive before the peer goes on.
            None if self.tls.as_ref().is_some_and(|t| t.conn.is_handshaking()) => return Ok(false),
            Some(true) => return Ok(true),
            _ => {}
        }
        if self.end == self.buf.len() {
            self.store_pending()?;
        }
        let tls = self.tls.as_mut().expect("a TLS transfer");
        match tls.conn.read_plain(&mut self.buf[self.end..]) {
            Some(0) => {
                // Answer the close_notify (best effort; the peer may be gone already).
                tls.conn.close();
                let _ = tls.conn.write_tls(&mut &self.stream);
                self.store_pending()?;
                self.store(0)?;
                return Err(TransferOutcome::Complete { bytes: self.bytes });
            }
            Some(n) => {
                self.end += n;
                // Past the size limit: write what fits and end now, not a buffer later.
                let over = self
                    .max_bytes
                    .is_some_and(|max| self.bytes + self.end as u64 > max);
                if over {
                    self.store_pending()?;
                }
                return Ok(true);
            }
            None => {}
        }
        if tls.start < tls.end {
            let handshaking = tls.conn.is_handshaking();
            let taken = match tls.conn.read_tls(&mut &tls.cipher[tls.start..tls.end]) {
                Ok(n) => n,
                Err(e) => return Err(self.tls_failed(DataTlsError::Protocol(e.to_string()))),
            };
            tls.start += taken;
            self.handshake_progress |= handshaking;
            if let Err(e) = tls.conn.process() {
                return Err(self.tls_failed(e));
            }
            if taken == 0 && !tls.conn.peer_closed() {
                let error = DataTlsError::Protocol("data after close_notify".into());
                return Err(self.tls_failed(error));
            }
            return Ok(true);
        }
        if tls.eof {
            return match tls.conn.end_of_stream() {
                Ok(()) => {
                    self.store_pending()?;
                    self.store(0)?;
                    Err(TransferOutcome::Complete { bytes: self.bytes })
                }
                Err(e) => Err(self.tls_failed(e)),
            };
        }
        match (&self.stream).read(&mut tls.cipher) {
            Ok(0) => tls.eof = true,
            Ok(n) => (tls.start, tls.end) = (0, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing more for now: the file gets what has gathered.
                self.store_pending()?;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(self.lost()),
        }
        Ok(true)
    }

    /// Writes the decrypted bytes gathered in `buf[..end]` (an upload under TLS).
    fn store_pending(&mut self) -> Result<(), TransferOutcome> {
        let n = std::mem::take(&mut self.end);
        match n {
            0 => Ok(()),
            n => self.store(n),
        }
    }

    /// When an upload under TLS ends early (the connection lost, a TLS error, an
    /// abort): writes what it had received and decrypted but not yet written, as an
    /// unbatched upload would have, and returns the byte count then reached.
    pub(crate) fn salvage(&mut self) -> u64 {
        if matches!(self.dir, Direction::Receive { .. }) && self.tls.is_some() {
            let _ = self.store_pending();
        }
        self.bytes
    }
}

/// Whether a `sendfile` error came from the socket side (the peer went away) rather
/// than from reading the file.
fn is_socket_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ETIMEDOUT)
    )
}
