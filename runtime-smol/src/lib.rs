//! wharf-runtime-smol: drives [`wharf_core`] sessions as tasks on a smol executor.
//!
//! # Shape
//!
//! - **One task per control connection** owns its [`wharf_core::Session`], its control
//!   socket, a timer armed from `poll_timeout`, its data connections and its open files,
//!   and follows the core's drain rule.
//! - **Helpers report through the session's event channel**: requests run
//!   [`wharf_core::backend::execute`] on the blocking pool (at most
//!   [`SmolConfig::blocking_limit`] at once, reverse lookups [`SmolConfig::lookup_limit`]
//!   more); passive accepts, active connects and transfers are tasks of their own. A
//!   transfer task runs the core's pump ([`wharf_core::pump`]) over the socket, waiting on
//!   what it says (readiness, its timer, a stop). Dropping a session's table entry
//!   cancels or stops its helper, so its ports close and its files are released however
//!   it ends.
//! - **Accepting**: `shards` groups of `SO_REUSEPORT` listeners, each group with its own
//!   [`wharf_core::Server`] built by `make_server(i)`. Out of descriptors, the backlog is
//!   refused with the core's busy reply and accepting pauses for 100 ms.
//!
//! # Running it
//!
//! [`start`] runs `shards` threads, each with a smol executor of its own that runs one
//! shard (its listeners, their sessions and every helper of those sessions), and returns
//! a [`RunningServer`], the same shape as the mio runtime's. A session's work thus stays
//! on one thread: one shared work-stealing executor handed every wake-up to another
//! thread about as often as not (a futex wake, an eventfd write, a context switch per
//! command). To run wharf inside a program's own executor, use [`Wharf::bind`] and
//! spawn [`Wharf::run`] on it (see `examples/embed.rs`).
//!
//! # Shutdown
//!
//! [`ShutdownHandle::shutdown`] stops accepting and feeds `Input::Shutdown` to every
//! session (the core lets a running transfer finish, then says `421`); whatever is still
//! open when the grace period ends is closed. [`Wharf::run`] returns once every session
//! and helper is gone.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::lock::Semaphore;
use smol::{Async, Executor};
use wharf_core::log::LogSink;
use wharf_core::{Authenticator, Server, Storage};

pub use wharf_net::DriverConfig;

mod accept;
mod data;
mod session;

use wharf_core::ports::PortPool;
use wharf_net::PumpLimits;

/// How long to wait before accepting again after running out of descriptors.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a closing connection may take to write its last replies.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(10);

/// Tuning of the smol runtime. `SmolConfig::default()` suits most deployments.
#[derive(Debug, Clone)]
pub struct SmolConfig {
    /// What every runtime has (shards, buffers, budgets, resolver, log).
    pub driver: wharf_net::DriverConfig,
    /// Storage and authentication requests running at once on the blocking pool.
    pub blocking_limit: usize,
    /// Reverse-DNS lookups running at once on the blocking pool, counted apart from
    /// `blocking_limit` so that slow DNS never holds up storage requests.
    pub lookup_limit: usize,
}

impl Default for SmolConfig {
    fn default() -> Self {
        SmolConfig {
            driver: Default::default(),
            blocking_limit: 8,
            lookup_limit: 4,
        }
    }
}

/// Locks a mutex, whatever a panicking holder left behind (the guarded values stay
/// consistent between statements).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shutdown signal: a channel that is closed (waking every waiter) when the
/// shutdown starts, and the deadline of its grace period.
pub(crate) struct Stop {
    deadline: Mutex<Option<Instant>>,
    tx: Sender<()>,
    rx: Receiver<()>,
}

impl Stop {
    fn new() -> Stop {
        let (tx, rx) = smol::channel::bounded(1);
        Stop {
            deadline: Mutex::new(None),
            tx,
            rx,
        }
    }

    fn trigger(&self, grace: Duration) {
        let mut d = lock(&self.deadline);
        if d.is_none() {
            let now = Instant::now();
            // A grace too long to represent is as good as a century.
            let century = Duration::from_secs(100 * 365 * 24 * 3600);
            *d = now.checked_add(grace).or_else(|| now.checked_add(century));
        }
        drop(d);
        self.tx.close();
    }

    /// Waits until the shutdown has started.
    pub(crate) async fn wait(&self) {
        // Nothing is ever sent: `recv` returns when the channel is closed.
        let _ = self.rx.recv().await;
    }

    /// A receiver of the signal for one waiter to poll as a stream (it ends when the
    /// shutdown starts).
    pub(crate) fn subscribe(&self) -> Receiver<()> {
        self.rx.clone()
    }

