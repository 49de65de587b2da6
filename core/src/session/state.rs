//! The `Session` struct, its public API, the command dispatcher and the timers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::timer::{Timer, TimerTable};
use super::{Action, DataError, Input};
use crate::backend::{Completion, Principal, Request};
use crate::config::SessionConfig;
use crate::ids::{DataConnId, FileHandle, IdGen, RequestId, SessionId, TransferId};
use crate::listing::Facts;
use crate::path::VPath;
use crate::proto::command::{self, Command, ParseError, Verb};
use crate::proto::{Frame, LineFramer, Reply};
use crate::site::{Listener, Sites, View};
use crate::tls::{Closing, Received, TlsEnd, TlsLayer};

/// Where the login stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Login {
    /// Waiting for USER (HOST may come first).
    Start,
    /// USER given; waiting for PASS.
    User {
        name: String,
        anonymous: bool,
        /// The site before this USER chose one (`USER host|user`): a failed attempt
        /// goes back to it, so its host choice does not outlive it.
        prior: Option<PriorSite>,
    },
    /// Boxed: a session is mostly idle and logged in, and the struct stays small.
    LoggedIn(Box<Principal>),
}

/// The site choice a login attempt may have to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PriorSite {
    /// A site index (kept small: the `Session` struct is budgeted).
    pub(super) site: Option<u32>,
    pub(super) host_given: bool,
}

/// The data channel as the last PASV/EPSV/PORT/EPRT left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum DataChan {
    None,
    /// A listener (and, once `DataAccepted` came, its one connection).
    Passive {
        conn: DataConnId,
        accepted: bool,
    },
    /// PORT/EPRT: where to connect when a transfer starts.
    Active {
        target: SocketAddr,
    },
}

/// What the session waits for before it reads the next command.
#[derive(Debug)]
pub(super) enum Pending {
    /// A storage or authentication request; `then` says what its completion means.
    Request { req: RequestId, then: Then },
    /// PASV/EPSV sent `ListenData` and waits for the port to put in its reply.
    Listen { conn: DataConnId, extended: bool },
    /// A transfer, from the 150 reply to its final reply.
    Transfer(Transfer),
    /// A failed login waits for `failed_login_delay` (timer `FailedLogin`) before its
    /// `530`; `verdict` is what the logon restrictions made of it, `unavailable` whether
    /// the account store failed (rather than refused the credentials).
    FailedLogin {
        verdict: crate::policy::Verdict,
        unavailable: bool,
    },
}

/// The continuation of a request.
#[derive(Debug)]
pub(super) enum Then {
    Login {
        user: String,
        /// When the PASS arrived: a failure is answered `failed_login_delay` after it.
        at: Instant,
    },
    /// Authentication succeeded; the home directory is being checked.
    Home {
        principal: Principal,
        home: crate::site::Home,
    },
    Cwd {
        path: VPath,
    },
    Size,
    Mdtm,
    Mlst {
        shown: VPath,
        /// Whether the perm fact offers changes.
        writable: bool,
    },
    Rnfr {
        path: VPath,
    },
    Rnto,
    /// Success earns this reply; failure the error's own.
    Reply {
        code: u16,
        text: String,
    },
    List(super::transfer::ListJob),
    Open(super::transfer::OpenJob),
    /// An upload's file is being committed or discarded; then these replies.
    CloseUpload {
        replies: Vec<(u16, String)>,
    },
    /// The client's host name is being looked up; the greeting waits for it.
    Lookup,
}

/// A transfer in flight.
#[derive(Debug)]
pub(super) struct Transfer {
    pub(super) xfer: Option<TransferId>,
    pub(super) conn: Option<DataConnId>,
    /// Whether `conn` is connected (accepted or connected).
    pub(super) connected: bool,
    pub(super) body: Option<super::Body>,
    pub(super) ascii: bool,
    pub(super) upload: bool,
    pub(super) file: Option<FileHandle>,
    pub(super) bytes: u64,
    /// ABOR (or the session ending) asked the driver to stop it.
    pub(super) aborted: bool,
    /// The 226 text on success.
    pub(super) done_text: String,
}

/// Why the session will end once nothing is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// QUIT: say 221.
    Quit,
    /// Server shutdown: say 421.
    Shutdown,
    /// The peer is gone: say nothing.
    PeerGone,
}

