//! The simulated world: a virtual clock, one event queue, the control connections and
//! the drain rule. Everything that happens is an [`Ev`] scheduled at a virtual time; the
//! clock jumps straight to the next event or session deadline.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wharf_core::backend::OpenFile;
use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::{
    DataConnId, DataError, FileHandle, Input, Request, RequestId, Server, Session, SessionConfig,
    TransferId,
};

use super::client::Client;
use super::data::{Conn, Xfer};
use super::rng::{Fnv, Rng};
use super::swarm::Swarm;

/// Something that happens at a virtual time.
#[derive(Debug)]
pub enum Ev {
    /// A client connects to the server.
    Connect {
        s: usize,
    },
    /// Client bytes reach the server's socket buffer.
    CtlArrive {
        s: usize,
        bytes: Vec<u8>,
    },
    /// The client's FIN (after its bytes) or RST reaches the server.
    CtlEof {
        s: usize,
        reset: bool,
    },
    /// Reply bytes reach the client.
    ReplyArrive {
        s: usize,
        bytes: Vec<u8>,
    },
    /// The server's close of the control connection reaches the client.
    ServerClosed {
        s: usize,
    },
    /// The client reads again after a stall; the driver may write.
    Writable {
        s: usize,
    },
    ClientWake {
        s: usize,
    },
    Listened {
        s: usize,
        conn: DataConnId,
        result: Result<u16, DataError>,
    },
    Accept {
        s: usize,
        conn: DataConnId,
        thief: bool,
    },
    Connected {
        s: usize,
        conn: DataConnId,
        ok: bool,
    },
    XferStep {
        s: usize,
        xfer: TransferId,
    },
    XferAborted {
        s: usize,
        xfer: TransferId,
    },
    Complete {
        s: usize,
        req: RequestId,
        request: Request,
    },
    /// The driver's timer wakes early.
    Spurious {
        s: usize,
    },
    Shutdown,
    /// The machine goes down (see `crash.rs`).
    Crash,
}

/// The driver's view of one control connection and what it holds.
pub struct Slot {
    pub session: Option<Session>,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Bytes the server's socket holds but has not fed to the session.
    pub rx: VecDeque<u8>,
    pub rx_eof: bool,
    pub eof_fed: bool,
    /// Latest delivery times per direction, so each stream stays in order.
    pub c2s_at: Duration,
    pub s2c_at: Duration,
    pub req_at: Duration,
    /// The client is not reading until then (the driver must not write).
    pub reader_stalled_until: Duration,
    pub conns: BTreeMap<DataConnId, Conn>,
    /// Connections closed or consumed: the network never reports them again.
    pub dead_conns: BTreeSet<DataConnId>,
    pub xfers: BTreeMap<TransferId, Xfer>,
    pub files: BTreeMap<FileHandle, OpenFile>,
    /// Files whose `CloseFile` is in flight.
    pub closing: BTreeSet<FileHandle>,
    pub shutdown_fed: bool,
    /// The session was told the peer is gone (it may abort transfers for that).
    pub peer_gone: bool,
}

pub struct Sim {
    pub seed: u64,
    pub origin: Instant,
    pub now: Duration,
    pub queue: BTreeMap<(Duration, u64), Ev>,
    seq: u64,
    pub server: Server,
    /// `max_sessions` of the server (a restart builds the same).
    pub server_max: usize,
    pub cfg: Arc<SessionConfig>,
    pub storage: MemStorage,
    pub users: MemUsers,
    pub swarm: Swarm,
    pub net: Rng,
    pub store_rng: Rng,
    pub slots: Vec<Slot>,
    pub clients: Vec<Client>,
    pub used_ports: BTreeSet<u16>,
    /// Crashes still to come, and the randomness of the power cuts.
    pub crashes: VecDeque<super::crash::CrashAt>,
    pub crash_rng: Rng,
    pub hash: Fnv,
    pub log: Option<Vec<String>>,
    pub steps: u64,
    /// How often each kind of thing happened (coverage of the interesting paths).
    pub stats: BTreeMap<String, u64>,
}

/// Bounds that make a wedged run a failure instead of a hang.
const MAX_STEPS: u64 = 400_000;
const MAX_TIME: Duration = Duration::from_secs(6 * 3600);

pub type Res = Result<(), String>;

