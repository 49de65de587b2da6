//! The `wharf` command.

use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::{ArgAction, Parser, Subcommand};
use wharf_server::{RuntimeKind, ServerConfig};

/// An FTP and FTPS server.
///
/// Without --config, wharf serves a demo site: the directory DATA_DIR/public (created on
/// first run, with a welcome.txt), anonymous and read-only, on 127.0.0.1:2121.
/// Try it with: curl ftp://127.0.0.1:2121/
///
/// SIGINT or SIGTERM shut it down gracefully: no new connections, running transfers may
/// finish for the grace period, then every session is closed. A second signal exits at once.
/// SIGHUP re-reads the configuration file. Under systemd (Type=notify), wharf reports
/// READY=1, RELOADING=1 and STOPPING=1, and answers the watchdog.
#[derive(Parser, Debug)]
#[command(name = "wharf", version, verbatim_doc_comment)]
struct Cli {
    /// The configuration: the sites to serve (`wharf example-config` prints a file with
    /// every key explained); for `wharf user`, whose users to change.
    #[arg(short, long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// The event loop to run sessions on: "mio" (epoll loops) or "smol" (async tasks).
    /// Overrides the file's server.runtime.
    #[arg(long, value_name = "NAME")]
    runtime: Option<String>,

    /// Where the demo site lives when no --config is given.
    #[arg(long, value_name = "DIR", default_value = "wharf-data")]
    data_dir: PathBuf,

    /// Seconds a graceful shutdown waits for transfers to finish. Overrides the file's
    /// server.shutdown_grace (default 30).
    #[arg(long, value_name = "SECONDS")]
    shutdown_grace: Option<u64>,

    /// Listen on this address ("ip:port") instead of server.listen; repeat for several.
    /// For the single [site] form (and the demo site); [[sites]] have bindings.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<std::net::SocketAddr>,

    /// The pid file (overrides server.pid_file): the server writes its pid there and
    /// removes it at exit; a running wharf holding it refuses a second start, a stale
    /// one is replaced. `wharf user` signals the server it names to reload.
    #[arg(long, value_name = "PATH", global = true)]
    pid_file: Option<PathBuf>,

