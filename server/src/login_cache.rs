//! A short-lived cache of verified logins, as IIS keeps logon tokens (15 minutes).
//!
//! A slow password hash is the point of argon2, but an automation client that logs in
//! once per file pays it on every connection. After a successful verification the cache
//! keeps a keyed BLAKE2b MAC of `user NUL password` (the key is random per process, so
//! the entries are useless outside it), tied to the PHC string it was verified against
//! (a changed hash invalidates it). A later login with the same password is checked
//! against the MAC in microseconds. Failures are never cached: every wrong password
//! still costs a full verification, so refusals take the same time whether or not the
//! user exists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;

type Mac256 = Blake2bMac<U32>;

/// Entries kept at most; beyond it, expired entries are dropped and, if none were,
/// new logins are not cached (the cache never grows without bound).
const MAX_ENTRIES: usize = 65_536;

pub(crate) struct LoginCache {
    key: [u8; 32],
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    mac: [u8; 32],
    phc: String,
    expires: Instant,
}

impl LoginCache {
    /// `None` when `ttl` is zero (caching off) or the system has no randomness.
    pub(crate) fn new(ttl: Duration) -> Option<LoginCache> {
        if ttl.is_zero() {
            return None;
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        Some(LoginCache {
            key,
            ttl,
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn mac(&self, user: &str, password: &str) -> [u8; 32] {
        // A 32-byte key is always a valid BLAKE2b key.
        let mut m = <Mac256 as Mac>::new_from_slice(&self.key).expect("32-byte key");
        m.update(user.as_bytes());
        m.update(&[0]);
        m.update(password.as_bytes());
        m.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user` logged in with exactly `password` against `phc` within the TTL.
    pub(crate) fn hit(&self, user: &str, password: &str, phc: &str, now: Instant) -> bool {
        let mac = self.mac(user, password);
        let entries = self.lock();
        let Some(e) = entries.get(user) else {
            return false;
        };
        now < e.expires && e.phc == phc && constant_time_eq(&e.mac, &mac)
    }

    /// Remembers a successful verification.
    pub(crate) fn insert(&self, user: &str, password: &str, phc: &str, now: Instant) {
        let mac = self.mac(user, password);
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(user) {
            entries.retain(|_, e| now < e.expires);
            if entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        entries.insert(
            user.to_string(),
            Entry {
                mac,
                phc: phc.to_string(),
                expires: now + self.ttl,
            },
        );
    }
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_only_the_same_password_hash_and_time() {
        let c = LoginCache::new(Duration::from_secs(60)).unwrap();
        let t = Instant::now();
        assert!(!c.hit("alice", "pw", "$h1", t));
        c.insert("alice", "pw", "$h1", t);
        assert!(c.hit("alice", "pw", "$h1", t));
        assert!(!c.hit("alice", "pw2", "$h1", t), "another password");
        assert!(!c.hit("alice", "pw", "$h2", t), "the hash changed");
        assert!(!c.hit("bob", "pw", "$h1", t), "another user");
        assert!(
            !c.hit("alice", "pw", "$h1", t + Duration::from_secs(61)),
            "expired"
        );
        // "a" + "\0b" and "a\0" + "b" must not collide.
        c.insert("a", "\0b", "$h", t);
        assert!(!c.hit("a\0", "b", "$h", t));
    }

    #[test]
    fn zero_ttl_is_off_and_the_size_is_bounded() {
        assert!(LoginCache::new(Duration::ZERO).is_none());
        let c = LoginCache::new(Duration::from_secs(1)).unwrap();
        let t = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(&format!("u{i}"), "pw", "$h", t);
        }
        assert_eq!(c.lock().len(), MAX_ENTRIES);
        // Once the old entries expire, new ones displace them.
        let later = t + Duration::from_secs(2);
        c.insert("new", "pw", "$h", later);
        assert!(c.hit("new", "pw", "$h", later));
        assert_eq!(c.lock().len(), 1);
    }
}