impl Sim {
    pub fn new(seed: u64, origin: Instant, verbose: bool) -> Sim {
        let mut cfg_rng = Rng::stream(seed, "config");
        let swarm = Swarm::new(&mut cfg_rng);
        let cfg = Arc::new(swarm.config(&mut cfg_rng));
        let server_max = 1 + swarm.sessions * 3 / 4;
        let server = Server::new(cfg.clone(), 0, 1, server_max);
        let storage = MemStorage::new();
        let mut users = MemUsers::new();
        for i in 0..swarm.sessions {
            users.add(&format!("u{i}"), &format!("pw{i}"), &["sim"]);
        }
        super::model::populate(&storage, swarm.sessions);
        let crashes: VecDeque<_> = super::crash::plan(seed).into();
        if !crashes.is_empty() {
            // Durable as LocalFs is by default (durable_writes).
            storage.enable_crash_model();
        }
        let clients = (0..swarm.sessions)
            .map(|i| Client::new(i, seed, &swarm, &cfg))
            .collect();
        let mut sim = Sim {
            seed,
            origin,
            now: Duration::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            server,
            server_max,
            cfg,
            storage,
            users,
            net: Rng::stream(seed, "net"),
            store_rng: Rng::stream(seed, "storage"),
            slots: Vec::new(),
            clients,
            used_ports: BTreeSet::new(),
            crashes,
            crash_rng: Rng::stream(seed, "power cuts"),
            hash: Fnv::default(),
            log: verbose.then(Vec::new),
            steps: 0,
            stats: BTreeMap::new(),
            swarm,
        };
        for s in 0..sim.swarm.sessions {
            let at = Duration::from_millis(sim.net.range(0, 3000));
            sim.slots.push(Slot::new(s, sim.swarm.ipv6 && s % 2 == 1));
            sim.at(at, Ev::Connect { s });
        }
        if let Some(at) = sim.swarm.shutdown_at {
            sim.at(at, Ev::Shutdown);
        }
        sim.arm_next_crash();
        sim
    }

    pub fn instant(&self) -> Instant {
        self.origin + self.now
    }

    pub fn wall(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + self.now
    }

    /// Schedules `ev` at `delay` from now.
    pub fn at(&mut self, delay: Duration, ev: Ev) {
        self.seq += 1;
        self.queue.insert((self.now + delay, self.seq), ev);
    }

    pub fn count(&mut self, key: &str) {
        *self.stats.entry(key.to_owned()).or_default() += 1;
    }

    pub fn note(&mut self, s: usize, what: &str, bytes: &[u8]) {
        self.count(what);
        self.hash.write(&(s as u64).to_le_bytes());
        self.hash.write(what.as_bytes());
        self.hash.write(bytes);
        if let Some(log) = &mut self.log {
            let t = self.now.as_secs_f64();
            let shown = String::from_utf8_lossy(bytes).escape_debug().to_string();
            log.push(format!("{t:>10.6} s{s} {what} {shown}"));
        }
    }

    /// Notes control-connection bytes: under TLS only their length, which a seed
    /// replays exactly (the ciphertext itself differs from run to run).
    pub fn wire_note(&mut self, s: usize, what: &str, bytes: &[u8]) {
        match self.clients[s].ctl_tls.is_some() {
            true => self.note(s, what, &(bytes.len() as u64).to_le_bytes()),
            false => self.note(s, what, bytes),
        }
    }

    pub fn latency(&mut self) -> Duration {
        let max = self.swarm.latency.as_micros() as u64;
        Duration::from_micros(self.net.range(0, max))
    }

    /// Runs until every session has ended; `Err` names the broken invariant.
    pub fn run(&mut self) -> Res {
        loop {
            self.steps += 1;
            if self.steps > MAX_STEPS || self.now > MAX_TIME {
                return Err(format!(
                    "no end after {} steps / {:?}",
                    self.steps, self.now
                ));
            }
            let event_at = self.queue.keys().next().map(|k| k.0);
            let timer = self.next_deadline();
            match (event_at, timer) {
                (None, None) => break,
                (Some(e), Some((t, s, x))) if t <= e => self.fire_timer(t, s, x)?,
                (None, Some((t, s, x))) => self.fire_timer(t, s, x)?,
                (Some(_), _) => {
                    let ((at, _), ev) = self.queue.pop_first().expect("peeked");
                    self.now = at;
                    self.handle(ev)?;
                }
            }
        }
        self.finish()
    }

    /// The earliest deadline of a session or of a transfer's pump.
    fn next_deadline(&self) -> Option<(Duration, usize, Option<TransferId>)> {
        let since = |at: Instant| at.saturating_duration_since(self.origin);
        let deadlines = self.slots.iter().enumerate().flat_map(|(s, slot)| {
            let session = slot
                .session
                .as_ref()
                .and_then(|x| x.poll_timeout())
                .map(|at| (since(at), s, None));
            let pumps = slot
                .xfers
                .iter()
                .filter_map(move |(id, x)| Some((since(x.deadline()?), s, Some(*id))));
            session.into_iter().chain(pumps)
        });
        deadlines.min()
    }

