//! Users from the configuration (`[[users]]`, `users_file`), checked against their
//! password hashes: argon2id, or the crypt hashes other servers store (see
//! [`crate::auth::crypt`]).

use std::net::SocketAddr;
use std::time::Duration;

use wharf_core::{AuthError, Authenticator, Principal};

use crate::auth::{Accounts, AuthConfig, Provider, UsersProvider};

pub use crate::auth::crypt::{check_hash, hash_password};

/// One `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEntry {
    pub name: String,
    /// An argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), or a
    /// sha512-crypt, sha256-crypt or bcrypt hash.
    pub password_hash: String,
    pub groups: Vec<String>,
}

/// The configured users alone, as an [`Authenticator`] (the server itself uses
/// [`Accounts`], which puts them in a chain with PAM and LDAP). Unknown names cost the
/// same hash work as known ones, so the time a refusal takes does not tell whether the
/// user exists.
#[derive(Debug)]
pub struct UserList(Accounts);

impl UserList {
    /// Users without a login cache: every login runs the full hash.
    pub fn new(users: Vec<UserEntry>) -> UserList {
        UserList::with_login_cache(users, Duration::ZERO)
    }

    /// Users whose successful logins are remembered for `ttl` (zero: never); see
    /// [`crate::login_cache`].
    pub fn with_login_cache(users: Vec<UserEntry>, ttl: Duration) -> UserList {
        let provider: Box<dyn Provider> = Box::new(UsersProvider::new(users));
        UserList(Accounts::from_providers(vec![provider], ttl))
    }

    /// Replaces the accounts (a configuration reload): logins from now on are checked
    /// against `users`. Cached logins stay while their hash is unchanged, so a removed
    /// user or a changed password never hits an old entry.
    pub fn replace_users(&self, users: Vec<UserEntry>) {
        // The users provider alone cannot fail to build.
        let _ = self.0.replace(&AuthConfig::default(), &users);
    }
}

impl Authenticator for UserList {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<Principal, AuthError> {
        self.0.authenticate(user, password, peer)
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
    fn crypt_hashes_of_other_servers_log_in() {
        // `openssl passwd -6 -salt saltsalt s3cret` and a bcrypt hash.
        let sha512 = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";
        let bcrypt = crate::auth::crypt::hash_with("s3cret", crate::auth::crypt::Cost::Bcrypt(4))
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        let users = UserList::new(vec![
            UserEntry {
                name: "proftpd".into(),
                password_hash: sha512.into(),
                groups: vec![],
            },
            UserEntry {
                name: "htpasswd".into(),
                password_hash: bcrypt,
                groups: vec![],
            },
        ]);
        for name in ["proftpd", "htpasswd"] {
            assert!(users.authenticate(name, "s3cret", peer()).is_ok(), "{name}");
            assert_eq!(
                users.authenticate(name, "S3cret", peer()),
                Err(AuthError::BadCredentials)
            );
        }
    }

    #[test]
    fn salts_differ() {
        assert_ne!(hash_password("x").unwrap(), hash_password("x").unwrap());
    }

    #[test]
    fn garbage_hash_is_refused() {
        assert!(check_hash("plaintext").is_err());
        assert!(check_hash("$6$rounds=1000$abc$def").is_err());
        assert!(check_hash("$1$saltsalt$RwMqRjSWhXMKbW72DwzGd1").is_err());
    }
}
