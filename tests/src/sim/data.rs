//! Data connections and transfers as the simulated runtime runs them: listeners that
//! fail or never see a connection, thieves racing the client to a passive port, connects
//! that fail, and transfers that move bytes in chunks, reset, stall, or get aborted.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use wharf_core::backend::OpenFile;
use wharf_core::typea::{FromNetAscii, ToNetAscii};
use wharf_core::{
    Action, Body, DataConnId, DataError, FsError, Input, TransferId, TransferOutcome,
};

use super::world::{Ev, Res, Sim};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// `ListenData` seen, `DataListening` not yet reported.
    Binding,
    Listening,
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
    pub expect_peer: Option<IpAddr>,
}

pub struct Xfer {
    body: Body,
    ascii: bool,
    /// Bytes of the file (or listing) moved so far; the upload source position.
    moved: u64,
    reset_at: Option<u64>,
    stall_at: Option<u64>,
    slow: bool,
    aborting: bool,
    pub last_progress: Duration,
    enc: ToNetAscii,
    dec: FromNetAscii,
}

impl Xfer {
    /// Running, not being aborted, and with progress reported within the stall timeout.
    pub fn live(&self, now: Duration, stall: Duration) -> bool {
        !self.aborting && now < self.last_progress + stall
    }
}

const THIEF: &str = "203.0.113.66:31337";

