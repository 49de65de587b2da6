//! A model FTP client: it sends planned commands, parses replies (multi-line aware),
//! pairs each final reply with its command, and checks it against the model.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use wharf_core::memfs::MemStorage;
use wharf_core::SessionConfig;

use super::model::Model;
use super::plan::{Kind, Step};
use super::rng::Rng;
use super::swarm::Swarm;

/// What a client callback may touch: the clock, storage (as an oracle), the config.
pub struct ClientCx<'a> {
    pub now: Duration,
    pub storage: &'a MemStorage,
    pub cfg: &'a SessionConfig,
    pub swarm: &'a Swarm,
    pub out: Vec<ClientOut>,
}

/// What a client asks the network for.
#[derive(Debug)]
pub enum ClientOut {
    Send(Vec<u8>),
    Eof { reset: bool },
    Wake(Duration),
}

/// A path's state since failed uploads changed it: the state a reply last vouched for,
/// and the failed uploads (how, REST offset, body).
#[derive(Debug, Clone)]
pub struct Unsettled {
    pub baseline: Option<Option<Vec<u8>>>,
    pub failed: Vec<(super::plan::How, u64, Vec<u8>)>,
}

#[derive(Debug)]
pub struct Sent {
    pub kind: Kind,
    pub prelim: bool,
    /// When the client sent it.
    pub at: Duration,
}

pub struct Client {
    pub idx: usize,
    pub rng: Rng,
    pub model: Model,
    pub v6: bool,
    inbuf: Vec<u8>,
    /// Inside a multi-line reply: its code and first line.
    multi: Option<(u16, String)>,
    pub outstanding: VecDeque<Sent>,
    pub steps: VecDeque<Step>,
    pub ops_left: u32,
    /// The session as the client believes it is.
    pub logged_in: bool,
    pub anon: bool,
    pub user_ok: bool,
    pub cwd: String,
    pub data_ready: bool,
    pub rest: u64,
    pub ascii: bool,
    pub rnfr: Option<String>,
    /// Bytes this client sends on its current upload / received on its download.
    pub upload: Vec<u8>,
    pub data_in: Vec<u8>,
    pub abor_sent: bool,
    abort_at: Option<Duration>,
    /// The client stopped writing (FIN or RST), sent QUIT, or the server said 221/421.
    pub fin: bool,
    pub reset: bool,
    pub quit_sent: bool,
    pub goodbye: bool,
    pub server_closed: bool,
    /// An upload whose outcome the client never learned (connection dropped first).
    pub unknown_upload: bool,
    /// Paths a failed upload changed (the model took what it left from storage): no
    /// reply vouched for that state, so a crash may take it back (see `crash.rs`).
    pub unsettled: std::collections::BTreeMap<String, Unsettled>,
    /// Reply codes and checked outcomes seen, for coverage.
    pub stats: std::collections::BTreeMap<String, u64>,
    /// This client's TLS configuration (when the seed uses FTPS): its control and data
    /// connections share its session store.
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    /// TLS 1.3 (else 1.2).
    tls13: bool,
    /// The control connection's TLS, from the 234 on.
    pub ctl_tls: Option<Box<rustls::ClientConnection>>,
    /// The control handshake is complete (on the client's side).
    pub secured: bool,
    /// When the 234 was read, and how many replies came over TLS since.
    tls_started_at: Duration,
    tls_replies: u32,
    /// When the client connected (the login timer runs from about then).
    connected_at: Duration,
    /// PROT P is in force.
    pub prot_private: bool,
    /// Whether the last PROT P data connection resumed the control session (`None` for
    /// a plain one): a 522 is right only when it did not.
    pub data_resumed: Option<bool>,
}

