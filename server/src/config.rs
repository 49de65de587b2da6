//! The TOML configuration: parsing, validation, and the [`ServerConfig`] it becomes.
//!
//! Every error names the file, the line and column, and the key (`server.listen`,
//! `users[1].password_hash`), whether toml itself rejected the text or a value failed a
//! semantic check (a bad address, a missing root, a duplicate user, a hash that does not
//! parse). Validation reports every error it finds, not just the first.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wharf_core::{ControlPolicy, DataPolicy, ListingStyle, SessionConfig, Timeouts, TlsSettings};

use crate::tls::SiteTls;
use crate::users::UserEntry;

/// Which event loop drives the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    Mio,
}

impl RuntimeKind {
    /// Parses a `--runtime` / `server.runtime` value.
    pub fn parse(s: &str) -> Result<RuntimeKind, String> {
        match s {
            "mio" => Ok(RuntimeKind::Mio),
            "smol" => Err("runtime \"smol\" is not built yet; use \"mio\"".into()),
            other => Err(format!(
                "unknown runtime {other:?}; the only one is \"mio\""
            )),
        }
    }
}

/// A validated configuration, ready to start a server with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Control-channel addresses (port 0 lets the OS pick, useful in tests).
    pub listen: Vec<SocketAddr>,
    /// Implicit-FTPS addresses: TLS from the first byte (990 by convention). The
    /// running server lists them after `listen` in `local_addrs`.
    pub listen_implicit: Vec<SocketAddr>,
    /// Event-loop threads; 0 means one per core.
    pub shards: usize,
    /// Simultaneous control connections over all shards.
    pub max_connections: usize,
    pub runtime: RuntimeKind,
    /// How long a graceful shutdown lets transfers finish.
    pub shutdown_grace: Duration,
    /// The site's directory on disk.
    pub root: PathBuf,
    /// What every session of the site is told (its `tls` holds the FTPS policy).
    pub session: SessionConfig,
    /// The site's certificate files, when it offers FTPS ([`SiteTls::reload`] on SIGHUP).
    pub tls: Option<SiteTls>,
    pub users: Vec<UserEntry>,
}

impl ServerConfig {
    /// Re-reads every certificate (SIGHUP); the error names the files. Running sessions
    /// keep their connections; new handshakes get the new certificate.
    pub fn reload_certificates(&self) -> Result<(), String> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }
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
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
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
    timeouts: RawTimeouts,
    #[serde(default)]
    users: Vec<RawUser>,
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
    runtime: Option<Spanned<String>>,
    shutdown_grace: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    name: Option<String>,
    root: Spanned<String>,
    #[serde(default)]
    anonymous: bool,
    #[serde(default)]
    anonymous_write: bool,
    banner: Option<String>,
    listing_style: Option<Spanned<String>>,
    #[serde(default)]
    keep_partial_uploads: bool,
    tls: Option<RawTls>,
}

/// `[site.tls]`: FTPS for the site.
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    control: Option<Spanned<u64>>,
    data: Option<Spanned<u64>>,
    login: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    password_hash: Spanned<String>,
    #[serde(default)]
    groups: Vec<String>,
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

/// Line and column (1-based) of byte `offset`, and the key written on that line,
/// prefixed by its table (`[server]` + `listen = ..` = `server.listen`; array tables are
/// numbered: `users[1].name`).
fn locate(text: &str, offset: usize) -> (usize, usize, Option<String>) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..offset].chars().count() + 1;
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('[') && !k.starts_with('#'));
    let table = current_table(&text[..line_start]);
    let key = match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (Some(t), None) => Some(t),
        (None, k) => k,
    };
    (line_no, column, key)
}

