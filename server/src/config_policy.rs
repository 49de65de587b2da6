//! The security and operations tables of the configuration: `[site.request_filtering]`,
//! `[site.ip_security]`, `[server.ip_security]`, `[server.logon_restrictions]`,
//! `[limits]`, `[site.logging]` and `[server.logging]`. Parsed like the rest of the file:
//! every error is located (`file:line:col: key: message`) and every error is reported.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wharf_core::log::{Field, LogConfig, LogFields};
use wharf_core::policy::limits::ServerRules;
use wharf_core::policy::{
    DenyAction, DomainRule, HostPattern, IpNet, IpRule, IpRules, LogonRestrictions,
    RequestFiltering, SiteLimits,
};
use wharf_core::proto::command::Verb;
use wharf_core::proxy::{ProxyRules, DEFAULT_HEADER_TIMEOUT};

use super::Checker;
use crate::w3c::{LogOutput, Period};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFiltering {
    allow_unlisted_extensions: Option<bool>,
    #[serde(default)]
    allowed_extensions: Vec<Spanned<String>>,
    #[serde(default)]
    denied_extensions: Vec<Spanned<String>>,
    #[serde(default)]
    hidden_segments: Vec<Spanned<String>>,
    #[serde(default)]
    denied_sequences: Vec<Spanned<String>>,
    allow_unlisted_commands: Option<bool>,
    #[serde(default)]
    allowed_commands: Vec<Spanned<String>>,
    #[serde(default)]
    denied_commands: Vec<Spanned<String>>,
    max_path_length: Option<usize>,
    max_command_line: Option<Spanned<usize>>,
    max_upload_size: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIpSecurity {
    allow_unlisted: Option<bool>,
    enable_reverse_dns: Option<bool>,
    deny_action: Option<Spanned<String>>,
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    deny: Vec<Spanned<String>>,
}

/// `[server.proxy_protocol]`: the load balancers in front of this server.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    #[serde(default)]
    from: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) addresses: Vec<Spanned<String>>,
    header_timeout: Option<Spanned<u64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogon {
    enabled: Option<bool>,
    max_failures: Option<Spanned<u32>>,
    window: Option<Spanned<u64>>,
    ban: Option<Spanned<u64>>,
    logging_only: Option<bool>,
    #[serde(default)]
    exempt: Vec<Spanned<String>>,
    ipv6_prefix: Option<Spanned<u8>>,
    capacity: Option<Spanned<usize>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_connections_per_ip: Option<u32>,
    max_connections_per_user: Option<u32>,
    max_tls_handshakes_per_ip: Option<u32>,
    max_clients_message: Option<Spanned<String>>,
    min_bytes_per_second: Option<Spanned<u64>>,
    bandwidth: Option<Spanned<u64>>,
    anonymous_bandwidth: Option<Spanned<u64>>,
}

/// `[site.logging]` (per site) and `[server.logging]` (one central log).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    enabled: Option<bool>,
    directory: Option<Spanned<String>>,
    period: Option<Spanned<String>>,
    max_size: Option<Spanned<u64>>,
    fields: Option<Vec<Spanned<String>>>,
    buffer: Option<Spanned<usize>>,
}

fn nonzero<T: Copy + PartialEq + Default>(v: &T, what: &str) -> Result<T, String> {
    if *v == T::default() {
        Err(format!("must be at least 1 {what}"))
    } else {
        Ok(*v)
    }
}

/// `".exe"`, `"EXE"` → `"exe"`; `"."` → `""` (files without an extension).
fn parse_extension(s: &str) -> Result<String, String> {
    if s == "." {
        return Ok(String::new());
    }
    let ext = s.strip_prefix('.').unwrap_or(s);
    if ext.is_empty() {
        return Err("an empty extension; use \".\" for names without one".into());
    }
    if ext.contains(['.', '/', ':']) {
        return Err(format!(
            "{s:?}: an extension is what follows the last dot (\"gz\", not \"tar.gz\")"
        ));
    }
    Ok(ext.to_lowercase())
}

