//! The transfer pump: everything a transfer decides, as a sans-IO object the driver owns.
//!
//! A session hands one [`Pump`] per transfer to its driver in
//! [`crate::Action::StartTransfer`]. The pump owns what a transfer decides: TYPE A
//! conversion, the data connection's TLS (handshake, the binding to the control session,
//! records, close_notify, the meaning of end-of-stream), the exact upload-size cut,
//! pacing under a bandwidth limit, the stall and minimum-rate rules, progress reports, and
//! the outcome. The driver owns the data socket and the open file and lends them to the
//! pump through [`DataIo`] for each [`Pump::run`]; the pump never blocks and never reads a
//! clock: `now` comes in.
//!
//! # The drive rule
//!
//! ```text
//! loop {
//!     match pump.run(now, &mut io, budget) {
//!         Run::Readable => wait until the socket is readable (or the pump's timeout),
//!         Run::Writable => wait until it is writable (or the timeout),
//!         Run::File     => wait until the file side can go on (or the timeout),
//!         Run::Wait     => wait for the pump's timeout (pacing),
//!         Run::Yield    => let others run, then run again,
//!         Run::Done     => close the data connection; leave the loop,
//!     }
//!     feed every pump.poll_input() to the session;
//!     re-arm the timer from pump.poll_timeout(); when it fires, pump.handle_timeout(now).
//! }
//! ```
//!
//! After `Run::Done` the driver closes the data connection *before* it feeds the
//! `TransferDone` from [`Pump::poll_input`] (so a download's FIN precedes its `226`), and
//! gives the file back to the session's table. [`Pump::abort`] (ABOR, shutdown,
//! `Action::AbortTransfer`) ends a transfer at the next `run`, which only finishes the
//! file side (what an upload had received is written) and never waits on the socket.
//!
//! # Passthrough
//!
//! A plain binary download without a bandwidth limit needs nothing transformed: the pump
//! then asks [`DataIo::send_file`] to copy the file to the socket itself (`sendfile(2)`)
//! and counts what it reports; a driver that cannot answers `None` and the pump copies
//! through its buffer.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::time::{Duration, Instant};

use crate::backend::FsError;
use crate::ids::TransferId;
use crate::policy::TokenBucket;
use crate::session::{Input, TransferOutcome};
use crate::tls::{DataTls, DataTlsError};
use crate::typea::{FromNetAscii, ToNetAscii};

/// The data connection and the open file, as the driver lends them to [`Pump::run`].
///
/// Every method is non-blocking in an event loop (`WouldBlock` when it would wait) and
/// may block in a thread-per-connection driver. Errors are the pump's to judge: a driver
/// passes them on as they come.
pub trait DataIo {
    /// Reads from the data connection; `Ok(0)` is end-of-stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes to the data connection.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Writes several buffers to the data connection (TLS records leave this way).
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(b) => self.write(b),
            None => Ok(0),
        }
    }
    /// Half-closes the data connection: the FIN that tells the client a download's body
    /// is complete (after close_notify under TLS). Errors do not matter any more.
    fn shutdown_write(&mut self) {}
    /// Reads the file being downloaded; `Ok(0)` is its end.
    fn read_file(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes to the file being uploaded.
    fn write_file(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Flushes the upload at the end of its body.
    fn flush_file(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Copies up to `max` bytes from the download's file straight to the connection (the
    /// file's own offset advances); `Ok(0)` at the end of the file. `None`: this driver
    /// or this file cannot, and the pump copies through its buffer instead.
    fn send_file(&mut self, max: usize) -> Option<io::Result<usize>> {
        let _ = max;
        None
    }
}

/// What [`Pump::run`] stopped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Run {
    /// The connection has nothing to read: run again once it is readable.
    Readable,
    /// The connection takes nothing more: run again once it is writable.
    Writable,
    /// The file side would block (a storage that answers asynchronously): run again when
    /// it can go on.
    File,
    /// Paced: nothing may move before [`Pump::poll_timeout`].
    Wait,
    /// The budget is spent: let other work run, then run again.
    Yield,
    /// The transfer is over: close the connection, then feed [`Pump::poll_input`].
    Done,
}

/// What the pump moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An open file to the connection.
    File,
    /// Bytes the core rendered (a listing) to the connection.
    Bytes(Vec<u8>),
    /// The connection into an open file.
    Upload,
}

/// The settings a session gives a pump.
#[derive(Debug)]
pub struct PumpSpec {
    pub source: Source,
    /// TYPE A: line ends converted (never for `Source::Bytes`, rendered with CR LF).
    pub ascii: bool,
    /// `PROT P`: the connection's TLS, handshake first.
    pub tls: Option<DataTls>,
    /// Bytes per second, or unlimited.
    pub rate_limit: Option<u64>,
    /// An upload's size limit in body bytes as they arrive (before TYPE A conversion).
    pub max_bytes: Option<u64>,
    /// No byte moved for this long ends the transfer (`Stalled`).
    pub stall: Duration,
    /// The minimum rate in bytes per second, judged over each `stall` window (`TooSlow`).
    pub min_rate: Option<u64>,
}

