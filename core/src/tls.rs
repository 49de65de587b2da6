//! TLS for the control channel and for data connections, and the site's FTPS policy.
//!
//! rustls' buffered `ServerConnection` is itself sans-IO, so the session runs the control
//! channel's TLS inline: ciphertext comes in through `Input::ControlBytes` and leaves
//! through `poll_transmit`. Data connections under `PROT P` get a [`DataTls`] in their
//! [`crate::TransferSpec`]: a byte pump the runtime drives between the socket and the
//! transfer buffer. Every runtime (and the simulator) drives TLS the same way, and this is
//! the only module that names rustls' connection type.
//!
//! # Binding data connections to their control session
//!
//! A data connection under `PROT P` must resume the TLS session of *its own* control
//! connection (vsftpd's `require_ssl_reuse`): the control connection embeds a per-session
//! token in its session state with `set_resumption_data`, and a data connection whose
//! handshake did not resume a session carrying that token is refused before a byte of the
//! body moves ([`DataTlsError::NotResumed`]). A client on the same address that races the
//! real client to a passive port therefore gets nothing.
//!
//! Resumption needs the site's `rustls::ServerConfig` to remember sessions: stateless
//! tickets (`rustls::crypto::ring::Ticketer`, any number of sessions, TLS 1.2 and 1.3) and a
//! session-ID cache for TLS 1.2 clients that do not take tickets. Data connections use a
//! copy of that configuration that shares its ticketer, cache and certificates but sends
//! no TLS 1.3 tickets: a ticket in flight when a client closes an upload is how curl and
//! lftp lose uploads against servers that send them.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::server::{ProducesTickets, StoresServerSessions};

/// Who must use TLS on the control channel (IIS `controlChannelPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ControlPolicy {
    /// TLS is offered; plaintext is fine.
    #[default]
    Allow,
    /// Nothing but AUTH, FEAT, HOST, NOOP, SYST and QUIT before TLS.
    Require,
    /// USER and PASS must be encrypted; the rest may be plaintext.
    RequireCredentialsOnly,
}

/// Who must use TLS on data connections (IIS `dataChannelPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataPolicy {
    #[default]
    Allow,
    /// PROT P is required before any transfer.
    Require,
    /// Data connections are never encrypted (PROT P is refused).
    Deny,
}

/// TLS 1.3 tickets a control connection sends. Data connections send none and clients
/// such as rustls use each ticket once (keeping up to 8 per server), so this is how many
/// `PROT P` data connections such a client can open per control connection. OpenSSL and
/// GnuTLS clients (curl, lftp) reuse one ticket for all of them.
pub const CONTROL_TLS13_TICKETS: usize = 8;

/// A site's FTPS settings. Build with [`TlsSettings::new`] and adjust the policy fields.
#[derive(Clone)]
pub struct TlsSettings {
    /// The control channel's rustls configuration (certificates, versions, tickets).
    pub config: Arc<rustls::ServerConfig>,
    /// The data connections' configuration: `config` without TLS 1.3 tickets, sharing its
    /// ticketer, session cache and certificate resolver (so data connections can resume
    /// control sessions). Built by [`TlsSettings::new`], once per site.
    pub data_config: Arc<rustls::ServerConfig>,
    pub control: ControlPolicy,
    pub data: DataPolicy,
    /// Anonymous users are exempt from `Require` policies.
    pub exempt_anonymous: bool,
    /// A `PROT P` data connection must resume its own control connection's TLS session
    /// (on by default, as vsftpd and FileZilla Server). Clients that cannot resume
    /// (Python's ftplib, some Go, .NET and Java libraries) need it off.
    pub require_session_reuse: bool,
    /// An upload whose data connection ends without a TLS close_notify is truncated and
    /// fails (on by default). Off: a bare TCP end completes the upload.
    pub strict_close_notify: bool,
    /// Whether CCC may return the control channel to plaintext after login (IIS allows
    /// it; on by default). Never while the control policy is `Require`.
    pub allow_ccc: bool,
}

