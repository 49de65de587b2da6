//! Limits: the process-wide [`ServerPolicy`] (IP rules, logon restrictions, connections
//! per address, per user and per site, uploads in progress) and a site's [`SiteLimits`]
//! (its connection limit, minimum data rate, bandwidth).
//!
//! A session's share of the counts is a [`Slot`], released when the session is dropped,
//! so no driver bookkeeping can leak a count.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::bans::{BanTable, LogonRestrictions, Verdict};
use super::ip::IpRules;
use super::logins::{TlsLogins, Token};
use crate::live::Live;
use crate::path::VPath;

/// The default of [`ServerRules::max_handshakes_per_ip`]: far above what one client (or
/// an office behind one NAT address) has in flight, far below what starves a server.
pub const DEFAULT_MAX_HANDSHAKES_PER_IP: u32 = 32;

/// Server-wide rules (one process, every shard, every site).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerRules {
    /// Checked at accept, before the site's own rules.
    pub ip_rules: IpRules,
    pub logon: LogonRestrictions,
    /// Control connections from one address; 0: no limit.
    pub max_per_ip: u32,
    /// Logged-in sessions of one user name; 0: no limit.
    pub max_per_user: u32,
    /// Control-channel TLS handshakes in progress from one address (AUTH TLS, or an
    /// implicit-FTPS connection until its handshake completes); 0: no limit. With the
    /// handshake timeout, this keeps one address's slow or stalled handshakes from
    /// holding the server's attention.
    pub max_handshakes_per_ip: u32,
    /// The text of the `421` a connection over a limit gets (IIS `maxClientsMessage`).
    pub max_clients_message: String,
    /// The load balancers whose connections start with a PROXY protocol header, and
    /// where (see [`crate::proxy`]).
    pub proxy: crate::proxy::ProxyRules,
}

impl Default for ServerRules {
    fn default() -> Self {
        ServerRules {
            ip_rules: IpRules::default(),
            logon: LogonRestrictions::default(),
            max_per_ip: 0,
            max_per_user: 0,
            max_handshakes_per_ip: DEFAULT_MAX_HANDSHAKES_PER_IP,
            max_clients_message: "Too many connections, try again later.".into(),
            proxy: crate::proxy::ProxyRules::default(),
        }
    }
}

/// Connections per address and per user (another node's, or this one's to share).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteCounts {
    pub per_ip: BTreeMap<IpAddr, u32>,
    pub per_user: BTreeMap<String, u32>,
}

impl RemoteCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &RemoteCounts) {
        for (ip, n) in &other.per_ip {
            *self.per_ip.entry(*ip).or_insert(0) += n;
        }
        for (user, n) in &other.per_user {
            *self.per_user.entry(user.clone()).or_insert(0) += n;
        }
    }
}

/// Where a process's failed logins go besides its own ban table: the nodes of a cluster
/// share them (`wharf_server::cluster`). Called on the event loops: it must not block.
pub trait PolicyEvents: Send + Sync + std::fmt::Debug {
    /// A failed login from `ip` was counted here (with `verdict`).
    fn failed_login(&self, ip: IpAddr, verdict: Verdict);
}

/// The rules and the state every shard of a process shares.
#[derive(Debug, Default)]
pub struct ServerPolicy {
    /// Told of every counted failed login (a cluster's shared state).
    events: std::sync::OnceLock<Arc<dyn PolicyEvents>>,
    /// Replaced by a configuration reload; the counts below carry over.
    rules: Live<ServerRules>,
    bans: Mutex<BanTable>,
    per_ip: Mutex<BTreeMap<IpAddr, u32>>,
    per_user: Mutex<BTreeMap<Box<str>, u32>>,
    /// The other nodes' connections per address and per user (a cluster's shared
    /// counts, as last heard; see [`ServerPolicy::set_remote_counts`]).
    remote: Mutex<RemoteCounts>,
    /// TLS handshakes in progress per address.
    handshakes: Mutex<BTreeMap<IpAddr, u32>>,
    /// Control connections per site (by [`ServerPolicy::site_id`]), for the sites that
    /// have a connection limit.
    per_site: Mutex<BTreeMap<u32, u32>>,
    /// A number for each site name seen: counts follow a site by name, whatever its
    /// place in the sites table (which a reload may change).
    site_ids: Mutex<BTreeMap<Box<str>, u32>>,
    /// Storage paths being written in place (APPE, REST+STOR), with their writers.
    uploads: Mutex<BTreeMap<VPath, u32>>,
    /// Control connections with TLS, for the data connections that resume another
    /// connection's session of the same login.
    tls_logins: Mutex<TlsLogins>,
}

