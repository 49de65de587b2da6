//! Where accounts come from: the users file (`users`), the system's accounts through PAM
//! (`pam`), and an LDAP directory or Active Directory (`ldap`), tried in the order the
//! configuration lists them (`[auth] providers`).
//!
//! The first provider that knows the user decides: its yes or no is the answer, and the
//! providers after it are not asked. One that does not know the name passes it on. One
//! that cannot answer (PAM failing, the directory down or slow) fails the login with
//! [`AuthError::Backend`], which the core answers with a `530` that says so and logs with
//! sub-status 44 (`logon-unavailable`): it never falls through to the next provider, so
//! a directory outage cannot let an older local account with the same name in.
//!
//! All of it runs where password checks run (the runtimes' worker pool or blocking
//! pool, never an event loop), each provider bounded by its own timeout, and behind the
//! one [`LoginCache`], so failed-login delays, bans and the cache behave the same
//! whatever the provider.

pub mod crypt;
pub mod import;
pub mod ldap;
#[cfg(target_os = "linux")]
pub mod pam;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use wharf_core::live::Live;
use wharf_core::{AuthError, Authenticator, Principal};

use crate::login_cache::LoginCache;
use crate::users::UserEntry;

/// What one provider makes of one login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The provider has no such user: the next one is asked.
    Unknown,
    /// The provider knows the user and refuses the login; the reason is logged, never
    /// told to the client.
    Refused(String),
    /// The credentials are good.
    Accepted(Principal),
}

/// One source of accounts. Runs off the event loops; must bound its own time.
pub trait Provider: Send + Sync {
    /// `users`, `pam` or `ldap`, for logs and messages.
    fn kind(&self) -> &'static str;

    /// Checks `login`/`password`. `Err`: the provider could not answer (the login
    /// fails without falling through), with the reason for the log.
    fn check(&self, login: &str, password: &str, peer: SocketAddr) -> Result<Verdict, String>;

    /// What a cached success of `login` was checked against, compared on every cache
    /// hit: the users file's hash, or nothing for providers whose entries live only as
    /// long as the configuration (the chain adds its generation).
    fn cache_token(&self, _login: &str) -> Option<String> {
        Some(String::new())
    }
}

/// Which providers, in which order, with their settings (the `[auth]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    pub providers: Vec<ProviderConfig>,
}

impl Default for AuthConfig {
    /// The users file alone.
    fn default() -> AuthConfig {
        AuthConfig {
            providers: vec![ProviderConfig::Users],
        }
    }
}

impl AuthConfig {
    /// Whether accounts can come from outside the configuration (PAM, LDAP), so that
    /// user and group names in rules cannot all be checked when it is read.
    pub fn has_external(&self) -> bool {
        self.providers
            .iter()
            .any(|p| !matches!(p, ProviderConfig::Users))
    }

    /// The LDAP providers' settings.
    pub fn ldap(&self) -> impl Iterator<Item = &ldap::LdapConfig> {
        self.providers.iter().filter_map(|p| match p {
            ProviderConfig::Ldap(l) => Some(&**l),
            _ => None,
        })
    }
}

/// One provider's settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    /// `[[users]]` and `users_file`.
    Users,
    #[cfg(target_os = "linux")]
    Pam(Box<pam::PamConfig>),
    Ldap(Box<ldap::LdapConfig>),
}

/// The users of the configuration: names with crypt or argon2 hashes.
pub struct UsersProvider {
    users: Vec<UserEntry>,
}

impl UsersProvider {
    pub fn new(users: Vec<UserEntry>) -> UsersProvider {
        UsersProvider { users }
    }

    fn find(&self, login: &str) -> Option<&UserEntry> {
        self.users.iter().find(|u| u.name == login)
    }
}

impl Provider for UsersProvider {
    fn kind(&self) -> &'static str {
        "users"
    }

    fn check(&self, login: &str, password: &str, _peer: SocketAddr) -> Result<Verdict, String> {
        let Some(u) = self.find(login) else {
            return Ok(Verdict::Unknown);
        };
        match crypt::verify(password, &u.password_hash) {
            Ok(true) => Ok(Verdict::Accepted(Principal::user(
                u.name.clone(),
                u.groups.clone(),
            ))),
            Ok(false) => Ok(Verdict::Refused("wrong password".into())),
            Err(e) => Err(format!(
                "the password hash of {:?} cannot be used: {e}",
                u.name
            )),
        }
    }

    fn cache_token(&self, login: &str) -> Option<String> {
        self.find(login).map(|u| u.password_hash.clone())
    }
}

