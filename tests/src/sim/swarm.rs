//! Swarm testing: each seed switches on a random subset of fault kinds and picks a
//! session configuration, so that rare combinations get tried without every run being a
//! storm of every fault at once.

use std::ops::RangeInclusive;
use std::time::Duration;

use wharf_core::{ListingStyle, SessionConfig, Timeouts};

use super::rng::Rng;

/// Which faults this seed injects, and how hard.
#[derive(Debug, Clone)]
pub struct Swarm {
    pub sessions: usize,
    /// Control bytes reach the server in random pieces (else whole writes).
    pub segment: bool,
    /// Network latency upper bound.
    pub latency: Duration,
    /// The client sometimes stops reading replies for a while.
    pub reader_stalls: bool,
    /// Clients reset or half-close their control connection at random points.
    pub control_drops: bool,
    pub listen_fails: bool,
    /// A passive listener sometimes never sees the client's connection.
    pub accept_lost: bool,
    /// A foreign address races the client to the passive port.
    pub thieves: bool,
    pub connect_fails: bool,
    pub xfer_resets: bool,
    pub xfer_stalls: bool,
    /// Long pauses between data chunks (just under the stall timeout).
    pub xfer_slow: bool,
    pub io_errors: bool,
    pub capacity: Option<u64>,
    pub short_writes: Option<usize>,
    /// Upper bound of a storage request's run time.
    pub storage_delay: Duration,
    pub auth_errors: bool,
    /// The authenticator sometimes takes longer than the login timeout.
    pub auth_hangs: bool,
    /// The driver wakes the session before its deadline (a real timer may).
    pub spurious_wakeups: bool,
    /// The server is shut down part-way through.
    pub shutdown_at: Option<Duration>,
    /// Some clients idle past the idle timeout.
    pub idlers: bool,
    /// Clients that misbehave: hostile paths, garbage lines, pipelining.
    pub hostile: bool,
    pub ipv6: bool,
    /// Clients may use FTPS (AUTH TLS, PROT P), over TLS 1.3 or else 1.2.
    pub tls: bool,
    pub tls13: bool,
    /// Some uploads under PROT P end without close_notify (truncated).
    pub truncate: bool,
}

impl Swarm {
    pub fn new(rng: &mut Rng) -> Swarm {
        let mut on = |p| rng.chance(p);
        let mut s = Swarm {
            sessions: 0,
            segment: on(70),
            latency: Duration::ZERO,
            reader_stalls: on(30),
            control_drops: on(25),
            listen_fails: on(25),
            accept_lost: on(20),
            thieves: on(25),
            connect_fails: on(25),
            xfer_resets: on(30),
            xfer_stalls: on(20),
            xfer_slow: on(20),
            io_errors: on(20),
            capacity: None,
            short_writes: None,
            storage_delay: Duration::ZERO,
            auth_errors: on(20),
            auth_hangs: on(10),
            spurious_wakeups: on(30),
            shutdown_at: None,
            idlers: on(15),
            hostile: on(60),
            ipv6: on(20),
            tls: on(35),
            tls13: on(50),
            truncate: on(20),
        };
        s.sessions = rng.range(1, 8) as usize;
        s.latency = Duration::from_micros(rng.range(0, 200_000));
        s.storage_delay = Duration::from_micros(rng.range(0, 500_000));
        if rng.chance(25) {
            s.capacity = Some(rng.range(0, 40_000));
        }
        if rng.chance(30) {
            s.short_writes = Some(rng.range(1, 700) as usize);
        }
        if rng.chance(10) {
            s.shutdown_at = Some(Duration::from_millis(rng.range(0, 60_000)));
        }
        s
    }

    /// The site configuration of this seed.
    pub fn config(&self, rng: &mut Rng) -> SessionConfig {
        let short = rng.chance(40);
        let secs = |rng: &mut Rng, lo, hi| Duration::from_secs(rng.range(lo, hi));
        let timeouts = if short {
            Timeouts {
                login: secs(rng, 3, 20),
                idle: secs(rng, 3, 30),
                data_connect: secs(rng, 2, 15),
                transfer_stall: secs(rng, 2, 10),
                tls_handshake: secs(rng, 2, 10),
            }
        } else {
            Timeouts::default()
        };
        let base: u16 = 50_000;
        let ports: RangeInclusive<u16> = base..=base + rng.range(0, 12) as u16;
        SessionConfig {
            site_name: "sim".into(),
            allow_anonymous: rng.chance(60),
            anonymous_write: rng.chance(40),
            user_write: rng.chance(90),
            timeouts,
            passive_ports: ports,
            match_port_peer: true,
            match_pasv_peer: rng.chance(85),
            listing_style: if rng.chance(50) {
                ListingStyle::Unix
            } else {
                ListingStyle::MsDos
            },
            keep_partial_uploads: rng.chance(40),
            max_pending_output: *rng.pick(&[64 * 1024, 512, 200]),
            max_line: *rng.pick(&[4096, 4096, 600]),
            allow_replace_on_rename: rng.chance(50),
            // Off, short, or the default second (always below the shortest login timeout).
            failed_login_delay: Duration::from_millis(*rng.pick(&[0, 0, 250, 1000, 2500])),
            // Records change no reply; logging on exercises their path under every fault.
            logging: rng.chance(30).then(|| wharf_core::log::LogConfig {
                site: "sim".into(),
                fields: wharf_core::log::LogFields::ALL,
                w3c: true,
            }),
            tls: self.tls.then(super::tls::settings),
            // The pump's limits: an upload size cut, pacing, a minimum rate.
            filtering: wharf_core::policy::RequestFiltering {
                max_upload_size: rng.chance(20).then(|| rng.range(0, 5_000)),
                ..Default::default()
            },
            limits: wharf_core::policy::SiteLimits {
                bandwidth: rng.chance(15).then(|| rng.range(2_000, 50_000)),
                min_bytes_per_second: if rng.chance(10) {
                    rng.range(50, 2_000)
                } else {
                    0
                },
                ..Default::default()
            },
            ..SessionConfig::default()
        }
    }
}
