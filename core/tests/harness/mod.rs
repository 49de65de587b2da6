//! A tiny in-process driver for transcript tests: it follows the drain rule, runs
//! requests against a `MemStorage`, and plays the data connections itself.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wharf_core::backend::{execute, OpenFile};
use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::{
    Action, DataConnId, DataIo, FileHandle, Input, Pump, Run, Server, Session, SessionConfig,
    TransferId, TransferOutcome,
};

/// What a transfer moves, as the test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A file download.
    Send(FileHandle),
    /// An upload into this file.
    Receive(FileHandle),
    /// A listing.
    Bytes,
}

impl Body {
    pub fn of(file: Option<FileHandle>, pump: &Pump) -> Body {
        match file {
            Some(f) if pump.is_upload() => Body::Receive(f),
            Some(f) => Body::Send(f),
            None => Body::Bytes,
        }
    }
}

/// The client side of an in-memory data connection.
pub enum Client<'c> {
    /// Plain bytes: an upload's body is sent whole, then a FIN.
    Plain,
    /// A TLS client (it must be set up to resume the control session when the site
    /// requires it).
    Tls(&'c mut rustls::ClientConnection),
}

/// What the client side of a transfer does and saw.
pub struct Peer<'a> {
    /// Bytes to upload (empty for a download).
    pub upload: &'a [u8],
    /// Under TLS, end the upload with close_notify.
    pub close_notify: bool,
}

/// What a transfer's client saw.
#[derive(Debug)]
pub struct Seen {
    pub outcome: TransferOutcome,
    pub received: Vec<u8>,
    pub close_notify: bool,
    pub fin: bool,
}

/// An in-memory data connection (the pump's side) and the transfer's open file.
pub struct MemIo<'a> {
    /// Bytes from the client not yet read, and whether its FIN follows them.
    pub incoming: Vec<u8>,
    pub incoming_eof: bool,
    /// Bytes the pump wrote, not yet taken by the client.
    pub outgoing: Vec<u8>,
    pub shut: bool,
    pub file: Option<&'a mut OpenFile>,
}

