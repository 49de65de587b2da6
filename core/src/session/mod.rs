//! One control connection: the FTP state machine.
//!
//! A [`Session`] is created by [`crate::Server::accept`] and driven through `handle_*`
//! inputs and `poll_*` outputs under the drain rule of the crate docs.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

use crate::backend::{Completion, FsError, Request};
use crate::ids::{DataConnId, FileHandle, RequestId, TransferId};

/// Something that happened, fed to [`Session::handle_input`].
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes read from the control connection.
    ControlBytes(&'a [u8]),
    /// The control connection was closed or reset by the peer.
    ControlEof,
    /// `ListenData` is listening on this port.
    DataListening { conn: DataConnId, port: u16 },
    /// `ListenData`'s listener accepted a connection from `peer`. The driver holds it
    /// and keeps the listener until the core answers, in the same drain, with
    /// `RefuseData` (a stranger: close it, go on listening) or `StopListening` (this is
    /// the data connection: close the listener).
    DataAccepted { conn: DataConnId, peer: SocketAddr },
    /// The answer to `ReadProxyHeader`: the client the connection's PROXY protocol header
    /// names (the balancer's own address for a `LOCAL` header), or `None` when no valid
    /// header came (malformed, or the connection ended first). The core answers in the
    /// same drain, as for `DataAccepted` (`RefuseData` for `None`).
    DataProxied {
        conn: DataConnId,
        client: Option<SocketAddr>,
    },
    /// `ConnectData` connected.
    DataConnected { conn: DataConnId },
    /// `ListenData` could not listen, or `ConnectData` could not connect, or an idle data
    /// connection failed with a socket error before a transfer started. End-of-stream on
    /// an idle connection is not a failure: a small upload's bytes and FIN may arrive
    /// before `StartTransfer`, and the driver must keep them for the transfer.
    DataFailed { conn: DataConnId, error: DataError },
    /// A transfer has moved `bytes` in total so far (a running total, not a delta), as
    /// its pump reports it (for STAT).
    TransferProgress { xfer: TransferId, bytes: u64 },
    /// A transfer ended, as its pump reports it; the driver has closed its data
    /// connection.
    TransferDone {
        xfer: TransferId,
        outcome: TransferOutcome,
    },
    /// A [`Request`] finished.
    Completed {
        req: RequestId,
        completion: Completion,
    },
    /// The server is shutting down: finish the running transfer (if any), then say `421`
    /// and close. Idle sessions close at once.
    Shutdown,
    /// An administrator ends the session ([`crate::monitor::Board::disconnect`]): a
    /// running transfer is aborted, the client is told `421`, and the session closes
    /// (logged with sub-status `admin-disconnect`).
    Disconnect,
}

/// Why a data connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// Every port of the passive range is in use.
    NoFreePort,
    /// The process is out of file descriptors or memory.
    Exhausted,
    /// The peer refused or reset the connection.
    Refused,
    Io(String),
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferOutcome {
    /// Every byte moved: the file was read to its end (download) or the peer closed the
    /// data connection cleanly (upload).
    Complete { bytes: u64 },
    /// The data connection broke (reset, or a write failed).
    ConnectionLost { bytes: u64 },
    /// Reading or writing the file failed.
    Storage { bytes: u64, error: FsError },
    /// Stopped by `AbortTransfer`.
    Aborted { bytes: u64 },
    /// TLS on the data connection failed: the handshake, the binding to the control
    /// session, a truncated upload, or a TLS error mid-body.
    Tls {
        bytes: u64,
        error: crate::tls::DataTlsError,
    },
    /// No byte moved for the data timeout (`Timeouts::transfer_stall`).
    Stalled { bytes: u64 },
    /// The transfer ran below the minimum data rate over a data-timeout window.
    TooSlow { bytes: u64 },
    /// An upload went over the maximum upload size; nothing past the limit was written,
    /// and `bytes` is the limit plus one (the byte that crossed it).
    TooLarge { bytes: u64 },
}

impl TransferOutcome {
    /// The body bytes moved.
    pub fn bytes(&self) -> u64 {
        match self {
            TransferOutcome::Complete { bytes }
            | TransferOutcome::ConnectionLost { bytes }
            | TransferOutcome::Storage { bytes, .. }
            | TransferOutcome::Aborted { bytes }
            | TransferOutcome::Tls { bytes, .. }
            | TransferOutcome::Stalled { bytes }
            | TransferOutcome::TooSlow { bytes }
            | TransferOutcome::TooLarge { bytes } => *bytes,
        }
    }
}

