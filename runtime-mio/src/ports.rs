//! Passive listeners, from the process-wide port pool of the core
//! ([`wharf_core::ports`]): per range, a queue of the ports no listener of ours holds.
//! A PASV costs one `bind` in the common case, a port another process holds is skipped
//! (at most 16 binds per PASV), and an exhausted range answers at once. The lease kept
//! beside the listener gives its port back when it is dropped, however the session ends.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;

use mio::net::TcpListener;
pub(crate) use wharf_core::ports::{PortLease, PortPool};

/// Listens on `ip` on a free port of `ports`; `Ok(None)` when the range is exhausted.
/// `0..=0` asks the kernel for any port (no lease).
pub(crate) fn listen(
    pool: &Arc<PortPool>,
    ip: IpAddr,
    ports: &RangeInclusive<u16>,
) -> io::Result<Option<(TcpListener, Option<PortLease>)>> {
    pool.bind(ports, |port| {
        wharf_net::data_listener(SocketAddr::new(ip, port)).map(TcpListener::from_std)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three consecutive free ports on loopback (best effort: bound and released).
    fn free_ports(n: u16) -> (u16, u16) {
        for _ in 0..200 {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let lo = l.local_addr().unwrap().port();
            if lo > u16::MAX - n {
                continue;
            }
            drop(l);
            let all_free =
                (lo..lo + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
            if all_free {
                return (lo, lo + n - 1);
            }
        }
        panic!("no run of {n} free ports");
    }

    #[test]
    fn exhausted_range_answers_none_and_dropped_listeners_return_their_ports() {
        let (lo, hi) = free_ports(3);
        let pool = Arc::new(PortPool::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..3)
            .map(|_| listen(&pool, ip, &(lo..=hi)).unwrap().expect("a free port"))
            .collect();
        let mut ports: Vec<u16> = held
            .iter()
            .map(|(l, _)| l.local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, (lo..=hi).collect::<Vec<_>>());
        assert_eq!(pool.free_count(&(lo..=hi)), 0);
        assert!(
            listen(&pool, ip, &(lo..=hi)).unwrap().is_none(),
            "range exhausted"
        );
        drop(held);
        assert_eq!(pool.free_count(&(lo..=hi)), 3, "every port came back");
        assert!(listen(&pool, ip, &(lo..=hi)).unwrap().is_some());
    }

    #[test]
    fn a_port_held_by_someone_else_is_skipped_not_lost() {
        let (lo, hi) = free_ports(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger = std::net::TcpListener::bind((ip, lo)).unwrap();
        let pool = Arc::new(PortPool::default());
        let (l, lease) = listen(&pool, ip, &(lo..=hi))
            .unwrap()
            .expect("the other port");
        assert_eq!(l.local_addr().unwrap().port(), hi);
        // The stranger's port went back to the queue for later.
        assert_eq!(pool.free_count(&(lo..=hi)), 1);
        assert!(listen(&pool, ip, &(lo..=hi)).unwrap().is_none());
        drop(stranger);
        let again = listen(&pool, ip, &(lo..=hi)).unwrap().expect("free now");
        assert_eq!(again.0.local_addr().unwrap().port(), lo);
        drop((l, lease));
    }
}