/// The table header in force at the end of `text` (`server`, `users[2]`).
fn current_table(text: &str) -> Option<String> {
    let headers: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    let last = *headers.last()?;
    if let Some(name) = last.strip_prefix("[[") {
        let name = name.split("]]").next().unwrap_or("").trim();
        let index = headers
            .iter()
            .filter(|h| {
                h.strip_prefix("[[")
                    .and_then(|h| h.split("]]").next())
                    .map(str::trim)
                    == Some(name)
            })
            .count()
            - 1;
        return Some(format!("{name}[{index}]"));
    }
    Some(
        last.trim_start_matches('[')
            .split(']')
            .next()?
            .trim()
            .to_string(),
    )
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

/// `[site.tls]`: loads the certificate (relative paths from the config file's directory)
/// and builds the site's TLS settings.
fn check_tls(
    c: &mut Checker<'_>,
    raw: RawTls,
    base: &Path,
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
    let certificate = base.join(raw.certificate.get_ref());
    let private_key = base.join(raw.private_key.get_ref());
    for (v, p) in [
        (&raw.certificate, &certificate),
        (&raw.private_key, &private_key),
    ] {
        if let Err(e) = std::fs::metadata(p) {
            c.error(v.span(), format!("{}: {e}", p.display()));
        }
    }
    if c.errors
        .iter()
        .any(|e| e.key.as_deref().is_some_and(|k| k.starts_with("site.tls")))
    {
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
    let config = match site.server_config(sessions) {
        Ok(config) => config,
        Err(e) => {
            c.error(raw.certificate.span(), e);
            return None;
        }
    };
    let mut settings = TlsSettings::new(config);
    settings.control = control?;
    settings.data = data?;
    settings.exempt_anonymous = raw.exempt_anonymous;
    settings.require_session_reuse = raw.require_tls_session_reuse.unwrap_or(true);
    settings.strict_close_notify = raw.strict_close_notify.unwrap_or(true);
    settings.allow_ccc = raw.allow_ccc.unwrap_or(true);
    Some((settings, site))
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
                let span = e.span().unwrap_or(0..0);
                c.error(span, e.message().trim_end().to_string());
                return Err(ConfigErrors(c.errors));
            }
        };
        let base = Path::new(file_name).parent().unwrap_or(Path::new(""));
        let cfg = build(&mut c, raw, base);
        match cfg {
            Some(cfg) if c.errors.is_empty() => Ok(cfg),
            _ => Err(ConfigErrors(c.errors)),
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

fn build(c: &mut Checker<'_>, raw: RawConfig, base: &Path) -> Option<ServerConfig> {
    let s = &raw.server;
    let listen = match &s.listen {
        None => vec![SocketAddr::from(([127, 0, 0, 1], 2121))],
        Some(list) => list
            .iter()
            .filter_map(|a| c.check(a, parse_listen))
            .collect(),
    };
    if s.listen.as_ref().is_some_and(|l| l.is_empty()) {
        c.error(
            0..0,
            "server.listen is empty: the server would accept nothing",
        );
    }
    let passive_ports = match &s.passive_ports {
        Some(p) => c.check(p, |s| parse_port_range(s)).unwrap_or(0..=0),
        None => 0..=0,
    };
    let external_ip = s.external_ip.as_ref().and_then(|v| {
        c.check(v, |s| {
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("{s:?} is not an IPv4 address"))
        })
    });
    let runtime = match &s.runtime {
        Some(r) => c
            .check(r, |s| RuntimeKind::parse(s))
            .unwrap_or(RuntimeKind::Mio),
        None => RuntimeKind::Mio,
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
    let listen_implicit: Vec<SocketAddr> = match &s.listen_implicit {
        None => Vec::new(),
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(|a| c.check(a, parse_listen))
            .collect(),
    };
    let Some(site) = raw.site else {
        c.error(0..0, "missing [site] table (it needs at least `root`)");
        return None;
    };
    let tls = site
        .tls
        .and_then(|t| check_tls(c, t, base, max_connections));
    if let (Some(list), None) = (&s.listen_implicit, &tls) {
        if !list.get_ref().is_empty() && c.errors.is_empty() {
            c.error(
                list.span(),
                "implicit FTPS needs a certificate: add a [site.tls] table",
            );
        }
    }
    let (tls_settings, tls) = match tls {
        Some((settings, files)) => (Some(settings), Some(files)),
        None => (None, None),
    };
    let root = c.check(&site.root, |r| check_root(base, r));
    let listing_style = match &site.listing_style {
        Some(v) => c.check(v, parse_listing_style).unwrap_or_default(),
        None => ListingStyle::Unix,
    };
    let t = &raw.timeouts;
    let idle = seconds(c, &t.control, 120);
    let data = seconds(c, &t.data, 30);
    let login = seconds(c, &t.login, 30);
    let users = check_users(c, raw.users);
    let session = SessionConfig {
        site_name: site.name.unwrap_or_else(|| "default".into()),
        banner: site
            .banner
            .unwrap_or_else(|| SessionConfig::default().banner),
        allow_anonymous: site.anonymous,
        anonymous_write: site.anonymous_write,
        timeouts: Timeouts {
            login,
            idle,
            data_connect: data,
            transfer_stall: data,
        },
        passive_ports,
        external_ip,
        listing_style,
        keep_partial_uploads: site.keep_partial_uploads,
        tls: tls_settings,
        ..SessionConfig::default()
    };
    Some(ServerConfig {
        listen,
        listen_implicit,
        tls,
        shards: s.shards.unwrap_or(0),
        max_connections,
        runtime,
        shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(30)),
        root: root?,
        session,
        users,
    })
}

fn check_root(base: &Path, root: &String) -> Result<PathBuf, String> {
    let p = base.join(root);
    match std::fs::metadata(&p) {
        Ok(m) if m.is_dir() => Ok(p),
        Ok(_) => Err(format!("{} is not a directory", p.display())),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

fn check_users(c: &mut Checker<'_>, raw: Vec<RawUser>) -> Vec<UserEntry> {
    let mut users: Vec<UserEntry> = Vec::with_capacity(raw.len());
    for u in raw {
        let name = u.name.get_ref().clone();
        if name.is_empty() || name.chars().any(|ch| ch.is_control() || ch == ' ') {
            c.error(u.name.span(), format!("{name:?} is not a usable user name"));
            continue;
        }
        if users.iter().any(|x| x.name == name) {
            c.error(u.name.span(), format!("user {name:?} is defined twice"));
            continue;
        }
        let Some(hash) = c.check(&u.password_hash, |h| crate::users::check_hash(h)) else {
            continue;
        };
        users.push(UserEntry {
            name,
            password_hash: hash,
            groups: u.groups,
        });
    }
    users
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
