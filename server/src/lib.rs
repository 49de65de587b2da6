//! wharf-server: everything around the protocol core that makes `wharf` a server — the
//! TOML configuration, the local-disk storage, the user list, the embedded demo site, and
//! [`start`], which runs a configuration on the runtime it names (mio or smol).
//!
//! ```no_run
//! let text = std::fs::read_to_string("wharf.toml").unwrap();
//! let config = wharf_server::ServerConfig::from_toml_str(&text, "wharf.toml").unwrap();
//! let server = wharf_server::start(&config).unwrap();
//! println!("listening on {:?}", server.local_addrs());
//! server.shutdown(config.shutdown_grace);
//! server.wait().unwrap();
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wharf_core::live::Live;
use wharf_core::log::LogSink;
use wharf_core::monitor::Board;
use wharf_core::policy::ServerPolicy;
use wharf_core::{Authenticator, NoResolver, Resolver, Server, Sites, Storage};
use wharf_runtime_mio::DriverConfig;
use wharf_runtime_mio::MioConfig;
use wharf_runtime_smol::SmolConfig;

pub mod admin;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod firewall;
#[cfg(target_os = "linux")]
mod listdir;
pub mod localfs;
mod login_cache;
pub mod metrics;
pub mod observe;
pub mod password;
pub mod pidfile;
pub mod privileges;
pub mod resolver;
pub mod s3;
mod s3_stream;
pub mod safe_start;
pub mod storage;
pub mod systemd;
pub mod tls;
pub mod upload;
pub mod user_cmd;
pub mod users;
pub mod w3c;

pub use config::{
    AdminConfig, BindingConfig, ConfigError, ConfigErrors, RuntimeKind, ServerConfig, SiteConfig,
};
pub use localfs::LocalFs;
pub use resolver::SystemResolver;
pub use users::{hash_password, UserEntry, UserList};

/// A running server on either runtime: its addresses, and the handles to stop it, wait
/// for it and reload its configuration (each runtime keeps its own threads; this only
/// dispatches).
pub struct RunningServer {
    runtime: Running,
    reloader: Option<Reloader>,
    /// The admin listener (`[admin]`), stopped when the server has stopped.
    admin: Option<admin::AdminServer>,
    metrics: Option<Arc<metrics::Metrics>>,
}

enum Running {
    Mio(wharf_runtime_mio::RunningServer),
    Smol(wharf_runtime_smol::RunningServer),
}

impl RunningServer {
    /// The bound control addresses, one per listen address (with real ports when the
    /// configuration asked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        match &self.runtime {
            Running::Mio(s) => s.local_addrs(),
            Running::Smol(s) => s.local_addrs(),
        }
    }

    /// Starts a graceful shutdown and returns at once: no new connections, running
    /// transfers may finish within `grace`, every session is told `421`.
    pub fn shutdown(&self, grace: Duration) {
        match &self.runtime {
            Running::Mio(s) => s.shutdown(grace),
            Running::Smol(s) => s.shutdown(grace),
        }
    }

    /// Waits until the server has stopped; returns its first error.
    pub fn wait(self) -> io::Result<()> {
        let result = match self.runtime {
            Running::Mio(s) => s.wait(),
            Running::Smol(s) => s.wait(),
        };
        drop(self.admin);
        result
    }

    /// Where the admin listener (`[admin]`) listens, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr())
    }

    /// The metrics, when the admin listener runs (`main` counts reloads in them).
    pub fn metrics(&self) -> Option<Arc<metrics::Metrics>> {
        self.metrics.clone()
    }

    /// A handle that checks, from any thread, that the runtime still serves: every mio
    /// event loop answers, or the smol executor runs a task (the systemd watchdog).
    pub fn health(&self) -> Health {
        match &self.runtime {
            Running::Mio(s) => Health::Mio(s.health()),
            Running::Smol(s) => Health::Smol(s.health()),
        }
    }

    /// Which runtime this is.
    pub fn runtime(&self) -> RuntimeKind {
        match &self.runtime {
            Running::Mio(_) => RuntimeKind::Mio,
            Running::Smol(_) => RuntimeKind::Smol,
        }
    }

    /// The handle that reloads this server's configuration (see [`Reloader`]); `None`
    /// for a server started with [`start_runtime`] rather than from a configuration.
    pub fn reloader(&self) -> Option<Reloader> {
        self.reloader.clone()
    }
}

/// Checks that a running server's runtime still serves; see [`RunningServer::health`].
#[derive(Clone)]
pub enum Health {
    Mio(wharf_runtime_mio::Health),
    Smol(wharf_runtime_smol::Health),
}

impl Health {
    /// Whether the runtime answered within `timeout`.
    pub fn check(&self, timeout: Duration) -> bool {
        match self {
            Health::Mio(h) => h.check(timeout),
            Health::Smol(h) => h.check(timeout),
        }
    }
}

