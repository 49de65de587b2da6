//! FTPS with a real rustls client in memory: the control channel, and data connections
//! through `DataTls`, driven by a tiny in-memory "runtime" ([`run_tls_transfer`]).

mod harness;

use std::io::{Read, Write};
use std::sync::Arc;

use harness::{DataMode, Harness};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use wharf_core::tls::DataTlsError;
use wharf_core::{
    Action, ClientCertificates, ControlPolicy, DataPolicy, FileHandle, Input, Pump, TlsSettings,
    TransferOutcome,
};

/// A site's rustls configuration as the server builds it: stateless tickets, a session
/// cache, TLS 1.2 and 1.3.
fn certified() -> (rustls::ServerConfig, CertificateDer<'static>) {
    certified_with(true)
}

/// Without `tickets`, sessions are only remembered in the server's cache.
fn certified_with(tickets: bool) -> (rustls::ServerConfig, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["ftp.example.com".into()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    if tickets {
        config.ticketer = rustls::crypto::ring::Ticketer::new().unwrap();
    }
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    (config, der)
}

fn settings(control: ControlPolicy, data: DataPolicy) -> (TlsSettings, CertificateDer<'static>) {
    let (config, der) = certified();
    let mut tls = TlsSettings::new(config);
    tls.control = control;
    tls.data = data;
    (tls, der)
}

/// One client program: its control and data connections share this configuration, and
/// with it rustls' session store, so data connections resume the control session.
fn client_config(
    der: &CertificateDer<'static>,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A client session store that counts the TLS 1.3 tickets it is given.
#[derive(Debug)]
struct CountingStore {
    inner: rustls::client::ClientSessionMemoryCache,
    tickets: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn tickets(&self) -> usize {
        self.tickets.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl rustls::client::ClientSessionStore for CountingStore {
    fn set_kx_hint(&self, name: ServerName<'static>, group: rustls::NamedGroup) {
        self.inner.set_kx_hint(name, group)
    }
    fn kx_hint(&self, name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.inner.kx_hint(name)
    }
    fn set_tls12_session(
        &self,
        name: ServerName<'static>,
        v: rustls::client::Tls12ClientSessionValue,
    ) {
        self.inner.set_tls12_session(name, v)
    }
    fn tls12_session(
        &self,
        name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.inner.tls12_session(name)
    }
    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.inner.remove_tls12_session(name)
    }
    fn insert_tls13_ticket(
        &self,
        name: ServerName<'static>,
        v: rustls::client::Tls13ClientSessionValue,
    ) {
        self.tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.insert_tls13_ticket(name, v)
    }
    fn take_tls13_ticket(
        &self,
        name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.inner.take_tls13_ticket(name)
    }
}

fn connect(config: &Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let name = ServerName::try_from("ftp.example.com").unwrap();
    rustls::ClientConnection::new(config.clone(), name).unwrap()
}

fn client(der: &CertificateDer<'static>) -> rustls::ClientConnection {
    connect(&client_config(der, &rustls::version::TLS13))
}

/// Moves bytes both ways until neither side has anything to say; returns the plaintext
/// the client received.
fn pump(h: &mut Harness, c: &mut rustls::ClientConnection, seen: &mut usize) -> String {
    let mut plain = Vec::new();
    for _ in 0..50 {
        let mut progressed = false;
        while c.wants_write() {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            h.send_raw(&buf);
            progressed = true;
        }
        if h.wire.len() > *seen {
            let mut fresh = &h.wire[*seen..];
            *seen = h.wire.len();
            while !fresh.is_empty() {
                c.read_tls(&mut fresh).unwrap();
                c.process_new_packets().unwrap();
            }
            progressed = true;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match c.reader().read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => plain.extend_from_slice(&chunk[..n]),
                Err(_) => break,
            }
        }
        if !progressed {
            break;
        }
    }
    String::from_utf8(plain).unwrap()
}

fn tls_command(
    h: &mut Harness,
    c: &mut rustls::ClientConnection,
    seen: &mut usize,
    line: &str,
) -> String {
    c.writer()
        .write_all(format!("{line}\r\n").as_bytes())
        .unwrap();
    pump(h, c, seen)
}

/// AUTH TLS and a completed handshake: the client and how much of the wire it has read.
fn secured_with(
    h: &mut Harness,
    config: &Arc<rustls::ClientConfig>,
) -> (rustls::ClientConnection, usize) {
    h.expect("AUTH TLS", "234 ");
    let mut seen = h.wire.len();
    let mut c = connect(config);
    assert_eq!(pump(h, &mut c, &mut seen), "", "handshake only");
    assert!(!c.is_handshaking());
    (c, seen)
}

fn secured(h: &mut Harness, der: &CertificateDer<'static>) -> (rustls::ClientConnection, usize) {
    secured_with(h, &client_config(der, &rustls::version::TLS13))
}

fn site(tls: TlsSettings) -> Harness {
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    Harness::with_config(cfg)
}

/// A control session over TLS, logged in, `PBSZ 0` + `PROT P`, data actions answered by
/// the test.
struct Ftps {
    h: Harness,
    c: rustls::ClientConnection,
    seen: usize,
}

impl Ftps {
    fn login(mut h: Harness, config: &Arc<rustls::ClientConfig>) -> Ftps {
        h.mode = DataMode::Manual;
        let (c, seen) = secured_with(&mut h, config);
        let mut s = Ftps { h, c, seen };
        for (line, code) in [
            ("USER alice", "331 "),
            ("PASS secret", "230 "),
            ("PBSZ 0", "200 "),
            ("PROT P", "200 "),
        ] {
            s.expect(line, code);
        }
        s
    }

    #[track_caller]
    fn expect(&mut self, line: &str, prefix: &str) -> String {
        let got = tls_command(&mut self.h, &mut self.c, &mut self.seen, line);
        assert!(
            got.starts_with(prefix),
            "{line:?}: expected {prefix:?}, got {got:?}"
        );
        got
    }

    /// Replies the session produced since the client last read (decrypted).
    fn replies(&mut self) -> String {
        pump(&mut self.h, &mut self.c, &mut self.seen)
    }

    /// PASV, answered and accepted, then `cmd`: the transfer it started.
    fn transfer(&mut self, cmd: &str) -> (wharf_core::TransferId, Started) {
        tls_command(&mut self.h, &mut self.c, &mut self.seen, "PASV");
        let Some(&Action::ListenData { conn, .. }) = self.h.actions.last() else {
            panic!("no ListenData: {:?}", self.h.actions)
        };
        self.h.input(Input::DataListening { conn, port: 50000 });
        let peer = "192.0.2.7:40001".parse().unwrap();
        self.h.input(Input::DataAccepted { conn, peer });
        let r = tls_command(&mut self.h, &mut self.c, &mut self.seen, cmd);
        assert!(r.contains("227 ") && r.contains("150 "), "{cmd}: {r}");
        let (xfer, file, pump) = self.h.take_transfer();
        (xfer, Started { file, pump })
    }

    /// EPSV (or PASV), answered: its reply.
    fn passive(&mut self, cmd: &str) -> String {
        tls_command(&mut self.h, &mut self.c, &mut self.seen, cmd);
        let Some(&Action::ListenData { conn, .. }) = self.h.actions.last() else {
            panic!("no ListenData: {:?}", self.h.actions)
        };
        self.h.input(Input::DataListening { conn, port: 50000 });
        self.replies()
    }

    /// Reports a transfer's end; returns the replies.
    fn done(&mut self, xfer: wharf_core::TransferId, outcome: TransferOutcome) -> String {
        self.h.input(Input::TransferDone { xfer, outcome });
        self.replies()
    }
}

/// What a transfer's client side does.
#[derive(Clone, Copy)]
enum Peer<'a> {
    /// Receive a download (or listing).
    Download,
    /// Send these bytes, then close_notify when `close_notify`, then end the stream.
    Upload { body: &'a [u8], close_notify: bool },
}

/// A transfer the session started: its file and its pump, for the test to run.
struct Started {
    file: Option<FileHandle>,
    pump: Box<Pump>,
}

/// Runs a transfer the way a runtime does, in memory: its pump on the server's side, a
/// rustls client `c` on the other end.
fn run_tls_transfer(
    h: &mut Harness,
    mut t: Started,
    c: &mut rustls::ClientConnection,
    peer: Peer<'_>,
) -> harness::Seen {
    let peer = match peer {
        Peer::Download => harness::Peer {
            upload: b"",
            close_notify: false,
        },
        Peer::Upload { body, close_notify } => harness::Peer {
            upload: body,
            close_notify,
        },
    };
    h.run_pump(&mut t.pump, t.file, harness::Client::Tls(c), peer)
}

#[test]
fn explicit_ftps_login_and_commands() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut h = site(tls);
    let feat = h.send("FEAT");
    assert!(
        feat.contains("\r\n AUTH TLS\r\n")
            && feat.contains("\r\n CCC\r\n")
            && feat.contains("\r\n PBSZ\r\n")
            && feat.contains("\r\n PROT\r\n"),
        "{feat}"
    );
    h.expect("PBSZ 0", "503 ");
    h.expect("PROT P", "503 ");
    let (mut c, mut seen) = secured(&mut h, &der);
    assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PASS secret").starts_with("230 "));
    assert!(
        tls_command(&mut h, &mut c, &mut seen, "PROT P").starts_with("503 "),
        "PBSZ first"
    );
    assert!(tls_command(&mut h, &mut c, &mut seen, "PBSZ 0").starts_with("200 PBSZ=0"));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT S").starts_with("536 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT X").starts_with("504 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT P").starts_with("200 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "AUTH TLS").starts_with("503 "));
    let pwd = tls_command(&mut h, &mut c, &mut seen, "PWD");
    assert_eq!(pwd, "257 \"/\" is the current directory.\r\n");
    let wire = String::from_utf8_lossy(&h.wire[h.wire.len() - 40..]).into_owned();
    assert!(
        !wire.contains("current directory"),
        "replies are encrypted on the wire"
    );
    assert!(tls_command(&mut h, &mut c, &mut seen, "QUIT").starts_with("221 "));
    assert!(h.session.is_closed());
}

