//! Starting safely: a second wharf on an address already served refuses to start (its
//! shards' SO_REUSEPORT would otherwise share the port silently), `--listen` replaces
//! the configured addresses (also across a reload), and the pid file refuses a second
//! server, replaces a stale file and goes away at exit.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;

/// A site on `listen` with two event loops, in `dir`; its banner names `dir`.
fn config(dir: &std::path::Path, listen: &str, extra: &str) -> String {
    std::fs::create_dir_all(dir.join("pub")).unwrap();
    let cfg = dir.join("w.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = [\"{listen}\"]\nshards = 2\n{extra}[site]\nroot = \"pub\"\nanonymous = true\nbanner = \"{}\"\n", dir.display()),
    )
    .unwrap();
    cfg.display().to_string()
}

fn a_second_wharf_on_a_served_address_refuses_to_start(runtime: &str) {
    let port = free_port();
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let first_cfg = config(first_dir.path(), &format!("127.0.0.1:{port}"), "");
    let mut first = Wharf::start(
        first_dir.path(),
        &["--runtime", runtime, "--config", &first_cfg],
        &[],
    );
    let addr = first.serving();
    // The same address, and a wildcard that covers it.
    for listen in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        let cfg = config(second_dir.path(), &listen, "");
        let mut second = Wharf::start(
            second_dir.path(),
            &["--runtime", runtime, "--config", &cfg],
            &[],
        );
        let status = second.exit_status();
        let said = second.stderr.rest().join("\n");
        assert_eq!(status.code(), Some(1), "{said}");
        assert!(
            said.contains(&format!("{listen} is in use by another process")),
            "{said}"
        );
        assert!(said.contains(&format!("pid {}", first.pid())), "{said}");
        assert!(
            second.stdout.rest().is_empty(),
            "the second server said it serves"
        );
    }
    // Every connection still reaches the first server (its banner names its directory).
    for _ in 0..16 {
        let hello = greeting(&addr);
        assert!(
            hello.contains(&first_dir.path().display().to_string()),
            "{hello}"
        );
    }
    assert!(first.terminate().success());
}

#[test]
fn a_second_wharf_on_a_served_address_refuses_to_start_mio() {
    a_second_wharf_on_a_served_address_refuses_to_start("mio");
}

#[test]
fn a_second_wharf_on_a_served_address_refuses_to_start_smol() {
    a_second_wharf_on_a_served_address_refuses_to_start("smol");
}

/// A process that listens on `port` with SO_REUSEPORT (as a racing wharf's shard
/// would) until its stdin closes; returned once it listens.
struct ReusePortListener(std::process::Child);

impl ReusePortListener {
    fn start(port: u16) -> ReusePortListener {
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import socket,sys\n\
                 s=socket.socket()\n\
                 s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)\n\
                 s.bind(('127.0.0.1', int(sys.argv[1])))\n\
                 s.listen()\n\
                 print('listening', flush=True)\n\
                 sys.stdin.read()\n",
                &port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (.ci/run installs it)");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "listening");
        ReusePortListener(child)
    }
}

impl Drop for ReusePortListener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The window between the probe and the shards' bind: a process that joins the port
/// with SO_REUSEPORT in it is seen once the shards listen.
#[test]
fn a_listener_that_slipped_in_after_the_probe_is_found() {
    use wharf_server::safe_start;
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(safe_start::probe(&[addr]).is_ok());
    let other = ReusePortListener::start(port);
    // Our own shard-like listener joins the port too (the kernel allows it).
    let ours = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    ours.set_reuse_port(true).unwrap();
    ours.bind(&addr.into()).unwrap();
    ours.listen(8).unwrap();
    let e = safe_start::check_alone(&[addr]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(
        e.to_string().contains(&format!("pid {}", other.0.id())),
        "{e}"
    );
    drop(other);
    assert!(safe_start::check_alone(&[addr]).is_ok());
}

#[test]
fn listen_replaces_the_configured_addresses_also_across_a_reload() {
    let tmp = tempfile::tempdir().unwrap();
    // The configured address is taken: only --listen lets this server start.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = config(tmp.path(), &taken.local_addr().unwrap().to_string(), "");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut w = Wharf::start(tmp.path(), &["--config", &cfg, "--listen", &listen], &[]);
    assert_eq!(w.serving(), listen);
    w.signal(libc::SIGHUP);
    let said = w
        .stderr
        .expect("about the reload", |l| l.contains("reload"));
    assert!(said.contains("reloaded"), "{said}");
    assert!(greeting(&listen).starts_with("220"));
    assert!(w.terminate().success());

    // [[sites]] are reached through their bindings, which --listen does not replace.
    let sites = tmp.path().join("sites.toml");
    std::fs::write(
        &sites,
        "[[sites]]\nname = \"a\"\nroot = \"pub\"\nbindings = [\"127.0.0.1:0:\"]\n",
    )
    .unwrap();
    let out = run(
        tmp.path(),
        &["--config", sites.to_str().unwrap(), "--listen", &listen],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bindings"));
}

#[test]
fn the_pid_file_refuses_a_second_server_replaces_a_stale_one_and_goes_at_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let pid_path = tmp.path().join("run/wharf.pid");
    std::fs::create_dir(tmp.path().join("run")).unwrap();
    // Stale: the pid of a process that has exited.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    std::fs::write(&pid_path, format!("{}\n", gone.id())).unwrap();

    let cfg = config(tmp.path(), "127.0.0.1:0", "pid_file = \"run/wharf.pid\"\n");
    let mut first = Wharf::start(tmp.path(), &["--config", &cfg], &[]);
    first.serving();
    assert_eq!(
        std::fs::read_to_string(&pid_path).unwrap(),
        format!("{}\n", first.pid())
    );
    // A second server with the same pid file (on another port) refuses, naming the pid.
    let mut second = Wharf::start(tmp.path(), &["--config", &cfg], &[]);
    assert_eq!(second.exit_status().code(), Some(1));
    let said = second.stderr.rest().join("\n");
    assert!(
        said.contains(&format!("runs as pid {}", first.pid())),
        "{said}"
    );
    // --pid-file overrides the key: that server starts.
    let other = tmp.path().join("other.pid");
    let mut third = Wharf::start(
        tmp.path(),
        &["--config", &cfg, "--pid-file", other.to_str().unwrap()],
        &[],
    );
    third.serving();
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        format!("{}\n", third.pid())
    );
    assert!(third.terminate().success());
    assert!(!other.exists());
    assert!(first.terminate().success());
    assert!(!pid_path.exists(), "the pid file outlived the server");

    // A pid file in a directory that does not exist is a configuration error.
    std::fs::write(
        tmp.path().join("bad.toml"),
        "[server]\npid_file = \"nowhere/wharf.pid\"\n[site]\nroot = \"pub\"\n",
    )
    .unwrap();
    let out = run(tmp.path(), &["check-config", "bad.toml"], "");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:2:") && err.contains("server.pid_file"),
        "{err}"
    );
}
