//! One running transfer: moves a body between a file (or rendered bytes) and a data
//! socket, a budget at a time, without ever holding more than one buffer of it.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::RawFd;

use mio::net::TcpStream;
use wharf_core::backend::OpenFile;
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

pub(crate) struct Transfer {
    pub xfer: TransferId,
    pub stream: TcpStream,
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
    ) -> Transfer {
        let sendfile = match &file {
            OpenFile::Read(d) if lim.use_sendfile && !ascii => d.raw_fd(),
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
        Transfer::new(xfer, stream, Some((handle, file)), dir, buf)
    }

    /// Rendered bytes (a listing) to the socket.
    pub(crate) fn send_bytes(xfer: TransferId, stream: TcpStream, bytes: Vec<u8>) -> Transfer {
        let dir = Direction::Send {
            sendfile: None,
            ascii: None,
            eof: true,
        };
        let mut t = Transfer::new(xfer, stream, None, dir, bytes);
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
    ) -> Transfer {
        let ascii = ascii.then(|| (FromNetAscii::default(), Vec::with_capacity(lim.buffer)));
        let dir = Direction::Receive { ascii };
        Transfer::new(xfer, stream, Some((handle, file)), dir, vec![0; lim.buffer])
    }

    fn new(
        xfer: TransferId,
        stream: TcpStream,
        file: Option<(FileHandle, OpenFile)>,
        dir: Direction,
        buf: Vec<u8>,
    ) -> Transfer {
        Transfer {
            xfer,
            stream,
            file,
            dir,
            buf,
            start: 0,
            end: 0,
            bytes: 0,
            reported: 0,
            rate: None,
        }
    }

    /// Moves bytes until the socket blocks, the budget is spent or the transfer ends.
    pub(crate) fn pump(&mut self, budget: usize) -> Step {
        let before = self.bytes;
        loop {
            if self.bytes - before >= budget as u64 {
                return Step::Yield;
            }
            let r = match self.dir {
                Direction::Send { .. } => self.send_some(),
                Direction::Receive { .. } => self.receive_some(),
            };
            match r {
                Ok(true) => continue,
                Ok(false) => return Step::Blocked,
                Err(outcome) => return Step::Done(outcome),
            }
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
        match crate::sys::sendfile(&self.stream, fd, self.buf.capacity().max(1 << 20)) {
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
        let Some((_, OpenFile::Write(file))) = &mut self.file else {
            return Err(self.storage_error(&io::Error::other("upload file is not open")));
        };
        let Direction::Receive { ascii } = &mut self.dir else {
            unreachable!()
        };
        let r = match ascii {
            None => file.write_all(&self.buf[..n]),
            Some((codec, out)) => {
                out.clear();
                if n == 0 {
                    codec.finish(out);
                } else {
                    codec.decode(&self.buf[..n], out);
                }
                file.write_all(out)
            }
        };
        let r = r.and_then(|()| if n == 0 { file.flush() } else { Ok(()) });
        if let Err(e) = r {
            return Err(self.storage_error(&e));
        }
        self.bytes += n as u64;
        if n == 0 {
            return Err(TransferOutcome::Complete { bytes: self.bytes });
        }
        Ok(true)
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
