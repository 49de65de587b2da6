//! Accounts in an LDAP directory or Active Directory (`[auth.ldap]`).
//!
//! Two ways to find the user, as most FTP servers offer them:
//!
//! - **bind from a template**: `user_dn = "uid={user},ou=people,dc=example,dc=com"`
//!   (or, for Active Directory, `"{user}@example.com"`): wharf binds as that name with
//!   the password, then reads the entry's groups and home attributes as the user;
//! - **search, then bind**: a service account (`bind_dn`, `bind_password`) searches
//!   `base_dn` with `user_filter` (`"(uid={user})"`,
//!   `"(&(sAMAccountName={user})(objectClass=user))"`), then wharf binds as the one entry
//!   found with the password. No entry: the user is unknown here (the next provider is
//!   asked); several: refused.
//!
//! Login names are mapped as IIS maps them: `user`, `DOMAIN\user` (when `domain` names
//! the directory's NetBIOS domain) and `user@suffix` (for each `upn_suffixes`) all reach
//! the account `user`; with `domain` set, the logged-in user is `DOMAIN\user` (so user
//! isolation puts it in `DOMAIN/user`, and rules name it so). Names of another domain
//! are not this directory's. Every value that goes into a filter is escaped (RFC 4515)
//! and every value in a DN too (RFC 4514); names with control characters or over 256
//! bytes, and empty passwords (an anonymous bind), never reach the directory.
//!
//! Groups come from the entry's `memberOf` (the first RDN value of each DN) and/or a
//! group search (`group_filter`, `{dn}` and `{user}`). IIS's Active Directory isolation
//! takes the home from `msIIS-FTPRoot` + `msIIS-FTPDir` (names configurable;
//! `home_roots` maps root values to folders of the site).
//!
//! Connections are pooled (`pool_size` idle ones kept); every connect (TCP, TLS and
//! StartTLS) and every operation is bounded by `timeout`. A pooled connection the
//! server closed is replaced once, transparently. A directory that cannot be reached or
//! does not answer in time fails the login (`530`, sub-status 44, a log line), and for
//! `retry_after` afterwards logins fail at once instead of each waiting for the timeout,
//! so a dead directory does not hold the worker threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{
    dn_escape, ldap_escape, LdapConn, LdapConnSettings, LdapError, Scope, SearchEntry,
    SearchOptions,
};
use wharf_core::{Principal, VPath};

use super::{plausible_login, Provider, Verdict};

/// How the user's entry is found.
#[derive(Clone, PartialEq, Eq)]
pub enum Bind {
    /// Bind directly as `user_dn` with `{user}` replaced (DN-escaped).
    Template { user_dn: String },
    /// Search with a service account, then bind as the entry found.
    Search {
        bind_dn: String,
        bind_password: String,
        base_dn: String,
        user_filter: String,
    },
}

/// The service account's password stays out of `Debug` output.
impl std::fmt::Debug for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::Template { user_dn } => f
                .debug_struct("Template")
                .field("user_dn", user_dn)
                .finish(),
            Bind::Search {
                bind_dn,
                base_dn,
                user_filter,
                ..
            } => f
                .debug_struct("Search")
                .field("bind_dn", bind_dn)
                .field("bind_password", &"***")
                .field("base_dn", base_dn)
                .field("user_filter", user_filter)
                .finish(),
        }
    }
}

/// `[auth.ldap]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldap://host[:port]` or `ldaps://host[:port]`, tried in order.
    pub urls: Vec<String>,
    /// StartTLS on `ldap://` URLs.
    pub starttls: bool,
    /// The CA certificates (PEM) the directory's certificate must chain to; `None`:
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Bound on connecting (TCP, TLS, StartTLS) and on each operation (default 5 s).
    pub timeout: Duration,
    /// Idle connections kept (default 8).
    pub pool_size: usize,
    /// After the directory could not be reached, how long logins fail at once (default
    /// 5 s; 0: every login tries).
    pub retry_after: Duration,
    pub bind: Bind,
    /// The NetBIOS domain (`EXAMPLE`): `EXAMPLE\user` logins, and `EXAMPLE\user` names.
    pub domain: Option<String>,
    /// `user@example.com` logins for these suffixes.
    pub upn_suffixes: Vec<String>,
    /// The attribute that holds the account name (`uid`, `sAMAccountName`): the name
    /// the user is logged in as.
    pub name_attribute: String,
    /// The attribute listing the user's groups as DNs (`memberOf`); empty: none.
    pub group_attribute: String,
    /// A group search: filter with `{dn}` (the user's DN) and `{user}`.
    pub group_filter: Option<String>,
    pub group_base_dn: Option<String>,
    /// The attribute that names a group found by the search (`cn`).
    pub group_name_attribute: String,
    /// IIS's `msIIS-FTPRoot` and `msIIS-FTPDir`.
    pub home_root_attribute: String,
    pub home_dir_attribute: String,
    /// `msIIS-FTPRoot` values and the site folder each stands for; empty: every root
    /// is the site's root.
    pub home_roots: Vec<(String, VPath)>,
}

