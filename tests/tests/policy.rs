//! Security and operations with real clients (curl, Python's ftplib, raw sockets bound to
//! 127.0.0.2): IIS's second walkthrough — a hidden `_private` folder, a site that only one
//! address may use, a ban after failed logins that lifts, `.exe` uploads refused, an
//! upload over the size limit cut with nothing left behind — plus bandwidth pacing,
//! per-address limits, rename without replace, and a W3C log read back by a strict parser.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wharf_tests::harness::*;

/// `[site.request_filtering]` with a hidden `_private`, `.exe` denied, SITE denied and a
/// 1 MiB upload limit.
const FILTERING: &str = r#"
[site.request_filtering]
hidden_segments = ["_private"]
denied_extensions = [".exe"]
denied_commands = ["SITE"]
max_upload_size = 1048576
"#;

fn private_folder(f: &Fixture) {
    std::fs::create_dir_all(f.root.join("_private/inner")).unwrap();
    std::fs::write(f.root.join("_private/private.txt"), b"top secret\n").unwrap();
}

const HIDDEN_SCRIPT: &str = r#"
import ftplib, io, sys
port = int(sys.argv[1])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("alice", "s3cret")

def refused(what, f):
    try:
        f()
    except ftplib.error_perm as e:
        assert str(e).startswith("550"), (what, str(e))
        return
    raise SystemExit("not refused: " + what)

spellings = ["_private", "./_private", "docs/../_private", "_PRIVATE", "_private/",
             "_Private.", "/_private", "_private/private.txt", "_PRIVATE/private.txt",
             "/docs/../_private/./private.txt", "_private/inner"]
for p in spellings:
    refused("RETR " + p, lambda: ftp.retrbinary("RETR " + p, lambda b: None))
    refused("SIZE " + p, lambda: ftp.size(p))
    refused("MDTM " + p, lambda: ftp.sendcmd("MDTM " + p))
    refused("CWD " + p, lambda: ftp.cwd(p))
    refused("MLST " + p, lambda: ftp.sendcmd("MLST " + p))
    refused("STAT " + p, lambda: ftp.sendcmd("STAT " + p))
    refused("LIST " + p, lambda: ftp.retrlines("LIST " + p, lambda l: None))
    refused("NLST " + p, lambda: ftp.nlst(p))
    refused("MLSD " + p, lambda: list(ftp.mlsd(p)))
    refused("DELE " + p, lambda: ftp.delete(p))
    refused("RMD " + p, lambda: ftp.rmd(p))
    refused("MKD " + p, lambda: ftp.mkd(p + "/new"))
    refused("RNFR " + p, lambda: ftp.sendcmd("RNFR " + p))
    refused("STOR " + p, lambda: ftp.storbinary("STOR " + p + "/x", io.BytesIO(b"x")))
    refused("APPE " + p, lambda: ftp.storbinary("APPE " + p, io.BytesIO(b"x")))
ftp.sendcmd("RNFR hello.txt")
refused("RNTO", lambda: ftp.sendcmd("RNTO _private/stolen.txt"))

names = ftp.nlst()
assert "hello.txt" in names and not any("_private" in n.lower() for n in names), names
lines = []
ftp.retrlines("LIST -a", lines.append)
assert lines and not any("_private" in l.lower() for l in lines), lines
facts = [name for name, _ in ftp.mlsd()]
assert "hello.txt" in facts and "_private" not in facts, facts
stat = ftp.sendcmd("STAT .")
assert "hello.txt" in stat and "_private" not in stat, stat
ftp.quit()
print("ok")
"#;

