//! Certificates for FTPS tests, made with rcgen: a site's self-signed certificate, a
//! test CA and client certificates it signs. Everything is written as PEM files into a
//! directory the test owns.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8).
    pub key: PathBuf,
    /// The public key (PEM `PUBLIC KEY`), for curl's `--pinnedpubkey`.
    pub public_key: PathBuf,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl CertFiles {
    /// The certificate path as a string (for curl's `--cacert` / `--cert`).
    pub fn cert_str(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    /// The key path as a string (for curl's `--key`).
    pub fn key_str(&self) -> &str {
        self.key.to_str().unwrap()
    }

    /// The public key path as a string (for curl's `--pinnedpubkey`).
    pub fn public_key_str(&self) -> &str {
        self.public_key.to_str().unwrap()
    }

    /// SHA-256 of the certificate, lower-case hex without separators (as Python's
    /// `hashlib.sha256(der).hexdigest()` prints it).
    pub fn sha256_hex(&self) -> String {
        wharf_server::tls::fingerprint(&self.der)
            .replace(':', "")
            .to_ascii_lowercase()
    }
}

fn write(dir: &Path, name: &str, cert: &rcgen::Certificate, key: &KeyPair) -> CertFiles {
    std::fs::create_dir_all(dir).unwrap();
    let files = CertFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        public_key: dir.join(format!("{name}.pub")),
        der: cert.der().to_vec(),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    std::fs::write(&files.public_key, key.public_key_pem()).unwrap();
    files
}

/// A self-signed server certificate for `host` (its CN and only DNS name), written to
/// `dir/HOST.crt`, `dir/HOST.key` (and `dir/HOST.pub`), the names the walkthrough configuration uses.
pub fn self_signed(dir: &Path, host: &str) -> CertFiles {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![host.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    let cert = params.self_signed(&key).unwrap();
    write(dir, host, &cert, &key)
}

/// A certificate authority that signs client certificates.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own certificate: the `client_ca` bundle.
    pub files: CertFiles,
}

impl TestCa {
    /// A new CA named `name`, written to `dir/NAME.crt` and `dir/NAME.key`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let files = write(dir, name, &cert, &key);
        TestCa {
            issuer: Issuer::new(params, key),
            files,
        }
    }

    /// A server certificate for `names` (DNS names and IP addresses; the first is its
    /// CN), signed by this CA, written to `dir/FILE.crt` and `dir/FILE.key`.
    pub fn server(&self, dir: &Path, file: &str, names: &[&str]) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write(dir, file, &cert, &key)
    }

    /// A client certificate with CN `name`, signed by this CA, written to
    /// `dir/NAME.crt` and `dir/NAME.key`.
    pub fn client(&self, dir: &Path, name: &str) -> CertFiles {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        write(dir, name, &cert, &key)
    }
}
