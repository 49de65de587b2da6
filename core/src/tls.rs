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

/// Whether the site asks TLS clients for a certificate (IIS "SSL client certificates").
/// The rustls configuration's client verifier does the asking and checking; this says
/// which one it is, for what the session must enforce beyond a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCertificates {
    /// No CertificateRequest.
    #[default]
    Ignore,
    /// Asked for, and verified when sent; clients without one are welcome.
    Allow,
    /// Handshakes without a valid certificate fail, and a login needs a control
    /// connection that presented one to this site (not to another site on the address).
    Require,
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
    /// What `config`'s client verifier does (set by
    /// [`TlsSettings::with_client_certificates`]).
    pub client_certificates: ClientCertificates,
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
    pub fn new(config: rustls::ServerConfig) -> TlsSettings {
        TlsSettings::with_client_certificates(config, ClientCertificates::Ignore)
    }

    /// [`TlsSettings::new`] for a `config` whose client verifier does what `client`
    /// says (`with_no_client_auth()` for `Ignore`; rustls'
    /// `WebPkiClientVerifier::builder(roots)` with `.allow_unauthenticated()` for
    /// `Allow`, without for `Require`).
    ///
    /// With client certificates, control connections never resume a session: the
    /// sessions and tickets are shared with other sites, whose handshakes checked other
    /// certificates or none, so every control connection makes a full handshake with
    /// this verifier. Data connections resume their control session as usual (rustls
    /// asks a resumed handshake for no certificate; the session carries the one the
    /// control connection presented).
    pub fn with_client_certificates(
        mut config: rustls::ServerConfig,
        client: ClientCertificates,
    ) -> TlsSettings {
        let (tickets, sessions) = (config.ticketer.clone(), config.session_storage.clone());
        let resume = client == ClientCertificates::Ignore;
        config.send_tls13_tickets = CONTROL_TLS13_TICKETS;
        config.session_storage = Arc::new(ControlSessions {
            inner: sessions.clone(),
            resume,
        });
        if !resume {
            config.ticketer = Arc::new(IssueOnlyTickets(tickets.clone()));
        }
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
            client_certificates: client,
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
            .field("client_certificates", &self.client_certificates)
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
/// old control session's token; tickets, renewed on resumption, are fine). Without
/// `resume` (client certificates) it resumes nothing at all.
#[derive(Debug)]
struct ControlSessions {
    inner: Arc<dyn StoresServerSessions>,
    resume: bool,
}

impl StoresServerSessions for ControlSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.inner.put(key, value)
    }
    fn get(&self, _key: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.resume {
            true => self.inner.take(key),
            false => None,
        }
    }
    fn can_cache(&self) -> bool {
        self.inner.can_cache()
    }
}

/// The control connections' ticketer on a site with client certificates: issues tickets
/// (for its data connections) and accepts none, so every control handshake is a full
/// one that this site's verifier checks.
#[derive(Debug)]
struct IssueOnlyTickets(Arc<dyn ProducesTickets>);

impl ProducesTickets for IssueOnlyTickets {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        self.0.lifetime()
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(plain)
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
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
///
/// It first reads the ClientHello on its own (rustls' `Acceptor`): the SNI name in it
/// may choose another site ([`Received::Hello`]), whose configuration — certificate,
/// client-certificate verifier — then answers the handshake ([`TlsLayer::accept`]).
pub(crate) struct TlsLayer {
    state: Box<LayerState>,
    /// After CCC: incoming bytes are TLS records until the peer's close_notify,
    /// plaintext after it. Holds a partial record meanwhile.
    closing: Option<Vec<u8>>,
}

// Boxed as a whole in `TlsLayer`; `Open` is the state a session lives in.
#[allow(clippy::large_enum_variant)]
enum LayerState {
    /// Reading the ClientHello; `accepted` once it is complete.
    Hello {
        acceptor: Box<rustls::server::Acceptor>,
        accepted: Option<Box<rustls::server::Accepted>>,
        /// The configuration TLS was started with (the session's site's).
        fallback: Arc<rustls::ServerConfig>,
        token: [u8; 16],
        /// Plaintext queued before the handshake (an implicit binding's greeting).
        early: Vec<u8>,
    },
    Open {
        conn: rustls::ServerConnection,
        /// The configuration that answered the ClientHello.
        config: Arc<rustls::ServerConfig>,
        /// Whether [`TlsLayer::newly_established`] has reported the handshake.
        reported: bool,
    },
    Failed,
}

/// What [`TlsLayer::receive`] got to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Every byte was taken.
    Done,
    /// The ClientHello is complete, with this SNI name: choose the configuration with
    /// [`TlsLayer::accept`], then pass the rest of the input again.
    Hello(Option<String>),
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
    /// `token`, answered with `config` unless [`TlsLayer::accept`] is given another.
    pub(crate) fn new(config: &Arc<rustls::ServerConfig>, token: [u8; 16]) -> TlsLayer {
        TlsLayer {
            state: Box::new(LayerState::Hello {
                acceptor: Box::default(),
                accepted: None,
                fallback: config.clone(),
                token,
                early: Vec::new(),
            }),
            closing: None,
        }
    }