impl Client {
    pub fn new(idx: usize, seed: u64, swarm: &Swarm, _cfg: &SessionConfig) -> Client {
        let mut rng = Rng::stream(seed, &format!("client{idx}"));
        let ops_left = rng.range(0, 30) as u32;
        Client {
            idx,
            model: Model::new(idx, swarm.sessions),
            v6: swarm.ipv6 && idx % 2 == 1,
            rng,
            inbuf: Vec::new(),
            multi: None,
            outstanding: VecDeque::new(),
            steps: VecDeque::new(),
            ops_left,
            logged_in: false,
            anon: false,
            user_ok: false,
            cwd: "/".into(),
            data_ready: false,
            rest: 0,
            ascii: false,
            rnfr: None,
            upload: Vec::new(),
            data_in: Vec::new(),
            abor_sent: false,
            abort_at: None,
            fin: false,
            reset: false,
            quit_sent: false,
            goodbye: false,
            server_closed: false,
            unknown_upload: false,
            unsettled: Default::default(),
            stats: Default::default(),
            tls_config: swarm.tls.then(|| super::tls::client_config(swarm.tls13)),
            tls13: swarm.tls13,
            ctl_tls: None,
            secured: false,
            tls_started_at: Duration::ZERO,
            tls_replies: 0,
            connected_at: Duration::ZERO,
            prot_private: false,
            data_resumed: None,
        }
    }

    pub fn on_connected(&mut self, cx: &mut ClientCx<'_>, admitted: bool) -> Result<(), String> {
        self.connected_at = cx.now;
        self.outstanding.push_back(Sent {
            kind: Kind::Greeting { admitted },
            prelim: false,
            at: cx.now,
        });
        let _ = cx;
        Ok(())
    }

