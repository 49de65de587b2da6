//! Transfers with real clients: the byte-exact size matrix over every data-channel mode
//! (suppaftp), resume, append, STOU, PORT/EPRT, IPv6, TYPE A, ABOR mid-transfer, clients
//! that vanish mid-transfer, symlink escapes, 500 concurrent transferring sessions, and a
//! graceful shutdown with a transfer in flight.

use std::io::{BufRead, BufReader, Cursor, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use suppaftp::types::{FileType, Mode};
use suppaftp::FtpStream;
use wharf_tests::harness::*;

/// 0 B, 1 B, 64 KiB and 64 MiB, as the issue asks; odd sizes catch buffer-edge bugs.
const SIZES: &[usize] = &[0, 1, 64 * 1024, 64 * 1024 + 3, 64 * 1024 * 1024];

fn login(f: &Fixture, mode: Mode) -> FtpStream {
    let ftp = FtpStream::connect(f.addr()).expect("connect");
    let mut ftp = if mode == Mode::Active {
        ftp.active_mode(Duration::from_secs(20))
    } else {
        let mut ftp = ftp;
        ftp.set_mode(mode);
        ftp
    };
    ftp.login("alice", PASSWORD).expect("login");
    ftp.transfer_type(FileType::Binary).unwrap();
    ftp
}

fn upload_download_matrix(rt: &'static str, mode: Mode, sizes: &[usize]) {
    let f = Fixture::start(rt);
    let mut ftp = login(&f, mode);
    ftp.mkdir("m").unwrap();
    ftp.cwd("m").unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let body = random_bytes(n, i as u64 + 1);
        let name = format!("f{n}.bin");
        assert_eq!(
            ftp.put_file(&name, &mut Cursor::new(&body)).unwrap(),
            n as u64
        );
        assert_eq!(ftp.size(&name).unwrap(), n, "SIZE {name}");
        let back = ftp.retr_as_buffer(&name).unwrap().into_inner();
        assert!(back == body, "{mode:?}: {name} came back different");
        assert!(std::fs::read(f.root.join("m").join(&name)).unwrap() == body);
    }
    let names = ftp.nlst(None).unwrap();
    for &n in sizes {
        assert!(
            names.iter().any(|x| x.ends_with(&format!("f{n}.bin"))),
            "{names:?}"
        );
    }
    let mlsd = ftp.mlsd(None).unwrap();
    assert!(
        mlsd.iter()
            .any(|l| l.contains("type=file") && l.contains("f1.bin")),
        "{mlsd:?}"
    );
    ftp.quit().unwrap();
    f.assert_no_temp_files();
    f.stop();
}

