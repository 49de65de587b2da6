//! Shared policy state: admits connections and creates sessions. One per shard (or per
//! process); it holds no sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::SessionConfig;
use crate::ids::SessionId;
use crate::session::Session;
use crate::site::Sites;

/// A connection the server will not serve: send `reply` (already encoded) and close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Vec<u8>,
}

/// Admission and the per-server counters.
pub struct Server {
    sites: Arc<Sites>,
    next_session: u64,
    /// Added to session ids so that shards never hand out the same id.
    id_stride: u64,
    active: usize,
    max_sessions: usize,
}

impl Server {
    /// A server for one site that answers every connection. `shard`/`shards` make
    /// session ids unique across shards.
    pub fn new(config: Arc<SessionConfig>, shard: u64, shards: u64, max_sessions: usize) -> Server {
        Server::with_sites(Arc::new(Sites::single(config)), shard, shards, max_sessions)
    }

    /// A server for several sites: the local address of each connection selects the
    /// bindings that apply (see [`Sites`]).
    pub fn with_sites(sites: Arc<Sites>, shard: u64, shards: u64, max_sessions: usize) -> Server {
        Server {
            sites,
            next_session: shard,
            id_stride: shards.max(1),
            active: 0,
            max_sessions,
        }
    }

    /// Admits a new control connection from `peer` on `local`.
    pub fn accept(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Session, Refusal> {
        let Some(listener) = self.sites.listener(local) else {
            return Err(Refusal {
                reply: b"421 No site is bound to this address.\r\n".to_vec(),
            });
        };
        if self.active >= self.max_sessions {
            let site = self.sites.site(listener.fallback);
            let text = site
                .messages
                .max_clients
                .as_deref()
                .unwrap_or("Too many connections, try again later.");
            let mut reply = Vec::new();
            if !listener.implicit_tls {
                // Never plaintext on an implicit-FTPS port: just close.
                crate::proto::Reply::multi(421, text.lines().map(str::to_owned).collect())
                    .encode_into(&mut reply);
            }
            return Err(Refusal { reply });
        }
        self.active += 1;
        let id = SessionId(self.next_session);
        self.next_session += self.id_stride;
        Ok(Session::new(
            now,
            id,
            self.sites.clone(),
            listener,
            peer,
            local,
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

    /// The settings of the first site (the only one for [`Server::new`]).
    pub fn config(&self) -> &Arc<SessionConfig> {
        self.sites.site(0)
    }

    pub fn sites(&self) -> &Arc<Sites> {
        &self.sites
    }
}