/// Never panics on a poisoned mutex: the tables stay usable (each update is one step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ServerPolicy {
    pub fn new(rules: ServerRules) -> ServerPolicy {
        ServerPolicy {
            rules: Live::new(Arc::new(rules)),
            ..ServerPolicy::default()
        }
    }

    /// The current rules (a reload may replace them; see [`ServerPolicy::set_rules`]).
    pub fn rules(&self) -> Arc<ServerRules> {
        self.rules.load()
    }

    /// Replaces the rules (a configuration reload). Bans and connection counts carry
    /// over; a limit applies to the connections counted under it: a session admitted
    /// while a limit was off is not counted when it is turned on.
    pub fn set_rules(&self, rules: ServerRules) {
        self.rules.replace(Arc::new(rules));
    }

    /// Whether `ip` is banned by the logon restrictions at `now`.
    pub fn is_banned(&self, now: Instant, ip: IpAddr) -> bool {
        let rules = self.rules();
        if !rules.logon.enabled {
            return false;
        }
        lock(&self.bans).is_banned(&rules.logon, now, ip)
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&self, now: Instant, ip: IpAddr) -> Verdict {
        let rules = self.rules();
        if !rules.logon.enabled || rules.ip_rules.explicitly_allows(ip) {
            return Verdict::NotCounted;
        }
        let verdict = lock(&self.bans).record_failure(&rules.logon, now, ip);
        if let (Some(events), Verdict::Counted(_) | Verdict::Banned) = (self.events.get(), verdict)
        {
            events.failed_login(ip, verdict);
        }
        verdict
    }

    /// Sends every counted failed login to `events` too (once; false if already set).
    pub fn set_events(&self, events: Arc<dyn PolicyEvents>) -> bool {
        self.events.set(events).is_ok()
    }

    /// Bans `ip` until `until` (a ban earned elsewhere in a cluster); false when nothing
    /// changed (off, exempt, or banned as long already).
    pub fn import_ban(&self, now: Instant, ip: IpAddr, until: Instant) -> bool {
        let rules = self.rules();
        if rules.ip_rules.explicitly_allows(ip) {
            return false;
        }
        lock(&self.bans).ban(&rules.logon, now, ip, until)
    }

    /// The logon restrictions in force (a cluster shares counts under them).
    pub fn logon(&self) -> LogonRestrictions {
        self.rules().logon.clone()
    }

    /// Addresses the ban table tracks.
    pub fn tracked_addresses(&self) -> usize {
        lock(&self.bans).len()
    }

    /// Takes a connection slot for `ip`; false when its limit is reached.
    fn take_ip(&self, ip: IpAddr) -> bool {
        let elsewhere = lock(&self.remote).per_ip.get(&ip).copied().unwrap_or(0);
        let max = self.rules().max_per_ip;
        // Over the limit on the other nodes already: refused (0 stays "no limit").
        max > elsewhere && take(&mut lock(&self.per_ip), ip, max - elsewhere)
    }

    fn release_ip(&self, ip: IpAddr) {
        release(&mut lock(&self.per_ip), &ip);
    }

    fn take_user(&self, user: &str) -> bool {
        let elsewhere = lock(&self.remote).per_user.get(user).copied().unwrap_or(0);
        let max = self.rules().max_per_user;
        max > elsewhere && take(&mut lock(&self.per_user), Box::from(user), max - elsewhere)
    }

    /// This process's connections per address and per user (what a cluster node shares;
    /// counted only while the matching limit is set).
    pub fn local_counts(&self) -> RemoteCounts {
        RemoteCounts {
            per_ip: lock(&self.per_ip).clone(),
            per_user: lock(&self.per_user)
                .iter()
                .map(|(u, n)| (u.to_string(), *n))
                .collect(),
        }
    }

    /// The other nodes' connections, which count against `max_per_ip` and
    /// `max_per_user` here too (replaced whole at each refresh).
    pub fn set_remote_counts(&self, counts: RemoteCounts) {
        *lock(&self.remote) = counts;
    }

    fn release_user(&self, user: &str) {
        release(&mut lock(&self.per_user), user);
    }

    fn release_site(&self, site: u32) {
        release(&mut lock(&self.per_site), &site);
    }

    /// The number standing for the site named `name`.
    fn site_id(&self, name: &str) -> u32 {
        let mut ids = lock(&self.site_ids);
        if let Some(&id) = ids.get(name) {
            return id;
        }
        let id = ids.len() as u32;
        ids.insert(name.into(), id);
        id
    }

    /// Connections counted against the site named `site` now (0 for a site without a
    /// limit: nothing is counted then).
    pub fn connections_to(&self, site: &str) -> u32 {
        let id = self.site_id(site);
        lock(&self.per_site).get(&id).copied().unwrap_or(0)
    }

    /// Control-channel TLS handshakes in progress from `ip` (0 when no limit is set).
    pub fn handshakes_from(&self, ip: IpAddr) -> u32 {
        lock(&self.handshakes)
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Connections from `ip` now (0 when no limit is set: nothing is counted then).
    pub fn connections_from(&self, ip: IpAddr) -> u32 {
        lock(&self.per_ip)
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Whether a data connection of the control session `own` that resumed a TLS
    /// session carrying `presented` is that session's client: `presented` is `own`, or
    /// the token of a control connection of the same client (see [`super::logins`]).
    pub fn tls_vouches(&self, own: &Token, presented: &[u8]) -> bool {
        presented == own || lock(&self.tls_logins).vouches(own, presented)
    }

    /// Whether a storage path is being written in place by some session.
    pub fn upload_in_progress(&self, path: &VPath) -> bool {
        lock(&self.uploads).contains_key(path)
    }
}

fn take<K: Ord>(map: &mut BTreeMap<K, u32>, key: K, max: u32) -> bool {
    // Only called with `max > 0`, so a refusal never leaves a zero entry behind.
    let n = map.entry(key).or_insert(0);
    if *n >= max {
        return false;
    }
    *n += 1;
    true
}

fn release<K: Ord + ?Sized, Q: Ord + std::borrow::Borrow<K>>(map: &mut BTreeMap<Q, u32>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A session's share of the shared counts: its address (when a per-address limit is
/// set), its user (when a per-user limit is set), its site (when the site has a
/// connection limit), its TLS handshake in progress, its in-place upload. Dropping the
/// slot releases all of them.
#[derive(Debug)]
pub struct Slot {
    policy: Arc<ServerPolicy>,
    /// The peer's address (canonical), whatever is counted.
    addr: IpAddr,
    /// Whether the connection is counted against its address (only when a limit is set).
    ip: bool,
    /// Whether a handshake of this session is counted (only when a limit is set).
    handshake: bool,
    user: Option<Box<str>>,
    /// The site's [`ServerPolicy::site_id`] (a number, so that an idle session stays
    /// within its memory budget).
    site: Option<u32>,
    upload: Option<VPath>,
    /// The session's TLS binding token once its control handshake is complete (it is in
    /// the policy's table of TLS logins until the slot goes).
    tls: Option<Box<Token>>,
}

impl Slot {
    /// Admits a connection from `ip`: `None` when the per-address limit is reached.
    pub fn admit(policy: Arc<ServerPolicy>, ip: IpAddr) -> Option<Slot> {
        let ip = ip.to_canonical();
        let counted = policy.rules().max_per_ip > 0;
        if counted && !policy.take_ip(ip) {
            return None;
        }
        Some(Slot {
            policy,
            addr: ip,
            ip: counted,
            handshake: false,
            user: None,
            site: None,
            upload: None,
            tls: None,
        })
    }

    /// A slot that counts nothing yet: a connection whose client is not known until its
    /// PROXY protocol header arrives (then [`Slot::admit`] judges the client).
    pub fn unadmitted(policy: Arc<ServerPolicy>) -> Slot {
        Slot {
            policy,
            addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            ip: false,
            handshake: false,
            user: None,
            site: None,
            upload: None,
            tls: None,
        }
    }

    pub fn policy(&self) -> &Arc<ServerPolicy> {
        &self.policy
    }

    /// Counts a logged-in session of `user`; false when the per-user limit is reached.
    /// A session counts for one user at a time.
    pub fn take_user(&mut self, user: &str) -> bool {
        self.release_user();
        if self.policy.rules().max_per_user > 0 {
            if !self.policy.take_user(user) {
                return false;
            }
            self.user = Some(Box::from(user));
        }
        if let Some(token) = &self.tls {
            lock(&self.policy.tls_logins).set_user(token, Some(user));
        }
        true
    }

    /// Forgets the user (REIN, or a login that failed afterwards).
    pub fn release_user(&mut self) {
        if let Some(token) = &self.tls {
            lock(&self.policy.tls_logins).set_user(token, None);
        }
        if let Some(user) = self.user.take() {
            self.policy.release_user(&user);
        }
    }

    /// The control connection's TLS handshake completed, resuming the session carrying
    /// `resumed` if it did (see [`super::logins`]).
    pub fn tls_established(&mut self, token: Token, resumed: Option<&[u8]>) {
        let resumed = resumed.and_then(|r| Token::try_from(r).ok());
        lock(&self.policy.tls_logins).established(token, self.addr, resumed);
        self.end_tls();
        self.tls = Some(Box::new(token));
    }

    /// The control connection no longer speaks TLS (CCC keeps it: the session still
    /// holds the secret; this is for the slot's end).
    fn end_tls(&mut self) {
        if let Some(token) = self.tls.take() {
            lock(&self.policy.tls_logins).remove(&token);
        }
    }

    /// Counts the connection against the site named `site`, whose limit is `max` (0:
    /// none), and no longer against the site it counted for before; false when the site
    /// is full (the old count stays then). A session counts for one site at a time.
    pub fn take_site(&mut self, site: &str, max: u32) -> bool {
        let id = self.policy.site_id(site);
        if self.site == Some(id) {
            return true;
        }
        if max > 0 && !take(&mut lock(&self.policy.per_site), id, max) {
            return false;
        }
        self.release_site();
        self.site = (max > 0).then_some(id);
        true
    }

    /// Counts the connection against no site (REIN on an address without a blank-host
    /// site).
    pub fn release_site(&mut self) {
        if let Some(site) = self.site.take() {
            self.policy.release_site(site);
        }
    }

    /// Counts a control-channel TLS handshake from this session's address until
    /// [`Slot::end_handshake`] (or drop); false when the address has the most in progress
    /// the rules allow. A session has one handshake at a time.
    pub fn take_handshake(&mut self) -> bool {
        let max = self.policy.rules().max_handshakes_per_ip;
        if self.handshake || max == 0 {
            return true;
        }
        if !take(&mut lock(&self.policy.handshakes), self.addr, max) {
            return false;
        }
        self.handshake = true;
        true
    }

    /// The handshake is over (complete, failed, or the session is ending).
    pub fn end_handshake(&mut self) {
        if std::mem::take(&mut self.handshake) {
            release(&mut lock(&self.policy.handshakes), &self.addr);
        }
    }

    /// Marks `path` as being written in place until [`Slot::end_upload`] or drop.
    pub fn start_upload(&mut self, path: VPath) {
        self.end_upload();
        *lock(&self.policy.uploads).entry(path.clone()).or_insert(0) += 1;
        self.upload = Some(path);
    }

    pub fn end_upload(&mut self) {
        if let Some(path) = self.upload.take() {
            release(&mut lock(&self.policy.uploads), &path);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if std::mem::take(&mut self.ip) {
            self.policy.release_ip(self.addr);
        }
        // First, so that the TLS login table keeps the session's user (see
        // `TlsLogins::remove`).
        self.end_tls();
        self.release_user();
        self.release_site();
        self.end_handshake();
        self.end_upload();
    }
}

/// A site's limits: connections and transfers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SiteLimits {
    /// Control connections to this site at once, over every shard (IIS `maxConnections`
    /// of a site); 0: no limit. A connection counts from the moment its site is known:
    /// at accept for the blank-host site of its address, else when HOST, `USER
    /// host|user` or the SNI name chooses the site.
    pub max_connections: u32,
    /// A transfer slower than this over a data-timeout window is dropped (IIS
    /// `minBytesPerSecond`, 240 in IIS; 0: off).
    pub min_bytes_per_second: u64,
    /// Bytes per second per transfer for everyone; `None`: unlimited.
    pub bandwidth: Option<u64>,
    /// Per transfer for anonymous users.
    pub anonymous_bandwidth: Option<u64>,
    /// Per transfer for these users (by name).
    pub user_bandwidth: BTreeMap<String, u64>,
}

impl SiteLimits {
    /// The bandwidth limit of a transfer by `user` (the tightest that applies).
    pub fn rate_for(&self, user: Option<&str>, anonymous: bool) -> Option<u64> {
        let own = match (anonymous, user) {
            (true, _) => self.anonymous_bandwidth,
            (false, Some(name)) => self.user_bandwidth.get(name).copied(),
            (false, None) => None,
        };
        match (self.bandwidth, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .filter(|&r| r > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_slots_are_counted_and_released_on_drop() {
        let policy = Arc::new(ServerPolicy::new(ServerRules {
            max_per_ip: 2,
            ..ServerRules::default()
        }));
        let a = Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        let b = Slot::admit(policy.clone(), ip("::ffff:192.0.2.1")).unwrap();
        assert!(Slot::admit(policy.clone(), ip("192.0.2.1")).is_none());
        let other = Slot::admit(policy.clone(), ip("192.0.2.2"));
        assert!(other.is_some());
        assert_eq!(policy.connections_from(ip("192.0.2.1")), 2);
        drop(a);
        let c = Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        drop((b, c, other));
        assert_eq!(policy.connections_from(ip("192.0.2.1")), 0);
        assert!(lock(&policy.per_ip).is_empty(), "no zero entries are left");
    }

    #[test]
    fn other_nodes_connections_count_against_the_limits() {
        let policy = Arc::new(ServerPolicy::new(ServerRules {
            max_per_ip: 2,
            max_per_user: 1,
            ..ServerRules::default()
        }));
        let mut elsewhere = RemoteCounts::default();
        elsewhere.per_ip.insert(ip("192.0.2.1"), 1);
        elsewhere.per_user.insert("alice".into(), 1);
        policy.set_remote_counts(elsewhere.clone());
        let mut a = Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        assert!(Slot::admit(policy.clone(), ip("192.0.2.1")).is_none());
        assert!(!a.take_user("alice"), "alice is logged in on another node");
        assert!(a.take_user("bob"));
        let mine = policy.local_counts();
        assert_eq!(mine.per_ip.get(&ip("192.0.2.1")), Some(&1));
        assert_eq!(mine.per_user.get("bob"), Some(&1));
        elsewhere.add(&elsewhere.clone());
        assert_eq!(elsewhere.per_ip.get(&ip("192.0.2.1")), Some(&2));
        policy.set_remote_counts(elsewhere);
        drop(a);
        assert!(
            Slot::admit(policy.clone(), ip("192.0.2.1")).is_none(),
            "full elsewhere"
        );
        policy.set_remote_counts(RemoteCounts::default());
        assert!(Slot::admit(policy.clone(), ip("192.0.2.1")).is_some());
    }

    #[test]
    fn nothing_is_counted_without_limits() {
        let policy = Arc::new(ServerPolicy::default());
        let mut slots: Vec<Slot> = (0..100)
            .map(|_| Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap())
            .collect();
        for s in &mut slots {
            assert!(s.take_user("alice"));
        }
        assert!(lock(&policy.per_ip).is_empty());
        assert!(lock(&policy.per_user).is_empty());
    }

    #[test]
    fn handshakes_per_ip_are_limited_and_released() {
        let policy = Arc::new(ServerPolicy::new(ServerRules {
            max_handshakes_per_ip: 2,
            ..ServerRules::default()
        }));
        let slot = |a: &str| Slot::admit(policy.clone(), ip(a)).unwrap();
        let (mut a, mut b, mut c) = (
            slot("192.0.2.1"),
            slot("::ffff:192.0.2.1"),
            slot("192.0.2.1"),
        );
        let mut other = slot("2001:db8::1");
        assert!(a.take_handshake());
        assert!(
            a.take_handshake(),
            "one handshake per session, counted once"
        );
        assert!(b.take_handshake());
        assert!(!c.take_handshake(), "the address has two in progress");
        assert!(other.take_handshake(), "other addresses are not affected");
        assert_eq!(policy.handshakes_from(ip("192.0.2.1")), 2);
        a.end_handshake();
        a.end_handshake();
        assert_eq!(
            policy.handshakes_from(ip("192.0.2.1")),
            1,
            "ending twice releases once"
        );
        assert!(c.take_handshake());
        drop((b, c));
        other.end_handshake();
        assert!(
            lock(&policy.handshakes).is_empty(),
            "no zero entries are left"
        );
        // Without a limit nothing is counted.
        let free = Arc::new(ServerPolicy::new(ServerRules {
            max_handshakes_per_ip: 0,
            ..ServerRules::default()
        }));
        let mut slots: Vec<Slot> = (0..50)
            .map(|_| Slot::admit(free.clone(), ip("192.0.2.1")).unwrap())
            .collect();
        assert!(slots.iter_mut().all(Slot::take_handshake));
        assert!(lock(&free.handshakes).is_empty());
    }

    #[test]
    fn per_user_sessions_are_limited_and_released() {
        let policy = Arc::new(ServerPolicy::new(ServerRules {
            max_per_user: 1,
            ..ServerRules::default()
        }));
        let mut a = Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        let mut b = Slot::admit(policy.clone(), ip("192.0.2.2")).unwrap();
        assert!(a.take_user("alice"));
        assert!(!b.take_user("alice"));
        assert!(b.take_user("bob"));
        a.release_user();
        assert!(b.take_user("alice"), "switching user releases bob");
        assert!(a.take_user("bob"));
        drop(b);
        let mut c = Slot::admit(policy.clone(), ip("192.0.2.3")).unwrap();
        assert!(c.take_user("alice"));
        drop((a, c));
        assert!(lock(&policy.per_user).is_empty());
    }

    #[test]
    fn per_site_connections_are_limited_moved_and_released() {
        let policy = Arc::new(ServerPolicy::default());
        let slot = || Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        let (mut a, mut b, mut c) = (slot(), slot(), slot());
        assert!(a.take_site("s0", 2));
        assert!(b.take_site("s0", 2));
        assert!(!c.take_site("s0", 2), "site 0 is full");
        assert!(c.take_site("s1", 1));
        assert!(a.take_site("s0", 2), "taking the same site again is free");
        assert_eq!(policy.connections_to("s0"), 2);
        // Moving to another site frees the old one; a refused move keeps it.
        assert!(!b.take_site("s1", 1));
        assert_eq!(policy.connections_to("s0"), 2);
        assert!(a.take_site("s2", 0), "a site without a limit always admits");
        assert_eq!(policy.connections_to("s0"), 1);
        assert_eq!(policy.connections_to("s2"), 0, "and counts nothing");
        assert!(c.take_site("s0", 2));
        assert_eq!(policy.connections_to("s1"), 0);
        b.release_site();
        drop(c);
        assert!(lock(&policy.per_site).is_empty());
        drop(a);
    }

    #[test]
    fn uploads_in_progress_are_tracked_until_the_slot_lets_go() {
        let policy = Arc::new(ServerPolicy::default());
        let path = VPath::root().resolve("/a/f").unwrap();
        let mut a = Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        let mut b = Slot::admit(policy.clone(), ip("192.0.2.1")).unwrap();
        a.start_upload(path.clone());
        b.start_upload(path.clone());
        a.end_upload();
        assert!(policy.upload_in_progress(&path));
        drop(b);
        assert!(!policy.upload_in_progress(&path));
    }

    #[test]
    fn bandwidth_for_users() {
        let limits = SiteLimits {
            bandwidth: Some(1000),
            anonymous_bandwidth: Some(100),
            user_bandwidth: [("fast".to_string(), 5000), ("slow".to_string(), 10)].into(),
            ..SiteLimits::default()
        };
        assert_eq!(limits.rate_for(Some("anonymous"), true), Some(100));
        assert_eq!(limits.rate_for(Some("fast"), false), Some(1000));
        assert_eq!(limits.rate_for(Some("slow"), false), Some(10));
        assert_eq!(limits.rate_for(Some("other"), false), Some(1000));
        assert_eq!(SiteLimits::default().rate_for(Some("x"), false), None);
    }
}