/// One control connection's protocol state.
pub struct Session {
    pub(super) id: SessionId,
    /// The settings of the chosen site (or, before one is chosen, of the listener's
    /// fallback site).
    pub(super) config: Arc<SessionConfig>,
    /// Every site, for `HOST`, `USER host|user` and SNI.
    pub(super) sites: Arc<Sites>,
    /// What the address this connection arrived on offers.
    pub(super) listener: Listener,
    /// The site this session talks to; `None` until HOST (or `host|user`, or SNI) picks
    /// one on an address without a blank-host binding.
    pub(super) site: Option<usize>,
    /// A host name chose the site (HOST, `host|user` or SNI).
    pub(super) host_given: bool,
    pub(super) peer: SocketAddr,
    /// The peer's confirmed host name, when an IP rule needed it.
    pub(super) peer_name: Option<Box<str>>,
    pub(super) local: SocketAddr,
    /// The PROXY protocol header received so far, until it is complete (only on an
    /// address that expects one); `peer` is the balancer until then.
    // Boxed on purpose: one pointer in every Session, the buffer only on proxied ones.
    #[allow(clippy::box_collection)]
    pub(super) proxy: Option<Box<Vec<u8>>>,
    pub(super) framer: LineFramer,
    /// Lines read while a transfer ran, kept until it ends (ABOR and STAT skip ahead).
    pub(super) held: VecDeque<Vec<u8>>,
    /// Total bytes in `held`, counted against the line cap for backpressure.
    pub(super) held_bytes: usize,
    pub(super) out: Vec<u8>,
    pub(super) actions: VecDeque<Action>,
    pub(super) ids: IdGen,
    pub(super) timers: TimerTable,
    pub(super) login: Login,
    pub(super) login_failures: u8,
    /// The site path the user's `/` maps to (user isolation), and whether global virtual
    /// directories appear there.
    pub(super) view: View,
    pub(super) cwd: VPath,
    pub(super) data: DataChan,
    pub(super) epsv_all: bool,
    pub(super) ascii: bool,
    pub(super) rest: u64,
    /// RNFR's source, valid for the very next command only.
    pub(super) rename_from: Option<VPath>,
    pub(super) facts: Facts,
    pub(super) pending: Option<Pending>,
    pub(super) ending: Option<Ending>,
    pub(super) closed: bool,
    /// The control channel's TLS, once AUTH TLS (or an implicit binding) started it.
    /// After CCC it stays here until the peer's close_notify has been read.
    pub(super) tls: Option<TlsLayer>,
    /// A TLS session was established on the control channel at some point (AUTH TLS or
    /// implicit); PBSZ and PROT need it, and it outlives CCC.
    pub(super) secured: bool,
    /// PBSZ was sent (RFC 2228 requires it before PROT).
    pub(super) pbsz: bool,
    /// PROT P: data connections are to be encrypted.
    pub(super) prot_private: bool,
    /// The session's share of the process-wide counts (released on drop).
    pub(super) slot: crate::policy::limits::Slot,
    /// The command being executed, its first final reply code, and why it failed.
    pub(super) verb: Option<Verb>,
    pub(super) status: u16,
    pub(super) sub: crate::log::SubStatus,
    pub(super) win32: u32,
    /// The command's log record (only when the site logs).
    pub(super) log: Option<super::policy::CmdLog>,
    pub(super) log_user: Option<Arc<str>>,
    pub(super) log_host: Option<Arc<str>>,
    pub(super) opened: Instant,
    /// The `now` of the latest `handle_*` call.
    pub(super) last_now: Instant,
    /// Bytes of every record so far (control and data), for `ControlChannelClosed`.
    pub(super) sent_total: u64,
    pub(super) received_total: u64,
    /// How the session ended, when neither a sub-status nor the client says it (a
    /// timeout): `x-debug` of `ControlChannelClosed`.
    pub(super) end_note: Option<&'static str>,
    /// Its entry on the live sessions board, when the server keeps one.
    pub(super) live: Option<Box<crate::monitor::LiveHandle>>,
}

impl Session {
    pub(crate) fn new(
        now: Instant,
        id: SessionId,
        sites: Arc<Sites>,
        listener: Listener,
        addrs: (SocketAddr, SocketAddr),
        slot: crate::policy::limits::Slot,
        lookup: bool,
    ) -> Session {
        let mut s = Session::blank(now, id, sites, listener, addrs, slot);
        s.begin(now, lookup);
        s
    }

