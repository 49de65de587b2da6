//! FTPS on the control channel, with a real rustls client in memory.

mod harness;

use std::io::{Read, Write};
use std::sync::Arc;

use harness::Harness;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use wharf_core::{ControlPolicy, DataPolicy, TlsSettings};

fn certified() -> (Arc<rustls::ServerConfig>, CertificateDer<'static>) {
    let cert = rcgen::generate_simple_self_signed(vec!["ftp.example.com".into()]).unwrap();
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    (Arc::new(config), der)
}

fn settings(
    implicit: bool,
    control: ControlPolicy,
    data: DataPolicy,
) -> (TlsSettings, CertificateDer<'static>) {
    let (config, der) = certified();
    (
        TlsSettings {
            config,
            implicit,
            control,
            data,
            exempt_anonymous: false,
        },
        der,
    )
}

fn client(der: &CertificateDer<'static>) -> rustls::ClientConnection {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("ftp.example.com").unwrap();
    rustls::ClientConnection::new(Arc::new(config), name).unwrap()
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
fn secured(h: &mut Harness, der: &CertificateDer<'static>) -> (rustls::ClientConnection, usize) {
    h.expect("AUTH TLS", "234 ");
    let mut seen = h.wire.len();
    let mut c = client(der);
    assert_eq!(pump(h, &mut c, &mut seen), "", "handshake only");
    assert!(!c.is_handshaking());
    (c, seen)
}

fn site(tls: TlsSettings) -> Harness {
    let mut cfg = harness::config();
    cfg.tls = Some(tls);
    Harness::with_config(cfg)
}

#[test]
fn explicit_ftps_login_and_commands() {
    let (tls, der) = settings(false, ControlPolicy::Allow, DataPolicy::Allow);
    let mut h = site(tls);
    let feat = h.send("FEAT");
    assert!(
        feat.contains("\r\n AUTH TLS\r\n")
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
fn plaintext_pipelined_after_auth_is_never_executed() {
    let (tls, _) = settings(false, ControlPolicy::Allow, DataPolicy::Allow);
    let mut h = site(tls);
    let r = h.send_raw(b"AUTH TLS\r\nUSER alice\r\nPASS secret\r\n");
    assert!(r.starts_with("234 "), "{r}");
    assert!(!r.contains("331") && !r.contains("230"), "{r}");
    assert!(h.session.is_closed());
}

#[test]
fn a_client_hello_right_after_234_is_tls() {
    let (tls, der) = settings(false, ControlPolicy::Allow, DataPolicy::Allow);
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
    let (tls, der) = settings(true, ControlPolicy::Allow, DataPolicy::Allow);
    let mut h = site(tls.clone());
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

    let mut h = site(tls);
    h.send_raw(b"USER anonymous\r\n");
    assert!(
        h.session.is_closed(),
        "plaintext on an implicit binding closes it"
    );
    assert!(!h.replies().contains("220"), "and never earns a banner");
}

#[test]
fn control_policy_require() {
    let (tls, der) = settings(false, ControlPolicy::Require, DataPolicy::Allow);
    let mut h = site(tls);
    h.expect("USER alice", "534 Policy requires TLS");
    h.expect("FEAT", "211-");
    let (mut c, mut seen) = secured(&mut h, &der);
    assert!(tls_command(&mut h, &mut c, &mut seen, "USER alice").starts_with("331 "));
}

#[test]
fn control_policy_credentials_only_and_anonymous_exemption() {
    let (mut tls, _) = settings(
        false,
        ControlPolicy::RequireCredentialsOnly,
        DataPolicy::Allow,
    );
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
    let (tls, der) = settings(false, ControlPolicy::Allow, DataPolicy::Require);
    let mut h = site(tls);
    let (mut c, mut seen) = secured(&mut h, &der);
    tls_command(&mut h, &mut c, &mut seen, "PBSZ 0");
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT C").starts_with("534 "));
    let (tls, der) = settings(false, ControlPolicy::Allow, DataPolicy::Deny);
    let mut h = site(tls);
    let (mut c, mut seen) = secured(&mut h, &der);
    tls_command(&mut h, &mut c, &mut seen, "PBSZ 0");
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT P").starts_with("534 "));
    assert!(tls_command(&mut h, &mut c, &mut seen, "PROT C").starts_with("200 "));
}

/// Two sites sharing one address and one certificate; the client's SNI name
/// (`ftp.example.com`) is bound to site "two".
fn sni_sites(implicit: bool, blank_host: bool) -> (Harness, CertificateDer<'static>) {
    use wharf_core::{Binding, Server, Sites};
    let (tls, der) = settings(false, ControlPolicy::Allow, DataPolicy::Allow);
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
    let (tls, der) = settings(true, ControlPolicy::Allow, DataPolicy::Allow);
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
        server.policy().connections_to(1),
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
    assert_eq!(server.policy().connections_to(1), 1);
    drop(first);
    assert_eq!(server.policy().connections_to(1), 0);
}
