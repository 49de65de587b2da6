//! The `wharf` binary: check-config, passwd, and serve-until-SIGTERM.

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

#[test]
fn serves_until_sigterm_then_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    std::fs::write(tmp.path().join("pub/f.txt"), b"served by the binary\n").unwrap();
    let cfg = tmp.path().join("w.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\n[site]\nroot = \"pub\"\nanonymous = true\n",
    )
    .unwrap();
    let mut child = Command::new(WHARF)
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("{url}f.txt")])
        .output()
        .expect("curl must be installed");
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(out.stdout, b"served by the binary\n");
    assert!(status.success(), "{status}");
}