impl TlsSettings {
    /// Settings for a site served with `config`, with the defaults: control and data
    /// policy `Allow`, session reuse required, strict close_notify, CCC allowed.
    ///
    /// The control connection sends [`CONTROL_TLS13_TICKETS`] TLS 1.3 tickets (whatever
    /// `config` says), data connections none.
    ///
    /// For data connections to resume control sessions, `config` should carry a ticketer
    /// (`rustls::crypto::ring::Ticketer::new()`) and a session cache sized for the site
    /// (`rustls::server::ServerSessionMemoryCache::new(n)`), and send TLS 1.3 tickets.
    pub fn new(mut config: rustls::ServerConfig) -> TlsSettings {
        let (tickets, sessions) = (config.ticketer.clone(), config.session_storage.clone());
        config.send_tls13_tickets = CONTROL_TLS13_TICKETS;
        config.session_storage = Arc::new(ControlSessions(sessions.clone()));
        let mut data = config.clone();
        data.send_tls13_tickets = 0;
        data.ticketer = Arc::new(DataTickets(tickets));
        data.session_storage = Arc::new(DataSessions(sessions));
        TlsSettings {
            config: Arc::new(config),
            data_config: Arc::new(data),
            control: ControlPolicy::Allow,
            data: DataPolicy::Allow,
            exempt_anonymous: false,
            require_session_reuse: true,
            strict_close_notify: true,
            allow_ccc: true,
        }
    }
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("control", &self.control)
            .field("data", &self.data)
            .field("exempt_anonymous", &self.exempt_anonymous)
            .field("require_session_reuse", &self.require_session_reuse)
            .field("strict_close_notify", &self.strict_close_notify)
            .field("allow_ccc", &self.allow_ccc)
            .finish_non_exhaustive()
    }
}

const TOKEN_PREFIX: &[u8; 8] = b"wharf-s\0";

/// The resumption token that binds data connections to control session `id`.
pub(crate) fn session_token(id: crate::SessionId) -> [u8; 16] {
    let mut t = [0u8; 16];
    t[..8].copy_from_slice(TOKEN_PREFIX);
    t[8..].copy_from_slice(&id.0.to_be_bytes());
    t
}

// rustls 0.23 reports the resumption data of a resumed session for TLS 1.3 only
// (`received_resumption_data`). For TLS 1.2 the data connections' ticketer and session
// store note the token of the session they hand back, on the thread running the
// handshake, and `DataTls::process` picks it up right after rustls returns.
thread_local! {
    static RESUMED: Cell<Option<[u8; 16]>> = const { Cell::new(None) };
}

fn note_resumed(session: Option<&Vec<u8>>) {
    if let Some(token) = session.and_then(|s| token_in_session(s)) {
        RESUMED.with(|r| r.set(Some(token)));
    }
}

/// The binding token in an encoded rustls 0.23 `ServerSessionValue`, whose
/// `application_data` (a u16 length and the bytes) is followed only by the creation time
/// (u64) and the age obfuscation offset (u32). A tested assumption (TLS 1.2 resumption in
/// `core/tests/tls.rs`); if it ever breaks, TLS 1.2 data connections are refused, never
/// accepted wrongly.
fn token_in_session(session: &[u8]) -> Option<[u8; 16]> {
    let end = session.len().checked_sub(12)?;
    let start = end.checked_sub(16)?;
    let len = session.get(start.checked_sub(2)?..start)?;
    let token: [u8; 16] = session[start..end].try_into().ok()?;
    (len == [0, 16] && token.starts_with(TOKEN_PREFIX)).then_some(token)
}

/// The control connections' session store: TLS 1.2 session IDs are stored for data
/// connections, but a control connection never resumes one (its session would keep the
/// old control session's token; tickets, renewed on resumption, are fine).
#[derive(Debug)]
struct ControlSessions(Arc<dyn StoresServerSessions>);

impl StoresServerSessions for ControlSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, value)
    }
    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.take(key)
    }
    fn can_cache(&self) -> bool {
        self.0.can_cache()
    }
}

/// The data connections' session store: looks up control sessions (noting their token)
/// and stores nothing of its own.
#[derive(Debug)]
struct DataSessions(Arc<dyn StoresServerSessions>);

impl StoresServerSessions for DataSessions {
    fn put(&self, _key: Vec<u8>, _value: Vec<u8>) -> bool {
        false
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let session = self.0.get(key);
        note_resumed(session.as_ref());
        session
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        let session = self.0.get(key);
        note_resumed(session.as_ref());
        session
    }
    fn can_cache(&self) -> bool {
        false
    }
}

