//! FTPS end to end: the real server with a fresh self-signed certificate, driven by curl,
//! lftp, Python's ftplib, suppaftp (rustls) and hand-written rustls clients.

use std::io::{Cursor, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use wharf_tests::harness::*;

const ALICE: &str = "alice:s3cret";

/// curl arguments for explicit FTPS with the fixture's certificate verified.
fn tls_args(f: &Fixture) -> Vec<String> {
    ["--ssl-reqd", "--cacert", f.cacert(), "-u", ALICE]
        .map(String::from)
        .to_vec()
}

fn curl_tls(f: &Fixture, more: &[&str]) -> Vec<u8> {
    let mut args = tls_args(f);
    args.extend(more.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&args)
}

/// `n` files of distinct random contents and sizes (some empty, some over 100 KiB) in
/// `dir`; returns their names.
fn many_files(dir: &Path, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let name = format!("f{i:02}.bin");
            let size = [0, 1, 1000, 16_384, 16_385, 150_001][i % 6] + i * 37;
            std::fs::write(dir.join(&name), random_bytes(size, i as u64 + 1)).unwrap();
            name
        })
        .collect()
}

fn assert_same_files(src: &Path, dst: &Path, names: &[String]) {
    for name in names {
        let want = std::fs::read(src.join(name)).unwrap();
        let got = std::fs::read(dst.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got == want,
            "{name}: {} bytes, expected {}",
            got.len(),
            want.len()
        );
    }
}

/// A rustls client configuration trusting the fixture's certificate. Connections made
/// with one configuration share its session store: they can resume each other.
fn client_config(f: &Fixture) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(f.cacert()).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(config: &Arc<rustls::ClientConfig>, tcp: TcpStream) -> Tls {
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// A minimal explicit-FTPS control connection.
struct Control {
    tls: Tls,
    buf: Vec<u8>,
}

impl Control {
    /// Connects, AUTH TLS, logs in as alice, PBSZ 0, PROT P.
    fn login(f: &Fixture, config: &Arc<rustls::ClientConfig>) -> Control {
        let mut tcp = TcpStream::connect(f.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let greeting = read_plain_reply(&mut tcp);
        assert!(greeting.starts_with("220 "), "{greeting}");
        tcp.write_all(b"AUTH TLS\r\n").unwrap();
        let r = read_plain_reply(&mut tcp);
        assert!(r.starts_with("234 "), "{r}");
        let mut c = Control {
            tls: tls_connect(config, tcp),
            buf: Vec::new(),
        };
        for (line, code) in [
            ("USER alice", "331"),
            ("PASS s3cret", "230"),
            ("PBSZ 0", "200"),
            ("PROT P", "200"),
            ("TYPE I", "200"),
        ] {
            c.expect(line, code);
        }
        c
    }

    /// One reply (the last line of a multi-line one).
    fn reply(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                    return line;
                }
                continue;
            }
            let mut chunk = [0u8; 1024];
            let n = self.tls.read(&mut chunk).expect("control connection");
            assert!(n > 0, "control connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, line: &str) {
        self.tls
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.tls.flush().unwrap();
    }

    #[track_caller]
    fn expect(&mut self, line: &str, code: &str) -> String {
        self.send(line);
        let r = self.reply();
        assert!(r.starts_with(code), "{line}: {r}");
        r
    }

    /// EPSV: the passive port.
    fn epsv(&mut self) -> u16 {
        let r = self.expect("EPSV", "229");
        let port = r.split("|||").nth(1).and_then(|s| s.split('|').next());
        port.and_then(|p| p.parse().ok()).expect("EPSV port")
    }
}

fn read_plain_reply(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut b = [0u8; 1];
    while !got.ends_with(b"\r\n") {
        assert_eq!(tcp.read(&mut b).unwrap(), 1, "closed after {got:?}");
        got.push(b[0]);
    }
    String::from_utf8(got).unwrap()
}

/// Everything a TLS data connection delivers, and whether it ended with close_notify.
fn read_all(tls: &mut Tls) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let clean = tls.read_to_end(&mut got).is_ok();
    (got, clean)
}

