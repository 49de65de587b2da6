//! The TOML configuration: parsing, validation, and the [`ServerConfig`] it becomes.
//!
//! Every error names the file, the line and column, and the key (`server.listen`,
//! `users[1].password_hash`), whether toml itself rejected the text or a value failed a
//! semantic check (a bad address, a missing root, a duplicate user, a hash that does not
//! parse). Validation reports every error it finds, not just the first.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wharf_core::{
    Binding, ClientCertificates, ControlPolicy, DataPolicy, IpNet, Isolation, ListingStyle,
    Messages, PasvAddress, Rule, Rules, SessionConfig, Sites, SitesError, Timeouts, TlsSettings,
    VPath, VirtualDir, Who,
};

use crate::tls::{ClientCa, SiteTls, TlsShared};
use crate::users::UserEntry;
use crate::w3c::LogOutput;
use wharf_core::policy::limits::ServerRules;

#[path = "config_policy.rs"]
mod policy;

#[path = "config_auth.rs"]
mod auth_table;

#[path = "config_messages.rs"]
mod messages;

#[path = "config_active.rs"]
pub mod active;

#[path = "config_s3.rs"]
mod s3_table;

/// Which event loop drives the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// `wharf-runtime-mio`: one epoll loop per shard thread, a worker pool.
    Mio,
    /// `wharf-runtime-smol`: one task per session on a smol executor.
    Smol,
}

impl RuntimeKind {
    /// Every runtime, by its config name.
    pub const ALL: [RuntimeKind; 2] = [RuntimeKind::Mio, RuntimeKind::Smol];

    /// Parses a `--runtime` / `server.runtime` value.
    pub fn parse(s: &str) -> Result<RuntimeKind, String> {
        RuntimeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown runtime {s:?}; use \"mio\" or \"smol\""))
    }

    /// The config name: `"mio"` or `"smol"`.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeKind::Mio => "mio",
            RuntimeKind::Smol => "smol",
        }
    }
}

/// A validated configuration, ready to start a server with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Control-channel addresses: every distinct `ip:port` of the sites' bindings (a
    /// wildcard address covers the exact ones on its port). Port 0 lets the OS pick
    /// when the server starts (tests).
    pub listen: Vec<SocketAddr>,
    /// Event-loop threads; 0 means one per core.
    pub shards: usize,
    /// Simultaneous control connections over all shards.
    pub max_connections: usize,
    pub runtime: RuntimeKind,
    /// How long a graceful shutdown lets transfers finish.
    pub shutdown_grace: Duration,
    /// How long a successful login is remembered (zero: never); see `login_cache`.
    pub login_cache: Duration,
    /// The sites, in configuration order.
    pub sites: Vec<SiteConfig>,
    pub users: Vec<UserEntry>,
    /// Server-wide IP rules, logon restrictions and connection limits.
    pub server_rules: ServerRules,
    /// The account to serve as once the ports are bound (`server.user`/`server.group`).
    pub run_as: Option<crate::privileges::RunAs>,
    /// Where accounts come from (`[auth]`): the users file, PAM, LDAP, in order.
    pub auth: crate::auth::AuthConfig,
    /// What is valid but probably not meant (check-config prints them; the server
    /// starts).
    pub warnings: Vec<ConfigError>,
    /// Where each LDAP provider's `url` is written, for [`ServerConfig::check_reachability`].
    ldap_at: Vec<ConfigError>,
    /// `server.pid_file`, resolved against the configuration's directory.
    pub pid_file: Option<PathBuf>,
    /// `server.users_file`, resolved against the configuration's directory.
    pub users_file: Option<PathBuf>,
    /// Whether the configuration uses the single `[site]` form, whose addresses
    /// (`server.listen`) `--listen` may replace ([`ServerConfig::override_listen`]).
    pub single_site: bool,
    /// `[cluster]`: failed logins and bans shared with the other nodes.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    /// `[admin]`: the admin listener; `None`: nothing listens.
    pub admin: Option<AdminConfig>,
}

/// `[admin]`: where the admin listener (Prometheus metrics at `/metrics`, the live
/// sessions page at `/`, its JSON at `/api/sessions`) listens and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The HTTP Basic user name (default `admin`).
    pub user: String,
    /// The password's hash (argon2id from `wharf passwd`, or a crypt hash the users
    /// file accepts).
    pub password_hash: String,
}

/// One site: where it lives on disk, how it is reached, what its sessions are told.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub name: String,
    /// The site's directory on disk (for a bucket root, its `s3://` URL).
    pub root: PathBuf,
    /// The bucket and prefix, when the root is `s3://...` (then `root` is no directory).
    pub object_root: Option<crate::s3::S3Settings>,
    pub bindings: Vec<BindingConfig>,
    /// Global virtual directories: a name at the site's top and the directory it shows.
    pub virtual_dirs: Vec<(String, PathBuf)>,
    /// What every session of the site is told. Its `storage_root` (and the virtual
    /// directories' ones) name the site's mounts in the server's storage; its `tls` the
    /// site's FTPS policy.
    pub session: SessionConfig,
    /// The site's certificate files, when it offers FTPS ([`SiteTls::reload`] on SIGHUP).
    pub tls: Option<SiteTls>,
    /// Where the site's W3C log is written (`central`: the one log of every site).
    pub log: Option<LogOutput>,
    /// `durable_writes`: every change is on disk (`fsync`) before its reply says it
    /// happened (226, 250, 257); on by default.
    pub durable_writes: bool,
}

/// `ip:port:host`: connections to `ip:port` naming `host` (none: the blank host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingConfig {
    /// `0.0.0.0` for `*` (every IPv4 address), `::` for every IPv6 address.
    pub addr: SocketAddr,
    pub host: Option<String>,
    pub implicit_tls: bool,
}

impl ServerConfig {
    /// The core's sites-and-bindings table, with listen addresses of port 0 replaced by
    /// the ports they were given (`resolved[i]` for `self.listen[i]`).
    pub fn sites_table(&self, resolved: &[SocketAddr]) -> Result<Sites, SitesError> {
        let port_of = |addr: SocketAddr| -> u16 {
            match self.listen.iter().position(|l| *l == addr) {
                Some(i) if addr.port() == 0 => resolved.get(i).map_or(0, |r| r.port()),
                _ => addr.port(),
            }
        };
        let mut sessions = Vec::with_capacity(self.sites.len());
        let mut bindings = Vec::new();
        for (i, site) in self.sites.iter().enumerate() {
            sessions.push(Arc::new(site.session.clone()));
            for b in &site.bindings {
                bindings.push(Binding {
                    ip: b.addr.ip(),
                    port: port_of(b.addr),
                    host: b.host.clone(),
                    site: i,
                    implicit_tls: b.implicit_tls,
                });
            }
        }
        Sites::new(sessions, bindings)
    }

    /// Re-reads every site's certificate (SIGHUP); the errors name the files. Running
    /// sessions keep their connections; new handshakes get the new certificates. A
    /// certificate that fails to load keeps the old one.
    pub fn reload_certificates(&self) -> Result<usize, String> {
        let mut errors = Vec::new();
        let mut reloaded = 0;
        for tls in self.sites.iter().filter_map(|s| s.tls.as_ref()) {
            match tls.reload() {
                Ok(()) => reloaded += 1,
                Err(e) => errors.push(e),
            }
        }
        match errors.is_empty() {
            true => Ok(reloaded),
            false => Err(errors.join("; ")),
        }
    }

    /// The storage mounts: each site root and virtual directory under the name its
    /// `storage_root` gives it.
    /// The W3C log outputs: one per logging site, keyed by its name, or one central
    /// output (keyed `None`) that every logging site shares.
    pub fn log_outputs(&self) -> Vec<(Option<String>, LogOutput)> {
        let mut out: Vec<(Option<String>, LogOutput)> = Vec::new();
        for site in &self.sites {
            if let Some(log) = &site.log {
                let key = (!log.central).then(|| site.name.clone());
                if !out.iter().any(|(k, _)| *k == key) {
                    out.push((key, log.clone()));
                }
            }
        }
        out
    }

