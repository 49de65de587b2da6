//! A tiny in-process driver for transcript tests: it follows the drain rule, runs
//! requests against a `MemStorage`, and plays the data connections itself.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use wharf_core::backend::{execute, OpenFile};
use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::{
    Action, Body, DataConnId, FileHandle, Input, Server, Session, SessionConfig, TransferId,
    TransferOutcome,
};

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
                DataMode::Auto => {
                    self.actions.push(record(&other));
                    self.auto_data(other)
                }
                DataMode::Sync => {
                    self.actions.push(record(&other));
                    self.sync_data(other)
                }
                // The test answers it, so it gets the action itself (a `StartTransfer`
                // may own a `DataTls`).
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
            }
            Action::ConnectData { conn, .. } => self.events.push_back(Event::Connected(conn)),
            Action::StartTransfer { xfer, spec, conn } => {
                self.closed.insert(conn);
                let outcome = self.run_transfer(spec.body, spec.ascii, spec.max_bytes);
                self.events.push_back(Event::Done(xfer, outcome));
            }
            Action::CloseData { conn } => {
                self.closed.insert(conn);
            }
            _ => {}
        }
    }

    fn sync_data(&mut self, action: Action) {
        match action {
            Action::ListenData { conn, .. } => {
                self.input(Input::DataListening { conn, port: 50000 })
            }
            Action::ConnectData { conn, .. } => self.input(Input::DataConnected { conn }),
            Action::StartTransfer { xfer, spec, .. } => {
                let outcome = self.run_transfer(spec.body, spec.ascii, spec.max_bytes);
                self.input(Input::TransferDone { xfer, outcome });
            }
            _ => {}
        }
    }

    /// Runs a transfer's body as a driver would, returning its outcome: an upload
    /// writes at most `max_bytes` of what arrives (`TransferSpec::max_bytes`).
    pub fn run_transfer(
        &mut self,
        body: Body,
        ascii: bool,
        max_bytes: Option<u64>,
    ) -> TransferOutcome {
        match body {
            Body::Bytes(bytes) => {
                let n = bytes.len() as u64;
                self.received = bytes;
                TransferOutcome::Complete { bytes: n }
            }
            Body::Send(file) => {
                let Some(OpenFile::Read(mut r)) = self.files.remove(&file) else {
                    panic!("send of a file that is not open for reading")
                };
                let mut raw = Vec::new();
                r.read_to_end(&mut raw).unwrap();
                self.files.insert(file, OpenFile::Read(r));
                let n = raw.len() as u64;
                self.received = if ascii {
                    let mut out = Vec::new();
                    wharf_core::typea::ToNetAscii::default().encode(&raw, &mut out);
                    out
                } else {
                    raw
                };
                TransferOutcome::Complete { bytes: n }
            }
            Body::Receive(file) => {
                let Some(OpenFile::Write(w)) = self.files.get_mut(&file) else {
                    panic!("receive into a file that is not open for writing")
                };
                let received = self.upload.len() as u64;
                let keep = max_bytes.map_or(self.upload.len(), |max| {
                    self.upload
                        .len()
                        .min(usize::try_from(max).unwrap_or(usize::MAX))
                });
                let mut data = self.upload[..keep].to_vec();
                if ascii {
                    let mut out = Vec::new();
                    let mut dec = wharf_core::typea::FromNetAscii::default();
                    dec.decode(&data, &mut out);
                    dec.finish(&mut out);
                    data = out;
                }
                match w.write_all(&data) {
                    Ok(()) if keep < self.upload.len() => {
                        TransferOutcome::Aborted { bytes: received }
                    }
                    Ok(()) => TransferOutcome::Complete {
                        bytes: data.len() as u64,
                    },
                    Err(e) => TransferOutcome::Storage {
                        bytes: 0,
                        error: wharf_core::FsError::from_io(&e),
                    },
                }
            }
        }
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
            Action::StartTransfer { xfer, conn, spec } => Some((*xfer, *conn, spec.body.clone())),
            _ => None,
        })
    }

    /// Takes the last `StartTransfer`'s spec out of the recorded actions (its `tls` with
    /// it), leaving the action with `tls: None`.
    pub fn take_transfer(&mut self) -> (TransferId, wharf_core::TransferSpec) {
        self.actions
            .iter_mut()
            .rev()
            .find_map(|a| match a {
                Action::StartTransfer { xfer, spec, .. } => {
                    let taken = wharf_core::TransferSpec {
                        body: spec.body.clone(),
                        ascii: spec.ascii,
                        rate_limit: spec.rate_limit,
                        tls: spec.tls.take(),
                        max_bytes: spec.max_bytes,
                    };
                    Some((*xfer, taken))
                }
                _ => None,
            })
            .expect("the session started no transfer")
    }

    pub fn replies(&self) -> String {
        String::from_utf8_lossy(&self.wire).into_owned()
    }
}

/// A copy of an action for the record: everything but a `StartTransfer`'s TLS
/// connection, which goes to whoever runs the transfer.
pub fn record(action: &Action) -> Action {
    match action {
        Action::Request { req, request } => Action::Request {
            req: *req,
            request: request.clone(),
        },
        Action::ListenData {
            conn,
            ip,
            ports,
            expect_peer,
        } => Action::ListenData {
            conn: *conn,
            ip: *ip,
            ports: ports.clone(),
            expect_peer: *expect_peer,
        },
        Action::ConnectData {
            conn,
            local_ip,
            target,
        } => Action::ConnectData {
            conn: *conn,
            local_ip: *local_ip,
            target: *target,
        },
        Action::StartTransfer { xfer, conn, spec } => Action::StartTransfer {
            xfer: *xfer,
            conn: *conn,
            spec: wharf_core::TransferSpec {
                body: spec.body.clone(),
                ascii: spec.ascii,
                rate_limit: spec.rate_limit,
                tls: None,
                max_bytes: spec.max_bytes,
            },
        },
        Action::AbortTransfer { xfer } => Action::AbortTransfer { xfer: *xfer },
        Action::CloseData { conn } => Action::CloseData { conn: *conn },
        Action::Close => Action::Close,
        Action::Log(record) => Action::Log(record.clone()),
    }
}

/// The harness's user: alice, password `secret`, group staff.
pub fn alice() -> MemUsers {
    MemUsers::new().with("alice", "secret", &["staff"])
}
