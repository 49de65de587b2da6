//! PROXY protocol behind a load balancer: the header names the client, and the client is
//! judged (IP rules, bans, limits, logs, data-connection peers) as if it had connected
//! directly; anything else from the balancer's side is a clean close.

mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use harness::{config, origin, DataMode, Harness};
use wharf_core::log::{LogConfig, LogFields, LogRecord, SubStatus};
use wharf_core::policy::limits::{ServerPolicy, ServerRules};
use wharf_core::policy::{IpNet, IpRule, IpRules, LogonRestrictions};
use wharf_core::proxy::{encode_v1, encode_v2, encode_v2_local, ProxyRules};
use wharf_core::{Action, Input, Server, SessionConfig};

const BALANCER: &str = "10.0.0.5:33000";
const CLIENT: &str = "198.51.100.20:51000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn rules() -> ServerRules {
    ServerRules {
        proxy: ProxyRules {
            from: vec![IpNet::parse("10.0.0.0/24").unwrap()],
            ..ProxyRules::default()
        },
        ..ServerRules::default()
    }
}

fn logged() -> SessionConfig {
    SessionConfig {
        logging: Some(LogConfig {
            site: "s".into(),
            fields: LogFields::ALL,
            w3c: true,
        }),
        ..config()
    }
}

fn server_with(rules: ServerRules, cfg: SessionConfig) -> Server {
    let policy = Arc::new(ServerPolicy::new(rules));
    Server::new(Arc::new(cfg), 0, 1, 100).with_policy(policy)
}

fn logs(h: &Harness) -> Vec<&LogRecord> {
    h.actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(r) => Some(&**r),
            _ => None,
        })
        .collect()
}

fn header(client: &str) -> Vec<u8> {
    encode_v2(addr(client), addr(harness::LOCAL), &[])
}

#[test]
fn the_header_names_the_client_for_the_greeting_and_the_log() {
    let mut server = server_with(rules(), logged());
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    assert_eq!(h.replies(), "", "nothing is said before the header");
    // The header and the first command in one segment, as a client that talks first
    // would send them through the balancer.
    let mut bytes = header(CLIENT);
    bytes.extend_from_slice(b"USER alice\r\n");
    let got = h.send_raw(&bytes);
    assert!(got.starts_with("220 "), "{got:?}");
    assert!(
        got.ends_with("331 Password required for alice.\r\n"),
        "{got:?}"
    );
    h.expect("PASS secret", "230 ");
    let records = logs(&h);
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r.client == addr(CLIENT)),
        "{records:?}"
    );
}

#[test]
fn version_1_split_at_every_byte_works_too() {
    let mut server = server_with(rules(), config());
    let bytes = encode_v1(addr("[2001:db8::7]:4000"), addr("[2001:db8::1]:21"));
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    for b in &bytes[..bytes.len() - 1] {
        assert_eq!(h.send_raw(std::slice::from_ref(b)), "");
    }
    assert!(h.send_raw(&bytes[bytes.len() - 1..]).starts_with("220 "));
    h.login();
}

#[test]
fn a_local_header_keeps_the_balancers_address() {
    let mut server = server_with(rules(), logged());
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    assert!(h.send_raw(&encode_v2_local()).starts_with("220 "));
    h.expect("QUIT", "221 ");
    assert!(logs(&h).iter().all(|r| r.client == addr(BALANCER)));
}

#[test]
fn strangers_garbage_and_silence_are_closed_without_a_word() {
    let mut server = server_with(rules(), logged());
    // Not a balancer.
    let refused = Harness::accept(&mut server, CLIENT, origin())
        .err()
        .unwrap();
    assert_eq!(refused.reply, b"");
    assert_eq!(refused.log.unwrap().sub, SubStatus::ProxyRefused);
    // A balancer that sends FTP instead of a header.
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    assert_eq!(h.send("USER alice"), "");
    assert!(h.session.is_closed());
    assert!(logs(&h).iter().any(|r| r.sub == SubStatus::ProxyRefused));
    // A header that stops half-way: closed at the header timeout, not before.
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    let bytes = header(CLIENT);
    assert_eq!(h.send_raw(&bytes[..20]), "");
    assert_eq!(h.advance(Duration::from_secs(4)), "");
    assert!(!h.session.is_closed());
    assert_eq!(h.advance(Duration::from_secs(2)), "");
    assert!(h.session.is_closed());
    assert!(logs(&h).iter().any(|r| r.sub == SubStatus::ProxyRefused));
}

