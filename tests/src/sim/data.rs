//! Data connections and transfers as the simulated runtime runs them: listeners that
//! fail or never see a connection, thieves racing the client to a passive port, connects
//! that fail, and transfers that run the core's own pump over simulated byte streams,
//! segmented at any byte, with short socket buffers, clients that reset, stall, go
//! slow, or abort.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use wharf_core::backend::OpenFile;
use wharf_core::{
    Action, DataConnId, DataError, DataIo, FileHandle, Input, Pump, Run, TransferId,
    TransferOutcome,
};

use super::rng::Rng;
use super::world::{Ev, Res, Sim};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// `ListenData` seen, `DataListening` not yet reported.
    Binding,
    Listening,
    /// A connection was reported (`DataAccepted`); the core has not yet said whose.
    Accepted,
    /// The client's connection arrived (passive) or connected (active).
    Open,
    Connecting,
    /// Reported as `DataFailed`; the core may still `CloseData` it.
    Failed,
}

#[derive(Debug)]
pub struct Conn {
    pub state: ConnState,
    pub port: Option<u16>,
}

/// A simulated data connection.
struct Pipe {
    /// Client bytes the server has not read yet, and whether the client's FIN follows.
    c2s: VecDeque<u8>,
    c2s_fin: bool,
    /// Server bytes not yet read by the client, and the socket buffer's size.
    s2c: Vec<u8>,
    room: usize,
    /// The server half-closed (a download's end).
    s2c_fin: bool,
    /// The client reset the connection.
    reset: bool,
}

/// A running transfer: the pump, and the simulated data connection it runs over.
pub struct Xfer {
    pump: Box<Pump>,
    pipe: Pipe,
    file: Option<FileHandle>,
    upload: bool,
    /// How much of the client's upload it has sent.
    sent: usize,
    /// Under PROT P: the client's end of the data connection's TLS, whether it ends an
    /// upload with close_notify, and whether its upload's end is written.
    client_tls: Option<Box<rustls::ClientConnection>>,
    close_notify: bool,
    closed: bool,
    reset_at: Option<u64>,
    stall_at: Option<u64>,
    slow: bool,
    aborting: bool,
    /// Bytes the client moved, and when the pump last moved any.
    moved: u64,
    pub last_moved: Duration,
    pump_bytes: u64,
}

impl Xfer {
    /// For the transcript: the pump and its deadline in simulated time.
    pub fn show(&self, origin: std::time::Instant) -> String {
        let due = self.pump.poll_timeout().map(|t| t - origin);
        format!("{:?} due {due:?}", self.pump)
    }

    /// Running, not being aborted, and with bytes moved within the stall timeout.
    pub fn live(&self, now: Duration, stall: Duration) -> bool {
        !self.aborting && now < self.last_moved + stall
    }

    /// When the pump wants its timer.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.pump.poll_timeout()
    }
}

/// The pump's side of a simulated data connection, and the transfer's file.
struct SimIo<'a> {
    x: &'a mut Pipe,
    file: Option<&'a mut OpenFile>,
    rng: &'a mut Rng,
    segment: bool,
}

impl SimIo<'_> {
    fn piece(&mut self, n: usize) -> usize {
        match self.segment {
            true if n > 1 => self.rng.range(1, n as u64) as usize,
            _ => n,
        }
    }
}

impl DataIo for SimIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.x.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if self.x.c2s.is_empty() {
            return match self.x.c2s_fin {
                true => Ok(0),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let n = self.piece(buf.len().min(self.x.c2s.len()));
        for (b, byte) in buf.iter_mut().zip(self.x.c2s.drain(..n)) {
            *b = byte;
        }
        Ok(n)
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.x.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let room = self.x.room.saturating_sub(self.x.s2c.len());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.piece(buf.len().min(room));
        self.x.s2c.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn shutdown_write(&mut self) {
        self.x.s2c_fin = true;
    }

    fn read_file(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(OpenFile::Read(r)) => r.read(buf),
            _ => Err(io::Error::other("no file open for reading")),
        }
    }

    fn write_file(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(OpenFile::Write(w)) => w.write(buf),
            _ => Err(io::Error::other("no file open for writing")),
        }
    }

    fn flush_file(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(OpenFile::Write(w)) => w.flush(),
            _ => Ok(()),
        }
    }
}

use std::io::{Read, Write};

const THIEF: &str = "203.0.113.66:31337";