/// Reads every `u_ex*.log` under `dir` with a strict W3C extended-log parser: known
/// directives only, `#Version: 1.0` and `#Fields:` before any entry, exactly as many
/// values as fields on every line, and well-formed dates, times and numbers. Returns the
/// entries as field-name → unescaped value maps.
fn read_w3c(dir: &Path) -> Vec<BTreeMap<String, String>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no log file in {}", dir.display());
    let mut rows = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("u_ex") && name.ends_with(".log"), "{name}");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.ends_with('\n'), "{name}: a torn last line");
        let mut fields: Option<Vec<String>> = None;
        let mut version = false;
        for (i, line) in text.lines().enumerate() {
            let at = format!("{name}:{}", i + 1);
            if let Some(d) = line.strip_prefix('#') {
                let (key, value) = d.split_once(": ").unwrap_or_else(|| panic!("{at}: {line}"));
                match key {
                    "Software" | "Date" | "Remark" => {}
                    "Version" => {
                        assert_eq!(value, "1.0", "{at}");
                        version = true;
                    }
                    "Fields" => {
                        let names: Vec<String> = value.split(' ').map(String::from).collect();
                        assert!(names.iter().all(|n| !n.is_empty()), "{at}");
                        fields = Some(names);
                    }
                    other => panic!("{at}: unknown directive {other:?}"),
                }
                continue;
            }
            assert!(version, "{at}: an entry before #Version");
            let names = fields
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: no #Fields"));
            let values: Vec<&str> = line.split(' ').collect();
            assert_eq!(values.len(), names.len(), "{at}: {line:?}");
            let mut row = BTreeMap::new();
            for (n, v) in names.iter().zip(values) {
                assert!(!v.is_empty(), "{at}: empty value for {n}");
                let value = wharf_server::w3c::unescape(v)
                    .unwrap_or_else(|| panic!("{at}: bad escape in {n}: {v:?}"));
                match n.as_str() {
                    "date" => assert!(is_shape(v, "dddd-dd-dd"), "{at}: date {v}"),
                    "time" => assert!(is_shape(v, "dd:dd:dd"), "{at}: time {v}"),
                    "c-ip" | "s-ip" => {
                        assert!(v.parse::<std::net::IpAddr>().is_ok(), "{at}: {n} {v}")
                    }
                    "c-port" | "s-port" | "sc-win32-status" | "sc-substatus" | "sc-bytes"
                    | "cs-bytes" | "time-taken" | "x-session" => {
                        assert!(v.parse::<u64>().is_ok(), "{at}: {n} {v}")
                    }
                    "sc-status" => {
                        assert!(v == "-" || v.parse::<u16>().is_ok(), "{at}: {n} {v}")
                    }
                    _ => {}
                }
                row.insert(n.clone(), value);
            }
            rows.push(row);
        }
    }
    rows
}

/// `d` is a digit; anything else must match exactly.
fn is_shape(v: &str, shape: &str) -> bool {
    v.len() == shape.len()
        && v.bytes().zip(shape.bytes()).all(|(c, s)| {
            if s == b'd' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
}

/// Rows whose method and uri are these.
fn find<'a>(
    rows: &'a [BTreeMap<String, String>],
    method: &str,
    uri: &str,
) -> Vec<&'a BTreeMap<String, String>> {
    rows.iter()
        .filter(|r| r["cs-method"] == method && r["cs-uri-stem"] == uri)
        .collect()
}

fn python_out(script: &str, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .args(["120", "python3", "-c", script])
        .args(args)
        .output()
        .expect("python3 must be installed")
}

const FROM_127_0_0_2: &str = r#"
import socket, sys
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=("127.0.0.2", 0))
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write(repr(data))
"#;

/// A resolver that holds its first lookup until [`Gate::open`]; every client is
/// `client.test`.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (entered, open)
    changed: Condvar,
}

impl Gate {
    fn wait_entered(&self) {
        let guard = self.state.lock().unwrap();
        let (guard, timeout) = self
            .changed
            .wait_timeout_while(guard, Duration::from_secs(30), |s| !s.0)
            .unwrap();
        assert!(!timeout.timed_out() && guard.0, "no lookup started");
    }