    fn fire_timer(&mut self, at: Duration, s: usize, xfer: Option<TransferId>) -> Res {
        // Never back in time: a deadline already passed fires now.
        self.now = self.now.max(at);
        let now = self.instant();
        if let Some(xfer) = xfer {
            let shown = self.slots[s].xfers.get(&xfer).map(|x| x.show(self.origin));
            self.note(s, "xfer-timeout", shown.unwrap_or_default().as_bytes());
            return self.xfer_timeout(s, xfer);
        }
        self.note(s, "timeout", &[]);
        let session = self.slots[s].session.as_mut().expect("live");
        session.handle_timeout(now);
        self.pump(s)
    }

    fn handle(&mut self, ev: Ev) -> Res {
        match ev {
            Ev::Connect { s } => self.connect(s),
            Ev::CtlArrive { s, bytes } => {
                self.slots[s].rx.extend(bytes);
                self.pump(s)
            }
            Ev::CtlEof { s, reset } => {
                if reset {
                    self.slots[s].rx.clear();
                }
                self.slots[s].rx_eof = true;
                self.pump(s)
            }
            Ev::ReplyArrive { s, bytes } => self.client_io(s, |c, cx| c.on_bytes(cx, &bytes)),
            Ev::ServerClosed { s } => self.client_io(s, |c, cx| c.on_server_closed(cx)),
            Ev::ClientWake { s } => self.client_io(s, |c, cx| c.on_wake(cx)),
            Ev::Writable { s } => self.pump(s),
            Ev::Spurious { s } => self.spurious(s),
            Ev::Shutdown => self.shutdown(),
            Ev::Crash => {
                self.storage.crash_now();
                self.crash_restart()
            }
            Ev::Complete { s, req, request } => self.complete(s, req, request),
            other => self.data_event(other),
        }
    }

    fn connect(&mut self, s: usize) -> Res {
        let (peer, local) = (self.slots[s].peer, self.slots[s].local);
        self.note(s, "connect", peer.to_string().as_bytes());
        match self.server.accept(self.instant(), peer, local) {
            Ok(session) => {
                self.slots[s].session = Some(session);
                self.client_io(s, |c, cx| c.on_connected(cx, true))?;
                self.pump(s)
            }
            Err(refusal) => {
                let lat = self.latency();
                self.note(s, "refused", &refusal.reply);
                self.at(
                    lat,
                    Ev::ReplyArrive {
                        s,
                        bytes: refusal.reply,
                    },
                );
                self.at(lat, Ev::ServerClosed { s });
                self.client_io(s, |c, cx| c.on_connected(cx, false))
            }
        }
    }

    fn shutdown(&mut self) -> Res {
        for s in 0..self.slots.len() {
            if self.slots[s].session.is_some() && !self.slots[s].shutdown_fed {
                self.slots[s].shutdown_fed = true;
                self.feed(s, Input::Shutdown)?;
            }
        }
        Ok(())
    }

    /// A wake-up before the deadline must change nothing (timers never fire early).
    fn spurious(&mut self, s: usize) -> Res {
        let now = self.instant();
        let Some(session) = self.slots[s].session.as_mut() else {
            return Ok(());
        };
        let Some(deadline) = session.poll_timeout() else {
            return Ok(());
        };
        if deadline <= now {
            return Ok(());
        }
        let before = session.poll_transmit().map(<[u8]>::to_vec);
        session.handle_timeout(now);
        let after = session.poll_transmit().map(<[u8]>::to_vec);
        if before != after || session.poll_timeout() != Some(deadline) {
            return Err(format!(
                "s{s}: handle_timeout before the deadline changed the session"
            ));
        }
        match session.poll_action() {
            Some(a) => Err(format!("s{s}: early handle_timeout emitted {a:?}")),
            None => Ok(()),
        }
    }

    /// Feeds one input and applies the drain rule.
    pub fn feed(&mut self, s: usize, input: Input<'_>) -> Res {
        let now = self.instant();
        let Some(session) = self.slots[s].session.as_mut() else {
            return Ok(());
        };
        session.handle_input(now, input);
        self.pump(s)
    }

    /// The drain rule, plus reading more control bytes whenever the session wants them.
    pub fn pump(&mut self, s: usize) -> Res {
        loop {
            self.drain(s)?;
            let now = self.instant();
            let chunk = self.next_chunk(s);
            let slot = &mut self.slots[s];
            let Some(session) = slot.session.as_mut() else {
                return Ok(());
            };
            if let Some(bytes) = chunk {
                session.handle_input(now, Input::ControlBytes(&bytes));
                self.wire_note(s, "read", &bytes);
            } else if slot.rx_eof && slot.rx.is_empty() && !slot.eof_fed {
                slot.eof_fed = true;
                slot.peer_gone = true;
                session.handle_input(now, Input::ControlEof);
                self.note(s, "eof", &[]);
            } else {
                return Ok(());
            }
        }
    }