#[test]
fn feat_lists_no_tls_without_a_certificate() {
    let mut h = Harness::new();
    let feat = h.send("FEAT");
    for word in ["AUTH", "PBSZ", "PROT", "CCC"] {
        assert!(!feat.contains(word), "{feat}");
    }
    h.expect("AUTH TLS", "502 ");
}

#[test]
fn plaintext_pipelined_after_auth_is_never_executed() {
    let (tls, _) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut h = site(tls);
    let r = h.send_raw(b"AUTH TLS\r\nUSER alice\r\nPASS secret\r\n");
    assert!(r.starts_with("234 "), "{r}");
    assert!(!r.contains("331") && !r.contains("230"), "{r}");
    assert!(h.session.is_closed());
}

#[test]
fn a_client_hello_right_after_234_is_tls() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut h = site(tls);
    h.expect("AUTH SSL", "234 ");
    let mut c = client(&der);
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    // The ClientHello arrives one byte at a time: still TLS, never a command.
    let mut seen = h.wire.len();
    for b in hello {
        assert_eq!(h.send_raw(&[b]).find("500"), None);
    }
    pump(&mut h, &mut c, &mut seen);
    assert!(!c.is_handshaking());
    assert!(tls_command(&mut h, &mut c, &mut seen, "NOOP").starts_with("200 "));
}

#[test]
fn implicit_ftps_starts_with_tls_and_garbage_gets_no_banner() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let mut h = Harness::implicit(cfg.clone());
    assert!(
        h.wire.is_empty(),
        "no plaintext banner on an implicit binding"
    );
    let mut c = client(&der);
    let mut seen = 0;
    let banner = pump(&mut h, &mut c, &mut seen);
    assert!(banner.starts_with("220 "), "{banner}");
    let feat = tls_command(&mut h, &mut c, &mut seen, "FEAT");
    assert!(
        !feat.contains("AUTH TLS") && feat.contains(" PROT"),
        "{feat}"
    );

    let mut h = Harness::implicit(cfg);
    h.send_raw(b"USER anonymous\r\n");
    assert!(
        h.session.is_closed(),
        "plaintext on an implicit binding closes it"
    );
    assert!(!h.replies().contains("220"), "and never earns a banner");
}

/// Behind a balancer, an implicit binding's connection starts with the PROXY header,
/// then TLS; the ClientHello may come in the header's own segment.
#[test]
fn implicit_ftps_after_a_proxy_header() {
    use wharf_core::policy::limits::{ServerPolicy, ServerRules};
    use wharf_core::{Binding, Server, Sites};
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let binding = Binding {
        ip: local.ip(),
        port: local.port(),
        host: None,
        site: 0,
        implicit_tls: true,
    };
    let sites = Sites::new(vec![Arc::new(cfg)], vec![binding]).unwrap();
    let rules = ServerRules {
        proxy: wharf_core::proxy::ProxyRules {
            from: vec![wharf_core::IpNet::parse("10.0.0.5").unwrap()],
            ..Default::default()
        },
        ..ServerRules::default()
    };
    let policy = Arc::new(ServerPolicy::new(rules));
    let mut server = Server::with_sites(Arc::new(sites), 0, 1, 10).with_policy(policy);
    let mut h = Harness::accept(&mut server, "10.0.0.5:3000", harness::origin()).unwrap();
    assert!(h.wire.is_empty());
    let client_addr = "198.51.100.20:51000".parse().unwrap();
    let mut first = wharf_core::proxy::encode_v1(client_addr, local);
    let mut c = client(&der);
    c.write_tls(&mut first).unwrap();
    h.send_raw(&first);
    let mut seen = 0;
    let banner = pump(&mut h, &mut c, &mut seen);
    assert!(banner.starts_with("220 "), "{banner:?}");
    let user = tls_command(&mut h, &mut c, &mut seen, "USER alice");
    assert!(user.starts_with("331 "), "{user}");
    // A bare (plaintext) command after the header is not TLS: closed, no banner.
    let mut h = Harness::accept(&mut server, "10.0.0.5:3001", harness::origin()).unwrap();
    let mut bytes = wharf_core::proxy::encode_v1(client_addr, local);
    bytes.extend_from_slice(b"USER anonymous\r\n");
    h.send_raw(&bytes);
    assert!(h.session.is_closed() && !h.replies().contains("220"));
}

/// An implicit binding never answers in plaintext: not for a site without TLS, and not
/// with "too many connections".
#[test]
fn implicit_bindings_never_speak_plaintext() {
    use wharf_core::{Binding, Server, Sites};
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let peer = harness::PEER.parse().unwrap();
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let implicit = |config: wharf_core::SessionConfig| {
        let binding = Binding {
            ip: local.ip(),
            port: local.port(),
            host: None,
            site: 0,
            implicit_tls: true,
        };
        Sites::new(vec![Arc::new(config)], vec![binding]).unwrap()
    };
    let mut server = Server::with_sites(Arc::new(implicit(harness::config())), 0, 1, 10);
    let s = server.accept(now, peer, local).unwrap();
    assert!(
        s.is_closed() && s.poll_transmit().is_none(),
        "closed, no banner"
    );

    let (tls, _) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let mut server = Server::with_sites(Arc::new(implicit(cfg)), 0, 1, 1);
    let _first = server.accept(now, peer, local).unwrap();
    let refused = server.accept(now, peer, local).err().unwrap();
    assert!(
        refused.reply.is_empty(),
        "no plaintext 421 on an implicit port"
    );
}