/// What a transfer moves (inside the session; a driver sees the [`crate::pump::Pump`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// File → data connection.
    Send(FileHandle),
    /// Data connection → file. The file stays open afterwards until `CloseFile`.
    Receive(FileHandle),
    /// Bytes rendered by the core (a listing) → data connection.
    Bytes(Vec<u8>),
}

/// Something the core asks the driver to do, from [`Session::poll_action`]. Not `Clone`:
/// `StartTransfer` owns its transfer's pump.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this off the event loop; answer with `Input::Completed`.
    Request { req: RequestId, request: Request },
    /// Listen on `ip` on a free port of `ports` (`0..=0`: any). Answer with
    /// `DataListening` or `DataFailed`, then `DataAccepted` for a connection; the core
    /// answers that with `RefuseData` or `StopListening`.
    ListenData {
        conn: DataConnId,
        ip: IpAddr,
        ports: RangeInclusive<u16>,
    },
    /// The connection `DataAccepted` reported is refused (not the client's): close it
    /// and go on listening on `conn`'s listener.
    RefuseData { conn: DataConnId },
    /// The connection `DataAccepted` reported comes from a load balancer: read its PROXY
    /// protocol header, exactly (the bytes after it are the client's, for the transfer;
    /// `wharf_net::read_proxy_header` judges with [`crate::proxy::parse`]), holding the
    /// connection and the listener as for `DataAccepted`; answer `DataProxied`.
    ReadProxyHeader { conn: DataConnId },
    /// The connection `DataAccepted` reported is the data connection: close `conn`'s
    /// listener (its port is free again) and keep the connection for the transfer.
    StopListening { conn: DataConnId },
    /// Connect from `local_ip` (a hint; a driver may let the system choose) and
    /// `local_port` (0: any; else the site's `active_source_port`, which the driver must
    /// honour, sharing the port between concurrent connections) to `target` (already
    /// checked against FTP bounce). Answer with `DataConnected` or `DataFailed`.
    ConnectData {
        conn: DataConnId,
        local_ip: IpAddr,
        local_port: u16,
        target: SocketAddr,
    },
    /// Run `pump` over the connected data connection `conn` and the open file `file`
    /// (none for a listing), as [`crate::pump`] describes, feeding its inputs
    /// (`TransferProgress`, then `TransferDone`) to the session; `conn` is then closed
    /// and forgotten, and the file goes back to the driver's table. If `conn` failed
    /// before this (it is not an idle connection any more), answer
    /// [`crate::pump::Pump::connection_missing`].
    StartTransfer {
        xfer: TransferId,
        conn: DataConnId,
        file: Option<FileHandle>,
        pump: Box<crate::pump::Pump>,
    },
    /// The idle `PROT P` data connection `conn` has no transfer yet: run this
    /// [`crate::pump::Pump::handshake_only`] pump on it now (it reports nothing), so that
    /// a client that completes its TLS handshake before it sends RETR/STOR (aioftp) is
    /// answered. When `StartTransfer` for `conn` comes, hand this pump (stopped with
    /// `abort` if it still runs) to the transfer's with
    /// [`crate::pump::Pump::adopt`]. Optional: a driver that drops it runs the handshake
    /// in the transfer's pump, as it would without it.
    PrepareTransfer {
        conn: DataConnId,
        pump: Box<crate::pump::Pump>,
    },
    /// Stop a running transfer ([`crate::pump::Pump::abort`]); it still ends with its
    /// `TransferDone`.
    AbortTransfer { xfer: TransferId },
    /// Close a listener or an idle data connection, or stop a running transfer without
    /// reporting its end (the session has forgotten it).
    CloseData { conn: DataConnId },
    /// Close the control connection once `poll_transmit` is drained, and release
    /// everything the session still holds (listeners, data connections, transfers;
    /// open uploads are discarded).
    Close,
    /// A record for the activity log (only when the site logs): hand it to the log sink
    /// and move on; it never needs an answer and may be dropped under pressure.
    Log(Box<crate::log::LogRecord>),
}

pub use state::Session;

mod data;
mod login;
mod misc;
mod nav;
mod policy;
mod security;
mod state;
mod timer;
mod transfer;
