//! Real-client integration tests: start the real server (TOML config, `LocalFs`, users)
//! in-process on a loopback port chosen by the OS, on a chosen runtime, and drive it with
//! clients nobody here wrote (curl, lftp, Python's ftplib, suppaftp).
//!
//! Every test is written once and runs on every runtime through [`per_runtime!`]:
//!
//! ```ignore
//! wharf_tests::per_runtime! {
//!     fn lists_the_root(rt) {
//!         let f = Fixture::start(rt);
//!         let listing = curl(&["-u", "alice:s3cret", &f.url("")]);
//!         assert!(String::from_utf8_lossy(&listing).contains("hello.txt"));
//!         f.stop();
//!     }
//! }
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use std::net::SocketAddr;
use std::sync::Arc;

use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::{SessionConfig, Sites};
use wharf_server::{RunningServer, RuntimeKind, RuntimeSetup, ServerConfig};

/// The runtimes every `per_runtime!` test runs on, by their config name.
pub const RUNTIMES: &[&str] = &["mio", "smol"];

/// Writes one `#[test]` per runtime for each function: `fn name(rt) { .. }` becomes the
/// module `name` with a test per runtime (`name::mio`, `name::smol`), where
/// `rt: &'static str` names the runtime (pass it to [`Fixture::start`] or
/// [`start_memstore`]). [`RUNTIMES`] and the tests written here list every
/// [`RuntimeKind`]; `runtimes_are_all_listed` checks the first.
#[macro_export]
macro_rules! per_runtime {
    ($( $(#[$meta:meta])* fn $name:ident($rt:ident) $body:block )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[allow(dead_code)]
            fn run($rt: &'static str) $body
            $(#[$meta])*
            #[test]
            fn mio() { run("mio") }
            $(#[$meta])*
            #[test]
            fn smol() { run("smol") }
        }
    )*};
}

/// The password of every test user.
pub const PASSWORD: &str = "s3cret";

/// An argon2 hash of [`PASSWORD`], computed once per test binary.
pub fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| wharf_server::hash_password(PASSWORD).unwrap())
}

/// A running server over a temporary site.
pub struct Fixture {
    tmp: tempfile::TempDir,
    /// The site root on disk.
    pub root: PathBuf,
    server: Option<RunningServer>,
    /// The control port on 127.0.0.1.
    pub port: u16,
    /// Every control address the server listens on.
    pub addrs: Vec<std::net::SocketAddr>,
    /// The implicit-FTPS port ([`Fixture::with_implicit_tls`]), if any.
    pub implicit_port: Option<u16>,
    /// The site's certificate (PEM), for `--cacert`, when the fixture has TLS.
    pub certificate: Option<PathBuf>,
    pub runtime: &'static str,
}

impl Fixture {
    /// The standard site: `hello.txt`, a 3 MiB + 17 B `big.bin` ([`pattern`]),
    /// `docs/readme.txt`; user `alice` (password [`PASSWORD`], read/write) and anonymous
    /// read-only.
    pub fn start(runtime: &'static str) -> Fixture {
        Fixture::with_config(runtime, "", "")
    }

    /// The standard site with extra TOML: `server_extra` is appended to the `[server]`
    /// table, `extra` after the whole file (more tables, `[[users]]`, ...).
    pub fn with_config(runtime: &'static str, server_extra: &str, extra: &str) -> Fixture {
        Fixture::standard(
            runtime,
            tempfile::tempdir().unwrap(),
            "",
            server_extra,
            extra,
        )
    }

    /// The standard site with FTPS: a fresh self-signed certificate for `localhost` and
    /// `127.0.0.1` (see [`Fixture::certificate`]) and a `[site.tls]` table with
    /// `tls_keys` (policies, ...; more tables may follow).
    pub fn with_tls(runtime: &'static str, tls_keys: &str) -> Fixture {
        Fixture::tls(runtime, "", tls_keys)
    }

    /// [`Fixture::with_tls`] plus an implicit-FTPS listener on 127.0.0.1
    /// ([`Fixture::implicit_port`], [`Fixture::ftps_url`]).
    pub fn with_implicit_tls(runtime: &'static str, tls_keys: &str) -> Fixture {
        // Port 0 stands for "any port" in bindings, so two listeners need real ports:
        // take free ones and hold them (SO_REUSEPORT, not listening) until the server
        // has bound them.
        let (plain, implicit) = (hold_free_port(), hold_free_port());
        let port = |s: &socket2::Socket| s.local_addr().unwrap().as_socket().unwrap().port();
        let listen = format!(
            "listen = [\"127.0.0.1:{}\"]\nlisten_implicit = [\"127.0.0.1:{}\"]",
            port(&plain),
            port(&implicit)
        );
        let mut f = Fixture::tls(runtime, &listen, tls_keys);
        f.implicit_port = Some(port(&implicit));
        f
    }

    /// [`Fixture::with_tls`] listening on `addr` (`"[::1]:0"` for IPv6) instead of
    /// 127.0.0.1; [`Fixture::port`] is its port.
    pub fn with_tls_on(runtime: &'static str, addr: &str, tls_keys: &str) -> Fixture {
        Fixture::tls(runtime, &format!("listen = [\"{addr}\"]"), tls_keys)
    }

    fn tls(runtime: &'static str, listen: &str, tls_keys: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let names = ["localhost", "127.0.0.1", "::1"];
        let (cert, key, _) =
            wharf_server::tls::ensure_self_signed(&tmp.path().join("tls"), &names).unwrap();
        let extra = format!(
            "[site.tls]\ncertificate = {:?}\nprivate_key = {:?}\n{tls_keys}\n",
            cert.display().to_string(),
            key.display().to_string()
        );
        let mut f = Fixture::standard(runtime, tmp, listen, "", &extra);
        f.certificate = Some(cert);
        f
    }

    /// The standard site; `listen` replaces the `listen = ["127.0.0.1:0"]` line.
    fn standard(
        runtime: &'static str,
        tmp: tempfile::TempDir,
        listen: &str,
        server_extra: &str,
        extra: &str,
    ) -> Fixture {
        let listen = match listen {
            "" => "listen = [\"127.0.0.1:0\"]",
            other => other,
        };
        let root = tmp.path().join("site");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
        std::fs::write(root.join("big.bin"), pattern(3 * 1024 * 1024 + 17)).unwrap();
        std::fs::write(root.join("docs/readme.txt"), b"line one\nline two\n").unwrap();
        let text = format!(
            "[server]\n{listen}\nshards = 2\npassive_ports = \"0-0\"\n\
             runtime = \"{runtime}\"\n{server_extra}\n\
             [site]\nroot = {root:?}\nanonymous = true\n\
             [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n{extra}\n",
            root = root.display().to_string(),
            hash = password_hash()
        );
        Fixture::from_toml(runtime, tmp, root, &text)
    }

    /// A server from a complete TOML text; `root` is the directory tests inspect (it
    /// should be inside `tmp`, which lives as long as the fixture).
    pub fn from_toml(
        runtime: &'static str,
        tmp: tempfile::TempDir,
        root: PathBuf,
        text: &str,
    ) -> Fixture {
        let system = std::sync::Arc::new(wharf_server::SystemResolver);
        Fixture::from_toml_resolving(runtime, tmp, root, text, system)
    }

    /// [`Fixture::from_toml`], with reverse lookups (IP rules with host names) answered
    /// by `resolver` instead of the machine's.
    pub fn from_toml_resolving(
        runtime: &'static str,
        tmp: tempfile::TempDir,
        root: PathBuf,
        text: &str,
        resolver: std::sync::Arc<dyn wharf_core::Resolver>,
    ) -> Fixture {
        let config = ServerConfig::from_toml_str(text, "test.toml")
            .unwrap_or_else(|e| panic!("test config does not parse: {e}\n{text}"));
        let server = wharf_server::start_with_resolver(&config, resolver).unwrap();
        let addrs = server.local_addrs().to_vec();
        Fixture {
            tmp,
            root,
            port: addrs[0].port(),
            addrs,
            implicit_port: None,
            certificate: None,
            server: Some(server),
            runtime,
        }
    }

    /// A scratch directory that lives as long as the fixture (outside the site root).
    pub fn scratch(&self) -> PathBuf {
        let p = self.tmp.path().join("scratch");
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// `ftp://127.0.0.1:PORT/path`.
    pub fn url(&self, path: &str) -> String {
        format!("ftp://127.0.0.1:{}/{path}", self.port)
    }

    /// `ftps://127.0.0.1:IMPLICIT_PORT/path` (implicit FTPS).
    pub fn ftps_url(&self, path: &str) -> String {
        let port = self
            .implicit_port
            .expect("the fixture has no implicit FTPS (Fixture::with_implicit_tls)");
        format!("ftps://127.0.0.1:{port}/{path}")
    }

    /// The certificate path as a string, for `curl --cacert`.
    pub fn cacert(&self) -> &str {
        let cert = self.certificate.as_ref().expect("the fixture has no TLS");
        cert.to_str().unwrap()
    }

    /// `host:port` of the control listener.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Graceful shutdown (5 s grace); fails the test if the server does not stop cleanly.
    pub fn stop(mut self) {
        let s = self.server.take().unwrap();
        s.shutdown(Duration::from_secs(5));
        s.wait().unwrap();
    }

    /// Graceful shutdown that keeps the fixture (and its files) for inspection afterwards.
    pub fn stop_keeping_files(&mut self) {
        let s = self.take_server();
        s.shutdown(Duration::from_secs(5));
        s.wait().unwrap();
    }

    /// The handle that reloads the running server's configuration.
    pub fn reloader(&self) -> wharf_server::Reloader {
        let server = self.server.as_ref().expect("server running");
        server.reloader().expect("started from a configuration")
    }

    /// Takes the running server out of the fixture (for tests that stop it themselves).
    pub fn take_server(&mut self) -> RunningServer {
        self.server.take().expect("server already taken")
    }

    /// Fails if an upload temporary (`.wharf-part-*`) is left anywhere under the root.
    pub fn assert_no_temp_files(&self) {
        assert_no_temp_files(&self.root);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::ZERO);
            let _ = s.wait();
        }
    }
}