    /// Connects to every LDAP directory of `[auth]` (and binds as its service account):
    /// a warning, located at its `url`, for each that fails. `check-config` runs this; the
    /// server does not need a directory to start (a login while it is down is refused
    /// as unavailable).
    pub fn check_reachability(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        for (cfg, at) in self.auth.ldap().zip(&self.ldap_at) {
            let result = crate::auth::ldap::LdapProvider::new(cfg.clone()).and_then(|p| p.probe());
            if let Err(e) = result {
                out.push(ConfigError {
                    message: format!("the directory cannot be reached now: {e}"),
                    ..at.clone()
                });
            }
        }
        out
    }

    /// Each mount's durability (`durable_writes` of the site it belongs to), by the
    /// names [`ServerConfig::mounts`] gives them.
    pub fn mount_durability(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for site in &self.sites {
            out.push((mount_name(&site.session.storage_root), site.durable_writes));
            for v in &site.session.virtual_dirs {
                out.push((mount_name(&v.storage_root), site.durable_writes));
            }
        }
        out
    }

    pub fn mounts(&self) -> Vec<(String, &Path)> {
        let mut out = Vec::new();
        for site in self.sites.iter().filter(|s| s.object_root.is_none()) {
            out.push((mount_name(&site.session.storage_root), site.root.as_path()));
            for ((_, path), v) in site.virtual_dirs.iter().zip(&site.session.virtual_dirs) {
                out.push((mount_name(&v.storage_root), path.as_path()));
            }
        }
        out
    }
}

fn mount_name(root: &VPath) -> String {
    root.relative().to_string()
}

/// One configuration error, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// The key the error is about (`server.listen`, `users[0].name`), when known.
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Line 0: about the file as a whole (it could not be read).
        match self.line {
            0 => write!(f, "{}: ", self.file)?,
            _ => write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?,
        }
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every error found in one file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    site: Option<RawSite>,
    #[serde(default)]
    sites: Vec<RawSite>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    groups: Vec<RawGroup>,
    limits: Option<policy::RawLimits>,
    auth: Option<auth_table::RawAuth>,
    cluster: Option<RawCluster>,
    admin: Option<RawAdmin>,
}

/// `[cluster]`: state shared with the other nodes behind one load balancer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    redis: Spanned<String>,
    prefix: Option<Spanned<String>>,
}

/// `[admin]`: the admin listener (metrics, the live sessions page).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Spanned<String>,
    user: Option<Spanned<String>>,
    password_hash: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<Spanned<String>>>,
    listen_implicit: Option<Spanned<Vec<Spanned<String>>>>,
    shards: Option<usize>,
    max_connections: Option<Spanned<usize>>,
    passive_ports: Option<Spanned<String>>,
    external_ip: Option<Spanned<String>>,
    /// The source port of active-mode data connections: 20, 0 (any) or "control-1".
    active_source_port: Option<Spanned<toml::Value>>,
    runtime: Option<Spanned<String>>,
    shutdown_grace: Option<u64>,
    users_file: Option<Spanned<String>>,
    pid_file: Option<Spanned<String>>,
    login_cache: Option<u64>,
    user: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    ip_security: Option<policy::RawIpSecurity>,
    logon_restrictions: Option<policy::RawLogon>,
    logging: Option<policy::RawLogging>,
    proxy_protocol: Option<Spanned<policy::RawProxy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Option<Spanned<String>>,
    root: Spanned<String>,
    bindings: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    #[serde(default)]
    anonymous: bool,
    anonymous_write: Option<Spanned<bool>>,
    banner: Option<Spanned<String>>,
    listing_style: Option<Spanned<String>>,
    #[serde(default)]
    keep_partial_uploads: bool,
    /// `fsync` uploads and namespace changes before acknowledging them (default true).
    durable_writes: Option<bool>,
    isolation: Option<Spanned<String>>,
    external_ip: Option<Spanned<String>>,
    #[serde(default)]
    passive_addresses: Vec<RawPasv>,
    match_client_address_for_pasv: Option<bool>,
    match_client_address_for_port: Option<bool>,
    active_source_port: Option<Spanned<toml::Value>>,
    messages: Option<RawMessages>,
    rules: Option<Spanned<Vec<RawRule>>>,
    #[serde(default)]
    virtual_directories: Vec<RawVdir>,
    #[serde(default)]
    allow_replace_on_rename: bool,
    #[serde(default)]
    allow_read_uploads_in_progress: bool,
    /// Seconds (fractions allowed) between a PASS and its `530` when the login fails.
    failed_login_delay: Option<Spanned<toml::Value>>,
    /// Control connections to this site at once (IIS `maxConnections`); 0: no limit.
    max_connections: Option<u32>,
    request_filtering: Option<policy::RawFiltering>,
    ip_security: Option<policy::RawIpSecurity>,
    logging: Option<policy::RawLogging>,
    tls: Option<RawTls>,
    /// The bucket of an `s3://` root.
    s3: Option<s3_table::RawS3>,
}

/// `[site.tls]` / `[sites.tls]`: FTPS for the site.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    certificate: Spanned<String>,
    private_key: Spanned<String>,
    control: Option<Spanned<String>>,
    data: Option<Spanned<String>>,
    #[serde(default)]
    exempt_anonymous: bool,
    require_tls_session_reuse: Option<bool>,
    strict_close_notify: Option<bool>,
    allow_ccc: Option<bool>,
    client_certificates: Option<Spanned<String>>,
    client_ca: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMessages {
    banner: Option<Spanned<String>>,
    #[serde(default)]
    suppress_default_banner: bool,
    welcome: Option<String>,
    exit: Option<String>,
    max_clients: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    path: Option<Spanned<String>>,
    access: Spanned<String>,
    users: Option<Spanned<toml::Value>>,
    groups: Option<Spanned<toml::Value>>,
    roles: Option<Spanned<toml::Value>>,
    permissions: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVdir {
    name: Spanned<String>,
    path: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPasv {
    networks: Spanned<Vec<Spanned<String>>>,
    ip: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    control: Option<Spanned<u64>>,
    data: Option<Spanned<u64>>,
    login: Option<Spanned<u64>>,
    tls_handshake: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    password_hash: Spanned<String>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    /// Bytes per second per transfer for this user.
    bandwidth: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: Spanned<String>,
    #[serde(default)]
    members: Vec<Spanned<String>>,
}

/// A `users_file`: accounts kept apart from the rest of the configuration.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUsersFile {
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    groups: Vec<RawGroup>,
}

/// Collects errors against one file's text.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column, key) = locate(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line,
            column,
            key,
            message: message.into(),
        });
    }

    /// An error of toml's parser or of deserializing, reworded (see `messages`).
    fn toml_error(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let header = messages::header(&self.text[line_start..line_end]);
        let message = messages::humanize(e.message(), header.as_ref());
        let unknown_table = header.is_some() && message.starts_with("unknown table");
        self.error(span, message);
        if unknown_table {
            // `[[user]]` is the unknown key `user`, not its first entry.
            if let Some(key) = self.errors.last_mut().and_then(|e| e.key.as_mut()) {
                if key.ends_with(']') {
                    if let Some(i) = key.rfind('[') {
                        key.truncate(i);
                    }
                }
            }
        }
    }

    fn check<T, E>(
        &mut self,
        v: &Spanned<T>,
        f: impl FnOnce(&T) -> Result<E, String>,
    ) -> Option<E> {
        match f(v.get_ref()) {
            Ok(x) => Some(x),
            Err(m) => {
                self.error(v.span(), m);
                None
            }
        }
    }
}

