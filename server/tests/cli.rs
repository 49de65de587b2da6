//! The `wharf` binary: check-config, passwd, serve-until-SIGTERM and running out of
//! descriptors, on each runtime.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

#[test]
fn check_config_says_ok_or_lists_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let good = tmp.path().join("good.toml");
    std::fs::write(&good, "[site]\nroot = \"pub\"\n").unwrap();
    let out = Command::new(WHARF)
        .arg("check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    let bad = tmp.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[server]\npassive_ports = \"9-1\"\n[site]\nroot = \"nope\"\n",
    )
    .unwrap();
    let out = Command::new(WHARF)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2:"), "{err}");
    assert!(err.contains("server.passive_ports"), "{err}");
    assert!(err.contains("bad.toml:4:"), "{err}");
    assert!(err.contains("site.root"), "{err}");
}

#[test]
fn invalid_config_refuses_to_start_and_unknown_runtime_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[site]\nroot = \"nope\"\n").unwrap();
    let out = Command::new(WHARF)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        "[server]\nlisten = [\"127.0.0.1:0\"]\n[site]\nroot = \"pub\"\n",
    )
    .unwrap();
    let out = Command::new(WHARF)
        .args(["--runtime", "tokio", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runtime"));
}

#[test]
fn passwd_prints_a_verifiable_hash() {
    let mut child = Command::new(WHARF)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"correct horse\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let users = wharf_server::UserList::new(vec![wharf_server::UserEntry {
        name: "u".into(),
        password_hash: hash,
        groups: vec![],
    }]);
    use wharf_core::Authenticator;
    let peer = "127.0.0.1:1".parse().unwrap();
    assert!(users.authenticate("u", "correct horse", peer).is_ok());
    assert!(users.authenticate("u", "correct horse\n", peer).is_err());
}

/// Starts `wharf --runtime RUNTIME --config FILE` on a demo site (`f.txt`) with one
/// shard; `nofile` caps its open files (soft and hard). Returns the child and its URL.
fn spawn_wharf(
    tmp: &std::path::Path,
    runtime: &str,
    nofile: Option<u64>,
) -> (std::process::Child, String) {
    std::fs::create_dir_all(tmp.join("pub")).unwrap();
    std::fs::write(tmp.join("pub/f.txt"), b"served by the binary\n").unwrap();
    let cfg = tmp.join("w.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\n[site]\nroot = \"pub\"\nanonymous = true\n",
    )
    .unwrap();
    let mut cmd = Command::new(WHARF);
    cmd.args(["--runtime", runtime, "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&format!("runtime {runtime}")), "{line:?}");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ftp://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, url)
}

/// SIGTERM, then the exit status.
fn terminate(mut child: std::process::Child) -> std::process::ExitStatus {
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap()
}

/// `wharf --runtime RUNTIME --config CFG` with stdout and stderr piped: the child, the
/// `ftp://` URL it printed first, and its stderr.
fn run_config(
    cfg: &std::path::Path,
    runtime: &str,
) -> (
    std::process::Child,
    String,
    BufReader<std::process::ChildStderr>,
) {
    let mut child = Command::new(WHARF)
        .args(["--runtime", runtime, "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("ftp://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    (child, url, stderr)
}

fn serves_until_sigterm_then_exits_zero(runtime: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (child, url) = spawn_wharf(tmp.path(), runtime, None);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("{url}f.txt")])
        .output()
        .expect("curl must be installed");
    let status = terminate(child);
    assert_eq!(out.stdout, b"served by the binary\n");
    assert!(status.success(), "{status}");
}

#[test]
fn serves_until_sigterm_then_exits_zero_mio() {
    serves_until_sigterm_then_exits_zero("mio");
}

#[test]
fn serves_until_sigterm_then_exits_zero_smol() {
    serves_until_sigterm_then_exits_zero("smol");
}

/// Out of descriptors (EMFILE), the server answers every connection beyond what it can
/// hold with "421 Server busy" instead of leaving it hanging or crashing, and serves
/// again once descriptors are free.
fn out_of_descriptors_is_421_then_recovers(runtime: &str) {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (child, url) = spawn_wharf(tmp.path(), runtime, Some(64));
    let addr = url
        .trim_start_matches("ftp://")
        .trim_end_matches('/')
        .to_string();
    let first_line = |s: &TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    };
    let (mut served, mut busy) = (Vec::new(), 0);
    for _ in 0..100 {
        let s = TcpStream::connect(&addr).unwrap();
        let line = first_line(&s);
        if line.starts_with("220") {
            served.push(s);
        } else {
            assert!(line.starts_with("421 Server busy"), "{line:?}");
            busy += 1;
        }
    }
    assert!(
        !served.is_empty() && busy > 0,
        "{} served, {busy} busy",
        served.len()
    );
    // Let the served sessions go; each is closed on the server once we see its EOF.
    for mut s in served {
        s.write_all(b"QUIT\r\n").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(String::from_utf8_lossy(&rest).starts_with("221"));
    }
    let s = TcpStream::connect(&addr).unwrap();
    let line = first_line(&s);
    assert!(line.starts_with("220"), "after recovery: {line:?}");
    drop(s);
    let status = terminate(child);
    assert!(status.success(), "{status}");
}

/// Bursts past the open-files limit: every connection of every burst gets its 220 or a
/// 421 (or a clean close) at once, none is left hanging, and the server serves again
/// after each burst. (The spare descriptor used to be lost after the first refusal of a
/// burst, leaving the rest of it, and later bursts, without an answer.)
fn bursts_past_the_descriptor_limit_are_all_answered(runtime: &str) {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (child, url) = spawn_wharf(tmp.path(), runtime, Some(64));
    let addr = url
        .trim_start_matches("ftp://")
        .trim_end_matches('/')
        .to_string();
    for burst in 0..3 {
        // All at once: they wait in the backlog together.
        let conns: Vec<TcpStream> = (0..250)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        let (mut served, mut busy, mut closed) = (Vec::new(), 0, 0);
        for s in conns {
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut line = String::new();
            match BufReader::new(&s).read_line(&mut line) {
                Ok(0) => closed += 1,
                Ok(_) if line.starts_with("220") => served.push(s),
                Ok(_) => {
                    assert!(line.starts_with("421 "), "burst {burst}: {line:?}");
                    busy += 1;
                }
                Err(e) => panic!("burst {burst}: a connection hung or failed: {e}"),
            }
        }
        assert!(
            busy > 150,
            "burst {burst}: {} served, {busy} busy, {closed} closed",
            served.len()
        );
        for mut s in served {
            s.write_all(b"QUIT\r\n").unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).unwrap();
        }
        // Serving again: a normal client gets in.
        let s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(line.starts_with("220"), "after burst {burst}: {line:?}");
    }
    let status = terminate(child);
    assert!(status.success(), "{status}");
}