impl Sim {
    pub fn data_action(&mut self, s: usize, action: Action) -> Res {
        match action {
            Action::ListenData { conn, ports, .. } => {
                self.fresh_conn(s, conn)?;
                let result = self.bind(ports);
                let port = result.as_ref().ok().copied();
                let state = ConnState::Binding;
                self.slots[s].conns.insert(conn, Conn { state, port });
                let lat = self.latency() / 10;
                self.at(lat, Ev::Listened { s, conn, result });
            }
            Action::ConnectData { conn, target, .. } => {
                self.fresh_conn(s, conn)?;
                let peer = self.slots[s].peer.ip().to_canonical();
                if target.port() < 1024 || target.ip().to_canonical() != peer {
                    return Err(format!("s{s}: bounce: ConnectData to {target}"));
                }
                let conn_state = Conn {
                    state: ConnState::Connecting,
                    port: None,
                };
                self.slots[s].conns.insert(conn, conn_state);
                let ok = !(self.swarm.connect_fails && self.net.chance(25));
                let lat = self.latency() * 2;
                self.at(lat, Ev::Connected { s, conn, ok });
            }
            Action::RefuseData { conn } => self.verdict(s, conn, ConnState::Listening)?,
            Action::StopListening { conn } => self.verdict(s, conn, ConnState::Open)?,
            Action::StartTransfer {
                xfer,
                conn,
                file,
                pump,
            } => self.start(s, xfer, conn, file, pump)?,
            Action::AbortTransfer { xfer } => self.abort(s, xfer)?,
            Action::CloseData { conn } => {
                if self.slots[s].dead_conns.contains(&conn) {
                    return Err(format!(
                        "s{s}: CloseData of {conn}, already closed or consumed"
                    ));
                }
                self.retire(s, conn)
                    .ok_or_else(|| format!("s{s}: CloseData of unknown {conn}"))?;
            }
            // Optional (see its docs): the transfer's pump runs the handshake, as it
            // always did before the action existed.
            Action::PrepareTransfer { .. } => {}
            other => return Err(format!("s{s}: unexpected action {other:?}")),
        }
        Ok(())
    }

    fn fresh_conn(&self, s: usize, conn: DataConnId) -> Res {
        let slot = &self.slots[s];
        if slot.conns.contains_key(&conn) || slot.dead_conns.contains(&conn) {
            return Err(format!("s{s}: data connection id {conn} reused"));
        }
        if slot
            .conns
            .values()
            .filter(|c| c.state != ConnState::Failed)
            .count()
            > 1
        {
            return Err(format!(
                "s{s}: more than two live data connections: {:?}",
                slot.conns
            ));
        }
        Ok(())
    }

    /// Takes a free port of the range, as a runtime binding a passive listener would.
    fn bind(&mut self, ports: std::ops::RangeInclusive<u16>) -> Result<u16, DataError> {
        if self.swarm.listen_fails && self.net.chance(20) {
            return Err(DataError::Exhausted);
        }
        let (lo, hi) = (*ports.start(), *ports.end());
        let start = self.net.range(u64::from(lo), u64::from(hi)) as u16;
        let port = (start..=hi)
            .chain(lo..start)
            .find(|p| !self.used_ports.contains(p));
        let port = port.ok_or(DataError::NoFreePort)?;
        self.used_ports.insert(port);
        Ok(port)
    }

    /// Forgets a connection for good, freeing its port.
    fn retire(&mut self, s: usize, conn: DataConnId) -> Option<Conn> {
        let c = self.slots[s].conns.remove(&conn)?;
        self.slots[s].dead_conns.insert(conn);
        if let Some(port) = c.port {
            self.used_ports.remove(&port);
        }
        Some(c)
    }

    pub fn data_event(&mut self, ev: Ev) -> Res {
        match ev {
            Ev::Listened { s, conn, result } => self.listened(s, conn, result),
            Ev::Accept { s, conn, thief } => self.accept(s, conn, thief),
            Ev::Connected { s, conn, ok } => {
                let Some(c) = self.slots[s].conns.get_mut(&conn) else {
                    return Ok(());
                };
                if ok {
                    c.state = ConnState::Open;
                    self.feed(s, Input::DataConnected { conn })
                } else {
                    c.state = ConnState::Failed;
                    let error = DataError::Refused;
                    self.feed(s, Input::DataFailed { conn, error })
                }
            }
            Ev::XferStep { s, xfer } => self.step(s, xfer),
            Ev::XferAborted { s, xfer } => {
                let Some(x) = self.slots[s].xfers.get_mut(&xfer) else {
                    return Ok(());
                };
                x.pump.abort();
                self.run_xfer(s, xfer)
            }
            other => Err(format!("unrouted event {other:?}")),
        }
    }