/// The providers of one configuration.
struct Chain {
    providers: Vec<Box<dyn Provider>>,
    /// Distinguishes this chain from the ones before it (cache tokens).
    generation: u64,
    /// Whether a users provider is in the chain (decoy work for unknown names).
    has_users: bool,
}

impl Chain {
    /// The token a success through provider `i` is cached with; `None`: not cacheable.
    fn token(&self, i: usize, login: &str) -> Option<String> {
        let p = &self.providers[i];
        let own = p.cache_token(login)?;
        Some(match p.kind() {
            // The users file's hash stays valid across reloads that keep it.
            "users" => format!("{i}:users:{own}"),
            kind => format!("{i}:{kind}#{}:{own}", self.generation),
        })
    }

    fn index_of(token: &str) -> Option<usize> {
        token.split(':').next()?.parse().ok()
    }
}

/// The configured providers, in order, behind the login cache: the server's
/// [`Authenticator`]. [`Accounts::replace`] swaps them on a reload.
pub struct Accounts {
    chain: Live<Chain>,
    cache: Option<LoginCache>,
    generations: AtomicU64,
    /// Counts each check by provider and result, when the admin listener runs.
    metrics: std::sync::OnceLock<std::sync::Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chain = self.chain.load();
        let kinds: Vec<&str> = chain.providers.iter().map(|p| p.kind()).collect();
        f.debug_struct("Accounts")
            .field("providers", &kinds)
            .field("login_cache", &self.cache.is_some())
            .finish()
    }
}

/// Builds the providers `auth` lists (`users` from `users`).
pub fn build_providers(
    auth: &AuthConfig,
    users: &[UserEntry],
) -> Result<Vec<Box<dyn Provider>>, String> {
    let mut out: Vec<Box<dyn Provider>> = Vec::with_capacity(auth.providers.len());
    for p in &auth.providers {
        out.push(match p {
            ProviderConfig::Users => Box::new(UsersProvider::new(users.to_vec())),
            #[cfg(target_os = "linux")]
            ProviderConfig::Pam(cfg) => Box::new(pam::PamProvider::new((**cfg).clone())),
            ProviderConfig::Ldap(cfg) => Box::new(ldap::LdapProvider::new((**cfg).clone())?),
        });
    }
    Ok(out)
}

impl Accounts {
    /// The providers of `auth`, with successful logins remembered for `cache_ttl` (zero:
    /// never).
    pub fn new(
        auth: &AuthConfig,
        users: &[UserEntry],
        cache_ttl: Duration,
    ) -> Result<Accounts, String> {
        Ok(Accounts::from_providers(
            build_providers(auth, users)?,
            cache_ttl,
        ))
    }

    /// Any providers (embedders and tests), in order.
    pub fn from_providers(providers: Vec<Box<dyn Provider>>, cache_ttl: Duration) -> Accounts {
        let has_users = providers.iter().any(|p| p.kind() == "users");
        Accounts {
            chain: Live::new(Arc::new(Chain {
                providers,
                generation: 0,
                has_users,
            })),
            cache: LoginCache::new(cache_ttl),
            generations: AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
        }
    }

    /// A configuration reload: logins from now on go through these providers. Cached
    /// logins of PAM and LDAP users are forgotten (they are checked again once);
    /// those of the users file stay while their hash is unchanged.
    pub fn replace(&self, auth: &AuthConfig, users: &[UserEntry]) -> Result<(), String> {
        let providers = build_providers(auth, users)?;
        let has_users = providers.iter().any(|p| p.kind() == "users");
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.chain.replace(Arc::new(Chain {
            providers,
            generation,
            has_users,
        }));
        Ok(())
    }

    /// The provider kinds, in order (for messages).
    /// Counts every check from now on in `metrics` (`wharf_auth_checks_total`).
    pub fn set_metrics(&self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn count(&self, provider: &'static str, result: &'static str) {
        if let Some(m) = self.metrics.get() {
            m.auth_check(provider, result);
        }
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.chain
            .load()
            .providers
            .iter()
            .map(|p| p.kind())
            .collect()
    }
}

/// An argon2 hash that no password matches, to spend on names nobody knows.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| crypt::hash_password("wharf decoy password").unwrap_or_default())
}