const FTPLIB_PROT_P: &str = r#"
import ftplib, io, ssl, sys
port, expect_refusal = int(sys.argv[1]), sys.argv[2] == "refused"
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ftp = ftplib.FTP_TLS(context=ctx)
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("alice", "s3cret")
ftp.prot_p()
try:
    buf = io.BytesIO()
    ftp.retrbinary("RETR big.bin", buf.write)
except ftplib.error_perm as e:
    assert expect_refusal, e
    print("refused:", e)
    ftp.quit()
    sys.exit(0)
assert not expect_refusal, "a data connection that did not resume was accepted"
assert buf.getvalue() == bytes((i * 7 % 251) for i in range(3 * 1024 * 1024 + 17))
ftp.storbinary("STOR py.bin", io.BytesIO(b"\x00\xff" * 50000))
assert "py.bin" in ftp.nlst()
ftp.quit()
print("ok")
"#;

wharf_tests::per_runtime! {
fn curl_explicit_ftps_lists_downloads_and_uploads(rt) {
    // Both channels must be encrypted: a plaintext transfer could not succeed here.
    let f = Fixture::with_tls(rt, "control = \"require\"\ndata = \"require\"");
    let listing = String::from_utf8(curl_tls(&f, &[&f.url("")])).unwrap();
    for name in ["hello.txt", "big.bin", "docs"] {
        assert!(listing.contains(name), "{listing}");
    }
    let big = curl_tls(&f, &[&f.url("big.bin")]);
    assert!(big == std::fs::read(f.root.join("big.bin")).unwrap());
    let tail = curl_tls(&f, &["-C", "1000000", &f.url("big.bin")]);
    assert!(tail == big[1_000_000..]);
    let src = f.scratch().join("up.bin");
    let body = random_bytes(2 * 1024 * 1024 + 3, 7);
    std::fs::write(&src, &body).unwrap();
    curl_tls(&f, &["-T", src.to_str().unwrap(), &f.url("up.bin")]);
    assert!(std::fs::read(f.root.join("up.bin")).unwrap() == body);
    // Without TLS the policy refuses.
    let out = curl_output(&["-u", ALICE, &f.url("hello.txt")]);
    assert!(!out.status.success(), "plaintext login accepted");
    f.assert_no_temp_files();
    f.stop();
}

fn curl_implicit_ftps_lists_downloads_and_uploads(rt) {
    let f = Fixture::with_implicit_tls(rt, "data = \"require\"");
    let tls = ["--cacert", f.cacert(), "-u", ALICE];
    let listing = String::from_utf8(curl(&[&tls[..], &[&f.ftps_url("")]].concat())).unwrap();
    assert!(listing.contains("big.bin"), "{listing}");
    let big = curl(&[&tls[..], &[&f.ftps_url("big.bin")]].concat());
    assert!(big == std::fs::read(f.root.join("big.bin")).unwrap());
    let src = f.scratch().join("up.bin");
    let body = random_bytes(700_001, 9);
    std::fs::write(&src, &body).unwrap();
    curl(&[&tls[..], &["-T", src.to_str().unwrap(), &f.ftps_url("in/up.bin"), "--ftp-create-dirs"]].concat());
    assert!(std::fs::read(f.root.join("in/up.bin")).unwrap() == body);
    // The explicit port still works beside it.
    assert_eq!(curl_tls(&f, &[&f.url("hello.txt")]), b"hello, world\n");
    f.stop();
}

fn implicit_port_given_plaintext_gets_no_banner(rt) {
    let f = Fixture::with_implicit_tls(rt, "");
    // Plaintext FTP, HTTP, an SSLv2 ClientHello, a TLS record of nonsense.
    let sslv2 = b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10\x07\x00\xc0";
    let nonsense = b"\x16\x03\x01\x00\x05hello";
    for garbage in [&b"USER anonymous\r\n"[..], b"GET / HTTP/1.0\r\n\r\n", sslv2, nonsense] {
        let mut tcp = TcpStream::connect(("127.0.0.1", f.implicit_port.unwrap())).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(garbage).unwrap();
        let mut got = Vec::new();
        // The server must close the connection (never wait for more), and say no 220.
        let end = tcp.read_to_end(&mut got);
        assert!(
            !matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut),
            "the server kept the connection open: {end:?}"
        );
        assert!(!String::from_utf8_lossy(&got).contains("220"), "{got:?}");
        assert!(got.is_empty() || got[0] == 0x15, "only a TLS alert: {got:?}");
    }
    f.stop();
}

