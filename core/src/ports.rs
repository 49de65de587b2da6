//! The passive port pool: which port of a `ListenData` range a runtime binds next.
//!
//! Pure bookkeeping, shared by every runtime (each keeps one pool per process, shared by
//! all its sessions and threads); the binding itself is the runtime's, passed in as a
//! closure. Per range, the pool is the set of the ports no listener of ours holds.
//! [`PortPool::bind`] takes one of them at random (RFC 2577: a port predicted from the
//! previous PASV reply is one a thief can race the client to); a [`PortLease`] gives its
//! port back when it is dropped, however its session ends. So a PASV costs one `bind`
//! in the common case, and an exhausted range answers at once instead of probing every
//! port on the event loop (with 7,000 ports in use that probe took ~45 ms per PASV).
//!
//! The pool draws from a small PRNG (SplitMix64) seeded by whoever makes it: the core
//! reads no entropy, so a runtime passes a random seed ([`PortPool::with_seed`]);
//! `Default` uses a fixed one, which spreads ports just as well but repeats per process.

use std::collections::VecDeque;
use std::io;
use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex, MutexGuard};

/// Ports tried per [`PortPool::bind`] before giving up: ports held by other processes
/// are skipped (and moved to the back), but never more than this many binds per call.
pub const MAX_BIND_ATTEMPTS: usize = 16;

/// A process's passive ports, per range. Cheap to share (`Arc`).
pub struct PortPool {
    ranges: Mutex<Pools>,
}

struct Pools {
    ranges: Vec<Range>,
    /// SplitMix64 state.
    rng: u64,
}

impl Pools {
    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Default for PortPool {
    fn default() -> Self {
        PortPool::with_seed(0x5741_5246)
    }
}

impl std::fmt::Debug for PortPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortPool").finish_non_exhaustive()
    }
}

struct Range {
    lo: u16,
    hi: u16,
    free: VecDeque<u16>,
}

/// A port taken from the pool; dropping it gives the port back. Keep it as long as the
/// listener bound to the port.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    lo: u16,
    hi: u16,
    port: u16,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.put_back(self.lo, self.hi, self.port);
    }
}

