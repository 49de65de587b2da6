//! wharf-runtime-mio: drives [`wharf_core`] sessions with one `mio` event loop per core.
//!
//! # Shape
//!
//! [`start`] spawns `shards` threads. Each shard owns:
//! - a `mio::Poll` and one `SO_REUSEPORT` listener per listen address (the kernel spreads
//!   new connections over the shards);
//! - its own [`wharf_core::Server`] (built by the `make_server` callback with the shard's
//!   index), a slab of control connections and a slab of data sockets;
//! - a timer heap fed by [`wharf_core::Session::poll_timeout`] (lazy cancellation: a
//!   session keeps at most one live entry, a stale entry is skipped when it pops);
//! - one scratch buffer for control reads, shared by all its sessions, so an idle session
//!   costs its `Session`, a socket and a few words of bookkeeping.
//!
//! A process-wide worker pool runs [`wharf_core::backend::execute`] for every
//! `Action::Request` and wakes the shard through a `mio::Waker`. Transfers run the
//! core's pump ([`wharf_core::pump`]) on the shard thread over the data socket, with
//! `sendfile(2)` when the pump passes a plain download through; their timers share a
//! second heap. The runtime holds no FTP logic and follows the core's drain rule.
//!
//! # Fairness and backpressure
//!
//! Readiness is edge-triggered; every socket is read or written until `WouldBlock`, but
//! at most a budget per wake-up, after which the leftover work is queued and resumed on
//! the next loop iteration, so one busy client cannot starve the others. The control
//! socket is only read while [`wharf_core::Session::wants_read`] holds; a download
//! writes what the socket takes and keeps the rest in its buffer (or its file offset);
//! an upload reads only what it can write.
//!
//! # Shutdown
//!
//! [`RunningServer::shutdown`] stops accepting, feeds `Input::Shutdown` to every session
//! (the core finishes running transfers and says `421`), waits for the sessions to end
//! until the grace period runs out, then closes everything. [`RunningServer::wait`]
//! joins the threads.

use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wharf_core::{Authenticator, Server, Storage};
pub use wharf_net::DriverConfig;

mod accept;
mod data;
mod shard;
mod worker;

use shard::{Shard, ShardMsg};
use worker::WorkerPool;

/// Tuning of the mio runtime. `MioConfig::default()` suits most deployments.
#[derive(Debug, Clone)]
pub struct MioConfig {
    /// What every runtime has (shards, buffers, budgets, resolver, log).
    pub driver: wharf_net::DriverConfig,
    /// Threads running storage and authentication requests.
    pub workers: usize,
    /// Threads running reverse-DNS lookups (apart, so slow DNS never holds up storage).
    pub lookup_workers: usize,
    /// Readiness events taken from the kernel per `poll` call.
    pub max_events: usize,
}

impl Default for MioConfig {
    fn default() -> Self {
        MioConfig {
            driver: Default::default(),
            workers: 4,
            lookup_workers: 4,
            max_events: 1024,
        }
    }
}

/// A running server: its addresses, and the handles to stop it and wait for it.
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    shards: Vec<(mpsc::Sender<ShardMsg>, Arc<shard::ShardWaker>)>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    workers: Option<WorkerPool>,
}

impl RunningServer {
    /// The bound control addresses, one per listen address (with real ports when the
    /// configuration asked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// Starts a graceful shutdown and returns at once: listeners close, sessions are told
    /// to finish (`Input::Shutdown`), and whatever remains after `grace` is closed.
    /// Calling it again shortens nothing and is harmless.
    pub fn shutdown(&self, grace: Duration) {
        for (tx, waker) in &self.shards {
            // A shard that already exited has dropped its receiver; nothing to tell it.
            let _ = tx.send(ShardMsg::Shutdown { grace });
            let _ = waker.wake();
        }
    }

    /// A handle that checks whether every shard's event loop still turns (for a service
    /// manager's watchdog).
    pub fn health(&self) -> Health {
        Health {
            shards: self.shards.clone(),
        }
    }

    /// Waits until every shard has exited (after [`Self::shutdown`], or a fatal error),
    /// then stops the worker pool. Returns the first shard error.
    pub fn wait(mut self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("a shard thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        if let Some(w) = self.workers.take() {
            w.join();
        }
        result
    }
}

/// Checks that a server's event loops are alive; cheap to clone and to send to a thread.
#[derive(Clone)]
pub struct Health {
    shards: Vec<(mpsc::Sender<ShardMsg>, Arc<shard::ShardWaker>)>,
}

impl Health {
    /// Whether every shard answers a message through its event loop within `timeout`
    /// (false once the server has stopped).
    pub fn check(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let (tx, rx) = mpsc::channel();
        for (msgs, waker) in &self.shards {
            if msgs.send(ShardMsg::Ping(tx.clone())).is_err() || waker.wake().is_err() {
                return false;
            }
        }
        (0..self.shards.len()).all(|_| {
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .is_ok()
        })
    }
}

/// Binds `listeners` in every shard and starts serving.
///
/// `make_server(i)` builds shard `i`'s [`Server`] (its session-id stride and its share of
/// the connection limit are the caller's business). `storage` and `auth` are shared by
/// the worker pool. Errors binding any listener abort the start.
pub fn start(
    listeners: Vec<SocketAddr>,
    cfg: MioConfig,
    make_server: impl Fn(usize) -> Server + Send + Sync + 'static,
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
) -> io::Result<RunningServer> {
    wharf_net::raise_nofile_limit();
    let n = cfg.driver.shard_count();
    let bound = wharf_net::bind_listeners(&listeners, n, cfg.driver.backlog)?;
    let local_addrs = bound.addrs.clone();

    let mut shards = Vec::with_capacity(n);
    let mut built = Vec::with_capacity(n);
    let (done_txs, done_rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
    let ports = cfg.driver.port_pool();
    for (i, (sockets, done_rx)) in bound.per_shard.into_iter().zip(done_rxs).enumerate() {
        // Each listener with the index of its listen address.
        let sockets = (sockets.into_iter())
            .map(mio::net::TcpListener::from_std)
            .enumerate()
            .collect();
        let (tx, rx) = mpsc::channel();
        let mut shard = Shard::new(i, &cfg, make_server(i), sockets, rx, done_rx, ports.clone())?;
        shard.msg_tx = Some(tx.clone());
        shards.push((tx, shard.waker()));
        built.push(shard);
    }
    let wakers = shards.iter().map(|(_, w)| w.clone()).collect();
    let workers = WorkerPool::new(
        (cfg.workers.max(1), cfg.lookup_workers.max(1)),
        (storage, auth, cfg.driver.resolver.clone()),
        done_txs,
        wakers,
    )?;
    let mut threads = Vec::with_capacity(n);
    for (i, mut shard) in built.into_iter().enumerate() {
        shard.set_jobs(workers.sender());
        let t = std::thread::Builder::new()
            .name(format!("wharf-shard-{i}"))
            .spawn(move || shard.run())?;
        threads.push(t);
    }
    Ok(RunningServer {
        local_addrs,
        shards,
        threads,
        workers: Some(workers),
    })
}
