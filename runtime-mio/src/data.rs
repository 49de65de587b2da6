//! Data connections: passive listeners, active connects, and the transfers that run on
//! them through the core's pump. Each is a [`DataSock`] in the shard's data slab, owned
//! by one session. Nothing here decides anything about FTP: the core judges who may
//! connect, and the pump how bytes move and how a transfer ends.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::Interest;
use wharf_core::backend::OpenFile;
use wharf_core::ports::PortLease;
use wharf_core::{DataConnId, DataError, FileHandle, Input, Pump, Run, TransferId};

use crate::shard::{data_token, FileWake, Ready, Shard};
use wharf_net::timers::TimerSlot;
use wharf_net::{connect_from, data_error, Wire};

pub(crate) enum DataState {
    Listening {
        listener: TcpListener,
        /// Gives the port back to the pool when the listener goes.
        lease: Option<PortLease>,
    },
    /// A connection the listener accepted, held until the core says whose it is
    /// (`RefuseData` or `StopListening`, in the drain of `DataAccepted`).
    Accepted {
        listener: TcpListener,
        lease: Option<PortLease>,
        stream: TcpStream,
        peer: SocketAddr,
    },
    /// An accepted connection from a load balancer whose PROXY protocol header is being
    /// read (`ReadProxyHeader`); the connection, not the listener, is registered
    /// meanwhile.
    Header {
        listener: TcpListener,
        lease: Option<PortLease>,
        stream: TcpStream,
        peer: SocketAddr,
    },
    Connecting(TcpStream),
    /// Connected, waiting for `StartTransfer`. Not read: an upload's bytes (and even its
    /// FIN) wait in the kernel until the transfer starts.
    Idle(TcpStream),
    /// A `PROT P` connection whose TLS handshake a handshake-only pump ran
    /// (`PrepareTransfer`) before its transfer: the pump waits for `StartTransfer`.
    Prepared {
        stream: TcpStream,
        pump: Box<Pump>,
    },
    /// A transfer, or a handshake-only pump (`PrepareTransfer`) until it is done.
    Transferring(Box<Transfer>),
    /// Only while moving from one state to the next.
    Empty,
}

pub(crate) struct Transfer {
    stream: TcpStream,
    pump: Box<Pump>,
    /// The open file, returned to the session's table when the transfer ends (an upload
    /// stays open until `CloseFile`).
    file: Option<(FileHandle, OpenFile)>,
}

pub(crate) struct DataSock {
    owner: usize,
    owner_gen: u64,
    gen: u64,
    conn: DataConnId,
    state: DataState,
    /// In the ready queue already.
    queued: bool,
    /// The pump's timer (stall, minimum rate, pacing).
    timer: TimerSlot,
}

impl DataSock {
    /// The control connection (slab key) this data socket belongs to.
    pub(crate) fn owner(&self) -> usize {
        self.owner
    }
}

impl Shard {
    fn insert_data(&mut self, owner: usize, conn: DataConnId, state: DataState) -> usize {
        let gen = self.next_gen();
        let owner_gen = self.conns[owner].gen;
        let key = self.data.insert(DataSock {
            owner,
            owner_gen,
            gen,
            conn,
            state,
            queued: false,
            timer: TimerSlot::default(),
        });
        self.conns[owner].data.push(key);
        key
    }