fn plaintext_pipelined_after_auth_tls_never_logs_in(rt) {
    let f = Fixture::with_tls(rt, "");
    let mut tcp = TcpStream::connect(f.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert!(read_plain_reply(&mut tcp).starts_with("220 "));
    tcp.write_all(b"AUTH TLS\r\nUSER alice\r\nPASS s3cret\r\n").unwrap();
    let mut got = Vec::new();
    let end = tcp.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got).into_owned();
    assert!(end.is_ok(), "the session must be closed: {end:?} after {got:?}");
    assert!(got.starts_with("234 "), "{got}");
    assert!(!got.contains("331") && !got.contains("230"), "{got}");
    f.stop();
}

fn lftp_ftps_mirrors_both_ways(rt) {
    let f = Fixture::with_tls(rt, "control = \"require\"\ndata = \"require\"");
    let down = f.scratch().join("down");
    let src = f.scratch().join("src");
    let names = many_files(&src, 30);
    let out = lftp(&format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; \
         open -u alice,s3cret ftp://127.0.0.1:{port}; mirror / {down}; mirror -R {src} /many; quit",
        port = f.port,
        down = down.display(),
        src = src.display()
    ));
    assert_ok("lftp", &out);
    for p in ["hello.txt", "big.bin", "docs/readme.txt"] {
        assert!(std::fs::read(down.join(p)).unwrap() == std::fs::read(f.root.join(p)).unwrap(), "{p}");
    }
    // 30 uploads over PROT P, every byte checked (the TLS 1.3 ticket truncation class).
    assert_same_files(&src, &f.root.join("many"), &names);
    f.assert_no_temp_files();
    f.stop();
}

fn curl_uploads_many_files_over_prot_p(rt) {
    let f = Fixture::with_tls(rt, "data = \"require\"");
    let src = f.scratch().join("src");
    let names = many_files(&src, 30);
    // 30 uploads over TLS 1.3, each resuming its control session: the class of bug where
    // a session ticket in flight on the data connection made clients lose uploads.
    for name in &names {
        let file = src.join(name);
        curl_tls(&f, &["--ftp-create-dirs", "-T", file.to_str().unwrap(), &f.url("one/")]);
    }
    assert_same_files(&src, &f.root.join("one"), &names);
    // One curl, one control connection, 30 uploads then 30 downloads. curl uses a TLS 1.3
    // session only once and data connections issue no tickets, so this runs on TLS 1.2,
    // whose sessions curl reuses.
    let glob = format!("{}/{{{}}}", src.display(), names.join(","));
    let tls12 = ["--tls-max", "1.2"];
    curl_tls(&f, &[&tls12[..], &["--ftp-create-dirs", "-T", &glob, &f.url("many/")]].concat());
    assert_same_files(&src, &f.root.join("many"), &names);
    let down = f.scratch().join("down");
    std::fs::create_dir_all(&down).unwrap();
    let urls = format!("{}{{{}}}", f.url("many/"), names.join(","));
    let out = format!("{}/#1", down.display());
    curl_tls(&f, &[&tls12[..], &[&urls, "-o", &out]].concat());
    assert_same_files(&src, &down, &names);
    f.assert_no_temp_files();
    f.stop();
}