    /// When the grace period ends (once the shutdown has started).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }
}

/// Shuts the server down when [`Wharf::run`]'s future goes away (after a normal end the
/// shutdown has already happened, and this changes nothing).
struct StopOnDrop(Arc<Stop>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.trigger(Duration::ZERO);
    }
}

/// Starts a graceful shutdown of a server; cheap to clone and to send to other threads.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Stop>);

impl ShutdownHandle {
    /// Starts a graceful shutdown and returns at once: listeners close, sessions are told
    /// to finish (`Input::Shutdown`), and whatever remains after `grace` is closed.
    /// Calling it again shortens nothing and is harmless.
    pub fn shutdown(&self, grace: Duration) {
        self.0.trigger(grace);
    }
}

/// What every task of a server shares.
pub(crate) struct Ctx {
    pub ex: Arc<Executor<'static>>,
    pub storage: Arc<dyn Storage>,
    pub auth: Arc<dyn Authenticator>,
    pub limits: PumpLimits,
    pub control_reads_budget: usize,
    /// Passive ports, shared by every session of the server.
    pub ports: Arc<PortPool>,
    pub stop: Arc<Stop>,
    /// Storage and login requests running at once, over every shard.
    pub blocking: Arc<Semaphore>,
    pub resolver: Arc<dyn wharf_core::Resolver>,
    /// Reverse lookups running at once (apart from `blocking`), over every shard.
    pub lookups: Arc<Semaphore>,
    pub log: Option<Arc<dyn LogSink>>,
    /// Dropped with the last `Arc<Ctx>`: [`Wharf::run`] returns when every task that
    /// holds the context (sessions, requests, transfers, accept loops) is gone.
    _alive: Sender<()>,
}

/// A bound server, ready to run on an executor of the caller's choosing.
pub struct Wharf {
    shards: Vec<(Arc<Mutex<Server>>, Vec<TcpListener>)>,
    local_addrs: Vec<SocketAddr>,
    cfg: SmolConfig,
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
    stop: Arc<Stop>,
}

impl Wharf {
    /// Binds `listeners` (once per shard, `SO_REUSEPORT`) and builds each shard's
    /// [`Server`] with `make_server(i)`. Nothing is accepted until [`Wharf::run`].
    pub fn bind(
        listeners: Vec<SocketAddr>,
        cfg: SmolConfig,
        make_server: impl Fn(usize) -> Server,
        storage: Arc<dyn Storage>,
        auth: Arc<dyn Authenticator>,
    ) -> io::Result<Wharf> {
        let n = cfg.driver.shard_count();
        let bound = wharf_net::bind_listeners(&listeners, n, cfg.driver.backlog)?;
        let shards = bound
            .per_shard
            .into_iter()
            .enumerate()
            .map(|(i, ls)| (Arc::new(Mutex::new(make_server(i))), ls))
            .collect();
        Ok(Wharf {
            shards,
            local_addrs: bound.addrs,
            cfg,
            storage,
            auth,
            stop: Arc::new(Stop::new()),
        })
    }

    /// The bound control addresses, one per listen address (with real ports when port 0
    /// was asked for).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// A handle that shuts this server down.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.clone())
    }

    /// Serves on `ex` (every session and helper is a task of it) until a shutdown has
    /// run its course: returns once every session and helper task has ended.
    ///
    /// Dropping the future before it returns shuts the server down at once (no grace).
    pub async fn run(self, ex: Arc<Executor<'static>>) -> io::Result<()> {
        self.run_on(vec![ex]).await
    }

    /// Serves shard `i` (its listeners, their sessions, their helpers) on
    /// `executors[i % executors.len()]`; returns as [`Wharf::run`] does.
    pub async fn run_on(self, executors: Vec<Arc<Executor<'static>>>) -> io::Result<()> {
        if executors.is_empty() {
            return Err(io::Error::other("Wharf::run_on: no executor"));
        }
        let _stop_if_dropped = StopOnDrop(self.stop.clone());
        let (alive, gone) = smol::channel::bounded::<()>(1);
        let blocking = Arc::new(Semaphore::new(self.cfg.blocking_limit.max(1)));
        let lookups = Arc::new(Semaphore::new(self.cfg.lookup_limit.max(1)));
        let ports = self.cfg.driver.port_pool();
        for (i, (server, listeners)) in self.shards.into_iter().enumerate() {
            let ex = executors[i % executors.len()].clone();
            let ctx = Arc::new(Ctx {
                ex: ex.clone(),
                storage: self.storage.clone(),
                auth: self.auth.clone(),
                limits: self.cfg.driver.pump_limits(),
                control_reads_budget: self.cfg.driver.control_reads_budget.max(1),
                ports: ports.clone(),
                stop: self.stop.clone(),
                blocking: blocking.clone(),
                resolver: self.cfg.driver.resolver.clone(),
                lookups: lookups.clone(),
                log: self.cfg.driver.log.clone(),
                _alive: alive.clone(),
            });
            for l in listeners {
                let l = Async::new(l)?;
                ex.spawn(accept::accept_loop(ctx.clone(), i, server.clone(), l))
                    .detach();
            }
        }
        drop(alive);
        // Nothing is sent: `recv` returns when the last context (and its sender) is gone.
        let _ = gone.recv().await;
        Ok(())
    }
}

