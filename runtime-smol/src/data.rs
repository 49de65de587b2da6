//! Data connections: passive listeners, active connects, idle connections and the
//! transfers that run on them. Each is a [`DataEntry`] in its session's table; the
//! waiting part of each runs as a task that reports through the session's events.
//!
//! Dropping an entry releases it: a listener's or connect's task is cancelled (and its
//! socket closed, so its port is free at once), an idle connection is closed, and a
//! running transfer is told to stop.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, Task, Timer};
use wharf_core::backend::OpenFile;
use wharf_core::policy::TokenBucket;
use wharf_core::ports::PortLease;
use wharf_core::{
    Body, DataConnId, DataError, FileHandle, FsError, Input, TransferId, TransferOutcome,
    TransferSpec,
};

use crate::session::{dispose, report, Driver, Event, Events};
use crate::transfer::{DataStream, Progress, Transfer};
use crate::ACCEPT_BACKOFF;
use wharf_net::{
    connect_from, data_listener, has_pending_error, is_exhaustion, is_transient_accept_error,
};

pub(crate) struct DataEntry {
    pub conn: DataConnId,
    pub state: DataState,
}

pub(crate) enum DataState {
    /// The task accepting on a passive listener (it owns the listener).
    Listening { _task: Task<()> },
    /// The task waiting for an active connect to complete.
    Connecting { _task: Task<()> },
    /// Connected, waiting for `StartTransfer`. Not read: an upload's bytes (and even its
    /// FIN) wait in the kernel until the transfer starts. `_watch` reports a socket
    /// error that arrives meanwhile.
    Idle {
        stream: Arc<Async<TcpStream>>,
        _watch: Task<()>,
    },
    /// A transfer runs in its own task; dropping `stop` tells it to end.
    Transferring {
        xfer: TransferId,
        progress: Arc<Progress>,
        stop: Option<Sender<()>>,
        /// Whether its end is reported to the session (not after `CloseData`).
        report: bool,
    },
}