/// The runtime `rt` names (a [`RUNTIMES`] entry).
pub fn runtime_kind(rt: &str) -> RuntimeKind {
    RuntimeKind::parse(rt).unwrap_or_else(|e| panic!("{e}"))
}

/// The runtime `rt` alone, without config or disk: serves `storage` (the core's
/// in-memory storage, holding `/hello.txt` = `hello, world\n`) on `listen` with
/// `shards` threads and at most `max` sessions; user `alice` / `secret`, anonymous
/// allowed. For tests of the runtime contract that need to see or fake storage.
pub fn start_memstore(
    rt: &str,
    listen: &str,
    shards: usize,
    max: usize,
) -> (RunningServer, Arc<MemStorage>) {
    start_memstore_with(rt, listen, shards, max, memstore_session())
}

/// The session configuration of [`start_memstore`]: defaults, anonymous allowed.
pub fn memstore_session() -> SessionConfig {
    SessionConfig {
        allow_anonymous: true,
        ..SessionConfig::default()
    }
}

/// [`start_memstore`] with a session configuration of the test's own.
pub fn start_memstore_with(
    rt: &str,
    listen: &str,
    shards: usize,
    max: usize,
    session: SessionConfig,
) -> (RunningServer, Arc<MemStorage>) {
    let storage = Arc::new(MemStorage::new());
    storage.add_file("/hello.txt", b"hello, world\n");
    let users = Arc::new(MemUsers::new().with("alice", "secret", &[]));
    let listen: SocketAddr = listen.parse().unwrap();
    let setup = RuntimeSetup {
        shards,
        max_connections: max,
        ..RuntimeSetup::new(
            runtime_kind(rt),
            vec![listen],
            Arc::new(Sites::single(Arc::new(session))),
        )
    };
    let server = wharf_server::start_runtime(setup, storage.clone(), users).unwrap();
    assert_eq!(server.runtime(), runtime_kind(rt));
    (server, storage)
}

