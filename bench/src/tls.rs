//! FTPS for the load generator: a rustls client that accepts any certificate (benchmarks
//! run against self-signed test certificates) and resumes the control connection's TLS
//! session on data connections, as FTPS servers that bind data to control require.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

/// How a session secures its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `AUTH TLS` after the banner, then `PBSZ 0` and `PROT P`.
    Explicit,
    /// TLS from the first byte (data connections are private too).
    Implicit,
}

/// The client side of FTPS for every connection of a run.
#[derive(Clone)]
pub struct Tls {
    pub mode: Mode,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({:?})", self.mode)
    }
}

impl Tls {
    pub fn new(mode: Mode) -> Tls {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::in_memory_sessions(16);
        Tls {
            mode,
            config: Arc::new(config),
        }
    }

    /// The same client with a session store of its own, for one FTP session: its data
    /// connections resume its control connection's TLS session, never another thread's
    /// (which a server that binds data to control refuses).
    pub fn for_session(&self) -> Tls {
        let mut config = (*self.config).clone();
        config.resumption = rustls::client::Resumption::in_memory_sessions(16);
        Tls {
            mode: self.mode,
            config: Arc::new(config),
        }
    }

    /// Wraps `sock` and completes the handshake (the server is named by its IP, so the
    /// data connection finds the control connection's session to resume).
    pub fn wrap(&self, sock: TcpStream, ip: IpAddr) -> Result<Conn, String> {
        let conn = ClientConnection::new(self.config.clone(), ServerName::IpAddress(ip.into()))
            .map_err(|e| format!("tls: {e}"))?;
        let mut s = StreamOwned::new(conn, sock);
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| format!("tls handshake: {e}"))?;
        }
        Ok(Conn::Tls(Box::new(s)))
    }
}

/// A control or data connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &s.sock,
        }
    }

    /// Ends what we send: close_notify first under TLS (a strict server treats an upload
    /// without it as truncated), then FIN.
    pub fn finish_sending(&mut self) -> io::Result<()> {
        if let Conn::Tls(s) = self {
            s.conn.send_close_notify();
            while s.conn.wants_write() {
                s.conn.write_tls(&mut s.sock)?;
            }
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
        Ok(())
    }

    pub fn into_plain(self) -> Option<TcpStream> {
        match self {
            Conn::Plain(s) => Some(s),
            Conn::Tls(_) => None,
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            // A TLS stream that ends without close_notify is an error (UnexpectedEof):
            // the benchmark counts a server that truncates as failing.
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
