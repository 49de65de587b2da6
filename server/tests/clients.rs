//! End to end: the real server (config, LocalFs, users, mio runtime) on loopback port 0,
//! driven by clients nobody here wrote: curl and Python's ftplib.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use wharf_server::{RunningServer, ServerConfig};

fn password_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| wharf_server::hash_password("s3cret").unwrap())
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    server: Option<RunningServer>,
    port: u16,
}

impl Fixture {
    /// A site with `hello.txt`, a 3 MiB `big.bin` and `docs/readme.txt`, users alice
    /// (write) and anonymous (read-only).
    fn start() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("hello.txt"), b"hello, world\n").unwrap();
        std::fs::write(root.join("big.bin"), pattern(3 * 1024 * 1024 + 17)).unwrap();
        std::fs::write(root.join("docs/readme.txt"), b"line one\nline two\n").unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 2\npassive_ports = \"0-0\"\n\
             [site]\nroot = {:?}\nanonymous = true\n\
             [[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n",
            root.display().to_string(),
            password_hash()
        );
        let config = ServerConfig::from_toml_str(&text, "test.toml").unwrap();
        let server = wharf_server::start(&config).unwrap();
        let port = server.local_addrs()[0].port();
        Fixture {
            _tmp: tmp,
            root,
            server: Some(server),
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://127.0.0.1:{}/{path}", self.port)
    }

    fn stop(mut self) {
        let s = self.server.take().unwrap();
        s.shutdown(Duration::from_secs(5));
        s.wait().unwrap();
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

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Runs curl with a time limit; returns stdout, failing the test on a non-zero exit.
fn curl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl must be installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn curl_lists_downloads_and_uploads() {
    let f = Fixture::start();
    let listing = String::from_utf8(curl(&["-u", "alice:s3cret", &f.url("")])).unwrap();
    for name in ["hello.txt", "big.bin", "docs"] {
        assert!(listing.contains(name), "{listing}");
    }
    assert_eq!(
        curl(&["-u", "alice:s3cret", &f.url("hello.txt")]),
        b"hello, world\n"
    );
    let big = curl(&["-u", "alice:s3cret", &f.url("big.bin")]);
    assert_eq!(big, std::fs::read(f.root.join("big.bin")).unwrap());
    // REST + RETR (sendfile starts at the file's offset).
    let tail = curl(&["-u", "alice:s3cret", "-C", "1000000", &f.url("big.bin")]);
    assert_eq!(tail, big[1_000_000..]);

    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("up.bin");
    let body = pattern(2 * 1024 * 1024 + 5);
    std::fs::write(&src, &body).unwrap();
    curl(&[
        "-u",
        "alice:s3cret",
        "-T",
        src.to_str().unwrap(),
        &f.url("up.bin"),
    ]);
    assert_eq!(std::fs::read(f.root.join("up.bin")).unwrap(), body);
    no_temp_files(&f.root);
    f.stop();
}

#[test]
fn curl_active_mode_and_anonymous() {
    let f = Fixture::start();
    // -P makes curl listen and the server connect (EPRT/PORT).
    let got = curl(&["-P", "127.0.0.1", &f.url("docs/readme.txt")]);
    assert_eq!(got, b"line one\nline two\n");
    let listing = String::from_utf8(curl(&["-P", "127.0.0.1", &f.url("")])).unwrap();
    assert!(listing.contains("hello.txt"), "{listing}");
    // Anonymous is read-only: an upload must fail and leave nothing behind.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("x");
    std::fs::write(&src, b"nope").unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            "-T",
            src.to_str().unwrap(),
            &f.url("x"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!f.root.join("x").exists());
    f.stop();
}

#[test]
fn curl_wrong_password_is_refused() {
    let f = Fixture::start();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-u", "alice:wrong", &f.url("")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    f.stop();
}

fn no_temp_files(root: &Path) {
    for e in std::fs::read_dir(root).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.starts_with(".wharf-part-"), "leftover {name}");
    }
}

const FTPLIB_SCRIPT: &str = r#"
import ftplib, io, sys
port = int(sys.argv[1])
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("alice", "s3cret")
assert ftp.pwd() == "/", ftp.pwd()
names = ftp.nlst()
assert "hello.txt" in names and "big.bin" in names, names
assert ftp.size("big.bin") == 3 * 1024 * 1024 + 17
buf = io.BytesIO()
ftp.retrbinary("RETR big.bin", buf.write)
expected = bytes((i * 7 % 251) for i in range(3 * 1024 * 1024 + 17))
assert buf.getvalue() == expected, "big.bin differs"
ftp.mkd("new")
ftp.cwd("new")
ftp.storbinary("STOR data.bin", io.BytesIO(b"\x00\x01\x02" * 100000))
ftp.cwd("..")
ftp.rename("new/data.bin", "moved.bin")
lines = []
ftp.retrlines("RETR docs/readme.txt", lines.append)
assert lines == ["line one", "line two"], lines
ftp.storlines("STOR text.txt", io.BytesIO(b"a\nb\n"))
listing = []
ftp.retrlines("LIST", listing.append)
assert any("moved.bin" in l for l in listing), listing
try:
    ftp.retrbinary("RETR ../../etc/hostname", lambda b: None)
    raise SystemExit("escaped the root")
except ftplib.error_perm:
    pass
ftp.delete("hello.txt")
ftp.rmd("new")
ftp.quit()
print("ok")
"#;

#[test]
fn python_ftplib_session() {
    let f = Fixture::start();
    let out = Command::new("python3")
        .args(["-c", FTPLIB_SCRIPT, &f.port.to_string()])
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "ftplib: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(f.root.join("moved.bin")).unwrap(),
        b"\x00\x01\x02".repeat(100000)
    );
    assert_eq!(std::fs::read(f.root.join("text.txt")).unwrap(), b"a\nb\n");
    assert!(!f.root.join("hello.txt").exists());
    assert!(!f.root.join("new").exists());
    no_temp_files(&f.root);
    f.stop();
}

#[test]
fn lftp_mirrors_both_ways() {
    let f = Fixture::start();
    let tmp = tempfile::tempdir().unwrap();
    let down = tmp.path().join("down");
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    std::fs::write(src.join("one.txt"), b"one\n").unwrap();
    std::fs::write(src.join("nested/two.bin"), pattern(700_000)).unwrap();
    let script = format!(
        "set net:max-retries 1; set net:timeout 20; set cmd:fail-exit yes; \
         open -u alice,s3cret ftp://127.0.0.1:{port}; \
         mirror / {down}; mirror -R {src} /uploaded; quit",
        port = f.port,
        down = down.display(),
        src = src.display()
    );
    let out = Command::new("lftp")
        .args(["-c", &script])
        .output()
        .expect("lftp must be installed");
    assert!(
        out.status.success(),
        "lftp: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["hello.txt", "big.bin", "docs/readme.txt"] {
        assert_eq!(
            std::fs::read(down.join(p)).unwrap(),
            std::fs::read(f.root.join(p)).unwrap(),
            "{p}"
        );
    }
    assert_eq!(
        std::fs::read(f.root.join("uploaded/one.txt")).unwrap(),
        b"one\n"
    );
    assert_eq!(
        std::fs::read(f.root.join("uploaded/nested/two.bin")).unwrap(),
        pattern(700_000)
    );
    f.stop();
}