    /// A session whose first bytes must be a PROXY protocol header naming the client
    /// (see [`crate::proxy`]); it says nothing until then, and closes at `deadline`.
    pub(crate) fn awaiting_proxy(
        now: Instant,
        id: SessionId,
        sites: Arc<Sites>,
        listener: Listener,
        addrs: (SocketAddr, SocketAddr),
        slot: crate::policy::limits::Slot,
        deadline: Instant,
    ) -> Session {
        let mut s = Session::blank(now, id, sites, listener, addrs, slot);
        s.proxy = Some(Box::default());
        // The login timer bounds the wait for the header; `begin` sets it anew.
        s.timers.set(Timer::Login, deadline);
        s
    }

    fn blank(
        now: Instant,
        id: SessionId,
        sites: Arc<Sites>,
        listener: Listener,
        (peer, local): (SocketAddr, SocketAddr),
        slot: crate::policy::limits::Slot,
    ) -> Session {
        let config = sites
            .site(listener.default.unwrap_or(listener.fallback))
            .clone();
        Session {
            id,
            sites,
            listener,
            site: listener.default,
            host_given: false,
            framer: LineFramer::new(config.max_line),
            peer,
            peer_name: None,
            local,
            proxy: None,
            held: VecDeque::new(),
            held_bytes: 0,
            out: Vec::new(),
            actions: VecDeque::new(),
            ids: IdGen::default(),
            timers: TimerTable::default(),
            login: Login::Start,
            login_failures: 0,
            view: View::default(),
            cwd: VPath::root(),
            data: DataChan::None,
            epsv_all: false,
            ascii: false,
            rest: 0,
            rename_from: None,
            facts: Facts::default(),
            pending: None,
            ending: None,
            closed: false,
            tls: None,
            secured: false,
            pbsz: false,
            prot_private: false,
            slot,
            verb: None,
            status: 0,
            sub: crate::log::SubStatus::None,
            win32: 0,
            log: None,
            log_user: None,
            log_host: None,
            opened: now,
            last_now: now,
            sent_total: 0,
            received_total: 0,
            end_note: None,
            live: None,
            config,
        }
    }

    /// The client is admitted: TLS for an implicit binding, then the greeting (or the
    /// reverse lookup it waits for), and the login timer.
    pub(super) fn begin(&mut self, now: Instant, lookup: bool) {
        if self.listener.implicit_tls {
            match self.config.tls.clone() {
                Some(settings) => self.start_tls(&settings),
                None => {
                    tracing::error!(site = %self.config.site_name, "implicit TLS binding without TLS settings");
                    self.close();
                    return;
                }
            }
            self.pbsz = true;
            self.prot_private = true;
        }
        if lookup {
            // IP rules with host names judge once the name is known; until then the
            // session says nothing and runs no command (the login timeout still runs).
            let ip = self.peer.ip();
            self.request(Request::ReverseLookup { ip }, Then::Lookup);
        } else {
            self.greet();
        }
        self.timers
            .set(Timer::Login, now + self.config.timeouts.login);
    }