    /// More on stderr. By default wharf logs each session's start and end, failed
    /// logins, transfers, refusals by a policy and reloads; -v adds every command with
    /// its reply code (passwords masked) and diagnostics in detail, -vv debugging.
    /// RUST_LOG (e.g. RUST_LOG=wharf_runtime_smol=debug) overrides this.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// How log lines are written on stderr: "text" (one line per event, key=value
    /// fields) or "json" (one JSON object per line).
    #[arg(long, value_name = "FORMAT", default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a configuration file: print OK, or every error with its file, line and
    /// key. Exit status 0 when valid, 1 when not.
    CheckConfig {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Read a password from standard input and print its hash (argon2id unless
    /// --scheme says otherwise), for the password_hash of a [[users]] entry.
    Passwd {
        /// "argon2id" (the default) or "bcrypt".
        #[arg(long, value_name = "SCHEME", default_value = "argon2id")]
        scheme: String,
        /// How expensive the hash is. argon2id: m=KiB,t=passes,p=lanes (default
        /// m=19456,t=2,p=1; any of the three). bcrypt: 4 to 31 (default 12).
        #[arg(long, value_name = "COST")]
        cost: Option<String>,
    },
    /// Print the annotated example configuration: every key, its default and what it
    /// does (`wharf example-config > wharf.toml`, then edit).
    ExampleConfig,
    /// Add, change, delete or list the users of --config (or of its server.users_file),
    /// keeping the file's comments; then tell the running server to reload. Import
    /// another server's password file.
    User {
        #[command(subcommand)]
        action: wharf_server::user_cmd::UserCommand,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell), e.g.
    /// `wharf completions bash > /usr/share/bash-completion/completions/wharf`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the firewall rules the configuration (--config) needs: control ports,
    /// implicit-FTPS ports, the passive range, active mode's source port; for nftables
    /// (default), ufw, firewalld or iptables. With --nat EXTERNAL_IP, the port forwards
    /// of the NAT router in front of the server instead.
    Firewall(wharf_server::firewall::FirewallArgs),
    /// Print the manual page, wharf(1), in roff (`wharf man | man -l -`); with --out-dir,
    /// write it and one page per subcommand (wharf-user-add.1, ...) into DIR.
    Man {
        /// Where to write the pages, e.g. /usr/local/share/man/man1.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

/// `--log-format json`: the server's own messages go through tracing too, so that
/// every line on stderr is a JSON object.
static JSON_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A message of the server on stderr: as written in text mode (`wharf: ...`), as a
/// log event of `level` (target `wharf::log::server`) in JSON mode.
macro_rules! say {
    ($level:ident, $($arg:tt)*) => {{
        let msg = format!($($arg)*);
        if JSON_LOG.load(std::sync::atomic::Ordering::Relaxed) {
            let msg = msg.strip_prefix("wharf: ").unwrap_or(&msg);
            tracing::$level!(target: "wharf::log::server", "{msg}");
        } else {
            eprintln!("{msg}");
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end of main: dropping it writes what is still queued.
    let _log = init_tracing(cli.verbose, cli.log_format);
    let result = match &cli.command {
        Some(Command::CheckConfig { file }) => check_config(file),
        Some(Command::Passwd { scheme, cost }) => passwd(scheme, cost.as_deref()),
        Some(Command::User { action }) => {
            wharf_server::user_cmd::run(action, cli.config.as_deref(), cli.pid_file.as_deref())
        }
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "wharf", &mut io::stdout());
            Ok(())
        }
        Some(Command::Man { out_dir }) => man(out_dir.as_deref()),
        Some(Command::Firewall(args)) => firewall(args, cli.config.as_deref()),
        Some(Command::ExampleConfig) => {
            print!("{}", wharf_server::EXAMPLE_CONFIG);
            Ok(())
        }
        None => serve(&cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            say!(error, "wharf: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber. Lines are written by a thread of their own
/// (tracing-appender): an event loop that logs never waits for stderr (a slow journald,
/// a full pipe); past 128k queued lines, lines are dropped rather than the server held.
fn init_tracing(verbose: u8, format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use tracing_subscriber::EnvFilter;
    // The operator's lines (targets wharf::log::*) at info by default; every command
    // (wharf::log::command) and the crates' info with -v.
    let default = match verbose {
        0 => "warn,wharf::log=info",
        1 => "info,wharf::log=debug",
        2 => "debug",
        _ => "trace",
    };
    let env = EnvFilter::try_from_default_env().ok();
    let log_level = match (&env, verbose) {
        (Some(_), _) | (_, 3..) => log::LevelFilter::Trace,
        (None, 2) => log::LevelFilter::Debug,
        (None, _) => log::LevelFilter::Warn,
    };
    let filter = env.unwrap_or_else(|| EnvFilter::new(default));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .thread_name("wharf-log")
        .finish(io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(io::stderr().is_terminal() && format == LogFormat::Text);
    let installed = match format {
        LogFormat::Text => tracing::subscriber::set_global_default(builder.finish()),
        LogFormat::Json => tracing::subscriber::set_global_default(builder.json().finish()),
    };
    if installed.is_ok() && format == LogFormat::Json {
        JSON_LOG.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if installed.is_ok() {
        // Crates that use `log` (rustls, ldap3) reach the same subscriber, through a
        // bridge that makes rustls' complaints about clients' SNI debug-level: one per
        // handshake from clients that send an IP address as SNI, which the server
        // cannot change and the operator need not see.
        if log::set_boxed_logger(Box::new(LogBridge)).is_ok() {
            log::set_max_level(log_level);
        }
    }
    // A panic ends only the session it happened in (the runtimes catch it); the log says
    // where, with a backtrace, on one record.
    std::panic::set_hook(Box::new(|info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("panic: {info}\n{backtrace}");
    }));
    guard
}

/// `log` records into `tracing`, rustls' SNI warnings at debug level.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let demote = record.level() <= log::Level::Warn
            && record.target().starts_with("rustls")
            && record.args().to_string().contains("SNI");
        let _ = match demote {
            true => tracing_log::format_trace(
                &log::Record::builder()
                    .args(*record.args())
                    .level(log::Level::Debug)
                    .target(record.target())
                    .module_path(record.module_path())
                    .file(record.file())
                    .line(record.line())
                    .build(),
            ),
            false => tracing_log::format_trace(record),
        };
    }

    fn flush(&self) {}
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    match ServerConfig::from_file(file) {
        Ok(config) => {
            // Valid; what is probably not meant, and directories that cannot be
            // reached now, are warnings.
            for w in config.warnings.iter().chain(&config.check_reachability()) {
                eprintln!("warning: {w}");
            }
            println!("{}: OK", file.display());
            Ok(())
        }
        Err(errors) => Err(format!("invalid configuration\n{errors}")),
    }
}

/// `wharf man`: the pages clap_mangen makes from these definitions.
fn man(out_dir: Option<&Path>) -> Result<(), String> {
    use clap::CommandFactory;
    match out_dir {
        None => clap_mangen::Man::new(Cli::command())
            .render(&mut io::stdout())
            .map_err(|e| format!("writing the manual page: {e}")),
        Some(dir) => clap_mangen::generate_to(Cli::command(), dir)
            .map_err(|e| format!("writing manual pages to {}: {e}", dir.display())),
    }
}

/// `wharf firewall`: the rules for --config, on stdout.
fn firewall(
    args: &wharf_server::firewall::FirewallArgs,
    config: Option<&Path>,
) -> Result<(), String> {
    let file = config.ok_or("firewall: which configuration? Give --config FILE")?;
    let config =
        ServerConfig::from_file(file).map_err(|e| format!("invalid configuration\n{e}"))?;
    let rules = wharf_server::firewall::run(args, &config, &file.display().to_string())?;
    print!("{rules}");
    Ok(())
}

fn passwd(scheme: &str, cost: Option<&str>) -> Result<(), String> {
    let cost = wharf_server::auth::crypt::Cost::parse(scheme, cost)?;
    let password = wharf_server::password::read_password("Password: ", false)?;
    let hash = wharf_server::auth::crypt::hash_with(&password, cost)?;
    println!("{hash}");
    Ok(())
}

fn load(cli: &Cli) -> Result<ServerConfig, String> {
    let mut config = match &cli.config {
        Some(file) => ServerConfig::from_file(file)
            .map_err(|e| format!("invalid configuration, not starting\n{e}"))?,
        None => wharf_server::default_config(&cli.data_dir)
            .map_err(|e| format!("preparing {}: {e}", cli.data_dir.display()))?,
    };
    Overrides::of(cli).apply(&mut config)?;
    Ok(config)
}

/// What the command line overrides in the configuration file, applied at start and to
/// the file re-read on SIGHUP alike (else the reload would see them as changes).
#[derive(Clone)]
struct Overrides {
    runtime: Option<String>,
    shutdown_grace: Option<u64>,
    listen: Vec<std::net::SocketAddr>,
    pid_file: Option<PathBuf>,
}

impl Overrides {
    fn of(cli: &Cli) -> Overrides {
        Overrides {
            runtime: cli.runtime.clone(),
            shutdown_grace: cli.shutdown_grace,
            listen: cli.listen.clone(),
            pid_file: cli.pid_file.clone(),
        }
    }

    fn apply(&self, config: &mut ServerConfig) -> Result<(), String> {
        if let Some(r) = &self.runtime {
            config.runtime = RuntimeKind::parse(r).map_err(|e| format!("--runtime: {e}"))?;
        }
        if let Some(s) = self.shutdown_grace {
            config.shutdown_grace = Duration::from_secs(s);
        }
        if !self.listen.is_empty() {
            config.override_listen(&self.listen)?;
        }
        if let Some(p) = &self.pid_file {
            config.pid_file = Some(p.clone());
        }
        Ok(())
    }
}

/// Whether the listener on `wildcard` receives connections for `addr`.
fn covers(addr: std::net::SocketAddr, wildcard: std::net::SocketAddr) -> bool {
    wildcard.ip().is_unspecified()
        && wildcard.is_ipv4() == addr.is_ipv4()
        && wildcard.port() == addr.port()
}

fn serve(cli: &Cli) -> Result<(), String> {
    let config = load(cli)?;
    for w in &config.warnings {
        say!(warn, "wharf: warning: {w}");
    }
    if wharf_server::systemd::passed_sockets() > 0 {
        return Err(
            "systemd passed listening sockets (socket activation), which wharf does not \
             adopt: each of its event loops binds its own listener (SO_REUSEPORT). Remove the \
             .socket unit; deploy/wharf.service binds the ports itself"
                .into(),
        );
    }
    // A notification socket that cannot be reached is not a reason to refuse to serve
    // (systemd, if it waits, says so when its start timeout passes).
    let notifier = match wharf_server::systemd::Notifier::from_env() {
        Ok(n) => n.map(Arc::new),
        Err(e) => {
            say!(warn, "wharf: NOTIFY_SOCKET: {e}; not notifying systemd");
            None
        }
    };
    let notify = {
        let notifier = notifier.clone();
        move |state: &str| {
            if let Some(n) = &notifier {
                if let Err(e) = n.notify(state) {
                    say!(warn, "wharf: telling systemd {state:?}: {e}");
                }
            }
        }
    };
    // Before binding: a running wharf that holds the pid file refuses this start.
    let pid_file = match &config.pid_file {
        Some(path) => Some(wharf_server::pidfile::PidFile::create(path)?),
        None => None,
    };
    // Signals are taken before the server starts so none is missed.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|e| format!("installing signal handlers: {e}"))?;
    let root = wharf_server::privileges::is_root();
    if let Some(to) = config.run_as.as_ref().filter(|_| !root) {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != to.uid {
            return Err(format!(
                "server.user = {:?}: wharf must be started as root (or as {0:?}) to serve as it",
                to.user
            ));
        }
    }
    let server = wharf_server::start(&config).map_err(|e| e.to_string())?;
    // The ports are bound and the site roots open: from here on, no privileges.
    match (&config.run_as, root) {
        (Some(to), true) => {
            let keep_bind = config.keeps_bind_capability();
            let dropped = match keep_bind {
                true => wharf_server::privileges::drop_to_keeping_bind(to),
                false => wharf_server::privileges::drop_to(to),
            };
            if let Err(e) = dropped {
                server.shutdown(Duration::ZERO);
                let _ = server.wait();
                return Err(format!("switching to user {:?}: {e}", to.user));
            }
            say!(
                info,
                "wharf: serving as user {} (uid {}, gid {})",
                to.user,
                to.uid,
                to.gid
            );
            if keep_bind {
                say!(info,
                    "wharf: one thread keeps CAP_NET_BIND_SERVICE, to connect from port {} in active mode",
                    config
                        .active_source_ports()
                        .iter()
                        .filter(|&&p| p < 1024)
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        (None, true) => {
            say!(info,
            "wharf: running as root; set server.user to serve sessions as an unprivileged account"
        )
        }
        _ => {}
    }
    for (configured, addr) in config.listen.iter().zip(server.local_addrs()) {
        let sites: Vec<String> = config
            .sites
            .iter()
            .flat_map(|site| {
                site.bindings
                    .iter()
                    .filter(|b| b.addr == *configured || covers(b.addr, *configured))
                    .map(move |b| match &b.host {
                        Some(h) => format!("{} as {h} (root {})", site.name, site.root.display()),
                        None => format!("{} (root {})", site.name, site.root.display()),
                    })
            })
            .collect();
        // Implicit-FTPS listeners speak TLS from the first byte.
        let implicit = config
            .sites
            .iter()
            .flat_map(|s| &s.bindings)
            .any(|b| b.implicit_tls && (b.addr == *configured || covers(b.addr, *configured)));
        let scheme = if implicit { "ftps" } else { "ftp" };
        println!(
            "wharf: serving {scheme}://{addr}/ for {} (runtime {})",
            sites.join(", "),
            config.runtime.name()
        );
    }
    for site in &config.sites {
        if let Some(tls) = &site.tls {
            println!(
                "wharf: FTPS for {}: certificate {} (SHA-256 {})",
                site.name,
                tls.certificate.display(),
                tls.fingerprint()
            );
        }
    }
    if let Some(a) = server.admin_addr() {
        println!("wharf: admin listener on http://{a}/ (live sessions; metrics at /metrics)");
    }
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    notify(&format!("READY=1\nSTATUS=serving on {}", addrs.join(", ")));
    if let (Some(n), Some(every)) = (&notifier, wharf_server::systemd::watchdog_interval()) {
        let (n, health) = (n.clone(), server.health());
        std::thread::Builder::new()
            .name("wharf-watchdog".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                // Alive means the runtime answers through its own loops, not just that
                // this thread runs.
                if health.check(every / 2) {
                    if let Err(e) = n.notify("WATCHDOG=1") {
                        say!(warn, "wharf: watchdog: {e}");
                    }
                } else {
                    say!(warn,
                        "wharf: watchdog: the runtime did not answer within {:?}; not telling systemd it is alive",
                        every / 2
                    );
                }
            })
            .map_err(|e| format!("starting the watchdog thread: {e}"))?;
    }
    if cli.config.is_none() {
        if let Some(a) = server.local_addrs().first() {
            println!("wharf: try `curl ftp://{a}/` or `curl ftp://{a}/welcome.txt`; Ctrl-C stops");
            println!("wharf: FTPS: `curl --ssl-reqd -k ftp://{a}/` (check the fingerprint above)");
        }
    }
    let (tx, rx) = mpsc::channel();
    let reloader = server.reloader();
    let metrics = server.metrics();
    let file = cli.config.clone();
    let startup = config.clone();
    let overrides = Overrides::of(cli);
    let on_signal = notify.clone();
    std::thread::spawn(move || {
        let mut count = 0;
        for sig in signals.forever() {
            if sig == signal_hook::consts::SIGHUP {
                on_signal(&format!(
                    "RELOADING=1\nMONOTONIC_USEC={}",
                    wharf_server::systemd::monotonic_usec()
                ));
                let (ok, status) = reload(file.as_deref(), reloader.as_ref(), &startup, &overrides);
                if let Some(m) = &metrics {
                    m.reload(ok);
                }
                on_signal(&format!("READY=1\nSTATUS={status}"));
                continue;
            }
            count += 1;
            if count > 1 {
                say!(warn, "wharf: second signal, exiting now");
                std::process::exit(1);
            }
            let _ = tx.send(sig);
        }
    });
    if rx.recv().is_ok() {
        notify("STOPPING=1");
        // The grace of the configuration running now (a reload may have changed it).
        let grace = server
            .reloader()
            .map_or(config.shutdown_grace, |r| r.config().shutdown_grace);
        say!(
            info,
            "wharf: shutting down (up to {} s for running transfers)",
            grace.as_secs()
        );
        server.shutdown(grace);
    }
    let result = server.wait().map_err(|e| format!("server failed: {e}"));
    if let Some(p) = pid_file {
        let path = p.path().display().to_string();
        if let Err(e) = p.remove() {
            say!(warn, "wharf: removing the pid file {path}: {e}");
        }
    }
    result
}

/// SIGHUP: re-reads the configuration file and makes it the running configuration for
/// new connections (its certificates are read afresh with it); an invalid file, or one
/// that changes what needs a restart, leaves everything as it was. Without a file (the
/// embedded default) only the certificates are re-read.
/// Returns whether it was accepted, and a one-line status for systemd.
fn reload(
    file: Option<&Path>,
    reloader: Option<&wharf_server::Reloader>,
    startup: &ServerConfig,
    overrides: &Overrides,
) -> (bool, String) {
    let (Some(file), Some(reloader)) = (file, reloader) else {
        return match startup.reload_certificates() {
            Ok(0) => (true, "nothing to reload".into()),
            Ok(n) => {
                tracing::info!(target: "wharf::log::reload", certificates = n, "{n} certificate(s) reloaded");
                (true, format!("{n} certificate(s) reloaded"))
            }
            Err(e) => {
                tracing::warn!(target: "wharf::log::reload", "certificate reload failed, keeping the old one: {e}");
                (
                    false,
                    "certificate reload failed, keeping the old one".into(),
                )
            }
        };
    };
    let result = ServerConfig::from_file(file)
        .map_err(|e| format!("invalid configuration\n{e}"))
        .and_then(|mut new| overrides.apply(&mut new).map(|()| new))
        .and_then(|new| reloader.reload(new));
    match result {
        Ok(summary) => {
            tracing::info!(target: "wharf::log::reload", file = %file.display(), "configuration reloaded: {summary}");
            (true, format!("reloaded: {summary}"))
        }
        Err(e) => {
            tracing::warn!(
                target: "wharf::log::reload",
                file = %file.display(),
                "reload refused, the running configuration stays: {e}"
            );
            (
                false,
                "reload refused, the running configuration stays (see the log)".into(),
            )
        }
    }
}