wharf_tests::per_runtime! {
    fn suppaftp_sizes_passive(rt) {
        upload_download_matrix(rt, Mode::Passive, SIZES);
    }

    fn suppaftp_sizes_extended_passive(rt) {
        upload_download_matrix(rt, Mode::ExtendedPassive, &SIZES[..4]);
    }

    fn suppaftp_sizes_active(rt) {
        upload_download_matrix(rt, Mode::Active, &SIZES[..4]);
    }

    fn suppaftp_resume_append_rename_delete(rt) {
        let f = Fixture::start(rt);
        let mut ftp = login(&f, Mode::Passive);
        let big = std::fs::read(f.root.join("big.bin")).unwrap();
        // REST + RETR: the tail from an offset.
        ftp.resume_transfer(1_000_001).unwrap();
        let tail = ftp.retr_as_buffer("big.bin").unwrap().into_inner();
        assert!(tail == big[1_000_001..], "resumed download differs");
        // REST + STOR: an upload resumed in place.
        let body = random_bytes(300_000, 9);
        ftp.put_file("r.bin", &mut Cursor::new(&body[..100_000])).unwrap();
        ftp.resume_transfer(100_000).unwrap();
        ftp.put_file("r.bin", &mut Cursor::new(&body[100_000..])).unwrap();
        assert!(std::fs::read(f.root.join("r.bin")).unwrap() == body);
        // APPE.
        ftp.append_file("r.bin", &mut Cursor::new(b"tail")).unwrap();
        let mut expect = body.clone();
        expect.extend_from_slice(b"tail");
        assert!(std::fs::read(f.root.join("r.bin")).unwrap() == expect);
        // Rename, delete, directories.
        ftp.mkdir("d").unwrap();
        ftp.rename("r.bin", "d/moved.bin").unwrap();
        assert!(!f.root.join("r.bin").exists());
        assert_eq!(ftp.size("d/moved.bin").unwrap(), expect.len());
        assert!(ftp.rmdir("d").is_err(), "RMD of a non-empty directory must fail");
        ftp.rm("d/moved.bin").unwrap();
        ftp.rmdir("d").unwrap();
        assert!(!f.root.join("d").exists());
        ftp.quit().unwrap();
        f.stop();
    }

    fn curl_64mib_both_ways_and_port_eprt(rt) {
        let f = Fixture::start(rt);
        let body = random_bytes(64 * 1024 * 1024 + 1, 77);
        let src = f.scratch().join("up.bin");
        std::fs::write(&src, &body).unwrap();
        let user = format!("alice:{PASSWORD}");
        curl(&["-u", &user, "-T", src.to_str().unwrap(), &f.url("up.bin")]);
        assert!(std::fs::read(f.root.join("up.bin")).unwrap() == body);
        let back = curl(&["-u", &user, &f.url("up.bin")]);
        assert!(back == body, "64 MiB download differs");
        // Active mode: curl's default tries EPRT; --disable-eprt forces PORT.
        let eprt = curl(&["-u", &user, "-P", "127.0.0.1", &f.url("docs/readme.txt")]);
        assert_eq!(eprt, b"line one\nline two\n");
        let port = curl(&[
            "-u", &user, "-P", "127.0.0.1", "--disable-eprt", &f.url("hello.txt"),
        ]);
        assert_eq!(port, b"hello, world\n");
        // An active upload.
        let small = f.scratch().join("small.bin");
        std::fs::write(&small, random_bytes(70_000, 3)).unwrap();
        curl(&["-u", &user, "-P", "127.0.0.1", "-T", small.to_str().unwrap(), &f.url("a.bin")]);
        assert!(std::fs::read(f.root.join("a.bin")).unwrap() == std::fs::read(&small).unwrap());
        f.stop();
    }

    fn ipv6_loopback_with_curl(rt) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("six.txt"), b"over ipv6\n").unwrap();
        let text = format!(
            "[server]\nlisten = [\"[::1]:0\"]\npassive_ports = \"0-0\"\nruntime = \"{rt}\"\n\
             [site]\nroot = {:?}\nanonymous = true\n",
            root.display().to_string()
        );
        let f = Fixture::from_toml(rt, tmp, root, &text);
        let url = format!("ftp://[::1]:{}/six.txt", f.port);
        // EPSV (passive) and EPRT (active) over ::1.
        assert_eq!(curl(&["-g", &url]), b"over ipv6\n");
        assert_eq!(curl(&["-g", "-P", "::1", &url]), b"over ipv6\n");
        f.stop();
    }

    fn ftplib_stou_type_a_and_abor(rt) {
        let f = Fixture::start(rt);
        std::fs::write(f.root.join("huge.bin"), random_bytes(64 * 1024 * 1024, 5)).unwrap();
        let out = python(FTPLIB_STOU_TYPEA_ABOR, &[&f.port.to_string()]);
        // STOU: the reply named the file it created; it holds what was sent.
        let name = out.lines().find_map(|l| l.strip_prefix("stou ")).expect(&out);
        assert_eq!(std::fs::read(f.root.join(name)).unwrap(), b"unique bytes");
        f.assert_no_temp_files();
        f.stop();
    }

    fn symlinks_cannot_escape_the_root(rt) {
        let f = Fixture::start(rt);
        let outside = f.scratch().join("secret.txt");
        std::fs::write(&outside, b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, f.root.join("leak.txt")).unwrap();
        std::os::unix::fs::symlink(f.scratch(), f.root.join("leakdir")).unwrap();
        std::os::unix::fs::symlink("../scratch", f.root.join("relative")).unwrap();
        let user = format!("alice:{PASSWORD}");
        for path in ["leak.txt", "leakdir/secret.txt", "relative/secret.txt", "../scratch/secret.txt"] {
            let out = curl_output(&["-u", &user, &f.url(path)]);
            assert!(!out.status.success(), "{path} was served: {:?}", out.stdout);
            assert!(!out.stdout.windows(7).any(|w| w == b"outside"));
        }
        // Writing through a link must not create anything outside either.
        let src = f.scratch().join("payload");
        std::fs::write(&src, b"payload").unwrap();
        let out = curl_output(&["-u", &user, "-T", src.to_str().unwrap(), &f.url("leakdir/new.txt")]);
        assert!(!out.status.success());
        assert!(!f.scratch().join("new.txt").exists());
        // A link created after the client logged in is no different.
        let mut ftp = login(&f, Mode::Passive);
        std::os::unix::fs::symlink(&outside, f.root.join("late.txt")).unwrap();
        assert!(ftp.retr_as_buffer("late.txt").is_err());
        assert_eq!(ftp.retr_as_buffer("hello.txt").unwrap().into_inner(), b"hello, world\n");
        ftp.quit().unwrap();
        f.stop();
    }

    fn client_vanishing_mid_upload_discards_it_and_others_continue(rt) {
        let mut f = Fixture::start(rt);
        vanish_mid_upload(&f, "gone.bin");
        // Another session works while (and after) the first one died.
        let mut ftp = login(&f, Mode::Passive);
        let big = ftp.retr_as_buffer("big.bin").unwrap().into_inner();
        assert!(big == pattern(3 * 1024 * 1024 + 17));
        ftp.quit().unwrap();
        // Shutdown waits for every session and for the workers that discard uploads.
        f.stop_keeping_files();
        assert!(!f.root.join("gone.bin").exists(), "a broken upload was kept");
        f.assert_no_temp_files();
    }

    fn client_vanishing_mid_upload_keeps_the_partial_when_configured(rt) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npassive_ports = \"0-0\"\nruntime = \"{rt}\"\n\
             [site]\nroot = {:?}\nkeep_partial_uploads = true\n\
             [[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n",
            root.display().to_string(),
            password_hash()
        );
        let mut f = Fixture::from_toml(rt, tmp, root.clone(), &text);
        let sent = vanish_mid_upload(&f, "kept.bin");
        f.stop_keeping_files();
        let kept = std::fs::read(root.join("kept.bin")).expect("the partial upload is kept");
        // How much arrived before the reset is up to the kernel; it must be a prefix.
        assert!(kept.len() <= sent.len());
        assert!(kept == sent[..kept.len()], "the kept part is not a prefix of what was sent");
    }

    fn five_hundred_concurrent_sessions_each_transferring(rt) {
        let f = Fixture::start(rt);
        let sessions = 500;
        let body = Arc::new(random_bytes(64 * 1024, 11));
        std::fs::write(f.root.join("shared.bin"), &*body).unwrap();
        let all_in = Arc::new(Barrier::new(sessions));
        let addr = f.addr();
        let threads: Vec<_> = (0..sessions)
            .map(|i| {
                let (all_in, body, addr) = (all_in.clone(), body.clone(), addr.clone());
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || -> Result<(), String> {
                        let mut ftp = FtpStream::connect(&addr).map_err(|e| format!("{i}: {e}"))?;
                        ftp.login("alice", PASSWORD).map_err(|e| format!("{i}: {e}"))?;
                        ftp.transfer_type(FileType::Binary).map_err(|e| e.to_string())?;
                        // Every session is logged in before any of them transfers.
                        all_in.wait();
                        let got = ftp.retr_as_buffer("shared.bin").map_err(|e| format!("{i}: {e}"))?;
                        if got.into_inner() != *body {
                            return Err(format!("{i}: download differs"));
                        }
                        let mine = random_bytes(16 * 1024 + i, i as u64);
                        ftp.put_file(format!("u{i}.bin"), &mut Cursor::new(&mine))
                            .map_err(|e| format!("{i}: {e}"))?;
                        ftp.quit().map_err(|e| format!("{i}: {e}"))
                    })
                    .unwrap()
            })
            .collect();
        let errors: Vec<String> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap().err())
            .collect();
        assert!(errors.is_empty(), "{} failed: {:?}", errors.len(), &errors[..errors.len().min(5)]);
        for i in 0..sessions {
            let got = std::fs::read(f.root.join(format!("u{i}.bin"))).unwrap();
            assert!(got == random_bytes(16 * 1024 + i, i as u64), "u{i}.bin differs");
        }
        f.stop();
    }

    fn exhausted_passive_range_gives_425_and_ports_come_back(rt) {
        // Below the ephemeral range: no client socket of a parallel test can hold it.
        let port = free_port();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(&root).unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npassive_ports = \"{port}-{port}\"\n\
             runtime = \"{rt}\"\n[site]\nroot = {:?}\nanonymous = true\n",
            root.display().to_string()
        );
        let f = Fixture::from_toml(rt, tmp, root, &text);
        let out = python(
            r#"
import ftplib, socket, struct, sys
def session():
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
    ftp.login()
    return ftp
a, b = session(), session()
assert a.sendcmd("PASV").startswith("227")
try:
    b.sendcmd("PASV")
    raise SystemExit("a second PASV on a one-port range succeeded")
except ftplib.error_temp as e:
    assert str(e).startswith("425"), e
# A vanishes without QUIT; its port must come back to the pool.
a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
a.file.close()  # ftplib's reader holds the socket open until it goes too
a.sock.close()
for attempt in range(10000):
    try:
        reply = b.sendcmd("PASV")
        break
    except ftplib.error_temp:
        continue
else:
    raise SystemExit("the port never came back")
assert reply.startswith("227"), reply
print("ok")
"#,
            &[&f.port.to_string()],
        );
        assert!(out.contains("ok"));
        f.stop();
    }

    fn shutdown_lets_a_client_download_finish(rt) {
        let mut f = Fixture::start(rt);
        std::fs::write(f.root.join("slow.bin"), random_bytes(32 * 1024 * 1024, 21)).unwrap();
        let mut child = Command::new("timeout")
            .args(["120", "python3", "-c", FTPLIB_SLOW_READER, &f.port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The client says when its download is under way (a real synchronisation point).
        assert_eq!(lines.next().unwrap().unwrap(), "started");
        let server = f.take_server();
        server.shutdown(Duration::from_secs(60));
        let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "client: {rest:?}\n{err}");
        let sha = rest.iter().find_map(|l| l.strip_prefix("sha256 ")).expect("digest line");
        assert_eq!(sha, sha256_hex(&std::fs::read(f.root.join("slow.bin")).unwrap()));
        assert!(rest.iter().any(|l| l.starts_with("after 421")), "{rest:?}");
        server.wait().unwrap();
    }
}