#[test]
fn control_policy_require() {
    let (tls, der) = settings(ControlPolicy::Require, DataPolicy::Allow);
    let mut h = site(tls);
    h.expect("USER alice", "534 Policy requires TLS");
    let feat = h.expect("FEAT", "211-");
    assert!(
        !feat.contains("CCC"),
        "no CCC under control = require: {feat}"
    );
    let (mut c, mut seen) = secured(&mut h, &der);
    assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PASS secret").starts_with("230 "));
    let r = tls_command(&mut h, &mut c, &mut seen, "CCC");
    assert!(r.starts_with("534 Policy requires TLS"), "{r}");
    assert!(tls_command(&mut h, &mut c, &mut seen, "PWD").starts_with("257 "));
}

#[test]
fn control_policy_credentials_only_and_anonymous_exemption() {
    let (mut tls, _) = settings(ControlPolicy::RequireCredentialsOnly, DataPolicy::Allow);
    let mut h = site(tls.clone());
    h.expect(
        "USER alice",
        "534 Policy requires TLS (AUTH TLS) for credentials.",
    );
    h.expect("USER anonymous", "534 ");
    tls.exempt_anonymous = true;
    let mut h = site(tls);
    h.expect("USER anonymous", "331 ");
    h.expect("PASS x@y", "230 ");
    h.expect("PWD", "257 ");
}

#[test]
fn data_policy_at_prot_time() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Require);
    let mut h = site(tls);
    let (mut c, mut seen) = secured(&mut h, &der);
    tls_command(&mut h, &mut c, &mut seen, "PBSZ 0");
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT C").starts_with("534 "));
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Deny);
    let mut h = site(tls);
    let (mut c, mut seen) = secured(&mut h, &der);
    tls_command(&mut h, &mut c, &mut seen, "PBSZ 0");
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT P").starts_with("534 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT C").starts_with("200 "));
}

/// PROT P both ways through `DataTls`, resuming the control session: TLS 1.3 and 1.2,
/// with stateless tickets and with the session cache only (TLS 1.2 session IDs, stateful
/// TLS 1.3 tickets).
#[test]
fn prot_p_transfers_both_ways_through_data_tls() {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    for (version, tickets) in versions.into_iter().flat_map(|v| [(v, true), (v, false)]) {
        let (config, der) = certified_with(tickets);
        let tls = TlsSettings::new(config);
        let client = client_config(&der, version);
        let mut s = Ftps::login(site(tls), &client);
        let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        s.h.storage.add_file("/f.bin", &body);

        let (xfer, spec) = s.transfer("RETR f.bin");
        assert!(spec.pump.tls().is_some_and(|t| t.requires_resumption()));
        let mut data = connect(&client);
        let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
        assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        assert!(
            seen.received == body,
            "{version:?}/{tickets}: the body arrives intact"
        );
        assert!(seen.close_notify, "a download ends with close_notify");
        let r = s.done(xfer, seen.outcome);
        assert_eq!(r, "226 Transfer complete.\r\n");

        let (xfer, spec) = s.transfer("STOR up.bin");
        let mut data = connect(&client);
        let upload = Peer::Upload {
            body: &body[..77_777],
            close_notify: true,
        };
        let seen = run_tls_transfer(&mut s.h, spec, &mut data, upload);
        assert_eq!(seen.outcome, TransferOutcome::Complete { bytes: 77_777 });
        let r = s.done(xfer, seen.outcome);
        assert_eq!(r, "226 Transfer complete.\r\n");
        assert_eq!(
            s.h.storage.read_file("/up.bin").as_deref(),
            Some(&body[..77_777])
        );

        let (xfer, spec) = s.transfer("NLST");
        let mut data = connect(&client);
        let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
        assert_eq!(seen.received, b"f.bin\r\nup.bin\r\n");
        assert!(s.done(xfer, seen.outcome).starts_with("226 "));
    }
}

/// rustls clients use each TLS 1.3 ticket once. Data connections send none (a ticket in
/// flight when a client closes an upload loses it); the control connection sends
/// `CONTROL_TLS13_TICKETS` at the handshake and one fresh ticket with every reply that
/// opens a data channel under `PROT P`, so a rustls client runs any number of transfers
/// on one login, each resuming.
#[test]
fn a_fresh_ticket_for_every_data_connection() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let store = Arc::new(CountingStore {
        inner: rustls::client::ClientSessionMemoryCache::new(64),
        tickets: 0.into(),
    });
    let mut config = (*client_config(&der, &rustls::version::TLS13)).clone();
    config.resumption = rustls::client::Resumption::store(store.clone());
    let client = Arc::new(config);
    let mut s = Ftps::login(site(tls), &client);
    assert_eq!(store.tickets(), wharf_core::tls::CONTROL_TLS13_TICKETS);
    s.h.storage.add_file("/f", b"body");
    let transfers = 50;
    for i in 0..transfers {
        let (xfer, spec) = s.transfer(if i % 2 == 0 { "RETR f" } else { "STOR g" });
        let mut data = connect(&client);
        let peer = match i % 2 {
            0 => Peer::Download,
            _ => Peer::Upload {
                body: b"up",
                close_notify: true,
            },
        };
        let seen = run_tls_transfer(&mut s.h, spec, &mut data, peer);
        assert!(
            s.done(xfer, seen.outcome).starts_with("226 "),
            "transfer {i}"
        );
        assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    }
    let after = wharf_core::tls::CONTROL_TLS13_TICKETS + transfers;
    assert_eq!(
        store.tickets(),
        after,
        "one per PASV, none from data connections"
    );
    // EPSV, PORT and EPRT bring one too; nothing does under PROT C.
    assert!(s.passive("EPSV").starts_with("229 "));
    s.expect("PORT 192,0,2,7,200,10", "200 ");
    s.expect("EPRT |1|192.0.2.7|50000|", "200 ");
    assert_eq!(store.tickets(), after + 3);
    s.expect("PROT C", "200 ");
    assert!(s.passive("EPSV").starts_with("229 "));
    s.expect("PORT 192,0,2,7,200,10", "200 ");
    assert_eq!(store.tickets(), after + 3);
}

#[test]
fn implicit_binding_defaults_to_prot_p() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let mut h = Harness::implicit(cfg);
    h.mode = DataMode::Manual;
    h.storage.add_file("/f", b"implicit");
    let config = client_config(&der, &rustls::version::TLS13);
    let c = connect(&config);
    let mut s = Ftps { h, c, seen: 0 };
    assert!(s.replies().starts_with("220 "));
    s.expect("USER alice", "331 ");
    s.expect("PASS secret", "230 ");
    let (xfer, spec) = s.transfer("RETR f");
    assert!(
        spec.pump.tls().is_some(),
        "implicit FTPS protects data connections by default"
    );
    let mut data = connect(&config);
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
    assert_eq!(seen.received, b"implicit");
    assert!(s.done(xfer, seen.outcome).starts_with("226 "));
}