#[test]
fn bursts_past_the_descriptor_limit_are_all_answered_mio() {
    bursts_past_the_descriptor_limit_are_all_answered("mio");
}

#[test]
fn bursts_past_the_descriptor_limit_are_all_answered_smol() {
    bursts_past_the_descriptor_limit_are_all_answered("smol");
}

/// An upload that fills the disk: the client finishes sending and reads why it failed
/// (`452`), instead of a send failure on a reset connection; nothing of it stays.
/// The site lives on a 1 MiB tmpfs the test mounts (root only; CI runs as root).
fn a_full_disk_is_a_452_the_client_reads(runtime: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pub");
    std::fs::create_dir(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "wharf-full-disk"])
        .arg(&root)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "this test mounts a small tmpfs and needs root (CI runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(root.clone());
    let cfg = tmp.path().join("w.toml");
    let toml = "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\n\
                [site]\nroot = \"pub\"\nanonymous = true\nanonymous_write = true\n";
    std::fs::write(&cfg, toml).unwrap();
    let (child, url, _stderr) = run_config(&cfg, runtime);
    let big = tmp.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 4 << 20]).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "-T"])
        .arg(&big)
        .arg(format!("{url}big.bin"))
        .output()
        .expect("curl runs");
    let err = String::from_utf8_lossy(&out.stderr);
    // curl: "(18) server did not report OK, got 452", not "(55) Send failure".
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("452") && !err.contains("Send failure"),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the failed upload left {left:?}");
    let status = terminate(child);
    assert!(status.success(), "{status}");
}

#[test]
fn a_full_disk_is_a_452_the_client_reads_mio() {
    a_full_disk_is_a_452_the_client_reads("mio");
}

#[test]
fn a_full_disk_is_a_452_the_client_reads_smol() {
    a_full_disk_is_a_452_the_client_reads("smol");
}