/// Starts a STOR, sends 1 MiB, then resets both connections (SO_LINGER 0) without a
/// word. Returns the bytes sent.
fn vanish_mid_upload(f: &Fixture, name: &str) -> Vec<u8> {
    let sent = random_bytes(1024 * 1024, 99);
    let src = f.scratch().join(format!("{name}.src"));
    std::fs::write(&src, &sent).unwrap();
    let out = python(
        r#"
import socket, struct, sys, ftplib
port, name, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("alice", "s3cret")
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("STOR " + name)
conn.sendall(open(path, "rb").read())
# Reset both connections: the server sees a broken upload, never a clean end.
ftp.file.close()  # ftplib's reader holds the socket open until it goes too
for s in (conn, ftp.sock):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
print("reset")
"#,
        &[&f.port.to_string(), name, src.to_str().unwrap()],
    );
    assert!(out.contains("reset"));
    sent
}

const FTPLIB_STOU_TYPEA_ABOR: &str = r#"
import ftplib, io, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
ftp.login("alice", "s3cret")

# STOU: RFC 1123 says the reply names the file.
ftp.voidcmd("TYPE I")
conn, _ = ftp.ntransfercmd("STOU")
conn.sendall(b"unique bytes")
conn.close()
reply = ftp.voidresp()
assert reply.startswith("226"), reply
# ftplib does not return the 150 text; find the new name in a listing.
names = [n for n in ftp.nlst() if n not in ("hello.txt", "big.bin", "docs", "huge.bin")]
assert len(names) == 1, names
print("stou " + names[0])