    /// The 220 greeting of the chosen site, or, when no site answers without a host
    /// name, how to choose one.
    pub(super) fn greet(&mut self) {
        // Every admitted session's first record (a refused one's says why instead).
        self.start_record(self.last_now, "ControlChannelOpened".into(), "", 0);
        if self.site.is_none() {
            self.reply(
                220,
                "wharf FTP server ready; choose a site with HOST name or USER host|user.",
            );
            return self.emit_opened();
        }
        let banner = self.config.banner.clone();
        self.reply_text(220, &banner);
        self.emit_opened();
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Puts the session on the live sessions board (at admission).
    pub(crate) fn set_live(&mut self, live: crate::monitor::LiveHandle) {
        self.live = Some(Box::new(live));
    }

    /// Its entry on the live sessions board (when the server keeps one), for the driver
    /// to say how to deliver [`Input::Disconnect`].
    pub fn live(&self) -> Option<&Arc<crate::monitor::LiveSession>> {
        self.live.as_deref().map(|l| l.entry())
    }

    /// Feeds one input. Protocol errors become replies; nothing here fails.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if self.closed {
            return;
        }
        self.last_now = now;
        match input {
            Input::ControlBytes(bytes) => self.receive(bytes),
            Input::ControlEof => self.end(Ending::PeerGone),
            Input::Shutdown => self.end(Ending::Shutdown),
            Input::Disconnect => self.disconnect(),
            Input::DataListening { conn, port } => self.on_data_listening(conn, port),
            Input::DataAccepted { conn, peer } => self.on_data_accepted(now, conn, peer),
            Input::DataProxied { conn, client } => self.on_data_proxied(now, conn, client),
            Input::DataConnected { conn } => self.on_data_connected(now, conn),
            Input::DataFailed { conn, error } => self.on_data_failed(now, conn, error),
            Input::TransferProgress { xfer, bytes } => self.on_progress(xfer, bytes),
            Input::TransferDone { xfer, outcome } => self.on_transfer_done(now, xfer, outcome),
            Input::Completed { req, completion } => self.on_completed(now, req, completion),
        }
        self.settle(now);
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.last_now = now;
        while let Some(timer) = self.timers.expired(now) {
            self.on_timer(now, timer);
            if self.closed {
                return;
            }
        }
        self.settle(now);
    }

    /// Control-channel bytes waiting to be written. Refilled by `handle_input` and
    /// `handle_timeout`; consumed by `handle_written`.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        (!self.out.is_empty()).then_some(&self.out[..])
    }

    /// Reports that the first `n` bytes of `poll_transmit` were written.
    pub fn handle_written(&mut self, n: usize) {
        let n = n.min(self.out.len());
        if n == self.out.len() {
            // Idle sessions must cost little: give the buffer back once it is drained.
            self.out = Vec::new();
        } else {
            self.out.drain(..n);
        }
    }

    /// The next action for the driver. Refilled by `handle_input` and `handle_timeout`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        let action = self.actions.pop_front();
        if action.is_none() && self.actions.capacity() > 0 {
            self.actions = VecDeque::new();
        }
        action
    }

    /// When `handle_timeout` must next be called. Changes after any `handle_*` call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        self.timers.next()
    }

    /// Whether the driver should read more control bytes: false while replies pile up
    /// unwritten or commands wait unprocessed (backpressure), and once closed.
    pub fn wants_read(&self) -> bool {
        !self.closed
            && self.ending.is_none()
            && self.out.len() < self.config.max_pending_output
            && self.framer.buffered() + self.held_bytes < self.config.max_line
    }

    /// Whether the session has ended; the driver closes the connection once
    /// `poll_transmit` is drained.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Runs queued commands until one has to wait, and ends the session when asked to
    /// and nothing is pending.
    fn settle(&mut self, now: Instant) {
        loop {
            if self.closed {
                return;
            }
            self.command_done(now);
            if self.pending.is_none() {
                if let Some(ending) = self.ending {
                    self.finish(now, ending);
                    return;
                }
            }
            let line = match self.next_line() {
                Some(line) => line,
                None => break,
            };
            self.timers
                .set(Timer::Idle, now + self.config.timeouts.idle);
            match line {
                Frame::TooLong => self.on_too_long(now),
                Frame::Line(bytes) => self.on_line(now, &bytes),
            }
        }
        self.command_done(now);
        // No `framer.clear()` here: the framer frees its own memory when idle, and
        // clearing it mid-line would forget it is discarding an over-long line, letting
        // the line's tail run as a command.
    }

    /// The next line to execute, honouring the one-command-at-a-time rule: while a
    /// transfer runs, ABOR and STAT are taken at once (and QUIT when nothing is held);
    /// anything else waits in `held` until the transfer ends.
    fn next_line(&mut self) -> Option<Frame> {
        match &self.pending {
            None => {
                if let Some(line) = self.held.pop_front() {
                    self.held_bytes -= line.len();
                    return Some(Frame::Line(line));
                }
                self.framer.next_frame()
            }
            Some(Pending::Transfer(_)) => loop {
                let frame = self.framer.next_frame()?;
                let Frame::Line(bytes) = &frame else {
                    return Some(frame);
                };
                let verb = command::parse(bytes).ok().map(|c| c.verb);
                let urgent = match verb {
                    Some(Verb::Abor | Verb::Stat) => true,
                    Some(Verb::Quit) => self.held.is_empty(),
                    _ => false,
                };
                if urgent {
                    return Some(frame);
                }
                if let Frame::Line(bytes) = frame {
                    self.held_bytes += bytes.len();
                    self.held.push_back(bytes);
                }
            },
            Some(_) => None,
        }
    }

    fn on_line(&mut self, now: Instant, line: &[u8]) {
        let parsed = command::parse(line);
        if !matches!(&parsed, Ok(c) if c.verb == Verb::Rnto) {
            // RNFR's source is for the very next line only, whatever that line is
            // (unknown, refused or malformed ones included).
            self.rename_from = None;
        }
        let suspended = self.begin_command(now, &parsed, line);
        self.run_line(now, parsed);
        self.end_urgent(now, suspended);
    }

    fn run_line(&mut self, now: Instant, parsed: Result<Command, ParseError>) {
        let cmd = match parsed {
            Ok(cmd) => cmd,
            Err(ParseError::Empty) => return self.reply(500, "Empty command."),
            Err(ParseError::Unknown) => return self.reply(500, "Unknown command."),
            Err(ParseError::BadUtf8(_)) => return self.reply(501, "Argument is not valid UTF-8."),
            Err(ParseError::ControlChar(_)) => {
                return self.reply(501, "Argument contains CR or NUL.")
            }
        };
        tracing::trace!(session = %self.id, verb = cmd.verb.name(), "command");
        if !self.logged_in() && !allowed_before_login(&cmd) {
            return self.reply(530, "Please login with USER and PASS.");
        }
        if let Some(refusal) = self.tls_policy_refusal(&cmd) {
            return self.reply(534, refusal);
        }
        if !self.filter_command(&cmd) {
            return;
        }
        self.dispatch(now, cmd);
    }

    fn dispatch(&mut self, now: Instant, cmd: Command) {
        let arg = cmd.arg.as_str();
        match cmd.verb {
            Verb::User => self.cmd_user(arg),
            Verb::Pass => self.cmd_pass(now, arg),
            Verb::Acct => self.cmd_acct(),
            Verb::Host => self.cmd_host(arg),
            Verb::Rein => self.cmd_rein(now),
            Verb::Quit => self.cmd_quit(),
            Verb::Auth => self.cmd_auth(arg),
            Verb::Pbsz => self.cmd_pbsz(arg),
            Verb::Prot => self.cmd_prot(arg),
            Verb::Ccc => self.cmd_ccc(now),
            Verb::Feat => self.cmd_feat(),
            Verb::Opts => self.cmd_opts(arg),
            Verb::Syst => self.reply(215, "UNIX Type: L8"),
            Verb::Noop => self.reply(200, "NOOP ok."),
            Verb::Help => self.cmd_help(),
            Verb::Stat => self.cmd_stat(arg),
            Verb::Allo => self.reply(200, "ALLO ok, no storage allocation needed."),
            Verb::Type => self.cmd_type(arg),
            Verb::Mode => self.cmd_mode(arg),
            Verb::Stru => self.cmd_stru(arg),
            Verb::Pwd => self.cmd_pwd(),
            Verb::Cwd => self.cmd_cwd(arg),
            Verb::Cdup => self.cmd_cwd(".."),
            Verb::Mkd => self.cmd_mkd(arg),
            Verb::Rmd => self.cmd_rmd(arg),
            Verb::Dele => self.cmd_dele(arg),
            Verb::Rnfr => self.cmd_rnfr(arg),
            Verb::Rnto => self.cmd_rnto(arg),
            Verb::Size => self.cmd_size(arg),
            Verb::Mdtm => self.cmd_mdtm(arg),
            Verb::Mfmt => self.cmd_mfmt(arg),
            Verb::Mlst => self.cmd_mlst(arg),
            Verb::Rest => self.cmd_rest(arg),
            Verb::Pasv => self.cmd_pasv(false, arg),
            Verb::Epsv => self.cmd_pasv(true, arg),
            Verb::Port => self.cmd_port(false, arg),
            Verb::Eprt => self.cmd_port(true, arg),
            Verb::Retr => self.cmd_retr(arg),
            Verb::Stor => self.cmd_store(arg, super::transfer::StoreKind::Stor),
            Verb::Appe => self.cmd_store(arg, super::transfer::StoreKind::Appe),
            Verb::Stou => self.cmd_store(arg, super::transfer::StoreKind::Stou),
            Verb::List => self.cmd_list(super::transfer::ListKind::List, arg),
            Verb::Nlst => self.cmd_list(super::transfer::ListKind::Nlst, arg),
            Verb::Mlsd => self.cmd_list(super::transfer::ListKind::Mlsd, arg),
            Verb::Abor => self.cmd_abor(now),
            Verb::Adat
            | Verb::Mic
            | Verb::Conf
            | Verb::Enc
            | Verb::Site
            | Verb::Smnt
            | Verb::Lprt
            | Verb::Lpsv
            | Verb::Lang
            | Verb::Mfct
            | Verb::Mff
            | Verb::Spsv => self.reply(502, "Command not implemented."),
        }
    }

    fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Login if self.proxy.is_some() => {
                let secs = self
                    .slot
                    .policy()
                    .rules()
                    .proxy
                    .header_timeout
                    .as_secs_f64();
                tracing::info!(session = %self.id, balancer = %self.peer, "no PROXY protocol header within {secs} s; closing");
                self.close_because(crate::log::SubStatus::ProxyRefused);
            }
            Timer::Login => {
                self.reply(421, "Login timeout, closing control connection.");
                self.end_note = Some("login-timeout");
                self.close();
            }
            Timer::Idle if matches!(self.pending, Some(Pending::Transfer(_))) => {
                // A transfer has its own stall timer; a quiet control channel is normal
                // while it runs.
                self.timers
                    .set(Timer::Idle, now + self.config.timeouts.idle);
            }
            Timer::Idle => {
                let secs = self.config.timeouts.idle.as_secs();
                self.reply(
                    421,
                    &format!("Timeout ({secs} seconds): closing control connection."),
                );
                self.end_note = Some("idle-timeout");
                self.close();
            }
            Timer::DataConnect => self.on_data_connect_timeout(now),
            Timer::CccClose => {
                if let Some(tls) = self.tls.as_mut().filter(|t| t.is_closing()) {
                    tls.close(&mut self.out);
                }
            }
            Timer::FailedLogin => self.on_failed_login_delay(),
            Timer::Handshake => {
                let secs = self.config.timeouts.tls_handshake.as_secs_f64();
                tracing::info!(session = %self.id, "TLS handshake not done after {secs} s; closing");
                self.close_because(crate::log::SubStatus::HandshakeTimeout);
            }
        }
    }

    fn on_completed(&mut self, now: Instant, req: RequestId, completion: Completion) {
        let then = match self.pending.take() {
            Some(Pending::Request { req: want, then }) if want == req => then,
            other => {
                // A completion nobody waits for (a download's CloseFile): nothing to do.
                self.pending = other;
                return;
            }
        };
        self.on_then(now, then, completion);
    }

    /// Ends the session once nothing is pending (at once if nothing is).
    pub(super) fn end(&mut self, ending: Ending) {
        if ending == Ending::PeerGone {
            // Nobody is left to read replies: stop what runs, then close.
            if matches!(self.pending, Some(Pending::FailedLogin { .. })) {
                // Nobody waits for the 530 either (the failure is already counted).
                self.pending = None;
                self.timers.stop(Timer::FailedLogin);
            }
            self.held.clear();
            self.held_bytes = 0;
            self.framer.clear();
            if let Some(Pending::Transfer(t)) = &mut self.pending {
                if let (Some(xfer), false) = (t.xfer, t.aborted) {
                    t.aborted = true;
                    self.actions.push_back(Action::AbortTransfer { xfer });
                }
            }
        }
        if self.ending.is_none() || ending == Ending::PeerGone {
            self.ending = Some(ending);
        }
    }

    /// An administrator ends the session: a running transfer is stopped, `421`, close.
    fn disconnect(&mut self) {
        tracing::info!(session = %self.id, peer = %self.peer, "disconnected by an administrator");
        if let Some(Pending::Transfer(t)) = &mut self.pending {
            if let (Some(xfer), false) = (t.xfer, t.aborted) {
                t.aborted = true;
                self.actions.push_back(Action::AbortTransfer { xfer });
            }
        }
        self.held.clear();
        self.held_bytes = 0;
        self.reply(421, "Disconnected by the server administrator.");
        self.close_because(crate::log::SubStatus::AdminDisconnect);
    }

    fn finish(&mut self, now: Instant, ending: Ending) {
        self.end_note = Some(match ending {
            Ending::Quit => "quit",
            Ending::Shutdown => "shutdown",
            Ending::PeerGone => "client-closed",
        });
        match ending {
            Ending::Quit => {
                let text = self.config.messages.exit.clone();
                self.reply_text(221, text.as_deref().unwrap_or("Goodbye."))
            }
            Ending::Shutdown => {
                self.reply(421, "Server shutting down, closing control connection.")
            }
            Ending::PeerGone => {}
        }
        self.command_done(now);
        self.close();
    }

    /// Closes at once; the driver releases whatever is still open.
    pub(super) fn close(&mut self) {
        self.close_because(crate::log::SubStatus::None);
    }

    /// Closes the connection; its `ControlChannelClosed` record carries `why`.
    pub(super) fn close_because(&mut self, why: crate::log::SubStatus) {
        if let Some(tls) = self.tls.as_mut().filter(|t| !t.is_closing()) {
            tls.close(&mut self.out);
        }
        self.slot.end_handshake();
        if !self.closed {
            self.log_close(self.last_now, why);
            self.closed = true;
            self.pending = None;
            self.timers.clear();
            self.actions.push_back(Action::Close);
        }
    }

    pub(super) fn logged_in(&self) -> bool {
        matches!(self.login, Login::LoggedIn(_))
    }

    /// Queues a single-line reply. CR and LF in `text` (file names!) become spaces.
    pub(super) fn reply(&mut self, code: u16, text: &str) {
        self.note_reply(code, text.len() + 6);
        if !self.control_encrypted() {
            // The common case, once per command: straight into the wire buffer.
            return encode_line(&mut self.out, code, text);
        }
        let mut line = Vec::with_capacity(text.len() + 6);
        encode_line(&mut line, code, text);
        self.emit(&line);
    }

    /// A reply whose text may hold several lines (`\n`): configured messages.
    pub(super) fn reply_text(&mut self, code: u16, text: &str) {
        if text.contains('\n') {
            self.reply_multi(code, text.lines().map(str::to_owned).collect());
        } else {
            self.reply(code, text);
        }
    }

    pub(super) fn reply_multi(&mut self, code: u16, lines: Vec<String>) {
        let mut bytes = Vec::new();
        Reply::multi(code, lines).encode_into(&mut bytes);
        self.note_reply(code, bytes.len());
        self.emit(&bytes);
    }

    /// Whether replies go out encrypted: TLS is on and CCC has not ended it.
    pub(super) fn control_encrypted(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_closing())
    }

    /// Puts reply bytes on the wire, through TLS when the channel is protected.
    fn emit(&mut self, bytes: &[u8]) {
        match self.tls.as_mut().filter(|t| !t.is_closing()) {
            Some(tls) => tls.send(bytes, &mut self.out),
            None => self.out.extend_from_slice(bytes),
        }
    }

    /// Control bytes from the peer: straight to the framer, or through TLS first.
    fn receive(&mut self, bytes: &[u8]) {
        if self.proxy.is_some() {
            return self.receive_proxy_header(bytes);
        }
        let mut plain = Vec::new();
        let result = self.receive_tls(bytes, &mut plain);
        self.framer.feed(&plain);
        match result {
            Ok(()) => {}
            Err(TlsEnd::CloseNotify) => self.end(Ending::PeerGone),
            Err(TlsEnd::Failed(why)) => {
                tracing::debug!(session = %self.id, %why, "control TLS failed");
                self.tls = None;
                self.close();
            }
        }
    }

    /// [`Self::receive`] through TLS: decrypted bytes go to `plain`.
    fn receive_tls(&mut self, bytes: &[u8], plain: &mut Vec<u8>) -> Result<(), TlsEnd> {
        let Some(tls) = &mut self.tls else {
            plain.extend_from_slice(bytes);
            return Ok(());
        };
        if tls.is_closing() {
            return match tls.receive_closing(bytes, &mut self.out, plain)? {
                Closing::Waiting => Ok(()),
                Closing::Done(rest) => {
                    // CCC is complete: what follows the peer's close_notify is plaintext.
                    self.tls = None;
                    self.timers.stop(Timer::CccClose);
                    plain.extend_from_slice(&rest);
                    Ok(())
                }
            };
        }
        let mut rest = bytes;
        loop {
            let Some(tls) = &mut self.tls else {
                return Ok(());
            };
            match tls.receive(&mut rest, &mut self.out, plain)? {
                Received::Done => break,
                Received::Hello(name) => {
                    // The site the SNI name will choose answers the handshake, with its
                    // certificate and client-certificate request.
                    let config = name
                        .and_then(|n| self.sni_site_tls(&n))
                        .or_else(|| self.config.tls.as_ref().map(|t| t.config.clone()));
                    if let Some(tls) = &mut self.tls {
                        tls.accept(config, &mut self.out, plain)?;
                    }
                }
            }
        }
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        if tls.newly_established() {
            self.timers.stop(Timer::Handshake);
            self.slot.end_handshake();
            let token = crate::tls::session_token(self.id);
            self.slot.tls_established(token, tls.resumed_token());
            if let Login::LoggedIn(p) = &self.login {
                // AUTH TLS after login: the login is this TLS session's too.
                self.slot.take_user(&p.name);
            }
            match tls.peer_certificate() {
                Some(cert) => tracing::info!(
                    session = %self.id,
                    subject = %crate::tls::certificate_subject(cert),
                    "TLS client certificate verified"
                ),
                None => tracing::debug!(session = %self.id, "TLS handshake complete"),
            }
            if let Some(name) = tls.server_name().map(str::to_owned) {
                // The SNI name chooses the site as HOST would (before any command of it
                // runs: commands only come once the handshake is done, and so can a
                // refusal's 421).
                self.select_site_by_sni(&name);
            }
        }
        Ok(())
    }

    /// Control bytes before the PROXY protocol header is complete: the header, then
    /// (once the client is admitted) the client's own bytes.
    fn receive_proxy_header(&mut self, bytes: &[u8]) {
        let Some(buf) = self.proxy.as_mut() else {
            return;
        };
        buf.extend_from_slice(bytes);
        match crate::proxy::parse(buf) {
            crate::proxy::Parsed::Incomplete => {}
            crate::proxy::Parsed::Invalid(why) => {
                tracing::info!(session = %self.id, balancer = %self.peer, why, "bad PROXY protocol header; closing");
                self.proxy = None;
                self.close_because(crate::log::SubStatus::ProxyRefused);
            }
            crate::proxy::Parsed::Done { header, len } => {
                let rest = self
                    .proxy
                    .take()
                    .map(|b| b[len..].to_vec())
                    .unwrap_or_default();
                let balancer = self.peer;
                self.peer = header.source_or(balancer);
                if let Some(live) = &self.live {
                    live.entry().set_client(self.peer);
                }
                tracing::debug!(session = %self.id, %balancer, client = %self.peer, "PROXY protocol header");
                self.admit_proxied();
                if !self.closed && !rest.is_empty() {
                    self.receive(&rest);
                }
            }
        }
    }

    /// Switches the control channel to TLS; what the peer sends next is a ClientHello.
    /// The session's TLS state carries this session's token, which data connections
    /// must present by resuming it.
    pub(super) fn start_tls(&mut self, settings: &crate::tls::TlsSettings) {
        let token = crate::tls::session_token(self.id);
        self.tls = Some(TlsLayer::new(&settings.config, token));
        self.secured = true;
        // Counted by the caller (AUTH, or the admission of an implicit connection);
        // taking it again is free, and without a limit always succeeds.
        self.slot.take_handshake();
        let deadline = self.last_now + self.config.timeouts.tls_handshake;
        self.timers.set(Timer::Handshake, deadline);
    }

    pub(super) fn request(&mut self, request: Request, then: Then) {
        let req = RequestId(self.ids.next());
        self.actions.push_back(Action::Request { req, request });
        self.pending = Some(Pending::Request { req, then });
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.ids.next()
    }

    /// Resolves client input to the path the storage sees, the path the rules see, and
    /// the path the user sees (see [`crate::site`]).
    pub(super) fn resolve(&self, arg: &str) -> Option<Resolved> {
        let shown = self.cwd.resolve(arg).ok()?;
        let (site, storage) = crate::site::map_path(&self.config, &self.view, &shown);
        Some(Resolved {
            storage,
            site,
            shown,
        })
    }

    pub(super) fn data_error_text(error: &DataError) -> &'static str {
        match error {
            DataError::NoFreePort => "No free passive port; try again later.",
            DataError::Exhausted => "Server out of resources; try again later.",
            DataError::Refused => "Connection refused.",
            DataError::Io(_) => "Can't open data connection.",
        }
    }
}

/// One path in its three namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resolved {
    pub(super) storage: VPath,
    pub(super) site: VPath,
    pub(super) shown: VPath,
}

/// Appends `code SP text CRLF`, with any CR or LF in `text` turned into a space.
fn encode_line(out: &mut Vec<u8>, code: u16, text: &str) {
    use std::io::Write as _;
    let _ = write!(out, "{code} ");
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// Commands a client may send before logging in.
fn allowed_before_login(cmd: &Command) -> bool {
    match cmd.verb {
        Verb::User
        | Verb::Pass
        | Verb::Acct
        | Verb::Host
        | Verb::Auth
        | Verb::Adat
        | Verb::Pbsz
        | Verb::Prot
        | Verb::Ccc
        | Verb::Feat
        | Verb::Opts
        | Verb::Syst
        | Verb::Noop
        | Verb::Help
        | Verb::Quit
        | Verb::Rein => true,
        Verb::Stat => cmd.arg.is_empty(),
        _ => false,
    }
}