/// Replaces a running server's configuration without a restart (`wharf` does it on
/// SIGHUP): sites, bindings on the listening addresses, TLS settings and certificates,
/// users and groups, account providers (`[auth]`: PAM, LDAP), authorization and filtering
/// rules, IP rules, logon restrictions, limits, timeouts, messages. Connections admitted afterwards get the new
/// configuration; sessions already running keep the one they started with, to their
/// end. What the running server was built from — listen addresses, runtime, shards,
/// `max_connections`, `login_cache`, site roots and virtual directories, log outputs —
/// cannot change this way: a configuration that changes any of them is refused whole,
/// with the list, and the running configuration stays.
#[derive(Clone)]
pub struct Reloader(Arc<Reloadable>);

struct Reloadable {
    /// The configuration running now.
    config: std::sync::Mutex<ServerConfig>,
    /// The bound listen addresses (port 0 resolved), which the sites table refers to.
    listen: Vec<SocketAddr>,
    sites: Arc<Live<Sites>>,
    policy: Arc<ServerPolicy>,
    accounts: Arc<auth::Accounts>,
    /// The disk storage: a reload sets each mount's durability and sweeps it.
    storage: Arc<LocalFs>,
}

impl Reloader {
    /// The configuration running now (the last one a reload accepted).
    pub fn config(&self) -> ServerConfig {
        self.0
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Makes `new` the running configuration for every connection admitted from now on;
    /// returns a one-line summary. Refused (nothing changes) when `new` differs from the
    /// running configuration in what only a restart can change.
    pub fn reload(&self, new: ServerConfig) -> Result<String, String> {
        let r = &self.0;
        let mut current = r.config.lock().unwrap_or_else(|e| e.into_inner());
        let fixed = restart_only_changes(&current, &new);
        if !fixed.is_empty() {
            return Err(format!(
                "{} changed, which needs a restart",
                fixed.join(", ")
            ));
        }
        let sites = new.sites_table(&r.listen).map_err(|e| e.to_string())?;
        r.accounts.replace(&new.auth, &new.users)?;
        r.policy.set_rules(new.server_rules.clone());
        apply_durability(&r.storage, &new);
        r.sites.replace(Arc::new(sites));
        // Site roots are the same (a change needs a restart), but a reload is also
        // when an administrator expects debris of an earlier crash to go.
        drop(r.storage.sweep_in_background());
        let summary = format!(
            "{} site(s), {} user(s), accounts from {}",
            new.sites.len(),
            new.users.len(),
            r.accounts.kinds().join(", ")
        );
        *current = new;
        Ok(summary)
    }
}

/// The settings of `new` that differ from `old` and that only a restart can change.
fn restart_only_changes(old: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, what: &'static str| {
        if changed {
            out.push(what);
        }
    };
    check(
        old.listen != new.listen,
        "the listen addresses (server.listen, bindings)",
    );
    check(old.runtime != new.runtime, "server.runtime");
    check(old.shards != new.shards, "server.shards");
    check(
        old.max_connections != new.max_connections,
        "server.max_connections",
    );
    check(old.login_cache != new.login_cache, "server.login_cache");
    check(
        old.mounts() != new.mounts() || old.object_mounts() != new.object_mounts(),
        "site roots or virtual directories",
    );
    check(
        old.log_outputs() != new.log_outputs(),
        "log outputs (logging)",
    );
    check(old.run_as != new.run_as, "server.user or server.group");
    check(
        old.keeps_bind_capability() != new.keeps_bind_capability(),
        "active_source_port below 1024 under server.user (the bind capability is kept, or not, at start)",
    );
    check(old.pid_file != new.pid_file, "server.pid_file");
    check(old.cluster != new.cluster, "[cluster]");

    check(old.admin != new.admin, "the admin listener ([admin])");
    out
}

/// Starts serving `config`: opens every site root and virtual directory, binds every
/// listen address (port 0 is resolved; see [`RunningServer::local_addrs`]) and returns
/// once the server accepts, on the runtime the configuration names.
pub fn start(config: &ServerConfig) -> io::Result<RunningServer> {
    start_with_resolver(config, Arc::new(SystemResolver))
}