#[test]
fn out_of_descriptors_is_421_then_recovers_mio() {
    out_of_descriptors_is_421_then_recovers("mio");
}

#[test]
fn out_of_descriptors_is_421_then_recovers_smol() {
    out_of_descriptors_is_421_then_recovers("smol");
}

/// SIGHUP re-reads the configuration file: a valid one serves new connections (here, a
/// new banner), an invalid one is refused and the running configuration stays. The
/// server says which on stderr; the test waits for that line.
#[test]
fn sighup_reloads_the_configuration_file_or_keeps_the_running_one() {
    use std::net::TcpStream;
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("pub")).unwrap();
    let cfg = tmp.path().join("w.toml");
    let version = |banner: &str| {
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\n[site]\nroot = \"pub\"\nanonymous = true\nbanner = \"{banner}\"\n")
    };
    std::fs::write(&cfg, version("first banner")).unwrap();
    let (child, url, mut stderr) = run_config(&cfg, "mio");
    let addr = url
        .trim_start_matches("ftp://")
        .trim_end_matches('/')
        .to_string();
    let banner = || {
        let s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line
    };
    let mut hangup = |expect: &str| {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGHUP);
        }
        // The first line about the reload (a warning about running as root may come
        // before it).
        let said = (&mut stderr)
            .lines()
            .map(Result::unwrap)
            .find(|l| l.contains("reload"))
            .expect("a line about the reload");
        assert!(said.contains(expect), "{said:?}");
    };
    assert!(banner().contains("first banner"));
    std::fs::write(&cfg, version("second banner")).unwrap();
    hangup("reloaded");
    assert!(banner().contains("second banner"));
    std::fs::write(&cfg, "[site]\nroot = \"missing\"\n").unwrap();
    hangup("refused");
    assert!(banner().contains("second banner"));
    let status = terminate(child);
    assert!(status.success(), "{status}");
}

/// Started as root with `server.user`, wharf serves as that account: every thread's
/// credentials are the account's, and an upload is owned by it. (Needs root, as CI
/// runs; elsewhere the test has nothing to check and says so.)
#[test]
fn started_as_root_it_serves_as_server_user_mio() {
    started_as_root_it_serves_as_server_user("mio");
}

#[test]
fn started_as_root_it_serves_as_server_user_smol() {
    started_as_root_it_serves_as_server_user("smol");
}

fn started_as_root_it_serves_as_server_user(runtime: &str) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if !wharf_server::privileges::is_root() {
        eprintln!("not root: privilege dropping is not exercised here");
        return;
    }
    let nobody = wharf_server::privileges::resolve("nobody", None).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pub_dir = tmp.path().join("pub");
    std::fs::create_dir_all(&pub_dir).unwrap();
    std::fs::write(pub_dir.join("f.txt"), b"read as nobody\n").unwrap();
    // The account must be able to reach the root and write into it.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&pub_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let cfg = tmp.path().join("w.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\nuser = \"nobody\"\n\
         [site]\nroot = \"pub\"\nanonymous = true\nanonymous_write = true\n",
    )
    .unwrap();
    let (child, url, mut stderr) = run_config(&cfg, runtime);
    let mut said = String::new();
    stderr.read_line(&mut said).unwrap();
    assert!(said.contains("serving as user nobody"), "{said:?}");
    let get = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("{url}f.txt")])
        .output()
        .unwrap();
    assert_eq!(get.stdout, b"read as nobody\n");
    let src = tmp.path().join("up.txt");
    std::fs::write(&src, b"uploaded").unwrap();
    let put = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-T"])
        .arg(&src)
        .arg(format!("{url}up.txt"))
        .output()
        .unwrap();
    assert!(put.status.success(), "{put:?}");
    let meta = std::fs::metadata(pub_dir.join("up.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid));
    // Every thread runs with the account's real, effective and saved ids (after a
    // transfer, so that threads started on demand are counted too).
    let tasks = std::fs::read_dir(format!("/proc/{}/task", child.id())).unwrap();
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let ids = |key: &str| {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            line.split_whitespace()
                .skip(1)
                .map(|n| n.parse().unwrap())
                .collect::<Vec<u32>>()
        };
        assert_eq!(ids("Uid:")[..3], [nobody.uid; 3], "{status}");
        assert_eq!(ids("Gid:")[..3], [nobody.gid; 3], "{status}");
    }
    let status = terminate(child);
    assert!(status.success(), "{status}");
}