fn python_ftplib_prot_p_needs_session_reuse_off(rt) {
    // ftplib's data connections never resume the control session: refused, with a
    // reply that names the setting.
    let f = Fixture::with_tls(rt, "");
    let out = python(FTPLIB_PROT_P, &[&f.port.to_string(), "refused"]);
    assert!(out.contains("522") && out.contains("require_tls_session_reuse"), "{out}");
    f.stop();
    // With the setting off it works.
    let f = Fixture::with_tls(rt, "require_tls_session_reuse = false");
    let out = python(FTPLIB_PROT_P, &[&f.port.to_string(), "works"]);
    assert!(out.contains("ok"), "{out}");
    assert!(std::fs::read(f.root.join("py.bin")).unwrap() == b"\x00\xff".repeat(50000));
    f.stop();
}

fn suppaftp_rustls_prot_p_upload_and_download(rt) {
    use suppaftp::types::FileType;
    use suppaftp::{RustlsConnector, RustlsFtpStream};
    // suppaftp's data connections reuse its rustls configuration, so they resume the
    // control session: this works with session reuse required.
    let f = Fixture::with_tls(rt, "data = \"require\"");
    let config = client_config(&f);
    let ftp = RustlsFtpStream::connect(f.addr()).unwrap();
    let mut ftp = ftp.into_secure(RustlsConnector::from(config), "localhost").unwrap();
    ftp.login("alice", "s3cret").unwrap();
    ftp.transfer_type(FileType::Binary).unwrap();
    let body = random_bytes(1_234_567, 3);
    ftp.put_file("sup.bin", &mut Cursor::new(&body)).unwrap();
    assert!(std::fs::read(f.root.join("sup.bin")).unwrap() == body);
    let got = ftp.retr_as_buffer("sup.bin").unwrap().into_inner();
    assert!(got == body);
    let names = ftp.nlst(None).unwrap();
    assert!(names.iter().any(|n| n == "sup.bin"), "{names:?}");
    ftp.quit().unwrap();
    f.stop();
}