impl Authenticator for Accounts {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<Principal, AuthError> {
        let chain = self.chain.load();
        let now = Instant::now();
        if let Some((token, principal)) =
            self.cache.as_ref().and_then(|c| c.hit(user, password, now))
        {
            let current = Chain::index_of(&token)
                .filter(|&i| i < chain.providers.len())
                .and_then(|i| chain.token(i, user));
            if current.as_deref() == Some(token.as_str()) {
                self.count("cache", "accepted");
                return Ok(principal);
            }
        }
        for (i, p) in chain.providers.iter().enumerate() {
            match p.check(user, password, peer) {
                Ok(Verdict::Unknown) => continue,
                Ok(Verdict::Accepted(principal)) => {
                    tracing::debug!(target: "wharf::log::login", provider = p.kind(), user = ?user, client = %peer, name = ?principal.name, "login accepted");
                    self.count(p.kind(), "accepted");
                    if let (Some(cache), Some(token)) = (&self.cache, chain.token(i, user)) {
                        cache.insert(user, password, &token, &principal, now);
                    }
                    return Ok(principal);
                }
                Ok(Verdict::Refused(reason)) => {
                    tracing::info!(target: "wharf::log::login", provider = p.kind(), user = ?user, client = %peer, %reason, "login failed");
                    self.count(p.kind(), "refused");
                    return Err(AuthError::BadCredentials);
                }
                Err(why) => {
                    tracing::warn!(target: "wharf::log::login", provider = p.kind(), user = ?user, client = %peer, %why, "login failed: the account provider failed");
                    self.count(p.kind(), "error");
                    return Err(AuthError::Backend(format!("{}: {why}", p.kind())));
                }
            }
        }
        // Nobody knows the name: spend what a wrong password of the users file would.
        if chain.has_users {
            if let Ok(parsed) = argon2::PasswordHash::new(decoy_hash()) {
                use argon2::PasswordVerifier;
                let _ = argon2::Argon2::default().verify_password(password.as_bytes(), &parsed);
            }
        }
        tracing::info!(target: "wharf::log::login", provider = "none", user = ?user, client = %peer, reason = "no provider knows the user", "login failed");
        self.count("none", "unknown-user");
        Err(AuthError::BadCredentials)
    }
}

/// Whether a login name can go to a system or directory lookup at all: 1 to 256 bytes,
/// no NUL or other control characters. Others are unknown to PAM and LDAP without
/// asking them.
pub fn plausible_login(login: &str) -> bool {
    !login.is_empty() && login.len() <= MAX_LOGIN_BYTES && !login.chars().any(char::is_control)
}

