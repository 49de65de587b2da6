//! IP rules with host names (reverse DNS, off by default): the session's first request
//! is `ReverseLookup`, it says nothing and runs no command until the name is known, and
//! the rules then judge the address with its name. A fake resolver answers here.

mod harness;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use harness::{config, origin, Harness};
use wharf_core::log::{LogConfig, LogFields};
use wharf_core::policy::limits::{ServerPolicy, ServerRules};
use wharf_core::policy::{DenyAction, DomainRule, HostPattern, IpNet, IpRule, IpRules};
use wharf_core::{
    Action, Binding, Completion, Input, Request, Resolver, Server, SessionConfig, Sites,
};

/// Names by address; anything else has none.
#[derive(Debug, Default)]
struct Fake(BTreeMap<IpAddr, String>);

impl Fake {
    fn with(pairs: &[(&str, &str)]) -> Arc<Fake> {
        Arc::new(Fake(
            pairs
                .iter()
                .map(|(ip, name)| (ip.parse().unwrap(), name.to_string()))
                .collect(),
        ))
    }
}

impl Resolver for Fake {
    fn reverse_lookup(&self, ip: IpAddr) -> Option<String> {
        self.0.get(&ip).cloned()
    }
}

fn host(pattern: &str, allow: bool) -> DomainRule {
    DomainRule {
        host: HostPattern::parse(pattern).unwrap(),
        allow,
    }
}

/// Rules with names: `*.example.com` allowed, `*.evil.example.com` denied, unlisted
/// `allow_unlisted`; 192.0.2.99 always allowed by its own entry.
fn named_rules(allow_unlisted: bool, action: DenyAction) -> IpRules {
    IpRules {
        allow_unlisted,
        rules: vec![IpRule {
            net: IpNet::parse("192.0.2.99").unwrap(),
            allow: true,
        }],
        domains: vec![
            host("*.example.com", true),
            host("*.evil.example.com", false),
        ],
        reverse_dns: true,
        deny_action: action,
    }
}

fn site_with(rules: IpRules) -> Server {
    let cfg = SessionConfig {
        ip_rules: rules,
        logging: Some(LogConfig {
            site: "s".into(),
            fields: LogFields::ALL,
            w3c: true,
        }),
        ..config()
    };
    Server::new(Arc::new(cfg), 0, 1, 10)
}

fn lookups(h: &Harness) -> Vec<IpAddr> {
    h.requests
        .iter()
        .filter_map(|r| match r {
            Request::ReverseLookup { ip } => Some(*ip),
            _ => None,
        })
        .collect()
}

fn names() -> Arc<Fake> {
    Fake::with(&[
        ("192.0.2.7", "ftp.example.com"),
        ("192.0.2.8", "box.evil.example.com"),
        ("192.0.2.9", "elsewhere.org"),
        ("192.0.2.99", "box.evil.example.com"),
    ])
}

#[test]
fn names_allow_and_deny_after_the_lookup() {
    let t0 = origin();
    let mut server = site_with(named_rules(false, DenyAction::Refuse421));
    // Allowed by its name: the greeting comes after the lookup, and the login works.
    let mut h = Harness::accept_resolving(&mut server, "192.0.2.7:1", t0, names()).unwrap();
    assert_eq!(lookups(&h), ["192.0.2.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(h.replies(), "220 wharf FTP server ready\r\n");
    h.login();
    // Denied by the more specific name entry.
    let h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert_eq!(h.replies(), "421 Access denied for your address.\r\n");
    assert!(h.session.is_closed());
    let recs: Vec<_> = h
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(r) => Some((r.method.to_string(), r.status, r.sub.code())),
            _ => None,
        })
        .collect();
    assert_eq!(
        recs[0],
        ("ControlChannelOpened".to_string(), 421, 30),
        "{recs:?}"
    );
    // A name no entry lists, and no name at all, fall to the default (deny here).
    for peer in ["192.0.2.9:1", "192.0.2.50:1"] {
        let h = Harness::accept_resolving(&mut server, peer, t0, names()).unwrap();
        assert_eq!(
            h.replies(),
            "421 Access denied for your address.\r\n",
            "{peer}"
        );
    }
    // A single-address entry decides without a lookup, whatever the name would say.
    let mut h = Harness::accept_resolving(&mut server, "192.0.2.99:1", t0, names()).unwrap();
    assert!(lookups(&h).is_empty());
    h.login();
}

#[test]
fn a_failed_lookup_leaves_only_the_address_entries() {
    let t0 = origin();
    // Default allow with a denied domain: a client without a name gets in.
    let mut server = site_with(named_rules(true, DenyAction::Refuse530));
    let empty = Arc::new(Fake::default());
    let mut h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, empty).unwrap();
    assert_eq!(lookups(&h).len(), 1);
    h.login();
    // With its (confirmed) name, it would not.
    let h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert_eq!(h.replies(), "530 Access denied for your address.\r\n");
    // Drop: nothing said at all.
    let mut server = site_with(named_rules(true, DenyAction::Drop));
    let h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert_eq!(h.replies(), "");
    assert!(h.session.is_closed());
}