impl LdapConfig {
    /// The defaults, for `urls` and `bind`.
    pub fn new(urls: Vec<String>, bind: Bind) -> LdapConfig {
        LdapConfig {
            urls,
            starttls: false,
            ca_file: None,
            timeout: Duration::from_secs(5),
            pool_size: 8,
            retry_after: Duration::from_secs(5),
            bind,
            domain: None,
            upn_suffixes: Vec::new(),
            name_attribute: "uid".into(),
            group_attribute: "memberOf".into(),
            group_filter: None,
            group_base_dn: None,
            group_name_attribute: "cn".into(),
            home_root_attribute: "msIIS-FTPRoot".into(),
            home_dir_attribute: "msIIS-FTPDir".into(),
            home_roots: Vec::new(),
        }
    }
}

/// `url` is `ldap://host[:port][/]` or `ldaps://...`: returns whether it is ldaps.
pub fn check_url(url: &str) -> Result<bool, String> {
    let (tls, rest) = match (url.strip_prefix("ldap://"), url.strip_prefix("ldaps://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{url:?} is not an LDAP URL: ldap://host[:port] or ldaps://host[:port]"
            ))
        }
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!(
            "{url:?}: give a host (and port), nothing else: ldap://dc1.example.com:389"
        ));
    }
    Ok(tls)
}

/// Checks a filter template: balanced and parseable once its placeholders are filled.
pub fn check_filter(template: &str) -> Result<(), String> {
    let sample = template
        .replace("{user}", "x")
        .replace("{login}", "x")
        .replace("{dn}", "cn=x");
    ldap3::parse_filter(&sample)
        .map(|_| ())
        .map_err(|_| format!("{template:?} is not an LDAP filter like \"(uid={{user}})\""))
}

/// Loads the rustls client configuration that trusts `ca_file` alone.
pub fn client_tls(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Fills `{user}`, `{login}` and `{dn}` in a filter, each escaped (RFC 4515).
fn fill_filter(template: &str, user: &str, login: &str, dn: &str) -> String {
    template
        .replace("{user}", &ldap_escape(user))
        .replace("{login}", &ldap_escape(login))
        .replace("{dn}", &ldap_escape(dn))
}

/// Where to search for groups when only the user's DN is known: its `dc=` suffix
/// (`uid=a,ou=people,dc=example,dc=com`: `dc=example,dc=com`), else its parent.
fn naming_context(dn: &str) -> String {
    let lower = dn.to_ascii_lowercase();
    if let Some(i) = lower
        .find("dc=")
        .filter(|&i| i == 0 || lower[..i].ends_with(','))
    {
        return dn[i..].to_string();
    }
    dn.split_once(',')
        .map_or(String::new(), |(_, b)| b.to_string())
}

/// The value of the first RDN of `dn` (`cn=Staff,ou=groups,...`: `Staff`), unescaped.
pub fn first_rdn_value(dn: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = dn.chars().peekable();
    // Skip the attribute type.
    for c in chars.by_ref() {
        if c == '=' {
            break;
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let Some(&n) = chars.peek() else { break };
                if n.is_ascii_hexdigit() {
                    let hex: String = chars.by_ref().take(2).collect();
                    let byte = u8::from_str_radix(&hex, 16).ok()?;
                    out.push(byte as char);
                } else {
                    out.push(n);
                    chars.next();
                }
            }
            ',' | '+' => break,
            c => out.push(c),
        }
    }
    let v = out.trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// Why a directory operation failed.
enum Failure {
    /// The connection is unusable (closed, reset): a pooled one may just be stale.
    Connection(String),
    /// No answer within the timeout.
    Timeout(String),
    /// The directory answered with an error that is not about the credentials.
    Directory(String),
}

impl Failure {
    fn message(&self) -> &str {
        match self {
            Failure::Connection(m) | Failure::Timeout(m) | Failure::Directory(m) => m,
        }
    }
}

/// What an LDAP error means for this login.
fn classify(what: &str, e: LdapError) -> Failure {
    match e {
        LdapError::Timeout { .. } => Failure::Timeout(format!("{what}: no answer in time")),
        LdapError::LdapResult { result } => Failure::Directory(format!(
            "{what}: result code {} {}",
            result.rc,
            result.text.trim()
        )),
        other => Failure::Connection(format!("{what}: {other}")),
    }
}

/// What an Active Directory `invalidCredentials` message means (`data 533`: disabled).
fn ad_reason(text: &str) -> &'static str {
    let code = text
        .split("data ")
        .nth(1)
        .and_then(|t| t.split([',', ' ']).next())
        .unwrap_or("");
    match code {
        "525" => "no such user",
        "52e" => "wrong password",
        "530" => "not permitted to log on at this time",
        "531" => "not permitted to log on at this workstation",
        "532" => "password expired",
        "533" => "account disabled",
        "701" => "account expired",
        "773" => "password must be reset",
        "775" => "account locked out",
        _ => "wrong password or account not usable",
    }
}

