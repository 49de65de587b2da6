//! systemd's side of `Type=notify`, played by the test: a Unix datagram socket given to
//! the real `wharf` binary as NOTIFY_SOCKET (a path, or an abstract `@name`), with a
//! watchdog. READY=1 must come once the port accepts (and, started as root with
//! server.user, once the privileges are dropped), RELOADING=1 with MONOTONIC_USEC and
//! READY=1 around a SIGHUP, WATCHDOG=1 at half the watchdog interval, STOPPING=1 at
//! SIGTERM. The shipped unit file is checked with systemd-analyze.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use common::*;

/// The notification socket, as systemd would hold it.
struct Manager {
    sock: UnixDatagram,
    /// What the service is given as NOTIFY_SOCKET.
    name: String,
    _dir: tempfile::TempDir,
}

impl Manager {
    fn new(abstract_name: bool) -> Manager {
        let dir = tempfile::tempdir().unwrap();
        let (sock, name) = if abstract_name {
            use std::os::linux::net::SocketAddrExt;
            let name = format!(
                "wharf-notify-test-{}-{:?}",
                std::process::id(),
                Instant::now()
            );
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
        } else {
            let path = dir.path().join("notify");
            (
                UnixDatagram::bind(&path).unwrap(),
                path.display().to_string(),
            )
        };
        sock.set_read_timeout(Some(PATIENCE)).unwrap();
        Manager {
            sock,
            name,
            _dir: dir,
        }
    }

    /// The next datagram, as its `KEY=value` lines.
    fn next(&self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("a notification within the deadline");
        String::from_utf8(buf[..n].to_vec())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The next datagram that is not a watchdog ping (counting those in `pings`).
    fn next_state(&self, pings: &mut usize) -> Vec<String> {
        loop {
            let msg = self.next();
            if msg == ["WATCHDOG=1"] {
                *pings += 1;
            } else {
                return msg;
            }
        }
    }
}

fn now_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn notifies_systemd(runtime: &str, abstract_name: bool) {
    let manager = Manager::new(abstract_name);
    let tmp = tempfile::tempdir().unwrap();
    let public = tmp.path().join("pub");
    std::fs::create_dir(&public).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Started as root (as CI runs), the server also drops to `nobody`: READY=1 must
    // follow that too.
    let root = wharf_server::privileges::is_root();
    let user = if root {
        use std::os::unix::fs::PermissionsExt;
        for dir in [tmp.path(), &public] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        "user = \"nobody\"\n"
    } else {
        ""
    };
    let cfg = tmp.path().join("w.toml");
    std::fs::write(
        &cfg,
        format!("[server]\nlisten = [\"{addr}\"]\nshards = 2\n{user}[site]\nroot = \"pub\"\nanonymous = true\n"),
    )
    .unwrap();
    // A 400 ms watchdog: pings every 200 ms.
    let mut w = Wharf::start(
        tmp.path(),
        &["--runtime", runtime, "--config", cfg.to_str().unwrap()],
        &[
            ("NOTIFY_SOCKET", manager.name.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let mut pings = 0;
    let ready = manager.next_state(&mut pings);
    assert_eq!(ready[0], "READY=1", "{ready:?}");
    assert!(
        ready
            .iter()
            .any(|l| l.starts_with("STATUS=") && l.contains(&addr)),
        "{ready:?}"
    );
    // READY=1 means serving: the port accepts and greets now, without a retry.
    assert!(greeting(&addr).starts_with("220"));
    if root {
        let status = std::fs::read_to_string(format!("/proc/{}/status", w.pid())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        let nobody = wharf_server::privileges::resolve("nobody", None).unwrap();
        assert!(
            uid.split_whitespace()
                .skip(1)
                .all(|id| id == nobody.uid.to_string()),
            "READY=1 before the privileges were dropped: {uid}"
        );
    }

    let before = now_usec();
    w.signal(libc::SIGHUP);
    let reloading = manager.next_state(&mut pings);
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    let stamp: u64 = reloading
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(
        (before..=now_usec()).contains(&stamp),
        "MONOTONIC_USEC={stamp} is not CLOCK_MONOTONIC at the reload"
    );
    let again = manager.next_state(&mut pings);
    assert_eq!(again[0], "READY=1", "{again:?}");
    assert!(
        again.iter().any(|l| l.starts_with("STATUS=reloaded")),
        "{again:?}"
    );

    // Watchdog pings keep coming (every 200 ms; wait for three more, bounded).
    let deadline = Instant::now() + PATIENCE;
    let mut seen = 0;
    while seen < 3 {
        assert!(
            Instant::now() < deadline,
            "fewer than 3 WATCHDOG=1 within {PATIENCE:?}"
        );
        if manager.next() == ["WATCHDOG=1"] {
            seen += 1;
        }
    }

    w.signal(libc::SIGTERM);
    let stopping = manager.next_state(&mut pings);
    assert_eq!(stopping, ["STOPPING=1"]);
    assert!(w.exit_status().success());
}

#[test]
fn notifies_systemd_through_a_path_socket_mio() {
    notifies_systemd("mio", false);
}

#[test]
fn notifies_systemd_through_an_abstract_socket_smol() {
    notifies_systemd("smol", true);
}

#[test]
fn notifies_systemd_through_an_abstract_socket_mio() {
    notifies_systemd("mio", true);
}

#[test]
fn notifies_systemd_through_a_path_socket_smol() {
    notifies_systemd("smol", false);
}

/// With another process's WATCHDOG_PID there are no pings (with a 2 µs watchdog, a
/// pinging server would send them all along); sockets passed for activation are
/// refused with a clear error.
#[test]
fn no_watchdog_for_another_pid_and_no_socket_activation() {
    let manager = Manager::new(false);
    let tmp = tempfile::tempdir().unwrap();
    let mut w = Wharf::start(
        tmp.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", "data"],
        &[
            ("NOTIFY_SOCKET", manager.name.as_str()),
            ("WATCHDOG_USEC", "2"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    assert_eq!(manager.next()[0], "READY=1");
    w.serving();
    w.signal(libc::SIGHUP);
    assert_eq!(manager.next()[0], "RELOADING=1");
    assert_eq!(manager.next()[0], "READY=1");
    w.signal(libc::SIGTERM);
    assert_eq!(manager.next(), ["STOPPING=1"]);
    assert!(w.exit_status().success());

    let mut cmd = std::process::Command::new("sh");
    cmd.args([
        "-c",
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {WHARF} --listen 127.0.0.1:0 --data-dir data"),
    ])
    .current_dir(tmp.path());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("socket activation"), "{err}");
}

/// The shipped unit file passes `systemd-analyze verify` (with the ExecStart binary
/// pointed at this build).
#[test]
fn the_shipped_unit_file_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/wharf.service"
    ))
    .unwrap();
    for key in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies=",
        "SystemCallFilter=@system-service",
    ] {
        assert!(
            unit.contains(key),
            "{key} missing from deploy/wharf.service"
        );
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart= line");
    let binary = exec.split_whitespace().next().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("wharf.service");
    std::fs::write(&path, unit.replace(binary, WHARF)).unwrap();
    let out = match std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!("systemd-analyze (Debian package systemd) cannot run: {e}"),
    };
    let said = String::from_utf8_lossy(&out.stderr);
    // Warnings about the machine (no such user here, no systemd running as PID 1) are
    // not about the file; anything naming the unit is.
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("wharf.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {said}"
    );
}