fn parse_verb(s: &str) -> Result<Verb, String> {
    Verb::from_word(s.trim().as_bytes()).ok_or_else(|| format!("{s:?} is not an FTP command"))
}

fn parse_segment(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('/') || s == "." || s == ".." {
        Err(format!("{s:?} is not a single path segment"))
    } else {
        Ok(s.to_string())
    }
}

fn parse_sequence(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("an empty sequence would deny every path".into())
    } else {
        Ok(s.to_string())
    }
}

fn looks_like_a_name(s: &str) -> bool {
    s.chars().any(|c| c.is_ascii_alphabetic()) && !s.contains([':', '/'])
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    IpNet::parse(s).map_err(|e| {
        if looks_like_a_name(s) {
            format!("{s:?}: host names are not supported here; use addresses")
        } else {
            e
        }
    })
}

/// An `allow`/`deny` entry: a network, or (with reverse DNS on) a host name.
enum Entry {
    Net(IpNet),
    Host(HostPattern),
}

fn parse_entry(s: &str, reverse_dns: bool) -> Result<Entry, String> {
    if !looks_like_a_name(s) {
        return IpNet::parse(s).map(Entry::Net);
    }
    if !reverse_dns {
        return Err(format!(
            "{s:?} is a host name: set enable_reverse_dns = true to use host-name entries"
        ));
    }
    HostPattern::parse(s).map(Entry::Host)
}

fn list<T>(
    c: &mut Checker<'_>,
    items: &[Spanned<String>],
    f: impl Fn(&str) -> Result<T, String>,
) -> Vec<T> {
    items
        .iter()
        .filter_map(|v| c.check(v, |s: &String| f(s)))
        .collect()
}

pub(super) fn filtering(
    c: &mut Checker<'_>,
    raw: Option<RawFiltering>,
    max_line: &mut usize,
) -> RequestFiltering {
    let Some(raw) = raw else {
        return RequestFiltering::default();
    };
    let allowed_commands = list(c, &raw.allowed_commands, parse_verb);
    let denied_commands = list(c, &raw.denied_commands, parse_verb);
    for v in &raw.allowed_commands {
        if let Ok(verb) = parse_verb(v.get_ref()) {
            if denied_commands.contains(&verb) {
                c.error(
                    v.span(),
                    format!("{} is both allowed and denied", verb.name()),
                );
            }
        }
    }
    let allowed_extensions = list(c, &raw.allowed_extensions, parse_extension);
    let denied_extensions = list(c, &raw.denied_extensions, parse_extension);
    if let Some(v) = &raw.max_command_line {
        if let Some(n) = c.check(v, |&n| {
            if n < 32 {
                Err("must be at least 32 bytes (a USER line must fit)".to_string())
            } else {
                Ok(n)
            }
        }) {
            *max_line = n;
        }
    }
    RequestFiltering {
        allow_unlisted_extensions: raw.allow_unlisted_extensions.unwrap_or(true),
        allowed_extensions,
        denied_extensions,
        hidden_segments: list(c, &raw.hidden_segments, parse_segment),
        denied_sequences: list(c, &raw.denied_sequences, parse_sequence),
        allow_unlisted_commands: raw.allow_unlisted_commands.unwrap_or(true),
        allowed_commands,
        denied_commands,
        max_path_length: raw.max_path_length.unwrap_or(4096),
        max_upload_size: raw.max_upload_size.filter(|&n| n > 0),
    }
}

