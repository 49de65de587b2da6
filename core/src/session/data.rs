//! PASV, EPSV, PORT, EPRT and the data-connection events.
//!
//! RFC 2577 rules are enforced here, before the driver sees an address: an active-mode
//! target must be the control peer's address (unless the site turns that off) and never
//! a privileged port; a passive connection from another address is refused.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::state::{DataChan, Pending};
use super::timer::Timer;
use super::{Action, DataError};
use crate::ids::DataConnId;
use crate::log::SubStatus;
use crate::proto::addr::{self, AddrError};
use crate::session::Session;

impl Session {
    pub(super) fn cmd_pasv(&mut self, extended: bool, arg: &str) {
        if extended && arg.eq_ignore_ascii_case("ALL") {
            self.epsv_all = true;
            return self.reply(200, "EPSV ALL ok; only EPSV from now on.");
        }
        // A data-channel command replaces the data channel whatever its fate: a refused
        // one leaves none, never the one an earlier PASV/PORT set up.
        self.drop_data_channel();
        if !extended && self.epsv_all {
            return self.reply(503, "PASV not allowed after EPSV ALL.");
        }
        if extended && !arg.is_empty() {
            let family = if self.local.is_ipv4() { "1" } else { "2" };
            if arg != family {
                return self.reply(
                    522,
                    &format!("Network protocol not supported, use ({family})."),
                );
            }
        }
        if !extended && self.local.is_ipv6() && self.config.external_ip.is_none() {
            return self.reply(425, "PASV is IPv4 only; use EPSV.");
        }
        let conn = DataConnId(self.next_id());
        self.actions.push_back(Action::ListenData {
            conn,
            ip: self.local.ip(),
            ports: self.config.passive_ports.clone(),
        });
        self.pending = Some(Pending::Listen { conn, extended });
    }

    pub(super) fn on_data_listening(&mut self, conn: DataConnId, port: u16) {
        let Some(Pending::Listen {
            conn: want,
            extended,
        }) = self.pending
        else {
            return;
        };
        if want != conn {
            return;
        }
        self.pending = None;
        self.data = DataChan::Passive {
            conn,
            accepted: false,
        };
        self.fresh_tickets();
        if extended {
            self.reply(229, &addr::format_epsv(port));
        } else {
            let ip = self.pasv_address();
            self.reply(227, &addr::format_pasv(ip, port));
        }
    }

    /// The address a 227 reply advertises: the one configured for the client's network,
    /// else the site's external address, else the address the client connected to.
    fn pasv_address(&self) -> std::net::Ipv4Addr {
        let local = match self.local.ip().to_canonical() {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => std::net::Ipv4Addr::UNSPECIFIED,
        };
        let by_network = self
            .config
            .pasv_addresses
            .iter()
            .find(|p| p.network.contains(self.peer.ip()));
        match (by_network, self.config.external_ip) {
            (Some(p), _) => p.ip.unwrap_or(local),
            (None, Some(ip)) => ip,
            (None, None) => local,
        }
    }

    pub(super) fn cmd_port(&mut self, extended: bool, arg: &str) {
        // As PASV: the old channel is gone whether or not this one is accepted.
        self.drop_data_channel();
        if self.epsv_all {
            return self.reply(503, "PORT and EPRT are not allowed after EPSV ALL.");
        }
        let parsed = if extended {
            addr::parse_eprt(arg)
        } else {
            addr::parse_port(arg)
        };
        let target = match parsed {
            // The unspecified address (lftp sends `EPRT |2|::|port|` over IPv6) can
            // only mean the client's own: it names no other host, so it is no bounce.
            Ok(target) if target.ip().is_unspecified() => {
                SocketAddr::new(self.peer.ip(), target.port())
            }
            Ok(target) => target,
            Err(AddrError::UnsupportedFamily) => {
                return self.reply(522, "Network protocol not supported, use (1,2).")
            }
            Err(AddrError::Malformed) => return self.reply(501, "Malformed address."),
        };
        if target.port() < 1024 {
            tracing::info!(session = %self.id, %target, "PORT/EPRT to a privileged port refused");
            self.set_substatus(SubStatus::PortPrivileged);
            return self.reply(504, "Connections to privileged ports are refused.");
        }
        if self.config.match_port_peer && !same_host(target.ip(), self.peer.ip()) {
            // The usual cause is innocent: a client behind NAT sends its private address,
            // and the router in front of it does not rewrite the command (it cannot
            // under TLS). Say so where the administrator looks.
            tracing::info!(
                session = %self.id,
                %target,
                client = %self.peer.ip(),
                "PORT/EPRT address is not the client's own: refused (a client behind NAT? \
                 its router must rewrite PORT, or the client use passive mode)"
            );
            self.set_substatus(SubStatus::PortNotClient);
            return self.reply(504, "The address must be the client's own address.");
        }
        // Connect in the family of the control connection's local address (the driver
        // connects from it): `::ffff:a.b.c.d` from an IPv4 connection is `a.b.c.d`, and
        // an IPv4 target of an IPv6 (dual-stack) connection is its mapped form.
        let ip = match (self.local.ip(), target.ip()) {
            (IpAddr::V4(_), ip) => ip.to_canonical(),
            (IpAddr::V6(_), IpAddr::V4(v4)) => IpAddr::V6(v4.to_ipv6_mapped()),
            (IpAddr::V6(_), ip) => ip,
        };
        let target = SocketAddr::new(ip, target.port());
        self.data = DataChan::Active { target };
        self.fresh_tickets();
        let verb = if extended { "EPRT" } else { "PORT" };
        self.reply(200, &format!("{verb} command successful."));
    }

