//! Table and property tests of the pure policy pieces (the ban table, the token bucket)
//! through their public API. They live outside `core/src` because they need one real
//! `Instant` as the origin of their virtual time, and the core itself never reads a clock.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use quickcheck::{quickcheck, TestResult};
use std::net::{Ipv4Addr, Ipv6Addr};
use wharf_core::policy::bans::BanTable;
use wharf_core::policy::{IpNet, LogonRestrictions, TokenBucket, Verdict};

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn on() -> LogonRestrictions {
    LogonRestrictions {
        enabled: true,
        ..LogonRestrictions::default()
    }
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

#[test]
fn four_failures_ban_for_the_duration() {
    let cfg = on();
    let t0 = origin();
    let mut t = BanTable::default();
    let ip = v4(1);
    for n in 1..=3 {
        assert_eq!(t.record_failure(&cfg, t0, ip), Verdict::Counted(n));
        assert!(!t.is_banned(&cfg, t0, ip));
    }
    assert_eq!(t.record_failure(&cfg, t0, ip), Verdict::Banned);
    assert!(t.is_banned(&cfg, t0, ip));
    assert!(t.is_banned(&cfg, t0 + Duration::from_secs(29), ip));
    assert!(
        !t.is_banned(&cfg, t0, v4(2)),
        "other addresses are not banned"
    );
    assert!(
        !t.is_banned(&cfg, t0 + Duration::from_secs(30), ip),
        "lifted"
    );
    assert!(t.is_empty());
    t.check_invariants().unwrap();
}

#[test]
fn failures_outside_the_window_do_not_add_up() {
    let cfg = on();
    let t0 = origin();
    let mut t = BanTable::default();
    let ip = v4(3);
    for i in 0..20u64 {
        // Three failures per 31 s: never four in one window.
        let at = t0 + Duration::from_secs(31 * (i / 3)) + Duration::from_millis(i % 3);
        assert!(matches!(
            t.record_failure(&cfg, at, ip),
            Verdict::Counted(_)
        ));
    }
    assert!(!t.is_banned(&cfg, t0 + Duration::from_secs(300), ip));
}

#[test]
fn logging_only_and_exempt_and_disabled_never_ban() {
    let t0 = origin();
    let ip = v4(4);
    let logging = LogonRestrictions {
        logging_only: true,
        ..on()
    };
    let mut t = BanTable::default();
    let verdicts: Vec<Verdict> = (0..8).map(|_| t.record_failure(&logging, t0, ip)).collect();
    assert_eq!(
        verdicts.iter().filter(|v| **v == Verdict::WouldBan).count(),
        2
    );
    assert!(!t.is_banned(&logging, t0, ip));

    let exempt = LogonRestrictions {
        exempt: vec![IpNet::parse("192.0.2.0/24").unwrap()],
        ..on()
    };
    for _ in 0..10 {
        assert_eq!(t.record_failure(&exempt, t0, ip), Verdict::NotCounted);
    }
    assert!(!t.is_banned(&exempt, t0, ip));
    for _ in 0..10 {
        assert_eq!(
            t.record_failure(&LogonRestrictions::default(), t0, ip),
            Verdict::NotCounted
        );
    }
}

#[test]
fn ipv6_is_counted_per_prefix_and_mapped_as_ipv4() {
    let cfg = on();
    let t0 = origin();
    let mut t = BanTable::default();
    for i in 0..4u16 {
        let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
        t.record_failure(&cfg, t0, ip);
    }
    let neighbour = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0xffff, 0, 0, 9));
    assert!(t.is_banned(&cfg, t0, neighbour));
    let other_net = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1));
    assert!(!t.is_banned(&cfg, t0, other_net));
    for _ in 0..4 {
        t.record_failure(&cfg, t0, "::ffff:198.51.100.7".parse().unwrap());
    }
    assert!(t.is_banned(&cfg, t0, "198.51.100.7".parse().unwrap()));
}