fn a_port_thief_with_its_own_tls_session_is_refused(rt) {
    let f = Fixture::with_tls(rt, "");
    let victim_config = client_config(&f);
    let thief_config = client_config(&f);
    let mut victim = Control::login(&f, &victim_config);
    // The thief, on the same address, has a TLS session with the server of its own.
    let mut thief_control = Control::login(&f, &thief_config);
    thief_control.expect("NOOP", "200");

    let port = victim.epsv();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    // The thief's connection is accepted first; it reads whatever it can get, while the
    // victim asks for the file.
    let thief = std::thread::spawn(move || read_all(&mut tls_connect(&thief_config, tcp)).0);
    victim.send("RETR hello.txt");
    assert!(victim.reply().starts_with("150 "));
    let refused = victim.reply();
    assert!(
        refused.starts_with("522 ") && refused.contains("require_tls_session_reuse"),
        "{refused}"
    );
    let stolen = thief.join().unwrap();
    assert!(stolen.is_empty(), "the thief got {stolen:?}");
    thief_control.expect("NOOP", "200");

    // The victim retries and gets its file.
    let port = victim.epsv();
    let mut data = tls_connect(&victim_config, TcpStream::connect(("127.0.0.1", port)).unwrap());
    victim.send("RETR hello.txt");
    assert!(victim.reply().starts_with("150 "));
    let (got, clean) = read_all(&mut data);
    assert_eq!(got, b"hello, world\n");
    assert!(clean, "the download ends with close_notify");
    assert_eq!(data.conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
    assert!(victim.reply().starts_with("226 "));
    victim.expect("QUIT", "221");
    f.stop();
}

fn ccc_with_lftp_and_curl(rt) {
    // Clients forget their TLS session when CCC ends it, so their PROT P data
    // connections can only run with session reuse off.
    let f = Fixture::with_tls(rt, "require_tls_session_reuse = false");
    let down = f.scratch().join("big.bin");
    let out = lftp(&format!(
        "set ftp:ssl-force true; set ftp:ssl-use-ccc yes; set ftp:ssl-protect-data true; \
         set ssl:verify-certificate no; open -u alice,s3cret ftp://127.0.0.1:{}; \
         get big.bin -o {}; quit",
        f.port,
        down.display()
    ));
    assert_ok("lftp with CCC", &out);
    assert!(std::fs::read(&down).unwrap() == std::fs::read(f.root.join("big.bin")).unwrap());
    // curl waits for the server's close_notify (passive, the default) or sends its own.
    for mode in ["passive", "active"] {
        let got = curl_tls(&f, &["--ftp-ssl-ccc", "--ftp-ssl-ccc-mode", mode, &f.url("hello.txt")]);
        assert_eq!(got, b"hello, world\n", "{mode}");
    }
    f.stop();
}

fn a_data_handshake_that_never_comes_times_out(rt) {
    let f = Fixture::with_tls(rt, "\n[timeouts]\ndata = 1");
    let config = client_config(&f);
    let mut c = Control::login(&f, &config);
    let port = c.epsv();
    // Connected, but never a ClientHello.
    let silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.send("RETR hello.txt");
    assert!(c.reply().starts_with("150 "));
    let r = c.reply();
    assert!(r.starts_with("426 "), "{r}");
    c.expect("NOOP", "200");
    drop(silent);
    f.stop();
}

fn stalled_handshakes_are_capped_per_address_and_time_out(rt) {
    let f = Fixture::with_implicit_tls(
        rt,
        "\n[limits]\nmax_tls_handshakes_per_ip = 2\n[timeouts]\ntls_handshake = 2",
    );
    let plain = |f: &Fixture| {
        let mut tcp = TcpStream::connect(f.addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        assert!(read_plain_reply(&mut tcp).starts_with("220 "));
        tcp
    };
    // Two handshakes that never come: AUTH TLS answered, no ClientHello sent.
    let mut stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut tcp = plain(&f);
            tcp.write_all(b"AUTH TLS\r\n").unwrap();
            let r = read_plain_reply(&mut tcp);
            assert!(r.starts_with("234 "), "{r}");
            tcp
        })
        .collect();
    // A third from the same address is told to come back; its connection stays usable.
    let mut third = plain(&f);
    third.write_all(b"AUTH TLS\r\n").unwrap();
    let r = read_plain_reply(&mut third);
    assert!(r.starts_with("431 "), "{r}");
    third.write_all(b"NOOP\r\n").unwrap();
    assert!(read_plain_reply(&mut third).starts_with("200 "));
    // An implicit-FTPS connection over the cap is closed without a byte (no plaintext
    // on that port, not even a 421).
    let mut implicit = TcpStream::connect(("127.0.0.1", f.implicit_port.unwrap())).unwrap();
    implicit.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    implicit.read_to_end(&mut got).expect("closed, not left waiting");
    assert!(got.is_empty(), "{got:?}");
    // The stalled ones are closed by the handshake timeout, which frees the address.
    for tcp in &mut stalled {
        let mut got = Vec::new();
        let end = tcp.read_to_end(&mut got);
        assert!(end.is_ok(), "the stalled handshake was never closed: {end:?}");
    }
    let r = {
        third.write_all(b"AUTH TLS\r\n").unwrap();
        read_plain_reply(&mut third)
    };
    assert!(r.starts_with("234 "), "{r}");
    drop(third);
    // Real clients are served as before, explicit and implicit.
    assert_eq!(curl_tls(&f, &[&f.url("hello.txt")]), b"hello, world\n");
    let implicit = ["--cacert", f.cacert(), "-u", ALICE, &f.ftps_url("hello.txt")];
    assert_eq!(curl(&implicit), b"hello, world\n");
    f.stop();
}