impl DataIo for MemIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.incoming.is_empty() {
            return match self.incoming_eof {
                true => Ok(0),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let n = buf.len().min(self.incoming.len());
        buf[..n].copy_from_slice(&self.incoming[..n]);
        self.incoming.drain(..n);
        Ok(n)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn shutdown_write(&mut self) {
        self.shut = true;
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

pub const PEER: &str = "192.0.2.7:40000";
pub const LOCAL: &str = "192.0.2.1:21";

/// How the harness answers data-channel actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMode {
    /// Listen and connect succeed at once; transfers run to completion immediately.
    Auto,
    /// Actions are recorded and left for the test to answer.
    Manual,
    /// Each action gets one immediate answer, so outcomes depend only on the input
    /// bytes: listeners listen (and never accept), connects and transfers succeed.
    Sync,
}

/// A data-channel event the simulated network delivers later.
enum Event {
    Listening(DataConnId, u16),
    Accepted(DataConnId),
    Connected(DataConnId),
    Done(TransferId, TransferOutcome),
}

pub struct Harness {
    pub now: Instant,
    pub session: Session,
    pub storage: Arc<MemStorage>,
    pub users: Arc<MemUsers>,
    /// Answers reverse lookups (none by default).
    pub resolver: Arc<dyn wharf_core::Resolver>,
    pub files: BTreeMap<FileHandle, OpenFile>,
    /// Every reply byte the session wrote.
    pub wire: Vec<u8>,
    /// Every non-request action, in order.
    pub actions: Vec<Action>,
    /// Every request the session made, in order (the only way it reaches storage).
    pub requests: Vec<wharf_core::Request>,
    pub mode: DataMode,
    /// Bytes the simulated client sends on the next upload.
    pub upload: Vec<u8>,
    /// Bytes the simulated client received on the last download or listing.
    pub received: Vec<u8>,
    /// Data connections that are listening (port) but not yet accepted.
    pub listening: BTreeMap<DataConnId, u16>,
    /// Data events the simulated network will deliver once the session is drained.
    events: std::collections::VecDeque<Event>,
    /// Connections the session closed: the network never reports them again.
    closed: std::collections::BTreeSet<DataConnId>,
    next_port: u16,
    wall: SystemTime,
}

/// `Instant` has no constructor; the harness is the driver, so it may read the clock for
/// an origin. Time then only moves through `advance`.
#[allow(clippy::disallowed_methods)]
pub fn origin() -> Instant {
    Instant::now()
}

pub fn config() -> SessionConfig {
    SessionConfig {
        allow_anonymous: true,
        passive_ports: 50000..=50010,
        ..SessionConfig::default()
    }
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_config(config())
    }

    pub fn with_config(config: SessionConfig) -> Harness {
        Harness::nth(config, 0)
    }

    /// A session on an implicit-FTPS binding (`LOCAL`).
    pub fn implicit(config: SessionConfig) -> Harness {
        let local: std::net::SocketAddr = LOCAL.parse().unwrap();
        let binding = wharf_core::Binding {
            ip: local.ip(),
            port: local.port(),
            host: None,
            site: 0,
            implicit_tls: true,
        };
        let sites = wharf_core::Sites::new(vec![Arc::new(config)], vec![binding]).unwrap();
        let server = Server::with_sites(Arc::new(sites), 0, 1, 100);
        Harness::build(server, LOCAL, alice())
    }

    /// The session with id `n` (as if from the `n`th shard), so that several harnesses
    /// play distinct sessions of one server.
    pub fn nth(config: SessionConfig, n: u64) -> Harness {
        Harness::build(Server::new(Arc::new(config), n, 1000, 100), LOCAL, alice())
    }

    /// A session accepted by `server` on the local address `local`, with these users.
    pub fn build(mut server: Server, local: &str, users: MemUsers) -> Harness {
        let resolver = Arc::new(wharf_core::NoResolver);
        Harness::accept_on(&mut server, PEER, local, origin(), users, resolver).expect("admitted")
    }

    /// A session `server` admits from `peer` at `now` (several harnesses can share one
    /// server, its policy and, by cloning `storage`, one storage).
    pub fn accept(
        server: &mut Server,
        peer: &str,
        now: Instant,
    ) -> Result<Harness, wharf_core::Refusal> {
        Harness::accept_resolving(server, peer, now, Arc::new(wharf_core::NoResolver))
    }

    /// As [`Harness::accept`], with reverse lookups answered by `resolver`.
    pub fn accept_resolving(
        server: &mut Server,
        peer: &str,
        now: Instant,
        resolver: Arc<dyn wharf_core::Resolver>,
    ) -> Result<Harness, wharf_core::Refusal> {
        let users = MemUsers::new().with("alice", "secret", &["staff"]);
        Harness::accept_on(server, peer, LOCAL, now, users, resolver)
    }

    fn accept_on(
        server: &mut Server,
        peer: &str,
        local: &str,
        now: Instant,
        users: MemUsers,
        resolver: Arc<dyn wharf_core::Resolver>,
    ) -> Result<Harness, wharf_core::Refusal> {
        let storage = Arc::new(MemStorage::new());
        let users = Arc::new(users);
        let session = server.accept(now, peer.parse().unwrap(), local.parse().unwrap())?;
        let mut h = Harness {
            now,
            session,
            storage,
            users,
            resolver,
            files: BTreeMap::new(),
            wire: Vec::new(),
            actions: Vec::new(),
            requests: Vec::new(),
            mode: DataMode::Auto,
            upload: Vec::new(),
            received: Vec::new(),
            listening: BTreeMap::new(),
            events: Default::default(),
            closed: Default::default(),
            next_port: 50000,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        h.drain();
        Ok(h)
    }

    /// Sends raw bytes and returns the replies they produced.
    pub fn send_raw(&mut self, bytes: &[u8]) -> String {
        let start = self.wire.len();
        self.input(Input::ControlBytes(bytes));
        String::from_utf8_lossy(&self.wire[start..]).into_owned()
    }

    /// Sends one command line (CRLF added) and returns the replies it produced.
    pub fn send(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes())
    }

    /// Sends a line and asserts the replies start with `prefix`.
    #[track_caller]
    pub fn expect(&mut self, line: &str, prefix: &str) -> String {
        let got = self.send(line);
        assert!(
            got.starts_with(prefix),
            "{line:?}: expected {prefix:?}, got {got:?}"
        );
        got
    }

    /// Sends a line, then lets the clock run `by` (a failed login's delay); returns
    /// every reply of both.
    pub fn send_wait(&mut self, line: &str, by: Duration) -> String {
        let mut got = self.send(line);
        got.push_str(&self.advance(by));
        got
    }

    /// A wrong password under the default `failed_login_delay` (1 s): nothing is said
    /// before the delay, then the replies of the failure.
    #[track_caller]
    pub fn fail_login(&mut self, pass: &str) -> String {
        let early = self.send(&format!("PASS {pass}"));
        assert_eq!(early, "", "a failed login answered before its delay");
        self.advance(Duration::from_secs(1))
    }

    pub fn login(&mut self) {
        self.expect("USER alice", "331 ");
        self.expect("PASS secret", "230 ");
    }

    pub fn input(&mut self, input: Input<'_>) {
        self.session.handle_input(self.now, input);
        self.drain();
        while let Some(event) = self.events.pop_front() {
            let conn = match &event {
                Event::Listening(c, _) | Event::Accepted(c) | Event::Connected(c) => Some(*c),
                Event::Done(..) => None,
            };
            if conn.is_some_and(|c| self.closed.contains(&c)) {
                continue;
            }
            let input = match event {
                Event::Listening(conn, port) => Input::DataListening { conn, port },
                Event::Accepted(conn) => Input::DataAccepted {
                    conn,
                    peer: "192.0.2.7:40001".parse().unwrap(),
                },
                Event::Connected(conn) => Input::DataConnected { conn },
                Event::Done(xfer, outcome) => Input::TransferDone { xfer, outcome },
            };
            self.session.handle_input(self.now, input);
            self.drain();
        }
    }

    /// Moves the clock and fires due timers; returns the replies produced.
    pub fn advance(&mut self, by: Duration) -> String {
        let start = self.wire.len();
        let target = self.now + by;
        while let Some(at) = self.session.poll_timeout() {
            if at > target {
                break;
            }
            assert!(at >= self.now, "a timer went backwards");
            self.now = at;
            self.session.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
        String::from_utf8_lossy(&self.wire[start..]).into_owned()
    }

    /// The drain rule: transmit, then perform every action, until nothing is left.
    pub fn drain(&mut self) {
        loop {
            if let Some(bytes) = self.session.poll_transmit() {
                let n = bytes.len();
                self.wire.extend_from_slice(bytes);
                self.session.handle_written(n);
                continue;
            }
            match self.session.poll_action() {
                Some(action) => self.perform(action),
                None => break,
            }
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Request { req, request } => {
                self.requests.push(request.clone());
                let file = match &request {
                    wharf_core::Request::CloseFile { file, .. } => self.files.remove(file),
                    _ => None,
                };
                let handle = match &request {
                    wharf_core::Request::OpenRead { file, .. }
                    | wharf_core::Request::OpenWrite { file, .. } => Some(*file),
                    _ => None,
                };
                let (completion, opened) = execute(
                    &*self.storage,
                    &*self.users,
                    &*self.resolver,
                    request,
                    file,
                    self.wall,
                );
                if let (Some(h), Some(f)) = (handle, opened) {
                    self.files.insert(h, f);
                }
                self.input(Input::Completed { req, completion });
            }
            other => match self.mode {
                DataMode::Auto => self.auto_data(other),
                DataMode::Sync => self.sync_data(other),
                // The test answers it.
                DataMode::Manual => self.actions.push(other),
            },
        }
    }

    fn auto_data(&mut self, action: Action) {
        match action {
            Action::ListenData { conn, .. } => {
                let port = self.next_port;
                self.next_port += 1;
                self.events.push_back(Event::Listening(conn, port));
                self.events.push_back(Event::Accepted(conn));
                self.actions.push(action);
            }
            Action::ConnectData { conn, .. } => {
                self.events.push_back(Event::Connected(conn));
                self.actions.push(action);
            }
            Action::StartTransfer {
                xfer,
                conn,
                file,
                mut pump,
            } => {
                self.closed.insert(conn);
                let outcome = self.run_plain(&mut pump, file);
                self.events.push_back(Event::Done(xfer, outcome));
                self.actions.push(Action::StartTransfer {
                    xfer,
                    conn,
                    file,
                    pump,
                });
            }
            Action::CloseData { conn } => {
                self.closed.insert(conn);
                self.actions.push(action);
            }
            other => self.actions.push(other),
        }
    }

    fn sync_data(&mut self, action: Action) {
        match action {
            Action::ListenData { conn, .. } => {
                self.actions.push(action);
                self.input(Input::DataListening { conn, port: 50000 })
            }
            Action::ConnectData { conn, .. } => {
                self.actions.push(action);
                self.input(Input::DataConnected { conn })
            }
            Action::StartTransfer {
                xfer,
                conn,
                file,
                mut pump,
            } => {
                let outcome = self.run_plain(&mut pump, file);
                self.actions.push(Action::StartTransfer {
                    xfer,
                    conn,
                    file,
                    pump,
                });
                self.input(Input::TransferDone { xfer, outcome });
            }
            other => self.actions.push(other),
        }
    }

    /// Runs a transfer's pump with a plain client that sends `self.upload` (for an
    /// upload) and keeps what it receives in `self.received`.
    fn run_plain(&mut self, pump: &mut Pump, file: Option<FileHandle>) -> TransferOutcome {
        let upload = std::mem::take(&mut self.upload);
        let peer = Peer {
            upload: &upload,
            close_notify: false,
        };
        let seen = self.run_pump(pump, file, Client::Plain, peer);
        self.upload = upload;
        self.received = seen.received;
        seen.outcome
    }

    /// Runs `pump` as a driver would, in memory, with `client` on the other end of the
    /// data connection and the open file `file`; returns what the client saw. Pacing
    /// moves the harness's clock.
    pub fn run_pump(
        &mut self,
        pump: &mut Pump,
        file: Option<FileHandle>,
        mut client: Client<'_>,
        peer: Peer<'_>,
    ) -> Seen {
        let mut open = file.and_then(|f| self.files.remove(&f).map(|o| (f, o)));
        let mut io = MemIo {
            incoming: Vec::new(),
            incoming_eof: false,
            outgoing: Vec::new(),
            shut: false,
            file: open.as_mut().map(|(_, o)| o),
        };
        let mut seen = Seen {
            outcome: TransferOutcome::ConnectionLost { bytes: 0 },
            received: Vec::new(),
            close_notify: false,
            fin: false,
        };
        let mut sent = 0;
        let mut outcome = None;
        for _ in 0..100_000 {
            // The client's bytes.
            match &mut client {
                Client::Plain => {
                    io.incoming.extend_from_slice(&peer.upload[sent..]);
                    sent = peer.upload.len();
                    io.incoming_eof = pump.is_upload();
                }
                Client::Tls(c) => {
                    if !c.is_handshaking() && pump.is_upload() && sent < peer.upload.len() {
                        sent += c.writer().write(&peer.upload[sent..]).unwrap();
                        if sent == peer.upload.len() && peer.close_notify {
                            c.send_close_notify();
                        }
                    }
                    while c.wants_write() {
                        c.write_tls(&mut io.incoming).unwrap();
                    }
                    let body_sent = sent == peer.upload.len() && !c.is_handshaking();
                    if pump.is_upload() && body_sent && !c.wants_write() {
                        io.incoming_eof = true;
                    }
                }
            }
            let run = pump.run(self.now, &mut io, 1 << 20);
            // The server's bytes.
            let out = std::mem::take(&mut io.outgoing);
            match &mut client {
                Client::Plain => seen.received.extend_from_slice(&out),
                Client::Tls(c) => {
                    let mut rd = &out[..];
                    while !rd.is_empty() {
                        c.read_tls(&mut rd).unwrap();
                        if c.process_new_packets().is_err() {
                            break;
                        }
                        let mut chunk = [0u8; 8192];
                        loop {
                            match c.reader().read(&mut chunk) {
                                Ok(0) => {
                                    seen.close_notify = true;
                                    break;
                                }
                                Ok(n) => seen.received.extend_from_slice(&chunk[..n]),
                                Err(_) => break,
                            }
                        }
                    }
                }
            }
            seen.fin |= io.shut;
            while let Some(input) = pump.poll_input() {
                if let Input::TransferDone { outcome: o, .. } = input {
                    outcome = Some(o);
                }
            }
            match run {
                Run::Done => break,
                Run::Wait => {
                    let at = pump.poll_timeout().expect("a paced pump has a deadline");
                    self.now = self.now.max(at);
                    pump.handle_timeout(self.now);
                }
                _ => {}
            }
        }
        if let Some((f, o)) = open {
            self.files.insert(f, o);
        }
        seen.outcome = outcome.expect("the transfer never ended");
        seen
    }

    /// The connection of the last `ConnectData` the session asked for.
    pub fn last_connect(&self) -> DataConnId {
        self.actions
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::ConnectData { conn, .. } => Some(*conn),
                _ => None,
            })
            .expect("the session asked for no ConnectData")
    }

