//! Shared policy state: admits connections and creates sessions. One per shard (or per
//! process); it holds no sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::SessionConfig;
use crate::ids::SessionId;
use crate::session::Session;

/// A control-connection listen address, and whether connections there speak TLS from
/// the first byte (implicit FTPS, port 990 by convention). A plain `SocketAddr` converts
/// into a plain (explicit-FTPS-capable) one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    pub implicit_tls: bool,
}

impl ListenAddr {
    /// An implicit-FTPS listen address.
    pub fn implicit_tls(addr: SocketAddr) -> ListenAddr {
        ListenAddr {
            addr,
            implicit_tls: true,
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr {
            addr,
            implicit_tls: false,
        }
    }
}

/// A connection the server will not serve: send `reply` (already encoded) and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Vec<u8>,
}

/// Admission and the per-server counters.
pub struct Server {
    config: Arc<SessionConfig>,
    next_session: u64,
    /// Added to session ids so that shards never hand out the same id.
    id_stride: u64,
    active: usize,
    max_sessions: usize,
}

impl Server {
    /// A server for one site. `shard`/`shards` make session ids unique across shards.
    pub fn new(config: Arc<SessionConfig>, shard: u64, shards: u64, max_sessions: usize) -> Server {
        Server {
            config,
            next_session: shard,
            id_stride: shards.max(1),
            active: 0,
            max_sessions,
        }
    }

    /// Admits a new control connection from `peer` on `local` (plain FTP, with
    /// explicit FTPS through AUTH TLS when the site has TLS).
    pub fn accept(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Session, Refusal> {
        self.admit(now, peer, local, false)
    }

    /// Admits a new control connection on an implicit-FTPS binding: TLS from the first
    /// byte, data connections `PROT P` by default. A refusal is empty (nothing may be
    /// sent in plaintext there): just close. Refused outright when the site has no TLS.
    pub fn accept_implicit_tls(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Session, Refusal> {
        if self.config.tls.is_none() {
            return Err(Refusal { reply: Vec::new() });
        }
        self.admit(now, peer, local, true)
            .map_err(|_| Refusal { reply: Vec::new() })
    }

    fn admit(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
        implicit: bool,
    ) -> Result<Session, Refusal> {
        if self.active >= self.max_sessions {
            return Err(Refusal {
                reply: b"421 Too many connections, try again later.\r\n".to_vec(),
            });
        }
        self.active += 1;
        let id = SessionId(self.next_session);
        self.next_session += self.id_stride;
        Ok(Session::new(
            now,
            id,
            self.config.clone(),
            peer,
            local,
            implicit,
        ))
    }

    /// The reply for a connection the driver cannot serve at all (out of file
    /// descriptors or memory), sent before closing it.
    pub fn busy_reply(&self) -> Refusal {
        Refusal {
            reply: b"421 Server busy, try again later.\r\n".to_vec(),
        }
    }

    /// Tells the server a session it admitted has ended.
    pub fn session_closed(&mut self, _id: SessionId) {
        self.active = self.active.saturating_sub(1);
    }

    /// Sessions admitted and not yet closed.
    pub fn active_sessions(&self) -> usize {
        self.active
    }

    pub fn config(&self) -> &Arc<SessionConfig> {
        &self.config
    }
}