/// The data connections' ticketer: opens the control connections' tickets (noting their
/// token) and issues none. A TLS 1.2 resumption would otherwise renew the ticket with
/// the data connection's own (empty) binding, and the client would present that one
/// next time; an empty ticket makes clients keep the one they have.
#[derive(Debug)]
struct DataTickets(Arc<dyn ProducesTickets>);

impl ProducesTickets for DataTickets {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let session = self.0.decrypt(cipher);
        note_resumed(session.as_ref());
        session
    }
}

/// Why a TLS connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsEnd {
    /// The peer sent close_notify.
    CloseNotify,
    /// A protocol error; the alert (if any) is already queued.
    Failed(String),
}

/// The control channel's TLS connection, driven with bytes.
pub(crate) struct TlsLayer {
    conn: Box<rustls::ServerConnection>,
    /// After CCC: incoming bytes are TLS records until the peer's close_notify,
    /// plaintext after it. Holds a partial record meanwhile.
    closing: Option<Vec<u8>>,
}

/// What [`TlsLayer::receive_closing`] found.
pub(crate) enum Closing {
    /// Still waiting for the peer's close_notify.
    Waiting,
    /// The TLS session is over; these bytes (possibly none) are plaintext.
    Done(Vec<u8>),
}

impl TlsLayer {
    /// A new server connection whose session (and every session resumed from it) carries
    /// `token`.
    pub(crate) fn new(
        config: &Arc<rustls::ServerConfig>,
        token: &[u8],
    ) -> Result<TlsLayer, rustls::Error> {
        let mut conn = rustls::ServerConnection::new(config.clone())?;
        conn.set_resumption_data(token);
        Ok(TlsLayer {
            conn: Box::new(conn),
            closing: None,
        })
    }

    /// Takes ciphertext; hands every decrypted byte to `plain`; queues any bytes TLS
    /// wants to send (handshake, alerts) onto `wire`.
    pub(crate) fn receive(
        &mut self,
        mut bytes: &[u8],
        wire: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<(), TlsEnd> {
        while !bytes.is_empty() {
            match self.conn.read_tls(&mut bytes) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(TlsEnd::Failed(e.to_string())),
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.flush(wire);
                return Err(TlsEnd::Failed(e.to_string()));
            }
            if self.drain_plaintext(plain)? {
                self.flush(wire);
                return Err(TlsEnd::CloseNotify);
            }
        }
        self.flush(wire);
        Ok(())
    }

    /// Moves decrypted bytes out; true once the peer has sent close_notify.
    fn drain_plaintext(&mut self, plain: &mut Vec<u8>) -> Result<bool, TlsEnd> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.conn.reader().read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TlsEnd::Failed(e.to_string())),
            }
        }
    }

    /// Encrypts `plain` (buffered by rustls until the handshake is done) onto `wire`.
    pub(crate) fn send(&mut self, plain: &[u8], wire: &mut Vec<u8>) {
        // Writing into rustls' own buffer cannot fail short of running out of memory.
        let _ = self.conn.writer().write_all(plain);
        self.flush(wire);
    }

    /// Sends close_notify.
    pub(crate) fn close(&mut self, wire: &mut Vec<u8>) {
        self.conn.send_close_notify();
        self.flush(wire);
    }

    pub(crate) fn flush(&mut self, wire: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(wire).is_err() {
                break;
            }
        }
    }

    /// CCC: from now on the peer's bytes are TLS records up to its close_notify (see
    /// [`Self::receive_closing`]), answered with ours, and replies go out in plaintext.
    /// Clients differ on who starts the closure (lftp sends close_notify at once and
    /// takes one arriving with the `200` for a closed connection; curl waits for the
    /// server's), so the session waits for the peer's a moment before sending its own
    /// with [`Self::close`].
    pub(crate) fn start_closing(&mut self) {
        self.closing = Some(Vec::new());
    }

    /// Whether CCC has ended this layer's sending side.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// After CCC: feeds whole TLS records, one at a time, so that nothing behind the
    /// peer's close_notify is swallowed by TLS. Bytes that do not start a TLS record
    /// (a client that goes straight to plaintext) end TLS too. Decrypted bytes that
    /// arrive meanwhile go to `plain`.
    pub(crate) fn receive_closing(
        &mut self,
        bytes: &[u8],
        wire: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<Closing, TlsEnd> {
        let mut pending = self.closing.take().unwrap_or_default();
        pending.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let rest = &pending[at..];
            if rest.is_empty() {
                break;
            }
            let looks_like_tls =
                (20..=23).contains(&rest[0]) && rest.get(1).is_none_or(|&v| v == 3);
            if !looks_like_tls {
                return Ok(Closing::Done(rest.to_vec()));
            }
            if rest.len() < 5 {
                break;
            }
            let len = 5 + usize::from(u16::from_be_bytes([rest[3], rest[4]]));
            if rest.len() < len {
                break;
            }
            at += len;
            match self.receive(&rest[..len], wire, plain) {
                Ok(()) => {}
                Err(TlsEnd::CloseNotify) => {
                    // Answer it (nothing happens if ours went out already).
                    self.close(wire);
                    return Ok(Closing::Done(pending[at..].to_vec()));
                }
                Err(e) => return Err(e),
            }
        }
        pending.drain(..at);
        self.closing = Some(pending);
        Ok(Closing::Waiting)
    }

    /// The SNI name the client asked for, once known.
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.conn.server_name()
    }

    /// Whether the handshake is still under way (the SNI name is acted on after it).
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }
}

