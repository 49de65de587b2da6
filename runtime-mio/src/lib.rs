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
//! `Action::Request` (storage metadata, opens, password hashing) and wakes the shard
//! through a `mio::Waker` with the completion. File bodies move on the shard thread:
//! `sendfile(2)` for plain binary downloads, else a read/write loop through one buffer
//! that exists only while the transfer runs.
//!
//! The runtime holds no FTP logic. It follows the core's drain rule: after every
//! `handle_*` call it writes everything `poll_transmit` has, performs every
//! `poll_action`, then re-arms the session's timer from `poll_timeout`.
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

use wharf_core::log::LogSink;
use wharf_core::{Authenticator, Server, Storage};

mod accept;
mod data;
mod shard;
mod timers;
mod worker;

use shard::{Shard, ShardMsg};
use worker::WorkerPool;

/// Tuning of the mio runtime. `MioConfig::default()` suits most deployments.
#[derive(Debug, Clone)]
pub struct MioConfig {
    /// Event-loop threads; 0 means one per available core.
    pub shards: usize,
    /// Threads running storage and authentication requests.
    pub workers: usize,
    /// Threads running reverse-DNS lookups (apart, so slow DNS never holds up storage).
    pub lookup_workers: usize,
    /// Answers `Request::ReverseLookup` (IP rules with host names); the default knows
    /// no names.
    pub resolver: Arc<dyn wharf_core::Resolver>,
    /// Readiness events taken from the kernel per `poll` call.
    pub max_events: usize,
    /// Size of the buffer a transfer allocates when it starts (and frees when it ends).
    pub transfer_buffer: usize,
    /// Bytes one transfer may move per wake-up before yielding to other connections.
    pub transfer_budget: usize,
    /// Control-channel reads per wake-up per session before yielding.
    pub control_reads_budget: usize,
    /// Use `sendfile(2)` for binary downloads from files that expose a descriptor.
    pub use_sendfile: bool,
    /// Listen backlog of every control listener.
    pub backlog: i32,
    /// Where `Action::Log` records (and refused connections' records) go; `None` drops
    /// them. The sink must not block (see [`wharf_core::log::LogSink`]).
    pub log: Option<Arc<dyn LogSink>>,
}

impl Default for MioConfig {
    fn default() -> Self {
        MioConfig {
            shards: 0,
            workers: 4,
            lookup_workers: 4,
            resolver: Arc::new(wharf_core::NoResolver),
            max_events: 1024,
            transfer_buffer: 128 * 1024,
            transfer_budget: 4 * 1024 * 1024,
            control_reads_budget: 8,
            use_sendfile: true,
            backlog: 1024,
            log: None,
        }
    }
}

impl MioConfig {
    /// The number of shards [`start`] will run: `shards`, or one per core when it is 0.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
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
    let n = cfg.shard_count();
    let bound = wharf_net::bind_listeners(&listeners, n, cfg.backlog)?;
    let local_addrs = bound.addrs.clone();

    let mut shards = Vec::with_capacity(n);
    let mut built = Vec::with_capacity(n);
    let (done_txs, done_rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::channel()).unzip();
    // Passive ports are drawn at random; the seed is the process's hasher keys
    // (std reads them from the OS).
    let seed =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8);
    let ports = Arc::new(wharf_core::ports::PortPool::with_seed(seed));
    for (i, (sockets, done_rx)) in bound.per_shard.into_iter().zip(done_rxs).enumerate() {
        // Each listener with the index of its listen address.
        let sockets = (sockets.into_iter())
            .map(mio::net::TcpListener::from_std)
            .enumerate()
            .collect();
        let (tx, rx) = mpsc::channel();
        let shard = Shard::new(i, &cfg, make_server(i), sockets, rx, done_rx, ports.clone())?;
        shards.push((tx, shard.waker()));
        built.push(shard);
    }
    let wakers = shards.iter().map(|(_, w)| w.clone()).collect();
    let workers = WorkerPool::new(
        (cfg.workers.max(1), cfg.lookup_workers.max(1)),
        (storage, auth, cfg.resolver.clone()),
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