    fn listened(&mut self, s: usize, conn: DataConnId, result: Result<u16, DataError>) -> Res {
        let Some(c) = self.slots[s].conns.get_mut(&conn) else {
            return Ok(());
        };
        let port = match result {
            Ok(port) => port,
            Err(error) => {
                c.state = ConnState::Failed;
                return self.feed(s, Input::DataFailed { conn, error });
            }
        };
        c.state = ConnState::Listening;
        let connect_after = self.latency() * 2 + Duration::from_millis(self.net.range(0, 50));
        if !(self.swarm.accept_lost && self.net.chance(30)) {
            self.at(
                connect_after,
                Ev::Accept {
                    s,
                    conn,
                    thief: false,
                },
            );
        }
        if self.swarm.thieves && self.net.chance(50) {
            self.at(
                connect_after / 2,
                Ev::Accept {
                    s,
                    conn,
                    thief: true,
                },
            );
        }
        self.feed(s, Input::DataListening { conn, port })
    }

    /// A connection reaches a passive listener; the core judges it.
    fn accept(&mut self, s: usize, conn: DataConnId, thief: bool) -> Res {
        let Some(c) = self.slots[s].conns.get_mut(&conn) else {
            return Ok(());
        };
        if c.state != ConnState::Listening {
            return Ok(());
        }
        c.state = ConnState::Accepted;
        let peer: SocketAddr = match thief {
            true => THIEF.parse().expect("valid"),
            false => {
                let mut peer = self.slots[s].peer;
                peer.set_port(peer.port() + 1000);
                peer
            }
        };
        self.count(if thief {
            "accept:thief"
        } else {
            "accept:client"
        });
        self.feed(s, Input::DataAccepted { conn, peer })?;
        let state = self.slots[s].conns.get(&conn).map(|c| c.state);
        if state == Some(ConnState::Accepted) {
            return Err(format!("s{s}: DataAccepted of {conn} got no verdict"));
        }
        if thief && self.cfg.match_pasv_peer && state == Some(ConnState::Open) {
            return Err(format!("s{s}: a thief's connection was taken for {conn}"));
        }
        Ok(())
    }

    /// `RefuseData` (back to listening) or `StopListening` (open): the core's verdict on
    /// the connection `DataAccepted` reported.
    fn verdict(&mut self, s: usize, conn: DataConnId, state: ConnState) -> Res {
        let Some(c) = self.slots[s].conns.get_mut(&conn) else {
            return Err(format!("s{s}: verdict on unknown {conn}"));
        };
        if c.state != ConnState::Accepted {
            return Err(format!("s{s}: verdict on {conn} in state {:?}", c.state));
        }
        c.state = state;
        if state == ConnState::Open {
            // The listener closed: its port is free again.
            if let Some(port) = c.port.take() {
                self.used_ports.remove(&port);
            }
        }
        Ok(())
    }

    fn start(
        &mut self,
        s: usize,
        xfer: TransferId,
        conn: DataConnId,
        file: Option<FileHandle>,
        pump: Box<Pump>,
    ) -> Res {
        let state = self.slots[s].conns.get(&conn).map(|c| c.state);
        if state != Some(ConnState::Open) {
            return Err(format!("s{s}: StartTransfer on {conn} in state {state:?}"));
        }
        if !self.slots[s].xfers.is_empty() {
            return Err(format!("s{s}: a second transfer started while one runs"));
        }
        if pump.xfer() != xfer {
            return Err(format!(
                "s{s}: StartTransfer {xfer} with the pump of {}",
                pump.xfer()
            ));
        }
        self.retire(s, conn);
        let upload = pump.is_upload();
        if let Some(f) = file {
            let kind_ok = matches!(
                (self.slots[s].files.get(&f), upload),
                (Some(OpenFile::Read(_)), false) | (Some(OpenFile::Write(_)), true)
            );
            if !kind_ok || self.slots[s].closing.contains(&f) {
                return Err(format!("s{s}: transfer of {f}, which is not open that way"));
            }
        }
        self.clients[s].transfer_started(upload);
        let client_tls = match pump.tls() {
            Some(_) => {
                let config = self.clients[s].tls_config.clone();
                let mut config = config.ok_or(format!("s{s}: PROT P without a TLS client"))?;
                // Now and then a data connection that cannot resume (as ftplib's): a
                // configuration of its own, refused with 522. (Fresh tickets with every
                // data channel keep a rustls client from ever running out.)
                if self.net.chance(8) {
                    config = super::tls::client_config(self.swarm.tls13);
                }
                Some(super::tls::connect(&config))
            }
            None => None,
        };
        let close_notify = !(self.swarm.truncate && self.net.chance(30));
        let size_hint = 4000;
        let mut pump = pump;
        // Small buffers, so that even small files take many steps.
        pump.set_buffer_size(self.net.range(4096, 20_000) as usize);
        let x = Xfer {
            pump,
            pipe: Pipe {
                c2s: VecDeque::new(),
                c2s_fin: false,
                s2c: Vec::new(),
                room: self.net.range(1, 64 * 1024) as usize,
                s2c_fin: false,
                reset: false,
            },
            file,
            upload,
            sent: 0,
            client_tls,
            close_notify,
            closed: false,
            reset_at: (self.swarm.xfer_resets && self.net.chance(20))
                .then(|| self.net.range(0, size_hint)),
            stall_at: (self.swarm.xfer_stalls && self.net.chance(20))
                .then(|| self.net.range(0, size_hint)),
            slow: self.swarm.xfer_slow && self.net.chance(40),
            aborting: false,
            moved: 0,
            last_moved: self.now,
            pump_bytes: 0,
        };
        self.slots[s].xfers.insert(xfer, x);
        self.run_xfer(s, xfer)?;
        let delay = self.chunk_delay(false);
        self.at(delay, Ev::XferStep { s, xfer });
        Ok(())
    }