/// A server running on its own executor threads: its addresses, and the handles to stop
/// it and wait for it.
pub struct RunningServer {
    local_addrs: Vec<SocketAddr>,
    stop: ShutdownHandle,
    threads: Vec<JoinHandle<io::Result<()>>>,
    ex: Vec<std::sync::Weak<Executor<'static>>>,
}

/// Checks that a server's executors still run tasks; cheap to clone and to send to a
/// thread.
#[derive(Clone)]
pub struct Health {
    ex: Vec<std::sync::Weak<Executor<'static>>>,
}

impl Health {
    /// Whether a task spawned on each of the server's executors runs within `timeout`
    /// (false once the server has stopped).
    pub fn check(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = std::sync::mpsc::channel();
        for weak in &self.ex {
            let Some(ex) = weak.upgrade() else {
                return false;
            };
            let tx = tx.clone();
            ex.spawn(async move {
                let _ = tx.send(());
            })
            .detach();
        }
        drop(tx);
        (0..self.ex.len()).all(|_| {
            let left = deadline.saturating_duration_since(Instant::now());
            rx.recv_timeout(left).is_ok()
        })
    }
}

impl RunningServer {
    /// The bound control addresses, one per listen address.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// Starts a graceful shutdown; see [`ShutdownHandle::shutdown`].
    pub fn shutdown(&self, grace: Duration) {
        self.stop.shutdown(grace);
    }

    /// A handle that shuts the server down from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// A handle that checks whether the executor still runs tasks (for a service
    /// manager's watchdog).
    pub fn health(&self) -> Health {
        Health {
            ex: self.ex.clone(),
        }
    }

    /// Waits until the server has stopped (after [`Self::shutdown`]) and its threads
    /// have exited. Returns the first error.
    pub fn wait(mut self) -> io::Result<()> {
        let mut result = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("an executor thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Binds `listeners` and starts serving on a new executor with `shards` threads.
///
/// `make_server(i)` builds shard `i`'s [`Server`] (its session-id stride and its share of
/// the connection limit are the caller's business). `storage` and `auth` are used from
/// the blocking pool. Errors binding any listener abort the start.
pub fn start(
    listeners: Vec<SocketAddr>,
    cfg: SmolConfig,
    make_server: impl Fn(usize) -> Server,
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
) -> io::Result<RunningServer> {
    wharf_net::raise_nofile_limit();
    let n = cfg.driver.shard_count();
    let wharf = Wharf::bind(listeners, cfg, make_server, storage, auth)?;
    let local_addrs = wharf.local_addrs();
    let stop = wharf.shutdown_handle();
    // One executor per shard and thread: a session and its helpers stay on one thread.
    let executors: Vec<Arc<Executor<'static>>> =
        (0..n.max(1)).map(|_| Arc::new(Executor::new())).collect();
    let weak = executors.iter().map(Arc::downgrade).collect();
    // Closed when the server has stopped: the other threads then leave their executors.
    let (done_tx, done_rx) = smol::channel::bounded::<()>(1);
    let mut threads = Vec::with_capacity(n);
    for (i, ex) in executors.iter().enumerate().skip(1) {
        let (ex, done) = (ex.clone(), done_rx.clone());
        let t = std::thread::Builder::new()
            .name(format!("wharf-smol-{i}"))
            .spawn(move || {
                smol::block_on(ex.run(async {
                    let _ = done.recv().await;
                }));
                Ok(())
            })?;
        threads.push(t);
    }
    let main = std::thread::Builder::new()
        .name("wharf-smol-0".into())
        .spawn(move || {
            let ex = executors[0].clone();
            let run = wharf.run_on(executors);
            let result = smol::block_on(ex.run(run));
            drop(done_tx);
            result
        })?;
    threads.insert(0, main);
    Ok(RunningServer {
        local_addrs,
        stop,
        threads,
        ex: weak,
    })
}