    pub fn on_bytes(&mut self, cx: &mut ClientCx<'_>, bytes: &[u8]) -> Result<(), String> {
        if self.reset {
            return Ok(()); // a reset socket reads nothing
        }
        match &mut self.ctl_tls {
            Some(c) => {
                super::tls::feed(c, bytes, &mut self.inbuf);
                let out = super::tls::outgoing(c);
                if !out.is_empty() {
                    cx.out.push(ClientOut::Send(out));
                }
                if !self.secured && !c.is_handshaking() {
                    self.secured = true;
                    self.count("tls:secured");
                    cx.out.push(ClientOut::Wake(Duration::ZERO));
                }
            }
            None => self.inbuf.extend_from_slice(bytes),
        }
        while let Some(lf) = self.inbuf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.inbuf.drain(..=lf).collect();
            let body = line
                .strip_suffix(b"\r\n")
                .filter(|b| !b.contains(&b'\r'))
                .ok_or_else(|| format!("reply line not ended by a lone CR LF: {line:?}"))?;
            let text = String::from_utf8_lossy(body).into_owned();
            self.on_line(cx, &text)?;
        }
        Ok(())
    }

    fn on_line(&mut self, cx: &mut ClientCx<'_>, line: &str) -> Result<(), String> {
        if let Some((code, first)) = &self.multi {
            if line.len() >= 4 && line[..3] == code.to_string() && &line[3..4] == " " {
                let (code, first) = (*code, first.clone());
                self.multi = None;
                return self.on_reply(cx, code, &first);
            }
            return Ok(()); // a continuation line
        }
        let code = line
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| format!("reply line without a code: {line:?}"))?;
        match line.as_bytes().get(3) {
            Some(b' ') => self.on_reply(cx, code, &line[4..]),
            Some(b'-') => {
                self.multi = Some((code, line[4..].to_owned()));
                Ok(())
            }
            _ => Err(format!(
                "reply line without SP or '-' after the code: {line:?}"
            )),
        }
    }

    pub fn count(&mut self, key: &str) {
        *self.stats.entry(key.to_owned()).or_default() += 1;
    }

    fn on_reply(&mut self, cx: &mut ClientCx<'_>, code: u16, text: &str) -> Result<(), String> {
        self.count(&format!("reply:{code}"));
        if self.ctl_tls.is_some() {
            self.tls_replies += 1;
        }
        if code == 421 {
            // The server is closing; nothing outstanding will be answered.
            self.goodbye = true;
            self.note_abandoned();
            self.outstanding.clear();
            return Ok(());
        }
        if self.goodbye {
            return Err(format!("reply {code} {text:?} after 221/421"));
        }
        if code < 200 {
            let front = self.outstanding.front_mut();
            let Some(sent) = front.filter(|s| s.kind.is_transfer() && !s.prelim) else {
                return Err(format!("unexpected preliminary reply {code} {text:?}"));
            };
            sent.prelim = true;
            if let Kind::Store { abort: true, .. } | Kind::Retr { abort: true, .. } = sent.kind {
                let after = Duration::from_millis(self.rng.range(0, 300));
                self.abort_at = Some(cx.now + after);
                cx.out.push(ClientOut::Wake(after));
            }
            return Ok(());
        }
        let Some(sent) = self.outstanding.pop_front() else {
            return Err(format!("unsolicited reply {code} {text:?}"));
        };
        let what = format!("{:?}", sent.kind);
        self.expect(cx, sent, code, text)
            .map_err(|e| format!("{what} got {code} {text:?}: {e}"))?;
        if code == 221 {
            self.goodbye = true;
        }
        if self.outstanding.is_empty() && !self.unknown_upload {
            self.model.verify(cx.storage)?;
        }
        self.schedule(cx);
        Ok(())
    }

    fn note_abandoned(&mut self) {
        if self.outstanding.iter().any(|s| s.kind.mutates()) {
            self.unknown_upload = true;
        }
    }

    /// Asks for a wake-up after some think time (sometimes longer than the idle timeout).
    fn schedule(&mut self, cx: &mut ClientCx<'_>) {
        if !self.outstanding.is_empty() && !self.steps.front().is_some_and(|s| s.pipeline) {
            return;
        }
        let mut ms = self.rng.range(0, 1500);
        if cx.swarm.idlers && self.rng.chance(3) {
            ms += cx.cfg.timeouts.idle.as_millis() as u64 + 500;
        }
        cx.out.push(ClientOut::Wake(Duration::from_millis(ms)));
    }

    pub fn on_wake(&mut self, cx: &mut ClientCx<'_>) -> Result<(), String> {
        if self.fin || self.goodbye || self.server_closed {
            return Ok(());
        }
        if self.ctl_tls.is_some() && !self.secured {
            return Ok(()); // the handshake's end wakes the client
        }
        if let Some(at) = self.abort_at.filter(|at| *at <= cx.now) {
            self.abort_at = None;
            let _ = at;
            if self
                .outstanding
                .front()
                .is_some_and(|s| s.kind.is_transfer())
            {
                self.send_line(cx, b"ABOR\r\n".to_vec(), Kind::Abor);
                self.abor_sent = true;
            }
        }
        if !self.outstanding.is_empty() && !self.steps.front().is_some_and(|s| s.pipeline) {
            return Ok(());
        }
        if self.steps.is_empty() {
            self.plan_next(cx);
        }
        while let Some(step) = self.steps.pop_front() {
            match step.kind {
                Kind::Fin { reset } => {
                    self.note_abandoned();
                    self.fin = true;
                    self.reset = reset;
                    cx.out.push(ClientOut::Eof { reset });
                    return Ok(());
                }
                kind => {
                    if kind.is_transfer() {
                        self.data_in.clear();
                        self.abor_sent = false;
                        if let Kind::Store { data, .. } = &kind {
                            self.upload = data.0.clone();
                        }
                    }
                    if matches!(kind, Kind::Quit) {
                        self.quit_sent = true;
                    }
                    self.send_line(cx, step.line, kind);
                }
            }
            if !self.steps.front().is_some_and(|s| s.pipeline) {
                break;
            }
        }
        Ok(())
    }

    fn send_line(&mut self, cx: &mut ClientCx<'_>, line: Vec<u8>, kind: Kind) {
        self.outstanding.push_back(Sent {
            kind,
            prelim: false,
            at: cx.now,
        });
        match &mut self.ctl_tls {
            Some(c) => {
                c.writer()
                    .write_all(&line)
                    .expect("rustls buffers plaintext");
                cx.out.push(ClientOut::Send(super::tls::outgoing(c)));
            }
            None => cx.out.push(ClientOut::Send(line)),
        }
    }

    /// 234: the handshake starts with the ClientHello.
    /// `auth_sent`: when AUTH left the client (the server's handshake timer starts
    /// later, when it reads it).
    pub fn start_tls(&mut self, cx: &mut ClientCx<'_>, auth_sent: Duration) -> Result<(), String> {
        let config = self.tls_config.as_ref().ok_or("234 without a TLS client")?;
        let mut c = super::tls::connect(config);
        self.tls_started_at = auth_sent;
        cx.out.push(ClientOut::Send(super::tls::outgoing(&mut c)));
        self.ctl_tls = Some(c);
        Ok(())
    }

    /// A crash took the connection: the client starts over on a new one (the model,
    /// its random stream and its remaining operations carry on).
    pub fn restart(&mut self) {
        self.inbuf.clear();
        self.multi = None;
        self.outstanding.clear();
        self.steps.clear();
        self.logged_in = false;
        self.anon = false;
        self.user_ok = false;
        self.cwd = "/".into();
        self.data_ready = false;
        self.rest = 0;
        self.ascii = false;
        self.rnfr = None;
        self.upload.clear();
        self.data_in.clear();
        self.abor_sent = false;
        self.abort_at = None;
        self.fin = false;
        self.reset = false;
        self.quit_sent = false;
        self.goodbye = false;
        self.server_closed = false;
        self.unknown_upload = false;
        // A new connection starts in plaintext, from a new client program (its TLS
        // session cache would hold tickets of the session the crash ended, which a
        // data connection of the new one must not resume: 522).
        self.tls_config = self
            .tls_config
            .as_ref()
            .map(|_| super::tls::client_config(self.tls13));
        self.ctl_tls = None;
        self.secured = false;
        self.prot_private = false;
        self.tls_replies = 0;
        self.data_resumed = None;
    }

    /// The driver started a transfer for this client's session.
    pub fn transfer_started(&mut self, upload: bool) {
        if !upload {
            self.data_in.clear();
        }
    }

    pub fn on_server_closed(&mut self, cx: &mut ClientCx<'_>) -> Result<(), String> {
        self.server_closed = true;
        if self.reset {
            return Ok(());
        }
        if !self.inbuf.is_empty() || self.multi.is_some() {
            return Err(format!(
                "connection closed inside a reply: {:?}",
                self.inbuf
            ));
        }
        if !self.goodbye && !self.fin {
            if self.ctl_tls.is_some() && self.tls_replies == 0 {
                // Nothing came over TLS yet: the server may have been mid-handshake when a
                // timer (handshake, idle, login) or a shutdown closed the connection, and then it cannot
                // say a word. Each runs from before the AUTH was sent (or the connect).
                let t = &cx.cfg.timeouts;
                let after_auth = self.tls_started_at + t.tls_handshake.min(t.idle);
                let mut earliest = after_auth.min(self.connected_at + t.login);
                // The server stopping closes idle sessions at once.
                if let Some(at) = cx.swarm.shutdown_at {
                    earliest = earliest.min(at);
                }
                if cx.now < earliest {
                    return Err("closed during the handshake before any timer was due".into());
                }
                self.count("tls:handshake-timeout");
                self.note_abandoned();
                self.outstanding.clear();
                return Ok(());
            }
            return Err("server closed the connection without 221 or 421".into());
        }
        if self.quit_sent && !self.fin && !self.goodbye {
            return Err("QUIT got no 221".into());
        }
        if !self.fin && !self.outstanding.is_empty() && !self.goodbye {
            return Err(format!("commands never answered: {:?}", self.outstanding));
        }
        Ok(())
    }

    /// After every session ended: the own directory matches the model (unless an upload
    /// was cut off unseen, in which case the no-partial-file rule is checked instead).
    pub fn at_end(&mut self, storage: &MemStorage) -> Result<(), String> {
        if !self.server_closed {
            return Err("the client never saw its connection close".into());
        }
        if self.unknown_upload || self.outstanding.iter().any(|s| s.kind.mutates()) {
            return Ok(());
        }
        self.model.verify(storage)
    }
}