impl Sim {
    pub fn data_action(&mut self, s: usize, action: Action) -> Res {
        match action {
            Action::ListenData {
                conn,
                ports,
                expect_peer,
                ..
            } => {
                self.fresh_conn(s, conn)?;
                let result = self.bind(ports);
                let port = result.as_ref().ok().copied();
                let state = ConnState::Binding;
                self.slots[s].conns.insert(
                    conn,
                    Conn {
                        state,
                        port,
                        expect_peer,
                    },
                );
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
                    expect_peer: None,
                };
                self.slots[s].conns.insert(conn, conn_state);
                let ok = !(self.swarm.connect_fails && self.net.chance(25));
                let lat = self.latency() * 2;
                self.at(lat, Ev::Connected { s, conn, ok });
            }
            Action::StartTransfer { xfer, conn, spec } => self.start(s, xfer, conn, spec)?,
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

    /// Reports a transfer's end to the session.
    fn done(&mut self, s: usize, xfer: TransferId, outcome: TransferOutcome) -> Res {
        let shown = format!("{outcome:?}");
        self.count(&format!("xfer:{}", shown.split(' ').next().unwrap_or("")));
        self.feed(s, Input::TransferDone { xfer, outcome })
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
                let Some(x) = self.slots[s].xfers.remove(&xfer) else {
                    return Ok(());
                };
                let outcome = TransferOutcome::Aborted { bytes: x.moved };
                self.done(s, xfer, outcome)
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
        let guarded = c.expect_peer.is_some();
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
        if self.swarm.thieves && guarded && self.net.chance(50) {
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

    fn accept(&mut self, s: usize, conn: DataConnId, thief: bool) -> Res {
        let Some(c) = self.slots[s].conns.get_mut(&conn) else {
            return Ok(());
        };
        if c.state != ConnState::Listening {
            return Ok(());
        }
        if thief {
            // A careful driver drops it; a sloppy one lets the core's own check decide.
            if !self.swarm.sloppy_driver {
                self.note(s, "thief-dropped", &[]);
                return Ok(());
            }
            self.count("thief-fed");
            let peer: SocketAddr = THIEF.parse().expect("valid");
            return self.feed(s, Input::DataAccepted { conn, peer });
        }
        c.state = ConnState::Open;
        let mut peer = self.slots[s].peer;
        peer.set_port(peer.port() + 1000);
        self.feed(s, Input::DataAccepted { conn, peer })
    }

    fn start(
        &mut self,
        s: usize,
        xfer: TransferId,
        conn: DataConnId,
        spec: wharf_core::TransferSpec,
    ) -> Res {
        let state = self.slots[s].conns.get(&conn).map(|c| c.state);
        if state != Some(ConnState::Open) {
            return Err(format!("s{s}: StartTransfer on {conn} in state {state:?}"));
        }
        if !self.slots[s].xfers.is_empty() {
            return Err(format!("s{s}: a second transfer started while one runs"));
        }
        self.retire(s, conn);
        let file = match &spec.body {
            Body::Send(f) | Body::Receive(f) => Some(*f),
            Body::Bytes(_) => None,
        };
        if let Some(f) = file {
            let kind_ok = matches!(
                (self.slots[s].files.get(&f), &spec.body),
                (Some(OpenFile::Read(_)), Body::Send(_))
                    | (Some(OpenFile::Write(_)), Body::Receive(_))
            );
            if !kind_ok || self.slots[s].closing.contains(&f) {
                return Err(format!("s{s}: transfer of {f}, which is not open that way"));
            }
        }
        let upload = matches!(spec.body, Body::Receive(_));
        self.clients[s].transfer_started(upload);
        let size_hint = 4000;
        let x = Xfer {
            body: spec.body,
            ascii: spec.ascii,
            moved: 0,
            reset_at: (self.swarm.xfer_resets && self.net.chance(20))
                .then(|| self.net.range(0, size_hint)),
            stall_at: (self.swarm.xfer_stalls && self.net.chance(20))
                .then(|| self.net.range(0, size_hint)),
            slow: self.swarm.xfer_slow && self.net.chance(40),
            aborting: false,
            last_progress: self.now,
            enc: ToNetAscii::default(),
            dec: FromNetAscii::default(),
        };
        self.slots[s].xfers.insert(xfer, x);
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

    fn abort(&mut self, s: usize, xfer: TransferId) -> Res {
        let stall = self.cfg.timeouts.transfer_stall;
        let excused =
            self.clients[s].abor_sent || self.slots[s].peer_gone || self.slots[s].shutdown_fed;
        let now = self.now;
        let Some(x) = self.slots[s].xfers.get_mut(&xfer) else {
            return Err(format!(
                "s{s}: AbortTransfer of {xfer}, which is not running"
            ));
        };
        if !excused && now < x.last_progress + stall {
            return Err(format!(
                "s{s}: stall abort at {now:?}, progress reported at {:?} (stall timeout {stall:?})",
                x.last_progress
            ));
        }
        if x.aborting {
            return Err(format!("s{s}: AbortTransfer of {xfer} twice"));
        }
        x.aborting = true;
        let lat = self.latency() / 4;
        self.at(lat, Ev::XferAborted { s, xfer });
        Ok(())
    }

    /// Moves one chunk of a transfer, then reports progress or the end.
    fn step(&mut self, s: usize, xfer: TransferId) -> Res {
        let chunk = self.net.range(1, 1500) as usize;
        let Some(mut x) = self.slots[s].xfers.remove(&xfer) else {
            return Ok(());
        };
        if x.aborting {
            self.slots[s].xfers.insert(xfer, x);
            return Ok(());
        }
        if x.stall_at.is_some_and(|at| x.moved >= at) {
            self.slots[s].xfers.insert(xfer, x);
            return Ok(()); // the peer went silent: only the stall timer can end this
        }
        if x.reset_at.is_some_and(|at| x.moved >= at) {
            let outcome = TransferOutcome::ConnectionLost { bytes: x.moved };
            return self.done(s, xfer, outcome);
        }
        match self.move_chunk(s, &mut x, chunk) {
            Some(outcome) => self.done(s, xfer, outcome),
            None => {
                let report = self.net.chance(70);
                if report {
                    x.last_progress = self.now;
                }
                let (bytes, slow) = (x.moved, x.slow);
                self.slots[s].xfers.insert(xfer, x);
                let delay = self.chunk_delay(slow);
                self.at(delay, Ev::XferStep { s, xfer });
                if report {
                    self.feed(s, Input::TransferProgress { xfer, bytes })?;
                }
                Ok(())
            }
        }
    }

    /// `Some(outcome)` when the transfer ended with this chunk.
    fn move_chunk(&mut self, s: usize, x: &mut Xfer, chunk: usize) -> Option<TransferOutcome> {
        let pos = x.moved as usize;
        match &x.body {
            Body::Bytes(all) => {
                let end = (pos + chunk).min(all.len());
                self.clients[s].data_in.extend_from_slice(&all[pos..end]);
                x.moved = end as u64;
                (end == all.len()).then_some(TransferOutcome::Complete { bytes: x.moved })
            }
            Body::Send(f) => {
                let Some(OpenFile::Read(r)) = self.slots[s].files.get_mut(f) else {
                    return Some(lost(x.moved));
                };
                let mut buf = vec![0; chunk];
                match r.read(&mut buf) {
                    Ok(0) => Some(TransferOutcome::Complete { bytes: x.moved }),
                    Ok(n) => {
                        let data = &mut self.clients[s].data_in;
                        if x.ascii {
                            x.enc.encode(&buf[..n], data);
                        } else {
                            data.extend_from_slice(&buf[..n]);
                        }
                        x.moved += n as u64;
                        None
                    }
                    Err(e) => Some(storage(x.moved, FsError::from_io(&e))),
                }
            }
            Body::Receive(f) => {
                let src = &self.clients[s].upload;
                let end = (pos + chunk).min(src.len());
                let mut piece = Vec::new();
                if x.ascii {
                    x.dec.decode(&src[pos..end], &mut piece);
                    if end == src.len() {
                        x.dec.finish(&mut piece);
                    }
                } else {
                    piece.extend_from_slice(&src[pos..end]);
                }
                let Some(OpenFile::Write(w)) = self.slots[s].files.get_mut(f) else {
                    return Some(lost(x.moved));
                };
                if let Err(e) = write_all(w, &piece) {
                    return Some(storage(x.moved, e));
                }
                x.moved = end as u64;
                (end == src.len()).then_some(TransferOutcome::Complete { bytes: x.moved })
            }
        }
    }
}

/// Writes everything, retrying short writes as a runtime must.
fn write_all(w: &mut Box<dyn wharf_core::Upload>, mut data: &[u8]) -> Result<(), FsError> {
    while !data.is_empty() {
        match w.write(data) {
            Ok(0) => return Err(FsError::Io("write returned 0".into())),
            Ok(n) => data = &data[n..],
            Err(e) => return Err(FsError::from_io(&e)),
        }
    }
    Ok(())
}

fn lost(bytes: u64) -> TransferOutcome {
    TransferOutcome::ConnectionLost { bytes }
}

fn storage(bytes: u64, error: FsError) -> TransferOutcome {
    TransferOutcome::Storage { bytes, error }
}