const USER_SEARCH: &str = "searching for the user";

/// A directory entry: its DN and its attributes by lower-case name.
type Entry = (String, HashMap<String, Vec<String>>);

/// A pooled connection and whom it is bound as.
struct Conn {
    ldap: LdapConn,
    as_service: bool,
}

/// The LDAP provider.
pub struct LdapProvider {
    cfg: LdapConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    idle: Mutex<Vec<Conn>>,
    /// Until when logins fail at once, and why.
    down: Mutex<Option<(Instant, String)>>,
}

impl LdapProvider {
    /// Loads the CA file; connects to nothing yet (the first login does).
    pub fn new(cfg: LdapConfig) -> Result<LdapProvider, String> {
        let tls = cfg.ca_file.as_deref().map(client_tls).transpose()?;
        Ok(LdapProvider {
            cfg,
            tls,
            idle: Mutex::new(Vec::new()),
            down: Mutex::new(None),
        })
    }

    fn settings(&self) -> LdapConnSettings {
        let mut s = LdapConnSettings::new()
            .set_conn_timeout(self.cfg.timeout)
            .set_starttls(self.cfg.starttls);
        if let Some(tls) = &self.tls {
            s = s.set_config(tls.clone());
        }
        s
    }

    /// A new connection to the first URL that answers.
    fn connect(&self) -> Result<LdapConn, Failure> {
        let mut errors = Vec::new();
        let mut timed_out = false;
        for url in &self.cfg.urls {
            match LdapConn::with_settings(self.settings(), url) {
                Ok(c) => return Ok(c),
                Err(LdapError::Timeout { .. }) => {
                    timed_out = true;
                    errors.push(format!(
                        "{url}: no connection within {} s",
                        self.cfg.timeout.as_secs_f64()
                    ));
                }
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        let msg = errors.join("; ");
        Err(match timed_out {
            true => Failure::Timeout(msg),
            false => Failure::Connection(msg),
        })
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pooled connection (`true`) or a new one (`false`).
    fn take(&self) -> Result<(Conn, bool), Failure> {
        if let Some(c) = self.lock_idle().pop() {
            return Ok((c, true));
        }
        let ldap = self.connect()?;
        Ok((
            Conn {
                ldap,
                as_service: false,
            },
            false,
        ))
    }

    fn give_back(&self, c: Conn) {
        let mut idle = self.lock_idle();
        if idle.len() < self.cfg.pool_size {
            idle.push(c);
        }
    }

    /// The account part of `login`, when it is this directory's.
    fn account<'a>(&self, login: &'a str) -> Option<&'a str> {
        let user = if let Some((domain, user)) = login.split_once('\\') {
            let ours = self.cfg.domain.as_deref()?;
            if !domain.eq_ignore_ascii_case(ours) {
                return None;
            }
            user
        } else if let (false, Some((user, suffix))) =
            (self.cfg.upn_suffixes.is_empty(), login.rsplit_once('@'))
        {
            if !self
                .cfg
                .upn_suffixes
                .iter()
                .any(|s| s.eq_ignore_ascii_case(suffix))
            {
                return None;
            }
            user
        } else {
            login
        };
        (!user.is_empty() && !user.contains('\\')).then_some(user)
    }

    fn attributes(&self) -> Vec<&str> {
        let mut attrs = vec![
            self.cfg.name_attribute.as_str(),
            self.cfg.home_root_attribute.as_str(),
            self.cfg.home_dir_attribute.as_str(),
        ];
        if !self.cfg.group_attribute.is_empty() {
            attrs.push(self.cfg.group_attribute.as_str());
        }
        attrs
    }

    fn op_timeout<'c>(&self, c: &'c mut Conn) -> &'c mut LdapConn {
        c.ldap.with_timeout(self.cfg.timeout)
    }

    /// Binds as the service account (search mode), unless the connection already is.
    fn bind_service(&self, c: &mut Conn) -> Result<(), Failure> {
        let Bind::Search {
            bind_dn,
            bind_password,
            ..
        } = &self.cfg.bind
        else {
            return Ok(());
        };
        if c.as_service {
            return Ok(());
        }
        self.op_timeout(c)
            .simple_bind(bind_dn, bind_password)
            .and_then(|r| r.success())
            .map_err(|e| classify("binding as the service account (bind_dn)", e))?;
        c.as_service = true;
        Ok(())
    }

    /// Binds as `dn` with the user's password: `Ok(false)` for invalid credentials.
    fn bind_user(
        &self,
        c: &mut Conn,
        dn: &str,
        password: &str,
    ) -> Result<Result<(), String>, Failure> {
        c.as_service = false;
        match self.op_timeout(c).simple_bind(dn, password) {
            Ok(r) if r.rc == 0 => Ok(Ok(())),
            Ok(r) if r.rc == 49 => Ok(Err(ad_reason(&r.text).to_string())),
            Ok(r) => Err(Failure::Directory(format!(
                "binding as the user: result code {} {}",
                r.rc,
                r.text.trim()
            ))),
            Err(e) => Err(classify("binding as the user", e)),
        }
    }

    /// Searches; entries as (DN, attributes by lower-case name).
    fn search(
        &self,
        c: &mut Conn,
        what: &str,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<&str>,
    ) -> Result<Vec<Entry>, Failure> {
        // A user search needs to know only whether one entry matches or more.
        let limit = if what == USER_SEARCH { 2 } else { 0 };
        let result = self
            .op_timeout(c)
            .with_search_options(SearchOptions::new().sizelimit(limit))
            .search(base, scope, filter, attrs)
            .map_err(|e| classify(what, e))?;
        // 4: sizeLimitExceeded still carries entries.
        if result.1.rc != 0 && result.1.rc != 4 {
            return Err(Failure::Directory(format!(
                "{what}: result code {} {}",
                result.1.rc,
                result.1.text.trim()
            )));
        }
        Ok(result
            .0
            .into_iter()
            .map(|e| {
                let e = SearchEntry::construct(e);
                let attrs = e
                    .attrs
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect();
                (e.dn, attrs)
            })
            .collect())
    }

    /// One login on connection `c`.
    fn login(
        &self,
        c: &mut Conn,
        account: &str,
        login: &str,
        password: &str,
    ) -> Result<Verdict, Failure> {
        let attrs = self.attributes();
        let (dn, entry) = match &self.cfg.bind {
            Bind::Search {
                base_dn,
                user_filter,
                ..
            } => {
                self.bind_service(c)?;
                let filter = fill_filter(user_filter, account, login, "");
                let mut found =
                    self.search(c, USER_SEARCH, base_dn, Scope::Subtree, &filter, attrs)?;
                match found.len() {
                    0 => return Ok(Verdict::Unknown),
                    1 => {}
                    n => {
                        return Ok(Verdict::Refused(format!(
                            "the user filter matches {n} entries; it must match one"
                        )))
                    }
                }
                let (dn, entry) = found.remove(0);
                if let Err(reason) = self.bind_user(c, &dn, password)? {
                    return Ok(Verdict::Refused(reason));
                }
                (dn, entry)
            }
            Bind::Template { user_dn } => {
                let dn = user_dn.replace("{user}", &dn_escape(account));
                if let Err(reason) = self.bind_user(c, &dn, password)? {
                    return Ok(Verdict::Refused(reason));
                }
                // The entry, read as the user; a directory that does not let users read
                // their own entry leaves the name as typed and no groups or home.
                let entry = match self.search(
                    c,
                    "reading the user's entry",
                    &dn,
                    Scope::Base,
                    "(objectClass=*)",
                    attrs,
                ) {
                    Ok(mut e) if !e.is_empty() => e.remove(0).1,
                    Ok(_) | Err(Failure::Directory(_)) => HashMap::new(),
                    Err(other) => return Err(other),
                };
                (dn, entry)
            }
        };
        let get = |name: &str| -> Option<&String> {
            entry
                .get(&name.to_ascii_lowercase())
                .and_then(|v| v.first())
        };
        let canonical = get(&self.cfg.name_attribute)
            .cloned()
            .unwrap_or_else(|| account.to_string());
        let mut groups: Vec<String> = Vec::new();
        if !self.cfg.group_attribute.is_empty() {
            let dns = entry
                .get(&self.cfg.group_attribute.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default();
            groups.extend(dns.iter().filter_map(|g| first_rdn_value(g)));
        }
        if let Some(filter) = &self.cfg.group_filter {
            self.bind_service(c)?;
            let base = match (&self.cfg.group_base_dn, &self.cfg.bind) {
                (Some(b), _) => b.clone(),
                (None, Bind::Search { base_dn, .. }) => base_dn.clone(),
                (None, Bind::Template { .. }) => naming_context(&dn),
            };
            let filter = fill_filter(filter, &canonical, login, &dn);
            let name_attr = self.cfg.group_name_attribute.to_ascii_lowercase();
            let found = self.search(
                c,
                "searching for the user's groups",
                &base,
                Scope::Subtree,
                &filter,
                vec![self.cfg.group_name_attribute.as_str()],
            )?;
            for (gdn, attrs) in found {
                let name = attrs
                    .get(&name_attr)
                    .and_then(|v| v.first().cloned())
                    .or_else(|| first_rdn_value(&gdn));
                if let Some(name) = name {
                    groups.push(name);
                }
            }
        }
        let mut seen: Vec<String> = Vec::with_capacity(groups.len());
        for g in groups {
            if !seen.iter().any(|s| s.eq_ignore_ascii_case(&g)) {
                seen.push(g);
            }
        }
        let home = self.home(
            get(&self.cfg.home_root_attribute),
            get(&self.cfg.home_dir_attribute),
            &canonical,
        );
        let name = match &self.cfg.domain {
            Some(d) => format!("{d}\\{canonical}"),
            None => canonical,
        };
        Ok(Verdict::Accepted(Principal {
            home,
            ..Principal::user(name, seen)
        }))
    }

    /// The site path of `root` + `dir` (IIS's `msIIS-FTPRoot` and `msIIS-FTPDir`).
    fn home(&self, root: Option<&String>, dir: Option<&String>, user: &str) -> Option<VPath> {
        let (root, dir) = (root?, dir?);
        let norm = |s: &str| s.trim().trim_end_matches(['\\', '/']).to_ascii_lowercase();
        let base = match self.cfg.home_roots.is_empty() {
            true => VPath::root(),
            false => match self
                .cfg
                .home_roots
                .iter()
                .find(|(r, _)| norm(r) == norm(root))
            {
                Some((_, folder)) => folder.clone(),
                None => {
                    tracing::info!(user = ?user, root = ?root, "msIIS-FTPRoot is not one of home_roots: no home");
                    return None;
                }
            },
        };
        let mut path = base;
        for seg in dir.split(['\\', '/']).filter(|s| !s.is_empty()) {
            if !wharf_core::site::is_plain_segment(seg) {
                tracing::info!(user = ?user, dir = ?dir, "msIIS-FTPDir is not a relative folder: no home");
                return None;
            }
            path = path.child(seg)?;
        }
        Some(path)
    }

    /// Whether logins fail at once for now, and why.
    fn is_down(&self) -> Option<String> {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match &*down {
            Some((until, why)) if Instant::now() < *until => Some(why.clone()),
            Some(_) => {
                *down = None;
                None
            }
            None => None,
        }
    }

    fn mark_down(&self, why: &str) {
        if self.cfg.retry_after.is_zero() {
            return;
        }
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        *down = Some((Instant::now() + self.cfg.retry_after, why.to_string()));
    }

    /// Connects and binds as the service account (if any): `check-config`'s probe.
    pub fn probe(&self) -> Result<(), String> {
        let mut c = Conn {
            ldap: self.connect().map_err(|f| f.message().to_string())?,
            as_service: false,
        };
        self.bind_service(&mut c)
            .map_err(|f| f.message().to_string())?;
        let _ = c.ldap.unbind();
        Ok(())
    }
}

