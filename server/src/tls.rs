//! FTPS certificates: PEM loading, a certificate resolver that SIGHUP can swap and SNI
//! steers, the sites' rustls configurations, and the self-signed certificate of the
//! embedded default.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;

/// What every site's TLS configuration shares: one ticket key and one session cache (a
/// data connection resumes its control session whichever site's configuration answered
/// it; the session tokens are unique per server).
///
/// Certificates are not shared: each site's configuration serves its own. The SNI name
/// chooses the site before the handshake (the core reads the ClientHello first), and so
/// the certificate, as it does on the address the client reached.
#[derive(Clone)]
pub struct TlsShared {
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
}

impl fmt::Debug for TlsShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsShared").finish_non_exhaustive()
    }
}

impl TlsShared {
    /// Stateless session tickets with a fresh random key, and a TLS 1.2 session cache of
    /// `sessions` entries.
    pub fn new(sessions: usize) -> Result<TlsShared, String> {
        let ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| format!("TLS session tickets: {e}"))?;
        Ok(TlsShared {
            ticketer,
            sessions: ServerSessionMemoryCache::new(sessions.max(256)),
        })
    }
}

/// A site's certificate files and the live certificate, which [`SiteTls::reload`]
/// replaces without a restart (new handshakes get the new one; running ones are
/// unaffected).
#[derive(Clone)]
pub struct SiteTls {
    /// The PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
    resolver: Arc<SwappableCert>,
}

impl fmt::Debug for SiteTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteTls")
            .field("certificate", &self.certificate)
            .field("private_key", &self.private_key)
            .finish_non_exhaustive()
    }
}

impl SiteTls {
    /// Loads the files; the error says which file and what is wrong with it.
    pub fn load(certificate: &Path, private_key: &Path) -> Result<SiteTls, String> {
        let key = load_certified_key(certificate, private_key)?;
        Ok(SiteTls {
            certificate: certificate.to_path_buf(),
            private_key: private_key.to_path_buf(),
            resolver: Arc::new(SwappableCert(RwLock::new(Arc::new(key)))),
        })
    }

    /// Reads the files again and serves the new certificate from the next handshake on.
    /// On an error the old certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = load_certified_key(&self.certificate, &self.private_key)?;
        *self.resolver.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// The SHA-256 fingerprint of the leaf certificate, `AB:CD:...`, as browsers and
    /// `openssl x509 -fingerprint -sha256` print it.
    pub fn fingerprint(&self) -> String {
        let key = self.resolver.current();
        let leaf = key.cert.first().map(|c| c.as_ref()).unwrap_or_default();
        fingerprint(leaf)
    }

    /// The site's rustls configuration: TLS 1.3 and 1.2 with the cipher suites of
    /// [`server_provider`] in its order (AES-128-GCM first), this certificate, and the server's shared tickets and session cache (so
    /// data connections can resume their control session). Clients are asked for no
    /// certificate.
    pub fn server_config(&self, shared: &TlsShared) -> Result<rustls::ServerConfig, String> {
        self.server_config_for_clients(shared, None)
    }

    /// [`SiteTls::server_config`], asking clients for a certificate that `clients`
    /// verifies, when given.
    pub fn server_config_for_clients(
        &self,
        shared: &TlsShared,
        clients: Option<&ClientCa>,
    ) -> Result<rustls::ServerConfig, String> {
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let builder = rustls::ServerConfig::builder_with_provider(server_provider())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS configuration: {e}"))?;
        let builder = match clients {
            Some(ca) => builder.with_client_cert_verifier(ca.verifier.clone()),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(self.resolver.clone());
        // The server's order of suites, not the client's: see `server_provider`.
        config.ignore_client_order = true;
        config.ticketer = shared.ticketer.clone();
        config.session_storage = shared.sessions.clone();
        Ok(config)
    }
}

/// The CA bundle a site checks client certificates against (`client_ca`), and whether
/// clients must present one (`client_certificates = "require"`) or may
/// (`"allow"`). Read when the configuration is loaded; SIGHUP does not re-read it.
#[derive(Clone)]
pub struct ClientCa {
    /// The PEM bundle of CA certificates.
    pub path: PathBuf,
    /// Handshakes without a valid client certificate fail.
    pub required: bool,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCa")
            .field("path", &self.path)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl ClientCa {
    /// Reads the bundle: every certificate in it is a trust anchor for client
    /// certificates. The error names the file and what is wrong with it.
    pub fn load(path: &Path, required: bool) -> Result<ClientCa, String> {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{}: no \"BEGIN CERTIFICATE\" block (client_ca is the PEM bundle of the CAs that sign client certificates)",
                path.display()
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                format!(
                    "{}: certificate {} is not usable as a CA: {e}",
                    path.display(),
                    i + 1
                )
            })?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let builder = match required {
            true => builder,
            false => builder.allow_unauthenticated(),
        };
        let verifier = builder
            .build()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(ClientCa {
            path: path.to_path_buf(),
            required,
            verifier,
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The handshakes' provider: *ring* with its cipher suites in the order the server
/// prefers them (`ignore_client_order`), AES-128-GCM with SHA-256 first.
///
/// rustls' default order, which clients such as rustls and OpenSSL also send, puts
/// AES-256-GCM with SHA-384 first. Both are sound; the SHA-256 one is the cheaper by
/// far on servers: SHA-384 runs on the generic SHA-512 code (there are no SHA-512
/// instructions on x86), about 9 % of the server's CPU per FTPS session (two
/// handshakes, eight tickets) in a profile, while SHA-256 has SHA-NI; and AES-128 has 10
/// rounds to AES-256's 14 for every byte of a PROT P transfer. Go's TLS server makes
/// the same choice. ChaCha20 stays a client's only choice if it offers nothing else.
pub(crate) fn server_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The certificate every handshake gets; replaced whole on reload.
#[derive(Debug)]
struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads a PEM chain and key and checks that they belong together.
pub fn load_certified_key(certificate: &Path, private_key: &Path) -> Result<CertifiedKey, String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let pem = read(certificate)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{}: not a PEM certificate chain: {e}",
                certificate.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no \"BEGIN CERTIFICATE\" block",
            certificate.display()
        ));
    }
    let pem = read(private_key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", private_key.display()))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        format!(
            "{} and {}: {e}",
            certificate.display(),
            private_key.display()
        )
    })
}