/// The longest login name passed to PAM or LDAP.
pub const MAX_LOGIN_BYTES: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    /// A provider that knows some names, counts its calls, and can be made to fail.
    struct Fake {
        kind: &'static str,
        knows: Vec<(&'static str, &'static str)>,
        calls: Arc<AtomicUsize>,
        down: bool,
    }

    impl Provider for Fake {
        fn kind(&self) -> &'static str {
            self.kind
        }
        fn check(&self, login: &str, password: &str, _: SocketAddr) -> Result<Verdict, String> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err("connection refused".into());
            }
            Ok(match self.knows.iter().find(|(n, _)| *n == login) {
                None => Verdict::Unknown,
                Some((_, pw)) if *pw == password => Verdict::Accepted(Principal {
                    home: wharf_core::VPath::root().child(login),
                    ..Principal::user(login, vec![self.kind.to_string()])
                }),
                Some(_) => Verdict::Refused("wrong password".into()),
            })
        }
    }

    fn fake(
        kind: &'static str,
        knows: &[(&'static str, &'static str)],
        down: bool,
    ) -> (Box<dyn Provider>, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        (
            Box::new(Fake {
                kind,
                knows: knows.to_vec(),
                calls: calls.clone(),
                down,
            }),
            calls,
        )
    }

    fn users(list: &[(&str, &str)]) -> Vec<UserEntry> {
        list.iter()
            .map(|(n, pw)| UserEntry {
                name: n.to_string(),
                password_hash: crypt::hash_with(pw, crypt::Cost::Argon2id { m: 256, t: 1, p: 1 })
                    .unwrap(),
                groups: vec!["local".into()],
            })
            .collect()
    }

    #[test]
    fn the_first_provider_that_knows_the_user_decides() {
        let (pam, pam_calls) = fake("pam", &[("bob", "pam-pw"), ("alice", "other")], false);
        let (ldap, ldap_calls) = fake("ldap", &[("carol", "ldap-pw"), ("bob", "ldap-pw")], false);
        let accounts = Accounts::from_providers(
            vec![
                Box::new(UsersProvider::new(users(&[("alice", "s3cret")]))),
                pam,
                ldap,
            ],
            Duration::ZERO,
        );
        let a = accounts.authenticate("alice", "s3cret", peer()).unwrap();
        assert_eq!(a.groups, vec!["local".to_string()]);
        // alice is the users file's: PAM's alice is never asked, even with its password.
        assert_eq!(
            accounts.authenticate("alice", "other", peer()),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(pam_calls.load(Ordering::SeqCst), 0);
        // bob is PAM's: PAM refuses, LDAP (which has a bob too) is not asked.
        assert_eq!(
            accounts.authenticate("bob", "ldap-pw", peer()),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(ldap_calls.load(Ordering::SeqCst), 0);
        assert_eq!(
            accounts
                .authenticate("bob", "pam-pw", peer())
                .unwrap()
                .groups,
            vec!["pam".to_string()]
        );
        let c = accounts.authenticate("carol", "ldap-pw", peer()).unwrap();
        assert_eq!(c.home, wharf_core::VPath::root().child("carol"));
        assert_eq!(
            accounts.authenticate("dave", "x", peer()),
            Err(AuthError::BadCredentials)
        );
    }

    #[test]
    fn a_provider_that_is_down_fails_the_login_and_never_falls_through() {
        let (pam, _) = fake("pam", &[], true);
        let (ldap, ldap_calls) = fake("ldap", &[("carol", "pw")], false);
        let accounts = Accounts::from_providers(vec![pam, ldap], Duration::ZERO);
        match accounts.authenticate("carol", "pw", peer()) {
            Err(AuthError::Backend(why)) => {
                assert!(why.contains("pam: connection refused"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(ldap_calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_cache_covers_every_provider_and_a_reload_forgets_directory_logins() {
        let (ldap, calls) = fake("ldap", &[("carol", "pw")], false);
        let accounts = Accounts::from_providers(vec![ldap], Duration::from_secs(60));
        let first = accounts.authenticate("carol", "pw", peer()).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        for _ in 0..3 {
            assert_eq!(accounts.authenticate("carol", "pw", peer()).unwrap(), first);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "hits do not ask the directory"
        );
        // Wrong passwords are never answered from the cache.
        assert_eq!(
            accounts.authenticate("carol", "wrong", peer()),
            Err(AuthError::BadCredentials)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A reload makes a new chain: the cached directory login is checked again.
        accounts
            .replace(&AuthConfig::default(), &users(&[("carol", "pw")]))
            .unwrap();
        let again = accounts.authenticate("carol", "pw", peer()).unwrap();
        assert_eq!(
            again.groups,
            vec!["local".to_string()],
            "the users file decided"
        );
    }

    #[test]
    fn cached_users_file_logins_follow_the_hash() {
        let accounts = Accounts::new(
            &AuthConfig::default(),
            &users(&[("alice", "s3cret")]),
            Duration::from_secs(60),
        )
        .unwrap();
        for _ in 0..2 {
            assert!(accounts.authenticate("alice", "s3cret", peer()).is_ok());
            assert_eq!(
                accounts.authenticate("alice", "s3cret!", peer()),
                Err(AuthError::BadCredentials)
            );
        }
        // The password changes with a reload: the old one no longer hits.
        accounts
            .replace(&AuthConfig::default(), &users(&[("alice", "n3w")]))
            .unwrap();
        assert_eq!(
            accounts.authenticate("alice", "s3cret", peer()),
            Err(AuthError::BadCredentials)
        );
        assert!(accounts.authenticate("alice", "n3w", peer()).is_ok());
    }

    #[test]
    fn implausible_names_are_recognised() {
        assert!(plausible_login("alice"));
        assert!(plausible_login("EXAMPLE\\alice"));
        assert!(!plausible_login(""));
        assert!(!plausible_login("al\0ice"));
        assert!(!plausible_login("al\nice"));
        assert!(!plausible_login(&"a".repeat(MAX_LOGIN_BYTES + 1)));
        assert!(plausible_login(&"a".repeat(MAX_LOGIN_BYTES)));
    }
}