fn an_upload_cut_without_close_notify_is_discarded(rt) {
    let f = Fixture::with_tls(rt, "");
    let config = client_config(&f);
    let mut c = Control::login(&f, &config);
    let port = c.epsv();
    let mut data = tls_connect(&config, TcpStream::connect(("127.0.0.1", port)).unwrap());
    c.send("STOR cut.bin");
    assert!(c.reply().starts_with("150 "));
    data.write_all(&random_bytes(100_000, 5)).unwrap();
    data.flush().unwrap();
    // A FIN without close_notify: what a truncation attack looks like.
    data.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.reply();
    assert!(r.starts_with("426 ") && r.contains("close_notify"), "{r}");
    assert!(!f.root.join("cut.bin").exists());
    f.assert_no_temp_files();
    // The same upload, properly closed, is kept.
    let port = c.epsv();
    let mut data = tls_connect(&config, TcpStream::connect(("127.0.0.1", port)).unwrap());
    c.send("STOR whole.bin");
    assert!(c.reply().starts_with("150 "));
    data.write_all(&random_bytes(100_000, 5)).unwrap();
    data.conn.send_close_notify();
    data.flush().unwrap();
    data.sock.shutdown(std::net::Shutdown::Write).unwrap();
    assert!(c.reply().starts_with("226 "));
    assert!(std::fs::read(f.root.join("whole.bin")).unwrap() == random_bytes(100_000, 5));
    f.stop();
}

/// Under PROT P decrypted records gather before each file write; the upload size limit
/// still cuts an upload where it is crossed (552, nothing left), and an upload of
/// exactly the limit, spanning many records and buffers, arrives whole.
fn a_prot_p_upload_over_the_size_limit_is_cut(rt) {
    let limit = 1_048_576;
    let f = Fixture::with_tls(rt, "\n[site.request_filtering]\nmax_upload_size = 1048576");
    let config = client_config(&f);
    let mut c = Control::login(&f, &config);
    let port = c.epsv();
    let mut data = tls_connect(&config, TcpStream::connect(("127.0.0.1", port)).unwrap());
    c.send("STOR over.bin");
    assert!(c.reply().starts_with("150 "));
    // The server may cut the connection before all of it is written.
    let _ = data.write_all(&random_bytes(3 * limit, 6));
    data.conn.send_close_notify();
    let _ = data.flush();
    let _ = data.sock.shutdown(std::net::Shutdown::Write);
    let r = c.reply();
    assert!(r.starts_with("552 "), "{r}");
    assert!(!f.root.join("over.bin").exists());
    let port = c.epsv();
    let mut data = tls_connect(&config, TcpStream::connect(("127.0.0.1", port)).unwrap());
    c.send("STOR exact.bin");
    assert!(c.reply().starts_with("150 "));
    data.write_all(&random_bytes(limit, 7)).unwrap();
    data.conn.send_close_notify();
    data.flush().unwrap();
    data.sock.shutdown(std::net::Shutdown::Write).unwrap();
    let r = c.reply();
    assert!(r.starts_with("226 "), "{r}");
    assert!(std::fs::read(f.root.join("exact.bin")).unwrap() == random_bytes(limit, 7));
    f.assert_no_temp_files();
    f.stop();
}
}

/// A test CA with one client certificate it signed, and a client certificate it did not
/// sign (self-signed, same name), in a directory that lives as long as the value.
struct ClientCerts {
    _dir: tempfile::TempDir,
    ca: wharf_tests::certs::TestCa,
    client: wharf_tests::certs::CertFiles,
    stranger: wharf_tests::certs::CertFiles,
}

