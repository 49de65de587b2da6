//! TLS for the control channel, and the site's FTPS policy.
//!
//! rustls' buffered `ServerConnection` is itself sans-IO, so the session runs it inline:
//! ciphertext comes in through `Input::ControlBytes` and leaves through `poll_transmit`,
//! and every runtime (and the simulator) drives TLS the same way. This is the only module
//! that names rustls' connection type.

use std::io::{Read, Write};
use std::sync::Arc;

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

/// A site's FTPS settings.
#[derive(Clone)]
pub struct TlsSettings {
    /// The control channel's rustls configuration (certificates, versions, tickets).
    pub config: Arc<rustls::ServerConfig>,
    /// TLS from the first byte (implicit FTPS, port 990 by convention).
    pub implicit: bool,
    pub control: ControlPolicy,
    pub data: DataPolicy,
    /// Anonymous users are exempt from `Require` policies.
    pub exempt_anonymous: bool,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("implicit", &self.implicit)
            .field("control", &self.control)
            .field("data", &self.data)
            .field("exempt_anonymous", &self.exempt_anonymous)
            .finish_non_exhaustive()
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

/// One TLS connection, driven with bytes.
pub(crate) struct TlsLayer {
    conn: Box<rustls::ServerConnection>,
}

impl TlsLayer {
    pub(crate) fn new(config: &Arc<rustls::ServerConfig>) -> Result<TlsLayer, rustls::Error> {
        Ok(TlsLayer {
            conn: Box::new(rustls::ServerConnection::new(config.clone())?),
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
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
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

    #[allow(dead_code)] // used by the data channel and SNI site selection next
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The SNI name the client asked for, once known.
    pub(crate) fn server_name(&self) -> Option<&str> {
        self.conn.server_name()
    }
}
