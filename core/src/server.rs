//! Shared policy state: admits connections and creates sessions. One per shard (or per
//! process); it holds no sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::config::SessionConfig;
use crate::ids::SessionId;
use crate::live::Live;
use crate::log::{LogRecord, SubStatus};
use crate::policy::limits::{ServerPolicy, ServerRules, Slot};
use crate::session::Session;
use crate::site::{Listener, Sites};

/// A connection the server will not serve: send `reply` (already encoded; empty means
/// close without a word) and close. When the site logs, `log` is the refusal's record for
/// the log sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reply: Vec<u8>,
    pub log: Option<Box<LogRecord>>,
}

/// What admission gives a client it lets in.
pub(crate) struct Admitted {
    pub(crate) slot: Slot,
    /// The session's first request is a reverse lookup (IP rules with host names).
    pub(crate) lookup: bool,
}

/// Why admission refused a client: the reply (encoded), the reason and the site that
/// judged it (for the log).
pub(crate) struct Refused {
    pub(crate) reply: Vec<u8>,
    pub(crate) sub: SubStatus,
    pub(crate) site: Arc<SessionConfig>,
}

/// The `421` of a full server or site, in the site's words.
fn busy_reply(site: &SessionConfig, rules: &ServerRules) -> Vec<u8> {
    let text = site
        .messages
        .max_clients
        .as_deref()
        .unwrap_or(&rules.max_clients_message);
    let mut busy = Vec::new();
    crate::proto::Reply::multi(421, text.lines().map(str::to_owned).collect())
        .encode_into(&mut busy);
    busy
}

/// Judges a client `peer` reaching `local`: the server's and then the listener's site's
/// IP rules (those with host-name entries after the session's reverse lookup), logon
/// bans, and the connection limits (the server's when `full`, per address, the
/// blank-host site's own, TLS handshakes). At accept, or once a PROXY protocol header
/// has named the client.
pub(crate) fn judge(
    policy: &Arc<ServerPolicy>,
    sites: &Sites,
    listener: Listener,
    now: Instant,
    (peer, local): (SocketAddr, SocketAddr),
    full: bool,
) -> Result<Admitted, Refused> {
    // Before HOST, the listener's default site (or its fallback) is the one to judge
    // by; a site chosen later by HOST checks its own IP rules again at login.
    let site = sites
        .site(listener.default.unwrap_or(listener.fallback))
        .clone();
    let refuse = |reply: &[u8], sub| Refused {
        reply: reply.to_vec(),
        sub,
        site: site.clone(),
    };
    let ip = peer.ip();
    // Rules that need the client's host name judge after a reverse lookup (the
    // session's first request); the others judge now.
    let rules = policy.rules();
    let denied = [&rules.ip_rules, &site.ip_rules]
        .into_iter()
        .find(|rules| !rules.needs_name(ip) && !rules.allows(ip))
        .map(|rules| rules.deny_action);
    if let Some(action) = denied {
        tracing::info!(%peer, "refused by IP rules");
        return Err(refuse(action.reply(), SubStatus::IpDenied));
    }
    if policy.is_banned(now, ip) {
        tracing::info!(%peer, "refused: banned after failed logins");
        let reply = b"421 Too many failed logins from your address, try again later.\r\n";
        return Err(refuse(reply, SubStatus::LogonBanned));
    }
    let busy = busy_reply(&site, &rules);
    if full {
        return Err(refuse(&busy, SubStatus::TooManyConnections));
    }
    let Some(mut slot) = Slot::admit(policy.clone(), ip) else {
        return Err(refuse(&busy, SubStatus::TooManyFromIp));
    };
    // The blank-host site answers from the start, so the connection counts for it
    // now; a site chosen later counts the connection when it is chosen.
    // (`site` is that blank-host site when there is one.)
    if listener.default.is_some() && !slot.take_site(&site.site_name, site.limits.max_connections) {
        tracing::info!(%peer, site = %site.site_name, "refused: the site is full");
        return Err(refuse(&busy, SubStatus::TooManyForSite));
    }
    // An implicit-FTPS connection is a handshake from its first byte.
    if listener.implicit_tls && !slot.take_handshake() {
        tracing::info!(%peer, "refused: too many TLS handshakes in progress from it");
        return Err(refuse(&busy, SubStatus::TooManyHandshakes));
    }
    // A site chosen later by HOST applies its IP rules at login: its name entries
    // need the name then, so it is looked up now, once.
    let lookup =
        rules.ip_rules.needs_name(ip) || sites.sites_at(local).any(|s| s.ip_rules.needs_name(ip));
    Ok(Admitted { slot, lookup })
}

