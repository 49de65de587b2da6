//! Sites on object storage (issue 18): the real server with an `s3://` root over a real
//! three-node Garage cluster on loopback ([`wharf_tests::garage`]), driven by curl, Python's
//! ftplib and lftp, on every runtime.

use std::time::{Duration, Instant};

use wharf_tests::garage::Garage;
use wharf_tests::harness::*;

/// A server whose site is `s3://wharf/<prefix>` on node `node` of `g`; `s3_extra` goes
/// into the `[site.s3]` table.
fn serve(rt: &'static str, g: &Garage, node: usize, prefix: &str, s3_extra: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 2\npassive_ports = \"0-0\"\n\
         runtime = \"{rt}\"\n\
         [site]\nroot = \"s3://{bucket}/{prefix}\"\n\
         [site.s3]\n{table}\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n",
        bucket = g.bucket,
        table = g.site_table(node, s3_extra),
        hash = password_hash()
    );
    Fixture::from_toml(rt, tmp, root, &text)
}

fn user() -> [&'static str; 2] {
    ["-u", "alice:s3cret"]
}

const FTPLIB_SCRIPT: &str = r#"
import ftplib, io, sys
port = int(sys.argv[1])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=60)
ftp.login("alice", "s3cret")

def refused(code, f, *args):
    try:
        f(*args)
    except ftplib.error_perm as e:
        assert str(e).startswith(code), (code, str(e))
        return str(e)
    raise SystemExit("not refused: %r %r" % (f, args))

ftp.mkd("dir")
refused("550", ftp.mkd, "dir")
ftp.cwd("dir")
assert ftp.pwd() == "/dir", ftp.pwd()
body = bytes((i * 13 % 253) for i in range(300000))
ftp.storbinary("STOR data.bin", io.BytesIO(body))
assert ftp.size("data.bin") == len(body)
mdtm = ftp.sendcmd("MDTM data.bin")
assert mdtm.startswith("213 2"), mdtm
buf = io.BytesIO()
ftp.retrbinary("RETR data.bin", buf.write)
assert buf.getvalue() == body, "data.bin differs"
buf = io.BytesIO()
ftp.retrbinary("RETR data.bin", buf.write, rest=123457)
assert buf.getvalue() == body[123457:], "REST download differs"
facts = dict((n, f) for n, f in ftp.mlsd())
assert facts["data.bin"]["type"] == "file" and facts["data.bin"]["size"] == str(len(body)), facts
# Names that differ only in case are two objects, as on disk.
ftp.storbinary("STOR Case.txt", io.BytesIO(b"upper"))
ftp.storbinary("STOR case.txt", io.BytesIO(b"lower"))
got = []
ftp.retrbinary("RETR Case.txt", got.append)
assert b"".join(got) == b"upper", got
# APPE and REST+STOR are refused with the reason.
why = refused("550", ftp.storbinary, "APPE data.bin", io.BytesIO(b"more"))
assert "append" in why, why
refused("550", ftp.storbinary, "STOR data.bin", io.BytesIO(b"more"), 8192, None, 10)
# Confined: .. never leaves the site's prefix.
ftp.cwd("/")
ftp.cwd("../../..")
assert ftp.pwd() == "/", ftp.pwd()
refused("550", ftp.size, "../../outside.bin")
refused("553", ftp.storbinary, "STOR " + "n" * 1025, io.BytesIO(b"long"))
# Rename (copy + delete), delete, directories.
ftp.rename("dir/data.bin", "moved.bin")
assert ftp.size("moved.bin") == len(body)
refused("550", ftp.size, "dir/data.bin")
refused("550", ftp.rmd, "dir")
ftp.delete("dir/Case.txt")
ftp.delete("dir/case.txt")
ftp.rmd("dir")
refused("550", ftp.cwd, "dir")
refused("550", ftp.delete, "dir")
# Leading slashes, doubled slashes and .. are resolved inside the site, as on disk.
ftp.storbinary("STOR /top.bin", io.BytesIO(b"top"))
ftp.storbinary("STOR x//..//../../top2.bin", io.BytesIO(b"top2"))
refused("550", ftp.storbinary, "STOR //nodir//f.bin", io.BytesIO(b"f"))
try:
    ftp.sendcmd("SIZE a\0b")
    raise SystemExit("a NUL in a name was accepted")
except (ftplib.error_perm, ftplib.error_temp):
    pass
names = sorted(ftp.nlst())
assert names == ["moved.bin", "top.bin", "top2.bin"], (names, list(ftp.mlsd()))
for n in names:
    ftp.delete(n)
assert ftp.nlst() == [], ftp.nlst()
ftp.quit()
print("ok")
"#;