#[test]
fn nothing_is_looked_up_unless_a_rule_needs_a_name() {
    let t0 = origin();
    let off = IpRules {
        reverse_dns: false,
        ..named_rules(true, DenyAction::Refuse421)
    };
    let mut server = site_with(off);
    let mut h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert!(lookups(&h).is_empty());
    assert_eq!(h.replies(), "220 wharf FTP server ready\r\n");
    h.login();
    let mut server = site_with(IpRules::default());
    let h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert!(lookups(&h).is_empty());
}

#[test]
fn the_session_is_silent_and_reads_no_command_until_the_name_is_known() {
    let t0 = origin();
    let mut server = site_with(named_rules(false, DenyAction::Refuse421));
    let mut s = server
        .accept(
            t0,
            "192.0.2.7:1".parse().unwrap(),
            harness::LOCAL.parse().unwrap(),
        )
        .unwrap();
    assert!(s.poll_transmit().is_none(), "no greeting yet");
    let (req, ip) = match s.poll_action() {
        Some(Action::Request {
            req,
            request: Request::ReverseLookup { ip },
        }) => (req, ip),
        other => panic!("{other:?}"),
    };
    assert_eq!(ip, "192.0.2.7".parse::<IpAddr>().unwrap());
    assert!(s.poll_action().is_none());
    s.handle_input(t0, Input::ControlBytes(b"USER alice\r\nNOOP\r\n"));
    assert!(s.poll_transmit().is_none() && s.poll_action().is_none());
    // The login timeout still runs meanwhile.
    assert_eq!(s.poll_timeout(), Some(t0 + config().timeouts.login));
    let completion = Completion::Hostname(Some("FTP.Example.COM".into()));
    s.handle_input(t0, Input::Completed { req, completion });
    let out = String::from_utf8(s.poll_transmit().unwrap().to_vec()).unwrap();
    assert_eq!(
        out,
        "220 wharf FTP server ready\r\n331 Password required for alice.\r\n200 NOOP ok.\r\n"
    );
}

#[test]
fn a_lookup_that_never_ends_meets_the_login_timeout() {
    let t0 = origin();
    let mut server = site_with(named_rules(false, DenyAction::Refuse421));
    let mut s = server
        .accept(
            t0,
            "192.0.2.7:1".parse().unwrap(),
            harness::LOCAL.parse().unwrap(),
        )
        .unwrap();
    while s.poll_action().is_some() {}
    let at = s.poll_timeout().unwrap();
    s.handle_timeout(at);
    let out = String::from_utf8(s.poll_transmit().unwrap().to_vec()).unwrap();
    assert!(out.starts_with("421 Login timeout"), "{out}");
    assert!(s.is_closed());
    // A completion that arrives after the close changes nothing.
    s.handle_input(
        at + Duration::from_secs(1),
        Input::Completed {
            req: wharf_core::RequestId(0),
            completion: Completion::Hostname(None),
        },
    );
}

#[test]
fn server_rules_with_names_judge_every_site() {
    let t0 = origin();
    let policy = Arc::new(ServerPolicy::new(ServerRules {
        ip_rules: IpRules {
            allow_unlisted: true,
            domains: vec![host("*.evil.example.com", false)],
            reverse_dns: true,
            ..IpRules::default()
        },
        ..ServerRules::default()
    }));
    let mut server = Server::new(Arc::new(config()), 0, 1, 10).with_policy(policy);
    let h = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert_eq!(h.replies(), "421 Access denied for your address.\r\n");
    let mut h = Harness::accept_resolving(&mut server, "192.0.2.7:1", t0, names()).unwrap();
    h.login();
}

#[test]
fn a_site_chosen_by_host_judges_the_name_at_login() {
    // `open` answers without a host name; `closed` (closed.example) denies evil names.
    // The name is looked up at connect because `closed` is bound on the address too.
    let t0 = origin();
    let open = Arc::new(config());
    let closed = Arc::new(SessionConfig {
        site_name: "closed".into(),
        ip_rules: IpRules {
            allow_unlisted: true,
            domains: vec![host("*.evil.example.com", false)],
            reverse_dns: true,
            deny_action: DenyAction::Refuse530,
            ..IpRules::default()
        },
        ..config()
    });
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let bind = |site, host: Option<&str>| Binding {
        ip: local.ip(),
        port: local.port(),
        host: host.map(str::to_owned),
        site,
        implicit_tls: false,
    };
    let sites = Sites::new(
        vec![open, closed],
        vec![bind(0, None), bind(1, Some("closed.example"))],
    )
    .unwrap();
    let mut server = Server::with_sites(Arc::new(sites), 0, 1, 10);
    let mut evil = Harness::accept_resolving(&mut server, "192.0.2.8:1", t0, names()).unwrap();
    assert_eq!(lookups(&evil).len(), 1);
    assert!(
        evil.replies().starts_with("220 "),
        "the open site admits it"
    );
    evil.expect("USER closed.example|alice", "331 ");
    let got = evil.send("PASS secret");
    assert_eq!(got, "530 Access denied for your address.\r\n");
    assert!(evil.session.is_closed());
    let mut good = Harness::accept_resolving(&mut server, "192.0.2.7:1", t0, names()).unwrap();
    good.expect("HOST closed.example", "220 ");
    good.login();
}