impl ClientCerts {
    fn new() -> ClientCerts {
        let dir = tempfile::tempdir().unwrap();
        let ca = wharf_tests::certs::TestCa::new(dir.path(), "wharf test CA");
        let client = ca.client(dir.path(), "alice");
        let stranger = wharf_tests::certs::TestCa::new(&dir.path().join("other"), "other CA")
            .client(&dir.path().join("other"), "alice");
        ClientCerts {
            _dir: dir,
            ca,
            client,
            stranger,
        }
    }

    /// The `[site.tls]` keys for `mode`, trusting this CA.
    fn keys(&self, mode: &str) -> String {
        format!(
            "client_certificates = \"{mode}\"\nclient_ca = {:?}\n",
            self.ca.files.cert_str()
        )
    }
}

/// curl explicit FTPS as alice, with `cert` (a client certificate) if given.
fn curl_with_cert(
    f: &Fixture,
    cert: Option<&wharf_tests::certs::CertFiles>,
    more: &[&str],
) -> std::process::Output {
    let mut args = vec!["-v", "--ssl-reqd", "--cacert", f.cacert(), "-u", ALICE];
    if let Some(c) = cert {
        args.extend_from_slice(&["--cert", c.cert_str(), "--key", c.key_str()]);
    }
    args.extend_from_slice(more);
    curl_output(&args)
}

#[track_caller]
fn refused_without_login(what: &str, out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded\n{err}");
    assert!(!err.contains("< 230"), "{what}: logged in\n{err}");
}