    /// A passive connection arrived: from anyone but the client (unless the site allows
    /// it), it is refused and the listener stays armed for the client (port theft); the
    /// client's own is the data connection, and the listener closes.
    pub(super) fn on_data_accepted(&mut self, now: Instant, conn: DataConnId, peer: SocketAddr) {
        // Behind a balancer, a passive connection it forwards names its client in a
        // PROXY protocol header; one straight from a client is judged as it comes.
        let rules = self.slot.policy().rules();
        if rules.proxy.expects_header(self.local) && rules.proxy.trusts(peer.ip()) {
            self.actions.push_back(Action::ReadProxyHeader { conn });
            return;
        }
        self.judge_data_peer(now, conn, peer);
    }

    pub(super) fn on_data_proxied(
        &mut self,
        now: Instant,
        conn: DataConnId,
        client: Option<SocketAddr>,
    ) {
        match client {
            Some(client) => self.judge_data_peer(now, conn, client),
            None => {
                tracing::info!(session = %self.id, "data connection from the balancer without a valid PROXY header refused");
                self.actions.push_back(Action::RefuseData { conn });
            }
        }
    }

    /// The client of a passive connection is known: the session's own, or a stranger.
    fn judge_data_peer(&mut self, now: Instant, conn: DataConnId, peer: SocketAddr) {
        if self.config.match_pasv_peer && !same_host(peer.ip(), self.peer.ip()) {
            tracing::info!(session = %self.id, %peer, "data connection from a stranger refused");
            self.actions.push_back(Action::RefuseData { conn });
            return;
        }
        self.actions.push_back(Action::StopListening { conn });
        if let DataChan::Passive {
            conn: want,
            accepted,
        } = &mut self.data
        {
            if *want == conn {
                *accepted = true;
                return self.prepare_data_tls(now, conn);
            }
        }
        self.on_data_connected(now, conn);
    }

    /// A passive connection came before its command: under `PROT P`, its TLS handshake
    /// starts now (some clients wait for it before they send RETR/STOR).
    fn prepare_data_tls(&mut self, now: Instant, conn: DataConnId) {
        // Without TLS (or if it cannot be set up) the transfer's pump tries again, and
        // its failure is the reply.
        if let Ok(Some(tls)) = self.data_tls() {
            let pump = Box::new(crate::pump::Pump::handshake_only(tls, now));
            self.actions
                .push_back(Action::PrepareTransfer { conn, pump });
        }
    }

    /// A data connection is up: it is the one a waiting transfer needs, or it is stale
    /// (nobody waits for it any more) and is closed.
    pub(super) fn on_data_connected(&mut self, now: Instant, conn: DataConnId) {
        if let Some(Pending::Transfer(t)) = &mut self.pending {
            if t.conn == Some(conn) && !t.connected {
                t.connected = true;
                self.start_transfer(now);
                return;
            }
        }
        self.actions.push_back(Action::CloseData { conn });
    }

    pub(super) fn on_data_failed(&mut self, _now: Instant, conn: DataConnId, error: DataError) {
        match &self.pending {
            Some(Pending::Listen { conn: want, .. }) if *want == conn => {
                self.pending = None;
                self.reply(425, Self::data_error_text(&error));
            }
            Some(Pending::Transfer(t)) if t.conn == Some(conn) && t.xfer.is_none() => {
                self.fail_before_start(&error);
            }
            _ => {
                if matches!(self.data, DataChan::Passive { conn: want, .. } if want == conn) {
                    self.data = DataChan::None;
                }
            }
        }
    }

    pub(super) fn on_data_connect_timeout(&mut self, _now: Instant) {
        if let Some(Pending::Transfer(t)) = &self.pending {
            if t.xfer.is_none() {
                self.fail_before_start(&DataError::Io("timed out".into()));
            }
        }
    }

    /// A data connection is about to open under `PROT P`: one fresh TLS 1.3 ticket goes
    /// out before the reply, so a client that uses each ticket once (rustls; OpenSSL
    /// clients such as curl for TLS 1.3) holds one for it (FileZilla Server does the
    /// same). It reaches the client before the reply it reads.
    fn fresh_tickets(&mut self) {
        if !self.prot_private {
            return;
        }
        if let Some(tls) = &mut self.tls {
            tls.send_tickets(1, &mut self.out);
        }
    }

    /// Forgets the current data channel, closing its listener or connection.
    pub(super) fn drop_data_channel(&mut self) {
        if let DataChan::Passive { conn, .. } = std::mem::replace(&mut self.data, DataChan::None) {
            self.actions.push_back(Action::CloseData { conn });
        }
    }

    /// Takes the negotiated data channel for a transfer: `(conn, connected)`; for
    /// active mode this emits the `ConnectData`. `None` if nothing was negotiated.
    pub(super) fn take_data_channel(&mut self, now: Instant) -> Option<(DataConnId, bool)> {
        let taken = match std::mem::replace(&mut self.data, DataChan::None) {
            DataChan::None => return None,
            DataChan::Passive { conn, accepted } => (conn, accepted),
            DataChan::Active { target } => {
                let conn = DataConnId(self.next_id());
                let local_ip = self.local.ip();
                let local_port = self
                    .config
                    .active_source_port
                    .for_control_port(self.local.port());
                self.actions.push_back(Action::ConnectData {
                    conn,
                    local_ip,
                    local_port,
                    target,
                });
                (conn, false)
            }
        };
        if !taken.1 {
            self.timers
                .set(Timer::DataConnect, now + self.config.timeouts.data_connect);
        }
        Some(taken)
    }
}

/// Whether two addresses are the same host, treating `::ffff:a.b.c.d` as `a.b.c.d`.
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}
