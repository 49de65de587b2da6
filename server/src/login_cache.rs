//! A short-lived cache of verified logins, as IIS keeps logon tokens (15 minutes).
//!
//! A slow password hash is the point of argon2, and a round trip to PAM or a directory
//! costs more still, but an automation client that logs in once per file pays it on
//! every connection. After a successful check, whatever provider made it, the cache
//! keeps a keyed BLAKE2b MAC of `user NUL password` (the key is random per process, so
//! the entries are useless outside it), the principal the check produced, and a token
//! naming what it was checked against (the users file's hash, or the provider and the
//! configuration generation: a changed hash, or a reload that changes a provider,
//! invalidates it). A later login with the same password is checked against the MAC in
//! microseconds. Failures are never cached: every wrong password still costs a full
//! check, so refusals take the same time whether or not the user exists.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use blake2::digest::consts::U32;
use blake2::digest::Mac;
use blake2::Blake2bMac;
use wharf_core::Principal;

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
    token: String,
    principal: Principal,
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

    /// The principal `user` got when it logged in with exactly `password` within the
    /// TTL, and the token it was checked against (the caller checks that it still holds).
    pub(crate) fn hit(
        &self,
        user: &str,
        password: &str,
        now: Instant,
    ) -> Option<(String, Principal)> {
        let mac = self.mac(user, password);
        let entries = self.lock();
        let e = entries.get(user)?;
        (now < e.expires && constant_time_eq(&e.mac, &mac))
            .then(|| (e.token.clone(), e.principal.clone()))
    }

    /// Remembers a successful check against `token`, which produced `principal`.
    pub(crate) fn insert(
        &self,
        user: &str,
        password: &str,
        token: &str,
        principal: &Principal,
        now: Instant,
    ) {
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
                token: token.to_string(),
                principal: principal.clone(),
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

    fn p(name: &str) -> Principal {
        Principal::user(name, vec!["staff".into()])
    }

    #[test]
    fn hits_only_the_same_password_and_time_and_keeps_the_principal() {
        let c = LoginCache::new(Duration::from_secs(60)).unwrap();
        let t = Instant::now();
        assert!(c.hit("alice", "pw", t).is_none());
        c.insert("alice", "pw", "$h1", &p("alice"), t);
        assert_eq!(c.hit("alice", "pw", t), Some(("$h1".into(), p("alice"))));
        assert!(c.hit("alice", "pw2", t).is_none(), "another password");
        assert!(c.hit("bob", "pw", t).is_none(), "another user");
        assert!(
            c.hit("alice", "pw", t + Duration::from_secs(61)).is_none(),
            "expired"
        );
        // "a" + "\0b" and "a\0" + "b" must not collide.
        c.insert("a", "\0b", "$h", &p("a"), t);
        assert!(c.hit("a\0", "b", t).is_none());
    }

    #[test]
    fn zero_ttl_is_off_and_the_size_is_bounded() {
        assert!(LoginCache::new(Duration::ZERO).is_none());
        let c = LoginCache::new(Duration::from_secs(1)).unwrap();
        let t = Instant::now();
        for i in 0..MAX_ENTRIES + 10 {
            c.insert(&format!("u{i}"), "pw", "$h", &p("u"), t);
        }
        assert_eq!(c.lock().len(), MAX_ENTRIES);
        // Once the old entries expire, new ones displace them.
        let later = t + Duration::from_secs(2);
        c.insert("new", "pw", "$h", &p("new"), later);
        assert!(c.hit("new", "pw", later).is_some());
        assert_eq!(c.lock().len(), 1);
    }
}