/// Session A's passive port is taken by session B, on the same address, with B's own TLS
/// session (resumed, then fresh): both are refused with a 522 that names the setting,
/// nothing of the file reaches B, and A's retry succeeds.
#[test]
fn a_data_connection_from_another_tls_session_is_refused() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        thief_is_refused(version);
    }
}

fn thief_is_refused(version: &'static rustls::SupportedProtocolVersion) {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let victim_client = client_config(&der, version);
    let thief_client = client_config(&der, version);
    let mut a = Ftps::login(Harness::nth(cfg.clone(), 1), &victim_client);
    // The thief has a TLS session of its own with the same server.
    let b = Ftps::login(Harness::nth(cfg, 2), &thief_client);
    a.h.storage.add_file("/secret", b"the victim's file");

    for thief in [
        connect(&thief_client),
        connect(&client_config(&der, version)),
    ] {
        let mut thief = thief;
        let (xfer, spec) = a.transfer("RETR secret");
        let seen = run_tls_transfer(&mut a.h, spec, &mut thief, Peer::Download);
        assert_eq!(
            seen.outcome,
            TransferOutcome::Tls {
                bytes: 0,
                error: DataTlsError::NotResumed
            }
        );
        assert!(seen.received.is_empty(), "nothing reaches the thief");
        let r = a.done(xfer, seen.outcome);
        assert!(
            r.starts_with("522 ") && r.contains("require_tls_session_reuse"),
            "{r}"
        );
    }
    drop(b);

    let (xfer, spec) = a.transfer("RETR secret");
    let mut data = connect(&victim_client);
    let seen = run_tls_transfer(&mut a.h, spec, &mut data, Peer::Download);
    assert_eq!(seen.received, b"the victim's file");
    assert!(a.done(xfer, seen.outcome).starts_with("226 "));
}

#[test]
fn without_required_reuse_a_fresh_handshake_is_accepted() {
    let (mut tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    tls.require_session_reuse = false;
    let mut s = Ftps::login(site(tls), &client_config(&der, &rustls::version::TLS13));
    s.h.storage.add_file("/f", b"no reuse needed");
    let (xfer, spec) = s.transfer("RETR f");
    assert!(spec.pump.tls().is_some_and(|t| !t.requires_resumption()));
    // A client that cannot resume (a fresh configuration, as Python's ftplib does).
    let mut data = client(&der);
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
    assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Full));
    assert_eq!(seen.received, b"no reuse needed");
    assert!(s.done(xfer, seen.outcome).starts_with("226 "));
}

#[test]
fn an_upload_without_close_notify_is_truncated() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let client = client_config(&der, &rustls::version::TLS13);
    let mut s = Ftps::login(site(tls), &client);
    let (xfer, spec) = s.transfer("STOR cut.bin");
    let mut data = connect(&client);
    let upload = Peer::Upload {
        body: b"only part of it",
        close_notify: false,
    };
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, upload);
    assert_eq!(
        seen.outcome,
        TransferOutcome::Tls {
            bytes: 15,
            error: DataTlsError::Truncated
        }
    );
    let r = s.done(xfer, seen.outcome);
    assert!(r.starts_with("426 ") && r.contains("close_notify"), "{r}");
    assert!(
        !s.h.storage.exists("/cut.bin"),
        "the partial upload is discarded"
    );

    // Relaxed: the bare end of the stream completes it.
    let (mut tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    tls.strict_close_notify = false;
    let client = client_config(&der, &rustls::version::TLS13);
    let mut s = Ftps::login(site(tls), &client);
    let (xfer, spec) = s.transfer("STOR cut.bin");
    let mut data = connect(&client);
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, upload);
    assert_eq!(seen.outcome, TransferOutcome::Complete { bytes: 15 });
    assert!(s.done(xfer, seen.outcome).starts_with("226 "));
    assert_eq!(
        s.h.storage.read_file("/cut.bin").as_deref(),
        Some(&b"only part of it"[..])
    );
}

#[test]
fn a_data_handshake_failure_is_a_522() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut s = Ftps::login(site(tls), &client_config(&der, &rustls::version::TLS13));
    s.h.storage.add_file("/f", b"x");
    let (xfer, mut spec) = s.transfer("RETR f");
    // Not TLS at all.
    let peer = harness::Peer {
        upload: b"GET / HTTP/1.1\r\n\r\n",
        close_notify: false,
    };
    let seen =
        s.h.run_pump(&mut spec.pump, spec.file, harness::Client::Plain, peer);
    assert!(
        matches!(
            &seen.outcome,
            TransferOutcome::Tls {
                bytes: 0,
                error: DataTlsError::Handshake(_)
            }
        ),
        "{:?}",
        seen.outcome
    );
    assert!(
        seen.received.is_empty() || !seen.fin,
        "no clean end for a failed handshake"
    );
    let r = s.done(xfer, seen.outcome);
    assert!(
        r.starts_with("522 Data connection TLS handshake failed"),
        "{r}"
    );
    s.expect("NOOP", "200 ");
}

/// CCC: 200 over TLS; then the client's close_notify is answered with the server's
/// (lftp), or the server sends its own after a second (curl waits for it), or the
/// client goes straight to plaintext. Plaintext right behind a close_notify is a command.
#[test]
fn ccc_returns_the_control_channel_to_plaintext() {
    for closure in ["client first", "server after a second", "no close_notify"] {
        let (tls, der) = settings(ControlPolicy::RequireCredentialsOnly, DataPolicy::Allow);
        let mut s = Ftps::login(site(tls), &client_config(&der, &rustls::version::TLS13));
        let r = s.expect("CCC", "200 ");
        assert!(!r.contains("\r\n2"), "{r}");
        assert!(
            s.c.reader().read(&mut [0u8; 8]).is_err(),
            "{closure}: no close_notify from the server yet"
        );
        let mut bytes = Vec::new();
        match closure {
            "client first" => {
                s.c.send_close_notify();
                s.c.write_tls(&mut bytes).unwrap();
            }
            "server after a second" => {
                s.h.advance(std::time::Duration::from_millis(999));
                assert_eq!(s.replies(), "");
                s.h.advance(std::time::Duration::from_millis(1));
                s.replies();
                assert!(
                    matches!(s.c.reader().read(&mut [0u8; 8]), Ok(0)),
                    "close_notify"
                );
            }
            _ => {}
        }
        // Pipelined in the same segment as the close_notify: plaintext from here on.
        bytes.extend_from_slice(b"PWD\r\n");
        let start = s.h.wire.len();
        let r = s.h.send_raw(&bytes);
        let pwd = "257 \"/\" is the current directory.\r\n";
        assert!(r.ends_with(pwd), "{closure}: {r:?}");
        if closure == "client first" {
            // The server's close_notify answers the client's, ahead of the reply.
            let mut answer = &s.h.wire[start..s.h.wire.len() - pwd.len()];
            assert!(!answer.is_empty(), "the server answers the close_notify");
            while !answer.is_empty() {
                s.c.read_tls(&mut answer).unwrap();
            }
            s.c.process_new_packets().unwrap();
            assert!(
                matches!(s.c.reader().read(&mut [0u8; 8]), Ok(0)),
                "close_notify"
            );
        } else {
            assert_eq!(r, pwd, "{closure}");
        }
        assert_eq!(s.h.send("NOOP"), "200 NOOP ok.\r\n");
        // Credentials must still be encrypted, and TLS cannot come back.
        s.h.expect("USER alice", "534 ");
        s.h.expect("AUTH TLS", "503 ");
        // Data connections keep PROT P.
        s.h.expect("PBSZ 0", "200 ");
        assert_eq!(
            s.h.advance(std::time::Duration::from_secs(5)),
            "",
            "no stray close_notify"
        );
    }
}