/// Line and column (1-based) of byte `offset`, and the key it is about, prefixed by its
/// table (`[server]` + `listen = ..` = `server.listen`; array tables are numbered,
/// nested ones within their parent: `sites[1].rules[0].access`).
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    if messages::header(&text[line_start..line_end]).is_some() {
        // An error about a whole table points at its header: it is about that table.
        return (line_no, column, current_table(&text[..line_end]));
    }
    let key = key_at(text, line_start, offset);
    let table = current_table(&text[..line_start]);
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, k) => k,
    };
    (line_no, column, key)
}

/// The key whose value holds `offset`: the last `key =` before it on its line (inline
/// tables: `{ path = "/", access = "x" }`), else on the nearest line above that has one
/// (a multi-line array), without crossing a table header.
fn key_at(text: &str, line_start: usize, offset: usize) -> Option<String> {
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    // An error pointing at a key itself (an unknown key) is about that key.
    let rest = &text[offset..line_end];
    let ident_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    if ident_len > 0 && rest[ident_len..].trim_start().starts_with('=') {
        return Some(rest[..ident_len].to_string());
    }
    let upto = if text[line_start..offset].trim().is_empty() {
        line_end
    } else {
        offset
    };
    let candidates = std::iter::once(&text[line_start..upto]).chain(
        text[..line_start]
            .lines()
            .rev()
            .take_while(|l| !l.trim_start().starts_with('[')),
    );
    for piece in candidates {
        if let Some(k) = last_key(piece) {
            return Some(k);
        }
    }
    None
}

/// The identifier before the last `=` of `piece` (outside strings, roughly).
fn last_key(piece: &str) -> Option<String> {
    if piece.trim_start().starts_with('#') {
        return None;
    }
    let mut in_str = false;
    let mut eq = None;
    for (i, ch) in piece.char_indices() {
        match ch {
            '"' => in_str = !in_str,
            '=' if !in_str => eq = Some(i),
            _ => {}
        }
    }
    let head = piece[..eq?].trim_end();
    let start = head
        .rfind(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .map_or(0, |i| i + 1);
    let k = head[start..].trim_matches('"');
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
}

/// The table header in force at the end of `text` (`server`, `users[2]`,
/// `sites[1].rules[0]`, `sites[0].messages`).
fn current_table(text: &str) -> Option<String> {
    // Array tables seen so far, by their resolved path, with their element count.
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim).filter(|l| l.starts_with('[')) {
        let (is_array, name) = match line.strip_prefix("[[") {
            Some(rest) => (true, rest.split("]]").next().unwrap_or("")),
            None => (false, line[1..].split(']').next().unwrap_or("")),
        };
        let segs: Vec<&str> = name
            .split('.')
            .map(|s| s.trim().trim_matches('"'))
            .collect();
        let mut resolved = String::new();
        for (k, seg) in segs.iter().enumerate() {
            if !resolved.is_empty() {
                resolved.push('.');
            }
            resolved.push_str(seg);
            let index = if k + 1 == segs.len() && is_array {
                let n = arrays.entry(resolved.clone()).or_insert(0);
                *n += 1;
                Some(*n - 1)
            } else {
                arrays.get(&resolved).map(|n| n - 1)
            };
            if let Some(i) = index {
                resolved = format!("{resolved}[{i}]");
            }
        }
        current = Some(resolved);
    }
    current
}

fn parse_listen(s: &String) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an \"ip:port\" address (IPv6: \"[::1]:21\")"))
}

/// `"50000-50100"`, or `"0-0"` to let the OS pick.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range like \"50000-50100\" (or \"0-0\": any port)");
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo > hi {
        return Err(format!("{s:?}: the first port is above the last"));
    }
    if lo == 0 && hi != 0 {
        return Err(format!(
            "{s:?}: port 0 means \"any\" and only works as \"0-0\""
        ));
    }
    Ok(lo..=hi)
}

fn parse_listing_style(s: &String) -> Result<ListingStyle, String> {
    match s.as_str() {
        "unix" => Ok(ListingStyle::Unix),
        "msdos" => Ok(ListingStyle::MsDos),
        _ => Err(format!(
            "{s:?} is not a listing style: \"unix\" or \"msdos\""
        )),
    }
}