wharf_tests::per_runtime! {
fn curl_and_ftplib_on_a_bucket(rt) {
    let g = Garage::start();
    // Small parts: the 13 MiB upload below is a multipart upload of three parts.
    let f = serve(rt, &g, 0, "site", "part_size_mib = 5");
    let out = python(FTPLIB_SCRIPT, &[&f.port.to_string()]);
    assert!(out.contains("ok"), "{out}");
    // What the script left behind and removed never reached outside the prefix.
    let keys = g.keys(1);
    assert!(keys.is_empty(), "{keys:?}");

    let tmp = tempfile::tempdir().unwrap();
    let (small, big) = (tmp.path().join("small.txt"), tmp.path().join("big.bin"));
    std::fs::write(&small, b"hello, bucket\n").unwrap();
    let body = random_bytes(13 * 1024 * 1024 + 7, 18);
    std::fs::write(&big, &body).unwrap();
    let [u, p] = user();
    curl(&[u, p, "--ftp-create-dirs", "-T", small.to_str().unwrap(), &f.url("a/b/small.txt")]);
    curl(&[u, p, "-T", big.to_str().unwrap(), &f.url("big.bin")]);
    let listing = String::from_utf8(curl(&[u, p, &f.url("")])).unwrap();
    assert!(listing.contains("big.bin"), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with('d') && l.trim_end().ends_with(" a")), "{listing}");
    assert_eq!(curl(&[u, p, &f.url("a/b/small.txt")]), b"hello, bucket\n");
    assert_eq!(curl(&[u, p, &f.url("big.bin")]), body);
    // REST + RETR: a ranged GET.
    assert_eq!(curl(&[u, p, "-C", "9000001", &f.url("big.bin")]), body[9_000_001..]);
    // SIZE and MDTM through curl's -I.
    let head = String::from_utf8(curl(&[u, p, "-I", &f.url("big.bin")])).unwrap();
    assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
    assert!(head.contains("Last-Modified:"), "{head}");
    let keys = g.keys(2);
    assert_eq!(keys, ["site/a/", "site/a/b/", "site/a/b/small.txt", "site/big.bin"]);
    assert!(g.pending_uploads(2).is_empty());
    f.stop();
}
}

/// Writes a tree of 200 files (10 directories, sizes from 0 to 200 KiB, a few of 6 MiB)
/// under `dir`.
fn make_tree(dir: &std::path::Path) {
    for i in 0..200usize {
        let sub = dir.join(format!("d{:02}", i % 10));
        std::fs::create_dir_all(&sub).unwrap();
        let size = match i % 50 {
            0 => 6 * 1024 * 1024 + i,
            _ => (i * 7919) % (200 * 1024),
        };
        std::fs::write(
            sub.join(format!("f{i:03}.bin")),
            random_bytes(size, i as u64),
        )
        .unwrap();
    }
}

/// `sha256sum` of every file below `dir`, by relative path, sorted.
fn sums(dir: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("find . -type f -print0 | sort -z | xargs -0 sha256sum")
        .current_dir(dir)
        .output()
        .expect("sha256sum runs");
    assert_ok("sha256sum", &out);
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `f` for up to 30 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Uploads `size` bytes to STOR `name` and kills itself (its connection reset, as a
/// crashed client's) once `cut` bytes are sent.
const KILLED_UPLOAD: &str = r#"
import ftplib, os, socket, struct, sys
port, name, cut = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=60)
ftp.login("alice", "s3cret")
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("STOR " + name)
conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
chunk = b"x" * 65536
sent = 0
while sent < cut:
    conn.sendall(chunk)
    sent += len(chunk)
print("sent", sent, flush=True)
sys.stdin.readline()
os._exit(0)
"#;

/// Runs [`KILLED_UPLOAD`] until it has sent `cut` bytes; `before_kill` runs while the
/// client still holds its connection, then the client dies (its connection reset).
fn killed_upload(port: u16, name: &str, cut: usize, before_kill: impl FnOnce()) {
    use std::io::{BufRead, Write};
    let mut child = std::process::Command::new("timeout")
        .args([
            "120",
            "python3",
            "-c",
            KILLED_UPLOAD,
            &port.to_string(),
            name,
        ])
        .arg(cut.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut killer = KillOnDrop(child);
    assert!(
        line.starts_with("sent"),
        "the client did not send: {line:?}"
    );
    before_kill();
    let _ = killer.0.stdin.take().unwrap().write_all(b"die\n");
    let status = killer.0.wait().unwrap();
    assert!(status.success(), "the client: {status}");
}

/// Kills a client by its PID if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The store refuses the server's credentials: a clear failure reply, no hang.
const BAD_KEYS: &str = r#"
import ftplib, io, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=60)
ftp.login("alice", "s3cret")
for f, args in ((ftp.nlst, ()), (ftp.size, ("x",)), (ftp.storbinary, ("STOR y", io.BytesIO(b"y")))):
    try:
        f(*args)
        raise SystemExit("worked with bad keys: %r" % (f,))
    except ftplib.error_temp as e:
        assert str(e).startswith("451"), str(e)
ftp.quit()
print("ok")
"#;

/// ABOR during a multipart upload: 12 MiB are sent, then the client waits for a line
/// on stdin (the test has seen the upload pending) and aborts.
const ABORTED_UPLOAD: &str = r#"
import ftplib, sys
port = int(sys.argv[1])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=60)
ftp.login("alice", "s3cret")
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("STOR aborted.bin")
chunk = b"y" * 65536
for _ in range(12 * 16):
    conn.sendall(chunk)