/// How often, at most, a running transfer reports progress to its session: the session
/// needs it only for `STAT` (the pump keeps the timers that depend on progress), and
/// each report may wake another thread.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// The transfer buffer when the driver sets none.
pub const DEFAULT_BUFFER: usize = 128 * 1024;

/// How much of an upload whose file failed (a full disk) is read and thrown away, so
/// that the client can finish sending and read the `452`; past it the connection closes.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// How a transfer ends, before its byte count is attached.
#[derive(Debug, Clone)]
enum End {
    Complete,
    Lost,
    Storage(FsError),
    Aborted,
    Tls(DataTlsError),
    Stalled,
    TooSlow,
    TooLarge,
}

/// Why one step could not go on.
enum Stop {
    Blocked(Run),
    Over(End),
}

type Step = Result<(), Stop>;

/// A data connection's TLS and the ciphertext read ahead of it: one socket read feeds
/// TLS many records, and bytes a client sends right after its handshake stay for the
/// body.
struct Tls {
    conn: DataTls,
    cipher: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket reached end-of-stream.
    eof: bool,
    /// A download's close_notify is queued.
    closing: bool,
}

/// One transfer's pump. See the module docs for how a driver runs it.
pub struct Pump {
    xfer: TransferId,
    source: Source,
    tls: Option<Box<Tls>>,
    encoder: Option<ToNetAscii>,
    decoder: Option<FromNetAscii>,
    /// The transfer buffer. Downloads: `buf[start..end]` waits for the connection.
    /// Uploads: `buf[start..end]` (binary) waits for the file; under TLS, `buf[..gathered]`
    /// holds decrypted bytes not yet taken as body (never both at once).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    gathered: usize,
    allocated: bool,
    /// TYPE A's other side: a download's raw file bytes, an upload's decoded bytes
    /// (`raw[rstart..]` waits for the file).
    raw: Vec<u8>,
    rstart: usize,
    buffer_size: usize,
    /// Body bytes moved: sent (after TYPE A conversion) or received (before it).
    bytes: u64,
    max_bytes: Option<u64>,
    /// The body's source is exhausted (download) or its end was seen (upload).
    eof: bool,
    /// Sends may use `DataIo::send_file`.
    passthrough: bool,
    rate: Option<TokenBucket>,
    /// Paced until then (set when `run` returns `Wait`).
    paused_until: Option<Instant>,
    stall: Duration,
    last_activity: Instant,
    /// The minimum rate and the start of the current window with the bytes by then.
    min_rate: Option<(u64, Instant, u64)>,
    /// When and at what count progress was last reported.
    reported: (Instant, u64),
    /// Set when the transfer must end: the file side is finished first.
    ending: Option<End>,
    /// An upload whose file failed: what still arrives is read and thrown away (up to
    /// [`DRAIN_LIMIT`]), so the client finishes sending and reads the reply that says
    /// why, instead of failing on a reset connection.
    draining: Option<(End, u64)>,
    done: bool,
    inputs: VecDeque<Input<'static>>,
    /// A handshake-only pump ([`Pump::handshake_only`]) and, once it stopped, how the
    /// handshake went wrong (`None`: complete, or not yet).
    prepare: Option<Option<End>>,
}

impl std::fmt::Debug for Pump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pump")
            .field("xfer", &self.xfer)
            .field("source", &self.source_kind())
            .field("ascii", &(self.encoder.is_some() || self.decoder.is_some()))
            .field("tls", &self.tls.as_ref().map(|t| &t.conn))
            .field("rate", &self.rate.as_ref().map(TokenBucket::rate))
            .field("max_bytes", &self.max_bytes)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Two pumps are equal when they were set up alike (for transcript tests); a running
/// pump's state is not compared.
impl PartialEq for Pump {
    fn eq(&self, other: &Self) -> bool {
        self.xfer == other.xfer
            && self.source == other.source
            && self.encoder.is_some() == other.encoder.is_some()
            && self.decoder.is_some() == other.decoder.is_some()
            && self.tls.as_ref().map(|t| &t.conn) == other.tls.as_ref().map(|t| &t.conn)
            && self.rate.as_ref().map(TokenBucket::rate)
                == other.rate.as_ref().map(TokenBucket::rate)
            && self.max_bytes == other.max_bytes
            && self.stall == other.stall
            && self.min_rate.map(|m| m.0) == other.min_rate.map(|m| m.0)
    }
}

impl Eq for Pump {}

/// Errors that mean the connection went away, as opposed to the file failing (both can
/// come out of `sendfile`).
fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        e.kind(),
        K::BrokenPipe
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::TimedOut
            | K::UnexpectedEof
            | K::WriteZero
    )
}

