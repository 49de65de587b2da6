//! Data connections: passive listeners, active connects, idle connections and the
//! transfers that run on them through the core's pump. Each is a [`DataEntry`] in its
//! session's table; the waiting part of each runs as a task that reports through the
//! session's events. Nothing here decides anything about FTP: the core judges who may
//! connect, and the pump how bytes move and how a transfer ends.
//!
//! Dropping an entry releases it: a listener's or connect's task is cancelled (and its
//! socket closed, so its port is free at once), an idle connection is closed, and a
//! running transfer is told to stop.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, Task, Timer};
use wharf_core::backend::OpenFile;
use wharf_core::ports::PortLease;
use wharf_core::{DataConnId, DataError, FileHandle, Input, Pump, Run, TransferId};

use crate::session::{dispose, report, Driver, Event, Events};
use crate::{Ctx, ACCEPT_BACKOFF};
use wharf_net::{connect_from, data_error, has_pending_error, is_transient_accept_error, Wire};

pub(crate) struct DataEntry {
    pub conn: DataConnId,
    pub state: DataState,
}

/// A passive listener and the lease that gives its port back when it goes.
pub(crate) struct Listener {
    socket: Async<TcpListener>,
    _lease: Option<PortLease>,
}

pub(crate) enum DataState {
    /// The task accepting on a passive listener (it owns the listener until it accepts).
    Listening { _task: Task<()> },
    /// A connection the listener accepted, held until the core says whose it is.
    Accepted {
        listener: Listener,
        stream: Async<TcpStream>,
        peer: SocketAddr,
    },
    /// The task reading a balancer's PROXY protocol header off an accepted connection
    /// (it owns the connection and the listener until the header is judged).
    Header { _task: Task<()> },
    /// The task waiting for an active connect to complete.
    Connecting { _task: Task<()> },
    /// Connected, waiting for `StartTransfer`. Not read: an upload's bytes (and even its
    /// FIN) wait in the kernel until the transfer starts. `_watch` reports a socket
    /// error that arrives meanwhile.
    Idle {
        stream: Arc<Async<TcpStream>>,
        _watch: Task<()>,
    },
    /// A `PROT P` connection whose TLS handshake a handshake-only pump runs in `task`
    /// (`PrepareTransfer`) before its transfer; dropping `stop` makes the task hand the
    /// pump back at once (it also does when the handshake is over).
    Preparing {
        stream: Arc<Async<TcpStream>>,
        task: Task<Box<Pump>>,
        _stop: Sender<()>,
    },
    /// A transfer runs in its own task; dropping `stop` tells it to end.
    Transferring {
        xfer: TransferId,
        stop: Option<Sender<()>>,
        /// Whether its end is reported to the session (not after `CloseData`).
        report: bool,
    },
}