    fn chunk_delay(&mut self, slow: bool) -> Duration {
        let stall = self.cfg.timeouts.transfer_stall.as_millis() as u64;
        let ms = if slow && self.net.chance(30) {
            self.net.range(stall / 2, stall * 9 / 10)
        } else {
            self.net.range(0, stall / 20)
        };
        Duration::from_millis(ms)
    }

    /// `AbortTransfer`: only ABOR, the peer leaving or the server stopping ask for it
    /// (the pump ends stalled and slow transfers itself). The runtime's stop reaches the
    /// transfer a little later.
    fn abort(&mut self, s: usize, xfer: TransferId) -> Res {
        let excused =
            self.clients[s].abor_sent || self.slots[s].peer_gone || self.slots[s].shutdown_fed;
        if !excused {
            return Err(format!(
                "s{s}: AbortTransfer of {xfer} without ABOR, EOF or shutdown"
            ));
        }
        let Some(x) = self.slots[s].xfers.get_mut(&xfer) else {
            // It ended meanwhile; its TransferDone is on its way or was handled.
            return Ok(());
        };
        if x.aborting {
            return Err(format!("s{s}: AbortTransfer of {xfer} twice"));
        }
        x.aborting = true;
        let lat = self.latency() / 4;
        self.at(lat, Ev::XferAborted { s, xfer });
        Ok(())
    }

    /// The client's side moves one piece (reads a download's bytes, sends an upload's,
    /// resets or stalls), then the pump runs.
    fn step(&mut self, s: usize, xfer: TransferId) -> Res {
        let chunk = self.net.range(1, 1500) as usize;
        let Some(x) = self.slots[s].xfers.get_mut(&xfer) else {
            return Ok(());
        };
        if x.stall_at.is_some_and(|at| x.moved >= at) || x.pipe.reset {
            return Ok(()); // the peer went silent: only the pump's stall timer ends this
        }
        if x.reset_at.is_some_and(|at| x.moved >= at) {
            x.pipe.reset = true;
            self.count("xfer:client-reset");
            return self.run_xfer(s, xfer);
        }
        let client = &mut self.clients[s];
        let pipe = &mut x.pipe;
        if let Some(c) = &mut x.client_tls {
            // The server's records: a download's a chunk at a time; during an upload only
            // the handshake (and a close_notify), read at once.
            let take = match x.upload {
                true => pipe.s2c.len(),
                false => chunk.min(pipe.s2c.len()),
            };
            let bytes: Vec<u8> = pipe.s2c.drain(..take).collect();
            let plain = super::tls::feed(c, &bytes, &mut client.data_in);
            x.moved += plain as u64;
            if x.upload && !c.is_handshaking() && x.sent < client.upload.len() {
                let end = (x.sent + chunk).min(client.upload.len());
                let n = c.writer().write(&client.upload[x.sent..end]).unwrap_or(0);
                x.sent += n;
                x.moved += n as u64;
            }
            if x.upload && !c.is_handshaking() && x.sent == client.upload.len() && !x.closed {
                if x.close_notify {
                    c.send_close_notify();
                }
                x.closed = true;
            }
            pipe.c2s.extend(super::tls::outgoing(c));
            if x.closed && !c.wants_write() {
                pipe.c2s_fin = true;
            }
        } else if x.upload {
            let end = (x.sent + chunk).min(client.upload.len());
            pipe.c2s.extend(&client.upload[x.sent..end]);
            x.moved += (end - x.sent) as u64;
            x.sent = end;
            if x.sent == client.upload.len() {
                pipe.c2s_fin = true;
            }
        } else {
            let n = chunk.min(pipe.s2c.len());
            client.data_in.extend(pipe.s2c.drain(..n));
            x.moved += n as u64;
        }
        let client_done = x.upload && pipe.c2s_fin || pipe.s2c_fin && pipe.s2c.is_empty();
        let slow = x.slow;
        self.run_xfer(s, xfer)?;
        if !client_done && self.slots[s].xfers.contains_key(&xfer) {
            let delay = self.chunk_delay(slow);
            self.at(delay, Ev::XferStep { s, xfer });
        }
        Ok(())
    }