/// A [`DataIo`]'s connection as `io::Read`/`io::Write`, for rustls.
struct Wire<'a>(&'a mut dyn DataIo);

impl Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Pump {
    /// A pump for transfer `xfer`, created at `now` (the stall and pacing clocks start).
    pub fn new(xfer: TransferId, spec: PumpSpec, now: Instant) -> Pump {
        let ascii = spec.ascii && !matches!(spec.source, Source::Bytes(_));
        let (encoder, decoder) = match (&spec.source, ascii) {
            (Source::File, true) => (Some(ToNetAscii::default()), None),
            (Source::Upload, true) => (None, Some(FromNetAscii::default())),
            _ => (None, None),
        };
        let passthrough = matches!(spec.source, Source::File)
            && !ascii
            && spec.tls.is_none()
            && spec.rate_limit.is_none();
        let mut pump = Pump {
            xfer,
            source: Source::File,
            tls: spec.tls.map(|conn| {
                Box::new(Tls {
                    conn,
                    cipher: Vec::new(),
                    start: 0,
                    end: 0,
                    eof: false,
                    closing: false,
                })
            }),
            encoder,
            decoder,
            buf: Vec::new(),
            start: 0,
            end: 0,
            gathered: 0,
            allocated: false,
            raw: Vec::new(),
            rstart: 0,
            buffer_size: DEFAULT_BUFFER,
            bytes: 0,
            max_bytes: spec
                .max_bytes
                .filter(|_| matches!(spec.source, Source::Upload)),
            eof: false,
            passthrough,
            rate: spec.rate_limit.map(|r| TokenBucket::new(r, now)),
            paused_until: None,
            stall: spec.stall,
            last_activity: now,
            min_rate: spec.min_rate.filter(|&r| r > 0).map(|r| (r, now, 0)),
            reported: (now, 0),
            ending: None,
            draining: None,
            done: false,
            inputs: VecDeque::new(),
            prepare: None,
        };
        match spec.source {
            Source::Bytes(body) => {
                pump.end = body.len();
                pump.buf = body;
                pump.eof = true;
                pump.source = Source::Bytes(Vec::new());
            }
            other => pump.source = other,
        }
        pump
    }

    /// A pump that only runs a `PROT P` data connection's TLS handshake, before the
    /// transfer command arrives (clients such as aioftp handshake first and send RETR
    /// after): see [`crate::Action::PrepareTransfer`]. It reports nothing to the session
    /// and has no timers; `run` ends with `Done` when the handshake is complete, has
    /// failed, or [`Self::abort`] was called, and the connection stays open for the
    /// transfer, whose pump takes this one's TLS over with [`Self::adopt`].
    pub fn handshake_only(tls: DataTls, now: Instant) -> Pump {
        let spec = PumpSpec {
            source: Source::Bytes(Vec::new()),
            ascii: false,
            tls: Some(tls),
            rate_limit: None,
            max_bytes: None,
            stall: Duration::ZERO,
            min_rate: None,
        };
        let mut pump = Pump::new(TransferId(0), spec, now);
        pump.prepare = Some(None);
        pump
    }

    /// Whether this is a [`Self::handshake_only`] pump.
    pub fn is_handshake_only(&self) -> bool {
        self.prepare.is_some()
    }

    /// Takes over the TLS connection (handshake state, ciphertext read ahead, a failure)
    /// of the [`Self::handshake_only`] pump that ran on this transfer's data connection
    /// (before the first `run`). A transfer without TLS, or a pump of another kind, takes
    /// nothing.
    pub fn adopt(&mut self, mut prepared: Pump) {
        let Some(failed) = prepared.prepare.take() else {
            return;
        };
        if self.tls.is_none() || self.done {
            return;
        }
        if let Some(tls) = prepared.tls.take() {
            self.tls = Some(tls);
        }
        if let Some(end) = failed {
            self.ending = Some(end);
        }
    }

    /// The transfer this pump runs.
    pub fn xfer(&self) -> TransferId {
        self.xfer
    }

    /// Whether the pump moves a file (so the driver attaches the open file).
    pub fn is_upload(&self) -> bool {
        matches!(self.source, Source::Upload)
    }