pub(super) fn ip_rules(c: &mut Checker<'_>, raw: Option<RawIpSecurity>) -> IpRules {
    let Some(raw) = raw else {
        return IpRules::default();
    };
    let deny_action = match &raw.deny_action {
        Some(v) => c
            .check(v, |s| match s.as_str() {
                "421" => Ok(DenyAction::Refuse421),
                "530" => Ok(DenyAction::Refuse530),
                "drop" => Ok(DenyAction::Drop),
                other => Err(format!(
                    "{other:?} is not a deny action: \"421\", \"530\" or \"drop\""
                )),
            })
            .unwrap_or_default(),
        None => DenyAction::default(),
    };
    let reverse_dns = raw.enable_reverse_dns.unwrap_or(false);
    let mut rules: Vec<IpRule> = Vec::new();
    let mut domains: Vec<DomainRule> = Vec::new();
    for (entries, allow) in [(&raw.allow, true), (&raw.deny, false)] {
        for entry in list(c, entries, |s| parse_entry(s, reverse_dns)) {
            match entry {
                Entry::Net(net) => rules.push(IpRule { net, allow }),
                Entry::Host(host) => domains.push(DomainRule { host, allow }),
            }
        }
    }
    IpRules {
        allow_unlisted: raw.allow_unlisted.unwrap_or(true),
        rules,
        domains,
        reverse_dns,
        deny_action,
    }
}

/// `[server.proxy_protocol]`: which connections start with a PROXY protocol header.
pub(super) fn proxy(c: &mut Checker<'_>, raw: Option<Spanned<RawProxy>>) -> ProxyRules {
    let Some(raw) = raw else {
        return ProxyRules::default();
    };
    let span = raw.span();
    let raw = raw.into_inner();
    let from = list(c, &raw.from, IpNet::parse);
    if raw.from.is_empty() {
        c.error(
            span,
            "proxy_protocol needs `from`: the load balancers' addresses (like [\"10.0.0.5\"] or [\"10.0.0.0/24\"]), the only ones whose PROXY headers are believed",
        );
    }
    let addresses = list(c, &raw.addresses, parse_proxy_address);
    let header_timeout = match &raw.header_timeout {
        Some(t) => c
            .check(t, |&n| match n {
                0 => Err("must be at least 1 second".to_string()),
                n => Ok(Duration::from_secs(n)),
            })
            .unwrap_or(DEFAULT_HEADER_TIMEOUT),
        None => DEFAULT_HEADER_TIMEOUT,
    };
    ProxyRules {
        from,
        addresses,
        header_timeout,
    }
}

fn parse_proxy_address(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a control address \"ip:port\" (IPv6 as \"[::1]:21\")"))
}

/// Every `proxy_protocol.addresses` entry must be an address the server listens on.
pub(super) fn check_proxy_addresses(
    c: &mut Checker<'_>,
    addresses: &[Spanned<String>],
    listen: &[SocketAddr],
) {
    for a in addresses {
        let Ok(addr) = parse_proxy_address(a.get_ref()) else {
            continue;
        };
        if !listen.contains(&addr) {
            let known: Vec<String> = listen.iter().map(|l| l.to_string()).collect();
            c.error(
                a.span(),
                format!(
                    "{addr} is not a control address of this server (it listens on {})",
                    known.join(", ")
                ),
            );
        }
    }
}

pub(super) fn logon(c: &mut Checker<'_>, raw: Option<RawLogon>) -> LogonRestrictions {
    let d = LogonRestrictions::default();
    let Some(raw) = raw else {
        return d;
    };
    let secs = |c: &mut Checker<'_>, v: &Option<Spanned<u64>>, default: Duration| match v {
        Some(v) => c
            .check(v, |s| nonzero(s, "second"))
            .map_or(default, Duration::from_secs),
        None => default,
    };
    let window = secs(c, &raw.window, d.window);
    LogonRestrictions {
        // Writing the table means wanting it; `enabled = false` turns it off again.
        enabled: raw.enabled.unwrap_or(true),
        max_failures: raw
            .max_failures
            .as_ref()
            .and_then(|v| c.check(v, |n| nonzero(n, "failure")))
            .unwrap_or(d.max_failures),
        window,
        ban: secs(c, &raw.ban, window),
        logging_only: raw.logging_only.unwrap_or(false),
        exempt: list(c, &raw.exempt, parse_net),
        ipv6_prefix: raw
            .ipv6_prefix
            .as_ref()
            .and_then(|v| {
                c.check(v, |&p| {
                    if (1..=128).contains(&p) {
                        Ok(p)
                    } else {
                        Err("must be a prefix length from 1 to 128".to_string())
                    }
                })
            })
            .unwrap_or(d.ipv6_prefix),
        capacity: raw
            .capacity
            .as_ref()
            .and_then(|v| c.check(v, |n| nonzero(n, "entry")))
            .unwrap_or(d.capacity),
    }
}

