//! The `[auth]` table: which account providers, in which order, and the settings of
//! `[auth.pam]` and `[auth.ldap]`. Parsed like the rest of the file: every error is
//! located (`file:line:col: key: message`) and every error is reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wharf_core::VPath;

use super::{Checker, ConfigError};
use crate::auth::ldap::{self, Bind, LdapConfig};
use crate::auth::{AuthConfig, ProviderConfig};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    providers: Option<Spanned<Vec<Spanned<String>>>>,
    pam: Option<Spanned<RawPam>>,
    ldap: Option<Spanned<RawLdap>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPam {
    service: Option<Spanned<String>>,
    refuse_shells: Option<Vec<Spanned<String>>>,
    min_uid: Option<u32>,
    groups: Option<bool>,
    home_base: Option<Spanned<String>>,
    timeout: Option<Spanned<u64>>,
    max_concurrent: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLdap {
    url: Spanned<toml::Value>,
    starttls: Option<Spanned<bool>>,
    ca_file: Option<Spanned<String>>,
    allow_plaintext: Option<bool>,
    timeout: Option<Spanned<u64>>,
    pool_size: Option<Spanned<usize>>,
    retry_after: Option<u64>,
    user_dn: Option<Spanned<String>>,
    bind_dn: Option<Spanned<String>>,
    bind_password: Option<Spanned<String>>,
    bind_password_file: Option<Spanned<String>>,
    base_dn: Option<Spanned<String>>,
    user_filter: Option<Spanned<String>>,
    domain: Option<Spanned<String>>,
    #[serde(default)]
    upn_suffixes: Vec<Spanned<String>>,
    name_attribute: Option<Spanned<String>>,
    group_attribute: Option<Spanned<String>>,
    group_filter: Option<Spanned<String>>,
    group_base_dn: Option<Spanned<String>>,
    group_name_attribute: Option<Spanned<String>>,
    home_root_attribute: Option<Spanned<String>>,
    home_dir_attribute: Option<Spanned<String>>,
    home_roots: Option<Spanned<BTreeMap<String, String>>>,
}

/// The parsed `[auth]` table, and where each LDAP provider's URL is written (for
/// check-config's reachability warnings).
pub(super) struct Parsed {
    pub auth: AuthConfig,
    pub ldap_at: Vec<ConfigError>,
}

/// Seconds, at least 1.
fn secs(c: &mut Checker<'_>, v: &Option<Spanned<u64>>, default: u64) -> Duration {
    let Some(v) = v else {
        return Duration::from_secs(default);
    };
    let n = c
        .check(v, |&n| match n {
            0 => Err("must be at least 1 second".to_string()),
            n => Ok(n),
        })
        .unwrap_or(default);
    Duration::from_secs(n)
}

/// `[auth]`. `users` tells whether `[[users]]` or a users file define anyone;
/// `run_as` whether the server drops privileges (PAM then usually cannot read
/// `/etc/shadow`).
pub(super) fn auth(
    c: &mut Checker<'_>,
    raw: Option<RawAuth>,
    base: &Path,
    users: bool,
    run_as: bool,
    warnings: &mut Vec<ConfigError>,
) -> Parsed {
    let raw = raw.unwrap_or_default();
    let mut out = Parsed {
        auth: AuthConfig {
            providers: Vec::new(),
        },
        ldap_at: Vec::new(),
    };
    let names: Vec<Spanned<String>> = match &raw.providers {
        Some(list) => {
            if list.get_ref().is_empty() {
                c.error(list.span(), "providers is empty: nobody could log in; list \"users\", \"pam\" and/or \"ldap\"");
            }
            list.get_ref().clone()
        }
        None => {
            // Without a list: the users file, then whatever has a table, in that order.
            let mut implied = vec![Spanned::new(0..0, "users".to_string())];
            if let Some(p) = &raw.pam {
                implied.push(Spanned::new(p.span(), "pam".to_string()));
            }
            if let Some(l) = &raw.ldap {
                implied.push(Spanned::new(l.span(), "ldap".to_string()));
            }
            implied
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for name in &names {
        let n = name.get_ref().as_str();
        if seen.iter().any(|s| s == n) {
            c.error(name.span(), format!("{n:?} is listed twice"));
            continue;
        }
        seen.push(n.to_string());
        match n {
            "users" => out.auth.providers.push(ProviderConfig::Users),
            "pam" => {
                if let Some(p) = pam(c, raw.pam.as_ref(), name, run_as, warnings) {
                    out.auth.providers.push(p);
                }
            }
            "ldap" => match &raw.ldap {
                Some(l) => {
                    if let Some(cfg) = ldap_table(c, l.get_ref(), base) {
                        let (line, column, key) = super::locate(c.text, l.get_ref().url.span().start);
                        out.ldap_at.push(ConfigError {
                            file: c.file.to_string(),
                            line,
                            column,
                            key,
                            message: String::new(),
                        });
                        out.auth.providers.push(ProviderConfig::Ldap(Box::new(cfg)));
                    }
                }
                None => c.error(
                    name.span(),
                    "\"ldap\" needs an [auth.ldap] table with at least `url` and `user_dn` (or `bind_dn`, `base_dn`)",
                ),
            },
            other => c.error(
                name.span(),
                format!("{other:?} is not a provider: \"users\", \"pam\" or \"ldap\""),
            ),
        }
    }
    if let (Some(p), false) = (&raw.pam, seen.iter().any(|s| s == "pam")) {
        c.error(
            p.span(),
            "[auth.pam] is set but \"pam\" is not in auth.providers",
        );
    }
    if let (Some(l), false) = (&raw.ldap, seen.iter().any(|s| s == "ldap")) {
        c.error(
            l.span(),
            "[auth.ldap] is set but \"ldap\" is not in auth.providers",
        );
    }
    if users && !seen.iter().any(|s| s == "users") {
        if let Some(list) = &raw.providers {
            let (line, column, key) = super::locate(c.text, list.span().start);
            warnings.push(ConfigError {
                file: c.file.to_string(),
                line,
                column,
                key,
                message: "[[users]] are defined but \"users\" is not in auth.providers: they cannot log in".into(),
            });
        }
    }
    out
}

#[cfg(target_os = "linux")]
fn pam(
    c: &mut Checker<'_>,
    raw: Option<&Spanned<RawPam>>,
    name: &Spanned<String>,
    run_as: bool,
    warnings: &mut Vec<ConfigError>,
) -> Option<ProviderConfig> {
    use crate::auth::pam::PamConfig;
    let mut cfg = PamConfig::default();
    let empty = RawPam::default();
    let r = raw.map_or(&empty, |r| r.get_ref());
    if let Some(s) = &r.service {
        cfg.service = c.check(s, |s| {
            if s.is_empty() || s.contains(['/', '\0']) || s.chars().any(char::is_whitespace) {
                Err(format!(
                    "{s:?} is not a PAM service name (a file name in /etc/pam.d)"
                ))
            } else {
                Ok(s.clone())
            }
        })?;
    }
    if let Some(shells) = &r.refuse_shells {
        cfg.refuse_shells = shells.iter().map(|s| s.get_ref().clone()).collect();
    }
    if let Some(m) = r.min_uid {
        cfg.min_uid = m;
    }
    if let Some(g) = r.groups {
        cfg.groups = g;
    }
    if let Some(h) = &r.home_base {
        cfg.home_base = Some(c.check(h, |h| {
            if Path::new(h).is_absolute() {
                Ok(std::path::PathBuf::from(h))
            } else {
                Err(format!(
                    "{h:?}: home_base is an absolute directory like \"/home\""
                ))
            }
        })?);
    }
    cfg.timeout = secs(c, &r.timeout, 10);
    if let Some(m) = &r.max_concurrent {
        cfg.max_concurrent = c.check(m, |&m| match m {
            0 => Err("must be at least 1".to_string()),
            m => Ok(m),
        })?;
    }
    let span = raw.map_or(name.span(), |r| r.span());
    let warn = |c: &Checker<'_>, warnings: &mut Vec<ConfigError>, msg: String| {
        let (line, column, key) = super::locate(c.text, span.start);
        warnings.push(ConfigError {
            file: c.file.to_string(),
            line,
            column,
            key,
            message: msg,
        });
    };
    let service_file = Path::new("/etc/pam.d").join(&cfg.service);
    if !service_file.exists() {
        warn(
            c,
            warnings,
            format!(
                "{} does not exist: PAM will use /etc/pam.d/other for service {:?} (install deploy/pam.d/wharf there)",
                service_file.display(),
                cfg.service
            ),
        );
    }
    if run_as {
        warn(
            c,
            warnings,
            "server.user is set: once wharf runs as that account, pam_unix can check only its own password unless the account may read /etc/shadow (Debian: group shadow)".into(),
        );
    }
    Some(ProviderConfig::Pam(Box::new(cfg)))
}

#[cfg(not(target_os = "linux"))]
fn pam(
    c: &mut Checker<'_>,
    _raw: Option<&Spanned<RawPam>>,
    name: &Spanned<String>,
    _run_as: bool,
    _warnings: &mut Vec<ConfigError>,
) -> Option<ProviderConfig> {
    c.error(name.span(), "PAM is supported on Linux only");
    None
}

/// A non-empty string value.
fn text(c: &mut Checker<'_>, v: &Spanned<String>, what: &str) -> Option<String> {
    c.check(v, |s| {
        if s.trim().is_empty() || s.contains('\0') {
            Err(format!("{what} is empty"))
        } else {
            Ok(s.clone())
        }
    })
}

fn ldap_table(c: &mut Checker<'_>, r: &RawLdap, base: &Path) -> Option<LdapConfig> {
    let mut ok = true;
    // URLs: one string or a list, tried in order.
    let urls: Vec<String> = match r.url.get_ref() {
        toml::Value::String(s) => vec![s.clone()],
        toml::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let mut any_ldaps = false;
    let mut any_plain = false;
    if urls.is_empty() {
        c.error(
            r.url.span(),
            "url is \"ldap://host\", \"ldaps://host\" or a list of them",
        );
        ok = false;
    }
    for u in &urls {
        match ldap::check_url(u) {
            Ok(true) => any_ldaps = true,
            Ok(false) => any_plain = true,
            Err(e) => {
                c.error(r.url.span(), e);
                ok = false;
            }
        }
    }
    let starttls = r.starttls.as_ref().is_some_and(|s| *s.get_ref());
    if let (Some(s), true, true) = (&r.starttls, starttls, any_ldaps) {
        c.error(
            s.span(),
            "starttls is for ldap:// URLs; an ldaps:// URL is TLS from the start",
        );
        ok = false;
    }
    if any_plain && !starttls && r.allow_plaintext != Some(true) {
        c.error(
            r.url.span(),
            "an ldap:// URL without starttls sends passwords in the clear: set starttls = true, use ldaps://, or allow_plaintext = true (a directory on this machine)",
        );
        ok = false;
    }
    let ca_file = match &r.ca_file {
        Some(f) => {
            let path = base.join(f.get_ref());
            match ldap::client_tls(&path) {
                Ok(_) => Some(path),
                Err(e) => {
                    c.error(f.span(), e);
                    ok = false;
                    None
                }
            }
        }
        None => None,
    };
    let filter = |c: &mut Checker<'_>, v: &Spanned<String>| {
        c.check(v, |f| ldap::check_filter(f).map(|_| f.clone()))
    };
    // How the user is found.
    let bind = match (&r.user_dn, &r.bind_dn) {
        (Some(t), None) => {
            for k in [
                &r.base_dn,
                &r.user_filter,
                &r.bind_password,
                &r.bind_password_file,
            ]
            .into_iter()
            .flatten()
            {
                c.error(k.span(), "this is for the search mode (bind_dn); with user_dn, wharf binds as the user directly");
                ok = false;
            }
            text(c, t, "user_dn").and_then(|t| {
                if t.contains("{user}") {
                    Some(Bind::Template { user_dn: t })
                } else {
                    c.error(t_span(r), "user_dn needs {user}: \"uid={user},ou=people,dc=example,dc=com\" or \"{user}@example.com\"");
                    None
                }
            })
        }
        (None, Some(dn)) => {
            let bind_dn = text(c, dn, "bind_dn");
            let password = match (&r.bind_password, &r.bind_password_file) {
                (Some(p), None) => Some(p.get_ref().clone()),
                (None, Some(f)) => {
                    let path = base.join(f.get_ref());
                    match std::fs::read_to_string(&path) {
                        Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
                        Err(e) => {
                            c.error(f.span(), format!("{}: {e}", path.display()));
                            None
                        }
                    }
                }
                (Some(p), Some(_)) => {
                    c.error(
                        p.span(),
                        "give bind_password or bind_password_file, not both",
                    );
                    None
                }
                (None, None) => {
                    c.error(
                        dn.span(),
                        "bind_dn needs bind_password (or bind_password_file)",
                    );
                    None
                }
            };
            let base_dn = match &r.base_dn {
                Some(b) => text(c, b, "base_dn"),
                None => {
                    c.error(
                        dn.span(),
                        "the search mode needs base_dn, where users are searched",
                    );
                    None
                }
            };
            let user_filter = match &r.user_filter {
                Some(f) => filter(c, f).filter(|f| {
                    let has = f.contains("{user}") || f.contains("{login}");
                    if !has {
                        c.error(
                            r.user_filter.as_ref().map_or(0..0, |f| f.span()),
                            "user_filter needs {user} (or {login})",
                        );
                    }
                    has
                }),
                None => Some("(uid={user})".to_string()),
            };
            match (bind_dn, password, base_dn, user_filter) {
                (Some(bind_dn), Some(bind_password), Some(base_dn), Some(user_filter)) => {
                    Some(Bind::Search {
                        bind_dn,
                        bind_password,
                        base_dn,
                        user_filter,
                    })
                }
                _ => None,
            }
        }
        (Some(t), Some(_)) => {
            c.error(
                t.span(),
                "give user_dn (bind as the user) or bind_dn (search, then bind), not both",
            );
            None
        }
        (None, None) => {
            c.error(r.url.span(), "[auth.ldap] needs user_dn = \"uid={user},ou=people,...\", or bind_dn, bind_password and base_dn to search");
            None
        }
    };
    let mut cfg = LdapConfig::new(
        urls,
        bind.clone().unwrap_or(Bind::Template {
            user_dn: String::new(),
        }),
    );
    cfg.starttls = starttls;
    cfg.ca_file = ca_file;
    cfg.timeout = secs(c, &r.timeout, 5);
    if let Some(p) = &r.pool_size {
        cfg.pool_size = c.check(p, |&p| Ok::<usize, String>(p)).unwrap_or(8);
    }
    cfg.retry_after = Duration::from_secs(r.retry_after.unwrap_or(5));
    if let Some(d) = &r.domain {
        cfg.domain = c.check(d, |d| {
            if d.is_empty() || d.contains(['\\', '/', '|', ' ', '\0']) {
                Err(format!(
                    "{d:?} is not a NetBIOS domain name like \"EXAMPLE\""
                ))
            } else {
                Ok(d.clone())
            }
        });
        ok &= cfg.domain.is_some();
    }
    for s in &r.upn_suffixes {
        match c.check(s, |s| {
            if s.is_empty() || s.contains(['@', '\\', ' ']) {
                Err(format!("{s:?} is not a domain suffix like \"example.com\""))
            } else {
                Ok(s.trim_start_matches('.').to_string())
            }
        }) {
            Some(s) => cfg.upn_suffixes.push(s),
            None => ok = false,
        }
    }
    for (slot, v) in [
        (&mut cfg.name_attribute, &r.name_attribute),
        (&mut cfg.group_name_attribute, &r.group_name_attribute),
        (&mut cfg.home_root_attribute, &r.home_root_attribute),
        (&mut cfg.home_dir_attribute, &r.home_dir_attribute),
    ] {
        if let Some(v) = v {
            match c.check(v, attribute_name) {
                Some(a) => *slot = a,
                None => ok = false,
            }
        }
    }
    if let Some(g) = &r.group_attribute {
        // Empty: no groups from the entry.
        match g.get_ref().is_empty() {
            true => cfg.group_attribute = String::new(),
            false => match c.check(g, attribute_name) {
                Some(a) => cfg.group_attribute = a,
                None => ok = false,
            },
        }
    }
    if let Some(f) = &r.group_filter {
        cfg.group_filter = filter(c, f);
        ok &= cfg.group_filter.is_some();
    }
    if let Some(b) = &r.group_base_dn {
        cfg.group_base_dn = text(c, b, "group_base_dn");
    }
    if let Some(roots) = &r.home_roots {
        for (root, folder) in roots.get_ref() {
            match VPath::root().resolve(folder) {
                Ok(p) if !folder.contains("..") => cfg.home_roots.push((root.clone(), p)),
                _ => {
                    c.error(
                        roots.span(),
                        format!("home_roots: {folder:?} is not a folder of the site like \"/\" or \"/fs01\""),
                    );
                    ok = false;
                }
            }
        }
    }
    (ok && bind.is_some()).then_some(cfg)
}

fn t_span(r: &RawLdap) -> std::ops::Range<usize> {
    r.user_dn.as_ref().map_or(0..0, |t| t.span())
}

fn attribute_name(a: &String) -> Result<String, String> {
    let ok = a.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
    match ok {
        true => Ok(a.clone()),
        false => Err(format!("{a:?} is not an LDAP attribute name")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::{AuthConfig, Bind, ProviderConfig};

    const HASH: &str = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";

    fn text(root: &Path, auth: &str) -> String {
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n\n[site]\nroot = {:?}\n\
             [[sites.rules]]\n\n[[users]]\nname = \"alice\"\npassword_hash = \"{HASH}\"\n\n{auth}\n",
            root.display().to_string()
        )
        .replace("[[sites.rules]]\n", "")
    }

    fn parse(auth: &str) -> Result<ServerConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        ServerConfig::from_toml_str(&text(dir.path(), auth), "auth.toml")
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    fn error(auth: &str) -> String {
        let errors = parse(auth).expect_err("should not parse");
        assert_eq!(errors.len(), 1, "{errors:?}");
        errors[0].clone()
    }

    #[test]
    fn the_default_is_the_users_file_alone_and_crypt_hashes_are_accepted() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.auth, AuthConfig::default());
        assert!(cfg.warnings.is_empty());
    }

    #[test]
    fn providers_in_order_with_their_tables() {
        let cfg = parse(
            "[auth]\nproviders = [\"ldap\", \"users\", \"pam\"]\n\
             [auth.pam]\nservice = \"ftp\"\nrefuse_shells = []\nmin_uid = 500\nhome_base = \"/home\"\ntimeout = 3\n\
             [auth.ldap]\nurl = [\"ldaps://dc1.example.com\", \"ldaps://dc2.example.com:636\"]\n\
             bind_dn = \"cn=wharf,dc=example,dc=com\"\nbind_password = \"pw\"\n\
             base_dn = \"dc=example,dc=com\"\nuser_filter = \"(&(sAMAccountName={user})(objectClass=user))\"\n\
             domain = \"EXAMPLE\"\nupn_suffixes = [\"example.com\"]\nname_attribute = \"sAMAccountName\"\n\
             home_roots = { '\\\\fs01\\ftp' = \"/\", '\\\\fs02\\ftp' = \"/fs02\" }\n",
        )
        .unwrap();
        let kinds: Vec<&str> = cfg
            .auth
            .providers
            .iter()
            .map(|p| match p {
                ProviderConfig::Users => "users",
                ProviderConfig::Pam(_) => "pam",
                ProviderConfig::Ldap(_) => "ldap",
            })
            .collect();
        assert_eq!(kinds, ["ldap", "users", "pam"]);
        let ProviderConfig::Pam(pam) = &cfg.auth.providers[2] else {
            panic!()
        };
        assert_eq!(pam.service, "ftp");
        assert!(pam.refuse_shells.is_empty());
        assert_eq!((pam.min_uid, pam.timeout), (500, Duration::from_secs(3)));
        assert_eq!(pam.home_base.as_deref(), Some(Path::new("/home")));
        let ldap = cfg.auth.ldap().next().unwrap();
        assert_eq!(ldap.urls.len(), 2);
        assert_eq!(ldap.domain.as_deref(), Some("EXAMPLE"));
        assert_eq!(ldap.home_roots.len(), 2);
        assert!(
            matches!(&ldap.bind, Bind::Search { user_filter, .. } if user_filter.contains("sAMAccountName"))
        );
        // The PAM service file is probably not installed where the tests run, and a
        // warning (not an error) says so, located at the table.
        for w in &cfg.warnings {
            assert!(w.to_string().starts_with("auth.toml:"), "{w}");
        }
    }

    #[test]
    fn rules_may_name_directory_users_and_groups_when_a_provider_has_them() {
        let rules = "\n[[site.rules]]\naccess = \"allow\"\nusers = \"EXAMPLE\\\\carol\"\ngroups = \"FTPUsers\"\npermissions = \"read\"\n";
        let dir = tempfile::tempdir().unwrap();
        let base = text(dir.path(), "");
        let with_rules = base.replacen("\n[[users]]", &format!("{rules}\n[[users]]"), 1);
        let errors = ServerConfig::from_toml_str(&with_rules, "r.toml").unwrap_err();
        assert_eq!(errors.0.len(), 2, "{errors}");
        let ldap = "[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"{user}@example.com\"\n";
        let ok = format!("{with_rules}{ldap}");
        ServerConfig::from_toml_str(&ok, "r.toml").unwrap();
    }

    #[test]
    fn mistakes_name_file_line_and_key() {
        for (auth, want) in [
            ("[auth]\nproviders = [\"users\", \"nis\"]\n", "auth.toml:12:23: auth.providers: \"nis\" is not a provider"),
            ("[auth]\nproviders = []\n", "auth.providers: providers is empty"),
            ("[auth]\nproviders = [\"users\", \"users\"]\n", "listed twice"),
            ("[auth]\nproviders = [\"ldap\"]\n", "needs an [auth.ldap] table"),
            ("[auth.ldap]\nurl = \"ldap://dc1\"\nuser_dn = \"uid={user},dc=x\"\n", "auth.ldap.url: an ldap:// URL without starttls"),
            ("[auth.ldap]\nurl = \"http://dc1\"\nuser_dn = \"uid={user},dc=x\"\n", "auth.ldap.url: \"http://dc1\" is not an LDAP URL"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"uid=x,dc=x\"\n", "auth.ldap.user_dn: user_dn needs {user}"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=s\"\nbind_password = \"p\"\n", "needs base_dn"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=s\"\nbase_dn = \"dc=x\"\n", "bind_dn needs bind_password"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=s\"\nbind_password = \"p\"\nbase_dn = \"dc=x\"\nuser_filter = \"(uid={user}\"\n", "auth.ldap.user_filter: \"(uid={user}\" is not an LDAP filter"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nstarttls = true\nuser_dn = \"uid={user},dc=x\"\n", "auth.ldap.starttls: starttls is for ldap:// URLs"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"uid={user},dc=x\"\nca_file = \"missing-ca.pem\"\n", "auth.ldap.ca_file:"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"uid={user},dc=x\"\ndomain = \"EX AMPLE\"\n", "auth.ldap.domain: \"EX AMPLE\" is not a NetBIOS domain"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"uid={user},dc=x\"\nhome_root_attribute = \"msIIS FTPRoot\"\n", "auth.ldap.home_root_attribute"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"uid={user},dc=x\"\ntimeout = 0\n", "auth.ldap.timeout: must be at least 1 second"),
            ("[auth.ldap]\nurl = \"ldaps://dc1\"\nuser_dn = \"uid={user},dc=x\"\nbogus = 1\n", "auth.ldap.bogus: unknown key `bogus`"),
            ("[auth]\nproviders = [\"users\"]\n[auth.pam]\n", "[auth.pam] is set but \"pam\" is not in auth.providers"),
            ("[auth.pam]\nservice = \"../etc\"\n", "auth.pam.service: \"../etc\" is not a PAM service name"),
            ("[auth.pam]\nhome_base = \"home\"\n", "auth.pam.home_base: \"home\": home_base is an absolute directory"),
        ] {
            let e = error(auth);
            assert!(e.contains(want), "{auth}\n got: {e}\nwant: {want}");
            assert!(e.starts_with("auth.toml:"), "{e}");
        }
    }

    #[test]
    fn users_left_out_of_the_providers_are_a_warning() {
        let cfg = parse("[auth]\nproviders = [\"pam\"]\n").unwrap();
        let w: Vec<String> = cfg.warnings.iter().map(|w| w.to_string()).collect();
        assert!(
            w.iter().any(|w| w.contains(
                "auth.providers: [[users]] are defined but \"users\" is not in auth.providers"
            )),
            "{w:?}"
        );
    }

    #[test]
    fn an_unreachable_directory_is_a_warning_located_at_its_url() {
        let cfg = parse("[auth.ldap]\nurl = \"ldap://127.0.0.1:1\"\nallow_plaintext = true\nuser_dn = \"uid={user},dc=x\"\ntimeout = 2\n").unwrap();
        let w = cfg.check_reachability();
        assert_eq!(w.len(), 1, "{w:?}");
        let w = w[0].to_string();
        assert!(
            w.starts_with("auth.toml:12:7: auth.ldap.url: the directory cannot be reached now"),
            "{w}"
        );
        assert!(w.contains("127.0.0.1:1"), "{w}");
    }

    #[test]
    fn active_directory_isolation_is_a_mode() {
        let dir = tempfile::tempdir().unwrap();
        let t = text(dir.path(), "").replacen(
            "[site]\n",
            "[site]\nisolation = \"active_directory\"\n",
            1,
        );
        let cfg = ServerConfig::from_toml_str(&t, "i.toml").unwrap();
        assert_eq!(
            cfg.sites[0].session.isolation,
            wharf_core::Isolation::ActiveDirectory
        );
    }
}