/// [`start`], with reverse lookups (IP rules with host names) answered by `resolver`
/// instead of the system's (tests use a stub).
pub fn start_with_resolver(
    config: &ServerConfig,
    resolver: Arc<dyn Resolver>,
) -> io::Result<RunningServer> {
    // Refuse an address another process listens on before anything is opened or written
    // (the shards' SO_REUSEPORT would share it silently; see `safe_start`).
    safe_start::probe(&config.listen)?;
    let storage = Arc::new(LocalFs::with_mounts(&config.mounts())?);
    apply_durability(&storage, config);
    let mut buckets = Vec::new();
    for (name, settings) in config.object_mounts() {
        let store = s3::S3Store::new(&settings)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        buckets.push((name, store));
    }
    let mounts = Arc::new(storage::Mounts::new(storage.clone(), buckets));
    // Temporary files a crashed run left (a kill -9, a power cut) go, in the background:
    // a large tree takes a while to walk, and live uploads are never touched.
    drop(storage.sweep_in_background());
    let accounts = Arc::new(
        auth::Accounts::new(&config.auth, &config.users, config.login_cache)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    );
    let outputs = config.log_outputs();
    let w3c = match outputs.is_empty() {
        true => None,
        false => Some(w3c::W3cLogger::start(outputs)?),
    };
    // With an admin listener: the live sessions board and the metrics.
    let board = config.admin.as_ref().map(|_| Board::new());
    let metrics = board
        .as_ref()
        .map(|b| Arc::new(metrics::Metrics::new(b.clone())));
    if let Some(m) = &metrics {
        accounts.set_metrics(m.clone());
    }
    let observer = Arc::new(observe::Observer::new(w3c, metrics.clone()));
    let log: Option<Arc<dyn LogSink>> = Some(observer.clone());
    let ports = wharf_net::port_pool();
    // Bindings name their listener's port, so port 0 is settled before the sites table
    // is built: a socket held on the chosen port (SO_REUSEPORT, not listening) keeps it
    // ours until the runtime has bound it.
    let (listen, _held) = hold_ports(&config.listen)?;
    let sites = config
        .sites_table(&listen)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let sites = Arc::new(Live::new(Arc::new(sites)));
    // IP rules, bans and per-address/per-user counts are one state for all shards.
    let policy = Arc::new(ServerPolicy::new(config.server_rules.clone()));
    if let Some(cluster) = &config.cluster {
        cluster::start(cluster, &policy)?;
    }
    let setup = RuntimeSetup {
        runtime: config.runtime,
        listen: listen.clone(),
        shards: config.shards,
        max_connections: config.max_connections,
        sites: sites.clone(),
        policy: Some(policy.clone()),
        log,
        resolver,
        board: board.clone(),
        ports: Some(ports.clone()),
    };
    let mut server = start_runtime(setup, mounts, accounts.clone())?;
    // Another process may have bound an address between the probe and the shards.
    if let Err(e) = safe_start::check_alone(&config.listen) {
        server.shutdown(Duration::ZERO);
        let _ = server.wait();
        return Err(e);
    }
    if let (Some(cfg), Some(board), Some(m)) = (&config.admin, board, &metrics) {
        let health = server.health();
        let sources = admin::Sources {
            w3c_dropped: Box::new(move || observer.w3c_dropped()),
            passive_ports: Box::new(move || ports.leased()),
            loop_lag: Box::new(move || {
                let start = std::time::Instant::now();
                health
                    .check(Duration::from_secs(1))
                    .then(|| start.elapsed())
            }),
        };
        match admin::AdminServer::start(cfg, board, m.clone(), sources) {
            Ok(a) => server.admin = Some(a),
            Err(e) => {
                server.shutdown(Duration::ZERO);
                let _ = server.wait();
                return Err(e);
            }
        }
        server.metrics = Some(m.clone());
    }
    server.reloader = Some(Reloader(Arc::new(Reloadable {
        config: std::sync::Mutex::new(config.clone()),
        listen,
        sites,
        policy,
        accounts,
        storage,
    })));
    Ok(server)
}

/// Each mount's durability, from its site's `durable_writes`.
fn apply_durability(storage: &LocalFs, config: &ServerConfig) {
    for (mount, durable) in config.mount_durability() {
        storage.set_durable(&mount, durable);
    }
}

/// What a runtime is started with, besides storage and authentication.
pub struct RuntimeSetup {
    pub runtime: RuntimeKind,
    /// Control-channel addresses (port 0: the OS picks; see [`RunningServer::local_addrs`]).
    pub listen: Vec<SocketAddr>,
    /// Event-loop or executor threads; 0: one per core.
    pub shards: usize,
    /// Sessions at once over all shards.
    pub max_connections: usize,
    /// The sites, their bindings and settings (`Sites::single(config)`: one site on every
    /// address), replaceable while the server runs.
    pub sites: Arc<Live<Sites>>,
    /// Server-wide policy state (IP rules, bans, connection counts), shared by all shards;
    /// `None`: the core's defaults.
    pub policy: Option<Arc<ServerPolicy>>,
    /// Where log records go; `None` drops them.
    pub log: Option<Arc<dyn LogSink>>,
    /// Answers reverse lookups for IP rules with host names, off the event loops.
    pub resolver: Arc<dyn Resolver>,
    /// The live sessions board every session registers on (for the admin listener);
    /// `None`: none is kept.
    pub board: Option<Arc<Board>>,
    /// The passive port pool; `None`: the runtime makes its own.
    pub ports: Option<Arc<wharf_core::ports::PortPool>>,
}