/// `[limits]`: the server-wide connection limits into `rules`, the site's transfer
/// limits returned. `users` are (name, bandwidth, span) from `[[users]]`.
pub(super) fn limits(
    c: &mut Checker<'_>,
    raw: Option<RawLimits>,
    rules: &mut ServerRules,
    users: &[(String, Spanned<u64>)],
) -> SiteLimits {
    let raw = raw.unwrap_or_default();
    rules.max_per_ip = raw.max_connections_per_ip.unwrap_or(0);
    rules.max_per_user = raw.max_connections_per_user.unwrap_or(0);
    rules.max_handshakes_per_ip = raw
        .max_tls_handshakes_per_ip
        .unwrap_or(wharf_core::policy::limits::DEFAULT_MAX_HANDSHAKES_PER_IP);
    if let Some(m) = &raw.max_clients_message {
        if let Some(text) = c.check(m, |s| {
            if s.contains(['\r', '\n']) {
                Err("must be one line".to_string())
            } else {
                Ok(s.to_string())
            }
        }) {
            rules.max_clients_message = text;
        }
    }
    let rate = |c: &mut Checker<'_>, v: &Option<Spanned<u64>>| {
        v.as_ref()
            .and_then(|v| c.check(v, |n| nonzero(n, "byte per second")))
    };
    let min = match &raw.min_bytes_per_second {
        Some(v) => *v.get_ref(),
        None => 240,
    };
    let limits = SiteLimits {
        max_connections: 0,
        min_bytes_per_second: min,
        bandwidth: rate(c, &raw.bandwidth),
        anonymous_bandwidth: rate(c, &raw.anonymous_bandwidth),
        user_bandwidth: users
            .iter()
            .filter_map(|(name, v)| {
                Some((name.clone(), c.check(v, |n| nonzero(n, "byte per second"))?))
            })
            .collect(),
    };
    // A bandwidth limit under the minimum rate would drop every paced transfer.
    let mut too_low = |span: std::ops::Range<usize>, r: u64| {
        if min > 0 && r < min {
            c.error(
                span,
                format!("{r} bytes/s is below limits.min_bytes_per_second ({min}); every transfer would be dropped"),
            );
        }
    };
    for v in [&raw.bandwidth, &raw.anonymous_bandwidth]
        .into_iter()
        .flatten()
    {
        too_low(v.span(), *v.get_ref());
    }
    for (_, v) in users {
        too_low(v.span(), *v.get_ref());
    }
    limits
}

fn period(c: &mut Checker<'_>, raw: &RawLogging) -> Period {
    let max = raw
        .max_size
        .as_ref()
        .and_then(|v| c.check(v, |n| nonzero(n, "byte")));
    match &raw.period {
        None => Period::Daily,
        Some(v) => c
            .check(v, |s| match s.as_str() {
                "daily" => Ok(Period::Daily),
                "hourly" => Ok(Period::Hourly),
                "size" => Ok(Period::Size(max.unwrap_or(16 * 1024 * 1024))),
                other => Err(format!(
                    "{other:?} is not a period: \"daily\", \"hourly\" or \"size\""
                )),
            })
            .unwrap_or(Period::Daily),
    }
}