    /// The next piece of buffered client bytes the session will take, if it reads now.
    fn next_chunk(&mut self, s: usize) -> Option<Vec<u8>> {
        let wants = self.slots[s].session.as_ref()?.wants_read();
        let len = self.slots[s].rx.len();
        if !wants || len == 0 {
            return None;
        }
        let n = if self.swarm.segment {
            self.net.range(1, len as u64) as usize
        } else {
            len
        };
        Some(self.slots[s].rx.drain(..n).collect())
    }

    fn drain(&mut self, s: usize) -> Res {
        loop {
            self.transmit(s, false);
            let Some(session) = self.slots[s].session.as_mut() else {
                return Ok(());
            };
            match session.poll_action() {
                Some(action) => self.perform(s, action)?,
                None => return Ok(()),
            }
        }
    }

    /// Writes reply bytes toward the client, in short writes, unless the client stopped
    /// reading (then a `Writable` event comes back later). `all` flushes regardless.
    pub fn transmit(&mut self, s: usize, all: bool) {
        loop {
            let stalled = self.slots[s].reader_stalled_until > self.now && !all;
            let Some(session) = self.slots[s].session.as_mut() else {
                return;
            };
            let Some(out) = session.poll_transmit() else {
                return;
            };
            if stalled {
                let wait = self.slots[s].reader_stalled_until - self.now;
                return self.at(wait, Ev::Writable { s });
            }
            let n = if all {
                out.len()
            } else {
                self.net.range(1, out.len() as u64) as usize
            };
            let bytes = out[..n].to_vec();
            session.handle_written(n);
            self.wire_note(s, "write", &bytes);
            let lat = self.latency();
            let at = (self.now + lat).max(self.slots[s].s2c_at);
            self.slots[s].s2c_at = at;
            self.at(at - self.now, Ev::ReplyArrive { s, bytes });
            if !all && self.swarm.reader_stalls && self.net.chance(3) {
                let pause = Duration::from_millis(self.net.range(1, 20_000));
                self.slots[s].reader_stalled_until = self.now + pause;
            }
        }
    }

    /// Sends client bytes toward the server, in order.
    pub fn client_send(&mut self, s: usize, bytes: Vec<u8>) {
        self.wire_note(s, "send", &bytes);
        let lat = self.latency();
        let at = (self.now + lat).max(self.slots[s].c2s_at);
        self.slots[s].c2s_at = at;
        self.at(at - self.now, Ev::CtlArrive { s, bytes });
    }

    /// Checks the end state: nothing leaked, every counter back to zero.
    fn finish(&mut self) -> Res {
        for (s, slot) in self.slots.iter().enumerate() {
            if slot.session.is_some() {
                return Err(format!("s{s}: session never closed"));
            }
        }
        if self.server.active_sessions() != 0 {
            return Err(format!(
                "active_sessions() = {}",
                self.server.active_sessions()
            ));
        }
        if !self.used_ports.is_empty() {
            return Err(format!("passive ports still held: {:?}", self.used_ports));
        }
        for s in 0..self.clients.len() {
            self.clients[s]
                .at_end(&self.storage)
                .map_err(|e| format!("s{s}: {e}"))?;
        }
        Ok(())
    }
}

impl Slot {
    pub(super) fn new(s: usize, v6: bool) -> Slot {
        let (peer, local) = if v6 {
            (
                format!("[2001:db8::{}]:{}", s + 10, 40_000 + s),
                "[2001:db8::1]:21".to_string(),
            )
        } else {
            (
                format!("198.51.100.{}:{}", s + 10, 40_000 + s),
                "192.0.2.1:21".to_string(),
            )
        };
        Slot {
            session: None,
            peer: peer.parse().expect("valid"),
            local: local.parse().expect("valid"),
            rx: VecDeque::new(),
            rx_eof: false,
            eof_fed: false,
            c2s_at: Duration::ZERO,
            s2c_at: Duration::ZERO,
            req_at: Duration::ZERO,
            reader_stalled_until: Duration::ZERO,
            conns: BTreeMap::new(),
            dead_conns: BTreeSet::new(),
            xfers: BTreeMap::new(),
            files: BTreeMap::new(),
            closing: BTreeSet::new(),
            shutdown_fed: false,
            peer_gone: false,
        }
    }
}