    fn source_kind(&self) -> &'static str {
        match self.source {
            Source::File => "file",
            Source::Bytes(_) => "bytes",
            Source::Upload => "upload",
        }
    }

    /// Sets the size of the transfer buffer (before the first `run`; a driver's memory
    /// budget). A paced transfer uses an eighth of a second of its rate at most, so its
    /// pacing is smooth.
    pub fn set_buffer_size(&mut self, bytes: usize) {
        self.buffer_size = bytes.max(4096);
    }

    /// Whether this pump may use `DataIo::send_file` (the driver may skip preparing it).
    pub fn wants_send_file(&self) -> bool {
        self.passthrough
    }

    /// An upload's size limit.
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// The bandwidth limit in bytes per second.
    pub fn rate_limit(&self) -> Option<u64> {
        self.rate.as_ref().map(TokenBucket::rate)
    }

    /// The minimum data rate, in bytes per second.
    pub fn min_rate(&self) -> Option<u64> {
        self.min_rate.map(|m| m.0)
    }

    /// The data connection's TLS under `PROT P` (until the pump is done).
    pub fn tls(&self) -> Option<&DataTls> {
        self.tls.as_ref().map(|t| &t.conn)
    }

    /// Whether the body is converted for TYPE A.
    pub fn is_ascii(&self) -> bool {
        self.encoder.is_some() || self.decoder.is_some()
    }

    /// Body bytes moved so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether the transfer is over (its `TransferDone` is queued or taken).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Inputs for the session: `TransferProgress` (at most every [`PROGRESS_EVERY`]) and,
    /// last, `TransferDone`. Feed `TransferDone` only after closing the connection.
    pub fn poll_input(&mut self) -> Option<Input<'static>> {
        self.inputs.pop_front()
    }

    /// When [`Self::handle_timeout`] must run next: the stall deadline, the end of the
    /// minimum-rate window, the end of a pacing pause.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done || self.prepare.is_some() {
            return None;
        }
        let stall = Some(self.last_activity + self.stall);
        let window = self.min_rate.map(|(_, since, _)| since + self.stall);
        [stall, window, self.paused_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Fires what is due: a stalled or too slow transfer ends (at the next `run`, which
    /// the driver makes at once: `Run::Done` needs no I/O); a pacing pause is over.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.done || self.ending.is_some() || self.prepare.is_some() {
            return;
        }
        if self.paused_until.is_some_and(|t| t <= now) {
            self.paused_until = None;
        }
        if now >= self.last_activity + self.stall {
            tracing::info!(xfer = %self.xfer, bytes = self.bytes, "transfer stalled");
            self.ending = Some(match self.draining.take() {
                Some((end, _)) => end,
                None => End::Stalled,
            });
            return;
        }
        if let Some((min, since, before)) = self.min_rate {
            if now >= since + self.stall {
                let secs = now.saturating_duration_since(since).as_secs_f64();
                let moved = self.bytes.saturating_sub(before);
                // A draining upload is judged by its stall timer only.
                if self.draining.is_none() && (moved as f64) < min as f64 * secs {
                    tracing::info!(xfer = %self.xfer, moved, secs, "transfer below the minimum rate");
                    self.ending = Some(End::TooSlow);
                } else {
                    self.min_rate = Some((min, now, self.bytes));
                }
            }
        }
    }

    /// Stops the transfer (ABOR, the session closing, the server stopping): the next
    /// `run` writes what an upload had received and ends with `Aborted`, without waiting
    /// on the connection.
    pub fn abort(&mut self) {
        if !self.done && self.ending.is_none() {
            self.ending = Some(match self.draining.take() {
                Some((end, _)) => end,
                None => End::Aborted,
            });
        }
    }

    /// The `TransferDone` a driver reports when it cannot start this transfer: its data
    /// connection failed before `StartTransfer`.
    pub fn connection_missing(self) -> Input<'static> {
        Input::TransferDone {
            xfer: self.xfer,
            outcome: TransferOutcome::ConnectionLost { bytes: 0 },
        }
    }

    /// Moves bytes until the connection or the file would block, the budget (bytes) is
    /// spent, pacing says wait, or the transfer is over.
    pub fn run(&mut self, now: Instant, io: &mut dyn DataIo, budget: usize) -> Run {
        if self.done {
            return Run::Done;
        }
        self.allocate();
        if self.prepare.is_some() {
            return self.run_handshake_only(now, io);
        }
        let start = self.bytes;
        let run = loop {
            if self.ending.is_some() {
                match self.finish_file_side(now, io) {
                    Ok(()) => {}
                    Err(Stop::Blocked(run)) => break run,
                    Err(Stop::Over(_)) => {}
                }
                let end = self.ending.take().unwrap_or(End::Aborted);
                self.finish(end);
                break Run::Done;
            }
            if self.bytes - start >= budget.max(1) as u64 {
                break Run::Yield;
            }
            match self.step(now, io) {
                Ok(()) => {}
                Err(Stop::Blocked(run)) => break run,
                Err(Stop::Over(end @ End::Storage(_))) if self.is_upload() => {
                    tracing::info!(xfer = %self.xfer, bytes = self.bytes, "upload failed; draining the connection");
                    self.draining = Some((end, 0));
                }
                Err(Stop::Over(end)) => {
                    if matches!(end, End::Tls(_)) {
                        // The alert (or close_notify) rustls queued.
                        self.tls_flush_best_effort(now, io);
                    }
                    self.end_with(end);
                }
            }
        };
        self.report(now);
        run
    }

    /// [`Self::run`] for a [`Self::handshake_only`] pump: handshake until it is complete
    /// (and its last flight written), fails, or the pump is aborted.
    fn run_handshake_only(&mut self, now: Instant, io: &mut dyn DataIo) -> Run {
        loop {
            let handshaking = match &self.tls {
                Some(t) => t.conn.is_handshaking(),
                None => false,
            };
            let step = match (self.ending.take(), handshaking) {
                (Some(_), _) => break,
                (None, true) => self.handshake(now, io),
                (None, false) => match self.tls_flush(now, io) {
                    Ok(true) => Ok(()),
                    Ok(false) => break,
                    Err(stop) => Err(stop),
                },
            };
            match step {
                Ok(()) => {}
                Err(Stop::Blocked(run)) => return run,
                Err(Stop::Over(end)) => {
                    if matches!(end, End::Tls(_)) {
                        self.tls_flush_best_effort(now, io);
                    }
                    self.prepare = Some(Some(end));
                    break;
                }
            }
        }
        self.done = true;
        Run::Done
    }

    /// Sets how the transfer ends; a failure under TLS first sends the alert rustls
    /// queued (best effort).
    fn end_with(&mut self, end: End) {
        if self.ending.is_none() {
            self.ending = Some(end);
        }
    }

    fn allocate(&mut self) {
        if std::mem::replace(&mut self.allocated, true) {
            return;
        }
        let mut size = self.buffer_size;
        if let Some(bucket) = &self.rate {
            size = size.min((bucket.rate() / 8).max(4096) as usize);
        }
        let upload = self.is_upload();
        let bytes = matches!(self.source, Source::Bytes(_));
        match (upload, self.encoder.is_some()) {
            // A listing is its own buffer.
            _ if bytes => {}
            // A download under TYPE A encodes into a buffer that grows as it must.
            (false, true) => {
                self.buf = Vec::with_capacity(size);
                self.raw = vec![0; size / 2];
            }
            (false, false) if self.passthrough => {}
            _ => self.buf = vec![0; size],
        }
        if let Some(t) = &mut self.tls {
            // An upload reads ciphertext ahead a buffer at a time; a download reads only
            // the handshake (and perhaps the client's close_notify).
            let read_ahead = if upload { size } else { 16 * 1024 };
            // Grown, never cut: a handshake-only pump's read-ahead may hold bytes.
            let size = read_ahead.max(16 * 1024);
            if t.cipher.len() < size {
                t.cipher.resize(size, 0);
            }
        }
    }

    /// Counts body bytes moved (and the activity that keeps the stall timer away).
    fn moved(&mut self, now: Instant, n: usize) {
        self.bytes += n as u64;
        self.last_activity = now;
        if let Some(bucket) = &mut self.rate {
            bucket.consume(now, n as u64);
        }
    }

    /// How much pacing lets move now (`usize::MAX` without a limit); `Wait` when none.
    fn allowance(&mut self, now: Instant) -> Result<usize, Stop> {
        let Some(bucket) = &mut self.rate else {
            return Ok(usize::MAX);
        };
        match bucket.available(now) {
            0 => {
                self.paused_until = Some(bucket.ready_at(now));
                Err(Stop::Blocked(Run::Wait))
            }
            n => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }

    fn report(&mut self, now: Instant) {
        if self.done {
            return;
        }
        let (at, bytes) = self.reported;
        if self.bytes != bytes && now >= at + PROGRESS_EVERY {
            self.reported = (now, self.bytes);
            self.inputs.push_back(Input::TransferProgress {
                xfer: self.xfer,
                bytes: self.bytes,
            });
        }
    }

    fn finish(&mut self, end: End) {
        let bytes = self.bytes;
        let outcome = match end {
            End::Complete => TransferOutcome::Complete { bytes },
            End::Lost => TransferOutcome::ConnectionLost { bytes },
            End::Storage(error) => TransferOutcome::Storage { bytes, error },
            End::Aborted => TransferOutcome::Aborted { bytes },
            End::Tls(error) => TransferOutcome::Tls { bytes, error },
            End::Stalled => TransferOutcome::Stalled { bytes },
            End::TooSlow => TransferOutcome::TooSlow { bytes },
            End::TooLarge => TransferOutcome::TooLarge { bytes },
        };
        self.done = true;
        self.inputs.push_back(Input::TransferDone {
            xfer: self.xfer,
            outcome,
        });
        // Release the buffers now: the driver may keep the pump until it is dropped.
        self.buf = Vec::new();
        self.raw = Vec::new();
        self.tls = None;
    }

    /// One step of the transfer.
    fn step(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        if self.draining.is_some() {
            return self.drain(now, io);
        }
        if self.tls.as_ref().is_some_and(|t| t.conn.is_handshaking()) {
            return self.handshake(now, io);
        }
        match (&self.source, self.tls.is_some()) {
            (Source::Upload, false) => self.receive(now, io),
            (Source::Upload, true) => self.tls_receive(now, io),
            (_, false) => self.send(now, io),
            (_, true) => self.tls_send(now, io),
        }
    }

    // ---- the connection side ----

    fn socket_write(&mut self, now: Instant, io: &mut dyn DataIo, len: usize) -> Step {
        match io.write(&self.buf[self.start..self.start + len]) {
            Ok(0) => Err(Stop::Over(End::Lost)),
            Ok(n) => {
                self.start += n;
                self.moved(now, n);
                Ok(())
            }
            Err(e) => socket_error(&e, Run::Writable),
        }
    }

    /// Writes queued ciphertext. `Ok(true)`: wrote; `Ok(false)`: nothing was queued.
    fn tls_flush(&mut self, now: Instant, io: &mut dyn DataIo) -> Result<bool, Stop> {
        let Some(tls) = &mut self.tls else {
            return Ok(false);
        };
        if !tls.conn.wants_write() {
            return Ok(false);
        }
        match tls.conn.write_tls(&mut Wire(io)) {
            Ok(0) => Err(Stop::Over(End::Lost)),
            Ok(_) => {
                self.last_activity = now;
                Ok(true)
            }
            Err(e) => socket_error(&e, Run::Writable).map(|()| true),
        }
    }

    /// Reads ciphertext into the read-ahead buffer (it is empty).
    fn tls_read_ahead(&mut self, io: &mut dyn DataIo, max: usize) -> Step {
        let tls = self.tls.as_mut().expect("a TLS transfer");
        let room = tls.cipher.len().min(max.max(1));
        match io.read(&mut tls.cipher[..room]) {
            Ok(0) => {
                tls.eof = true;
                Ok(())
            }
            Ok(n) => {
                (tls.start, tls.end) = (0, n);
                Ok(())
            }
            Err(e) => socket_error(&e, Run::Readable),
        }
    }

    /// Gives TLS the ciphertext read ahead; returns how much it took.
    fn tls_feed(&mut self) -> Result<usize, Stop> {
        let tls = self.tls.as_mut().expect("a TLS transfer");
        let taken = match tls.conn.read_tls(&mut &tls.cipher[tls.start..tls.end]) {
            Ok(n) => n,
            Err(e) => return Err(Stop::Over(End::Tls(DataTlsError::Protocol(e.to_string())))),
        };
        tls.start += taken;
        tls.conn.process().map_err(|e| Stop::Over(End::Tls(e)))?;
        Ok(taken)
    }

    /// The TLS handshake (and the core's check of the binding): no body byte moves
    /// before it is complete. Its bytes are activity for the stall timer.
    fn handshake(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        if self.tls_flush(now, io)? {
            return Ok(());
        }
        let tls = self.tls.as_ref().expect("a TLS transfer");
        if tls.start < tls.end {
            if self.tls_feed()? == 0 {
                let error = DataTlsError::Handshake("TLS takes no more handshake data".into());
                return Err(Stop::Over(End::Tls(error)));
            }
            self.last_activity = now;
            return Ok(());
        }
        if tls.eof {
            let error =
                DataTlsError::Handshake("the connection closed during the handshake".into());
            return Err(Stop::Over(End::Tls(error)));
        }
        self.tls_read_ahead(io, usize::MAX)?;
        self.last_activity = now;
        Ok(())
    }

    // ---- downloads ----

    /// Refills the empty buffer from the file (through the TYPE A encoder if on).
    fn fill(&mut self, io: &mut dyn DataIo) -> Step {
        self.start = 0;
        self.end = 0;
        let r = match &mut self.encoder {
            None => io.read_file(&mut self.buf),
            Some(codec) => io.read_file(&mut self.raw).map(|n| {
                self.buf.clear();
                codec.encode(&self.raw[..n], &mut self.buf);
                // Encoded output is never shorter: only an empty read is empty.
                self.buf.len()
            }),
        };
        match r {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.end = n;
                Ok(())
            }
            Err(e) => file_error(&e),
        }
    }

    /// A plain download: the buffer out, then the next one in; a FIN at the end.
    fn send(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        if self.start == self.end {
            if self.eof {
                io.shutdown_write();
                return Err(Stop::Over(End::Complete));
            }
            if self.passthrough {
                match io.send_file(1 << 20) {
                    None => {
                        // Copy through the buffer from now on.
                        self.passthrough = false;
                        self.buf = vec![0; self.buffer_size];
                    }
                    Some(Ok(0)) => self.eof = true,
                    Some(Ok(n)) => self.moved(now, n),
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Err(Stop::Blocked(Run::Writable))
                    }
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Some(Err(e)) if is_connection_error(&e) => return Err(Stop::Over(End::Lost)),
                    Some(Err(e)) => return file_error(&e),
                }
                return Ok(());
            }
            return self.fill(io);
        }
        let len = (self.end - self.start).min(self.allowance(now)?);
        self.socket_write(now, io, len)
    }

    /// A download under TLS: the body is encrypted a buffer at a time and written out
    /// when rustls' buffer is full; the file is read before the last ciphertext goes out,
    /// so a small body and its close_notify leave in one write. close_notify is written
    /// out before the FIN and the end.
    fn tls_send(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        if self.tls.as_ref().is_some_and(|t| t.closing) {
            if self.tls_flush(now, io)? {
                return Ok(());
            }
            io.shutdown_write();
            return Err(Stop::Over(End::Complete));
        }
        if self.start == self.end {
            if self.eof {
                let tls = self.tls.as_mut().expect("a TLS transfer");
                tls.conn.close();
                tls.closing = true;
                return Ok(());
            }
            return self.fill(io);
        }
        if self.tls_flush(now, io)? {
            return Ok(());
        }
        let len = (self.end - self.start).min(self.allowance(now)?);
        let tls = self.tls.as_mut().expect("a TLS transfer");
        let n = tls
            .conn
            .write_plain(&self.buf[self.start..self.start + len]);
        if n == 0 {
            let error = DataTlsError::Protocol("the connection takes no more data".into());
            return Err(Stop::Over(End::Tls(error)));
        }
        self.start += n;
        self.moved(now, n);
        Ok(())
    }

    // ---- uploads ----

    /// Writes what waits for the file: `Ok(true)` when something was written.
    fn write_pending(&mut self, io: &mut dyn DataIo) -> Result<bool, Stop> {
        let pending = if self.decoder.is_some() {
            &self.raw[self.rstart..]
        } else {
            &self.buf[self.start..self.end]
        };
        if pending.is_empty() {
            return Ok(false);
        }
        match io.write_file(pending) {
            Ok(0) => Err(Stop::Over(End::Storage(FsError::Io(
                "the file takes no more bytes".into(),
            )))),
            Ok(n) => {
                if self.decoder.is_some() {
                    self.rstart += n;
                    if self.rstart == self.raw.len() {
                        self.raw.clear();
                        self.rstart = 0;
                    }
                } else {
                    self.start += n;
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                    }
                }
                Ok(true)
            }
            Err(e) => file_error(&e).map(|()| true),
        }
    }

    /// Takes `buf[..n]` (just received, or gathered under TLS) as body bytes: the size
    /// cut, the count, TYPE A decoding; the kept bytes then wait for the file.
    fn accept(&mut self, now: Instant, n: usize) {
        let room = self.max_bytes.map(|max| max.saturating_sub(self.bytes));
        let keep = room.map_or(n, |room| n.min(usize::try_from(room).unwrap_or(n)));
        self.moved(now, keep);
        if keep < n {
            // Cut at the first byte over the limit: the count says one byte over, so
            // the log shows the same figure however the bytes arrived.
            self.bytes += 1;
            self.end_with(End::TooLarge);
        }
        match &mut self.decoder {
            Some(codec) => {
                codec.decode(&self.buf[..keep], &mut self.raw);
                (self.start, self.end) = (0, 0);
            }
            None => (self.start, self.end) = (0, keep),
        }
    }

    /// Accepts what TLS decrypted into `buf[..gathered]`.
    fn accept_gathered(&mut self, now: Instant) {
        let n = std::mem::take(&mut self.gathered);
        if n > 0 {
            self.accept(now, n);
        }
    }

    /// The end of the body: TYPE A's held CR, then a flush.
    fn end_of_body(&mut self, io: &mut dyn DataIo) -> Step {
        if let Some(codec) = &mut self.decoder {
            codec.finish(&mut self.raw);
        }
        while self.write_pending(io)? {}
        io.flush_file().or_else(|e| file_error(&e))?;
        Err(Stop::Over(End::Complete))
    }

    /// The file side of a transfer that is ending: what an upload received (and, under
    /// TLS, decrypted) but has not yet written is written, as an unbatched upload would
    /// have, so a kept partial upload holds every byte that arrived.
    fn finish_file_side(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        let failed = matches!(self.ending, Some(End::Storage(_)));
        if !self.is_upload() || self.buf.is_empty() || failed || self.draining.is_some() {
            return Ok(());
        }
        if self
            .ending
            .as_ref()
            .is_some_and(|e| !matches!(e, End::TooLarge))
        {
            self.accept_gathered(now);
        }
        while self.write_pending(io)? {}
        Ok(())
    }

    /// A plain upload: one read from the connection, then the file gets it.
    fn receive(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        if self.write_pending(io)? {
            return Ok(());
        }
        if self.eof {
            return self.end_of_body(io);
        }
        let room = self.buf.len().min(self.allowance(now)?);
        match io.read(&mut self.buf[..room]) {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.accept(now, n);
                Ok(())
            }
            Err(e) => socket_error(&e, Run::Readable),
        }
    }

    /// An upload under TLS: decrypted records gather in the transfer buffer until it is
    /// full or the connection has nothing more for now, so the file gets one write per
    /// buffer rather than one per record (16 KiB at most). The body ends with the peer's
    /// close_notify (answered with ours), or at end-of-stream as
    /// [`DataTls::end_of_stream`] judges.
    fn tls_receive(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        // Our close_notify answering theirs, or a TLS 1.3 key update: best effort, the
        // client need not read them for the upload to go on.
        self.tls_flush_best_effort(now, io);
        if self.write_pending(io)? {
            return Ok(());
        }
        if self.eof {
            return self.end_of_body(io);
        }
        if self.gathered == self.buf.len() {
            self.accept_gathered(now);
            return Ok(());
        }
        let tls = self.tls.as_mut().expect("a TLS transfer");
        match tls.conn.read_plain(&mut self.buf[self.gathered..]) {
            Some(0) => {
                tls.conn.close();
                self.tls_flush_best_effort(now, io);
                self.accept_gathered(now);
                self.eof = true;
                return Ok(());
            }
            Some(n) => {
                self.gathered += n;
                // Past the size limit: write what fits and end now, not a buffer later.
                if self
                    .max_bytes
                    .is_some_and(|max| self.bytes + self.gathered as u64 > max)
                {
                    self.accept_gathered(now);
                }
                return Ok(());
            }
            None => {}
        }
        if tls.start < tls.end {
            let taken = self.tls_feed()?;
            let tls = self.tls.as_ref().expect("a TLS transfer");
            if taken == 0 && !tls.conn.peer_closed() {
                let error = DataTlsError::Protocol("data after close_notify".into());
                return Err(Stop::Over(End::Tls(error)));
            }
            return Ok(());
        }
        if tls.eof {
            self.accept_gathered(now);
            let tls = self.tls.as_ref().expect("a TLS transfer");
            return match tls.conn.end_of_stream() {
                Ok(()) => {
                    self.eof = true;
                    Ok(())
                }
                Err(e) => Err(Stop::Over(End::Tls(e))),
            };
        }
        let allowance = self.allowance(now)?;
        match self.tls_read_ahead(io, allowance) {
            // Nothing more for now: the file gets what has gathered.
            Err(Stop::Blocked(Run::Readable)) if self.gathered > 0 => {
                self.accept_gathered(now);
                Ok(())
            }
            other => other,
        }
    }

    /// Reads and throws away what still arrives after the file failed; at the end of
    /// the stream (or of the drain limit, or if the connection fails) the transfer ends
    /// with the file's error.
    fn drain(&mut self, now: Instant, io: &mut dyn DataIo) -> Step {
        if self.buf.is_empty() {
            self.buf = vec![0; 16 * 1024];
        }
        let drained = self.draining.as_ref().map_or(0, |d| d.1);
        let over = match io.read(&mut self.buf) {
            Ok(n) if n > 0 && drained + (n as u64) < DRAIN_LIMIT => {
                if let Some(d) = &mut self.draining {
                    d.1 += n as u64;
                }
                self.last_activity = now;
                false
            }
            Ok(_) => true,
            Err(e) => match socket_error(&e, Run::Readable) {
                Err(Stop::Over(_)) => true,
                other => return other,
            },
        };
        if over {
            if let Some((end, _)) = self.draining.take() {
                self.ending = Some(end);
            }
        }
        Ok(())
    }

    /// Writes queued ciphertext if the connection takes it now; never waits.
    fn tls_flush_best_effort(&mut self, now: Instant, io: &mut dyn DataIo) {
        if let Some(tls) = &mut self.tls {
            if tls.conn.wants_write() && tls.conn.write_tls(&mut Wire(io)).is_ok() {
                self.last_activity = now;
            }
        }
    }
}

/// `Ok(())` for a retry, `Blocked` for a wait, `Over(Lost)` for a failed connection.
fn socket_error(e: &io::Error, wait: Run) -> Step {
    match e.kind() {
        io::ErrorKind::WouldBlock => Err(Stop::Blocked(wait)),
        io::ErrorKind::Interrupted => Ok(()),
        _ => Err(Stop::Over(End::Lost)),
    }
}

/// `Ok(())` for a retry, `Blocked(File)` for a wait, `Over(Storage)` for a failed file.
fn file_error(e: &io::Error) -> Step {
    match e.kind() {
        io::ErrorKind::WouldBlock => Err(Stop::Blocked(Run::File)),
        io::ErrorKind::Interrupted => Ok(()),
        _ => Err(Stop::Over(End::Storage(FsError::from_io(e)))),
    }
}