fn fields(c: &mut Checker<'_>, raw: &RawLogging) -> LogFields {
    let Some(list) = &raw.fields else {
        return LogFields::ALL;
    };
    let mut set = LogFields::NONE;
    for v in list {
        let known = Field::ALL.map(Field::name).join(" ");
        if let Some(f) = c.check(v, |s| {
            Field::parse(s).ok_or_else(|| format!("{s:?} is not a field; known: {known}"))
        }) {
            set = set.with(f);
        }
    }
    set
}

/// Where a log goes: its `directory`, or `logs` (central) or `logs/<site name>` (a
/// site's own), relative to the configuration file.
fn output(c: &mut Checker<'_>, raw: &RawLogging, base: &Path, site: Option<&str>) -> LogOutput {
    let directory = match (&raw.directory, site) {
        (Some(d), _) => base.join(d.get_ref()),
        (None, None) => base.join("logs"),
        (None, Some(name)) => base.join("logs").join(folder_name(name)),
    };
    let central = site.is_none();
    LogOutput {
        directory,
        period: period(c, raw),
        fields: fields(c, raw),
        buffer: raw
            .buffer
            .as_ref()
            .and_then(|v| c.check(v, |n| nonzero(n, "line")))
            .unwrap_or(8192),
        central,
    }
}

/// The site's logging and where it is written: `[server.logging]` (central) wins over
/// `[site.logging]`'s own directory; a site logs when either table is present, unless
/// `[site.logging] enabled = false`.
pub(super) fn logging(
    c: &mut Checker<'_>,
    site_name: &str,
    site: Option<RawLogging>,
    central: Option<&RawLogging>,
    base: &Path,
) -> Option<(LogConfig, LogOutput)> {
    let enabled = site
        .as_ref()
        .map_or(central.is_some(), |s| s.enabled.unwrap_or(true));
    let out = match (central, &site) {
        (Some(cr), Some(sr)) => {
            if let Some(d) = &sr.directory {
                c.error(
                    d.span(),
                    "the site logs into the central log ([server.logging]); remove its directory",
                );
            }
            output(c, cr, base, None)
        }
        (Some(cr), None) => output(c, cr, base, None),
        (None, Some(sr)) => output(c, sr, base, Some(site_name)),
        (None, None) => return None,
    };
    enabled.then(|| {
        let cfg = LogConfig {
            site: Arc::from(site_name),
            fields: out.fields,
            w3c: true,
        };
        (cfg, out)
    })
}

/// A site name as one folder name: anything but letters, digits, `-`, `_` and `.`
/// becomes `_`.
fn folder_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        "site".into()
    } else {
        s
    }
}

/// Two sites writing their own logs into one directory would interleave the same files.
pub(super) fn check_log_directories(c: &mut Checker<'_>, sites: &[super::SiteConfig]) {
    for (i, a) in sites.iter().enumerate() {
        let Some(la) = a.log.as_ref().filter(|l| !l.central) else {
            continue;
        };
        for b in &sites[i + 1..] {
            let same = |lb: &LogOutput| !lb.central && lb.directory == la.directory;
            if b.log.as_ref().is_some_and(same) {
                c.error(
                    0..0,
                    format!(
                        "sites {:?} and {:?} both log into {}; give each its own \
                         logging directory, or use one [server.logging]",
                        a.name,
                        b.name,
                        la.directory.display()
                    ),
                );
            }
        }
    }
}

/// A user's bandwidth from a users file: at least 1, and not under the minimum rate.
pub(super) fn check_rate(n: u64, limits: &SiteLimits) -> Result<u64, String> {
    let min = limits.min_bytes_per_second;
    if n == 0 {
        Err("must be at least 1 byte per second".into())
    } else if min > 0 && n < min {
        Err(format!(
            "{n} bytes/s is below limits.min_bytes_per_second ({min}); every transfer would be dropped"
        ))
    } else {
        Ok(n)
    }
}
