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
//! [`DataStream`] carries plaintext. Today it writes straight to the socket (and offers
//! `sendfile(2)` when nothing transforms the bytes); a data-channel TLS layer becomes a
//! second variant that encrypts in `write`, decrypts in `read` and sends `close_notify`
//! in `finish`, with no change to the pump.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use smol::{Async, Timer};
use wharf_core::backend::OpenFile;
use wharf_core::policy::TokenBucket;
use wharf_core::typea::{FromNetAscii, ToNetAscii};
use wharf_core::{FileHandle, FsError, TransferId, TransferOutcome};

use crate::sys::{is_socket_error, sendfile};

/// The limits a transfer runs under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PumpLimits {
    pub buffer: usize,
    pub budget: usize,
    pub use_sendfile: bool,
}

/// A data connection carrying a body's plaintext.
pub(crate) struct DataStream {
    sock: Arc<Async<TcpStream>>,
}

impl DataStream {
    pub(crate) fn plain(sock: Arc<Async<TcpStream>>) -> DataStream {
        DataStream { sock }
    }

    /// The socket, when bytes go to it untransformed (so `sendfile` may bypass the pump).
    fn raw(&self) -> Option<&Async<TcpStream>> {
        Some(&self.sock)
    }

    /// Writes some of `buf`; waits while the socket is full.
    async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write_with(|s| (&*s).write(buf)).await
    }

    /// Reads some bytes; `Ok(0)` is the end of the body.
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read_with(|s| (&*s).read(buf)).await
    }

    /// Marks the end of a body sent: a FIN tells the client it is complete.
    async fn finish(&self) -> io::Result<()> {
        self.sock.get_ref().shutdown(Shutdown::Write)
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
}

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

    /// Counts `n` more bytes; calls `report` when the session should hear of it (it has
    /// taken the previous report).
    fn moved(&mut self, n: usize, report: &mut impl FnMut()) {
        self.bytes += n as u64;
        if self.progress.update(self.bytes) {
            report();
        }
    }

    /// Runs the transfer to its end. Every `budget` bytes it yields to the executor, so
    /// a fast transfer cannot starve the sessions sharing its thread.
    pub(crate) async fn run(&mut self, budget: usize, mut report: impl FnMut()) -> TransferOutcome {
        let budget = budget.max(1) as u64;
        let mut since_yield = 0u64;
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
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(self.lost()),
            }
        }
        None
    }

    async fn complete_send(&mut self) -> TransferOutcome {
        // A clean end tells the client the body is complete; if even that fails, the
        // bytes are out all the same.
        let _ = self.stream.finish().await;
        TransferOutcome::Complete { bytes: self.bytes }
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
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
            Err(_) => return Some(self.lost()),
        };
        let Some((_, OpenFile::Write(file))) = &mut self.file else {
            return Some(self.storage_error(&io::Error::other("upload file is not open")));
        };
        let Body::Receive { ascii } = &mut self.body else {
            return Some(self.lost());
        };
        let r = match ascii {
            None => file.write_all(&self.buf[..n]),
            Some(codec) => {
                self.raw.clear();
                if n == 0 {
                    codec.finish(&mut self.raw);
                } else {
                    codec.decode(&self.buf[..n], &mut self.raw);
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
        None
    }
}
