//! End to end: the real server (config, LocalFs, users, each runtime) on loopback port 0,
//! driven by clients nobody here wrote: curl, Python's ftplib and lftp.

use std::process::Command;

use wharf_tests::harness::*;

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

wharf_tests::per_runtime! {
fn curl_lists_downloads_and_uploads(rt) {
    let f = Fixture::start(rt);
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
    f.assert_no_temp_files();
    f.stop();
}

fn curl_active_mode_and_anonymous(rt) {
    let f = Fixture::start(rt);
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

fn curl_wrong_password_is_refused(rt) {
    let f = Fixture::start(rt);
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-u", "alice:wrong", &f.url("")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    f.stop();
}

fn python_ftplib_session(rt) {
    let f = Fixture::start(rt);
    python(FTPLIB_SCRIPT, &[&f.port.to_string()]);
    assert_eq!(
        std::fs::read(f.root.join("moved.bin")).unwrap(),
        b"\x00\x01\x02".repeat(100000)
    );
    assert_eq!(std::fs::read(f.root.join("text.txt")).unwrap(), b"a\nb\n");
    assert!(!f.root.join("hello.txt").exists());
    assert!(!f.root.join("new").exists());
    f.assert_no_temp_files();
    f.stop();
}

fn lftp_mirrors_both_ways(rt) {
    let f = Fixture::start(rt);
    let down = f.scratch().join("down");
    let src = f.scratch().join("src");
    std::fs::create_dir_all(src.join("nested")).unwrap();
    std::fs::write(src.join("one.txt"), b"one\n").unwrap();
    std::fs::write(src.join("nested/two.bin"), pattern(700_000)).unwrap();
    let out = lftp(&format!(
        "open -u alice,s3cret ftp://127.0.0.1:{port}; mirror / {down}; mirror -R {src} /uploaded; quit",
        port = f.port,
        down = down.display(),
        src = src.display()
    ));
    assert_ok("lftp", &out);
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
}