#[test]
fn ccc_can_be_disallowed() {
    let (mut tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    tls.allow_ccc = false;
    let mut h = site(tls);
    assert!(!h.send("FEAT").contains("CCC"));
    h.expect("CCC", "533 ");
    let (mut c, mut seen) = secured(&mut h, &der);
    let r = tls_command(&mut h, &mut c, &mut seen, "CCC");
    assert!(r.starts_with("534 ") && r.contains("allow_ccc"), "{r}");
    assert!(tls_command(&mut h, &mut c, &mut seen, "NOOP").starts_with("200 "));
}

/// Two sites sharing one address and one certificate; the client's SNI name
/// (`ftp.example.com`) is bound to site "two".
fn sni_sites(implicit: bool, blank_host: bool) -> (Harness, CertificateDer<'static>) {
    use wharf_core::{Binding, Server, Sites};
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mk = |name: &str| {
        let mut c = harness::config();
        c.site_name = name.into();
        c.tls = Some(tls.clone());
        Arc::new(c)
    };
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let bind = |site: usize, host: Option<&str>| Binding {
        ip: local.ip(),
        port: local.port(),
        host: host.map(str::to_owned),
        site,
        implicit_tls: implicit,
    };
    let first = if blank_host {
        bind(0, None)
    } else {
        bind(0, Some("other.example.com"))
    };
    let sites = Sites::new(
        vec![mk("one"), mk("two")],
        vec![first, bind(1, Some("FTP.example.com"))],
    )
    .unwrap();
    let users = wharf_core::memfs::MemUsers::new().with("alice", "secret", &[]);
    let server = Server::with_sites(Arc::new(sites), 0, 1, 10);
    (Harness::build(server, harness::LOCAL, users), der)
}

#[test]
fn the_sni_name_chooses_the_site() {
    // Explicit FTPS: the default site answers until the handshake names another.
    let (mut h, der) = sni_sites(false, true);
    let (mut c, mut seen) = secured(&mut h, &der);
    assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PASS secret").starts_with("230 "));
    let stat = tls_command(&mut h, &mut c, &mut seen, "STAT");
    assert!(stat.starts_with("211-two FTP server status:"), "{stat}");

    // Implicit FTPS with no blank-host site: SNI is enough to log in without HOST.
    let (mut h, der) = sni_sites(true, false);
    let mut c = client(&der);
    let mut seen = 0;
    let banner = pump(&mut h, &mut c, &mut seen);
    assert!(
        banner.starts_with("220 ") && banner.contains("HOST"),
        "{banner}"
    );
    assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PASS secret").starts_with("230 "));
    let stat = tls_command(&mut h, &mut c, &mut seen, "STAT");
    assert!(stat.starts_with("211-two FTP server status:"), "{stat}");
}

#[test]
fn a_site_chosen_by_sni_counts_its_connection_then() {
    use wharf_core::{Binding, Server, Sites};
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mk = |name: &str, max: u32| {
        let mut c = harness::config();
        c.site_name = name.into();
        c.tls = Some(tls.clone());
        c.limits.max_connections = max;
        c.messages.max_clients = Some(format!("{name} is full."));
        Arc::new(c)
    };
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let bind = |site: usize, host: &str| Binding {
        ip: local.ip(),
        port: local.port(),
        host: Some(host.into()),
        site,
        implicit_tls: true,
    };
    let sites = Sites::new(
        vec![mk("one", 0), mk("two", 1)],
        vec![bind(0, "other.example.com"), bind(1, "ftp.example.com")],
    )
    .unwrap();
    let mut server = Server::with_sites(Arc::new(sites), 0, 1, 10);
    let t0 = harness::origin();
    let mut first = Harness::accept(&mut server, "192.0.2.7:1", t0).unwrap();
    let mut c = client(&der);
    let mut seen = 0;
    assert!(pump(&mut first, &mut c, &mut seen).starts_with("220 "));
    assert_eq!(
        server.policy().connections_to("two"),
        1,
        "the SNI name chose two"
    );
    // The second handshake names the full site: its message, and the session closes.
    let mut second = Harness::accept(&mut server, "192.0.2.7:2", t0).unwrap();
    let mut c2 = client(&der);
    let mut seen2 = 0;
    let got = pump(&mut second, &mut c2, &mut seen2);
    // The greeting was on its way before the handshake named the site.
    assert!(
        got.starts_with("220 ") && got.ends_with("\r\n421 two is full.\r\n"),
        "{got}"
    );
    assert!(second.session.is_closed());
    drop(second);
    assert_eq!(server.policy().connections_to("two"), 1);
    drop(first);
    assert_eq!(server.policy().connections_to("two"), 0);
}

/// Client certificates: a CA, a client certificate it signed, a server certificate for
/// `ftp.example.com` and `192.0.2.1` (so a client can connect by address, without SNI),
/// and one ticketer and session cache for every site's configuration, as the server
/// shares them.
struct Pki {
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
    client_cert: CertificateDer<'static>,
    client_key: PrivateKeyDer<'static>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Pki {
    fn new() -> Pki {
        let server = rcgen::generate_simple_self_signed(vec![
            "ftp.example.com".to_string(),
            "192.0.2.1".to_string(),
        ])
        .unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = params.signed_by(&key, &issuer).unwrap();
        Pki {
            server_cert: CertificateDer::from(server.cert.der().to_vec()),
            server_key: PrivateKeyDer::try_from(server.signing_key.serialize_der()).unwrap(),
            ca: CertificateDer::from(ca.der().to_vec()),
            client_cert: CertificateDer::from(client.der().to_vec()),
            client_key: PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            ticketer: rustls::crypto::ring::Ticketer::new().unwrap(),
            sessions: rustls::server::ServerSessionMemoryCache::new(256),
        }
    }

    /// A site's settings: certificates from the CA as `mode` says.
    fn site(&self, mode: ClientCertificates) -> TlsSettings {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match mode {
            ClientCertificates::Ignore => builder.with_no_client_auth(),
            _ => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(self.ca.clone()).unwrap();
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                let v = match mode {
                    ClientCertificates::Allow => v.allow_unauthenticated(),
                    _ => v,
                };
                builder.with_client_cert_verifier(v.build().unwrap())
            }
        };
        let mut config = builder
            .with_single_cert(vec![self.server_cert.clone()], self.server_key.clone_key())
            .unwrap();
        config.ticketer = self.ticketer.clone();
        config.session_storage = self.sessions.clone();
        TlsSettings::with_client_certificates(config, mode)
    }

    /// A client program (one session store for its connections), with the client
    /// certificate when `with_cert`.
    fn client(
        &self,
        with_cert: bool,
        version: &'static rustls::SupportedProtocolVersion,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.server_cert.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots);
        let config = match with_cert {
            true => builder
                .with_client_auth_cert(vec![self.client_cert.clone()], self.client_key.clone_key())
                .unwrap(),
            false => builder.with_no_client_auth(),
        };
        Arc::new(config)
    }
}

/// A client connection to the server's address: no SNI name.
fn connect_by_address(config: &Arc<rustls::ClientConfig>) -> rustls::ClientConnection {
    let name = ServerName::try_from("192.0.2.1").unwrap();
    rustls::ClientConnection::new(config.clone(), name).unwrap()
}

