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

use wharf_core::{Authenticator, Server, SessionConfig, Storage};
use wharf_runtime_mio::MioConfig;
use wharf_runtime_smol::SmolConfig;

pub mod config;
pub mod localfs;
mod login_cache;
pub mod users;

pub use config::{ConfigError, ConfigErrors, RuntimeKind, ServerConfig};
pub use localfs::LocalFs;
pub use users::{hash_password, UserEntry, UserList};

/// A running server on either runtime: its addresses, and the handles to stop it and
/// wait for it (each runtime keeps its own threads; this only dispatches).
pub enum RunningServer {
    Mio(wharf_runtime_mio::RunningServer),
    Smol(wharf_runtime_smol::RunningServer),
}

impl RunningServer {
    /// The bound control addresses, one per listen address (with real ports when the
    /// configuration asked for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        match self {
            RunningServer::Mio(s) => s.local_addrs(),
            RunningServer::Smol(s) => s.local_addrs(),
        }
    }

    /// Starts a graceful shutdown and returns at once: no new connections, running
    /// transfers may finish within `grace`, every session is told `421`.
    pub fn shutdown(&self, grace: Duration) {
        match self {
            RunningServer::Mio(s) => s.shutdown(grace),
            RunningServer::Smol(s) => s.shutdown(grace),
        }
    }

    /// Waits until the server has stopped; returns its first error.
    pub fn wait(self) -> io::Result<()> {
        match self {
            RunningServer::Mio(s) => s.wait(),
            RunningServer::Smol(s) => s.wait(),
        }
    }

    /// Which runtime this is.
    pub fn runtime(&self) -> RuntimeKind {
        match self {
            RunningServer::Mio(_) => RuntimeKind::Mio,
            RunningServer::Smol(_) => RuntimeKind::Smol,
        }
    }
}

/// Starts serving `config`: opens the site root, binds every listen address (port 0 is
/// resolved; see [`RunningServer::local_addrs`]) and returns once the server accepts.
pub fn start(config: &ServerConfig) -> io::Result<RunningServer> {
    let storage = Arc::new(LocalFs::open(&config.root).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("site root {}: {e}", config.root.display()),
        )
    })?);
    let auth = Arc::new(UserList::with_login_cache(
        config.users.clone(),
        config.login_cache,
    ));
    start_runtime(
        config.runtime,
        config.listen.clone(),
        config.shards,
        config.max_connections,
        config.session.clone(),
        storage,
        auth,
    )
}

/// Starts `runtime` on `listen` with any storage and authenticator: `shards` threads
/// (0: one per core), at most `max_connections` sessions over all of them, every session
/// configured by `session`. [`start`] uses it with the disk storage and the user list;
/// tests use it with the core's in-memory storage.
pub fn start_runtime(
    runtime: RuntimeKind,
    listen: Vec<SocketAddr>,
    shards: usize,
    max_connections: usize,
    session: SessionConfig,
    storage: Arc<dyn Storage>,
    auth: Arc<dyn Authenticator>,
) -> io::Result<RunningServer> {
    let shards = match shards {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // Each shard admits its share; SO_REUSEPORT spreads connections about evenly.
    let per_shard = max_connections.div_ceil(shards).max(1);
    let session = Arc::new(session);
    let make = move |i: usize| Server::new(session.clone(), i as u64, shards as u64, per_shard);
    Ok(match runtime {
        RuntimeKind::Mio => {
            let cfg = MioConfig {
                shards,
                ..MioConfig::default()
            };
            RunningServer::Mio(wharf_runtime_mio::start(listen, cfg, make, storage, auth)?)
        }
        RuntimeKind::Smol => {
            let cfg = SmolConfig {
                shards,
                ..SmolConfig::default()
            };
            RunningServer::Smol(wharf_runtime_smol::start(listen, cfg, make, storage, auth)?)
        }
    })
}

/// The text of `public/welcome.txt` in the demo site.
pub const WELCOME: &str = "Welcome to wharf!\n\nThis is the demo site that `wharf` serves when it runs without --config.\nIt is anonymous and read-only. Write a wharf.toml (see examples/wharf.toml) to serve\nyour own directories, with users and uploads.\n";

/// The embedded default: the demo site under `data_dir/public` (created with a welcome
/// file on first run), anonymous read-only, on 127.0.0.1:2121, passive ports chosen by
/// the OS.
pub fn default_config(data_dir: &Path) -> io::Result<ServerConfig> {
    let public = data_dir.join("public");
    std::fs::create_dir_all(&public)?;
    let welcome = public.join("welcome.txt");
    if !welcome.exists() {
        std::fs::write(&welcome, WELCOME)?;
    }
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:2121\"]\npassive_ports = \"0-0\"\n\n\
         [site]\nname = \"demo\"\nroot = {:?}\nanonymous = true\n\
         banner = \"wharf demo server (anonymous, read-only)\"\n",
        public.display().to_string()
    );
    ServerConfig::from_toml_str(&text, "<embedded default>")
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
}
