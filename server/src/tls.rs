//! FTPS certificates: PEM loading, a certificate resolver that SIGHUP can swap and SNI
//! steers, the sites' rustls configurations, and the self-signed certificate of the
//! embedded default.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions,
};
use rustls::sign::CertifiedKey;

/// What every site's TLS configuration shares: one ticket key and one session cache (a
/// data connection resumes its control session whichever site the SNI name chose; the
/// session tokens are unique per server), and the certificates by host name.
#[derive(Clone)]
pub struct TlsShared {
    ticketer: Arc<dyn ProducesTickets>,
    sessions: Arc<dyn StoresServerSessions>,
    names: Arc<OnceLock<BTreeMap<String, Arc<SwappableCert>>>>,
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
            names: Arc::new(OnceLock::new()),
        })
    }

    /// Which certificate answers an SNI name: `(host, site)` pairs, the first for a name
    /// winning. Set once, when every site is known; until then (and for other names) a
    /// site's own certificate answers.
    pub fn set_names<'a>(&self, names: impl IntoIterator<Item = (&'a str, &'a SiteTls)>) {
        let mut map = BTreeMap::new();
        for (host, site) in names {
            map.entry(host.to_ascii_lowercase())
                .or_insert_with(|| site.resolver.clone());
        }
        let _ = self.names.set(map);
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

    /// The site's rustls configuration: TLS 1.3 and 1.2 with rustls' default cipher
    /// suites, this certificate (or, for an SNI name bound to another site, that site's),
    /// and the server's shared tickets and session cache (so data connections can resume
    /// their control session).
    pub fn server_config(&self, shared: &TlsShared) -> Result<rustls::ServerConfig, String> {
        let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
        let resolver = SniResolver {
            own: self.resolver.clone(),
            names: shared.names.clone(),
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
        config.ticketer = shared.ticketer.clone();
        config.session_storage = shared.sessions.clone();
        Ok(config)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate every handshake gets; replaced whole on reload.
#[derive(Debug)]
struct SwappableCert(RwLock<Arc<CertifiedKey>>);

impl SwappableCert {
    fn current(&self) -> Arc<CertifiedKey> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A site's certificate, or the one of the site an SNI name is bound to.
#[derive(Debug)]
struct SniResolver {
    own: Arc<SwappableCert>,
    names: Arc<OnceLock<BTreeMap<String, Arc<SwappableCert>>>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let named = hello.server_name().and_then(|name| {
            let names = self.names.get()?;
            names.get(&name.to_ascii_lowercase())
        });
        Some(named.unwrap_or(&self.own).current())
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
        let mut store = rustls::RootCertStore::empty();
        for r in roots {
            let pem = std::fs::read(r).unwrap();
            store
                .add(CertificateDer::from_pem_slice(&pem).unwrap())
                .unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(provider())
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
                return false;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            if c.read_tls(&mut &buf[..]).is_ok() && c.process_new_packets().is_err() {
                return false;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return true;
            }
        }
        false
    }

    #[test]
    fn the_sni_name_chooses_the_certificate() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (cert_a, key_a, _) = ensure_self_signed(a.path(), &["a.example"]).unwrap();
        let (cert_b, key_b, _) = ensure_self_signed(b.path(), &["b.example"]).unwrap();
        let site_a = SiteTls::load(&cert_a, &key_a).unwrap();
        let site_b = SiteTls::load(&cert_b, &key_b).unwrap();
        let shared = TlsShared::new(16).unwrap();
        shared.set_names([("B.example", &site_b), ("a.example", &site_a)]);
        let roots = [cert_a, cert_b];
        // Whichever site's configuration answers (the listener's), the name decides.
        for site in [&site_a, &site_b] {
            assert!(handshake(
                site.server_config(&shared).unwrap(),
                &roots,
                "b.example"
            ));
            assert!(handshake(
                site.server_config(&shared).unwrap(),
                &roots,
                "a.example"
            ));
        }
        // An unknown name gets the listener site's own certificate.
        let config = site_a.server_config(&shared).unwrap();
        assert!(
            !handshake(config, &roots, "c.example"),
            "a.example's cert is not c's"
        );
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