/// Failures from 100,000 distinct IPv6 addresses (each its own /64, so aggregation
/// does not help) keep the table within its capacity, and a ban made before the
/// flood survives it while counters are what get dropped.
#[test]
fn table_is_bounded_under_a_flood_of_distinct_ipv6_addresses() {
    let cfg = LogonRestrictions {
        capacity: 1_000,
        ..on()
    };
    let t0 = origin();
    let mut t = BanTable::default();
    let victim = v4(9);
    for _ in 0..4 {
        t.record_failure(&cfg, t0, victim);
    }
    assert!(t.is_banned(&cfg, t0, victim));
    let mut max_len = 0;
    for i in 0..100_000u128 {
        let ip = IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64) | 1));
        let at = t0 + Duration::from_micros(i as u64);
        t.record_failure(&cfg, at, ip);
        max_len = max_len.max(t.len());
    }
    assert!(max_len <= 1_000, "table grew to {max_len}");
    t.check_invariants().unwrap();
    assert!(t.is_banned(&cfg, t0 + Duration::from_millis(100), victim));
}

quickcheck! {
    /// Any sequence of failures and checks over any addresses keeps the table within
    /// its capacity and its indexes consistent, and a ban always lifts after `ban`.
    fn prop_bounded_and_consistent(events: Vec<(u8, u16, bool)>, capacity: u8) -> TestResult {
        let cfg = LogonRestrictions {
            capacity: usize::from(capacity % 16) + 1,
            max_failures: 2,
            ..on()
        };
        let t0 = origin();
        let mut t = BanTable::default();
        let mut now = t0;
        for (host, dt_ms, check) in events {
            now += Duration::from_millis(u64::from(dt_ms % 5_000));
            let ip = IpAddr::V6(Ipv6Addr::from(u128::from(host % 40) << 64));
            if check {
                t.is_banned(&cfg, now, ip);
            } else if t.record_failure(&cfg, now, ip) == Verdict::Banned
                && t.is_banned(&cfg, now + cfg.ban, ip)
            {
                return TestResult::error("ban did not lift");
            }
            if t.len() > cfg.capacity {
                return TestResult::error(format!("{} > {}", t.len(), cfg.capacity));
            }
            if let Err(e) = t.check_invariants() {
                return TestResult::error(e);
            }
        }
        TestResult::passed()
    }
}

// --- the token bucket ---

/// A pump that moves whole chunks whenever the bucket has anything, as a driver does,
/// keeps the long-run rate within one burst plus one chunk.
#[test]
fn long_run_rate_holds_with_chunked_consumers() {
    for (rate, chunk) in [
        (100_000u64, 128 * 1024u64),
        (1_000_000, 64 * 1024),
        (5_000, 1_000),
    ] {
        let t0 = origin();
        let mut b = TokenBucket::new(rate, t0);
        let mut now = t0;
        let mut moved = 0u64;
        let end = t0 + Duration::from_secs(20);
        while now < end {
            if b.available(now) > 0 {
                b.consume(now, chunk);
                moved += chunk;
            } else {
                now = b.ready_at(now);
            }
        }
        let expected = rate * 20;
        let slack = (rate / 4).max(4096) + chunk;
        assert!(
            moved <= expected + slack && moved + slack >= expected,
            "rate {rate}, chunk {chunk}: moved {moved}, expected about {expected}"
        );
    }
}

#[test]
fn ready_at_is_never_early() {
    let t0 = origin();
    let mut b = TokenBucket::new(1_000, t0);
    b.consume(t0, 10_000);
    let at = b.ready_at(t0);
    assert!(at > t0);
    assert_eq!(b.available(at - Duration::from_millis(1)), 0);
    assert!(b.available(at) > 0);
}

#[test]
fn a_full_bucket_does_not_grow_while_idle() {
    let t0 = origin();
    let mut b = TokenBucket::new(10_000, t0);
    assert_eq!(b.available(t0 + Duration::from_secs(3600)), 4096);
}