/// Accepts one connection on a passive listener and hands it, with the listener, to the
/// session, whose core judges it.
async fn accept_data(listener: Listener, conn: DataConnId, events: Events) {
    loop {
        match listener.socket.accept().await {
            Ok((stream, peer)) => {
                let ev = Event::Accepted {
                    conn,
                    peer,
                    stream,
                    listener,
                };
                let _ = report(&events, ev).await;
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

/// Reads a balancer's PROXY protocol header (its bytes only) and hands the connection,
/// with the listener and the client the header names, back to the session.
async fn read_header(
    listener: Listener,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    conn: DataConnId,
    events: Events,
) {
    let client = loop {
        match wharf_net::read_proxy_header(stream.get_ref(), peer) {
            wharf_net::HeaderRead::Done(client) => break client,
            wharf_net::HeaderRead::Pending => {
                if stream.readable().await.is_err() {
                    break None;
                }
            }
        }
    };
    let ev = Event::Proxied {
        conn,
        client,
        peer,
        stream,
        listener,
    };
    let _ = report(&events, ev).await;
}

/// Waits for an active connect to complete.
async fn connect_data(stream: Async<TcpStream>, conn: DataConnId, events: Events) {
    let result = loop {
        if let Err(e) = stream.writable().await {
            break Err(e);
        }
        if let Some(outcome) = wharf_net::connect_outcome(stream.get_ref()) {
            break outcome;
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

/// Runs a handshake-only pump (`PrepareTransfer`) until the handshake is over or
/// `stop` closes, and hands the pump back for the transfer to adopt.
async fn run_handshake(
    stream: Arc<Async<TcpStream>>,
    mut pump: Box<Pump>,
    stop: Receiver<()>,
) -> Box<Pump> {
    loop {
        if stop.is_closed() {
            pump.abort();
        }
        let mut wire = Wire {
            socket: stream.get_ref(),
            file: None,
            sendfile: false,
        };
        // A panic leaves the pump to the transfer, whose own run reports it.
        let run = match wharf_net::catch(|| pump.run(Instant::now(), &mut wire, usize::MAX)) {
            Ok(run) => run,
            Err(_) => return pump,
        };
        let ready = async {
            match run {
                Run::Done => return false,
                Run::Readable => drop(stream.readable().await),
                Run::Writable => drop(stream.writable().await),
                _ => smol::future::yield_now().await,
            }
            true
        };
        let halt = async {
            let _ = stop.recv().await;
            true
        };
        if !ready.or(halt).await {
            return pump;
        }
    }
}

/// What a transfer task woke for.
enum Woke {
    Ready,
    Timer,
    Stop,
}

/// Runs a transfer's pump to its end (the drive rule of `wharf_core::pump`): it waits
/// for what the pump waits on, or its timer, or `stop`; reports progress as it comes,
/// and the end with the file once the connection is closed.
async fn run_transfer(
    stream: Arc<Async<TcpStream>>,
    mut pump: Box<Pump>,
    mut file: Option<(FileHandle, OpenFile)>,
    stop: Receiver<()>,
    ctx: Arc<Ctx>,
    events: Events,
) {
    let xfer = pump.xfer();
    let (budget, sendfile) = (ctx.limits.budget, ctx.limits.use_sendfile);
    // One timer for the transfer's life, moved only to an earlier deadline (the stall
    // deadline moves later with every byte; firing early costs one run).
    let mut timer = Timer::never();
    let mut timer_at: Option<Instant> = None;
    let done = loop {
        if stop.is_closed() {
            pump.abort();
        }
        let mut wire = Wire {
            socket: stream.get_ref(),
            file: file.as_mut().map(|(_, f)| f),
            sendfile,
        };
        // A panic in the pump (or a file read) ends the transfer and its session.
        let run = match wharf_net::catch(|| pump.run(Instant::now(), &mut wire, budget)) {
            Ok(run) => run,
            Err(why) => {
                drop(stream);
                let _ = report(&events, Event::Crashed(why)).await;
                if let Some((_, f)) = file {
                    dispose(f).await;
                }
                return;
            }
        };
        let mut done = None;
        while let Some(input) = pump.poll_input() {
            match input {
                Input::TransferDone { .. } => done = Some(input),
                // At most one a second; a full channel drops it (the next one says more).
                input => {
                    let ev = Event::Transfer {
                        xfer,
                        input,
                        file: None,
                    };
                    let _ = events.try_send(Box::new(ev));
                }
            }
        }
        if let Some(done) = done {
            break done;
        }
        if run == Run::Yield {
            smol::future::yield_now().await;
            continue;
        }
        let want = pump.poll_timeout();
        if want.is_some_and(|w| timer_at.is_none_or(|t| w < t)) {
            timer.set_at(want.expect("checked"));
            timer_at = want;
        }
        // The file side (object storage working in the background) wakes the task
        // through the waker it is given; the first poll registers it.
        let mut registered = false;
        let mut file_side = file.as_mut().map(|(_, f)| f);
        let file_ready = std::future::poll_fn(move |cx| {
            if registered {
                return std::task::Poll::Ready(());
            }
            if let Some(f) = file_side.as_mut() {
                f.set_waker(cx.waker());
                registered = true;
            }
            std::task::Poll::Pending
        });
        let ready = async {
            match run {
                Run::Readable => drop(stream.readable().await),
                Run::Writable => drop(stream.writable().await),
                Run::File => file_ready.await,
                _ => std::future::pending().await,
            }
            Woke::Ready
        };
        let fired = async {
            (&mut timer).await;
            Woke::Timer
        };
        let halt = async {
            let _ = stop.recv().await;
            Woke::Stop
        };
        match ready.or(fired).or(halt).await {
            Woke::Ready => {}
            Woke::Timer => {
                timer_at = None;
                pump.handle_timeout(Instant::now());
            }
            Woke::Stop => pump.abort(),
        }
    };
    // The data connection closes here, before the session hears of the end.
    drop(stream);
    let ev = Event::Transfer {
        xfer,
        input: done,
        file,
    };
    if let Some(Event::Transfer {
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

    fn listen(&self, conn: DataConnId, listener: Listener) -> DataState {
        let task = accept_data(listener, conn, self.events.clone());
        DataState::Listening {
            _task: self.ctx.ex.spawn(task),
        }
    }

    pub(crate) fn listen_data(
        &mut self,
        conn: DataConnId,
        ip: IpAddr,
        ports: RangeInclusive<u16>,
    ) -> Input<'static> {
        let failed = |error| Input::DataFailed { conn, error };
        let (listener, lease, port) = match wharf_net::listen_passive(&self.ctx.ports, ip, &ports) {
            Ok(l) => l,
            Err(error) => return failed(error),
        };
        let socket = match Async::new(listener) {
            Ok(l) => l,
            Err(e) => return failed(data_error(&e)),
        };
        let listener = Listener {
            socket,
            _lease: lease,
        };
        let state = self.listen(conn, listener);
        self.data.push(DataEntry { conn, state });
        Input::DataListening { conn, port }
    }

    pub(crate) fn connect_data(
        &mut self,
        conn: DataConnId,
        (local_ip, local_port): (IpAddr, u16),
        target: SocketAddr,
    ) -> Option<Input<'static>> {
        let stream = match connect_from(local_ip, local_port, target).and_then(Async::new) {
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
        listener: Listener,
    ) {
        let Some(i) = self.find(conn) else {
            return; // closed meanwhile: the stream and listener close here
        };
        if !matches!(self.data[i].state, DataState::Listening { .. }) {
            return;
        }
        self.data[i].state = DataState::Accepted {
            listener,
            stream,
            peer,
        };
        self.feed(Input::DataAccepted { conn, peer });
    }

    /// `ReadProxyHeader`: a task reads the balancer's header off the accepted connection.
    pub(crate) fn read_proxy_header(&mut self, conn: DataConnId) {
        let Some(i) = self.find(conn) else {
            return;
        };
        let DataState::Accepted { .. } = self.data[i].state else {
            return;
        };
        let placeholder = DataState::Transferring {
            xfer: TransferId(0),
            stop: None,
            report: false,
        };
        let DataState::Accepted {
            listener,
            stream,
            peer,
        } = std::mem::replace(&mut self.data[i].state, placeholder)
        else {
            return;
        };
        let task = read_header(listener, stream, peer, conn, self.events.clone());
        self.data[i].state = DataState::Header {
            _task: self.ctx.ex.spawn(task),
        };
    }

    pub(crate) fn on_proxied(
        &mut self,
        conn: DataConnId,
        client: Option<SocketAddr>,
        (peer, stream): (SocketAddr, Async<TcpStream>),
        listener: Listener,
    ) {
        let Some(i) = self.find(conn) else {
            return; // closed meanwhile
        };
        if !matches!(self.data[i].state, DataState::Header { .. }) {
            return;
        }
        self.data[i].state = DataState::Accepted {
            listener,
            stream,
            peer,
        };
        self.feed(Input::DataProxied { conn, client });
    }

    /// The listener and connection `DataAccepted` reported, taken out of the table.
    fn take_accepted(&mut self, conn: DataConnId) -> Option<(usize, Listener, Async<TcpStream>)> {
        let i = self.find(conn)?;
        let DataState::Accepted { .. } = self.data[i].state else {
            return None;
        };
        let placeholder = DataState::Transferring {
            xfer: TransferId(0),
            stop: None,
            report: false,
        };
        match std::mem::replace(&mut self.data[i].state, placeholder) {
            DataState::Accepted {
                listener, stream, ..
            } => Some((i, listener, stream)),
            _ => None,
        }
    }

    /// `RefuseData`: the connection goes, the listener listens on.
    pub(crate) fn refuse_data(&mut self, conn: DataConnId) {
        if let Some((i, listener, _)) = self.take_accepted(conn) {
            self.data[i].state = self.listen(conn, listener);
        }
    }

    /// `StopListening`: the accepted connection is the data connection (the listener
    /// and its lease, returning the port, are dropped here).
    pub(crate) fn stop_listening(&mut self, conn: DataConnId) {
        if let Some((i, _, stream)) = self.take_accepted(conn) {
            self.set_idle(i, stream);
        }
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
        if matches!(
            self.data[i].state,
            DataState::Transferring { .. } | DataState::Preparing { .. }
        ) {
            return; // a stale watch report; the transfer reports for itself
        }
        self.data.swap_remove(i);
        self.feed(Input::DataFailed { conn, error });
    }

    pub(crate) fn start_transfer(
        &mut self,
        xfer: TransferId,
        conn: DataConnId,
        file: Option<FileHandle>,
        mut pump: Box<Pump>,
    ) -> Option<Input<'static>> {
        let idle = self.find(conn).filter(|&i| {
            matches!(
                self.data[i].state,
                DataState::Idle { .. } | DataState::Preparing { .. }
            )
        });
        let Some(i) = idle else {
            if let Some(i) = self.find(conn) {
                self.data.swap_remove(i);
            }
            return Some(pump.connection_missing());
        };
        // The pump reports a file that is not open as a storage error.
        let file = file.and_then(|h| self.files.take(h).map(|f| (h, f)));
        pump.set_buffer_size(self.ctx.limits.buffer);
        let (stop_tx, stop_rx) = smol::channel::bounded(1);
        let state = DataState::Transferring {
            xfer,
            stop: Some(stop_tx),
            report: true,
        };
        let (stream, prepared) = match std::mem::replace(&mut self.data[i].state, state) {
            DataState::Idle { stream, .. } => (stream, None),
            // Dropping `stop` hands the pump back at once.
            DataState::Preparing { stream, task, .. } => (stream, Some(task)),
            _ => unreachable!("checked above"),
        };
        // The watch task was dropped with the idle state, so the stream is ours alone
        // (or soon is); sharing the `Arc` meanwhile is harmless.
        let (ctx, events) = (self.ctx.clone(), self.events.clone());
        let task = async move {
            if let Some(prepared) = prepared {
                pump.adopt(*prepared.await);
            }
            run_transfer(stream, pump, file, stop_rx, ctx, events).await
        };
        self.ctx.ex.spawn(task).detach();
        None
    }

    /// `PrepareTransfer`: the handshake-only pump runs on the idle connection now.
    pub(crate) fn prepare_transfer(&mut self, conn: DataConnId, pump: Box<Pump>) {
        let Some(i) = self
            .find(conn)
            .filter(|&i| matches!(self.data[i].state, DataState::Idle { .. }))
        else {
            return;
        };
        let DataState::Idle { stream, .. } = &self.data[i].state else {
            return;
        };
        let stream = stream.clone();
        let (stop, stop_rx) = smol::channel::bounded(1);
        let task = self
            .ctx
            .ex
            .spawn(run_handshake(stream.clone(), pump, stop_rx));
        // The idle watch goes with the idle state.
        self.data[i].state = DataState::Preparing {
            stream,
            task,
            _stop: stop,
        };
    }

    /// Tells a running transfer to stop; its pump ends it at once (or it had ended).
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

    /// A transfer's pump reported progress (for STAT) or its end (with its file, the
    /// connection closed): fed to the session unless it forgot the transfer.
    pub(crate) fn on_transfer(
        &mut self,
        xfer: TransferId,
        input: Input<'static>,
        file: Option<(FileHandle, OpenFile)>,
    ) {
        if let Some((h, f)) = file {
            self.files.put(h, f);
        }
        let running = |d: &DataEntry| matches!(&d.state, DataState::Transferring { xfer: x, .. } if *x == xfer);
        let Some(i) = self.data.iter().position(running) else {
            return;
        };
        let DataState::Transferring { report, .. } = self.data[i].state else {
            return;
        };
        if matches!(input, Input::TransferDone { .. }) {
            self.data.swap_remove(i);
        }
        if report {
            self.feed(input);
        }
    }
}