wharf_tests::per_runtime! {
fn client_certificates_required_with_curl(rt) {
    let certs = ClientCerts::new();
    let f = Fixture::with_tls(rt, &certs.keys("require"));
    let cert = Some(&certs.client);
    // With a certificate from the CA: list, download and upload, every data connection
    // resuming the control session (no second certificate request), on TLS 1.3 and 1.2.
    for tls in [&[][..], &["--tls-max", "1.2"][..]] {
        let out = curl_with_cert(&f, cert, &[tls, &[f.url("").as_str()][..]].concat());
        assert_ok("list", &out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("big.bin"));
        let out = curl_with_cert(&f, cert, &[tls, &[f.url("big.bin").as_str()][..]].concat());
        assert_ok("download", &out);
        assert!(out.stdout == std::fs::read(f.root.join("big.bin")).unwrap());
        let src = f.scratch().join("up.bin");
        let body = random_bytes(1_000_003, tls.len() as u64 + 1);
        std::fs::write(&src, &body).unwrap();
        let url = f.url("up.bin");
        let up = [tls, &["-T", src.to_str().unwrap(), &url][..]].concat();
        assert_ok("upload", &curl_with_cert(&f, cert, &up));
        assert!(std::fs::read(f.root.join("up.bin")).unwrap() == body);
    }
    // Without one, or with one the CA did not sign: no login, no transfer.
    refused_without_login("no certificate", &curl_with_cert(&f, None, &[&f.url("hello.txt")]));
    let out = curl_with_cert(&f, Some(&certs.stranger), &[&f.url("hello.txt")]);
    refused_without_login("a stranger's certificate", &out);
    // In plaintext, the login is refused for want of TLS (the control policy itself is
    // "allow").
    let out = curl_output(&["-v", "-u", ALICE, &f.url("hello.txt")]);
    refused_without_login("plaintext", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("< 530 This site requires TLS with a client certificate"), "{err}");
    f.assert_no_temp_files();
    f.stop();
}

fn client_certificates_allowed_with_curl(rt) {
    let certs = ClientCerts::new();
    let f = Fixture::with_tls(rt, &certs.keys("allow"));
    // With or without a certificate; but one that is sent must verify.
    let with = curl_with_cert(&f, Some(&certs.client), &[&f.url("hello.txt")]);
    assert_ok("with a certificate", &with);
    assert_eq!(with.stdout, b"hello, world\n");
    let without = curl_with_cert(&f, None, &[&f.url("hello.txt")]);
    assert_ok("without a certificate", &without);
    assert_eq!(without.stdout, b"hello, world\n");
    let src = f.scratch().join("up.bin");
    let body = random_bytes(500_001, 5);
    std::fs::write(&src, &body).unwrap();
    let up = curl_with_cert(&f, None, &["-T", src.to_str().unwrap(), &f.url("up.bin")]);
    assert_ok("upload without a certificate", &up);
    assert!(std::fs::read(f.root.join("up.bin")).unwrap() == body);
    let out = curl_with_cert(&f, Some(&certs.stranger), &[&f.url("hello.txt")]);
    refused_without_login("a stranger's certificate", &out);
    // Plaintext is still allowed (the control policy is "allow").
    assert_eq!(curl(&["-u", ALICE, &f.url("hello.txt")]), b"hello, world\n");
    f.stop();
}

fn client_certificates_required_with_implicit_tls_lftp_and_python(rt) {
    let certs = ClientCerts::new();
    let f = Fixture::with_implicit_tls(rt, &certs.keys("require"));
    let c = &certs.client;
    // curl, implicit FTPS.
    let tls = ["--cacert", f.cacert(), "-u", ALICE, "--cert", c.cert_str(), "--key", c.key_str()];
    let got = curl(&[&tls[..], &[&f.ftps_url("big.bin")]].concat());
    assert!(got == std::fs::read(f.root.join("big.bin")).unwrap());
    let out = curl_output(&["--cacert", f.cacert(), "-u", ALICE, &f.ftps_url("hello.txt")]);
    assert!(!out.status.success(), "implicit FTPS without a certificate: {out:?}");
    // lftp (GnuTLS) with its certificate, both ways.
    let down = f.scratch().join("down.bin");
    let src = f.scratch().join("lftp.bin");
    let body = random_bytes(333_333, 8);
    std::fs::write(&src, &body).unwrap();
    let script = |cert: &wharf_tests::certs::CertFiles| {
        format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; \
             set ssl:cert-file {}; set ssl:key-file {}; \
             open -u alice,s3cret ftp://127.0.0.1:{}; get big.bin -o {}; put {} -o lftp.bin; quit",
            cert.cert_str(),
            cert.key_str(),
            f.port,
            down.display(),
            src.display()
        )
    };
    assert_ok("lftp with a certificate", &lftp(&script(c)));
    assert!(std::fs::read(&down).unwrap() == std::fs::read(f.root.join("big.bin")).unwrap());
    assert!(std::fs::read(f.root.join("lftp.bin")).unwrap() == body);
    let out = lftp(&script(&certs.stranger));
    assert!(!out.status.success(), "lftp with a stranger's certificate: {out:?}");
    // Python's ssl: the control channel with and without a certificate.
    let out = python(
        PYTHON_CLIENT_CERT,
        &[&f.port.to_string(), c.cert_str(), c.key_str()],
    );
    assert_eq!(out, "with: 230\nwithout: refused\n");
    f.assert_no_temp_files();
    f.stop();
}
}

/// ftplib's FTP_TLS logging in with a client certificate, then without one.
const PYTHON_CLIENT_CERT: &str = r#"
import ftplib, ssl, sys
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def ctx(with_cert):
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    if with_cert:
        c.load_cert_chain(cert, key)
    return c
ftp = ftplib.FTP_TLS(context=ctx(True))
ftp.connect("127.0.0.1", port, timeout=30)
ftp.auth()
print("with:", ftp.login("alice", "s3cret")[:3])
ftp.quit()
ftp = ftplib.FTP_TLS(context=ctx(False))
ftp.connect("127.0.0.1", port, timeout=30)
try:
    ftp.auth()
    ftp.login("alice", "s3cret")
    print("without: logged in")
except (ssl.SSLError, OSError, EOFError, ftplib.Error) as e:
    print("without: refused")
"#;