/// Pumps a handshake that may fail: whether the client ended up with a working,
/// handshaken connection (its first reply read) and the session still open.
fn handshake_survives(h: &mut Harness, c: &mut rustls::ClientConnection, seen: &mut usize) -> bool {
    for _ in 0..20 {
        while c.wants_write() {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            h.send_raw(&buf);
        }
        let mut fresh = &h.wire[*seen..];
        *seen = h.wire.len();
        while !fresh.is_empty() {
            if c.read_tls(&mut fresh).is_err() || c.process_new_packets().is_err() {
                return false;
            }
        }
        if !c.is_handshaking() && !c.wants_write() {
            // TLS 1.3: the server judges the client's certificate after the client
            // thinks the handshake is done; a command shows whether it was accepted.
            c.writer().write_all(b"NOOP\r\n").unwrap();
            while c.wants_write() {
                let mut buf = Vec::new();
                c.write_tls(&mut buf).unwrap();
                h.send_raw(&buf);
            }
            let mut fresh = &h.wire[*seen..];
            *seen = h.wire.len();
            while !fresh.is_empty() {
                if c.read_tls(&mut fresh).is_err() || c.process_new_packets().is_err() {
                    return false;
                }
            }
            let mut reply = String::new();
            let _ = c.reader().read_to_string(&mut reply);
            // (After an implicit binding's greeting.)
            return reply.lines().any(|l| l.starts_with("200 "));
        }
    }
    false
}

/// The SNI name chooses the site before the handshake, and that site's configuration
/// answers it: site "two" (bound to ftp.example.com) requires a client certificate,
/// the address's first site does not ask for one.
fn client_cert_sites(pki: &Pki, implicit: bool) -> Harness {
    use wharf_core::{Binding, Server, Sites};
    let mk = |name: &str, mode| {
        let mut c = harness::config();
        c.site_name = name.into();
        c.tls = Some(pki.site(mode));
        Arc::new(c)
    };
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let bind = |site: usize, host: Option<&str>| Binding {
        ip: local.ip(),
        port: local.port(),
        host: host.map(str::to_owned),
        site,
        implicit_tls: implicit,
    };
    let sites = Sites::new(
        vec![
            mk("one", ClientCertificates::Ignore),
            mk("two", ClientCertificates::Require),
        ],
        vec![bind(0, None), bind(1, Some("ftp.example.com"))],
    )
    .unwrap();
    let users = wharf_core::memfs::MemUsers::new().with("alice", "secret", &[]);
    let server = Server::with_sites(Arc::new(sites), 0, 1, 10);
    Harness::build(server, harness::LOCAL, users)
}

#[test]
fn the_site_sni_chooses_asks_for_its_client_certificate() {
    let pki = Pki::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        for implicit in [false, true] {
            let what = format!("{version:?}, implicit {implicit}");
            // With the certificate: site two, logged in.
            let mut h = client_cert_sites(&pki, implicit);
            if !implicit {
                h.expect("AUTH TLS", "234 ");
            }
            let mut seen = h.wire.len();
            let mut c = connect(&pki.client(true, version));
            assert!(handshake_survives(&mut h, &mut c, &mut seen), "{what}");
            assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
            assert!(tls_command(&mut h, &mut c, &mut seen, "PASS secret").starts_with("230 "));
            let stat = tls_command(&mut h, &mut c, &mut seen, "STAT");
            assert!(
                stat.starts_with("211-two FTP server status:"),
                "{what}: {stat}"
            );
            // Without: the handshake fails, the session ends.
            let mut h = client_cert_sites(&pki, implicit);
            if !implicit {
                h.expect("AUTH TLS", "234 ");
            }
            let mut seen = h.wire.len();
            let mut c = connect(&pki.client(false, version));
            assert!(!handshake_survives(&mut h, &mut c, &mut seen), "{what}");
            assert!(h.session.is_closed(), "{what}");
            // By address (no SNI), the first site answers and asks for nothing.
            let mut h = client_cert_sites(&pki, implicit);
            if !implicit {
                h.expect("AUTH TLS", "234 ");
            }
            let mut seen = h.wire.len();
            let mut c = connect_by_address(&pki.client(false, version));
            assert!(handshake_survives(&mut h, &mut c, &mut seen), "{what}");
            assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
        }
    }
}

#[test]
fn a_site_that_requires_certificates_refuses_a_handshake_made_for_another() {
    let pki = Pki::new();
    let client = pki.client(true, &rustls::version::TLS13);
    // TLS by address: the first site's handshake, which asked for no certificate.
    let mut h = client_cert_sites(&pki, false);
    h.expect("AUTH TLS", "234 ");
    let mut seen = h.wire.len();
    let mut c = connect_by_address(&client);
    assert!(handshake_survives(&mut h, &mut c, &mut seen));
    let r = tls_command(&mut h, &mut c, &mut seen, "USER ftp.example.com|alice");
    assert!(
        r.starts_with("530 ") && r.contains("another site") && r.contains("HOST before AUTH TLS"),
        "{r}"
    );
    // HOST before AUTH TLS: the site's own handshake, with the certificate.
    let mut h = client_cert_sites(&pki, false);
    h.expect("HOST ftp.example.com", "220 ");
    h.expect("AUTH TLS", "234 ");
    let mut seen = h.wire.len();
    let mut c = connect_by_address(&client);
    assert!(handshake_survives(&mut h, &mut c, &mut seen));
    assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PASS secret").starts_with("230 "));
    // Plaintext: refused at USER, and at PASS should TLS have changed since.
    let mut h = client_cert_sites(&pki, false);
    let r = h.send("USER ftp.example.com|alice");
    assert!(r.starts_with("530 ") && r.contains("AUTH TLS first"), "{r}");
}

#[test]
fn control_connections_of_client_certificate_sites_never_resume() {
    let pki = Pki::new();
    for (mode, resumes) in [
        (ClientCertificates::Ignore, true),
        (ClientCertificates::Allow, false),
        (ClientCertificates::Require, false),
    ] {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client = pki.client(true, version);
            let mut kinds = Vec::new();
            for _ in 0..2 {
                let s = Ftps::login(site(pki.site(mode)), &client);
                kinds.push(s.c.handshake_kind());
            }
            let want = match resumes {
                true => rustls::HandshakeKind::Resumed,
                false => rustls::HandshakeKind::Full,
            };
            assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
            assert_eq!(kinds[1], Some(want), "{mode:?} {version:?}");
        }
    }
}

#[test]
fn data_connections_resume_the_certified_control_session() {
    let pki = Pki::new();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = pki.client(true, version);
        let mut s = Ftps::login(site(pki.site(ClientCertificates::Require)), &client);
        s.h.storage.add_file("/f", b"certified");
        for _ in 0..3 {
            let (xfer, spec) = s.transfer("RETR f");
            let mut data = connect(&client);
            let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
            assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
            assert_eq!(seen.received, b"certified", "{version:?}");
            assert!(s.done(xfer, seen.outcome).starts_with("226 "));
        }
    }
}