#[test]
fn the_client_not_the_balancer_meets_ip_rules_bans_and_limits() {
    let deny = IpRule {
        net: IpNet::parse("198.51.100.66/32").unwrap(),
        allow: false,
    };
    let mut r = rules();
    r.ip_rules = IpRules {
        allow_unlisted: true,
        rules: vec![deny],
        ..IpRules::default()
    };
    r.max_per_ip = 1;
    r.logon = LogonRestrictions {
        enabled: true,
        max_failures: 1,
        ..LogonRestrictions::default()
    };
    let mut server = server_with(r, logged());
    let t0 = origin();
    // Denied by address: the client hears the refusal, logged with its address.
    let mut h = Harness::accept(&mut server, BALANCER, t0).unwrap();
    let got = h.send_raw(&header("198.51.100.66:1"));
    assert_eq!(got, "421 Access denied for your address.\r\n");
    assert!(h.session.is_closed());
    let opened = logs(&h)[0];
    assert_eq!(
        (opened.client, opened.sub),
        (addr("198.51.100.66:1"), SubStatus::IpDenied)
    );
    // Per-address limit: the balancer's many connections count for their clients.
    let mut a = Harness::accept(&mut server, BALANCER, t0).unwrap();
    assert!(a.send_raw(&header(CLIENT)).starts_with("220 "));
    let mut b = Harness::accept(&mut server, BALANCER, t0).unwrap();
    assert!(b.send_raw(&header("198.51.100.21:1")).starts_with("220 "));
    let mut c = Harness::accept(&mut server, BALANCER, t0).unwrap();
    assert!(c.send_raw(&header(CLIENT)).starts_with("421 "));
    // A ban earned by one client through the balancer bans that client only.
    a.expect("USER alice", "331 ");
    a.fail_login("wrong");
    let mut d = Harness::accept(&mut server, BALANCER, t0).unwrap();
    let got = d.send_raw(&header(CLIENT));
    assert!(got.starts_with("421 Too many failed logins"), "{got:?}");
    b.expect("NOOP", "200 ");
}

#[test]
fn passive_connections_from_the_balancer_carry_their_client() {
    let mut server = server_with(rules(), config());
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    h.send_raw(&header(CLIENT));
    h.login();
    h.mode = DataMode::Manual;
    h.send("EPSV");
    let conn = match h.actions.last() {
        Some(Action::ListenData { conn, .. }) => *conn,
        other => panic!("{other:?}"),
    };
    let got = {
        h.input(Input::DataListening { conn, port: 50000 });
        h.replies()
    };
    assert!(
        got.ends_with("229 Entering Extended Passive Mode (|||50000|)\r\n"),
        "{got:?}"
    );
    // The balancer connects: its header is read before any judgement.
    h.input(Input::DataAccepted {
        conn,
        peer: addr("10.0.0.5:40000"),
    });
    assert!(matches!(h.actions.last(), Some(Action::ReadProxyHeader { conn: c }) if *c == conn));
    // A header naming someone else: a thief, refused; the listener stays.
    h.input(Input::DataProxied {
        conn,
        client: Some(addr("203.0.113.9:1")),
    });
    assert!(matches!(h.actions.last(), Some(Action::RefuseData { conn: c }) if *c == conn));
    // No valid header at all: refused too.
    h.input(Input::DataAccepted {
        conn,
        peer: addr("10.0.0.5:40001"),
    });
    h.input(Input::DataProxied { conn, client: None });
    assert!(matches!(h.actions.last(), Some(Action::RefuseData { conn: c }) if *c == conn));
    // The client's own connection through the balancer is taken.
    h.input(Input::DataAccepted {
        conn,
        peer: addr("10.0.0.5:40002"),
    });
    h.input(Input::DataProxied {
        conn,
        client: Some(addr("198.51.100.20:52000")),
    });
    assert!(matches!(h.actions.last(), Some(Action::StopListening { conn: c }) if *c == conn));
}

#[test]
fn a_client_may_still_connect_passive_data_directly() {
    // The alternative deployment: each node advertises its own address for data.
    let mut server = server_with(rules(), config());
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    h.send_raw(&header(CLIENT));
    h.login();
    h.mode = DataMode::Manual;
    h.send("EPSV");
    let conn = match h.actions.last() {
        Some(Action::ListenData { conn, .. }) => *conn,
        other => panic!("{other:?}"),
    };
    h.input(Input::DataListening { conn, port: 50000 });
    h.input(Input::DataAccepted {
        conn,
        peer: addr("198.51.100.20:52001"),
    });
    assert!(matches!(h.actions.last(), Some(Action::StopListening { conn: c }) if *c == conn));
}

#[test]
fn active_mode_targets_the_client_behind_the_balancer() {
    let mut server = server_with(rules(), config());
    let mut h = Harness::accept(&mut server, BALANCER, origin()).unwrap();
    h.send_raw(&header(CLIENT));
    h.login();
    h.expect("EPRT |1|10.0.0.5|40000|", "504 ");
    h.expect("EPRT |1|198.51.100.20|40000|", "200 ");
}

#[test]
fn addresses_without_the_protocol_serve_directly() {
    let mut r = rules();
    r.proxy.addresses = vec![addr("192.0.2.1:990")];
    let mut server = server_with(r, config());
    let mut h = Harness::accept(&mut server, CLIENT, origin()).unwrap();
    assert!(h.replies().starts_with("220 "));
    h.login();
}