/// `failed_login_delay`: seconds, whole or fractional, from 0 (off) to less than the
/// login timeout (a longer delay would let the timeout answer every failed login).
fn parse_delay(v: &toml::Value, login_timeout: Duration) -> Result<Duration, String> {
    let secs = match v {
        toml::Value::Integer(n) => *n as f64,
        toml::Value::Float(f) => *f,
        other => {
            return Err(format!(
                "must be a number of seconds like 1 or 0.5, not a {}",
                other.type_str()
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err("must be 0 (off) or a positive number of seconds".into());
    }
    let delay = Duration::from_secs_f64(secs.min(1e9));
    if delay >= login_timeout {
        return Err(format!(
            "must be shorter than the login timeout (timeouts.login, {} s)",
            login_timeout.as_secs()
        ));
    }
    Ok(delay)
}

fn parse_control_policy(s: &String) -> Result<ControlPolicy, String> {
    match s.as_str() {
        "allow" => Ok(ControlPolicy::Allow),
        "require" => Ok(ControlPolicy::Require),
        "require_credentials_only" => Ok(ControlPolicy::RequireCredentialsOnly),
        _ => Err(format!(
            "{s:?} is not a control-channel policy: \"allow\", \"require\" or \"require_credentials_only\""
        )),
    }
}

fn parse_data_policy(s: &String) -> Result<DataPolicy, String> {
    match s.as_str() {
        "allow" => Ok(DataPolicy::Allow),
        "require" => Ok(DataPolicy::Require),
        "deny" => Ok(DataPolicy::Deny),
        _ => Err(format!(
            "{s:?} is not a data-channel policy: \"allow\", \"require\" or \"deny\""
        )),
    }
}

/// A site's TLS table: loads the certificate (relative paths from the configuration's
/// directory) and builds the site's TLS settings on the server's shared tickets and
/// session cache (`shared`, made on first use).
fn check_tls(
    c: &mut Checker<'_>,
    raw: &RawTls,
    base: &Path,
    shared: &mut Option<TlsShared>,
    sessions: usize,
) -> Option<(TlsSettings, SiteTls)> {
    let control = match &raw.control {
        Some(v) => c.check(v, parse_control_policy),
        None => Some(ControlPolicy::Allow),
    };
    let data = match &raw.data {
        Some(v) => c.check(v, parse_data_policy),
        None => Some(DataPolicy::Allow),
    };
    let clients = check_client_certificates(c, raw, base);
    let certificate = base.join(raw.certificate.get_ref());
    let private_key = base.join(raw.private_key.get_ref());
    let mut missing = false;
    for (v, p) in [
        (&raw.certificate, &certificate),
        (&raw.private_key, &private_key),
    ] {
        if let Err(e) = std::fs::metadata(p) {
            c.error(v.span(), format!("{}: {e}", p.display()));
            missing = true;
        }
    }
    if missing {
        return None;
    }
    let site = match SiteTls::load(&certificate, &private_key) {
        Ok(site) => site,
        Err(e) => {
            let at = match e.contains(&*private_key.display().to_string()) {
                true => raw.private_key.span(),
                false => raw.certificate.span(),
            };
            c.error(at, e);
            return None;
        }
    };
    if shared.is_none() {
        match TlsShared::new(sessions) {
            Ok(s) => *shared = Some(s),
            Err(e) => {
                c.error(raw.certificate.span(), e);
                return None;
            }
        }
    }
    let (client_mode, client_ca) = clients?;
    let config = match site.server_config_for_clients(shared.as_ref()?, client_ca.as_ref()) {
        Ok(config) => config,
        Err(e) => {
            c.error(raw.certificate.span(), e);
            return None;
        }
    };
    let mut settings = TlsSettings::with_client_certificates(config, client_mode);
    settings.control = control?;
    settings.data = data?;
    settings.exempt_anonymous = raw.exempt_anonymous;
    settings.require_session_reuse = raw.require_tls_session_reuse.unwrap_or(true);
    settings.strict_close_notify = raw.strict_close_notify.unwrap_or(true);
    settings.allow_ccc = raw.allow_ccc.unwrap_or(true);
    Some((settings, site))
}

/// `client_certificates` and `client_ca`: the mode, and the CA bundle it needs (loaded).
/// `None` after an error.
fn check_client_certificates(
    c: &mut Checker<'_>,
    raw: &RawTls,
    base: &Path,
) -> Option<(ClientCertificates, Option<ClientCa>)> {
    let mode = match &raw.client_certificates {
        Some(v) => c.check(v, |s| match s.as_str() {
            "ignore" => Ok(ClientCertificates::Ignore),
            "allow" => Ok(ClientCertificates::Allow),
            "require" => Ok(ClientCertificates::Require),
            _ => Err(format!(
                "{s:?} is not a client-certificate mode: \"ignore\", \"allow\" or \"require\""
            )),
        })?,
        None => ClientCertificates::Ignore,
    };
    match (&raw.client_ca, mode) {
        (None, ClientCertificates::Ignore) => Some((mode, None)),
        (Some(ca), ClientCertificates::Ignore) => {
            c.error(
                ca.span(),
                "client_ca has no effect unless client_certificates is \"allow\" or \"require\"",
            );
            None
        }
        (None, _) => {
            let at = raw.client_certificates.as_ref().map_or(0..0, |v| v.span());
            c.error(
                at,
                format!(
                    "client_certificates = {:?} needs client_ca = \"ca.pem\": the PEM bundle of the CAs whose client certificates are accepted",
                    raw.client_certificates.as_ref().map_or("", |v| v.get_ref())
                ),
            );
            None
        }
        (Some(ca), _) => {
            let path = base.join(ca.get_ref());
            let required = mode == ClientCertificates::Require;
            let loaded = c.check(ca, |_| ClientCa::load(&path, required))?;
            Some((mode, Some(loaded)))
        }
    }
}

fn seconds(c: &mut Checker<'_>, v: &Option<Spanned<u64>>, default: u64) -> Duration {
    let Some(v) = v else {
        return Duration::from_secs(default);
    };
    let secs = c
        .check(v, |&s| {
            if s == 0 {
                Err("must be at least 1 second".to_string())
            } else {
                Ok(s)
            }
        })
        .unwrap_or(default);
    Duration::from_secs(secs)
}

impl ServerConfig {
    /// Parses and validates a configuration. `file_name` is used in error messages and
    /// to resolve a relative `site.root` (against the file's directory).
    pub fn from_toml_str(text: &str, file_name: &str) -> Result<ServerConfig, ConfigErrors> {
        let mut c = Checker {
            file: file_name,
            text,
            errors: Vec::new(),
        };
        let raw: RawConfig = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                c.toml_error(&e);
                return Err(ConfigErrors(c.errors));
            }
        };
        let base = Path::new(file_name).parent().unwrap_or(Path::new(""));
        let cfg = build(&mut c, raw, base);
        match cfg {
            Some(cfg) if c.errors.is_empty() => Ok(cfg),
            _ => {
                // In file order: this file's first, then the users file's.
                c.errors
                    .sort_by_key(|e| (e.file != file_name, e.line, e.column));
                Err(ConfigErrors(c.errors))
            }
        }
    }

    /// Reads and validates a configuration file.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigErrors> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => ServerConfig::from_toml_str(&text, &name),
            Err(e) => Err(ConfigErrors(vec![ConfigError {
                file: name,
                line: 0,
                column: 0,
                key: None,
                message: format!("cannot read: {e}"),
            }])),
        }
    }
}

/// `[admin]`, checked: an address to listen on and a password hash.
fn admin(c: &mut Checker<'_>, raw: &RawAdmin) -> Option<AdminConfig> {
    let listen = c.check(&raw.listen, |s| {
        s.parse::<SocketAddr>()
            .map_err(|_| format!("{s:?} is not an address and port, like \"127.0.0.1:9121\""))
    });
    let user = match &raw.user {
        Some(u) => c.check(u, |u| match u.is_empty() || u.contains(':') {
            true => Err("must be a non-empty name without ':'".to_string()),
            false => Ok(u.clone()),
        })?,
        None => "admin".to_string(),
    };
    let Some(hash) = &raw.password_hash else {
        c.error(
            raw.listen.span(),
            "[admin] needs password_hash: the admin listener never runs without a password \
             (make one with `wharf passwd`)",
        );
        return None;
    };
    let password_hash = c.check(hash, |h| crate::users::check_hash(h))?;
    Some(AdminConfig {
        listen: listen?,
        user,
        password_hash,
    })
}