    fn open(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

impl wharf_core::Resolver for Gate {
    fn reverse_lookup(&self, _ip: std::net::IpAddr) -> Option<String> {
        let mut s = self.state.lock().unwrap();
        if !s.0 {
            s.0 = true;
            self.changed.notify_all();
            // Bounded: a test that never opens the gate still ends.
            let _ = self
                .changed
                .wait_timeout_while(s, Duration::from_secs(30), |s| !s.1)
                .unwrap();
        }
        Some("client.test".into())
    }
}

wharf_tests::per_runtime! {

fn hidden_private_folder_is_invisible_and_unreachable(rt) {
    let f = Fixture::with_config(rt, "", FILTERING);
    private_folder(&f);
    python(HIDDEN_SCRIPT, &[&f.port.to_string()]);
    // curl: listings do not show it, and no spelling of a path reaches it.
    let listing = String::from_utf8(curl(&["-u", "alice:s3cret", &f.url("")])).unwrap();
    assert!(listing.contains("hello.txt") && !listing.contains("_private"), "{listing}");
    let names = String::from_utf8(curl(&["-u", "alice:s3cret", "-l", &f.url("")])).unwrap();
    assert!(!names.contains("_private"), "{names}");
    for path in [
        "_private/private.txt",
        "_PRIVATE/private.txt",
        "docs/../_private/private.txt",
        "./_private/private.txt",
        "_private/",
    ] {
        let out = curl_output(&["-u", "alice:s3cret", "--path-as-is", &f.url(path)]);
        assert!(!out.status.success(), "{path}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("top secret"));
    }
    let out = curl_output(&["-u", "alice:s3cret", "-Q", "CWD _private", &f.url("")]);
    assert!(!out.status.success());
    assert_eq!(std::fs::read(f.root.join("_private/private.txt")).unwrap(), b"top secret\n");
    assert!(f.root.join("_private/inner").is_dir());
    assert!(f.root.join("hello.txt").exists(), "the RNFR/RNTO attempt moved nothing");
    f.stop();
}

fn site_admits_only_its_address_with_default_deny(rt) {
    let extra = "[site.ip_security]\nallow_unlisted = false\nallow = [\"127.0.0.1\"]\n";
    let f = Fixture::with_config(rt, "", extra);
    assert_eq!(curl(&["-u", "alice:s3cret", &f.url("hello.txt")]), b"hello, world\n");
    // From 127.0.0.2: refused with 421 before any login.
    let seen = python(FROM_127_0_0_2, &[&f.port.to_string()]);
    assert!(seen.starts_with("b'421 "), "{seen}");
    let out = curl_output(&["--interface", "127.0.0.2", "-u", "alice:s3cret", &f.url("hello.txt")]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let refused = python_out(
        "import ftplib, sys\nftplib.FTP().connect('127.0.0.1', int(sys.argv[1]), timeout=30, source_address=('127.0.0.2', 0))",
        &[&f.port.to_string()],
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("421"), "{refused:?}");
    f.stop();

    // The drop action closes without a word.
    let extra = "[site.ip_security]\nallow_unlisted = false\nallow = [\"127.0.0.1\"]\ndeny_action = \"drop\"\n";
    let f = Fixture::with_config(rt, "", extra);
    let seen = python(FROM_127_0_0_2, &[&f.port.to_string()]);
    assert_eq!(seen, "b''");
    assert_eq!(curl(&["-u", "alice:s3cret", &f.url("hello.txt")]), b"hello, world\n");
    f.stop();
}

fn host_name_entries_admit_localhost_by_its_reverse_name(rt) {
    // The machine's own resolver: 127.0.0.1 is "localhost" in /etc/hosts (and forward
    // "localhost" leads back to it); 127.0.0.2 has no name. Only the name is allowed.
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let listed = hosts.lines().any(|l| {
        let mut w = l.split('#').next().unwrap_or("").split_whitespace();
        w.next() == Some("127.0.0.1") && w.next() == Some("localhost")
    });
    assert!(listed, "this test needs /etc/hosts to map 127.0.0.1 to localhost first");
    let extra = "[site.ip_security]\nallow_unlisted = false\nenable_reverse_dns = true\n\
                 allow = [\"LOCALHOST\"]\n";
    let f = Fixture::with_config(rt, "", extra);
    assert_eq!(curl(&["-u", "alice:s3cret", &f.url("hello.txt")]), b"hello, world\n");
    let seen = python(FROM_127_0_0_2, &[&f.port.to_string()]);
    assert_eq!(seen, "b'421 Access denied for your address.\\r\\n'");
    f.stop();
}

fn a_slow_reverse_lookup_stalls_no_other_session(rt) {
    // One shard, so a lookup run on the event loop would stall everyone. The stub
    // resolver holds the first lookup until the test lets it go.
    let gate = Arc::new(Gate::default());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\npassive_ports = \"0-0\"\n\
         runtime = \"{rt}\"\n[site]\nroot = {root:?}\nanonymous = true\n\
         [site.ip_security]\nenable_reverse_dns = true\ndeny = [\"*.blocked.test\"]\n",
        root = root.display().to_string()
    );
    let f = Fixture::from_toml_resolving(rt, tmp, root, &text, gate.clone());
    let mut held = std::net::TcpStream::connect(f.addr()).unwrap();
    held.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    gate.wait_entered();
    // Meanwhile another client connects, is looked up, logs in and downloads.
    assert_eq!(curl(&[&f.url("hello.txt")]), b"hello, world\n");
    let mut first = [0u8; 4];
    held.set_nonblocking(true).unwrap();
    let early = std::io::Read::read(&mut held, &mut first);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the held connection was greeted before its lookup ended: {early:?}"
    );
    held.set_nonblocking(false).unwrap();
    gate.open();
    std::io::Read::read_exact(&mut held, &mut first).unwrap();
    assert_eq!(&first, b"220 ");
    drop(held);
    f.stop();
}

fn failed_logins_ban_the_address_and_the_ban_lifts(rt) {
    let extra = "[server.logon_restrictions]\nmax_failures = 3\nwindow = 60\nban = 2\n";
    let f = Fixture::with_config(rt, "", extra);
    let script = r#"
import ftplib, sys, time
port = int(sys.argv[1])
def attempt(password):
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    try:
        ftp.login("alice", password)
        ftp.quit()
        return "ok"
    except ftplib.error_perm as e:
        return str(e)[:3]
for i in range(3):
    # The ban starts when the third failure is counted, during its 1 s failed-login
    # delay (before the 530 arrives): time it from the start of that attempt.
    banned_at = time.monotonic()
    got = attempt("wrong")
    assert got == "530", (i, got)
try:
    ftplib.FTP().connect("127.0.0.1", port, timeout=30)
    raise SystemExit("a banned address was let in")
except ftplib.error_temp as e:
    assert str(e).startswith("421"), str(e)
# The ban lifts after its 2 s: poll (bounded) until a login works.
deadline = banned_at + 60
while True:
    try:
        if attempt("s3cret") == "ok":
            break
    except ftplib.error_temp:
        pass
    assert time.monotonic() < deadline, "the ban never lifted"
    time.sleep(0.1)
waited = time.monotonic() - banned_at
assert waited >= 1.9, waited
print("ok %.1f" % waited)
"#;
    let out = python(script, &[&f.port.to_string()]);
    assert!(out.starts_with("ok "), "{out}");
    f.stop();
}

fn failed_logins_take_the_same_time_for_known_and_unknown_users(rt) {
    // The default failed_login_delay (1 s), measured from PASS to 530 on a raw
    // connection, for a known user with a wrong password and for a user that does not
    // exist; a NOOP sent right behind the PASS is answered only after the 530.
    let f = Fixture::start(rt);
    let script = r#"
import socket, sys, time
port = int(sys.argv[1])
def refusal(user):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    r = s.makefile("rb")
    assert r.readline().startswith(b"220"), "greeting"
    s.sendall(b"USER " + user + b"\r\n")
    assert r.readline().startswith(b"331")
    start = time.monotonic()
    s.sendall(b"PASS wrong\r\nNOOP\r\n")
    first = r.readline()
    took = time.monotonic() - start
    second = r.readline()
    s.close()
    assert first.startswith(b"530 "), first
    assert second.startswith(b"200 "), second
    return took
for user in [b"alice", b"nobody", b"alice", b"nobody"]:
    took = refusal(user)
    assert 1.0 <= took < 10, (user, took)
print("ok")
"#;
    assert_eq!(python(script, &[&f.port.to_string()]), "ok\n");
    f.stop();
}

fn exe_uploads_and_downloads_are_refused(rt) {
    let f = Fixture::with_config(rt, "", FILTERING);
    std::fs::write(f.root.join("tool.exe"), b"MZ").unwrap();
    let src = f.scratch().join("setup.exe");
    std::fs::write(&src, b"MZ payload").unwrap();
    for name in ["setup.exe", "SETUP.EXE", "setup.exe."] {
        let out = curl_output(&["-u", "alice:s3cret", "-T", src.to_str().unwrap(), &f.url(name)]);
        assert!(!out.status.success(), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("550"), "{name}: {out:?}");
    }
    let out = curl_output(&["-u", "alice:s3cret", &f.url("tool.exe")]);
    assert!(!out.status.success());
    let listing: Vec<_> = std::fs::read_dir(&f.root).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(!listing.iter().any(|n| n.to_string_lossy().to_lowercase().starts_with("setup")), "{listing:?}");
    // Other uploads go through.
    let ok = f.scratch().join("notes.txt");
    std::fs::write(&ok, b"fine").unwrap();
    curl(&["-u", "alice:s3cret", "-T", ok.to_str().unwrap(), &f.url("notes.txt")]);
    assert_eq!(std::fs::read(f.root.join("notes.txt")).unwrap(), b"fine");
    f.assert_no_temp_files();
    f.stop();
}

fn an_upload_over_the_size_limit_is_cut_and_nothing_is_left(rt) {
    let f = Fixture::with_config(rt, "", FILTERING);
    let big = f.scratch().join("big.bin");
    std::fs::write(&big, pattern(3 * 1024 * 1024)).unwrap();
    let out = curl_output(&["-u", "alice:s3cret", "-T", big.to_str().unwrap(), &f.url("big-up.bin")]);
    assert!(!out.status.success(), "{out:?}");
    let script = r#"
import ftplib, sys
port = int(sys.argv[1])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("alice", "s3cret")
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("STOR over.bin")
try:
    chunk = bytes(range(256)) * 256
    for _ in range(48):  # 3 MiB
        conn.sendall(chunk)
except OSError:
    pass  # the server cut the data connection at the limit
conn.close()
try:
    ftp.voidresp()
    raise SystemExit("an upload over the limit was accepted")
except ftplib.error_perm as e:
    assert str(e).startswith("552"), str(e)
# Exactly the limit is fine, and the session goes on.
import io
ftp.storbinary("STOR exact.bin", io.BytesIO(b"x" * 1048576))
assert ftp.size("exact.bin") == 1048576
# APPE writes in place: refused past the limit, and not one byte past it is written.
def refused(e):
    assert str(e).startswith("552"), str(e)
try:
    ftp.storbinary("APPE hello.txt", io.BytesIO(bytes(range(256)) * 8192))  # 2 MiB
    raise SystemExit("an append over the limit was accepted")
except ftplib.error_perm as e:
    refused(e)
except OSError:
    try:  # the server cut the data connection: its reply follows
        ftp.voidresp()
        raise SystemExit("an append over the limit was accepted")
    except ftplib.error_perm as e:
        refused(e)
ftp.quit()
print("ok")
"#;
    python(script, &[&f.port.to_string()]);
    let appended = std::fs::read(f.root.join("hello.txt")).unwrap();
    let mut want = b"hello, world\n".to_vec();
    want.extend(std::iter::repeat_n(0..=255u8, 4096).flatten());
    assert_eq!(appended.len(), want.len(), "exactly the limit was appended");
    assert!(appended == want);
    assert!(!f.root.join("big-up.bin").exists());
    assert!(!f.root.join("over.bin").exists());
    assert_eq!(std::fs::metadata(f.root.join("exact.bin")).unwrap().len(), 1 << 20);
    f.assert_no_temp_files();
    f.stop();
}

fn rename_onto_an_existing_file_is_refused(rt) {
    let f = Fixture::start(rt);
    let script = r#"
import ftplib, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
ftp.login("alice", "s3cret")
try:
    ftp.rename("hello.txt", "docs/readme.txt")
    raise SystemExit("replaced")
except ftplib.error_perm as e:
    assert str(e).startswith("553"), str(e)
ftp.rename("hello.txt", "docs/hello.txt")
ftp.quit()
"#;
    python(script, &[&f.port.to_string()]);
    assert_eq!(std::fs::read(f.root.join("docs/readme.txt")).unwrap(), b"line one\nline two\n");
    assert!(f.root.join("docs/hello.txt").exists());
    f.stop();
}

fn connections_per_address_are_limited(rt) {
    let extra = "[limits]\nmax_connections_per_ip = 2\nmax_clients_message = \"Full house.\"\n";
    let f = Fixture::with_config(rt, "", extra);
    let script = r#"
import ftplib, sys, time
port = int(sys.argv[1])
def connect():
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    return ftp
a, b = connect(), connect()
try:
    connect()
    raise SystemExit("a third connection was let in")
except ftplib.error_temp as e:
    assert str(e) == "421 Full house.", str(e)
a.quit()
deadline = time.monotonic() + 30
while True:  # the server releases the slot once it has closed a's connection
    try:
        c = connect()
        break
    except ftplib.error_temp:
        assert time.monotonic() < deadline
        time.sleep(0.05)
c.login("alice", "s3cret")
b.login("alice", "s3cret")
print("ok")
"#;
    python(script, &[&f.port.to_string()]);
    f.stop();
}

fn connections_per_site_are_limited_when_the_site_is_chosen(rt) {
    // `one` answers 127.0.0.1 without a host name and takes one connection; `two`
    // (HOST two.example) takes one more. Two shards: the counts are process-wide.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("one");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(tmp.path().join("two")).unwrap();
    let text = format!(
        "[server]\npassive_ports = \"0-0\"\nshards = 2\nruntime = \"{rt}\"\n\
         [[sites]]\nname = \"one\"\nroot = {one:?}\nanonymous = true\nmax_connections = 1\n\
         bindings = [\"127.0.0.1:0:\"]\nmessages.max_clients = \"One is full.\"\n\
         [[sites]]\nname = \"two\"\nroot = {two:?}\nanonymous = true\nmax_connections = 1\n\
         bindings = [\"127.0.0.1:0:two.example\"]\nmessages.max_clients = \"Two is full.\"\n",
        one = root.display().to_string(),
        two = tmp.path().join("two").display().to_string(),
    );
    let f = Fixture::from_toml(rt, tmp, root, &text);
    let script = r#"
import ftplib, sys, time
port = int(sys.argv[1])
def connect():
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    return ftp
def refused(f, message):
    try:
        f()
    except ftplib.error_temp as e:
        assert str(e) == "421 " + message, str(e)
        return
    raise SystemExit("not refused: " + message)
def retry(f):
    deadline = time.monotonic() + 30
    while True:  # a place is free once the server has closed the connection that held it
        try:
            return f()
        except ftplib.error_temp:
            assert time.monotonic() < deadline, "the place was never released"
            time.sleep(0.05)
a = connect()
refused(connect, "One is full.")
a.sendcmd("HOST two.example")          # a leaves one for two
b = retry(connect)                     # so one admits b
refused(lambda: b.sendcmd("HOST two.example"), "Two is full.")
a.quit()                               # two is free once the server has closed a
def log_in_to_two():
    c = connect()                      # one's place: free once b is closed
    c.login("two.example|anonymous", "me@example.com")
    return c
c = retry(log_in_to_two)
print(c.sendcmd("STAT").splitlines()[0])
c.quit()
print("ok")
"#;
    let out = python(script, &[&f.port.to_string()]);
    assert!(out.starts_with("211-two") && out.ends_with("ok\n"), "{out}");
    f.stop();
}

fn bandwidth_limit_paces_downloads(rt) {
    let extra = "[limits]\nbandwidth = 262144\n";
    let f = Fixture::with_config(rt, "", extra);
    let body = random_bytes(640 * 1024, 7);
    std::fs::write(f.root.join("paced.bin"), &body).unwrap();
    let started = Instant::now();
    let got = curl(&["-u", "alice:s3cret", &f.url("paced.bin")]);
    let took = started.elapsed();
    assert_eq!(got, body);
    // 640 KiB at 256 KiB/s, less the initial burst (64 KiB): at least 2.25 s.
    assert!(took.as_secs_f64() >= 2.0, "took {took:?}");
    // Uploads are paced too.
    let src = f.scratch().join("up.bin");
    std::fs::write(&src, &body).unwrap();
    let started = Instant::now();
    curl(&["-u", "alice:s3cret", "-T", src.to_str().unwrap(), &f.url("up.bin")]);
    assert!(started.elapsed().as_secs_f64() >= 2.0);
    assert_eq!(std::fs::read(f.root.join("up.bin")).unwrap(), body);
    f.stop();
}

fn w3c_log_reads_back_with_status_and_substatus(rt) {
    let logs = tempfile::tempdir().unwrap();
    let extra = format!(
        "{FILTERING}\n[site.ip_security]\nallow_unlisted = false\nallow = [\"127.0.0.1\"]\n\
         [site.logging]\ndirectory = {:?}\n",
        logs.path().display().to_string()
    );
    let f = Fixture::with_config(rt, "", &extra);
    private_folder(&f);
    curl(&["-u", "alice:s3cret", &f.url("hello.txt")]);
    python(FROM_127_0_0_2, &[&f.port.to_string()]);
    let script = r#"
import ftplib, io, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
ftp.login("alice", "s3cret")
for cmd in ["RETR _private/private.txt", "RETR tool.exe"]:
    try:
        ftp.retrbinary(cmd, lambda b: None)
    except ftplib.error_perm:
        pass
try:
    ftp.sendcmd("SITE CHMOD 777 hello.txt")
except ftplib.error_perm:
    pass
ftp.storbinary("STOR odd name+50%\u2028.txt", io.BytesIO(b"odd"))
conn = ftp.transfercmd("STOR over.bin")
try:
    for _ in range(24):
        conn.sendall(b"z" * 131072)
except OSError:
    pass
conn.close()
try:
    ftp.voidresp()
except ftplib.error_perm:
    pass
ftp.close()
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
try:
    ftp.login("alice", "wrong")
except ftplib.error_perm:
    pass
ftp.close()
"#;
    python(script, &[&f.port.to_string()]);
    f.stop(); // the writer has written everything once the server has stopped
    let rows = read_w3c(logs.path());
    let get = |method: &str, uri: &str| {
        let found = find(&rows, method, uri);
        assert_eq!(found.len(), 1, "{method} {uri}: {rows:#?}");
        found[0].clone()
    };
    let ok = get("RETR", "/hello.txt");
    assert_eq!((ok["sc-status"].as_str(), ok["sc-substatus"].as_str()), ("226", "0"));
    assert_eq!(ok["cs-username"], "alice");
    assert_eq!(ok["c-ip"], "127.0.0.1");
    assert_eq!(ok["s-sitename"], "default");
    assert!(ok["sc-bytes"].parse::<u64>().unwrap() >= 13);
    let hidden = get("RETR", "/_private/private.txt");
    assert_eq!((hidden["sc-status"].as_str(), hidden["sc-substatus"].as_str()), ("550", "8"));
    assert_eq!(hidden["x-debug"], "hidden-segment");
    assert_eq!(hidden["x-fullpath"], "/_private/private.txt");
    let exe = get("RETR", "/tool.exe");
    assert_eq!((exe["sc-status"].as_str(), exe["sc-substatus"].as_str()), ("550", "11"));
    let site = get("SITE", "CHMOD 777 hello.txt");
    assert_eq!((site["sc-status"].as_str(), site["sc-substatus"].as_str()), ("502", "51"));
    let over = get("STOR", "/over.bin");
    assert_eq!((over["sc-status"].as_str(), over["sc-substatus"].as_str()), ("552", "13"));
    let odd = get("STOR", "/odd name+50%\u{2028}.txt");
    assert_eq!(odd["sc-status"], "226");
    let refused: Vec<_> = rows.iter().filter(|r| r["c-ip"] == "127.0.0.2").collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["cs-method"], "ControlChannelOpened");
    assert_eq!((refused[0]["sc-status"].as_str(), refused[0]["sc-substatus"].as_str()), ("421", "30"));
    let passes: Vec<_> = rows.iter().filter(|r| r["cs-method"] == "PASS").collect();
    assert!(passes.iter().all(|r| r["cs-uri-stem"] == "***"), "passwords are never logged");
    assert!(passes.iter().any(|r| r["sc-status"] == "530" && r["sc-substatus"] == "40" && r["sc-win32-status"] == "1326"));
    let closed: Vec<_> = rows.iter().filter(|r| r["cs-method"] == "ControlChannelClosed").collect();
    assert!(closed.len() >= 3, "{closed:?}");
    assert!(closed.iter().all(|r| r["sc-substatus"] == "0"), "{closed:?}");
    for r in &rows {
        assert!(r["x-session"].parse::<u64>().is_ok());
    }
}

}