#[test]
fn without_session_reuse_data_connections_need_a_certificate_too() {
    let pki = Pki::new();
    let mut tls = pki.site(ClientCertificates::Require);
    tls.require_session_reuse = false;
    let certified = pki.client(true, &rustls::version::TLS13);
    let mut s = Ftps::login(site(tls), &certified);
    s.h.storage.add_file("/f", b"x");
    // A fresh handshake without a certificate: rustls refuses it.
    let (xfer, spec) = s.transfer("RETR f");
    let mut data = connect(&pki.client(false, &rustls::version::TLS13));
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
    assert!(
        matches!(
            &seen.outcome,
            TransferOutcome::Tls {
                error: DataTlsError::Handshake(_),
                ..
            }
        ),
        "{:?}",
        seen.outcome
    );
    assert!(s.done(xfer, seen.outcome).starts_with("522 "));
    // Resuming a session that had no certificate (another site's, sharing the tickets):
    // refused too.
    let uncertified = pki.client(false, &rustls::version::TLS13);
    let other = Ftps::login(site(pki.site(ClientCertificates::Ignore)), &uncertified);
    drop(other);
    let (xfer, spec) = s.transfer("RETR f");
    let mut data = connect(&uncertified);
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
    assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    assert!(seen.received.is_empty());
    let r = s.done(xfer, seen.outcome);
    assert!(
        r.starts_with("522 ") && r.contains("no client certificate"),
        "{r}"
    );
    // With the certificate it works.
    let (xfer, spec) = s.transfer("RETR f");
    let mut data = connect(&certified);
    let seen = run_tls_transfer(&mut s.h, spec, &mut data, Peer::Download);
    assert_eq!(seen.received, b"x");
    assert!(s.done(xfer, seen.outcome).starts_with("226 "));
}

#[test]
fn a_handshake_that_stalls_is_closed_at_the_handshake_timeout() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    cfg.timeouts.tls_handshake = std::time::Duration::from_secs(5);
    let mut h = Harness::with_config(cfg.clone());
    h.expect("AUTH TLS", "234 ");
    // Half a handshake: the ClientHello arrives, the client never finishes.
    let mut c = client(&der);
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    h.send_raw(&hello);
    h.advance(std::time::Duration::from_secs(4));
    assert!(!h.session.is_closed(), "closed before the timeout");
    h.advance(std::time::Duration::from_secs(2));
    assert!(
        h.session.is_closed(),
        "a stalled handshake outlived its timeout"
    );

    // A handshake that completes is not bound by it: the session lives on to its
    // ordinary timeouts.
    let mut h = Harness::with_config(cfg);
    let (mut c, mut seen) = secured(&mut h, &der);
    h.advance(std::time::Duration::from_secs(20));
    assert!(!h.session.is_closed());
    assert!(tls_command(&mut h, &mut c, &mut seen, "NOOP").starts_with("200 "));
}

#[test]
fn handshakes_in_progress_per_address_are_capped() {
    use wharf_core::policy::limits::{ServerPolicy, ServerRules};
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let rules = ServerRules {
        max_handshakes_per_ip: 2,
        ..ServerRules::default()
    };
    let policy = Arc::new(ServerPolicy::new(rules));
    let mut server =
        wharf_core::Server::new(Arc::new(cfg.clone()), 0, 1, 100).with_policy(policy.clone());
    let now = harness::origin();
    let mut from = |peer: &str| Harness::accept(&mut server, peer, now).unwrap();
    let (mut a, mut b, mut c) = (
        from("192.0.2.1:1001"),
        from("192.0.2.1:1002"),
        from("192.0.2.1:1003"),
    );
    let mut other = from("192.0.2.2:1004");
    a.expect("AUTH TLS", "234 ");
    b.expect("AUTH TLS", "234 ");
    let refused = c.send("AUTH TLS");
    assert!(refused.starts_with("431 "), "{refused}");
    assert!(!c.session.is_closed(), "a 431 may be retried");
    c.expect("NOOP", "200 ");
    other.expect("AUTH TLS", "234 ");
    assert_eq!(policy.handshakes_from("192.0.2.1".parse().unwrap()), 2);

    // `a` completes its handshake: its count is released, and `c` may try again.
    let mut seen = a.wire.len();
    let mut client_a = client(&der);
    assert_eq!(pump(&mut a, &mut client_a, &mut seen), "");
    assert!(!client_a.is_handshaking());
    assert_eq!(policy.handshakes_from("192.0.2.1".parse().unwrap()), 1);
    c.expect("AUTH TLS", "234 ");
    // A session that closes mid-handshake releases its count too.
    b.session.handle_input(b.now, wharf_core::Input::ControlEof);
    b.drain();
    assert_eq!(policy.handshakes_from("192.0.2.1".parse().unwrap()), 1);
    drop((b, c));
    assert_eq!(policy.handshakes_from("192.0.2.1".parse().unwrap()), 0);
}

/// A refused PBSZ or PROT changes no protection setting, and a transfer command refused
/// by the data policy (`521`) spends REST and the data channel like any other refusal.
#[test]
fn refused_pbsz_and_prot_change_nothing_and_521_spends_rest() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Require);
    let mut h = site(tls);
    h.storage.add_file("/f", b"0123456789");
    let (mut c, mut seen) = secured(&mut h, &der);
    let mut cmd = |h: &mut Harness, line: &str| tls_command(h, &mut c, &mut seen, line);
    assert!(cmd(&mut h, "USER alice").starts_with("331 "));
    assert!(cmd(&mut h, "PASS secret").starts_with("230 "));
    // PBSZ with a bad size is refused and does not count as PBSZ.
    assert!(cmd(&mut h, "PBSZ x").starts_with("501 "));
    assert!(cmd(&mut h, "PROT P").starts_with("503 "));
    assert!(cmd(&mut h, "PBSZ 0").starts_with("200 "));
    // Under data = require the transfer is refused (521) until PROT P; the refusal
    // spends REST and the listener.
    assert!(cmd(&mut h, "REST 4").starts_with("350 "));
    assert!(cmd(&mut h, "PASV").starts_with("227 "));
    assert!(cmd(&mut h, "RETR f").starts_with("521 "));
    assert!(cmd(&mut h, "PROT P").starts_with("200 "));
    assert!(cmd(&mut h, "RETR f").starts_with("425 "));
    // Refused levels keep Private: PROT C (534 under require), S and E (536), X (504).
    for (line, want) in [
        ("PROT C", "534 "),
        ("PROT S", "536 "),
        ("PROT E", "536 "),
        ("PROT X", "504 "),
    ] {
        assert!(cmd(&mut h, line).starts_with(want), "{line}");
    }
    h.mode = DataMode::Manual;
    assert!(cmd(&mut h, "PORT 192,0,2,7,156,65").starts_with("200 "));
    assert!(cmd(&mut h, "RETR f").starts_with("150 "));
    let offset = h.requests.iter().rev().find_map(|r| match r {
        wharf_core::Request::OpenRead { offset, .. } => Some(*offset),
        _ => None,
    });
    assert_eq!(offset, Some(0), "the 521 left its REST offset behind");
    h.connect_data();
    let (_, _, pump) = h.take_transfer();
    assert!(
        pump.tls().is_some(),
        "a refused PROT changed the protection level"
    );
}

