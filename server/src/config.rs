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
use wharf_core::policy::limits::ServerRules;
use wharf_core::{ListingStyle, SessionConfig, Timeouts};

use crate::users::UserEntry;
use crate::w3c::LogOutput;

#[path = "config_policy.rs"]
mod policy;

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
    /// Event-loop threads; 0 means one per core.
    pub shards: usize,
    /// Simultaneous control connections over all shards.
    pub max_connections: usize,
    pub runtime: RuntimeKind,
    /// How long a graceful shutdown lets transfers finish.
    pub shutdown_grace: Duration,
    /// How long a successful login is remembered (zero: never); see `login_cache`.
    pub login_cache: Duration,
    /// The site's directory on disk.
    pub root: PathBuf,
    /// What every session of the site is told.
    pub session: SessionConfig,
    pub users: Vec<UserEntry>,
    /// Server-wide IP rules, logon restrictions and connection limits.
    pub server_rules: ServerRules,
    /// Where the W3C log is written, when the site logs.
    pub log: Option<LogOutput>,
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
    limits: Option<policy::RawLimits>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Vec<Spanned<String>>>,
    shards: Option<usize>,
    max_connections: Option<Spanned<usize>>,
    passive_ports: Option<Spanned<String>>,
    external_ip: Option<Spanned<String>>,
    runtime: Option<Spanned<String>>,
    shutdown_grace: Option<u64>,
    ip_security: Option<policy::RawIpSecurity>,
    logon_restrictions: Option<policy::RawLogon>,
    logging: Option<policy::RawLogging>,
    login_cache: Option<u64>,
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
    #[serde(default)]
    allow_replace_on_rename: bool,
    #[serde(default)]
    allow_read_uploads_in_progress: bool,
    request_filtering: Option<policy::RawFiltering>,
    ip_security: Option<policy::RawIpSecurity>,
    logging: Option<policy::RawLogging>,
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
    /// Bytes per second per transfer for this user.
    bandwidth: Option<Spanned<u64>>,
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

fn build(c: &mut Checker<'_>, mut raw: RawConfig, base: &Path) -> Option<ServerConfig> {
    let mut server_rules = ServerRules {
        ip_rules: policy::ip_rules(c, raw.server.ip_security.take()),
        logon: policy::logon(c, raw.server.logon_restrictions.take()),
        ..ServerRules::default()
    };
    let central_log = raw.server.logging.take();
    let user_bandwidth: Vec<(String, Spanned<u64>)> = raw
        .users
        .iter()
        .filter_map(|u| Some((u.name.get_ref().clone(), u.bandwidth.clone()?)))
        .collect();
    let site_limits = policy::limits(c, raw.limits.take(), &mut server_rules, &user_bandwidth);
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
    let Some(mut site) = raw.site else {
        c.error(0..0, "missing [site] table (it needs at least `root`)");
        return None;
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
    let site_name = site.name.clone().unwrap_or_else(|| "default".into());
    let mut max_line = SessionConfig::default().max_line;
    let filtering = policy::filtering(c, site.request_filtering.take(), &mut max_line);
    let ip_rules = policy::ip_rules(c, site.ip_security.take());
    let logging = policy::logging(c, &site_name, site.logging.take(), central_log, base);
    let (logging, log) = match logging {
        Some((cfg, out)) => (Some(cfg), Some(out)),
        None => (None, None),
    };
    let session = SessionConfig {
        site_name,
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
        allow_replace_on_rename: site.allow_replace_on_rename,
        allow_read_uploads_in_progress: site.allow_read_uploads_in_progress,
        max_line,
        filtering,
        ip_rules,
        limits: site_limits,
        logging,
        ..SessionConfig::default()
    };
    Some(ServerConfig {
        listen,
        shards: s.shards.unwrap_or(0),
        max_connections,
        runtime,
        shutdown_grace: Duration::from_secs(s.shutdown_grace.unwrap_or(30)),
        login_cache: Duration::from_secs(s.login_cache.unwrap_or(900)),
        root: root?,
        session,
        users,
        server_rules,
        log,
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
