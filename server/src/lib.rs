//! wharf-server: everything around the protocol core that makes `wharf` a server — the
//! TOML configuration, the local-disk storage, the user list, the embedded demo site, and
//! [`start`], which runs a configuration on the mio runtime.
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

use wharf_core::policy::ServerPolicy;
use wharf_core::Server;
use wharf_runtime_mio::MioConfig;

pub mod config;
pub mod localfs;
mod login_cache;
pub mod resolver;
pub mod users;
pub mod w3c;

pub use config::{BindingConfig, ConfigError, ConfigErrors, RuntimeKind, ServerConfig, SiteConfig};
pub use localfs::LocalFs;
pub use resolver::SystemResolver;
pub use users::{hash_password, UserEntry, UserList};
pub use wharf_runtime_mio::RunningServer;

/// Starts serving `config`: opens every site root and virtual directory, binds every
/// listen address (port 0 is resolved; see [`RunningServer::local_addrs`]) and returns
/// once the server accepts.
pub fn start(config: &ServerConfig) -> io::Result<RunningServer> {
    start_with_resolver(config, Arc::new(SystemResolver))
}

/// [`start`], with reverse lookups (IP rules with host names) answered by `resolver`
/// instead of the system's (tests use a stub).
pub fn start_with_resolver(
    config: &ServerConfig,
    resolver: Arc<dyn wharf_core::Resolver>,
) -> io::Result<RunningServer> {
    let storage = Arc::new(LocalFs::with_mounts(&config.mounts())?);
    let auth = Arc::new(UserList::with_login_cache(
        config.users.clone(),
        config.login_cache,
    ));
    let outputs = config.log_outputs();
    let log = match outputs.is_empty() {
        true => None,
        false => {
            let logger: Arc<dyn wharf_core::log::LogSink> = w3c::W3cLogger::start(outputs)?;
            Some(logger)
        }
    };
    let mio = MioConfig {
        shards: config.shards,
        log,
        resolver,
        ..MioConfig::default()
    };
    let shards = mio.shard_count();
    // Each shard admits its share; SO_REUSEPORT spreads connections about evenly.
    let per_shard = config.max_connections.div_ceil(shards).max(1);
    // Bindings name their listener's port, so port 0 is settled before the sites table
    // is built: a socket held on the chosen port (SO_REUSEPORT, not listening) keeps it
    // ours until the runtime has bound it.
    let (listen, _held) = hold_ports(&config.listen)?;
    let sites = config
        .sites_table(&listen)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let sites = Arc::new(sites);
    // IP rules, bans and per-address/per-user counts are one state for all shards.
    let policy = Arc::new(ServerPolicy::new(config.server_rules.clone()));
    let make = move |i: usize| {
        Server::with_sites(sites.clone(), i as u64, shards as u64, per_shard)
            .with_policy(policy.clone())
    };
    match config.runtime {
        RuntimeKind::Mio => wharf_runtime_mio::start(listen, mio, make, storage, auth),
    }
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