    /// The pump's timer.
    pub fn xfer_timeout(&mut self, s: usize, xfer: TransferId) -> Res {
        let now = self.instant();
        if let Some(x) = self.slots[s].xfers.get_mut(&xfer) {
            x.pump.handle_timeout(now);
        }
        self.run_xfer(s, xfer)
    }

    /// Runs the pump until it waits, feeds its inputs to the session, and ends the
    /// transfer when it is done.
    fn run_xfer(&mut self, s: usize, xfer: TransferId) -> Res {
        let now = self.instant();
        let segment = self.swarm.segment;
        let slot = &mut self.slots[s];
        let Some(mut x) = slot.xfers.remove(&xfer) else {
            return Ok(());
        };
        let mut run = Run::Yield;
        let mut inputs = Vec::new();
        for _ in 0..64 {
            let file = x.file.and_then(|f| slot.files.get_mut(&f));
            let mut io = SimIo {
                x: &mut x.pipe,
                file,
                rng: &mut self.net,
                segment,
            };
            // A small budget, so that the yield path runs too.
            run = x.pump.run(now, &mut io, 2048);
            inputs.extend(std::iter::from_fn(|| x.pump.poll_input()));
            if run != Run::Yield {
                break;
            }
        }
        if x.pump.bytes() != x.pump_bytes {
            x.pump_bytes = x.pump.bytes();
            x.last_moved = self.now;
        }
        let last_moved = x.last_moved;
        let done = run == Run::Done;
        if done && !x.upload && !x.pipe.reset {
            // The connection closes: the client reads what is left up to the FIN, as
            // clients do before they take the transfer's reply.
            let data_in = &mut self.clients[s].data_in;
            match &mut x.client_tls {
                Some(c) => {
                    super::tls::feed(c, &x.pipe.s2c, data_in);
                }
                None => data_in.append(&mut x.pipe.s2c),
            }
        }
        if done {
            self.clients[s].data_resumed = x
                .client_tls
                .as_ref()
                .map(|c| c.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
        }
        if !done {
            slot.xfers.insert(xfer, x);
            if run == Run::Yield {
                self.at(Duration::ZERO, Ev::XferStep { s, xfer });
            }
        }
        for input in inputs {
            if let Input::TransferDone { outcome, .. } = &input {
                self.check_end(s, outcome, last_moved)?;
                let shown = format!("{outcome:?}");
                self.count(&format!("xfer:{}", shown.split(' ').next().unwrap_or("")));
            }
            self.feed(s, input)?;
        }
        Ok(())
    }

    /// Judges how the pump ended a transfer.
    fn check_end(&self, s: usize, outcome: &TransferOutcome, last_moved: Duration) -> Res {
        let stall = self.cfg.timeouts.transfer_stall;
        match outcome {
            TransferOutcome::Stalled { .. } if self.now < last_moved + stall => Err(format!(
                "s{s}: stalled at {:?}, bytes moved at {last_moved:?} (stall {stall:?})",
                self.now
            )),
            TransferOutcome::TooSlow { .. } if self.cfg.limits.min_bytes_per_second == 0 => {
                Err(format!("s{s}: too slow without a minimum rate"))
            }
            TransferOutcome::TooLarge { .. } if self.cfg.filtering.max_upload_size.is_none() => {
                Err(format!("s{s}: too large without a size limit"))
            }
            _ => Ok(()),
        }
    }
}