fn build(c: &mut Checker<'_>, mut raw: RawConfig, base: &Path) -> Option<ServerConfig> {
    // Server-wide policy: IP rules, logon restrictions, limits (with users' bandwidth).
    let mut server_rules = ServerRules {
        ip_rules: policy::ip_rules(c, raw.server.ip_security.take()),
        logon: policy::logon(c, raw.server.logon_restrictions.take()),
        ..ServerRules::default()
    };
    let proxy_addresses = raw
        .server
        .proxy_protocol
        .as_ref()
        .map(|p| p.get_ref().addresses.clone());
    server_rules.proxy = policy::proxy(c, raw.server.proxy_protocol.take());
    let central_log = raw.server.logging.take();
    let raw_auth = raw.auth.take();
    let user_bandwidth: Vec<(String, Spanned<u64>)> = raw
        .users
        .iter()
        .filter_map(|u| Some((u.name.get_ref().clone(), u.bandwidth.clone()?)))
        .collect();
    let mut site_limits = policy::limits(c, raw.limits.take(), &mut server_rules, &user_bandwidth);
    let s = &raw.server;
    let passive_ports = match &s.passive_ports {
        Some(p) => c.check(p, |s| parse_port_range(s)).unwrap_or(0..=0),
        None => 0..=0,
    };
    let external_ip = s.external_ip.as_ref().and_then(|v| c.check(v, parse_ipv4));
    let (active_source_port, active_span) = active::of_site(
        c,
        s.active_source_port.as_ref(),
        wharf_core::ActiveSourcePort::Any,
        None,
    );
    let runtime = match &s.runtime {
        Some(r) => c
            .check(r, |s| RuntimeKind::parse(s))
            .unwrap_or(RuntimeKind::Mio),
        None => RuntimeKind::Mio,
    };
    let run_as = match (&s.user, &s.group) {
        (Some(user), group) => {
            let group_name = group.as_ref().map(|g| g.get_ref().as_str());
            match crate::privileges::resolve(user.get_ref(), group_name) {
                Ok(r) => Some(r),
                Err(e) => {
                    // A missing group is the group's line; anything else the user's.
                    let span = match group {
                        Some(g) if e.contains("group") => g.span(),
                        _ => user.span(),
                    };
                    c.error(span, e);
                    None
                }
            }
        }
        (None, Some(group)) => {
            c.error(group.span(), "server.group needs server.user");
            None
        }
        (None, None) => None,
    };
    let max_connections = match &s.max_connections {
        Some(m) => c
            .check(m, |&n| {
                if n == 0 {
                    Err("must be at least 1".to_string())
                } else {
                    Ok(n)
                }
            })
            .unwrap_or(1),
        None => 10_000,
    };
    let t = &raw.timeouts;
    let timeouts = Timeouts {
        idle: seconds(c, &t.control, 120),
        data_connect: seconds(c, &t.data, 30),
        transfer_stall: seconds(c, &t.data, 30),
        login: seconds(c, &t.login, 30),
        tls_handshake: seconds(c, &t.tls_handshake, 10),
    };

    // Accounts: this file's users, the users file's, then the groups of each (members
    // must be users of either). Errors in the users file name that file.
    let mut accounts = Accounts::default();
    accounts.add_users(c, raw.users);
    let users_file = s
        .users_file
        .as_ref()
        .and_then(|f| read_users_file(c, f, base));
    let mut file_groups = Vec::new();
    if let Some((name, text)) = &users_file {
        let mut uc = Checker {
            file: name,
            text,
            errors: Vec::new(),
        };
        match toml::from_str::<RawUsersFile>(text) {
            Ok(raw) => {
                for u in &raw.users {
                    if let Some(b) = &u.bandwidth {
                        let rate = uc.check(b, |&n| policy::check_rate(n, &site_limits));
                        if let Some(rate) = rate {
                            let name = u.name.get_ref().clone();
                            site_limits.user_bandwidth.insert(name, rate);
                        }
                    }
                }
                accounts.add_users(&mut uc, raw.users);
                file_groups = raw.groups;
            }
            Err(e) => uc.toml_error(&e),
        }
        c.errors.append(&mut uc.errors);
    }
    accounts.add_groups(c, raw.groups);
    if let Some((name, text)) = &users_file {
        let mut uc = Checker {
            file: name,
            text,
            errors: Vec::new(),
        };
        accounts.add_groups(&mut uc, file_groups);
        c.errors.append(&mut uc.errors);
    }
    // Providers: with PAM or LDAP, rules may name users and groups the file does not.
    let mut warnings = Vec::new();
    let auth = auth_table::auth(
        c,
        raw_auth,
        base,
        !accounts.users.is_empty(),
        run_as.is_some(),
        &mut warnings,
    );
    accounts.external = auth.auth.has_external();

    // Sites: the `[site]` shorthand (on `server.listen`) or `[[sites]]`.
    let defaults = SessionConfig {
        timeouts,
        passive_ports,
        external_ip,
        active_source_port,
        limits: site_limits,
        ..SessionConfig::default()
    };
    let shorthand = raw.site.is_some();
    let raw_sites: Vec<RawSite> = match (raw.site, raw.sites.is_empty()) {
        (Some(site), true) => vec![site],
        (None, false) => raw.sites,
        (Some(site), false) => {
            c.error(
                site.root.span(),
                "use either one [site] or several [[sites]], not both",
            );
            return None;
        }
        (None, true) => {
            c.error(
                0..0,
                "missing [site] table (it needs at least `root`), or [[sites]] tables",
            );
            return None;
        }
    };
    let listen_default = match (&s.listen, shorthand) {
        (Some(list), true) => {
            if list.is_empty() {
                c.error(
                    0..0,
                    "server.listen is empty: the server would accept nothing",
                );
            }
            list.iter()
                .filter_map(|a| c.check(a, parse_listen))
                .collect()
        }
        (None, true) => vec![SocketAddr::from(([127, 0, 0, 1], 2121))],
        (Some(list), false) => {
            let span = list.first().map_or(0..0, |a| a.span());
            c.error(
                span,
                "server.listen is for the single [site] form; [[sites]] are reached through their `bindings`",
            );
            Vec::new()
        }
        (None, false) => Vec::new(),
    };
    let listen_implicit: Vec<SocketAddr> = match (&s.listen_implicit, shorthand) {
        (Some(list), true) => list
            .get_ref()
            .iter()
            .filter_map(|a| c.check(a, parse_listen))
            .collect(),
        (Some(list), false) => {
            c.error(
                list.span(),
                "server.listen_implicit is for the single [site] form; give [[sites]] bindings like { address = \"0.0.0.0:990:\", implicit_tls = true }",
            );
            Vec::new()
        }
        (None, _) => Vec::new(),
    };
    let mut tls_shared: Option<TlsShared> = None;
    let mut sites: Vec<SiteConfig> = Vec::with_capacity(raw_sites.len());
    let mut spans: Vec<Range<usize>> = Vec::new();
    for (i, raw_site) in raw_sites.into_iter().enumerate() {
        let ctx = SiteCtx {
            index: i,
            shorthand,
            base,
            defaults: &defaults,
            listen: &listen_default,
            listen_implicit: &listen_implicit,
            listen_implicit_span: s.listen_implicit.as_ref().map_or(0..0, |l| l.span()),
            accounts: &accounts,
            max_connections,
            central_log: central_log.as_ref(),
            active_span: active_span.clone(),
        };
        if let Some((site, binding_spans)) = build_site(c, raw_site, &ctx, &mut tls_shared) {
            if let Some(other) = sites
                .iter()
                .find(|o| o.name.eq_ignore_ascii_case(&site.name))
            {
                let name = other.name.clone();
                c.error(
                    binding_spans.first().cloned().unwrap_or(0..0),
                    format!("two sites are named {name:?}"),
                );
            }
            spans.extend(binding_spans);
            sites.push(site);
        }
    }
    let cfg = ServerConfig {
        listen: Vec::new(),
        shards: s.shards.unwrap_or(0),
        max_connections,
        runtime,
        shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(30)),
        login_cache: Duration::from_secs(s.login_cache.unwrap_or(900)),
        sites,
        users: accounts.users,
        server_rules,
        run_as,
        auth: auth.auth,
        warnings,
        ldap_at: auth.ldap_at,
        pid_file: s.pid_file.as_ref().and_then(|p| {
            let path = base.join(p.get_ref());
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => Some(path),
                Ok(_) => {
                    c.error(p.span(), format!("{} is not a directory", dir.display()));
                    None
                }
                Err(e) => {
                    c.error(p.span(), format!("{}: {e}", dir.display()));
                    None
                }
            }
        }),
        users_file: s.users_file.as_ref().map(|f| base.join(f.get_ref())),
        single_site: shorthand,
        cluster: raw.cluster.as_ref().and_then(|raw| cluster_config(c, raw)),
        admin: raw.admin.as_ref().and_then(|a| admin(c, a)),
    };
    policy::check_log_directories(c, &cfg.sites);
    if !c.errors.is_empty() {
        return None;
    }
    // Ambiguous or clashing bindings, as the core sees them.
    if let Err(e) = cfg.sites_table(&[]) {
        let at = match &e {
            SitesError::AmbiguousDefault { binding, .. }
            | SitesError::DuplicateHost { binding, .. }
            | SitesError::MixedTls { binding, .. }
            | SitesError::NoSuchSite { binding, .. } => spans.get(*binding).cloned(),
            SitesError::NoSites => None,
        };
        c.error(at.unwrap_or(0..0), e.to_string());
        return None;
    }
    let listen = listen_addresses(&cfg.sites);
    policy::check_proxy_addresses(c, proxy_addresses.as_deref().unwrap_or(&[]), &listen);
    if !c.errors.is_empty() {
        return None;
    }
    Some(ServerConfig { listen, ..cfg })
}

impl ServerConfig {
    /// `--listen`: serves the single `[site]` on `addrs` instead of `server.listen`
    /// (implicit-FTPS addresses stay). A configuration of `[[sites]]` is refused: its
    /// sites are reached through their bindings, which name host names too.
    pub fn override_listen(&mut self, addrs: &[SocketAddr]) -> Result<(), String> {
        if !self.single_site {
            return Err(
                "--listen replaces server.listen of the single [site] form; with [[sites]], change the bindings of the sites"
                    .into(),
            );
        }
        if addrs.is_empty() {
            return Err("--listen needs an address".into());
        }
        let site = &mut self.sites[0];
        let implicit = site.bindings.iter().filter(|b| b.implicit_tls).cloned();
        site.bindings = addrs
            .iter()
            .map(|&addr| BindingConfig {
                addr,
                host: None,
                implicit_tls: false,
            })
            .chain(implicit)
            .collect();
        self.sites_table(&[])
            .map_err(|e| format!("--listen: {e}"))?;
        self.listen = listen_addresses(&self.sites);
        Ok(())
    }
}