/// Deterministic non-repeating-looking bytes: byte `i` is `i * 7 % 251`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Pseudo-random bytes from a seed (xorshift), for byte-exact transfer checks.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn assert_no_temp_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(!name.starts_with(".wharf-part-"), "leftover {name}");
        if e.file_type().unwrap().is_dir() {
            assert_no_temp_files(&e.path());
        }
    }
}

/// Runs curl (`-sS --max-time 60` plus `args`) and returns its stdout; fails the test
/// on a non-zero exit.
pub fn curl(args: &[&str]) -> Vec<u8> {
    let out = curl_output(args);
    assert!(
        out.status.success(),
        "curl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs curl and returns whatever happened (for tests that expect a failure).
pub fn curl_output(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(args)
        .output()
        .expect("curl must be installed")
}

/// Runs `lftp -c script` with retries off and a 20 s network timeout prepended; returns
/// the output (check `status` yourself).
pub fn lftp(script: &str) -> Output {
    let script =
        format!("set net:max-retries 1; set net:timeout 20; set cmd:fail-exit yes; {script}");
    Command::new("timeout")
        .args(["120", "lftp", "-c", &script])
        .output()
        .expect("lftp must be installed")
}

/// Runs a Python 3 script with `args` (under a 120 s `timeout`); fails the test unless it
/// exits 0, and returns its stdout.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["120", "python3", "-c", script])
        .args(args)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "python: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails with the output when a client command did not succeed.
pub fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free port on 127.0.0.1, held by a bound (not listening) `SO_REUSEPORT` socket so
/// that nobody else takes it until the server, which binds with `SO_REUSEPORT` too, has
/// it; drop the socket after the server started.
pub fn hold_free_port() -> socket2::Socket {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("a free port on 127.0.0.1");
    s
}

/// A port that was free a moment ago, below the ephemeral range (so no client socket of
/// a test running alongside takes it meanwhile), different for each call and process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 20;
    for _ in 0..10_000 {
        let port = 20_000 + (base - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 10_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-29999");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_all_listed() {
        let all: Vec<&str> = RuntimeKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(RUNTIMES, &all[..]);
    }

    crate::per_runtime! {
        fn the_macro_passes_each_runtime_by_name(rt) {
            assert!(RUNTIMES.contains(&rt), "{rt}");
            assert_eq!(runtime_kind(rt).name(), rt);
        }
    }
}