/// Why TLS on a data connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataTlsError {
    /// The handshake failed, or the connection ended before it completed.
    Handshake(String),
    /// The handshake did not resume this control connection's TLS session
    /// (`require_tls_session_reuse`): another client's connection, or a client that
    /// cannot resume.
    NotResumed,
    /// The upload's data connection ended without close_notify (`strict_close_notify`).
    Truncated,
    /// A TLS error after the handshake (a bad record, a fatal alert).
    Protocol(String),
}

impl std::fmt::Display for DataTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataTlsError::Handshake(why) => write!(f, "TLS handshake failed: {why}"),
            DataTlsError::NotResumed => {
                f.write_str("TLS session of the control connection not resumed")
            }
            DataTlsError::Truncated => {
                f.write_str("data connection closed without TLS close_notify")
            }
            DataTlsError::Protocol(why) => write!(f, "TLS error: {why}"),
        }
    }
}

/// TLS on one data connection: a byte pump between the socket and the transfer.
///
/// The runtime moves ciphertext with [`read_tls`](Self::read_tls) /
/// [`write_tls`](Self::write_tls) (any `io::Read`/`io::Write`: a socket, or a byte slice
/// and a `Vec`), calls [`process`](Self::process) after every read, and moves the body
/// with [`read_plain`](Self::read_plain) / [`write_plain`](Self::write_plain). Until the
/// handshake is complete and the connection is known to belong to its control session,
/// no plaintext moves either way. A download ends with [`close`](Self::close) and
/// writing until [`wants_write`](Self::wants_write) is false, *then* `TransferDone`; an
/// upload ends when [`read_plain`](Self::read_plain) reports the peer's close_notify, or
/// at end-of-stream, which [`end_of_stream`](Self::end_of_stream) judges.
pub struct DataTls {
    conn: Box<rustls::ServerConnection>,
    /// The control session's token, when the data connection must resume it.
    expect: Option<[u8; 16]>,
    strict_close: bool,
    /// The handshake is complete and the binding checked.
    bound: bool,
    failed: bool,
    /// The peer has sent close_notify.
    peer_closed: bool,
    /// The token of the session a TLS 1.2 handshake resumed (see `note_resumed`).
    resumed: Option<[u8; 16]>,
}

impl DataTls {
    pub(crate) fn new(
        config: &Arc<rustls::ServerConfig>,
        expect: Option<[u8; 16]>,
        strict_close: bool,
    ) -> Result<DataTls, rustls::Error> {
        Ok(DataTls {
            conn: Box::new(rustls::ServerConnection::new(config.clone())?),
            expect,
            strict_close,
            bound: false,
            failed: false,
            peer_closed: false,
            resumed: None,
        })
    }

    /// Reads ciphertext from `rd`. `Ok(0)`: `rd` is at end-of-stream (see
    /// [`Self::end_of_stream`]). Call [`Self::process`] after every successful read. Only
    /// call while [`Self::wants_read`] holds (rustls refuses input while decrypted
    /// bytes wait to be taken).
    pub fn read_tls(&mut self, rd: &mut dyn Read) -> io::Result<usize> {
        self.conn.read_tls(rd)
    }