# TYPE A on the wire: LF becomes CR LF.
ftp.voidcmd("TYPE A")
conn = ftp.transfercmd("RETR docs/readme.txt")
raw = b""
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    raw += chunk
conn.close()
assert ftp.voidresp().startswith("226")
assert raw == b"line one\r\nline two\r\n", raw

# ABOR in the middle of a 64 MiB download, then the session goes on in step.
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("RETR huge.bin")
got = conn.recv(65536)
assert got
reply = ftp.abort()
conn.close()
# RFC 959: an aborted transfer gets 426, then the ABOR itself 226. ftplib returns the first.
if reply.startswith("426"):
    reply = ftp.voidresp()
assert reply[:3] in ("225", "226"), reply
assert ftp.voidcmd("NOOP").startswith("200")
buf = io.BytesIO()
ftp.retrbinary("RETR hello.txt", buf.write)
assert buf.getvalue() == b"hello, world\n"
ftp.quit()
"#;

const FTPLIB_SLOW_READER: &str = r#"
import ftplib, hashlib, sys, time
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=60)
ftp.login("alice", "s3cret")
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("RETR slow.bin")
h = hashlib.sha256()
first = conn.recv(65536)
h.update(first)
print("started", flush=True)
# Read slowly so the transfer is still running when the server is told to stop.
while True:
    chunk = conn.recv(65536)
    if not chunk:
        break
    h.update(chunk)
    time.sleep(0.001)
conn.close()
reply = ftp.voidresp()
assert reply.startswith("226"), reply
print("sha256 " + h.hexdigest())
try:
    ftp.voidcmd("NOOP")
    print("after noop")
except (ftplib.error_temp, EOFError, OSError) as e:
    print("after " + str(e)[:3])
"#;

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
