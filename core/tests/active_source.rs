//! Active mode's source port (`SessionConfig::active_source_port`): the port the core asks
//! the driver to connect from, and how a refused PORT/EPRT is logged.

mod harness;

use harness::{config, Harness};
use wharf_core::log::{LogConfig, LogFields, SubStatus};
use wharf_core::{Action, ActiveSourcePort, SessionConfig};

/// The `(local_port, target)` of every `ConnectData` the session asked for.
fn connects(h: &Harness) -> Vec<(u16, String)> {
    h.actions
        .iter()
        .filter_map(|a| match a {
            Action::ConnectData {
                local_port, target, ..
            } => Some((*local_port, target.to_string())),
            _ => None,
        })
        .collect()
}

/// PORT then EPRT, each followed by a download: the source ports asked for.
fn source_ports(active_source_port: ActiveSourcePort) -> Vec<(u16, String)> {
    let mut h = Harness::with_config(SessionConfig {
        active_source_port,
        ..config()
    });
    h.storage.add_file("/f", b"data");
    h.login();
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR f", "150 ");
    h.expect("EPRT |1|192.0.2.7|50001|", "200 ");
    h.expect("RETR f", "150 ");
    connects(&h)
}

#[test]
fn by_default_the_system_picks_the_source_port() {
    assert_eq!(
        source_ports(ActiveSourcePort::Any),
        [(0, "192.0.2.7:51210".into()), (0, "192.0.2.7:50001".into())]
    );
}

#[test]
fn a_fixed_source_port_is_asked_for_every_active_connection() {
    assert_eq!(
        source_ports(ActiveSourcePort::Port(20)),
        [
            (20, "192.0.2.7:51210".into()),
            (20, "192.0.2.7:50001".into())
        ]
    );
}

/// The harness's control connection reaches 192.0.2.1:21, so `L-1` is 20.
#[test]
fn control_minus_one_follows_the_port_the_client_reached() {
    assert_eq!(
        source_ports(ActiveSourcePort::ControlMinusOne),
        [
            (20, "192.0.2.7:51210".into()),
            (20, "192.0.2.7:50001".into())
        ]
    );
    assert_eq!(ActiveSourcePort::ControlMinusOne.for_control_port(990), 989);
    assert_eq!(
        ActiveSourcePort::ControlMinusOne.for_control_port(2121),
        2120
    );
    assert_eq!(ActiveSourcePort::ControlMinusOne.for_control_port(0), 0);
    assert_eq!(ActiveSourcePort::Port(20).for_control_port(2121), 20);
    assert_eq!(ActiveSourcePort::Any.for_control_port(21), 0);
}

/// Passive mode is not affected.
#[test]
fn passive_mode_asks_for_no_source_port() {
    let mut h = Harness::with_config(SessionConfig {
        active_source_port: ActiveSourcePort::Port(20),
        ..config()
    });
    h.storage.add_file("/f", b"data");
    h.login();
    h.expect("PASV", "227 ");
    h.expect("RETR f", "150 ");
    assert!(connects(&h).is_empty());
}

/// A client behind NAT sends its private address: refused, and the log says why.
#[test]
fn a_refused_port_is_logged_with_its_reason() {
    let mut h = Harness::with_config(SessionConfig {
        logging: Some(LogConfig {
            site: "s".into(),
            fields: LogFields::ALL,
            w3c: true,
        }),
        ..config()
    });
    h.login();
    h.expect("PORT 192,168,1,10,200,10", "504 ");
    h.expect("EPRT |1|192.168.1.10|50000|", "504 ");
    h.expect("PORT 192,0,2,7,0,80", "504 ");
    let rows: Vec<(String, u16, SubStatus)> = h
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(r) if !["USER", "PASS", "ControlChannelOpened"].contains(&&*r.method) => {
                Some((r.method.to_string(), r.status, r.sub))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("PORT".to_string(), 504, SubStatus::PortNotClient),
            ("EPRT".to_string(), 504, SubStatus::PortNotClient),
            ("PORT".to_string(), 504, SubStatus::PortPrivileged),
        ]
    );
    assert!(connects(&h).is_empty());
}
