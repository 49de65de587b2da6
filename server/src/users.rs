//! Users from the configuration, checked with argon2id password hashes (PHC strings).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use wharf_core::live::Live;
use wharf_core::{AuthError, Authenticator, Principal};

use crate::login_cache::LoginCache;

/// One `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    pub password_hash: String,
    pub groups: Vec<String>,
}

/// Checks that `hash` is an argon2 PHC string; returns it unchanged.
pub fn check_hash(hash: &str) -> Result<String, String> {
    // (The parser's own messages name its internals, and misspell some.)
    let parsed = PasswordHash::new(hash).map_err(|_| {
        "not a complete argon2id password hash (one looks like \
         `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`); make one with `wharf passwd`, \
         or set the password with `wharf user passwd NAME`"
            .to_string()
    })?;
    if !parsed.algorithm.as_str().starts_with("argon2") {
        return Err(format!(
            "hash algorithm {:?} is not supported; use argon2id (`wharf passwd`)",
            parsed.algorithm.as_str()
        ));
    }
    Ok(hash.to_string())
}

/// Hashes a password with argon2id and a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The configured users. Unknown names cost the same hash work as known ones, so the
/// time a refusal takes does not tell whether the user exists.
#[derive(Default)]
pub struct UserList {
    /// Replaced by a configuration reload ([`UserList::replace_users`]).
    users: Live<Vec<UserEntry>>,
    cache: Option<Arc<LoginCache>>,
}

impl std::fmt::Debug for UserList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserList")
            .field("users", &self.users)
            .field("login_cache", &self.cache.is_some())
            .finish()
    }
}

impl UserList {
    /// Users without a login cache: every login runs the full hash.
    pub fn new(users: Vec<UserEntry>) -> UserList {
        UserList {
            users: Live::new(Arc::new(users)),
            cache: None,
        }
    }

    /// Users whose successful logins are remembered for `ttl` (zero: never); see
    /// [`crate::login_cache`].
    pub fn with_login_cache(users: Vec<UserEntry>, ttl: Duration) -> UserList {
        UserList {
            users: Live::new(Arc::new(users)),
            cache: LoginCache::new(ttl).map(Arc::new),
        }
    }

    /// Replaces the accounts (a configuration reload): logins from now on are checked
    /// against `users`. The login cache stays: its entries are bound to the password
    /// hash they were verified against, so a removed user or a changed password never
    /// hits an old entry.
    pub fn replace_users(&self, users: Vec<UserEntry>) {
        self.users.replace(Arc::new(users));
    }
}

fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_password("wharf decoy password").unwrap_or_default())
}

impl Authenticator for UserList {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
        _peer: SocketAddr,
    ) -> Result<Principal, AuthError> {
        let users = self.users.load();
        let entry = users.iter().find(|u| u.name == user);
        let hash: &str = match entry {
            Some(u) => &u.password_hash,
            None => decoy_hash(),
        };
        let now = Instant::now();
        let cached = match (entry, &self.cache) {
            (Some(_), Some(c)) => c.hit(user, password, hash, now),
            _ => false,
        };
        let ok = cached || {
            let parsed = PasswordHash::new(hash).map_err(|e| AuthError::Backend(e.to_string()))?;
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        };
        if let (true, false, Some(_), Some(c)) = (ok, cached, entry, &self.cache) {
            c.insert(user, password, hash, now);
        }
        match entry {
            Some(u) if ok => Ok(Principal {
                name: u.name.clone(),
                groups: u.groups.clone(),
                anonymous: false,
            }),
            _ => Err(AuthError::BadCredentials),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    #[test]
    fn cached_logins_still_refuse_wrong_passwords() {
        let users = UserList::with_login_cache(
            vec![UserEntry {
                name: "alice".into(),
                password_hash: hash_password("s3cret").unwrap(),
                groups: vec![],
            }],
            Duration::from_secs(60),
        );
        for _ in 0..2 {
            assert_eq!(
                users.authenticate("alice", "s3cret", peer()).unwrap().name,
                "alice"
            );
            assert_eq!(
                users.authenticate("alice", "s3cret!", peer()),
                Err(AuthError::BadCredentials)
            );
            assert_eq!(
                users.authenticate("nobody", "s3cret", peer()),
                Err(AuthError::BadCredentials)
            );
        }
    }

    #[test]
    fn hash_then_verify() {
        let h = hash_password("s3cret").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert_eq!(check_hash(&h).unwrap(), h);
        let users = UserList::new(vec![UserEntry {
            name: "alice".into(),
            password_hash: h,
            groups: vec!["staff".into()],
        }]);
        let p = users.authenticate("alice", "s3cret", peer()).unwrap();
        assert_eq!(p.name, "alice");
        assert_eq!(p.groups, vec!["staff".to_string()]);
        assert!(!p.anonymous);
        assert_eq!(
            users.authenticate("alice", "wrong", peer()),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(
            users.authenticate("bob", "s3cret", peer()),
            Err(AuthError::BadCredentials)
        );
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
    }

    #[test]
    fn garbage_hash_is_refused() {
        assert!(check_hash("plaintext").is_err());
        assert!(check_hash("$6$rounds=1000$abc$def").is_err());
    }
}