    /// Takes ciphertext from `bytes` (advancing it); hands every decrypted byte to
    /// `plain`; queues any bytes TLS wants to send (handshake, alerts) onto `wire`.
    /// Stops early, with [`Received::Hello`], when the ClientHello is complete.
    pub(crate) fn receive(
        &mut self,
        bytes: &mut &[u8],
        wire: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<Received, TlsEnd> {
        match &mut *self.state {
            LayerState::Hello {
                acceptor, accepted, ..
            } => {
                if let Some(a) = accepted {
                    let name = a.client_hello().server_name().map(str::to_owned);
                    return Ok(Received::Hello(name));
                }
                while !bytes.is_empty() {
                    match acceptor.read_tls(bytes) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(self.fail(e.to_string())),
                    }
                    match acceptor.accept() {
                        Ok(None) => {}
                        Ok(Some(a)) => {
                            let name = a.client_hello().server_name().map(str::to_owned);
                            *accepted = Some(Box::new(a));
                            return Ok(Received::Hello(name));
                        }
                        Err((e, mut alert)) => {
                            let _ = alert.write_all(wire);
                            return Err(self.fail(e.to_string()));
                        }
                    }
                }
                Ok(Received::Done)
            }
            LayerState::Open { .. } => {
                while !bytes.is_empty() {
                    let LayerState::Open { conn, .. } = &mut *self.state else {
                        break;
                    };
                    match conn.read_tls(bytes) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => return Err(TlsEnd::Failed(e.to_string())),
                    }
                    self.process(wire, plain)?;
                }
                self.flush(wire);
                Ok(Received::Done)
            }
            LayerState::Failed => Err(TlsEnd::Failed("TLS already failed".into())),
        }
    }

    fn fail(&mut self, why: String) -> TlsEnd {
        *self.state = LayerState::Failed;
        TlsEnd::Failed(why)
    }

    /// After [`Received::Hello`]: answers the handshake with `config` (the site the SNI
    /// name chose), or the configuration TLS started with.
    pub(crate) fn accept(
        &mut self,
        config: Option<Arc<rustls::ServerConfig>>,
        wire: &mut Vec<u8>,
        plain: &mut Vec<u8>,
    ) -> Result<(), TlsEnd> {
        let state = std::mem::replace(&mut *self.state, LayerState::Failed);
        let LayerState::Hello {
            accepted: Some(accepted),
            fallback,
            token,
            early,
            ..
        } = state
        else {
            *self.state = state;
            return Ok(());
        };
        let config = config.unwrap_or(fallback);
        match (*accepted).into_connection(config.clone()) {
            Ok(mut conn) => {
                conn.set_resumption_data(&token);
                // Buffered by rustls until the handshake is complete.
                let _ = conn.writer().write_all(&early);
                *self.state = LayerState::Open {
                    conn,
                    config,
                    reported: false,
                };
                // Whatever arrived behind the ClientHello.
                self.process(wire, plain)?;
                self.flush(wire);
                Ok(())
            }
            Err((e, mut alert)) => {
                let _ = alert.write_all(wire);
                Err(TlsEnd::Failed(e.to_string()))
            }
        }
    }

    /// Processes the records read so far; moves plaintext out.
    fn process(&mut self, wire: &mut Vec<u8>, plain: &mut Vec<u8>) -> Result<(), TlsEnd> {
        let LayerState::Open { conn, .. } = &mut *self.state else {
            return Ok(());
        };
        if let Err(e) = conn.process_new_packets() {
            self.flush(wire);
            return Err(TlsEnd::Failed(e.to_string()));
        }
        if Self::drain_plaintext(conn, plain)? {
            self.flush(wire);
            return Err(TlsEnd::CloseNotify);
        }
        Ok(())
    }

    /// Moves decrypted bytes out; true once the peer has sent close_notify.
    fn drain_plaintext(
        conn: &mut rustls::ServerConnection,
        plain: &mut Vec<u8>,
    ) -> Result<bool, TlsEnd> {
        let mut chunk = [0u8; 4096];
        loop {
            match conn.reader().read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TlsEnd::Failed(e.to_string())),
            }
        }
    }

    /// Encrypts `plain` (buffered until the handshake is done) onto `wire`.
    pub(crate) fn send(&mut self, plain: &[u8], wire: &mut Vec<u8>) {
        match &mut *self.state {
            LayerState::Hello { early, .. } => early.extend_from_slice(plain),
            LayerState::Open { conn, .. } => {
                // Writing into rustls' own buffer cannot fail short of running out of
                // memory.
                let _ = conn.writer().write_all(plain);
                self.flush(wire);
            }
            LayerState::Failed => {}
        }
    }

    /// Sends close_notify (nothing before the handshake has started).
    pub(crate) fn close(&mut self, wire: &mut Vec<u8>) {
        if let LayerState::Open { conn, .. } = &mut *self.state {
            conn.send_close_notify();
        }
        self.flush(wire);
    }

    pub(crate) fn flush(&mut self, wire: &mut Vec<u8>) {
        let LayerState::Open { conn, .. } = &mut *self.state else {
            return;
        };
        while conn.wants_write() {
            if conn.write_tls(wire).is_err() {
                break;
            }
        }
    }

    /// The SNI name the client asked for, once the ClientHello is read.
    pub(crate) fn server_name(&self) -> Option<&str> {
        match &*self.state {
            LayerState::Open { conn, .. } => conn.server_name(),
            _ => None,
        }
    }

    /// True once, when the handshake has completed.
    pub(crate) fn newly_established(&mut self) -> bool {
        match &mut *self.state {
            LayerState::Open { conn, reported, .. } if !*reported && !conn.is_handshaking() => {
                *reported = true;
                true
            }
            _ => false,
        }
    }

    /// The token of the control session whose TLS session this one resumed (TLS 1.3; a
    /// control connection never resumes a TLS 1.2 session ID, see `ControlSessions`).
    pub(crate) fn resumed_token(&self) -> Option<&[u8]> {
        match &*self.state {
            LayerState::Open { conn, .. }
                if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) =>
            {
                conn.received_resumption_data()
            }
            _ => None,
        }
    }

    /// Queues `n` fresh TLS 1.3 session tickets onto `wire` (nothing under TLS 1.2, whose
    /// clients reuse their session, nor before the handshake or after CCC). A data
    /// connection is about to open: clients that use each ticket once (rustls, OpenSSL
    /// for TLS 1.3) then always hold one to resume this session with. Returns how many
    /// were queued.
    pub(crate) fn send_tickets(&mut self, n: usize, wire: &mut Vec<u8>) -> usize {
        if self.closing.is_some() {
            return 0;
        }
        let LayerState::Open { conn, .. } = &mut *self.state else {
            return 0;
        };
        if conn.is_handshaking()
            || conn.protocol_version() != Some(rustls::ProtocolVersion::TLSv1_3)
        {
            return 0;
        }
        if conn.send_tls13_tickets(n).is_err() {
            return 0;
        }
        self.flush(wire);
        n
    }

    /// The client's certificate (the leaf), verified by the configuration's client
    /// verifier, once the handshake is complete.
    pub(crate) fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        match &*self.state {
            LayerState::Open { conn, .. } if !conn.is_handshaking() => {
                conn.peer_certificates()?.first()
            }
            _ => None,
        }
    }

    /// Whether the completed handshake was answered with `config` (and so checked the
    /// client with its verifier).
    pub(crate) fn answered_with(&self, config: &Arc<rustls::ServerConfig>) -> bool {
        match &*self.state {
            LayerState::Open {
                conn, config: used, ..
            } => !conn.is_handshaking() && Arc::ptr_eq(used, config),
            _ => false,
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
            match self.receive(&mut &rest[..len], wire, plain) {
                Ok(_) => {}
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
    /// Where the sessions of the client's other control connections are known (see
    /// [`crate::policy::logins`]); without it, only `expect` itself binds.
    logins: Option<Arc<crate::policy::ServerPolicy>>,
    /// The connection must carry a client certificate (`ClientCertificates::Require`).
    client_certificate: bool,
}

impl DataTls {
    pub(crate) fn new(
        config: &Arc<rustls::ServerConfig>,
        expect: Option<[u8; 16]>,
        strict_close: bool,
        client_certificate: bool,
    ) -> Result<DataTls, rustls::Error> {
        Ok(DataTls {
            conn: Box::new(rustls::ServerConnection::new(config.clone())?),
            expect,
            strict_close,
            bound: false,
            failed: false,
            peer_closed: false,
            resumed: None,
            logins: None,
            client_certificate,
        })
    }

    /// Also accepts the session of another control connection of the same client: same
    /// family of resumed sessions, address and user, as `policy`'s table says.
    pub(crate) fn with_logins(mut self, policy: Arc<crate::policy::ServerPolicy>) -> DataTls {
        self.logins = Some(policy);
        self
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
            // A full handshake without a certificate fails in rustls already; a resumed
            // one carries the certificate of the session it resumed, if that had one
            // (with session reuse off, it may be another site's session).
            if self.client_certificate && self.conn.peer_certificates().is_none() {
                self.failed = true;
                self.conn.send_close_notify();
                return Err(DataTlsError::Handshake(
                    "no client certificate (client_certificates = require)".into(),
                ));
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
                match (presented, &self.logins) {
                    (None, _) => false,
                    (Some(p), None) => p == &token[..],
                    (Some(p), Some(logins)) => logins.tls_vouches(token, p),
                }
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
        self.expect == other.expect
            && self.strict_close == other.strict_close
            && self.client_certificate == other.client_certificate
    }
}

impl Eq for DataTls {}

/// The subject of a DER certificate, for logs: its attributes in certificate order,
/// `CN=alice, O=Example`, well-known ones by name, others by OID; control characters
/// are replaced, so a name cannot forge log lines. `?` when the DER is not understood
/// (a certificate rustls verified always is).
pub fn certificate_subject(der: &[u8]) -> String {
    subject(der).unwrap_or_else(|| "?".to_string())
}

/// One DER element: (tag, contents, the rest after it). Single-byte tags, definite
/// lengths of up to four bytes.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    let body = rest.get(..len)?;
    Some((tag, body, &rest[len..]))
}

fn subject(der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(cert)? else {
        return None;
    };
    // version [0] (optional), serialNumber, signature, issuer, validity, subject.
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..4 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, mut name, _) = der_element(rest)? else {
        return None;
    };
    let mut parts = Vec::new();
    while !name.is_empty() {
        let (_set, mut rdn, after) = der_element(name)?;
        name = after;
        while !rdn.is_empty() {
            let (_seq, atv, after) = der_element(rdn)?;
            rdn = after;
            let (0x06, oid, value) = der_element(atv)? else {
                return None;
            };
            let (vtag, value, _) = der_element(value)?;
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN".to_string(),
                [0x55, 0x04, 0x06] => "C".to_string(),
                [0x55, 0x04, 0x07] => "L".to_string(),
                [0x55, 0x04, 0x08] => "ST".to_string(),
                [0x55, 0x04, 0x0a] => "O".to_string(),
                [0x55, 0x04, 0x0b] => "OU".to_string(),
                [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => {
                    "emailAddress".to_string()
                }
                _ => oid.iter().map(|b| format!("{b:02x}")).collect(),
            };
            let text = match vtag {
                // UTF8String, PrintableString, T61String, IA5String.
                0x0c | 0x13 | 0x14 | 0x16 => String::from_utf8_lossy(value).into_owned(),
                _ => format!(
                    "#{}",
                    value.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ),
            };
            let text: String = text
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            parts.push(format!("{label}={text}"));
        }
    }
    Some(parts.join(", "))
}

#[cfg(test)]
mod subject_tests {
    use super::*;

    #[test]
    fn subjects_of_generated_certificates() {
        let mut params = rcgen::CertificateParams::new(vec!["ftp.example.com".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example\nCorp");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_subject(cert.der()), "O=Example?Corp, CN=alice");
        // Anything else is "?", never a panic.
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = certificate_subject(&der[..cut]);
        }
        assert_eq!(certificate_subject(b""), "?");
        assert_eq!(
            certificate_subject(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            "?"
        );
    }
}