/// Every distinct binding address, in order; an exact address is left out when a
/// wildcard of its family listens on the same (non-zero) port, which receives its
/// connections.
fn listen_addresses(sites: &[SiteConfig]) -> Vec<SocketAddr> {
    let all: Vec<SocketAddr> = sites
        .iter()
        .flat_map(|s| s.bindings.iter().map(|b| b.addr))
        .collect();
    let covered = |a: &SocketAddr| {
        a.port() != 0
            && !a.ip().is_unspecified()
            && all.iter().any(|w| {
                w.ip().is_unspecified() && w.is_ipv4() == a.is_ipv4() && w.port() == a.port()
            })
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in &all {
        if !out.contains(a) && !covered(a) {
            out.push(*a);
        }
    }
    out
}

/// Users and groups, as the configuration and the users file define them.
#[derive(Default)]
struct Accounts {
    users: Vec<UserEntry>,
    /// Every group name (as first written), from `[[groups]]` and users' `groups`.
    groups: Vec<String>,
    /// Whether PAM or LDAP provide accounts too: names in rules cannot all be checked.
    external: bool,
}

impl Accounts {
    fn user(&self, name: &str) -> Option<&UserEntry> {
        self.users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
    }

    fn has_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g.eq_ignore_ascii_case(name))
    }

    fn note_group(&mut self, name: &str) {
        if !self.has_group(name) {
            self.groups.push(name.to_string());
        }
    }

    fn add_users(&mut self, c: &mut Checker<'_>, raw: Vec<RawUser>) {
        for u in raw {
            let name = u.name.get_ref().clone();
            if let Err(m) = check_account_name("user", &name) {
                c.error(u.name.span(), m);
                continue;
            }
            if let Some(other) = self.user(&name) {
                let msg = if other.name == name {
                    format!("user {name:?} is defined twice")
                } else {
                    format!(
                        "user {name:?} is defined twice (as {:?}; names ignore case)",
                        other.name
                    )
                };
                c.error(u.name.span(), msg);
                continue;
            }
            let Some(hash) = c.check(&u.password_hash, |h| crate::users::check_hash(h)) else {
                continue;
            };
            let mut groups: Vec<String> = Vec::new();
            for g in &u.groups {
                match check_account_name("group", g.get_ref()) {
                    Ok(()) if !groups.iter().any(|x| x.eq_ignore_ascii_case(g.get_ref())) => {
                        groups.push(g.get_ref().clone())
                    }
                    Ok(()) => {}
                    Err(m) => c.error(g.span(), m),
                }
            }
            for g in &groups {
                self.note_group(g);
            }
            self.users.push(UserEntry {
                name,
                password_hash: hash,
                groups,
            });
        }
    }

    /// `[[groups]]`: names and members (who must be users).
    fn add_groups(&mut self, c: &mut Checker<'_>, raw: Vec<RawGroup>) {
        let mut defined: Vec<String> = Vec::new();
        for g in raw {
            let name = g.name.get_ref().clone();
            if let Err(m) = check_account_name("group", &name) {
                c.error(g.name.span(), m);
                continue;
            }
            if defined.iter().any(|d| d.eq_ignore_ascii_case(&name)) {
                c.error(g.name.span(), format!("group {name:?} is defined twice"));
                continue;
            }
            defined.push(name.clone());
            self.note_group(&name);
            for m in &g.members {
                let Some(i) = self
                    .users
                    .iter()
                    .position(|u| u.name.eq_ignore_ascii_case(m.get_ref()))
                else {
                    c.error(
                        m.span(),
                        format!("group {name:?} lists {:?}, who is not a user", m.get_ref()),
                    );
                    continue;
                };
                let user = &mut self.users[i];
                if !user.groups.iter().any(|x| x.eq_ignore_ascii_case(&name)) {
                    user.groups.push(name.clone());
                }
            }
        }
    }
}

/// Whether `name` may name a user (`wharf user add` checks it before writing).
pub fn check_user_name(name: &str) -> Result<(), String> {
    check_account_name("user", name)
}

/// Whether `name` may name a group.
pub fn check_group_name(name: &str) -> Result<(), String> {
    check_account_name("group", name)
}

/// User and group names: not empty, no spaces or control characters, no `/` (a home
/// directory is named after the user) and no `|` (it separates `host|user`).
fn check_account_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name
            .chars()
            .any(|ch| ch.is_control() || ch == ' ' || ch == '/' || ch == '|' || ch == ',')
    {
        return Err(format!(
            "{name:?} is not a usable {what} name (no spaces, control characters, '/', '|' or ',')"
        ));
    }
    if matches!(name, "*" | "?") {
        return Err(format!(
            "{name:?} is reserved in rules (all users, anonymous)"
        ));
    }
    if what == "user"
        && (name.eq_ignore_ascii_case("anonymous") || name.eq_ignore_ascii_case("ftp"))
    {
        return Err(format!(
            "{name:?} means an anonymous login; choose another user name"
        ));
    }
    Ok(())
}

/// Reads `server.users_file` (relative to the configuration's directory): its name
/// for error messages and its text.
fn read_users_file(
    c: &mut Checker<'_>,
    file: &Spanned<String>,
    base: &Path,
) -> Option<(String, String)> {
    let path = base.join(file.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(text) => Some((path.display().to_string(), text)),
        Err(e) => {
            c.error(file.span(), format!("{}: {e}", path.display()));
            None
        }
    }
}

/// What building one site needs to know.
struct SiteCtx<'a> {
    index: usize,
    shorthand: bool,
    base: &'a Path,
    defaults: &'a SessionConfig,
    listen: &'a [SocketAddr],
    /// `server.listen_implicit`, for the `[site]` form, and where it is written.
    listen_implicit: &'a [SocketAddr],
    listen_implicit_span: Range<usize>,
    accounts: &'a Accounts,
    /// Sizes the TLS session cache.
    max_connections: usize,
    central_log: Option<&'a policy::RawLogging>,
    /// Where `server.active_source_port` is written, if it is.
    active_span: Option<Range<usize>>,
}

/// The text of the 220 greeting before any site's own banner.
pub const DEFAULT_BANNER: &str = "wharf FTP server ready";