fn data_error(e: &io::Error) -> DataError {
    if is_exhaustion(e) {
        DataError::Exhausted
    } else if e.kind() == io::ErrorKind::ConnectionRefused {
        DataError::Refused
    } else {
        DataError::Io(e.to_string())
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// Accepts on a passive listener until a connection from `expect_peer` (or anyone, when
/// unset) arrives; connections from other addresses are closed at once.
async fn accept_data(
    listener: Async<TcpListener>,
    lease: Option<PortLease>,
    conn: DataConnId,
    expect_peer: Option<IpAddr>,
    events: Events,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if expect_peer.is_some_and(|ip| !same_ip(ip, peer.ip())) {
                    tracing::info!(%peer, "data connection from a stranger refused");
                    continue;
                }
                // The listener closes here, before the session hears of the connection,
                // and its port goes back to the pool.
                drop(listener);
                drop(lease);
                let _ = report(&events, Event::Accepted { conn, peer, stream }).await;
                return;
            }
            Err(e) if is_transient_accept_error(&e) => tracing::debug!("data accept: {e}"),
            Err(e) => {
                // Out of descriptors, or worse: the core's data-connection timer bounds
                // the wait; do not spin meanwhile.
                tracing::debug!("data accept: {e}");
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Waits for an active connect to complete.
async fn connect_data(stream: Async<TcpStream>, conn: DataConnId, events: Events) {
    let result = loop {
        if let Err(e) = stream.writable().await {
            break Err(e);
        }
        match stream.get_ref().take_error() {
            Ok(Some(e)) | Err(e) => break Err(e),
            Ok(None) => {}
        }
        match stream.get_ref().peer_addr() {
            Ok(_) => break Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
            Err(e) => break Err(e),
        }
    };
    let ev = match result {
        Ok(()) => Event::Connected { conn, stream },
        Err(e) => Event::Failed {
            conn,
            error: data_error(&e),
        },
    };
    let _ = report(&events, ev).await;
}

/// Watches an idle data connection for a socket error. Bytes or a FIN from the peer
/// are not errors (they belong to the coming upload), so the watch ends at the first
/// readiness either way. The error stays on the socket: if the transfer starts before
/// this report is handled, the transfer must still see the reset.
async fn watch_idle(stream: Arc<Async<TcpStream>>, conn: DataConnId, events: Events) {
    let _ = stream.readable().await;
    if has_pending_error(stream.get_ref()) {
        let error = DataError::Io("data connection failed".into());
        let _ = report(&events, Event::Failed { conn, error }).await;
    }
}

/// Runs a transfer until it ends or `stop` is dropped; reports the end with the file.
async fn run_transfer(
    mut t: Transfer,
    progress: Arc<Progress>,
    stop: Receiver<()>,
    budget: usize,
    events: Events,
) {
    let xfer = t.xfer;
    let notify = || {
        // At most one progress event is in flight; if the channel is full, the next
        // step notes again.
        if events.try_send(Box::new(Event::Progress { xfer })).is_err() {
            progress.unnote();
        }
    };
    let outcome = async { Some(t.run(budget, notify).await) }
        .or(async {
            let _ = stop.recv().await;
            None
        })
        .await;
    let outcome = outcome.unwrap_or(TransferOutcome::Aborted { bytes: t.bytes });
    let file = t.file.take();
    // The data connection closes here, before the session hears of the end.
    drop(t);
    let ev = Event::Done {
        xfer,
        outcome,
        file,
    };
    if let Some(Event::Done {
        file: Some((_, f)), ..
    }) = report(&events, ev).await
    {
        dispose(f).await;
    }
}

impl Driver {
    fn find(&self, conn: DataConnId) -> Option<usize> {
        self.data.iter().position(|d| d.conn == conn)
    }

    pub(crate) fn listen_data(
        &mut self,
        conn: DataConnId,
        ip: IpAddr,
        ports: RangeInclusive<u16>,
        expect_peer: Option<IpAddr>,
    ) -> Input<'static> {
        let failed = |error| Input::DataFailed { conn, error };
        let bound = self
            .ctx
            .ports
            .bind(&ports, |port| data_listener(SocketAddr::new(ip, port)));
        let (listener, lease) = match bound {
            Ok(Some(l)) => l,
            Ok(None) => return failed(DataError::NoFreePort),
            Err(e) => return failed(data_error(&e)),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => return failed(data_error(&e)),
        };
        let listener = match Async::new(listener) {
            Ok(l) => l,
            Err(e) => return failed(data_error(&e)),
        };
        let task = accept_data(listener, lease, conn, expect_peer, self.events.clone());
        let state = DataState::Listening {
            _task: self.ctx.ex.spawn(task),
        };
        self.data.push(DataEntry { conn, state });
        Input::DataListening { conn, port }
    }

    pub(crate) fn connect_data(
        &mut self,
        conn: DataConnId,
        local_ip: IpAddr,
        target: SocketAddr,
    ) -> Option<Input<'static>> {
        let stream = match connect_from(local_ip, target).and_then(Async::new) {
            Ok(s) => s,
            Err(e) => {
                let error = data_error(&e);
                return Some(Input::DataFailed { conn, error });
            }
        };
        let task = connect_data(stream, conn, self.events.clone());
        let state = DataState::Connecting {
            _task: self.ctx.ex.spawn(task),
        };
        self.data.push(DataEntry { conn, state });
        None
    }

    /// A connection is up (accepted or connected): it waits, watched, for its transfer.
    fn set_idle(&mut self, i: usize, stream: Async<TcpStream>) {
        let stream = Arc::new(stream);
        let conn = self.data[i].conn;
        let watch = watch_idle(stream.clone(), conn, self.events.clone());
        self.data[i].state = DataState::Idle {
            stream,
            _watch: self.ctx.ex.spawn(watch),
        };
    }

    pub(crate) fn on_accepted(
        &mut self,
        conn: DataConnId,
        peer: SocketAddr,
        stream: Async<TcpStream>,
    ) {
        let Some(i) = self.find(conn) else {
            return; // closed meanwhile: the stream closes here
        };
        if !matches!(self.data[i].state, DataState::Listening { .. }) {
            return;
        }
        self.set_idle(i, stream);
        self.feed(Input::DataAccepted { conn, peer });
    }

    pub(crate) fn on_connected(&mut self, conn: DataConnId, stream: Async<TcpStream>) {
        let Some(i) = self.find(conn) else {
            return;
        };
        if !matches!(self.data[i].state, DataState::Connecting { .. }) {
            return;
        }
        self.set_idle(i, stream);
        self.feed(Input::DataConnected { conn });
    }

    pub(crate) fn on_failed(&mut self, conn: DataConnId, error: DataError) {
        let Some(i) = self.find(conn) else {
            return;
        };
        if matches!(self.data[i].state, DataState::Transferring { .. }) {
            return; // a stale watch report; the transfer reports for itself
        }
        self.data.swap_remove(i);
        self.feed(Input::DataFailed { conn, error });
    }

    pub(crate) fn start_transfer(
        &mut self,
        xfer: TransferId,
        conn: DataConnId,
        spec: TransferSpec,
    ) -> Option<Input<'static>> {
        let done = |outcome| Some(Input::TransferDone { xfer, outcome });
        let Some(i) = self.find(conn) else {
            return done(TransferOutcome::ConnectionLost { bytes: 0 });
        };
        if !matches!(self.data[i].state, DataState::Idle { .. }) {
            self.data.swap_remove(i);
            return done(TransferOutcome::ConnectionLost { bytes: 0 });
        }
        let file = match &spec.body {
            Body::Send(h) | Body::Receive(h) => match self.take_file(*h) {
                Some(f) => Some((*h, f)),
                None => {
                    self.data.swap_remove(i);
                    let error = FsError::Io("file is not open".into());
                    return done(TransferOutcome::Storage { bytes: 0, error });
                }
            },
            Body::Bytes(_) => None,
        };
        let progress = Arc::new(Progress::default());
        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        let state = DataState::Transferring {
            xfer,
            progress: progress.clone(),
            stop: Some(stop_tx),
            report: true,
        };
        let DataState::Idle { stream, .. } = std::mem::replace(&mut self.data[i].state, state)
        else {
            unreachable!("checked above")
        };
        // The watch task was dropped with the idle state, so the stream is ours alone
        // (or soon is); sharing the `Arc` meanwhile is harmless.
        let mut lim = self.ctx.limits;
        let rate = spec.rate_limit;
        if let Some(r) = rate {
            // Paced transfers move small buffers, so the pacing is smooth (no sendfile:
            // it would move a megabyte at a time).
            lim.buffer = lim.buffer.min((r / 8).max(4096) as usize);
            lim.use_sendfile = false;
        }
        // An upload reads ciphertext ahead through a buffer like its own.
        let read_ahead = match spec.body {
            Body::Receive(_) => lim.buffer,
            _ => 0,
        };
        let stream = DataStream::new(stream, spec.tls, read_ahead);
        let p = progress.clone();
        let mut t = match (spec.body, file) {
            (Body::Send(_), Some(f)) => Transfer::send_file(xfer, stream, f, spec.ascii, lim, p),
            (Body::Receive(_), Some(f)) => Transfer::receive(xfer, stream, f, spec.ascii, lim, p),
            (Body::Bytes(b), _) => Transfer::send_bytes(xfer, stream, b, lim, p),
            (_, None) => unreachable!("file bodies were checked above"),
        };
        t.rate = rate.map(|r| TokenBucket::new(r, Instant::now()));
        t.max_bytes = spec.max_bytes;
        let ctx = self.ctx.clone();
        let events = self.events.clone();
        let task = async move {
            run_transfer(t, progress, stop_rx, ctx.limits.budget, events).await;
            drop(ctx);
        };
        self.ctx.ex.spawn(task).detach();
        None
    }

    /// Tells a running transfer to stop; it answers with `Done { Aborted }` (or with
    /// how it ended, if it ended first).
    pub(crate) fn abort_transfer(&mut self, xfer: TransferId) {
        for d in &mut self.data {
            if let DataState::Transferring { xfer: x, stop, .. } = &mut d.state {
                if *x == xfer {
                    stop.take();
                }
            }
        }
    }

    /// Closes a listener or an idle connection; a running transfer is stopped and its
    /// end is not reported.
    pub(crate) fn close_data(&mut self, conn: DataConnId) {
        let Some(i) = self.find(conn) else {
            return;
        };
        match &mut self.data[i].state {
            DataState::Transferring { stop, report, .. } => {
                stop.take();
                *report = false;
            }
            _ => {
                self.data.swap_remove(i);
            }
        }
    }

    pub(crate) fn on_progress(&mut self, xfer: TransferId) {
        let found = self.data.iter().find_map(|d| match &d.state {
            DataState::Transferring {
                xfer: x,
                progress,
                report: true,
                ..
            } if *x == xfer => Some(progress.take()),
            _ => None,
        });
        if let Some(bytes) = found {
            // The core takes `bytes` as the running total (it stores, not adds, it).
            self.feed(Input::TransferProgress { xfer, bytes });
        }
    }

    pub(crate) fn on_done(
        &mut self,
        xfer: TransferId,
        outcome: TransferOutcome,
        file: Option<(FileHandle, OpenFile)>,
    ) {
        if let Some(f) = file {
            self.files.push(f);
        }
        let i = self.data.iter().position(
            |d| matches!(&d.state, DataState::Transferring { xfer: x, .. } if *x == xfer),
        );
        let Some(i) = i else {
            return;
        };
        let entry = self.data.swap_remove(i);
        if let DataState::Transferring { report: true, .. } = entry.state {
            self.feed(Input::TransferDone { xfer, outcome });
        }
    }
}
