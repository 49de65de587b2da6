//! `active_source_port` (`[server]` and per site): the port active-mode data connections
//! leave from, and the clashes a fixed one can have with the server's own ports.

use std::ops::{Range, RangeInclusive};

use toml::Spanned;
use wharf_core::ActiveSourcePort;

use super::{BindingConfig, Checker, ServerConfig};

impl ServerConfig {
    /// Every fixed port active-mode data connections leave from, over all sites.
    pub fn active_source_ports(&self) -> Vec<u16> {
        let mut out: Vec<u16> = self
            .sites
            .iter()
            .flat_map(|s| source_ports(s.session.active_source_port, &s.bindings))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether serving as `server.user` keeps `CAP_NET_BIND_SERVICE` on a thread of its
    /// own, for active-mode source ports below 1024.
    pub fn keeps_bind_capability(&self) -> bool {
        self.run_as.is_some() && self.active_source_ports().iter().any(|&p| p < 1024)
    }
}

/// `20` (any port number), `0` (any port: the default) or `"control-1"`.
pub(super) fn parse(v: &toml::Value) -> Result<ActiveSourcePort, String> {
    let bad = || {
        "must be a port number like 20, 0 (any port, the default) or \"control-1\" (the \
         control port minus one, as RFC 959 has it)"
            .to_string()
    };
    match v {
        toml::Value::Integer(0) => Ok(ActiveSourcePort::Any),
        toml::Value::Integer(n) => u16::try_from(*n)
            .map(ActiveSourcePort::Port)
            .map_err(|_| format!("{n} is not a port number; it {}", bad())),
        toml::Value::String(s) if s.eq_ignore_ascii_case("control-1") => {
            Ok(ActiveSourcePort::ControlMinusOne)
        }
        toml::Value::String(s) => Err(format!("{s:?}: {}", bad())),
        other => Err(format!("a {} {}", other.type_str(), bad())),
    }
}

/// The value of `raw` (else `default`), and where it was written (the site's key, else
/// the server's).
pub(super) fn of_site(
    c: &mut Checker<'_>,
    raw: Option<&Spanned<toml::Value>>,
    default: ActiveSourcePort,
    default_span: Option<Range<usize>>,
) -> (ActiveSourcePort, Option<Range<usize>>) {
    match raw {
        Some(v) => match c.check(v, parse) {
            Some(p) => (p, Some(v.span())),
            None => (default, None),
        },
        None => (default, default_span),
    }
}

/// The fixed source ports a site connects from: one, one per control port of its
/// bindings (`control-1`), or none.
pub fn source_ports(port: ActiveSourcePort, bindings: &[BindingConfig]) -> Vec<u16> {
    let mut out: Vec<u16> = match port {
        ActiveSourcePort::Any => Vec::new(),
        ActiveSourcePort::Port(p) => vec![p],
        ActiveSourcePort::ControlMinusOne => bindings
            .iter()
            .map(|b| b.addr.port().saturating_sub(1))
            .filter(|&p| p != 0)
            .collect(),
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// A fixed source port must not be a port the server listens on: a passive port (the
/// passive listener and the active connection would fight over it) or a control port.
pub(super) fn check_clashes(
    c: &mut Checker<'_>,
    span: Range<usize>,
    port: ActiveSourcePort,
    bindings: &[BindingConfig],
    passive: &RangeInclusive<u16>,
) {
    for p in source_ports(port, bindings) {
        if *passive != (0..=0) && passive.contains(&p) {
            c.error(
                span.clone(),
                format!(
                    "active mode would connect from port {p}, which is inside passive_ports \
                     ({}-{}): choose a source port outside the passive range",
                    passive.start(),
                    passive.end()
                ),
            );
        }
        if let Some(b) = bindings.iter().find(|b| b.addr.port() == p) {
            c.error(
                span.clone(),
                format!(
                    "active mode would connect from port {p}, where the site listens ({}): \
                     choose another source port",
                    b.addr
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, ServerConfig};
    use wharf_core::ActiveSourcePort;

    fn config(server: &str, sites: &str) -> Result<ServerConfig, Vec<ConfigError>> {
        let root = std::env::temp_dir();
        let text = format!(
            "[server]\npassive_ports = \"50000-50100\"\n{server}\n{}",
            sites.replace("ROOT", &format!("{:?}", root.display().to_string()))
        );
        ServerConfig::from_toml_str(&text, "w.toml").map_err(|e| e.0)
    }

    fn ports(cfg: &ServerConfig) -> Vec<ActiveSourcePort> {
        cfg.sites
            .iter()
            .map(|s| s.session.active_source_port)
            .collect()
    }

    #[test]
    fn server_default_and_site_overrides() {
        let two = "[[sites]]\nname = \"a\"\nroot = ROOT\nbindings = [\"127.0.0.1:21:\"]\n\
                   [[sites]]\nname = \"b\"\nroot = ROOT\nbindings = [\"127.0.0.2:2121:\"]\n\
                   active_source_port = \"control-1\"\n";
        let cfg = config("active_source_port = 20", two).unwrap();
        assert_eq!(
            ports(&cfg),
            [
                ActiveSourcePort::Port(20),
                ActiveSourcePort::ControlMinusOne
            ]
        );
        let cfg = config("", two).unwrap();
        assert_eq!(
            ports(&cfg),
            [ActiveSourcePort::Any, ActiveSourcePort::ControlMinusOne]
        );
        let one = "[site]\nroot = ROOT\nactive_source_port = 0\n";
        let cfg = config("active_source_port = 20", one).unwrap();
        assert_eq!(ports(&cfg), [ActiveSourcePort::Any]);
    }

    #[test]
    fn bad_values_name_the_key_and_the_choices() {
        for (value, says) in [
            ("\"21\"", "\"21\": must be a port number like 20"),
            ("70000", "70000 is not a port number"),
            ("-1", "-1 is not a port number"),
            ("true", "a boolean must be a port number"),
        ] {
            let errs = config(
                &format!("active_source_port = {value}"),
                "[site]\nroot = ROOT\n",
            )
            .unwrap_err();
            let text = errs[0].to_string();
            assert!(
                text.starts_with("w.toml:3:22: server.active_source_port: ") && text.contains(says),
                "{value}: {text}"
            );
        }
    }

    #[test]
    fn a_source_port_the_server_listens_on_is_refused() {
        let errs = config(
            "listen = [\"0.0.0.0:2121\"]",
            "[site]\nroot = ROOT\nactive_source_port = 50050\n",
        )
        .unwrap_err();
        assert!(
            errs[0].to_string().contains(
                "site.active_source_port: active mode would connect from port 50050, which is inside passive_ports (50000-50100)"
            ),
            "{errs:?}"
        );
        let errs = config(
            "listen = [\"0.0.0.0:2121\", \"0.0.0.0:2120\"]\nactive_source_port = \"control-1\"",
            "[site]\nroot = ROOT\n",
        )
        .unwrap_err();
        let text = errs[0].to_string();
        assert!(
            text.starts_with("w.toml:4:22: server.active_source_port: active mode would connect from port 2120, where the site listens (0.0.0.0:2120)"),
            "{text}"
        );
    }
}