print("sent", flush=True)
sys.stdin.readline()
resp = ftp.abort()
conn.close()
assert resp[:3] in ("426", "225", "226"), resp
ftp.quit()
print("ok")
"#;

/// With every node down: commands fail with 451 after the retries, while another
/// session on the same server is answered meanwhile (no event loop waits on the store).
const STORE_DOWN: &str = r#"
import ftplib, sys, threading
port = int(sys.argv[1])
def login():
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=120)
    f.login("alice", "s3cret")
    return f
slow, quick = login(), login()
result = []
def listing():
    try:
        slow.nlst()
        result.append("listed")
    except ftplib.error_temp as e:
        result.append(str(e))
t = threading.Thread(target=listing)
t.start()
for _ in range(20):
    quick.voidcmd("NOOP")
    assert quick.pwd() == "/"
answered_while_waiting = t.is_alive()
t.join(120)
assert result and result[0].startswith("451"), result
assert answered_while_waiting, "the other session waited for the store"
print("ok")
"#;

wharf_tests::per_runtime! {
fn lftp_mirrors_a_tree_both_ways(rt) {
    let g = Garage::start();
    let f = serve(rt, &g, 0, "mirror", "part_size_mib = 5");
    let tmp = tempfile::tempdir().unwrap();
    let (src, back) = (tmp.path().join("src"), tmp.path().join("back"));
    make_tree(&src);
    let open = format!("open -u alice,s3cret ftp://127.0.0.1:{}", f.port);
    let out = lftp(&format!(
        "set mirror:parallel-transfer-count 4; {open}; mirror -R --no-perms {} /tree",
        src.display()
    ));
    assert_ok("lftp mirror -R", &out);
    let out = lftp(&format!(
        "set mirror:parallel-transfer-count 4; {open}; mirror /tree {}",
        back.display()
    ));
    assert_ok("lftp mirror", &out);
    assert_eq!(sums(&src), sums(&back));
    // Every object is below the site's prefix, one per file.
    let keys = g.keys(1);
    let files: Vec<_> = keys.iter().filter(|k| !k.ends_with('/')).collect();
    assert_eq!(files.len(), 200, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("mirror/tree/")), "{keys:?}");
    assert!(g.pending_uploads(2).is_empty());
    f.stop();
}

fn killed_uploads_leave_nothing_and_bad_keys_fail_clearly(rt) {
    let g = Garage::start();
    let f = serve(rt, &g, 0, "kill", "part_size_mib = 5");
    // 12 MiB sent: a multipart upload is under way when the client dies.
    killed_upload(f.port, "killed.bin", 12 << 20, || {
        eventually("a multipart upload begins", || !g.pending_uploads(1).is_empty());
    });
    eventually("the aborted upload is cleaned up", || g.pending_uploads(1).is_empty());
    assert!(!g.keys(1).iter().any(|k| k.contains("killed")), "{:?}", g.keys(1));
    f.stop();

    let wrong = format!("{}0", &g.secret[..g.secret.len() - 1]);
    let table = g.site_table(0, "").replace(&g.secret, &wrong);
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 2\npassive_ports = \"0-0\"\n\
         runtime = \"{rt}\"\n[site]\nroot = \"s3://{}/bad\"\n[site.s3]\n{table}\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n",
        g.bucket,
        password_hash()
    );
    let bad = Fixture::from_toml(rt, tmp, std::path::PathBuf::new(), &text);
    let out = python(BAD_KEYS, &[&bad.port.to_string()]);
    assert!(out.contains("ok"), "{out}");
    bad.stop();
}

