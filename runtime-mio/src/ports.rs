//! The passive port pool, shared by every shard of a process.
//!
//! A range is a queue of the ports no listener of ours holds. `listen` takes ports from
//! the front, and a listener gives its port back to the end when it is dropped, however
//! its session ends. So a PASV costs one `bind` in the common case, and an exhausted
//! range answers at once instead of probing every port on the event loop (with 7,000
//! ports in use that probe stalled a shard for ~45 ms per PASV).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use mio::net::TcpListener;

use crate::sys::data_listener;

/// Ports tried per `listen` before giving up: ports held by other processes are skipped
/// (and moved to the back), but never more than this many binds on the event loop.
const MAX_BIND_ATTEMPTS: usize = 16;

#[derive(Default)]
pub(crate) struct PortPool {
    ranges: Mutex<Vec<Range>>,
}

struct Range {
    lo: u16,
    hi: u16,
    free: VecDeque<u16>,
}

/// A port taken from the pool; dropping it gives the port back.
pub(crate) struct PortLease {
    pool: Arc<PortPool>,
    lo: u16,
    hi: u16,
    port: u16,
}

impl Drop for PortLease {
    fn drop(&mut self) {
        let mut ranges = self.pool.lock();
        if let Some(r) = ranges
            .iter_mut()
            .find(|r| (r.lo, r.hi) == (self.lo, self.hi))
        {
            r.free.push_back(self.port);
        }
    }
}

impl PortPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Range>> {
        // A panic elsewhere cannot leave the queue inconsistent: every change is one
        // push or pop.
        self.ranges.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, lo: u16, hi: u16) -> Option<u16> {
        let mut ranges = self.lock();
        let i = match ranges.iter().position(|r| (r.lo, r.hi) == (lo, hi)) {
            Some(i) => i,
            None => {
                ranges.push(Range {
                    lo,
                    hi,
                    free: (lo..=hi).collect(),
                });
                ranges.len() - 1
            }
        };
        ranges[i].free.pop_front()
    }

    fn put_back(&self, lo: u16, hi: u16, port: u16) {
        let mut ranges = self.lock();
        if let Some(r) = ranges.iter_mut().find(|r| (r.lo, r.hi) == (lo, hi)) {
            r.free.push_back(port);
        }
    }

    /// Listens on `ip` on a free port of `ports`; `Ok(None)` when the range is exhausted.
    /// `0..=0` asks the kernel for any port (no lease).
    pub(crate) fn listen(
        self: &Arc<Self>,
        ip: IpAddr,
        ports: &RangeInclusive<u16>,
    ) -> io::Result<Option<(TcpListener, Option<PortLease>)>> {
        let (lo, hi) = (*ports.start(), *ports.end());
        if hi < lo {
            return Ok(None);
        }
        if (lo, hi) == (0, 0) {
            return data_listener(SocketAddr::new(ip, 0)).map(|l| Some((l, None)));
        }
        for _ in 0..MAX_BIND_ATTEMPTS {
            let Some(port) = self.take(lo, hi) else {
                return Ok(None);
            };
            match data_listener(SocketAddr::new(ip, port)) {
                Ok(l) => {
                    let lease = PortLease {
                        pool: self.clone(),
                        lo,
                        hi,
                        port,
                    };
                    return Ok(Some((l, Some(lease))));
                }
                Err(e) => {
                    self.put_back(lo, hi, port);
                    if e.kind() != io::ErrorKind::AddrInUse {
                        return Err(e);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Ports of `lo..=hi` not held by a listener of ours (for tests).
    #[cfg(test)]
    fn free_count(&self, lo: u16, hi: u16) -> usize {
        self.lock()
            .iter()
            .find(|r| (r.lo, r.hi) == (lo, hi))
            .map_or(usize::from(hi - lo) + 1, |r| r.free.len())
    }
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
            .map(|_| pool.listen(ip, &(lo..=hi)).unwrap().expect("a free port"))
            .collect();
        let mut ports: Vec<u16> = held
            .iter()
            .map(|(l, _)| l.local_addr().unwrap().port())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, (lo..=hi).collect::<Vec<_>>());
        assert_eq!(pool.free_count(lo, hi), 0);
        assert!(
            pool.listen(ip, &(lo..=hi)).unwrap().is_none(),
            "range exhausted"
        );
        drop(held);
        assert_eq!(pool.free_count(lo, hi), 3, "every port came back");
        assert!(pool.listen(ip, &(lo..=hi)).unwrap().is_some());
    }

    #[test]
    fn a_port_held_by_someone_else_is_skipped_not_lost() {
        let (lo, hi) = free_ports(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger = std::net::TcpListener::bind((ip, lo)).unwrap();
        let pool = Arc::new(PortPool::default());
        let (l, lease) = pool
            .listen(ip, &(lo..=hi))
            .unwrap()
            .expect("the other port");
        assert_eq!(l.local_addr().unwrap().port(), hi);
        // The stranger's port went back to the queue for later.
        assert_eq!(pool.free_count(lo, hi), 1);
        assert!(pool.listen(ip, &(lo..=hi)).unwrap().is_none());
        drop(stranger);
        let again = pool.listen(ip, &(lo..=hi)).unwrap().expect("free now");
        assert_eq!(again.0.local_addr().unwrap().port(), lo);
        drop((l, lease));
    }
}