    /// Reports the last `ConnectData` as connected.
    pub fn connect_data(&mut self) {
        let conn = self.last_connect();
        self.input(Input::DataConnected { conn });
    }

    pub fn last_transfer(&self) -> Option<(TransferId, DataConnId, Body)> {
        self.actions.iter().rev().find_map(|a| match a {
            Action::StartTransfer {
                xfer,
                conn,
                file,
                pump,
            } => Some((*xfer, *conn, Body::of(*file, pump))),
            _ => None,
        })
    }

    /// Takes the last `StartTransfer`'s pump out of the recorded actions (in manual mode,
    /// for the test to run), leaving a finished pump in its place.
    pub fn take_transfer(&mut self) -> (TransferId, Option<FileHandle>, Box<Pump>) {
        let now = self.now;
        self.actions
            .iter_mut()
            .rev()
            .find_map(|a| match a {
                Action::StartTransfer {
                    xfer, file, pump, ..
                } => {
                    let spec = wharf_core::pump::PumpSpec {
                        source: wharf_core::pump::Source::Bytes(Vec::new()),
                        ascii: false,
                        tls: None,
                        rate_limit: None,
                        max_bytes: None,
                        stall: Duration::from_secs(1),
                        min_rate: None,
                    };
                    let taken = std::mem::replace(pump, Box::new(Pump::new(*xfer, spec, now)));
                    Some((*xfer, *file, taken))
                }
                _ => None,
            })
            .expect("the session started no transfer")
    }

    pub fn replies(&self) -> String {
        String::from_utf8_lossy(&self.wire).into_owned()
    }
}

/// The harness's user: alice, password `secret`, group staff.
pub fn alice() -> MemUsers {
    MemUsers::new().with("alice", "secret", &["staff"])
}
