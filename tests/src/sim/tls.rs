//! FTPS in the simulator: one site certificate per process (Ed25519, so every handshake
//! has the same length and a seed's byte segmentation replays exactly), the site's TLS
//! settings as the server builds them, and each client's rustls configuration, whose
//! session store its data connections share to resume the control session.

use std::sync::{Arc, OnceLock};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use wharf_core::TlsSettings;

/// The name the certificate carries and clients ask for.
pub const NAME: &str = "sim.example";

struct Site {
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("an Ed25519 key");
        let params = rcgen::CertificateParams::new(vec![NAME.into()]).expect("a name");
        let cert = params.self_signed(&key).expect("a certificate");
        Site {
            der: CertificateDer::from(cert.der().to_vec()),
            key: key.serialize_der(),
        }
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The site's FTPS settings: tickets and a session cache, as the server builds them;
/// session reuse and strict close_notify required (the defaults).
pub fn settings() -> TlsSettings {
    let site = site();
    let key = PrivateKeyDer::try_from(site.key.clone()).expect("a PKCS#8 key");
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![site.der.clone()], key)
        .expect("the key matches");
    config.ticketer = rustls::crypto::ring::Ticketer::new().expect("a ticketer");
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(256);
    TlsSettings::new(config)
}

/// One client program's configuration (TLS 1.3 or 1.2 only): its control and data
/// connections share it, and with it the session store.
pub fn client_config(tls13: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(site().der.clone()).expect("a root");
    let version = match tls13 {
        true => &rustls::version::TLS13,
        false => &rustls::version::TLS12,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[version])
        .expect("the version")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A new connection of a client.
pub fn connect(config: &Arc<rustls::ClientConfig>) -> Box<rustls::ClientConnection> {
    let name = ServerName::try_from(NAME).expect("a DNS name");
    Box::new(rustls::ClientConnection::new(config.clone(), name).expect("a connection"))
}

/// Feeds ciphertext to a client connection and appends the plaintext it yields to
/// `plain`; returns how much plaintext came, and whether the peer's close_notify did.
/// A TLS error (an alert from a server that refused the connection) ends the feeding:
/// the transfer's reply says what happened.
pub fn feed(c: &mut rustls::ClientConnection, mut bytes: &[u8], plain: &mut Vec<u8>) -> usize {
    use std::io::Read;
    let before = plain.len();
    while !bytes.is_empty() {
        if c.read_tls(&mut bytes).is_err() || c.process_new_packets().is_err() {
            break;
        }
        let mut chunk = [0u8; 4096];
        while let Ok(n) = c.reader().read(&mut chunk) {
            if n == 0 {
                break;
            }
            plain.extend_from_slice(&chunk[..n]);
        }
    }
    plain.len() - before
}

/// What a client connection wants to send.
pub fn outgoing(c: &mut rustls::ClientConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while c.wants_write() {
        if c.write_tls(&mut out).is_err() {
            break;
        }
    }
    out
}