    /// Processes what [`Self::read_tls`] took in: advances the handshake and, when it
    /// completes, checks that the connection resumed its control session. On an error
    /// the connection is dead; an alert or close_notify may still be queued for
    /// [`Self::write_tls`] (best effort).
    pub fn process(&mut self) -> Result<(), DataTlsError> {
        if self.failed {
            return Err(DataTlsError::Protocol("connection already failed".into()));
        }
        RESUMED.with(|r| r.set(None));
        let result = self.conn.process_new_packets();
        if let Some(token) = RESUMED.with(Cell::take) {
            self.resumed = Some(token);
        }
        match result {
            Ok(state) => self.peer_closed |= state.peer_has_closed(),
            Err(e) => {
                self.failed = true;
                return Err(match self.bound {
                    false => DataTlsError::Handshake(e.to_string()),
                    true => DataTlsError::Protocol(e.to_string()),
                });
            }
        }
        // The binding is checked once the handshake is complete: rustls knows at the
        // ClientHello, but a client refused before its Finished would find the
        // connection reset, not read the 522 that says why.
        if !self.bound && !self.conn.is_handshaking() {
            if !self.binding_ok() {
                self.failed = true;
                self.conn.send_close_notify();
                return Err(DataTlsError::NotResumed);
            }
            self.bound = true;
        }
        Ok(())
    }

    /// Whether the completed handshake resumed this connection's control session.
    fn binding_ok(&self) -> bool {
        let Some(token) = &self.expect else {
            return true;
        };
        match self.conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => {
                let presented = match self.conn.received_resumption_data() {
                    Some(data) => Some(data),
                    None => self.resumed.as_ref().map(|t| &t[..]),
                };
                presented == Some(&token[..])
            }
            _ => false,
        }
    }

    /// Whether the connection wants more ciphertext now.
    pub fn wants_read(&self) -> bool {
        !self.failed && self.conn.wants_read()
    }

    /// Whether ciphertext waits to be written.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes queued ciphertext (handshake, records, alerts) to `wr`.
    pub fn write_tls(&mut self, wr: &mut dyn Write) -> io::Result<usize> {
        self.conn.write_tls(wr)
    }

    /// Whether the handshake (and the session-binding check) is still to complete; no
    /// plaintext moves until it has.
    pub fn is_handshaking(&self) -> bool {
        !self.bound
    }

    /// Takes decrypted body bytes: `Some(n)` with `n > 0` bytes, `Some(0)` once the peer
    /// has sent close_notify (the body is complete), `None` when nothing is available
    /// now (read more ciphertext).
    pub fn read_plain(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.bound || self.failed || buf.is_empty() {
            return None;
        }
        self.conn.reader().read(buf).ok()
    }

    /// Encrypts body bytes; returns how many were taken (fewer than offered, or none,
    /// while ciphertext waits to be written: write it out and offer the rest again).
    pub fn write_plain(&mut self, buf: &[u8]) -> usize {
        if !self.bound || self.failed {
            return 0;
        }
        self.conn.writer().write(buf).unwrap_or(0)
    }

    /// Queues close_notify: the end of a download's body. Write until
    /// [`Self::wants_write`] is false before reporting the transfer done.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }

    /// Whether the peer has sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// What the end of the ciphertext stream means for an upload: complete after the
    /// peer's close_notify, or without one unless `strict_close_notify`; an end during
    /// the handshake is a failed handshake.
    pub fn end_of_stream(&self) -> Result<(), DataTlsError> {
        if !self.bound {
            return Err(DataTlsError::Handshake(
                "the connection closed during the handshake".into(),
            ));
        }
        if self.peer_closed() || !self.strict_close {
            Ok(())
        } else {
            Err(DataTlsError::Truncated)
        }
    }

    /// Whether this connection must resume its control session.
    pub fn requires_resumption(&self) -> bool {
        self.expect.is_some()
    }
}

impl std::fmt::Debug for DataTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataTls")
            .field("requires_resumption", &self.expect.is_some())
            .field("strict_close", &self.strict_close)
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

/// Two data-connection TLS layers are equal when they are set up alike (same binding
/// and close policy); a connection's state cannot be compared.
impl PartialEq for DataTls {
    fn eq(&self, other: &Self) -> bool {
        self.expect == other.expect && self.strict_close == other.strict_close
    }
}

impl Eq for DataTls {}
