//! Data connections: passive listeners, active connects, and the transfers that run on
//! them. Each is a [`DataSock`] in the shard's data slab, owned by one session.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Instant;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::Interest;
use wharf_core::backend::OpenFile;
use wharf_core::{
    Body, DataConnId, DataError, FileHandle, FsError, Input, TransferId, TransferOutcome,
    TransferSpec,
};

use crate::ports::PortLease;
use crate::shard::{data_token, Ready, Shard};
use crate::transfer::{Step, Transfer};
use wharf_net::{connect_from, is_exhaustion};

pub(crate) enum DataState {
    Listening {
        listener: TcpListener,
        expect_peer: Option<IpAddr>,
        /// Gives the port back to the pool when the listener goes.
        _lease: Option<PortLease>,
    },
    Connecting(TcpStream),
    /// Connected, waiting for `StartTransfer`. Not read: an upload's bytes (and even its
    /// FIN) wait in the kernel until the transfer starts.
    Idle(TcpStream),
    Transferring(Box<Transfer>),
    /// Only while moving from one state to the next.
    Empty,
}

pub(crate) struct DataSock {
    owner: usize,
    owner_gen: u64,
    gen: u64,
    conn: DataConnId,
    state: DataState,
    /// In the ready queue already.
    queued: bool,
    /// In the shard's progress list already.
    noted: bool,
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
            noted: false,
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
        expect_peer: Option<IpAddr>,
    ) -> Input<'static> {
        let failed = |error| Input::DataFailed { conn, error };
        let (mut listener, lease) = match crate::ports::listen(&self.ports, ip, &ports) {
            Ok(Some(l)) => l,
            Ok(None) => return failed(DataError::NoFreePort),
            Err(e) => return failed(data_error(&e)),
        };
        let port = match listener.local_addr() {
            Ok(a) => a.port(),
            Err(e) => return failed(data_error(&e)),
        };
        let dkey = self.data.vacant_key();
        let reg =
            self.poll
                .registry()
                .register(&mut listener, data_token(dkey), Interest::READABLE);
        if let Err(e) = reg {
            return failed(data_error(&e));
        }
        let state = DataState::Listening {
            listener,
            expect_peer,
            _lease: lease,
        };
        self.insert_data(key, conn, state);
        Input::DataListening { conn, port }
    }

    pub(crate) fn connect_data(
        &mut self,
        key: usize,
        conn: DataConnId,
        local_ip: IpAddr,
        target: SocketAddr,
    ) -> Option<Input<'static>> {
        let failed = |e: &io::Error| {
            Some(Input::DataFailed {
                conn,
                error: data_error(e),
            })
        };
        let mut stream = match connect_from(local_ip, target) {
            Ok(s) => mio::net::TcpStream::from_std(s),
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

    fn take_file(&mut self, key: usize, handle: FileHandle) -> Option<OpenFile> {
        let files = &mut self.conns[key].files;
        let i = files.iter().position(|(h, _)| *h == handle)?;
        Some(files.swap_remove(i).1)
    }

    pub(crate) fn start_transfer(
        &mut self,
        key: usize,
        xfer: TransferId,
        conn: DataConnId,
        spec: TransferSpec,
    ) -> Option<Input<'static>> {
        let done = |outcome| Some(Input::TransferDone { xfer, outcome });
        let Some(dkey) = self.find_data(key, conn) else {
            return done(TransferOutcome::ConnectionLost { bytes: 0 });
        };
        if !matches!(self.data[dkey].state, DataState::Idle(_)) {
            self.close_data_by_id(key, conn);
            return done(TransferOutcome::ConnectionLost { bytes: 0 });
        }
        let file = match &spec.body {
            Body::Send(h) | Body::Receive(h) => match self.take_file(key, *h) {
                Some(f) => Some((*h, f)),
                None => {
                    self.close_data_by_id(key, conn);
                    let error = FsError::Io("file is not open".into());
                    return done(TransferOutcome::Storage { bytes: 0, error });
                }
            },
            Body::Bytes(_) => None,
        };
        let d = &mut self.data[dkey];
        let DataState::Idle(stream) = std::mem::replace(&mut d.state, DataState::Empty) else {
            unreachable!()
        };
        let (mut lim, ascii, tls) = (self.limits, spec.ascii, spec.tls);
        let rate = spec.rate_limit;
        if let Some(r) = rate {
            // Paced transfers move small buffers, so the pacing is smooth (no sendfile:
            // it would move a megabyte at a time).
            lim.buffer = lim.buffer.min((r / 8).max(4096) as usize);
            lim.use_sendfile = false;
        }
        let mut t = match (spec.body, file) {
            (Body::Send(_), Some((h, f))) => {
                Transfer::send_file(xfer, stream, h, f, ascii, lim, tls)
            }
            (Body::Receive(_), Some((h, f))) => {
                Transfer::receive(xfer, stream, h, f, ascii, lim, tls)
            }
            (Body::Bytes(b), _) => Transfer::send_bytes(xfer, stream, b, tls),
            (_, None) => unreachable!("file bodies were checked above"),
        };
        t.rate = rate.map(|r| wharf_core::policy::TokenBucket::new(r, Instant::now()));
        t.max_bytes = spec.max_bytes;
        d.state = DataState::Transferring(Box::new(t));
        self.queue_data(dkey);
        None
    }

    pub(crate) fn abort_transfer(
        &mut self,
        key: usize,
        xfer: TransferId,
    ) -> Option<Input<'static>> {
        let c = self.conns.get(key)?;
        let dkey = c.data.iter().copied().find(
            |&d| matches!(&self.data[d].state, DataState::Transferring(t) if t.xfer == xfer),
        )?;
        let bytes = match &mut self.data[dkey].state {
            DataState::Transferring(t) => t.salvage(),
            _ => 0,
        };
        self.finish_transfer(dkey);
        Some(Input::TransferDone {
            xfer,
            outcome: TransferOutcome::Aborted { bytes },
        })
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
            if let Some(f) = file {
                c.files.push(f);
            }
        }
    }

    /// Deregisters and drops a data socket; returns the file a transfer on it held.
    pub(crate) fn remove_data(&mut self, dkey: usize) -> Option<(FileHandle, OpenFile)> {
        let d = self.data.try_remove(dkey)?;
        let reg = self.poll.registry();
        match d.state {
            DataState::Listening { mut listener, .. } => {
                let _ = reg.deregister(&mut listener);
                None
            }
            DataState::Connecting(mut s) | DataState::Idle(mut s) => {
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

    pub(crate) fn on_data_ready(&mut self, dkey: usize, gen: u64) {
        match self.data.get_mut(dkey) {
            Some(d) if d.gen == gen => d.queued = false,
            _ => return,
        }
        self.pump(dkey);
    }

    pub(crate) fn on_data_event(&mut self, dkey: usize, ev: &Event) {
        let Some(d) = self.data.get(dkey) else {
            return;
        };
        match &d.state {
            DataState::Listening { .. } => self.accept_data(dkey),
            DataState::Connecting(_) => self.check_connect(dkey),
            DataState::Idle(_) if ev.is_error() => {
                let (owner, conn) = (d.owner, d.conn);
                self.finish_transfer(dkey);
                let error = DataError::Io("data connection failed".into());
                self.feed(owner, Input::DataFailed { conn, error });
            }
            DataState::Idle(_) | DataState::Empty => {}
            DataState::Transferring(_) => {
                if !d.queued {
                    self.pump(dkey);
                }
            }
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
        loop {
            let d = &mut self.data[dkey];
            let DataState::Listening {
                listener,
                expect_peer,
                ..
            } = &d.state
            else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!("data accept: {e}");
                    return;
                }
            };
            if expect_peer.is_some_and(|ip| !same_ip(ip, peer.ip())) {
                tracing::info!(%peer, "data connection from a stranger refused");
                continue;
            }
            let reg = self.poll.registry();
            if let DataState::Listening { listener, .. } = &mut d.state {
                let _ = reg.deregister(listener);
            }
            let interest = Interest::READABLE | Interest::WRITABLE;
            let (owner, conn) = (d.owner, d.conn);
            if let Err(e) = reg.register(&mut stream, data_token(dkey), interest) {
                self.finish_transfer(dkey);
                let error = data_error(&e);
                self.feed(owner, Input::DataFailed { conn, error });
                return;
            }
            d.state = DataState::Idle(stream);
            self.feed(owner, Input::DataAccepted { conn, peer });
            return;
        }
    }

    fn check_connect(&mut self, dkey: usize) {
        let d = &mut self.data[dkey];
        let DataState::Connecting(stream) = &d.state else {
            return;
        };
        let (owner, conn) = (d.owner, d.conn);
        let error = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(data_error(&e)),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(data_error(&e)),
            },
        };
        match error {
            Some(error) => {
                self.finish_transfer(dkey);
                self.feed(owner, Input::DataFailed { conn, error });
            }
            None => {
                let DataState::Connecting(s) = std::mem::replace(&mut d.state, DataState::Empty)
                else {
                    unreachable!()
                };
                d.state = DataState::Idle(s);
                self.feed(owner, Input::DataConnected { conn });
            }
        }
    }

    /// How much a transfer may move now: the per-wake-up budget, or less under a
    /// bandwidth limit; `None` (with a wake-up queued for when its bucket refills) when
    /// it must wait.
    fn paced_budget(&mut self, dkey: usize) -> Option<usize> {
        let budget = self.limits.budget;
        let d = &mut self.data[dkey];
        let DataState::Transferring(t) = &mut d.state else {
            return Some(budget);
        };
        let Some(bucket) = &mut t.rate else {
            return Some(budget);
        };
        let now = Instant::now();
        match bucket.available(now) {
            0 => {
                let at = bucket.ready_at(now);
                // Queued: readiness events do not pump it before its time.
                d.queued = true;
                let gen = d.gen;
                self.throttled.push(std::cmp::Reverse((at, dkey, gen)));
                None
            }
            n => Some(budget.min(usize::try_from(n).unwrap_or(usize::MAX))),
        }
    }

    /// Runs a transfer for one budget; reports its end to the owner.
    fn pump(&mut self, dkey: usize) {
        let Some(budget) = self.paced_budget(dkey) else {
            return;
        };
        let d = &mut self.data[dkey];
        let DataState::Transferring(t) = &mut d.state else {
            return;
        };
        let before = t.bytes;
        let step = t.pump(budget);
        if let Some(bucket) = &mut t.rate {
            bucket.consume(Instant::now(), t.bytes - before);
        }
        match step {
            Step::Blocked => self.note_progress(dkey),
            Step::Yield => {
                self.note_progress(dkey);
                self.queue_data(dkey);
            }
            Step::Done(outcome) => {
                let (owner, owner_gen, xfer) = (d.owner, d.owner_gen, t.xfer);
                self.finish_transfer(dkey);
                if self.conns.get(owner).is_some_and(|c| c.gen == owner_gen) {
                    self.feed(owner, Input::TransferDone { xfer, outcome });
                }
            }
        }
    }

    fn note_progress(&mut self, dkey: usize) {
        let d = &mut self.data[dkey];
        if let DataState::Transferring(t) = &d.state {
            if (t.bytes > t.reported || t.handshake_progress) && !d.noted {
                d.noted = true;
                self.progress.push((dkey, d.gen));
            }
        }
    }

    /// Sends one coalesced `TransferProgress` per transfer that moved bytes this loop
    /// iteration.
    pub(crate) fn report_progress(&mut self) {
        for (dkey, gen) in std::mem::take(&mut self.progress) {
            let Some(d) = self.data.get_mut(dkey).filter(|d| d.gen == gen) else {
                continue;
            };
            d.noted = false;
            let DataState::Transferring(t) = &mut d.state else {
                continue;
            };
            // The core takes `bytes` as the running total (it stores, not adds, it).
            let bytes = t.bytes;
            t.reported = t.bytes;
            t.handshake_progress = false;
            let (owner, xfer) = (d.owner, t.xfer);
            self.feed(owner, Input::TransferProgress { xfer, bytes });
        }
    }
}