/// The login-binding table: rclone runs several control connections with one TLS
/// session cache, so a data connection may present the session of another control
/// connection of the same client. A connection whose TLS session descends from the same
/// full handshake (it resumed it), of the same user and address, vouches for it; a
/// client of the same user and address with a handshake of its own does not, nor does
/// one from another address.
#[test]
fn a_data_connection_may_resume_another_control_connection_of_the_same_client() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    let mut server = wharf_core::Server::new(Arc::new(cfg), 0, 1, 100);
    let now = harness::origin();
    let mut join = |peer: &str, config: &Arc<rustls::ClientConfig>| {
        let h = Harness::accept(&mut server, peer, now).expect("admitted");
        Ftps::login(h, config)
    };
    let shared = client_config(&der, &rustls::version::TLS13);
    let mut a = join(harness::PEER, &shared);
    let mut b = join(harness::PEER, &shared);
    assert_eq!(b.c.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    let other_client = client_config(&der, &rustls::version::TLS13);
    let mut thief = join(harness::PEER, &other_client);
    assert_eq!(thief.c.handshake_kind(), Some(rustls::HandshakeKind::Full));
    let away = client_config(&der, &rustls::version::TLS13);
    let _a_away = join("198.51.100.9:40000", &away);
    // `away` resumes the session `a`'s family began, from another address.
    let away_store = away.clone();
    a.h.storage.add_file("/f", b"shared");

    // (whose ticket the client presents, the client configuration, accepted?)
    let cases: [(&mut Ftps, &Arc<rustls::ClientConfig>, bool); 2] =
        [(&mut b, &shared, true), (&mut thief, &other_client, false)];
    for (issuer, config, accepted) in cases {
        let (xfer, spec) = a.transfer("RETR f");
        // The ticket issuer's EPSV makes its fresh ticket the client's newest.
        assert!(issuer.passive("EPSV").starts_with("229 "));
        let mut data = connect(config);
        let seen = run_tls_transfer(&mut a.h, spec, &mut data, Peer::Download);
        assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        let r = a.done(xfer, seen.outcome.clone());
        match accepted {
            true => {
                assert_eq!(seen.received, b"shared");
                assert!(r.starts_with("226 "), "{r}");
            }
            false => {
                assert!(seen.received.is_empty(), "nothing reaches the thief");
                assert!(
                    r.starts_with("522 ") && r.contains("require_tls_session_reuse"),
                    "{r}"
                );
            }
        }
    }
    // The same family from another address: refused.
    let (xfer, spec) = a.transfer("RETR f");
    let mut data = connect(&away_store);
    let seen = run_tls_transfer(&mut a.h, spec, &mut data, Peer::Download);
    assert!(seen.received.is_empty());
    assert!(a.done(xfer, seen.outcome).starts_with("522 "));
    // Once `b` is gone, its tickets are still in the client's cache (rclone closes
    // pooled connections): its session still vouches for its family.
    let (xfer, spec) = a.transfer("RETR f");
    assert!(b.passive("EPSV").starts_with("229 "));
    drop(b);
    let mut data = connect(&shared);
    let seen = run_tls_transfer(&mut a.h, spec, &mut data, Peer::Download);
    assert_eq!(seen.received, b"shared");
    assert!(a.done(xfer, seen.outcome).starts_with("226 "));
}

/// Runs a handshake-only pump against `client` until it is done or `rounds` exchanges
/// have passed (0: run until done).
fn run_prepare(pump: &mut Pump, client: &mut rustls::ClientConnection, rounds: usize) {
    let mut io = harness::MemIo {
        incoming: Vec::new(),
        incoming_eof: false,
        outgoing: Vec::new(),
        shut: false,
        file: None,
    };
    for round in 0.. {
        if rounds > 0 && round == rounds {
            return;
        }
        while client.wants_write() {
            client.write_tls(&mut io.incoming).unwrap();
        }
        let run = pump.run(harness::origin(), &mut io, 1 << 20);
        let out = std::mem::take(&mut io.outgoing);
        let mut rd = &out[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            let _ = client.process_new_packets();
        }
        assert!(
            pump.poll_input().is_none(),
            "a handshake-only pump reports nothing"
        );
        assert_eq!(pump.poll_timeout(), None);
        if run == wharf_core::Run::Done {
            assert!(rounds == 0, "done early");
            return;
        }
        assert!(round < 100, "the handshake never ended");
    }
}

/// The passive connection `Ftps::transfer` would make, accepted before any command:
/// the `PrepareTransfer` pump the session asks for.
fn accept_early(s: &mut Ftps) -> Box<Pump> {
    assert!(s.passive("PASV").starts_with("227 "));
    let Some(&Action::ListenData { conn, .. }) = s.h.actions.last() else {
        panic!("no ListenData: {:?}", s.h.actions)
    };
    let peer = "192.0.2.7:40001".parse().unwrap();
    s.h.input(Input::DataAccepted { conn, peer });
    match s.h.actions.pop() {
        Some(Action::PrepareTransfer { conn: c, pump }) if c == conn => pump,
        other => panic!("no PrepareTransfer: {other:?}"),
    }
}

/// aioftp completes the data connection's TLS handshake before it sends RETR or STOR:
/// the session runs it on the accepted connection at once (a handshake-only pump), and
/// the transfer's pump adopts it, whether complete or halfway; a connection that fails
/// the binding during it gets its `522` at the command.
#[test]
fn a_data_handshake_before_the_command_is_answered_and_adopted() {
    let (tls, der) = settings(ControlPolicy::Allow, DataPolicy::Allow);
    let config = client_config(&der, &rustls::version::TLS13);
    let mut s = Ftps::login(site(tls), &config);
    s.h.storage.add_file("/f", b"early bird");
    // PROT C: nothing to prepare.
    s.expect("PROT C", "200 ");
    assert!(s.passive("PASV").starts_with("227 "));
    let Some(&Action::ListenData { conn, .. }) = s.h.actions.last() else {
        panic!()
    };
    let peer = "192.0.2.7:40001".parse().unwrap();
    s.h.input(Input::DataAccepted { conn, peer });
    assert!(!matches!(
        s.h.actions.last(),
        Some(Action::PrepareTransfer { .. })
    ));
    s.expect("ABOR", "2");
    s.expect("PROT P", "200 ");

    // (rounds of the early handshake: 0 = to the end, 1 = the ClientHello only)
    for (rounds, upload) in [(0, false), (1, false), (0, true)] {
        let mut prepared = accept_early(&mut s);
        assert!(prepared.is_handshake_only());
        let mut data = connect(&config);
        run_prepare(&mut prepared, &mut data, rounds);
        // After one exchange the server has not read the client's Finished.
        let server_done = !prepared.tls().unwrap().is_handshaking();
        assert_eq!(server_done, rounds == 0, "rounds {rounds}");
        let cmd = if upload { "STOR up" } else { "RETR f" };
        let r = tls_command(&mut s.h, &mut s.c, &mut s.seen, cmd);
        assert!(r.starts_with("150 "), "{r}");
        let (xfer, file, mut pump) = s.h.take_transfer();
        pump.adopt(*prepared);
        let peer = match upload {
            false => Peer::Download,
            true => Peer::Upload {
                body: b"early upload",
                close_notify: true,
            },
        };
        let seen = run_tls_transfer(&mut s.h, Started { file, pump }, &mut data, peer);
        assert_eq!(data.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        assert!(s.done(xfer, seen.outcome).starts_with("226 "));
        match upload {
            false => assert_eq!(seen.received, b"early bird"),
            true => assert_eq!(
                s.h.storage.read_file("/up").as_deref(),
                Some(&b"early upload"[..])
            ),
        }
    }

    // A stranger's session (its own full handshake) fails the binding early; the
    // command gets the 522 and nothing of the file.
    let mut prepared = accept_early(&mut s);
    let mut thief = connect(&client_config(&der, &rustls::version::TLS13));
    run_prepare(&mut prepared, &mut thief, 0);
    let r = tls_command(&mut s.h, &mut s.c, &mut s.seen, "RETR f");
    assert!(r.starts_with("150 "), "{r}");
    let (xfer, file, mut pump) = s.h.take_transfer();
    pump.adopt(*prepared);
    let seen = run_tls_transfer(&mut s.h, Started { file, pump }, &mut thief, Peer::Download);
    assert!(seen.received.is_empty());
    let r = s.done(xfer, seen.outcome);
    assert!(
        r.starts_with("522 ") && r.contains("require_tls_session_reuse"),
        "{r}"
    );
}