/// `AB:CD:...` SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> String {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let hash = match suite.tls13() {
        Some(s) => s.common.hash_provider.hash(der),
        None => return String::new(),
    };
    let hex: Vec<String> = hash.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Creates `dir/cert.pem` and `dir/key.pem` (mode 0600) with a new self-signed ECDSA
/// P-256 certificate for `names`, unless both exist. Returns their paths and whether
/// they were created now.
pub fn ensure_self_signed(dir: &Path, names: &[&str]) -> io::Result<(PathBuf, PathBuf, bool)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    std::fs::create_dir_all(dir)?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| io::Error::other(format!("generating a certificate: {e}")))?;
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())?;
    Ok((cert, key, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_loads_reloads_and_has_a_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, created) = ensure_self_signed(dir.path(), &["localhost"]).unwrap();
        assert!(created);
        let tls = SiteTls::load(&cert, &key).unwrap();
        let before = tls.fingerprint();
        assert_eq!(before.len(), 32 * 3 - 1, "{before}");
        // The same files again: nothing changes. New files: the fingerprint follows.
        assert!(!ensure_self_signed(dir.path(), &["localhost"]).unwrap().2);
        std::fs::remove_file(&cert).unwrap();
        ensure_self_signed(dir.path(), &["localhost"]).unwrap();
        tls.reload().unwrap();
        assert_ne!(tls.fingerprint(), before);
        assert!(tls.server_config(&TlsShared::new(10).unwrap()).is_ok());
    }

    /// The certificate a client verifying `name` accepts from a site's configuration.
    fn handshake(config: rustls::ServerConfig, roots: &[PathBuf], name: &str) -> bool {
        handshake_with(config, roots, name, provider()).is_some()
    }

    /// A handshake of a client with `client` as its provider; the suite it agreed on.
    fn handshake_with(
        config: rustls::ServerConfig,
        roots: &[PathBuf],
        name: &str,
        client: Arc<CryptoProvider>,
    ) -> Option<rustls::SupportedCipherSuite> {
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            let pem = std::fs::read(r).unwrap();
            store
                .add(CertificateDer::from_pem_slice(&pem).unwrap())
                .unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(client)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            if s.read_tls(&mut &buf[..]).is_ok() && s.process_new_packets().is_err() {
                return None;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            if c.read_tls(&mut &buf[..]).is_ok() && c.process_new_packets().is_err() {
                return None;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return c.negotiated_cipher_suite();
            }
        }
        None
    }

    #[test]
    fn the_server_prefers_aes_128_gcm_and_takes_what_the_client_has() {
        use rustls::crypto::ring::cipher_suite as cs;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = ensure_self_signed(dir.path(), &["localhost"]).unwrap();
        let site = SiteTls::load(&cert, &key).unwrap();
        let shared = TlsShared::new(16).unwrap();
        let roots = [cert];
        let with_suites = |suites: Vec<rustls::SupportedCipherSuite>| {
            let mut p = rustls::crypto::ring::default_provider();
            p.cipher_suites = suites;
            let config = site.server_config(&shared).unwrap();
            handshake_with(config, &roots, "localhost", Arc::new(p)).map(|s| s.suite())
        };
        // rustls' (and OpenSSL's) default order puts AES-256-GCM-SHA384 first.
        let default = rustls::crypto::ring::default_provider().cipher_suites;
        assert_eq!(
            with_suites(default),
            Some(cs::TLS13_AES_128_GCM_SHA256.suite())
        );
        for only in [
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ] {
            assert_eq!(with_suites(vec![only]), Some(only.suite()));
        }
    }

    #[test]
    fn each_site_serves_its_own_certificate() {
        // The SNI name chooses the site (and so its configuration) in the core; a
        // configuration serves its own certificate whatever name the client sends.
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cert_a, key_a, _) = ensure_self_signed(a.path(), &["a.example"]).unwrap();
        let (cert_b, key_b, _) = ensure_self_signed(b.path(), &["b.example"]).unwrap();
        let site_a = SiteTls::load(&cert_a, &key_a).unwrap();
        let site_b = SiteTls::load(&cert_b, &key_b).unwrap();
        let shared = TlsShared::new(16).unwrap();
        let roots = [cert_a.clone(), cert_b.clone()];
        let config = |site: &SiteTls| site.server_config(&shared).unwrap();
        assert!(handshake(config(&site_a), &roots, "a.example"));
        assert!(handshake(config(&site_b), &roots, "b.example"));
        assert!(!handshake(config(&site_a), &roots, "b.example"));
        assert!(!handshake(config(&site_b), &[cert_a], "a.example"));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cert, _, _) = ensure_self_signed(a.path(), &["a"]).unwrap();
        let (_, key, _) = ensure_self_signed(b.path(), &["b"]).unwrap();
        let e = load_certified_key(&cert, &key).unwrap_err();
        assert!(e.contains("key"), "{e}");
        let e = load_certified_key(&key, &key).unwrap_err();
        assert!(e.contains("BEGIN CERTIFICATE"), "{e}");
        let e = load_certified_key(&cert, &a.path().join("missing.pem")).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
