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
    /// `ListenData` accepted a connection from `peer`.
    DataAccepted { conn: DataConnId, peer: SocketAddr },
    /// `ConnectData` connected.
    DataConnected { conn: DataConnId },
    /// `ListenData` could not listen, or `ConnectData` could not connect, or an idle data
    /// connection failed with a socket error before a transfer started. End-of-stream on
    /// an idle connection is not a failure: a small upload's bytes and FIN may arrive
    /// before `StartTransfer`, and the driver must keep them for the transfer.
    DataFailed { conn: DataConnId, error: DataError },
    /// A transfer has moved `bytes` in total so far (a running total, not a delta); it
    /// re-arms the stall timer. Drivers may coalesce these.
    TransferProgress { xfer: TransferId, bytes: u64 },
    /// A transfer ended; the driver has closed its data connection.
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
}

/// What a transfer moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// File → data connection.
    Send(FileHandle),
    /// Data connection → file. The file stays open afterwards until `CloseFile`.
    Receive(FileHandle),
    /// Bytes rendered by the core (a listing) → data connection.
    Bytes(Vec<u8>),
}

/// A transfer the driver is to run. Not `Clone`: it may own a TLS connection.
#[derive(Debug, PartialEq, Eq)]
pub struct TransferSpec {
    pub body: Body,
    /// TYPE A: convert line ends with [`crate::typea`] (never for `Body::Bytes`, which
    /// the core renders with CR LF already).
    pub ascii: bool,
    /// `PROT P`: the body moves through this TLS connection, handshake first (see
    /// [`crate::tls::DataTls`]). No `sendfile` then.
    pub tls: Option<crate::tls::DataTls>,
    /// Bandwidth limit in bytes per second (site or user); the driver paces the data
    /// pump to it, e.g. with a [`crate::policy::TokenBucket`]. `None`: as fast as it goes.
    pub rate_limit: Option<u64>,
    /// For `Body::Receive`: the most body bytes (as they arrive, before any TYPE A
    /// conversion) the driver may write to the file (the site's maximum upload size).
    /// It writes none past it: at the first byte over, it stops receiving and ends the
    /// transfer with `TransferDone { Aborted { bytes } }`, `bytes` counting what was
    /// received (so more than `max_bytes`); the core then answers `552` and discards
    /// the upload. `None`: no limit.
    pub max_bytes: Option<u64>,
}

/// Something the core asks the driver to do, from [`Session::poll_action`]. Not `Clone`:
/// `StartTransfer` may own a data connection's TLS.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Run this off the event loop; answer with `Input::Completed`.
    Request { req: RequestId, request: Request },
    /// Listen on `ip` on a free port of `ports` (`0..=0`: any). Answer with
    /// `DataListening` or `DataFailed`, then `DataAccepted` for each connection. When
    /// `expect_peer` is set, connections from other addresses are closed at once and the
    /// listener stays armed.
    ListenData {
        conn: DataConnId,
        ip: IpAddr,
        ports: RangeInclusive<u16>,
        expect_peer: Option<IpAddr>,
    },
    /// Connect from `local_ip` to `target` (already checked against FTP bounce). Answer
    /// with `DataConnected` or `DataFailed`.
    ConnectData {
        conn: DataConnId,
        local_ip: IpAddr,
        target: SocketAddr,
    },
    /// Move a body over the connected data connection `conn`; report progress and then
    /// `TransferDone`, after which `conn` is closed and forgotten.
    StartTransfer {
        xfer: TransferId,
        conn: DataConnId,
        spec: TransferSpec,
    },
    /// Stop a running transfer; it still ends with `TransferDone { Aborted }`.
    AbortTransfer { xfer: TransferId },
    /// Close a listener or an idle data connection.
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