fn build_site(
    c: &mut Checker<'_>,
    mut site: RawSite,
    ctx: &SiteCtx<'_>,
    tls_shared: &mut Option<TlsShared>,
) -> Option<(SiteConfig, Vec<Range<usize>>)> {
    let name = match &site.name {
        Some(n) => c
            .check(n, |n| {
                if n.trim().is_empty() || n.chars().any(char::is_control) {
                    Err(format!("{n:?} is not a usable site name"))
                } else {
                    Ok(n.clone())
                }
            })
            .unwrap_or_default(),
        None if ctx.shorthand => "default".to_string(),
        None => {
            c.error(site.root.span(), "every [[sites]] entry needs a `name`");
            String::new()
        }
    };
    let root = s3_table::check_site_root(c, &site.root, site.s3.as_ref(), ctx.base);

    // Bindings.
    let mut bindings = Vec::new();
    let mut spans = Vec::new();
    match &site.bindings {
        Some(list) if ctx.shorthand && !ctx.listen.is_empty() && list.get_ref().is_empty() => {
            c.error(
                list.span(),
                "bindings is empty: the site would be unreachable",
            );
        }
        Some(list) => {
            if list.get_ref().is_empty() {
                c.error(
                    list.span(),
                    "bindings is empty: the site would be unreachable",
                );
            }
            for v in list.get_ref() {
                if let Some(b) = c.check(v, parse_binding_value) {
                    bindings.push(b);
                    spans.push(v.span());
                }
            }
        }
        None if ctx.shorthand => {
            let plain = ctx.listen.iter().map(|a| (a, false, site.root.span()));
            let implicit = ctx
                .listen_implicit
                .iter()
                .map(|a| (a, true, ctx.listen_implicit_span.clone()));
            for (addr, implicit_tls, span) in plain.chain(implicit) {
                bindings.push(BindingConfig {
                    addr: *addr,
                    host: None,
                    implicit_tls,
                });
                spans.push(span);
            }
        }
        None => c.error(
            site.root.span(),
            "a [[sites]] entry needs `bindings`, like [\"127.0.0.1:21:\"] (ip:port:host)",
        ),
    }

    let listing_style = match &site.listing_style {
        Some(v) => c.check(v, parse_listing_style).unwrap_or_default(),
        None => ListingStyle::Unix,
    };
    let isolation = match &site.isolation {
        Some(v) => c.check(v, parse_isolation).unwrap_or_default(),
        None => Isolation::None,
    };
    let external_ip = match &site.external_ip {
        Some(v) => c.check(v, parse_ipv4),
        None => ctx.defaults.external_ip,
    };
    let mut pasv_addresses = Vec::new();
    for p in &site.passive_addresses {
        let ip = p.ip.as_ref().and_then(|v| c.check(v, parse_ipv4));
        if p.networks.get_ref().is_empty() {
            c.error(p.networks.span(), "networks is empty");
        }
        for n in p.networks.get_ref() {
            if let Some(network) = c.check(n, |s| {
                IpNet::parse(s).map_err(|e| {
                    format!("{s:?} is not a network like \"10.0.0.0/8\" or \"fd00::/8\": {e}")
                })
            }) {
                pasv_addresses.push(PasvAddress { network, ip });
            }
        }
    }

    // Messages: the legacy `banner` is the whole greeting; `messages.banner` follows
    // wharf's own line unless `suppress_default_banner`.
    let m = site.messages.unwrap_or_default();
    let banner = match (&site.banner, &m.banner) {
        (Some(b), Some(mb)) => {
            c.error(
                mb.span(),
                format!(
                    "both banner ({:?}) and messages.banner are set; keep messages.banner",
                    b.get_ref()
                ),
            );
            String::new()
        }
        (Some(b), None) => b.get_ref().clone(),
        (None, Some(mb)) if m.suppress_default_banner => mb.get_ref().clone(),
        (None, Some(mb)) => format!("{DEFAULT_BANNER}\n{}", mb.get_ref()),
        (None, None) if m.suppress_default_banner => "FTP server ready.".to_string(),
        (None, None) => DEFAULT_BANNER.to_string(),
    };

    // Authorization: rules, or the anonymous_write switch, not both.
    let rules = match &site.rules {
        Some(list) => {
            if let Some(w) = &site.anonymous_write {
                c.error(
                    w.span(),
                    "anonymous_write has no effect when the site has rules: write a rule for \"?\" instead",
                );
            }
            Some(build_rules(c, list.get_ref(), ctx.accounts))
        }
        None => None,
    };

    // Virtual directories, each a mount of its own.
    let storage_root = VPath::root()
        .child(&format!("site{}", ctx.index))
        .unwrap_or_else(VPath::root);
    let mut virtual_dirs = Vec::new();
    let mut vdir_paths = Vec::new();
    for (j, v) in site.virtual_directories.iter().enumerate() {
        let Some(vname) = c.check(&v.name, |n| {
            if wharf_core::site::is_plain_segment(n) {
                Ok(n.clone())
            } else {
                Err(format!(
                    "{n:?} is not one folder name (no '/', '\\\\', '.' or '..')"
                ))
            }
        }) else {
            continue;
        };
        if virtual_dirs
            .iter()
            .any(|d: &VirtualDir| wharf_core::site::same_name(&d.name, &vname))
        {
            c.error(
                v.name.span(),
                format!("virtual directory {vname:?} is defined twice"),
            );
            continue;
        }
        let Some(path) = c.check(&v.path, |p| check_root(ctx.base, p)) else {
            continue;
        };
        virtual_dirs.push(VirtualDir {
            name: vname.clone(),
            storage_root: VPath::root()
                .child(&format!("site{}.vdir{j}", ctx.index))
                .unwrap_or_else(VPath::root),
        });
        vdir_paths.push((vname, path));
    }

    let tls = site
        .tls
        .as_ref()
        .and_then(|t| check_tls(c, t, ctx.base, tls_shared, ctx.max_connections));
    let (tls_settings, tls) = match tls {
        Some((settings, files)) => (Some(settings), Some(files)),
        None => (None, None),
    };
    // Security and operations: filtering, IP rules, the log.
    let mut max_line = ctx.defaults.max_line;
    let filtering = policy::filtering(c, site.request_filtering.take(), &mut max_line);
    let ip_rules = policy::ip_rules(c, site.ip_security.take());
    let logging = policy::logging(c, &name, site.logging.take(), ctx.central_log, ctx.base);
    let login_timeout = ctx.defaults.timeouts.login;
    let failed_login_delay = match &site.failed_login_delay {
        Some(v) => c
            .check(v, |v| parse_delay(v, login_timeout))
            .unwrap_or(ctx.defaults.failed_login_delay),
        None => ctx.defaults.failed_login_delay,
    };
    // Every site logs for the server's observer (its log lines and metrics); only
    // sites with a W3C log have their records written there. The observer's lines show
    // paths, whatever the W3C fields.
    let (logging, log) = match logging {
        Some((cfg, out)) => (
            wharf_core::log::LogConfig {
                fields: wharf_core::log::LogFields::ALL,
                ..cfg
            },
            Some(out),
        ),
        None => (
            wharf_core::log::LogConfig {
                site: Arc::from(name.as_str()),
                fields: wharf_core::log::LogFields::ALL,
                w3c: false,
            },
            None,
        ),
    };
    let logging = Some(logging);

    let (active_source_port, active_span) = active::of_site(
        c,
        site.active_source_port.as_ref(),
        ctx.defaults.active_source_port,
        ctx.active_span.clone(),
    );
    if let Some(span) = active_span {
        active::check_clashes(
            c,
            span,
            active_source_port,
            &bindings,
            &ctx.defaults.passive_ports,
        );
    }

    let session = SessionConfig {
        site_name: name.clone(),
        banner,
        messages: Messages {
            welcome: m.welcome,
            exit: m.exit,
            max_clients: m.max_clients,
        },
        allow_anonymous: site.anonymous,
        anonymous_write: site.anonymous_write.as_ref().is_some_and(|w| *w.get_ref()),
        rules,
        isolation,
        storage_root,
        virtual_dirs,
        external_ip,
        pasv_addresses,
        match_pasv_peer: site.match_client_address_for_pasv.unwrap_or(true),
        match_port_peer: site.match_client_address_for_port.unwrap_or(true),
        active_source_port,
        listing_style,
        keep_partial_uploads: site.keep_partial_uploads,
        tls: tls_settings,
        allow_replace_on_rename: site.allow_replace_on_rename,
        allow_read_uploads_in_progress: site.allow_read_uploads_in_progress,
        failed_login_delay,
        limits: wharf_core::policy::SiteLimits {
            max_connections: site.max_connections.unwrap_or(0),
            ..ctx.defaults.limits.clone()
        },
        max_line,
        filtering,
        ip_rules,
        logging,
        ..ctx.defaults.clone()
    };
    for (b, span) in bindings.iter().zip(&spans) {
        // (A TLS table with errors has been reported already.)
        if b.implicit_tls && site.tls.is_none() {
            c.error(
                span.clone(),
                "implicit TLS needs TLS settings (a certificate) on this site: add a [site.tls] (or [sites.tls]) table with certificate and private_key",
            );
        }
    }
    Some((
        SiteConfig {
            name,
            root: root.as_ref()?.0.clone(),
            object_root: root?.1,
            bindings,
            virtual_dirs: vdir_paths,
            session,
            tls,
            log,
            durable_writes: site.durable_writes.unwrap_or(true),
        },
        spans,
    ))
}

