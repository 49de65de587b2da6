//! Reloading the configuration of a running server (what `wharf` does on SIGHUP): new
//! connections get the new sites, users, rules and messages; running sessions keep
//! theirs; a configuration that changes what needs a restart is refused whole.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::Duration;

use suppaftp::FtpStream;
use wharf_server::ServerConfig;
use wharf_tests::harness::*;

/// The configuration, version by version: `site` is the `[site]` table's extra keys,
/// `users` the `[[users]]` names (all with the test password).
fn config(rt: &str, root: &std::path::Path, site: &str, users: &[&str]) -> String {
    let mut text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npassive_ports = \"0-0\"\nruntime = \"{rt}\"\n\
         [site]\nroot = {:?}\n{site}\n",
        root.display().to_string()
    );
    for name in users {
        text += &format!(
            "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\n",
            password_hash()
        );
    }
    text
}

fn parse(text: &str) -> ServerConfig {
    ServerConfig::from_toml_str(text, "reload.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn banner(f: &Fixture) -> String {
    let tcp = TcpStream::connect(f.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut line = String::new();
    BufReader::new(tcp).read_line(&mut line).unwrap();
    line
}

fn can_fetch(f: &Fixture, user: &str) -> bool {
    curl_output(&["-u", &format!("{user}:{PASSWORD}"), &f.url("hello.txt")])
        .status
        .success()
}

wharf_tests::per_runtime! {
fn reload_serves_new_connections_the_new_configuration(rt) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    let v1 = config(rt, &root, "banner = \"version one\"", &["alice"]);
    let f = Fixture::from_toml(rt, tmp, root.clone(), &v1);
    assert!(banner(&f).contains("version one"));
    // A session that starts before the reload.
    let mut before = FtpStream::connect(f.addr()).unwrap();
    before.login("alice", PASSWORD).unwrap();

    // Version two: another banner, anonymous on, alice replaced by bob.
    let v2 = config(rt, &root, "banner = \"version two\"\nanonymous = true", &["bob"]);
    let summary = f.reloader().reload(parse(&v2)).expect("reloaded");
    assert!(summary.contains("1 user"), "{summary}");
    assert!(banner(&f).contains("version two"));
    assert!(!can_fetch(&f, "alice"), "a removed user still logs in");
    assert!(can_fetch(&f, "bob"));
    assert_eq!(curl(&[&f.url("hello.txt")]), b"hello, world\n", "anonymous is on now");
    // The running session keeps what it started with, to its end.
    let got = before.retr_as_buffer("hello.txt").unwrap().into_inner();
    assert_eq!(got, b"hello, world\n");
    before.quit().unwrap();

    // What needs a restart is refused whole: nothing of version three applies.
    let other = f.scratch().join("elsewhere");
    std::fs::create_dir_all(&other).unwrap();
    let v3 = config(rt, &other, "banner = \"version three\"", &["carol"]);
    let err = f.reloader().reload(parse(&v3)).unwrap_err();
    assert!(err.contains("site roots"), "{err}");
    let v4 = v2.replace("127.0.0.1:0", "127.0.0.1:1");
    let err = f.reloader().reload(parse(&v4)).unwrap_err();
    assert!(err.contains("listen"), "{err}");
    assert!(banner(&f).contains("version two"));
    assert!(can_fetch(&f, "bob") && !can_fetch(&f, "carol"));
    assert!(f.reloader().config().users.iter().any(|u| u.name == "bob"));
    f.stop();
}
}