    pub(crate) fn listen_data(
        &mut self,
        key: usize,
        conn: DataConnId,
        ip: IpAddr,
        ports: RangeInclusive<u16>,
    ) -> Input<'static> {
        let failed = |error| Input::DataFailed { conn, error };
        let (listener, lease, port) = match wharf_net::listen_passive(&self.ports, ip, &ports) {
            Ok(l) => l,
            Err(error) => return failed(error),
        };
        let mut listener = TcpListener::from_std(listener);
        let dkey = self.data.vacant_key();
        let reg =
            self.poll
                .registry()
                .register(&mut listener, data_token(dkey), Interest::READABLE);
        if let Err(e) = reg {
            return failed(data_error(&e));
        }
        self.insert_data(key, conn, DataState::Listening { listener, lease });
        Input::DataListening { conn, port }
    }

    pub(crate) fn connect_data(
        &mut self,
        key: usize,
        conn: DataConnId,
        (local_ip, local_port): (IpAddr, u16),
        target: SocketAddr,
    ) -> Option<Input<'static>> {
        let failed = |e: &std::io::Error| {
            Some(Input::DataFailed {
                conn,
                error: data_error(e),
            })
        };
        let mut stream = match connect_from(local_ip, local_port, target) {
            Ok(s) => TcpStream::from_std(s),
            Err(e) => return failed(&e),
        };
        let dkey = self.data.vacant_key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let reg = self
            .poll
            .registry()
            .register(&mut stream, data_token(dkey), interest);
        if let Err(e) = reg {
            return failed(&e);
        }
        self.insert_data(key, conn, DataState::Connecting(stream));
        None
    }

    fn find_data(&self, key: usize, conn: DataConnId) -> Option<usize> {
        let c = self.conns.get(key)?;
        c.data.iter().copied().find(|&d| self.data[d].conn == conn)
    }

    /// `RefuseData`: the connection goes, the listener listens on.
    pub(crate) fn refuse_data(&mut self, key: usize, conn: DataConnId) {
        let Some(dkey) = self.find_data(key, conn) else {
            return;
        };
        let d = &mut self.data[dkey];
        if let DataState::Accepted {
            listener, lease, ..
        } = std::mem::replace(&mut d.state, DataState::Empty)
        {
            d.state = DataState::Listening { listener, lease };
            // Edge-triggered: others may wait in the backlog already.
            self.queue_data(dkey);
        }
    }

    /// `ReadProxyHeader`: the accepted connection is read (its header only) instead of
    /// the listener until the header is judged.
    pub(crate) fn read_proxy_header(&mut self, key: usize, conn: DataConnId) {
        let Some(dkey) = self.find_data(key, conn) else {
            return;
        };
        let d = &mut self.data[dkey];
        let DataState::Accepted {
            mut listener,
            lease,
            mut stream,
            peer,
        } = std::mem::replace(&mut d.state, DataState::Empty)
        else {
            return;
        };
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut listener);
        let registered = reg.register(&mut stream, data_token(dkey), Interest::READABLE);
        d.state = DataState::Header {
            listener,
            lease,
            stream,
            peer,
        };
        if let Err(e) = registered {
            tracing::warn!("register a data connection: {e}");
        }
        // Edge-triggered: the header is usually there already.
        self.queue_data(dkey);
    }

    /// Reads what there is of a balancer's header; once judged, the listener is
    /// registered again and the session told.
    fn continue_header(&mut self, dkey: usize) {
        let d = &mut self.data[dkey];
        let DataState::Header { stream, peer, .. } = &d.state else {
            return;
        };
        let wharf_net::HeaderRead::Done(client) = wharf_net::read_proxy_header(stream, *peer)
        else {
            return;
        };
        let DataState::Header {
            mut listener,
            lease,
            mut stream,
            peer,
        } = std::mem::replace(&mut d.state, DataState::Empty)
        else {
            unreachable!("checked above")
        };
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut stream);
        if let Err(e) = reg.register(&mut listener, data_token(dkey), Interest::READABLE) {
            tracing::warn!("register a passive listener again: {e}");
        }
        d.state = DataState::Accepted {
            listener,
            lease,
            stream,
            peer,
        };
        let (owner, conn) = (d.owner, d.conn);
        self.feed(owner, Input::DataProxied { conn, client });
    }

    /// `StopListening`: the accepted connection is the data connection.
    pub(crate) fn stop_listening(&mut self, key: usize, conn: DataConnId) {
        let Some(dkey) = self.find_data(key, conn) else {
            return;
        };
        let d = &mut self.data[dkey];
        let DataState::Accepted {
            mut listener,
            mut stream,
            ..
        } = std::mem::replace(&mut d.state, DataState::Empty)
        else {
            return;
        };
        let reg = self.poll.registry();
        let _ = reg.deregister(&mut listener);
        // The listener (and its lease, returning the port) are dropped here.
        let interest = Interest::READABLE | Interest::WRITABLE;
        match reg.register(&mut stream, data_token(dkey), interest) {
            Ok(()) => d.state = DataState::Idle(stream),
            Err(e) => {
                // The core hears of it as a failed idle connection.
                let (owner, conn) = (d.owner, d.conn);
                self.finish_transfer(dkey);
                let error = data_error(&e);
                self.feed(owner, Input::DataFailed { conn, error });
            }
        }
    }

    /// `PrepareTransfer`: the handshake-only pump runs on the idle connection now.
    pub(crate) fn prepare_transfer(&mut self, key: usize, conn: DataConnId, pump: Box<Pump>) {
        let idle = self
            .find_data(key, conn)
            .filter(|&d| matches!(self.data[d].state, DataState::Idle(_)));
        let Some(dkey) = idle else {
            return;
        };
        let d = &mut self.data[dkey];
        let DataState::Idle(stream) = std::mem::replace(&mut d.state, DataState::Empty) else {
            unreachable!("checked above")
        };
        let file = None;
        d.state = DataState::Transferring(Box::new(Transfer { stream, pump, file }));
        self.queue_data(dkey);
    }

    pub(crate) fn start_transfer(
        &mut self,
        key: usize,
        conn: DataConnId,
        file: Option<FileHandle>,
        mut pump: Box<Pump>,
    ) -> Option<Input<'static>> {
        let ready = self
            .find_data(key, conn)
            .filter(|&d| match &self.data[d].state {
                DataState::Idle(_) | DataState::Prepared { .. } => true,
                DataState::Transferring(t) => t.pump.is_handshake_only(),
                _ => false,
            });
        let Some(dkey) = ready else {
            self.close_data_by_id(key, conn);
            return Some(pump.connection_missing());
        };
        // The pump reports a file that is not open as a storage error.
        let file = file.and_then(|h| self.conns[key].files.take(h).map(|f| (h, f)));
        pump.set_buffer_size(self.limits.buffer);
        let d = &mut self.data[dkey];
        let (stream, prepared) = match std::mem::replace(&mut d.state, DataState::Empty) {
            DataState::Idle(stream) => (stream, None),
            DataState::Prepared { stream, pump } => (stream, Some(pump)),
            DataState::Transferring(t) => (t.stream, Some(t.pump)),
            _ => unreachable!("checked above"),
        };
        if let Some(prepared) = prepared {
            // A handshake still in progress simply goes on in the transfer's pump.
            pump.adopt(*prepared);
        }
        d.state = DataState::Transferring(Box::new(Transfer { stream, pump, file }));
        self.queue_data(dkey);
        None
    }

    /// `AbortTransfer`: the pump ends at its next run, which touches only the file.
    pub(crate) fn abort_transfer(&mut self, key: usize, xfer: TransferId) -> Vec<Input<'static>> {
        let Some(c) = self.conns.get(key) else {
            return Vec::new();
        };
        let found = c.data.iter().copied().find(
            |&d| matches!(&self.data[d].state, DataState::Transferring(t) if t.pump.xfer() == xfer),
        );
        match found {
            Some(dkey) => {
                if let DataState::Transferring(t) = &mut self.data[dkey].state {
                    t.pump.abort();
                }
                self.step(dkey).1
            }
            None => Vec::new(),
        }
    }

    pub(crate) fn close_data_by_id(&mut self, key: usize, conn: DataConnId) {
        if let Some(dkey) = self.find_data(key, conn) {
            self.finish_transfer(dkey);
        }
    }

    /// Closes a data socket, forgets it in its owner, and returns the owner's open file
    /// to its table.
    fn finish_transfer(&mut self, dkey: usize) {
        let owner = self.data[dkey].owner;
        let file = self.remove_data(dkey);
        if let Some(c) = self.conns.get_mut(owner) {
            c.data.retain(|&d| d != dkey);
            if let Some((h, f)) = file {
                c.files.put(h, f);
            }
        }
    }

    /// Deregisters and drops a data socket; returns the file a transfer on it held.
    pub(crate) fn remove_data(&mut self, dkey: usize) -> Option<(FileHandle, OpenFile)> {
        let d = self.data.try_remove(dkey)?;
        let reg = self.poll.registry();
        match d.state {
            DataState::Listening { mut listener, .. }
            | DataState::Accepted { mut listener, .. } => {
                let _ = reg.deregister(&mut listener);
                None
            }
            DataState::Header { mut stream, .. } => {
                let _ = reg.deregister(&mut stream);
                None
            }
            DataState::Connecting(mut s)
            | DataState::Idle(mut s)
            | DataState::Prepared { stream: mut s, .. } => {
                let _ = reg.deregister(&mut s);
                None
            }
            DataState::Transferring(mut t) => {
                let _ = reg.deregister(&mut t.stream);
                t.file.take()
            }
            DataState::Empty => None,
        }
    }

    fn queue_data(&mut self, dkey: usize) {
        let d = &mut self.data[dkey];
        if !d.queued {
            d.queued = true;
            self.ready.push_back(Ready::Data(dkey, d.gen));
        }
    }

    /// A transfer's file can go on: run it in this turn's ready queue.
    pub(crate) fn queue_file_ready(&mut self, dkey: usize, gen: u64) {
        if self.data.get(dkey).is_some_and(|d| d.gen == gen) {
            self.queue_data(dkey);
        }
    }

    pub(crate) fn on_data_ready(&mut self, dkey: usize, gen: u64) {
        match self.data.get_mut(dkey) {
            Some(d) if d.gen == gen => d.queued = false,
            _ => return,
        }
        match self.data[dkey].state {
            DataState::Listening { .. } => self.accept_data(dkey),
            DataState::Header { .. } => self.continue_header(dkey),
            _ => self.pump(dkey),
        }
    }

    pub(crate) fn on_data_event(&mut self, dkey: usize, ev: &Event) {
        let Some(d) = self.data.get(dkey) else {
            return;
        };
        match &d.state {
            DataState::Listening { .. } => self.accept_data(dkey),
            DataState::Connecting(_) => self.check_connect(dkey),
            DataState::Header { .. } => self.continue_header(dkey),
            DataState::Idle(_) if ev.is_error() => {
                let (owner, conn) = (d.owner, d.conn);
                self.finish_transfer(dkey);
                let error = DataError::Io("data connection failed".into());
                self.feed(owner, Input::DataFailed { conn, error });
            }
            DataState::Transferring(_) if !d.queued => self.pump(dkey),
            _ => {}
        }
    }

    /// The pump's timer fired.
    pub(crate) fn on_data_timer(&mut self, dkey: usize, gen: u64, entry: Instant, now: Instant) {
        let Some(d) = self.data.get_mut(dkey).filter(|d| d.gen == gen) else {
            return;
        };
        if !self.data_timers.fire(&mut d.timer, dkey, gen, entry, now) {
            return;
        }
        if let DataState::Transferring(t) = &mut d.state {
            t.pump.handle_timeout(now);
            self.pump(dkey);
        }
    }

    /// Feeds an input to the session at `key` and drains it.
    fn feed(&mut self, key: usize, input: Input<'_>) {
        if let Some(c) = self.conns.get_mut(key) {
            c.session.handle_input(Instant::now(), input);
            self.drive(key);
        }
    }

    fn accept_data(&mut self, dkey: usize) {
        let d = &mut self.data[dkey];
        let DataState::Listening { listener, .. } = &d.state else {
            return;
        };
        let (stream, peer) = match listener.accept() {
            Ok(x) => x,
            Err(e) => {
                // WouldBlock, or a failure the data-connection timer bounds.
                tracing::debug!("data accept: {e}");
                return;
            }
        };
        let DataState::Listening { listener, lease } =
            std::mem::replace(&mut d.state, DataState::Empty)
        else {
            unreachable!("checked above")
        };
        d.state = DataState::Accepted {
            listener,
            lease,
            stream,
            peer,
        };
        let (owner, conn) = (d.owner, d.conn);
        self.feed(owner, Input::DataAccepted { conn, peer });
    }

    fn check_connect(&mut self, dkey: usize) {
        let d = &mut self.data[dkey];
        let DataState::Connecting(stream) = &d.state else {
            return;
        };
        let (owner, conn) = (d.owner, d.conn);
        match wharf_net::connect_outcome(stream) {
            None => {}
            Some(Err(e)) => {
                self.finish_transfer(dkey);
                let error = data_error(&e);
                self.feed(owner, Input::DataFailed { conn, error });
            }
            Some(Ok(())) => {
                let DataState::Connecting(s) = std::mem::replace(&mut d.state, DataState::Empty)
                else {
                    unreachable!()
                };
                d.state = DataState::Idle(s);
                self.feed(owner, Input::DataConnected { conn });
            }
        }
    }

    /// Runs a transfer's pump once and feeds what it reports to its session.
    fn pump(&mut self, dkey: usize) {
        let (owner, inputs) = self.step(dkey);
        for input in inputs {
            self.feed(owner, input);
        }
    }

    /// Runs a transfer's pump for one budget: on `Done` the connection closes and the
    /// file goes back; otherwise it waits for readiness, its timer, or its turn.
    /// Returns the owner and the inputs for it (`TransferDone` last, after the close).
    fn step(&mut self, dkey: usize) -> (usize, Vec<Input<'static>>) {
        let (budget, sendfile) = (self.limits.budget, self.limits.use_sendfile);
        let Some(d) = self.data.get_mut(dkey) else {
            return (usize::MAX, Vec::new());
        };
        let (owner, owner_gen, gen) = (d.owner, d.owner_gen, d.gen);
        let DataState::Transferring(t) = &mut d.state else {
            return (owner, Vec::new());
        };
        let mut wire = Wire {
            socket: &t.stream,
            file: t.file.as_mut().map(|(_, f)| f),
            sendfile,
        };
        let run = t.pump.run(Instant::now(), &mut wire, budget);
        let inputs: Vec<_> = std::iter::from_fn(|| t.pump.poll_input()).collect();
        match run {
            Run::Done if t.pump.is_handshake_only() => {
                // The connection stays for the transfer, with the pump's TLS.
                let DataState::Transferring(t) = std::mem::replace(&mut d.state, DataState::Empty)
                else {
                    unreachable!("matched above")
                };
                let Transfer { stream, pump, .. } = *t;
                d.state = DataState::Prepared { stream, pump };
            }
            Run::Done => self.finish_transfer(dkey),
            Run::Yield => self.queue_data(dkey),
            Run::File => {
                let deadline = t.pump.poll_timeout();
                self.data_timers.arm(&mut d.timer, dkey, gen, deadline);
                let wake = FileWake {
                    ready: self.file_ready.clone(),
                    waker: self.waker.clone(),
                    dkey,
                    gen,
                };
                if let Some((_, f)) = t.file.as_mut() {
                    f.set_waker(&std::task::Waker::from(Arc::new(wake)));
                }
            }
            _ => {
                let deadline = t.pump.poll_timeout();
                self.data_timers.arm(&mut d.timer, dkey, gen, deadline);
            }
        }
        let alive = self.conns.get(owner).is_some_and(|c| c.gen == owner_gen);
        (owner, if alive { inputs } else { Vec::new() })
    }
}