fn build_rules(c: &mut Checker<'_>, raw: &[RawRule], accounts: &Accounts) -> Rules {
    let mut rules = Vec::with_capacity(raw.len());
    for r in raw {
        let path = match &r.path {
            Some(p) => c.check(p, |p| {
                VPath::root()
                    .resolve(p)
                    .map_err(|_| format!("{p:?} is not a path"))
            }),
            None => Some(VPath::root()),
        };
        let allow = c.check(&r.access, |a| match a.to_ascii_lowercase().as_str() {
            "allow" => Ok(true),
            "deny" => Ok(false),
            _ => Err(format!("{a:?}: access is \"allow\" or \"deny\"")),
        });
        let perms = c.check(&r.permissions, |p| {
            let (mut read, mut write) = (false, false);
            for word in p.split([',', '|', ' ']).filter(|w| !w.is_empty()) {
                match word.to_ascii_lowercase().as_str() {
                    "read" => read = true,
                    "write" => write = true,
                    _ => {
                        return Err(format!(
                            "{word:?}: permissions are \"read\", \"write\" or \"read,write\""
                        ))
                    }
                }
            }
            if read || write {
                Ok((read, write))
            } else {
                Err("permissions name nothing: \"read\", \"write\" or \"read,write\"".into())
            }
        });
        let mut who = Vec::new();
        if let Some(users) = &r.users {
            for name in names(c, users) {
                who.push(match name.as_str() {
                    "*" => Who::All,
                    "?" => Who::Anonymous,
                    _ => match accounts.user(&name) {
                        Some(_) => Who::User(name),
                        None if accounts.external => Who::User(name),
                        None => {
                            c.error(
                                users.span(),
                                format!("{name:?} is not a user (\"*\" is everyone, \"?\" anonymous)"),
                            );
                            continue;
                        }
                    },
                });
            }
        }
        for groups in [&r.groups, &r.roles].into_iter().flatten() {
            for name in names(c, groups) {
                if accounts.has_group(&name) || accounts.external {
                    who.push(Who::Group(name));
                } else {
                    c.error(groups.span(), format!("{name:?} is not a group"));
                }
            }
        }
        if r.users.is_none() && r.groups.is_none() && r.roles.is_none() {
            c.error(
                r.access.span(),
                "the rule names nobody: give `users` (names, \"*\" or \"?\") and/or `groups`",
            );
        }
        if let (Some(path), Some(allow), Some((read, write))) = (path, allow, perms) {
            rules.push(Rule {
                path,
                allow,
                who,
                read,
                write,
            });
        }
    }
    Rules::new(rules)
}

/// `"a, b"` or `["a", "b"]`.
fn names(c: &mut Checker<'_>, v: &Spanned<toml::Value>) -> Vec<String> {
    let list: Option<Vec<String>> = match v.get_ref() {
        toml::Value::String(s) => Some(
            s.split(',')
                .map(|n| n.trim().to_string())
                .filter(|n| !n.is_empty())
                .collect(),
        ),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_string()))
            .collect(),
        _ => None,
    };
    match list {
        Some(l) if !l.is_empty() => l,
        _ => {
            c.error(
                v.span(),
                "expected names: \"a, b\" or [\"a\", \"b\"] (\"*\" everyone, \"?\" anonymous)",
            );
            Vec::new()
        }
    }
}

/// A binding: `"ip:port:host"`, or `{ address = "ip:port:host", implicit_tls = true }`.
fn parse_binding_value(v: &toml::Value) -> Result<BindingConfig, String> {
    match v {
        toml::Value::String(s) => parse_binding(s, false),
        toml::Value::Table(t) => {
            let mut address = None;
            let mut implicit_tls = false;
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("address", toml::Value::String(s)) => address = Some(s.clone()),
                    ("implicit_tls", toml::Value::Boolean(b)) => implicit_tls = *b,
                    (k, _) => {
                        return Err(format!(
                            "unexpected {k:?} in a binding: it takes `address` (string) and `implicit_tls` (boolean)"
                        ))
                    }
                }
            }
            let address = address.ok_or("a binding table needs `address = \"ip:port:host\"`")?;
            parse_binding(&address, implicit_tls)
        }
        _ => Err(
            "a binding is \"ip:port:host\" or { address = \"ip:port:host\", implicit_tls = true }"
                .into(),
        ),
    }
}

/// `ip:port:host`: `*` for every IPv4 address, `[::]` for every IPv6 one, an empty host
/// for the site that answers without a host name.
pub fn parse_binding(s: &str, implicit_tls: bool) -> Result<BindingConfig, String> {
    let bad = || {
        format!(
            "{s:?} is not a binding \"ip:port:host\" (\"*:21:\", \"127.0.0.1:2121:ftp.example.com\", \"[::]:21:\")"
        )
    };
    let (addr, host) = s.rsplit_once(':').ok_or_else(bad)?;
    let addr = match addr.strip_prefix("*:") {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    let host = host.trim();
    if host
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control() || ch == '|' || ch == '/')
    {
        return Err(format!("{host:?} is not a host name"));
    }
    Ok(BindingConfig {
        addr,
        host: (!host.is_empty()).then(|| host.to_ascii_lowercase()),
        implicit_tls,
    })
}

fn parse_ipv4(s: &String) -> Result<Ipv4Addr, String> {
    s.parse::<Ipv4Addr>()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_isolation(s: &String) -> Result<Isolation, String> {
    let key: String = s
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    match key.as_str() {
        "none" => Ok(Isolation::None),
        "startinusersdirectory" => Ok(Isolation::StartInUsersDirectory),
        "isolaterootdirectoryonly" => Ok(Isolation::IsolateRootDirectoryOnly),
        "isolatealldirectories" => Ok(Isolation::IsolateAllDirectories),
        "activedirectory" | "isolateactivedirectory" => Ok(Isolation::ActiveDirectory),
        _ => Err(format!(
            "{s:?} is not an isolation mode: \"none\", \"start_in_users_directory\", \"isolate_root_directory_only\", \"isolate_all_directories\" or \"active_directory\""
        )),
    }
}

fn check_root(base: &Path, root: &String) -> Result<PathBuf, String> {
    let p = base.join(root);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(format!("{} is not a directory", p.display())),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

#[cfg(test)]
#[path = "config_proxy_tests.rs"]
mod proxy_tests;
#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "config_messages_tests.rs"]
mod message_tests;

/// `[cluster]`: the store's URL is checked here; whether it answers is the running
/// server's business (a node serves with its own state while the store is down).
fn cluster_config(c: &mut Checker<'_>, raw: &RawCluster) -> Option<crate::cluster::ClusterConfig> {
    let redis = c.check(&raw.redis, |url| {
        if url.starts_with("redis://")
            || url.starts_with("redis+unix://")
            || url.starts_with("unix://")
        {
            Ok(url.clone())
        } else {
            Err(format!(
                "{url:?} is not a Redis URL: redis://host:port/ (or redis+unix:///path)"
            ))
        }
    })?;
    let prefix = match &raw.prefix {
        Some(p) => c.check(p, |p| {
            match p.is_empty() || p.contains(char::is_whitespace) {
                true => Err("must be a non-empty word, like \"wharf\"".to_string()),
                false => Ok(p.clone()),
            }
        })?,
        None => "wharf".to_string(),
    };
    Some(crate::cluster::ClusterConfig { redis, prefix })
}