impl Provider for LdapProvider {
    fn kind(&self) -> &'static str {
        "ldap"
    }

    fn check(&self, login: &str, password: &str, _peer: SocketAddr) -> Result<Verdict, String> {
        if !plausible_login(login) {
            return Ok(Verdict::Unknown);
        }
        let Some(account) = self.account(login) else {
            return Ok(Verdict::Unknown);
        };
        if password.is_empty() {
            // An empty password is an anonymous bind, which many directories accept.
            return Ok(Verdict::Refused("empty password".into()));
        }
        if let Some(why) = self.is_down() {
            return Err(format!(
                "the directory is unreachable ({why}); next try within {} s",
                self.cfg.retry_after.as_secs_f64()
            ));
        }
        for attempt in 0..2 {
            let (mut c, pooled) = match self.take() {
                Ok(c) => c,
                Err(f) => {
                    self.mark_down(f.message());
                    return Err(f.message().to_string());
                }
            };
            match self.login(&mut c, account, login, password) {
                Ok(v) => {
                    self.give_back(c);
                    return Ok(v);
                }
                // The server closed an idle pooled connection: once more on a new one.
                Err(Failure::Connection(_)) if pooled && attempt == 0 => continue,
                Err(f @ (Failure::Connection(_) | Failure::Timeout(_))) => {
                    self.mark_down(f.message());
                    return Err(f.message().to_string());
                }
                Err(Failure::Directory(m)) => return Err(m),
            }
        }
        Err("the directory closed the connection twice".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(cfg: impl FnOnce(&mut LdapConfig)) -> LdapProvider {
        let mut c = LdapConfig::new(
            vec!["ldap://127.0.0.1:1".into()],
            Bind::Template {
                user_dn: "uid={user},dc=example,dc=com".into(),
            },
        );
        cfg(&mut c);
        LdapProvider::new(c).unwrap()
    }

    #[test]
    fn login_forms_map_as_iis_maps_them() {
        let p = provider(|c| {
            c.domain = Some("EXAMPLE".into());
            c.upn_suffixes = vec!["example.com".into()];
        });
        assert_eq!(p.account("alice"), Some("alice"));
        assert_eq!(p.account("EXAMPLE\\alice"), Some("alice"));
        assert_eq!(p.account("example\\alice"), Some("alice"));
        assert_eq!(p.account("alice@example.com"), Some("alice"));
        assert_eq!(p.account("alice@EXAMPLE.COM"), Some("alice"));
        assert_eq!(p.account("OTHER\\alice"), None);
        assert_eq!(p.account("alice@other.org"), None);
        assert_eq!(p.account("EXAMPLE\\"), None);
        assert_eq!(p.account("EXAMPLE\\a\\b"), None);
        // Without a domain or suffixes, the name is the account name as typed.
        let plain = provider(|_| {});
        assert_eq!(
            plain.account("alice@example.com"),
            Some("alice@example.com")
        );
        assert_eq!(plain.account("EXAMPLE\\alice"), None);
    }

    #[test]
    fn filter_and_dn_values_are_escaped() {
        let f = fill_filter("(&(uid={user})(objectClass=person))", "*)(uid=*", "x", "");
        assert_eq!(f, "(&(uid=\\2a\\29\\28uid=\\2a)(objectClass=person))");
        assert!(ldap3::parse_filter(&f).is_ok());
        let f = fill_filter("(member={dn})", "", "", "cn=a\\,b,dc=x");
        assert_eq!(f, "(member=cn=a\\5c,b,dc=x)");
        assert_eq!(
            "uid={user},dc=x".replace("{user}", &dn_escape("a,b+c=\"d\"\\")),
            "uid=a\\2cb\\2bc\\3d\\22d\\22\\5c,dc=x"
        );
        assert!(check_filter("(uid={user})").is_ok());
        assert!(check_filter("(uid={user}").is_err());
        assert!(check_filter("uid={user})(").is_err());
    }

    #[test]
    fn group_searches_start_at_the_naming_context() {
        assert_eq!(
            naming_context("uid=a,ou=people,dc=example,dc=com"),
            "dc=example,dc=com"
        );
        assert_eq!(naming_context("CN=a,CN=Users,DC=ex,DC=com"), "DC=ex,DC=com");
        assert_eq!(naming_context("uid=a,o=corp"), "o=corp");
    }

    #[test]
    fn group_names_are_the_first_rdn_value() {
        assert_eq!(
            first_rdn_value("cn=FTPUsers,ou=groups,dc=example,dc=com").as_deref(),
            Some("FTPUsers")
        );
        assert_eq!(
            first_rdn_value("CN=Domain Users,CN=Users,DC=ex").as_deref(),
            Some("Domain Users")
        );
        assert_eq!(first_rdn_value("cn=a\\,b,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("cn=a\\2Cb,dc=x").as_deref(), Some("a,b"));
        assert_eq!(first_rdn_value("cn=,dc=x"), None);
    }

    #[test]
    fn homes_from_ftproot_and_ftpdir() {
        let p = provider(|_| {});
        let s = |v: &str| v.to_string();
        assert_eq!(
            p.home(Some(&s("\\\\fs01\\ftp")), Some(&s("users\\alice")), "a"),
            VPath::root().resolve("/users/alice").ok()
        );
        assert_eq!(
            p.home(Some(&s("x")), Some(&s("")), "a"),
            Some(VPath::root())
        );
        assert_eq!(p.home(None, Some(&s("alice")), "a"), None);
        assert_eq!(p.home(Some(&s("x")), None, "a"), None);
        assert_eq!(p.home(Some(&s("x")), Some(&s("..\\etc")), "a"), None);
        let mapped = provider(|c| {
            c.home_roots = vec![("\\\\fs01\\ftp".into(), VPath::root().child("fs01").unwrap())];
        });
        assert_eq!(
            mapped.home(Some(&s("\\\\FS01\\ftp\\")), Some(&s("bob")), "b"),
            VPath::root().resolve("/fs01/bob").ok()
        );
        assert_eq!(
            mapped.home(Some(&s("\\\\fs02\\ftp")), Some(&s("bob")), "b"),
            None
        );
    }

    #[test]
    fn active_directory_reasons() {
        let t = "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 533, v3839";
        assert_eq!(ad_reason(t), "account disabled");
        assert_eq!(ad_reason("data 52e, v4563"), "wrong password");
        assert_eq!(
            ad_reason("Invalid credentials"),
            "wrong password or account not usable"
        );
    }

    #[test]
    fn the_service_password_is_not_in_debug_output() {
        let b = Bind::Search {
            bind_dn: "cn=s".into(),
            bind_password: "hunter2".into(),
            base_dn: "dc=x".into(),
            user_filter: "(uid={user})".into(),
        };
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn urls_are_checked() {
        assert_eq!(check_url("ldap://dc1.example.com"), Ok(false));
        assert_eq!(check_url("ldaps://127.0.0.1:636/"), Ok(true));
        assert!(check_url("http://x").is_err());
        assert!(check_url("ldap://").is_err());
        assert!(check_url("ldap://host/dc=x").is_err());
    }

    #[test]
    fn a_refused_connection_fails_the_login_then_fails_fast() {
        // Port 1 on loopback: nothing listens there.
        let p = provider(|c| c.retry_after = Duration::from_secs(60));
        let peer = "127.0.0.1:5".parse().unwrap();
        let first = p.check("alice", "pw", peer).unwrap_err();
        assert!(first.contains("127.0.0.1:1"), "{first}");
        let second = p.check("alice", "pw", peer).unwrap_err();
        assert!(second.contains("unreachable"), "{second}");
        // Names and passwords that never reach the directory are decided first.
        assert_eq!(p.check("a\0b", "pw", peer), Ok(Verdict::Unknown));
        assert_eq!(p.check(&"a".repeat(300), "pw", peer), Ok(Verdict::Unknown));
        assert!(matches!(
            p.check("alice", "", peer),
            Ok(Verdict::Refused(_))
        ));
    }
}