/// Admission and the per-server counters.
pub struct Server {
    /// The sites new connections are admitted to (a reload replaces them; sessions keep
    /// the generation they were admitted with).
    sites: Arc<Live<Sites>>,
    next_session: u64,
    /// Added to session ids so that shards never hand out the same id.
    id_stride: u64,
    active: usize,
    max_sessions: usize,
    policy: Arc<ServerPolicy>,
    /// The live sessions board every admitted session registers on, when kept.
    board: Option<Arc<crate::monitor::Board>>,
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
        let sites = Arc::new(Live::new(sites));
        Server::with_live_sites(sites, shard, shards, max_sessions)
    }

    /// A server whose sites can be replaced while it runs (a configuration reload; every
    /// shard of a process shares one [`Live`]).
    pub fn with_live_sites(
        sites: Arc<Live<Sites>>,
        shard: u64,
        shards: u64,
        max_sessions: usize,
    ) -> Server {
        Server {
            sites,
            next_session: shard,
            id_stride: shards.max(1),
            active: 0,
            max_sessions,
            policy: Arc::new(ServerPolicy::default()),
            board: None,
        }
    }

    /// Shares `policy` (server-wide IP rules, logon restrictions and connection counts)
    /// with every other `Server` of the process; without it, a server has its own,
    /// unrestricted one.
    pub fn with_policy(mut self, policy: Arc<ServerPolicy>) -> Server {
        self.policy = policy;
        self
    }

    /// Registers every admitted session on `board` (shared by every shard), for a live
    /// sessions page; see [`crate::monitor`].
    pub fn with_board(mut self, board: Arc<crate::monitor::Board>) -> Server {
        self.board = Some(board);
        self
    }

    pub fn policy(&self) -> &Arc<ServerPolicy> {
        &self.policy
    }

    /// Admits a new control connection from `peer` on `local`: the server's and then the
    /// site's IP rules (those with host-name entries after the session's reverse lookup),
    /// logon bans, and the connection limits (server, per address, and
    /// the blank-host site's own).
    pub fn accept(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Session, Refusal> {
        let sites = self.sites.load();
        let implicit_tls = sites.listener(local).is_some_and(|l| l.implicit_tls);
        self.admit(now, peer, local, sites).map_err(|mut refusal| {
            if implicit_tls {
                // Never plaintext on an implicit-FTPS port: just close.
                refusal.reply.clear();
            }
            refusal
        })
    }

    fn admit(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
        sites: Arc<Sites>,
    ) -> Result<Session, Refusal> {
        let Some(listener) = sites.listener(local) else {
            return Err(Refusal {
                reply: b"421 No site is bound to this address.\r\n".to_vec(),
                log: None,
            });
        };
        let rules = self.policy.rules();
        if rules.proxy.expects_header(local) {
            return self.await_proxy_header(now, peer, local, sites, listener);
        }
        let full = self.active >= self.max_sessions;
        let admitted = judge(&self.policy, &sites, listener, now, (peer, local), full);
        let Admitted { slot, lookup } = match admitted {
            Ok(a) => a,
            Err(r) => return Err(self.refusal(&r.site, peer, local, &r.reply, r.sub)),
        };
        self.active += 1;
        let id = self.next_id();
        let live = self.open_live(id, (peer, local), &sites, listener, now);
        let mut session = Session::new(
            now,
            id,
            sites.clone(),
            listener,
            (peer, local),
            slot,
            lookup,
        );
        if let Some(live) = live {
            session.set_live(live);
        }
        Ok(session)
    }

    /// A connection on an address that expects a PROXY protocol header: only a balancer
    /// may open one, and its client is judged once the header names it.
    fn await_proxy_header(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        local: SocketAddr,
        sites: Arc<Sites>,
        listener: Listener,
    ) -> Result<Session, Refusal> {
        let rules = self.policy.rules();
        let site = sites
            .site(listener.default.unwrap_or(listener.fallback))
            .clone();
        if !rules.proxy.trusts(peer.ip()) {
            tracing::info!(%peer, %local, "refused: not a load balancer allowed to send PROXY headers");
            return Err(self.refusal(&site, peer, local, b"", SubStatus::ProxyRefused));
        }
        if self.active >= self.max_sessions {
            let busy = busy_reply(&site, &rules);
            let sub = SubStatus::TooManyConnections;
            return Err(self.refusal(&site, peer, local, &busy, sub));
        }
        self.active += 1;
        let id = self.next_id();
        let slot = Slot::unadmitted(self.policy.clone());
        let deadline = now + rules.proxy.header_timeout;
        let live = self.open_live(id, (peer, local), &sites, listener, now);
        let mut session =
            Session::awaiting_proxy(now, id, sites, listener, (peer, local), slot, deadline);
        if let Some(live) = live {
            session.set_live(live);
        }
        Ok(session)
    }

    /// The session's entry on the live sessions board, when the server keeps one; its
    /// site is the listener's until HOST or USER chooses another.
    fn open_live(
        &self,
        id: SessionId,
        addrs: (SocketAddr, SocketAddr),
        sites: &Sites,
        listener: Listener,
        now: Instant,
    ) -> Option<crate::monitor::LiveHandle> {
        let board = self.board.as_ref()?;
        let site = sites.site(listener.default.unwrap_or(listener.fallback));
        let name: Arc<str> = site.site_name.as_str().into();
        Some(board.open(id, addrs, name, now))
    }

    fn next_id(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += self.id_stride;
        id
    }

    /// A refusal with its log record (when the site logs).
    fn refusal(
        &mut self,
        site: &SessionConfig,
        peer: SocketAddr,
        local: SocketAddr,
        reply: &[u8],
        sub: SubStatus,
    ) -> Refusal {
        let id = self.next_id();
        let log = site.logging.as_ref().map(|cfg| {
            let method = "ControlChannelOpened".into();
            let mut rec = LogRecord::new(id, cfg.site.clone(), peer, local, method);
            rec.status = reply
                .get(..3)
                .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok())
                .unwrap_or(0);
            rec.sub = sub;
            rec.debug = Some(sub.slug().into());
            rec.w3c = cfg.w3c;
            Box::new(rec)
        });
        Refusal {
            reply: reply.to_vec(),
            log,
        }
    }

    /// The reply for a connection the driver cannot serve at all (out of file
    /// descriptors or memory), sent before closing it.
    pub fn busy_reply(&self) -> Refusal {
        Refusal {
            reply: b"421 Server busy, try again later.\r\n".to_vec(),
            log: None,
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
    pub fn config(&self) -> Arc<SessionConfig> {
        self.sites.load().site(0).clone()
    }

    /// The current sites.
    pub fn sites(&self) -> Arc<Sites> {
        self.sites.load()
    }
}