impl RuntimeSetup {
    /// `runtime` serving `sites` on `listen`: one thread per core, 10,000 sessions, default
    /// policy, no log, no host names.
    pub fn new(runtime: RuntimeKind, listen: Vec<SocketAddr>, sites: Arc<Sites>) -> Self {
        RuntimeSetup {
            runtime,
            listen,
            shards: 0,
            max_connections: 10_000,
            sites: Arc::new(Live::new(sites)),
            policy: None,
            log: None,
            resolver: Arc::new(NoResolver),
            board: None,
            ports: None,
        }
    }
}

/// Starts a runtime with any storage and authenticator. [`start`] uses it with the disk
/// storage and the user list; tests use it with the core's in-memory storage.
pub fn start_runtime(
    setup: RuntimeSetup,
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
) -> io::Result<RunningServer> {
    let RuntimeSetup {
        runtime,
        listen,
        shards,
        max_connections,
        sites,
        policy,
        log,
        resolver,
        board,
        ports,
    } = setup;
    let shards = match shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // Each shard admits its share; SO_REUSEPORT spreads connections about evenly.
    let per_shard = max_connections.div_ceil(shards).max(1);
    let make = move |i: usize| {
        let mut server = Server::with_live_sites(sites.clone(), i as u64, shards as u64, per_shard);
        if let Some(p) = &policy {
            server = server.with_policy(p.clone());
        }
        if let Some(b) = &board {
            server = server.with_board(b.clone());
        }
        server
    };
    let runtime = match runtime {
        RuntimeKind::Mio => {
            let driver = DriverConfig {
                shards,
                log,
                resolver,
                ports,
                ..DriverConfig::default()
            };
            let cfg = MioConfig {
                driver,
                ..MioConfig::default()
            };
            Running::Mio(wharf_runtime_mio::start(listen, cfg, make, storage, auth)?)
        }
        RuntimeKind::Smol => {
            let driver = DriverConfig {
                shards,
                log,
                resolver,
                ports,
                ..DriverConfig::default()
            };
            let cfg = SmolConfig {
                driver,
                ..SmolConfig::default()
            };
            Running::Smol(wharf_runtime_smol::start(listen, cfg, make, storage, auth)?)
        }
    };
    Ok(RunningServer {
        runtime,
        reloader: None,
        admin: None,
        metrics: None,
    })
}

/// `addrs` with every port 0 replaced by a free port, and the sockets that hold those
/// ports until dropped.
fn hold_ports(addrs: &[SocketAddr]) -> io::Result<(Vec<SocketAddr>, Vec<socket2::Socket>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out = Vec::with_capacity(addrs.len());
    let mut held = Vec::new();
    for &addr in addrs {
        if addr.port() != 0 {
            out.push(addr);
            continue;
        }
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&addr.into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let bound = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("a TCP socket without an IP address"))?;
        out.push(bound);
        held.push(s);
    }
    Ok((out, held))
}

/// The text of `public/welcome.txt` in the demo site.
pub const WELCOME: &str = "Welcome to wharf!\n\nThis is the demo site that `wharf` serves when it runs without --config.\nIt is anonymous and read-only. To serve your own directories, with users and uploads,\nwrite a wharf.toml: `wharf example-config` prints one with every key explained.\n";

/// The annotated example configuration (`wharf example-config`): every key, with its
/// default and what it does.
pub const EXAMPLE_CONFIG: &str = include_str!("../examples/wharf.toml");

/// The embedded default: the demo site under `data_dir/public` (created with a welcome
/// file on first run), anonymous read-only, on 127.0.0.1:2121, passive ports chosen by
/// the OS, explicit FTPS offered (not required) with a self-signed ECDSA certificate
/// generated on first run under `data_dir/tls`.
pub fn default_config(data_dir: &Path) -> io::Result<ServerConfig> {
    let public = data_dir.join("public");
    std::fs::create_dir_all(&public)?;
    let welcome = public.join("welcome.txt");
    if !welcome.exists() {
        std::fs::write(&welcome, WELCOME)?;
    }
    let (cert, key, _) =
        tls::ensure_self_signed(&data_dir.join("tls"), &["localhost", "127.0.0.1"])?;
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:2121\"]\npassive_ports = \"0-0\"\n\n\
         [site]\nname = \"demo\"\nroot = {:?}\nanonymous = true\n\
         banner = \"wharf demo server (anonymous, read-only)\"\n\n\
         [site.tls]\ncertificate = {:?}\nprivate_key = {:?}\ncontrol = \"allow\"\n",
        public.display().to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    ServerConfig::from_toml_str(&text, "<embedded default>")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}