impl PortPool {
    /// A pool whose random choices start from `seed` (give it a random one).
    pub fn with_seed(seed: u64) -> Self {
        PortPool {
            ranges: Mutex::new(Pools {
                ranges: Vec::new(),
                rng: seed,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pools> {
        // A panic elsewhere cannot leave the queue inconsistent: every change is one
        // push or pop.
        self.ranges.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a free port of `lo..=hi` at random (`lo <= hi`, not `0..=0`).
    fn take(self: &Arc<Self>, lo: u16, hi: u16) -> Option<PortLease> {
        let mut pools = self.lock();
        let draw = pools.next();
        let ranges = &mut pools.ranges;
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
        let free = &mut ranges[i].free;
        if free.is_empty() {
            return None;
        }
        let at = (draw % free.len() as u64) as usize;
        let port = free.swap_remove_back(at)?;
        Some(PortLease {
            pool: self.clone(),
            lo,
            hi,
            port,
        })
    }

    fn put_back(&self, lo: u16, hi: u16, port: u16) {
        let mut pools = self.lock();
        if let Some(r) = pools.ranges.iter_mut().find(|r| (r.lo, r.hi) == (lo, hi)) {
            r.free.push_back(port);
        }
    }

    /// Binds a listener on a free port of `ports` with `bind(port)`; `Ok(None)` when the
    /// range is exhausted (or `ports` is empty). `0..=0` calls `bind(0)` once, leaving
    /// the choice to the kernel (no lease). A port whose bind fails with `AddrInUse`
    /// (another process holds it) is set aside until the call returns and another is
    /// tried; any other error is returned.
    pub fn bind<L>(
        self: &Arc<Self>,
        ports: &RangeInclusive<u16>,
        mut bind: impl FnMut(u16) -> io::Result<L>,
    ) -> io::Result<Option<(L, Option<PortLease>)>> {
        let (lo, hi) = (*ports.start(), *ports.end());
        if hi < lo {
            return Ok(None);
        }
        if (lo, hi) == (0, 0) {
            return bind(0).map(|l| Some((l, None)));
        }
        // Ports someone else holds stay leased until we return (dropping the leases
        // gives them back), so one call never tries a port twice.
        let mut busy = Vec::new();
        for _ in 0..MAX_BIND_ATTEMPTS {
            let Some(lease) = self.take(lo, hi) else {
                return Ok(None);
            };
            match bind(lease.port) {
                Ok(l) => return Ok(Some((l, Some(lease)))),
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => busy.push(lease),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Ports leased now, over every range.
    pub fn leased(&self) -> usize {
        self.lock()
            .ranges
            .iter()
            .map(|r| usize::from(r.hi - r.lo) + 1 - r.free.len())
            .sum()
    }

    /// Ports of `lo..=hi` that no lease holds.
    pub fn free_count(&self, ports: &RangeInclusive<u16>) -> usize {
        let (lo, hi) = (*ports.start(), *ports.end());
        self.lock()
            .ranges
            .iter()
            .find(|r| (r.lo, r.hi) == (lo, hi))
            .map_or(usize::from(hi.saturating_sub(lo)) + 1, |r| r.free.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn in_use() -> io::Error {
        io::ErrorKind::AddrInUse.into()
    }

    #[test]
    fn an_exhausted_range_is_none_and_leases_give_ports_back() {
        let pool = Arc::new(PortPool::default());
        let range = 5000..=5002;
        let held: Vec<_> = (0..3)
            .map(|_| pool.bind(&range, Ok).unwrap().expect("a free port"))
            .collect();
        let ports: BTreeSet<u16> = held.iter().map(|(p, _)| *p).collect();
        assert_eq!(ports, (5000..=5002).collect());
        assert_eq!(pool.free_count(&range), 0);
        assert!(pool.bind(&range, Ok).unwrap().is_none());
        drop(held);
        assert_eq!(pool.free_count(&range), 3);
        assert!(pool.bind(&range, Ok).unwrap().is_some());
    }

    #[test]
    fn a_port_someone_else_holds_is_skipped_not_lost() {
        let pool = Arc::new(PortPool::default());
        let range = 6000..=6001;
        let (port, lease) = pool
            .bind(&range, |p| if p == 6000 { Err(in_use()) } else { Ok(p) })
            .unwrap()
            .unwrap();
        assert_eq!(port, 6001);
        // 6000 was given back: free, to be tried again later.
        assert_eq!(pool.free_count(&range), 1);
        let (again, _l) = pool.bind(&range, Ok).unwrap().unwrap();
        assert_eq!(again, 6000);
        drop(lease);
        assert_eq!(pool.free_count(&range), 1);
    }

    #[test]
    fn binds_are_bounded_and_other_errors_return() {
        let pool = Arc::new(PortPool::default());
        let range = 1000..=1999;
        let mut calls = 0;
        let r = pool.bind(&range, |_| -> io::Result<()> {
            calls += 1;
            Err(in_use())
        });
        assert!(r.unwrap().is_none());
        assert_eq!(calls, MAX_BIND_ATTEMPTS);
        assert_eq!(pool.free_count(&range), 1000, "no port was lost");
        let denied = pool.bind(&range, |_| -> io::Result<()> {
            Err(io::ErrorKind::PermissionDenied.into())
        });
        assert_eq!(denied.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
        assert_eq!(pool.free_count(&range), 1000);
    }

    #[test]
    fn any_port_and_empty_ranges() {
        let pool = Arc::new(PortPool::default());
        let (p, lease) = pool.bind(&(0..=0), Ok).unwrap().unwrap();
        assert_eq!((p, lease.is_none()), (0, true));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = 2..=1;
        assert!(pool.bind(&empty, Ok).unwrap().is_none());
    }

    #[test]
    fn ports_are_drawn_at_random_over_the_whole_range() {
        let pool = Arc::new(PortPool::with_seed(42));
        let range = 40_000..=40_255;
        let mut last = 0;
        let (mut successors, mut seen) = (0, BTreeSet::new());
        for _ in 0..2000 {
            let (port, lease) = pool.bind(&range, Ok).unwrap().unwrap();
            successors += usize::from(port == last + 1);
            seen.insert(port);
            last = port;
            drop(lease);
        }
        assert!(successors < 40, "{successors} sequential ports");
        assert_eq!(seen.len(), 256);
        // Different seeds, different sequences.
        let other = Arc::new(PortPool::with_seed(43));
        let a: Vec<u16> = (0..8)
            .map(|_| pool.bind(&range, Ok).unwrap().unwrap().0)
            .collect();
        let b: Vec<u16> = (0..8)
            .map(|_| other.bind(&range, Ok).unwrap().unwrap().0)
            .collect();
        assert_ne!(a, b);
    }

    #[test]
    fn ranges_are_kept_apart() {
        let pool = Arc::new(PortPool::default());
        let a = pool.bind(&(7000..=7000), Ok).unwrap().unwrap();
        // The other range still has both ports, 7000 included.
        let b = pool.bind(&(7000..=7001), Ok).unwrap().unwrap();
        let c = pool.bind(&(7000..=7001), Ok).unwrap().unwrap();
        assert_eq!(a.0, 7000);
        assert_eq!(BTreeSet::from([b.0, c.0]), BTreeSet::from([7000, 7001]));
        assert!(pool.bind(&(7000..=7000), Ok).unwrap().is_none());
    }
}