fn transfers_go_on_when_a_node_stops(rt) {
    let mut g = Garage::start();
    let f = serve(rt, &g, 0, "ha", "part_size_mib = 5");
    let tmp = tempfile::tempdir().unwrap();
    let body = random_bytes(24 << 20, 7);
    let src = tmp.path().join("src.bin");
    std::fs::write(&src, &body).unwrap();
    let [u, p] = user();
    curl(&[u, p, "-T", src.to_str().unwrap(), &f.url("first.bin")]);
    // A slow download and a slow upload are running when node 2 dies.
    let got = tmp.path().join("got.bin");
    let url = f.url("first.bin");
    let (got2, url2) = (got.clone(), url.clone());
    let down = std::thread::spawn(move || {
        curl(&[u, p, "--limit-rate", "6M", "-o", got2.to_str().unwrap(), &url2])
    });
    let (src2, up_url) = (src.clone(), f.url("second.bin"));
    let up = std::thread::spawn(move || {
        curl(&[u, p, "--limit-rate", "6M", "-T", src2.to_str().unwrap(), &up_url])
    });
    eventually("the download is under way", || {
        std::fs::metadata(&got).is_ok_and(|m| m.len() > 2 << 20)
    });
    g.stop_node(2);
    down.join().unwrap();
    up.join().unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), body);
    assert_eq!(curl(&[u, p, &f.url("second.bin")]), body);
    let listing = String::from_utf8(curl(&[u, p, "-l", &f.url("")])).unwrap();
    assert_eq!(listing.lines().collect::<Vec<_>>(), ["first.bin", "second.bin"]);
    f.stop();
}

fn listings_page_through_thousands_of_keys(rt) {
    let g = Garage::start();
    // 2,100 objects (three pages of the store's 1,000) put straight into the bucket,
    // and one key no FTP name can reach.
    let g = std::sync::Arc::new(g);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let g = g.clone();
            std::thread::spawn(move || {
                for i in (w..2100).step_by(4) {
                    g.put(i % 3, &format!("many/big/f{i:05}.txt"), format!("{i}").as_bytes());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    g.put(0, "many/big//hidden.txt", b"unreachable");
    let f = serve(rt, &g, 0, "many", "");
    let [u, p] = user();
    let names = String::from_utf8(curl(&[u, p, "-l", &f.url("big/")])).unwrap();
    let names: Vec<&str> = names.lines().collect();
    let expected: Vec<String> = (0..2100).map(|i| format!("f{i:05}.txt")).collect();
    assert_eq!(names.len(), 2100, "{:?}", &names[..names.len().min(5)]);
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, expected);
    let long = String::from_utf8(curl(&[u, p, &f.url("big/")])).unwrap();
    assert_eq!(long.lines().count(), 2100);
    assert_eq!(curl(&[u, p, &f.url("big/f02099.txt")]), b"2099");
    f.stop();
}
}

/// `sha256sum` of one file.
fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert_ok("sha256sum", &out);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// 1 GiB up and down, byte-exact (one runtime: the path is the same on both, and the
/// other tests run every runtime).
#[test]
fn one_gib_up_and_down() {
    use std::io::Write;
    let g = Garage::start();
    let f = serve("mio", &g, 0, "huge", "");
    let tmp = tempfile::tempdir().unwrap();
    let (src, got) = (tmp.path().join("src.bin"), tmp.path().join("got.bin"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
    for chunk in 0..16 {
        out.write_all(&random_bytes(64 << 20, 100 + chunk)).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let [u, p] = user();
    let max = ["--max-time", "600"];
    curl(&[
        u,
        p,
        max[0],
        max[1],
        "-T",
        src.to_str().unwrap(),
        &f.url("huge.bin"),
    ]);
    curl(&[
        u,
        p,
        max[0],
        max[1],
        "-o",
        got.to_str().unwrap(),
        &f.url("huge.bin"),
    ]);
    assert_eq!(std::fs::metadata(&got).unwrap().len(), 1 << 30);
    assert_eq!(sha256(&src), sha256(&got));
    assert!(g.pending_uploads(1).is_empty());
    f.stop();
}

wharf_tests::per_runtime! {
fn abor_cleans_up_and_a_store_that_is_down_fails_commands_not_the_server(rt) {
    use std::io::{BufRead, Write};
    let mut g = Garage::start();
    let f = serve(rt, &g, 0, "abor", "part_size_mib = 5");
    let mut child = std::process::Command::new("timeout")
        .args(["120", "python3", "-c", ABORTED_UPLOAD, &f.port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut client = KillOnDrop(child);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("sent"), "{line:?}");
    eventually("a multipart upload begins", || !g.pending_uploads(1).is_empty());
    client.0.stdin.take().unwrap().write_all(b"abort\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(client.0.wait().unwrap().success(), "{line}");
    assert_eq!(line.trim(), "ok");
    eventually("the aborted upload is cleaned up", || g.pending_uploads(1).is_empty());
    assert!(!g.keys(1).iter().any(|k| k.contains("aborted")), "{:?}", g.keys(1));

    for i in 0..3 {
        g.stop_node(i);
    }
    let out = python(STORE_DOWN, &[&f.port.to_string()]);
    assert!(out.contains("ok"), "{out}");
    f.stop();
}
}
