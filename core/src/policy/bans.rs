//! Logon attempt restrictions (IIS `denyByFailure`): failed logins per client address are
//! counted in a window; reaching the limit bans the address for a while.
//!
//! The table is bounded: at most `capacity` addresses are tracked. Expired entries go
//! first; when the table is still full, the counter that would expire soonest is dropped,
//! and only if every entry is a ban, the ban that ends soonest. IPv6 clients are tracked
//! per prefix (a /64 by default), since anyone holding one address usually holds the
//! whole /64. Time is the driver's `now`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ip::{mask, IpNet};

/// The settings, with IIS's defaults (off; 4 failures in 30 s ban for 30 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogonRestrictions {
    pub enabled: bool,
    /// Failed logins within `window` that ban an address.
    pub max_failures: u32,
    pub window: Duration,
    /// How long a ban lasts.
    pub ban: Duration,
    /// Count and log, but never ban.
    pub logging_only: bool,
    /// Addresses never counted (IIS: allow-listed addresses bypass the restriction).
    pub exempt: Vec<IpNet>,
    /// IPv6 addresses are counted per network of this prefix length (1..=128).
    pub ipv6_prefix: u8,
    /// The most addresses tracked at once.
    pub capacity: usize,
}

impl Default for LogonRestrictions {
    fn default() -> Self {
        LogonRestrictions {
            enabled: false,
            max_failures: 4,
            window: Duration::from_secs(30),
            ban: Duration::from_secs(30),
            logging_only: false,
            exempt: Vec::new(),
            ipv6_prefix: 64,
            capacity: 10_000,
        }
    }
}

/// What one failed login led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Restrictions are off, or the address is exempt.
    NotCounted,
    /// Counted; this many failures in the current window.
    Counted(u32),
    /// This failure reached the limit: the address is banned from now on.
    Banned,
    /// The limit was reached in logging-only mode.
    WouldBan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Counting { until: Instant, failures: u32 },
    Banned { until: Instant },
}

/// The failure counters and bans of a whole process (behind a mutex in
/// [`super::ServerPolicy`]).
#[derive(Debug, Default)]
pub struct BanTable {
    entries: BTreeMap<IpAddr, Entry>,
    /// Counters by the end of their window.
    counting: BTreeSet<(Instant, IpAddr)>,
    /// Bans by their end.
    banned: BTreeSet<(Instant, IpAddr)>,
}

impl BanTable {
    /// The key an address is tracked under.
    fn key(cfg: &LogonRestrictions, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            v4 @ IpAddr::V4(_) => v4,
            v6 => mask(v6, cfg.ipv6_prefix.clamp(1, 128)),
        }
    }

    fn exempt(cfg: &LogonRestrictions, ip: IpAddr) -> bool {
        cfg.exempt.iter().any(|net| net.contains(ip))
    }

    /// Whether `ip` is banned at `now`.
    pub fn is_banned(&mut self, cfg: &LogonRestrictions, now: Instant, ip: IpAddr) -> bool {
        if !cfg.enabled || cfg.logging_only || Self::exempt(cfg, ip) {
            return false;
        }
        self.purge(now);
        let key = Self::key(cfg, ip);
        matches!(self.entries.get(&key), Some(Entry::Banned { until }) if *until > now)
    }

    /// Counts one failed login from `ip`.
    pub fn record_failure(&mut self, cfg: &LogonRestrictions, now: Instant, ip: IpAddr) -> Verdict {
        if !cfg.enabled || cfg.capacity == 0 || Self::exempt(cfg, ip) {
            return Verdict::NotCounted;
        }
        self.purge(now);
        let key = Self::key(cfg, ip);
        let failures = match self.entries.get(&key).copied() {
            Some(Entry::Banned { .. }) => return Verdict::Banned,
            Some(Entry::Counting { until, failures }) => {
                self.counting.remove(&(until, key));
                failures + 1
            }
            None => {
                self.make_room(cfg.capacity);
                1
            }
        };
        if failures >= cfg.max_failures.max(1) {
            if cfg.logging_only {
                // Start a fresh window, so the warning comes once per `max_failures`.
                self.entries.remove(&key);
                return Verdict::WouldBan;
            }
            let until = now + cfg.ban;
            self.entries.insert(key, Entry::Banned { until });
            self.banned.insert((until, key));
            return Verdict::Banned;
        }
        // The window starts at the first failure and does not slide.
        let until = match self.entries.get(&key) {
            Some(Entry::Counting { until, .. }) => *until,
            _ => now + cfg.window,
        };
        self.entries
            .insert(key, Entry::Counting { until, failures });
        self.counting.insert((until, key));
        Verdict::Counted(failures)
    }

    /// Bans `ip` until `until` (a ban another node of a cluster earned), unless it is
    /// exempt or banned longer already. False when nothing changed.
    pub fn ban(
        &mut self,
        cfg: &LogonRestrictions,
        now: Instant,
        ip: IpAddr,
        until: Instant,
    ) -> bool {
        if !cfg.enabled
            || cfg.logging_only
            || cfg.capacity == 0
            || Self::exempt(cfg, ip)
            || until <= now
        {
            return false;
        }
        self.purge(now);
        let key = Self::key(cfg, ip);
        match self.entries.get(&key).copied() {
            Some(Entry::Banned { until: u }) if u >= until => return false,
            Some(Entry::Banned { until: u }) => {
                self.banned.remove(&(u, key));
            }
            Some(Entry::Counting { until: u, .. }) => {
                self.counting.remove(&(u, key));
            }
            None => self.make_room(cfg.capacity),
        }
        self.entries.insert(key, Entry::Banned { until });
        self.banned.insert((until, key));
        true
    }

    /// Forgets everything that expired by `now`.
    fn purge(&mut self, now: Instant) {
        for set in [&mut self.counting, &mut self.banned] {
            while let Some(&(until, key)) = set.first() {
                if until > now {
                    break;
                }
                set.pop_first();
                self.entries.remove(&key);
            }
        }
    }

    /// Drops entries until a new one fits: the counter nearest its end first, then (only
    /// when every entry is a ban) the ban nearest its end.
    fn make_room(&mut self, capacity: usize) {
        while self.entries.len() >= capacity {
            let victim = self
                .counting
                .pop_first()
                .or_else(|| self.banned.pop_first());
            match victim {
                Some((_, key)) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
    }

    /// Addresses (or IPv6 networks) tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The internal indexes agree with the entries (for tests).
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.counting.len() + self.banned.len() != self.entries.len() {
            return Err(format!(
                "{} counters + {} bans != {} entries",
                self.counting.len(),
                self.banned.len(),
                self.entries.len()
            ));
        }
        for &(until, key) in &self.counting {
            match self.entries.get(&key) {
                Some(Entry::Counting { until: u, .. }) if *u == until => {}
                other => return Err(format!("counter {key} is {other:?}")),
            }
        }
        for &(until, key) in &self.banned {
            match self.entries.get(&key) {
                Some(Entry::Banned { until: u }) if *u == until => {}
                other => return Err(format!("ban {key} is {other:?}")),
            }
        }
        Ok(())
    }
}
