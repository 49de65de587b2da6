//! Hostile and fault tests over loopback (`docs/hostile-tests.md` maps them to the
//! numbered list of hostile tests they come from): raw `TcpStream`s and rustls clients
//! against the real server, on every runtime.
//!
//! Every wait is bounded by a socket read or write timeout; nothing sleeps to
//! synchronise (the slow-loris test paces its bytes, which is the attack itself).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use wharf_core::proto::command::Verb;
use wharf_tests::harness::*;

/// Bound for every read of a reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// A raw control connection that reads replies itself.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        s.set_nodelay(true).unwrap();
        Raw { s, buf: Vec::new() }
    }

    /// Connects and reads the greeting, which must be a 220.
    fn greeted(addr: &str) -> Raw {
        let mut c = Raw::connect(addr);
        let g = c.reply();
        assert!(g.starts_with("220"), "{g}");
        c
    }

    fn logged_in(addr: &str) -> Raw {
        let mut c = Raw::greeted(addr);
        c.expect("USER alice", "331");
        c.expect(&format!("PASS {PASSWORD}"), "230");
        c
    }

    /// One whole reply (every line of a multi-line one), as sent.
    fn reply(&mut self) -> String {
        let mut text = Vec::new();
        let mut code: Option<Vec<u8>> = None;
        loop {
            let line = self.line();
            assert!(line.len() >= 6, "short reply line {:?}", lossy(&line));
            text.extend_from_slice(&line);
            let first = code.get_or_insert_with(|| line[..3].to_vec());
            if line.starts_with(first) && line[3] == b' ' {
                return lossy(&text);
            }
            if code.as_deref() == Some(&line[..3]) && text.len() == line.len() {
                assert_eq!(line[3], b'-', "bad reply line {:?}", lossy(&line));
            }
        }
    }

    /// One CRLF-terminated line; fails on EOF or timeout.
    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return self.buf.drain(..end + 2).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).expect("a reply in time");
            assert!(n > 0, "closed; unread {:?}", lossy(&self.buf));
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    #[track_caller]
    fn expect(&mut self, line: &str, code: &str) -> String {
        let r = self.cmd(line);
        assert!(r.starts_with(code), "{line:?} -> {r:?}, expected {code}");
        r
    }

    /// Sends raw bytes that make one reply; asserts its code.
    #[track_caller]
    fn expect_raw(&mut self, bytes: &[u8], code: &str) -> String {
        self.send_raw(bytes);
        let r = self.reply();
        assert!(
            r.starts_with(code),
            "{:?} -> {r:?}, expected {code}",
            lossy(bytes)
        );
        r
    }

    /// EPSV, then a connected data socket.
    fn epsv(&mut self) -> TcpStream {
        let r = self.expect("EPSV", "229");
        let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
        let d = TcpStream::connect(("127.0.0.1", port)).unwrap();
        d.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        d
    }

    /// Reads to EOF: the server closed (a reset counts as closed too). Fails on timeout.
    fn until_closed(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.buf);
        match self.s.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("not closed: {e}; got {:?}", lossy(&rest)),
        }
        lossy(&rest)
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Every file and directory under `dir` with its size (directories: -1) and contents'
/// first bytes, sorted: a fingerprint to compare before and after.
fn tree(dir: &Path) -> Vec<(String, i64, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, i64, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                out.push((name, -1, Vec::new()));
                walk(base, &p, out);
            } else {
                let head = std::fs::read(&p)
                    .map(|b| b[..b.len().min(64)].to_vec())
                    .unwrap_or_default();
                out.push((name, meta.len() as i64, head));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A rustls client configuration trusting the fixture's certificate.
fn client_config(f: &Fixture) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(f.cacert()).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// An explicit-FTPS control connection, logged in as alice.
fn tls_login(f: &Fixture) -> (Tls, Vec<u8>) {
    let mut c = Raw::greeted(&f.addr());
    c.expect("AUTH TLS", "234");
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(client_config(f), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c.s);
    let mut buf = Vec::new();
    for (line, want) in [("USER alice", "331"), ("PASS s3cret", "230")] {
        let r = tls_cmd(&mut tls, &mut buf, line).expect("a reply");
        assert!(r.starts_with(want), "{line} -> {r}");
    }
    (tls, buf)
}

/// One command over TLS and its reply's last line; `Err` when the connection ended.
fn tls_cmd(tls: &mut Tls, buf: &mut Vec<u8>, line: &str) -> Result<String, String> {
    tls.write_all(format!("{line}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    tls.flush().map_err(|e| e.to_string())?;
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            let l: Vec<u8> = buf.drain(..end + 2).collect();
            if l.len() >= 4 && l[3] == b' ' {
                return Ok(lossy(&l));
            }
            continue;
        }
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk) {
            Ok(0) => return Err("closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Whether `ip` can be bound here (loopback aliases such as 127.0.0.2).
fn bindable(ip: &str) -> bool {
    TcpListener::bind((ip, 0)).is_ok()
}

wharf_tests::per_runtime! {

/// (1) Before login every verb but the allow-list is 530 (SITE CPFR/CPTO/CHMOD/EXEC
/// too), also between USER and PASS; nothing on disk changes; the allow-list answers
/// but grants nothing.
fn before_login_every_verb_is_refused_and_nothing_is_touched(rt) {
    let f = Fixture::start(rt);
    let before = tree(&f.root);
    // 2xx before login is fine only for these (ACCT 202 is "superfluous", STAT without
    // an argument is the server's status).
    let may_succeed = [
        "USER", "PASS", "AUTH", "PBSZ", "PROT", "FEAT", "HOST", "OPTS", "NOOP", "QUIT", "HELP",
        "SYST", "ACCT", "STAT",
    ];
    // Also read before login, never with a 2xx here (no TLS): ADAT, CCC.
    let may_answer = ["ADAT", "CCC"];
    let mut c = Raw::greeted(&f.addr());
    for after_user in [false, true] {
        if after_user {
            c.expect("USER alice", "331");
        }
        let mut lines: Vec<String> = Vec::new();
        for verb in Verb::ALL {
            let name = verb.name();
            if matches!(verb, Verb::User | Verb::Pass | Verb::Quit | Verb::Rein | Verb::Host) {
                continue;
            }
            lines.push(name.to_string());
            lines.push(format!("{name} hello.txt"));
            lines.push(format!("{} ../docs", name.to_lowercase()));
        }
        for site in ["CPFR hello.txt", "CPTO /stolen.txt", "CHMOD 777 hello.txt", "EXEC /bin/sh"] {
            lines.push(format!("SITE {site}"));
        }
        lines.push("PORT 127,0,0,1,200,10".into());
        lines.push("EPRT |1|127.0.0.1|51210|".into());
        for line in &lines {
            let r = c.cmd(line);
            let verb = line.split(' ').next().unwrap().to_uppercase();
            let allowed = may_succeed.contains(&verb.as_str())
                && !(verb == "STAT" && line.contains(' '));
            if allowed {
                assert!(!r.starts_with('1'), "{line:?} opened a transfer: {r:?}");
            } else if may_answer.contains(&verb.as_str()) {
                assert!(r.starts_with('5'), "{line:?} before login -> {r:?}");
            } else {
                // 530, or 503 for a sequence error, or 502 for a verb wharf does not
                // implement at all (ADAT, SMNT, ...): refusals that do nothing.
                assert!(
                    r.starts_with("530 ") || r.starts_with("503 ") || r.starts_with("502 "),
                    "{line:?} before login (after USER: {after_user}) -> {r:?}"
                );
            }
            for l in r.lines() {
                assert!(!l.contains("hello.txt") && !l.contains("readme"), "{line:?} leaked {r:?}");
            }
        }
    }
    // After all that, PASS still logs in (the sweep did not disturb the state), and
    // nothing changed on disk.
    c.expect("USER alice", "331");
    c.expect(&format!("PASS {PASSWORD}"), "230");
    c.expect("QUIT", "221");
    assert_eq!(tree(&f.root), before);
    f.stop();
}

/// (2) A megabyte without a line end, then a 5 kB line: one 500, and the next command
/// is answered normally.
fn an_endless_line_is_one_500_then_the_session_resyncs(rt) {
    let f = Fixture::start(rt);
    let mut c = Raw::logged_in(&f.addr());
    let chunk = vec![b'A'; 64 * 1024];
    for _ in 0..16 {
        c.send_raw(&chunk);
    }
    let mut tail = vec![b'B'; 5000];
    tail.extend_from_slice(b"\r\nNOOP\r\n");
    c.send_raw(&tail);
    let r = c.reply();
    assert!(r.starts_with("500 ") && r.contains("too long"), "{r}");
    c.expect_raw(b"", "200");
    // Exactly one 500: the next reply is the next command's.
    c.expect("PWD", "257");
    f.stop();
}

/// (3) Odd line ends, blank lines, a line of spaces, NUL: each a well-formed 5xx or the
/// command's reply; then a command cut by a FIN is not run, and the server lives on.
fn odd_line_ends_blanks_and_nul_get_clean_replies(rt) {
    let f = Fixture::start(rt);
    let mut c = Raw::logged_in(&f.addr());
    c.expect_raw(b"\n", "500");
    c.expect_raw(b"\r\n", "500");
    // A CR not before LF is content: "\r\r" is no verb.
    c.expect_raw(b"\r\r\r\n", "500");
    // A lone CR joins the next line: "\rNOOP" is no verb either.
    c.expect_raw(b"\rNOOP\r\n", "500");
    c.expect_raw(b"NOOP\n", "200");
    // Only the CR right before the LF is part of the line end: "NOOP\r" is no verb.
    c.expect_raw(b"NOOP\r\r\n", "500");
    let mut spaces = vec![b' '; 4096];
    spaces.extend_from_slice(b"\r\n");
    c.expect_raw(&spaces, "500");
    c.expect_raw(b"NO\0OP\r\n", "500");
    c.expect_raw(b"CWD do\0cs\r\n", "501");
    c.expect_raw(b"\0\r\n", "500");
    c.expect("PWD", "257 \"/\"");
    // "MKD x\r" then FIN: no line end, so no command; the server closes quietly.
    c.send_raw(b"MKD cut\r");
    c.s.shutdown(Shutdown::Write).unwrap();
    let rest = c.until_closed();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(!f.root.join("cut").exists() && !f.root.join("cut\r").exists());
    let mut again = Raw::logged_in(&f.addr());
    again.expect("NOOP", "200");
    f.stop();
}

/// (4) Verbs that only Unicode case folding would turn into real ones, verbs with
/// stray high bytes, and overlong UTF-8 in arguments: never recognised.
fn unicode_lookalike_verbs_and_high_bytes_are_unknown(rt) {
    let f = Fixture::start(rt);
    let mut c = Raw::greeted(&f.addr());
    // Before login: "uſer" (long s) uppercases to USER under Unicode rules.
    c.expect_raw("u\u{17f}er alice\r\n".as_bytes(), "500");
    c.expect_raw("\u{ff35}SER alice\r\n".as_bytes(), "500");
    c.expect("USER alice", "331");
    c.expect(&format!("PASS {PASSWORD}"), "230");
    // "lıst" (dotless i) uppercases to LIST; "ſtor" to STOR.
    c.expect_raw("l\u{131}st\r\n".as_bytes(), "500");
    c.expect_raw("\u{17f}tor x\r\n".as_bytes(), "500");
    c.expect_raw(b"RETR\xc3 hello.txt\r\n", "500");
    c.expect_raw(b"\xc3\xa9\xff\xff\r\n", "500");
    c.expect_raw(b"NOOP\xc3\xa9\r\n", "500");
    // Overlong "..": not UTF-8, refused before it is a path.
    c.expect_raw(b"CWD \xc0\xae\xc0\xae\r\n", "501");
    c.expect_raw(b"MKD \xed\xa0\x80\r\n", "501");
    c.expect("PWD", "257 \"/\"");
    assert_eq!(tree(&f.root).len(), 4, "{:?}", tree(&f.root));
    f.stop();
}

/// (5) Telnet IAC: IP/DM before ABOR during a download the client does not read, IAC
/// IAC as a literal 0xFF, 4 KiB of IAC, IAC option negotiation inside a name, a lone
/// IAC before the line end.
fn telnet_iac_sequences_are_decoded(rt) {
    let f = Fixture::start(rt);
    std::fs::write(f.root.join("huge.bin"), vec![5u8; 32 << 20]).unwrap();
    let mut c = Raw::logged_in(&f.addr());
    // 2048 IAC NOPs weigh nothing; the NOOP behind them runs.
    let mut nops = b"\xff\xf1".repeat(2048);
    nops.extend_from_slice(b"NOOP\r\n");
    c.expect_raw(&nops, "200");
    // 4096 IAC bytes are 2048 literal 0xFF: a line, but no verb.
    let mut iacs = vec![0xffu8; 4096];
    iacs.extend_from_slice(b"\r\n");
    c.expect_raw(&iacs, "500");
    // IAC before CR: the stray IAC goes, the line end stays.
    c.expect_raw(b"NOOP\xff\r\n", "200");
    // IAC IAC is one 0xFF, which is not UTF-8: refused, and not read as "ab".
    c.expect_raw(b"MKD a\xff\xffb\r\n", "501");
    assert!(!f.root.join("ab").exists());
    // IAC WILL ECHO inside a name is removed with its option byte.
    c.expect_raw(b"MKD o\xff\xfb\x01k\r\n", "257");
    assert!(f.root.join("ok").is_dir());
    // IAC IP, IAC DM, ABOR while a 32 MiB download is stuck on a client that reads
    // nothing: 426 for the transfer, 226 for the ABOR.
    c.expect("TYPE I", "200");
    let r = c.expect("EPSV", "229");
    let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
    let data = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    data.set_recv_buffer_size(4096).unwrap();
    data.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    c.expect("RETR huge.bin", "150");
    c.send_raw(b"\xff\xf4\xff\xf2ABOR\r\n");
    let r = c.reply();
    assert!(r.starts_with("426 "), "{r}");
    let r = c.reply();
    assert!(r.starts_with("226 "), "{r}");
    c.expect("NOOP", "200");
    drop(data);
    f.stop();
}

/// (6) The same commands pipelined in one write and sent a byte at a time get the same
/// replies, in order.
fn pipelined_and_byte_by_byte_get_identical_replies(rt) {
    let f = Fixture::start(rt);
    let script = format!(
        "USER alice\r\nPASS {PASSWORD}\r\nPWD\r\nTYPE I\r\nSIZE hello.txt\r\nCWD docs\r\n\
         SIZE readme.txt\r\nNOOP\r\nQUIT\r\n"
    );
    let run = |bytewise: bool| {
        let mut c = Raw::connect(&f.addr());
        if bytewise {
            for b in script.as_bytes() {
                c.send_raw(&[*b]);
            }
        } else {
            c.send_raw(script.as_bytes());
        }
        c.until_closed()
    };
    let whole = run(false);
    let bytes = run(true);
    assert_eq!(whole, bytes);
    let codes: Vec<u16> = whole.lines().map(code).collect();
    assert_eq!(codes, [220, 331, 230, 257, 200, 213, 250, 213, 200, 221], "{whole}");
    f.stop();
}

/// (7) A million NOOPs from a client that reads nothing: the server stops reading once
/// its replies back up (the client's writes stall long before the flood is through),
/// then answers every one of them, in order, once the client reads.
fn a_client_that_never_reads_is_not_read_either(rt) {
    let f = Fixture::start(rt);
    // Small client buffers, so that the kernel cannot hide the flood, and a small MSS
    // to go with them: on loopback (MSS 64 KiB) a few-KiB receive window would only
    // reopen through the TCP persist timer once the client reads.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_tcp_mss(1024).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.set_send_buffer_size(4096).unwrap();
    sock.connect(&f.addr().parse::<SocketAddr>().unwrap().into()).unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut c = Raw { s, buf: Vec::new() };
    assert!(c.reply().starts_with("220"));
    c.expect("USER alice", "331");
    c.expect(&format!("PASS {PASSWORD}"), "230");
    const N: usize = 1_000_000;
    let flood = b"NOOP\r\n".repeat(N);
    c.s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut sent = 0;
    let stalled = loop {
        if sent == flood.len() {
            break false;
        }
        let end = (sent + 65536).min(flood.len());
        match c.s.write(&flood[sent..end]) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break true,
            Err(e) => panic!("write: {e}"),
        }
    };
    assert!(
        stalled,
        "the server read all {} bytes of commands while no reply was read",
        flood.len()
    );
    assert!(sent < flood.len() / 4, "{sent} bytes went in before the stall");
    // Now read everything while the rest of the flood and a QUIT go in.
    c.s.set_write_timeout(None).unwrap();
    let mut w = c.s.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&flood[sent..]).unwrap();
        w.write_all(b"QUIT\r\n").unwrap();
    });
    let mut noops = 0usize;
    loop {
        let l = c.line();
        if l.starts_with(b"200 ") {
            noops += 1;
            continue;
        }
        assert!(l.starts_with(b"221 "), "after {noops} NOOPs: {:?}", lossy(&l));
        break;
    }
    writer.join().unwrap();
    assert_eq!(noops, N);
    f.stop();
}

/// (16, 17) PORT and EPRT to another host, a privileged port, the broadcast and
/// multicast addresses, another IPv6 host: refused with no connection attempt;
/// malformed ones are 501/522; the control peer's IPv4-mapped address is the peer and
/// works. The unspecified address names no other host: it is the client's own (lftp
/// sends `EPRT |2|::|port|` over IPv6; `interop.rs` runs it), never a bounce.
fn port_and_eprt_never_reach_a_third_party(rt) {
    let f = Fixture::start(rt);
    let mut c = Raw::logged_in(&f.addr());
    let third = bindable("127.0.0.2").then(|| TcpListener::bind("127.0.0.2:0").unwrap());
    let tport = third.as_ref().map_or(40000, |l| l.local_addr().unwrap().port());
    let (hi, lo) = (tport >> 8, tport & 0xff);
    for line in [
        format!("PORT 127,0,0,2,{hi},{lo}"),
        format!("EPRT |1|127.0.0.2|{tport}|"),
        format!("EPRT |2|::ffff:127.0.0.2|{tport}|"),
        format!("EPRT |2|::1|{tport}|"),
        "PORT 127,0,0,1,0,25".into(),
        "EPRT |1|127.0.0.1|21|".into(),
        "PORT 0,0,0,0,0,25".into(),
        format!("PORT 255,255,255,255,{hi},{lo}"),
        format!("PORT 224,0,0,1,{hi},{lo}"),
        format!("EPRT |2|ff02::1|{tport}|"),
    ] {
        c.expect(&line, "504");
        c.expect("RETR hello.txt", "425");
    }
    for (line, want) in [
        ("PORT 256,0,0,1,0,21", "501"),
        ("PORT 1,2,3,4,5", "501"),
        ("PORT 1,2,3,4,300,1", "501"),
        ("PORT 127,0,0,1,4,1,7", "501"),
        ("PORT -1,0,0,1,4,1", "501"),
        ("PORT 127,0,0,1,99999999999999999999,1", "501"),
        ("PORT", "501"),
        ("EPRT |3|x|1|", "522"),
        ("EPRT |1|1.2.3.4|99999|", "501"),
        ("EPRT |1|127.0.0.1|0|", "501"),
        ("EPRT |1|127.0.0.1|65536|", "501"),
        ("EPRT |2|fe80::1%lo|5000|", "501"),
        ("EPRT", "501"),
        ("EPRT ||||", "501"),
    ] {
        c.expect(line, want);
    }
    c.expect("RETR hello.txt", "425");
    if let Some(l) = third {
        l.set_nonblocking(true).unwrap();
        let got = l.accept();
        assert!(
            matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the third party was connected to: {got:?}"
        );
    }
    // The control peer's own address in IPv4-mapped form is the peer: the download
    // reaches it.
    let mine = TcpListener::bind("127.0.0.1:0").unwrap();
    let mport = mine.local_addr().unwrap().port();
    c.expect(&format!("EPRT |2|::ffff:127.0.0.1|{mport}|"), "200");
    // Accepted by a thread, so that a connection that never comes fails the test
    // through the control reply instead of blocking it.
    let accepted = std::thread::spawn(move || {
        let (mut d, peer) = mine.accept().unwrap();
        d.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut body = Vec::new();
        d.read_to_end(&mut body).unwrap();
        (peer, body)
    });
    c.expect("RETR hello.txt", "150");
    let r = c.reply();
    assert!(r.starts_with("226"), "{r}");
    let (peer, body) = accepted.join().unwrap();
    assert_eq!(body, b"hello, world\n");
    assert_eq!(peer.ip().to_canonical().to_string(), "127.0.0.1");
    // So is the unspecified address.
    let mine = TcpListener::bind("127.0.0.1:0").unwrap();
    let mport = mine.local_addr().unwrap().port();
    c.expect(&format!("PORT 0,0,0,0,{},{}", mport >> 8, mport & 0xff), "200");
    let accepted = std::thread::spawn(move || {
        let (mut d, _) = mine.accept().unwrap();
        d.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut body = Vec::new();
        d.read_to_end(&mut body).unwrap();
        body
    });
    c.expect("RETR hello.txt", "150");
    let r = c.reply();
    assert!(r.starts_with("226"), "{r}");
    assert_eq!(accepted.join().unwrap(), b"hello, world\n");
    f.stop();
}

/// (19) Passive ports are spread over the range, not handed out in order: over 1,000
/// PASVs on a 256-port range, next-port-up follows the previous one rarely and most of
/// the range is used.
fn pasv_ports_are_spread_over_the_range(rt) {
    let slot = u16::from(rt == "smol");
    let base = 21_000 + (std::process::id() % 15) as u16 * 512 + slot * 256;
    let range = base..=base + 255;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\npassive_ports = \"{}-{}\"\nruntime = \"{rt}\"\n\
         [site]\nroot = {:?}\n[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n",
        base,
        base + 255,
        root.display().to_string(),
        password_hash()
    );
    let f = Fixture::from_toml(rt, tmp, root, &text);
    let mut c = Raw::logged_in(&f.addr());
    let mut ports = Vec::new();
    for _ in 0..1000 {
        let r = c.expect("PASV", "227");
        let inner = &r[r.find('(').unwrap() + 1..r.find(')').unwrap()];
        let n: Vec<u16> = inner.split(',').map(|x| x.parse().unwrap()).collect();
        let port = n[4] * 256 + n[5];
        assert!(range.contains(&port), "{port} outside {range:?}");
        ports.push(port);
    }
    let successors = ports.windows(2).filter(|w| w[1] == w[0].wrapping_add(1)).count();
    let distinct: BTreeSet<u16> = ports.iter().copied().collect();
    assert!(successors < 20, "{successors} of 999 PASV ports were the previous one + 1");
    assert!(distinct.len() > 200, "only {} distinct ports", distinct.len());
    f.stop();
}

/// (22) After EPSV ALL, PORT, EPRT and PASV are refused every time, also after a
/// transfer, a failed one and an aborted one; EPSV keeps working.
fn epsv_all_refuses_every_other_data_command_for_good(rt) {
    let f = Fixture::start(rt);
    std::fs::write(f.root.join("huge.bin"), vec![1u8; 32 << 20]).unwrap();
    let mut c = Raw::logged_in(&f.addr());
    c.expect("EPSV ALL", "200");
    let refused = |c: &mut Raw| {
        c.expect("PASV", "503");
        c.expect("PORT 127,0,0,1,200,10", "503");
        c.expect("EPRT |1|127.0.0.1|51210|", "503");
    };
    refused(&mut c);
    c.expect("RETR hello.txt", "425");
    let mut d = c.epsv();
    c.expect("RETR hello.txt", "150");
    let mut body = Vec::new();
    d.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"hello, world\n");
    c.expect_raw(b"", "226");
    refused(&mut c);
    let d = c.epsv();
    c.expect("RETR missing.bin", "550");
    refused(&mut c);
    drop(d);
    let d = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    d.set_recv_buffer_size(4096).unwrap();
    let r = c.expect("EPSV", "229");
    let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
    d.connect(&SocketAddr::from(([127, 0, 0, 1], port)).into()).unwrap();
    c.expect("RETR huge.bin", "150");
    c.send_raw(b"ABOR\r\n");
    assert!(c.reply().starts_with("426"));
    assert!(c.reply().starts_with("226"));
    drop(d);
    refused(&mut c);
    f.stop();
}

/// (23) An upload whose client sends nothing ends with 426 at the data timeout, and
/// leaves nothing; during a silent upload ABOR is answered at once.
fn a_silent_upload_times_out_and_abor_is_served_meanwhile(rt) {
    let f = Fixture::with_config(rt, "", "[timeouts]\ndata = 1\n");
    let mut c = Raw::logged_in(&f.addr());
    let d = c.epsv();
    c.expect("STOR silent.bin", "150");
    let r = c.reply();
    assert!(r.starts_with("426 "), "{r}");
    c.expect("NOOP", "200");
    drop(d);
    f.stop_keeping_files_then(|root| {
        assert!(!root.join("silent.bin").exists());
    });
    let f = Fixture::start(rt);
    let mut c = Raw::logged_in(&f.addr());
    let d = c.epsv();
    c.expect("STOR silent.bin", "150");
    c.send_raw(b"ABOR\r\n");
    assert!(c.reply().starts_with("426"));
    assert!(c.reply().starts_with("226"));
    c.expect("NOOP", "200");
    drop(d);
    assert!(!f.root.join("silent.bin").exists());
    f.assert_no_temp_files();
    f.stop();
}

/// (28) REST at the extremes: negative and non-numeric are 501; an offset past the
/// end of the file makes no upload (no sparse giant), leaves the file as it was, and
/// the session goes on; a download from past the end is empty, never an error on the
/// wire.
fn rest_at_the_extremes(rt) {
    let f = Fixture::start(rt);
    let mut c = Raw::logged_in(&f.addr());
    c.expect("TYPE I", "200");
    c.expect("REST -1", "501");
    c.expect("REST x", "501");
    c.expect("REST 18446744073709551616", "501");
    for offset in ["9223372036854775807", "18446744073709551615", "1000000000000", "14"] {
        for target in ["hello.txt", "new.bin"] {
            c.expect(&format!("REST {offset}"), "350");
            let mut d = c.epsv();
            let r = c.cmd(&format!("STOR {target}"));
            if r.starts_with("150") {
                let _ = d.write_all(b"tail");
                drop(d);
                let r = c.reply();
                assert!(!r.starts_with("226"), "REST {offset} + STOR {target} -> {r}");
            } else {
                assert!(r.starts_with('4') || r.starts_with('5'), "{r}");
            }
            c.expect("NOOP", "200");
            assert_eq!(std::fs::read(f.root.join("hello.txt")).unwrap(), b"hello, world\n");
            let new = std::fs::metadata(f.root.join("new.bin"));
            assert!(new.is_err(), "REST {offset} + STOR new.bin made {new:?}");
        }
        c.expect(&format!("REST {offset}"), "350");
        let mut d = c.epsv();
        let r = c.cmd("RETR hello.txt");
        if r.starts_with("150") {
            let mut got = Vec::new();
            d.read_to_end(&mut got).unwrap();
            assert!(got.is_empty(), "{got:?}");
            let r = c.reply();
            assert!(r.starts_with("226"), "{r}");
        } else {
            assert!(r.starts_with('5') || r.starts_with('4'), "{r}");
        }
    }
    // Inside the file, REST + STOR still overwrites in place; REST + APPE appends.
    c.expect("REST 7", "350");
    let mut d = c.epsv();
    c.expect("STOR hello.txt", "150");
    d.write_all(b"there\n").unwrap();
    drop(d);
    c.expect_raw(b"", "226");
    assert_eq!(std::fs::read(f.root.join("hello.txt")).unwrap(), b"hello, there\n");
    f.assert_no_temp_files();
    f.stop();
}

/// (29) Many concurrent STOU into one directory: every upload gets its own name and
/// keeps its own bytes; a STOU that fails leaves nothing.
fn concurrent_stou_never_loses_or_shares_a_name(rt) {
    let f = Fixture::start(rt);
    let sessions = 50;
    let per = 4;
    let addr = f.addr();
    let threads: Vec<_> = (0..sessions)
        .map(|i| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = Raw::logged_in(&addr);
                c.expect("TYPE I", "200");
                let mut names = Vec::new();
                for k in 0..per {
                    let mut d = c.epsv();
                    let r = c.expect("STOU", "150");
                    let name = r.trim_end().strip_prefix("150 FILE: ").expect(&r).to_string();
                    d.write_all(&random_bytes(1000 + i * per + k, (i * per + k) as u64)).unwrap();
                    drop(d);
                    c.expect_raw(b"", "226");
                    names.push((name, i * per + k));
                }
                // A STOU that cannot start: no data channel.
                c.expect("STOU", "425");
                c.expect("QUIT", "221");
                names
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().unwrap());
    }
    let unique: BTreeSet<&String> = all.iter().map(|(n, _)| n).collect();
    assert_eq!(unique.len(), sessions * per, "names were shared");
    for (name, k) in &all {
        let got = std::fs::read(f.root.join(name)).unwrap();
        assert!(got == random_bytes(1000 + k, *k as u64), "{name} differs");
    }
    // The standard site plus the uploads, nothing else (no temporaries, no orphans).
    let entries = std::fs::read_dir(&f.root).unwrap().count();
    assert_eq!(entries, 3 + sessions * per);
    f.stop();
}

/// (34) A traversal corpus against every path-taking command: whatever the reply, no
/// byte outside the root is read, listed, written, renamed or removed.
fn traversal_corpus_never_leaves_the_root(rt) {
    let f = Fixture::start(rt);
    let outside = f.scratch();
    std::fs::write(outside.join("outside-secret.txt"), b"OUTSIDE SECRET\n").unwrap();
    std::fs::create_dir_all(outside.join("outside-dir")).unwrap();
    let above = f.root.parent().unwrap().to_path_buf();
    let before = tree(&above);
    let long = "a/".repeat(1990);
    let corpus: Vec<Vec<u8>> = [
        "..",
        "../scratch/outside-secret.txt",
        "../scratch",
        "/../scratch/outside-secret.txt",
        "../../../../../../etc/passwd",
        "/../../etc",
        "~root",
        "~/../scratch",
        "//../scratch",
        "..%2fscratch%2foutside-secret.txt",
        "\\..\\..\\scratch\\outside-secret.txt",
        "C:\\",
        "\\\\?\\C:\\scratch",
        "docs/../../scratch/outside-secret.txt",
        "./../scratch/./outside-dir",
        &long,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        b"..\0/scratch".to_vec(),
        b"\xc0\xae\xc0\xae/scratch".to_vec(),
        [b"x/".repeat(2100), b"y".to_vec()].concat(),
    ])
    .collect();
    // (verb, prefix, data channel: None, Some(true) = download, Some(false) = upload)
    let commands: &[(&str, &str, Option<bool>)] = &[
        ("RETR", "", Some(true)),
        ("STOR", "", Some(false)),
        ("APPE", "", Some(false)),
        ("STOU", "", Some(false)),
        ("LIST", "", Some(true)),
        ("LIST", "-la ", Some(true)),
        ("NLST", "", Some(true)),
        ("MLSD", "", Some(true)),
        ("DELE", "", None),
        ("RMD", "", None),
        ("MKD", "", None),
        ("RNFR", "", None),
        ("RNTO", "", None),
        ("SIZE", "", None),
        ("MDTM", "", None),
        ("MDTM", "20200101000000 ", None),
        ("MFMT", "20200101000000 ", None),
        ("MLST", "", None),
        ("STAT", "", None),
        ("CWD", "", None),
        ("SITE", "CHMOD 777 ", None),
    ];
    let mut c = Raw::logged_in(&f.addr());
    c.expect("TYPE I", "200");
    let leaked = |what: &[u8]| {
        let s = lossy(what);
        // Names may echo back (a path that resolves to /scratch/... inside the root is
        // fine); contents from outside may not.
        s.contains("OUTSIDE SECRET") || s.contains("root:x:0")
    };
    let mut tried = 0;
    for path in &corpus {
        for &(verb, prefix, data) in commands {
            if verb == "RNTO" {
                std::fs::write(f.root.join("victim.txt"), b"victim").unwrap();
                c.expect("RNFR /victim.txt", "350");
            }
            let d = data.map(|_| c.epsv());
            let mut line = format!("{verb} {prefix}").into_bytes();
            line.extend_from_slice(path);
            line.extend_from_slice(b"\r\n");
            c.send_raw(&line);
            let r = c.reply();
            assert!(!leaked(r.as_bytes()), "{verb} {}: {r}", lossy(path));
            if r.starts_with("150") {
                let mut d = d.unwrap();
                if data == Some(true) {
                    let mut got = Vec::new();
                    d.read_to_end(&mut got).unwrap();
                    assert!(!leaked(&got), "{verb} {}: {}", lossy(path), lossy(&got));
                } else {
                    d.write_all(b"planted").unwrap();
                }
                drop(d);
                let r = c.reply();
                assert!(!leaked(r.as_bytes()), "{verb} {}: {r}", lossy(path));
            }
            c.expect("CWD /", "250");
            tried += 1;
        }
    }
    assert_eq!(tried, corpus.len() * commands.len());
    c.expect("QUIT", "221");
    // Nothing above the root changed (the root itself may have gained files).
    let after: Vec<_> = tree(&above).into_iter().filter(|(n, ..)| !n.starts_with("site")).collect();
    let before: Vec<_> = before.into_iter().filter(|(n, ..)| !n.starts_with("site")).collect();
    assert_eq!(after, before);
    assert!(std::fs::read(outside.join("outside-secret.txt")).unwrap() == b"OUTSIDE SECRET\n");
    f.assert_no_temp_files();
    f.stop();
}

/// (41) Names on disk holding CR, LF, a forged reply or quotes: no reply on the
/// control channel ever carries a raw CR or LF from a name (every reply line is a
/// well-formed line of its reply), and quotes are doubled in 257.
fn names_with_line_breaks_never_forge_replies(rt) {
    let f = Fixture::start(rt);
    let evil = f.root.join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    for name in ["a\r\n226 forged", "b\n421 forged", "c\rforged", "say \"hi\""] {
        std::fs::write(evil.join(name), b"x").unwrap();
    }
    std::fs::create_dir_all(f.root.join("q \"dir\"")).unwrap();
    let mut c = Raw::logged_in(&f.addr());
    c.expect("CWD q \"dir\"", "250");
    c.expect("PWD", "257 \"/q \"\"dir\"\"\" ");
    c.expect("CWD /evil", "250");
    for cmd in ["STAT .", "STAT /evil", "MLST say \"hi\"", "STAT say \"hi\"", "PWD"] {
        c.send_raw(format!("{cmd}\r\n").as_bytes());
        // Read raw lines: each must belong to this reply.
        let first = c.line();
        let code = first[..3].to_vec();
        let mut line = first.clone();
        let mut lines = vec![first];
        while !(line.starts_with(&code) && line[3] == b' ') {
            line = c.line();
            assert!(
                line.starts_with(&code) || line.starts_with(b" "),
                "{cmd}: a line that is not part of the reply: {:?}",
                lossy(&line)
            );
            lines.push(line.clone());
        }
        for l in &lines {
            let body = &l[..l.len() - 2];
            assert!(!body.contains(&b'\r') && !body.contains(&b'\n'), "{cmd}: {:?}", lossy(l));
        }
        // The next reply is the next command's: nothing was forged behind this one.
        c.expect("NOOP", "200");
    }
    f.stop();
}

/// (42) Glob bombs: a pathological pattern against 200-character names, nested
/// wildcards, brace groups; each answered, and another session is served meanwhile.
fn glob_bombs_are_answered(rt) {
    let f = Fixture::start(rt);
    let dir = f.root.join("many");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..300 {
        std::fs::write(dir.join(format!("{}{i:03}", "a".repeat(197))), b"").unwrap();
    }
    let mut c = Raw::logged_in(&f.addr());
    let mut other = Raw::logged_in(&f.addr());
    c.expect("CWD many", "250");
    let braces = "{a,b}".repeat(20);
    for pattern in [
        "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b".to_string(),
        "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*?".to_string(),
        "*/*/*/*/*/*".to_string(),
        braces.clone(),
        format!("{}*", "?".repeat(199)),
    ] {
        for verb in ["LIST", "NLST"] {
            let mut d = c.epsv();
            let r = c.cmd(&format!("{verb} {pattern}"));
            if r.starts_with("150") {
                let mut got = Vec::new();
                d.read_to_end(&mut got).unwrap();
                let r = c.reply();
                assert!(r.starts_with("226"), "{verb} {pattern}: {r}");
            } else {
                assert!(r.starts_with("550") || r.starts_with("450"), "{verb} {pattern}: {r}");
            }
            other.expect("NOOP", "200");
        }
        let r = c.cmd(&format!("STAT {pattern}"));
        assert!(r.starts_with("21") || r.starts_with("550"), "STAT {pattern}: {r}");
    }
    // The matcher still matches: 200 a's then a digit run.
    let mut d = c.epsv();
    c.expect("NLST a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*299", "150");
    let mut got = Vec::new();
    d.read_to_end(&mut got).unwrap();
    assert_eq!(lossy(&got), format!("{}299\r\n", "a".repeat(197)));
    c.expect_raw(b"", "226");
    f.stop();
}

/// (45) A flood five times over the connection limit gets 421s; after 2,000
/// connect/close cycles exactly the limit is still admitted (no slot leaked).
fn connection_floods_and_cycles_leak_no_slot(rt) {
    let max = 8;
    let f = Fixture::with_config(rt, &format!("max_connections = {max}"), "");
    let addr = f.addr();
    // The flood: 5 x max at once, nobody logs in.
    let mut flood: Vec<Raw> = (0..5 * max).map(|_| Raw::connect(&addr)).collect();
    let codes: Vec<u16> = flood.iter_mut().map(|c| code(&c.reply())).collect();
    assert_eq!(codes.iter().filter(|&&c| c == 220).count(), max, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 421).count(), 4 * max, "{codes:?}");
    drop(flood);
    // Connect/close cycles, half closed by QUIT, half just dropped.
    for i in 0..2000 {
        let mut c = Raw::connect(&addr);
        let r = c.reply();
        if i % 2 == 0 && r.starts_with("220") {
            c.expect("QUIT", "221");
            c.until_closed();
        }
    }
    // Exactly max again: a slot is free once the server has seen its connection close,
    // so a refused connection is retried (boundedly) until max are in.
    let mut held = Vec::new();
    let mut attempts = 0;
    while held.len() < max {
        attempts += 1;
        assert!(attempts < 10_000, "only {} of {max} admitted: slots leaked", held.len());
        let mut c = Raw::connect(&addr);
        if c.reply().starts_with("220") {
            held.push(c);
        }
    }
    let mut extra = Raw::connect(&addr);
    let r = extra.reply();
    assert!(r.starts_with("421"), "{r}");
    for c in &mut held {
        c.expect("NOOP", "200");
    }
    f.stop();
}

/// (46) Slow loris: a line trickled a byte at a time never completes, so the idle
/// timer is never reset and the session is closed; before login the login timer does
/// the same.
fn slow_loris_is_cut_by_the_idle_and_login_timers(rt) {
    let f = Fixture::with_config(rt, "", "[timeouts]\ncontrol = 2\nlogin = 2\n");
    for login in [false, true] {
        let mut c = if login { Raw::logged_in(&f.addr()) } else { Raw::greeted(&f.addr()) };
        let mut w = c.s.try_clone().unwrap();
        let trickle = std::thread::spawn(move || {
            // At most 60 s of trickle; it ends when the server closes.
            for _ in 0..240 {
                if w.write_all(b"N").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        let r = c.reply();
        assert!(r.starts_with("421 "), "{r}");
        c.until_closed();
        trickle.join().unwrap();
    }
    f.stop();
}

/// (15) TLS 1.3 KeyUpdates on the control channel: 10,000 of them, each few followed
/// by a command, keep the session working; a stream of them with no data in between
/// is cut off (rustls allows 32), and the server goes on serving.
fn key_updates_are_bounded(rt) {
    let f = Fixture::with_tls(rt, "");
    let (mut tls, mut buf) = tls_login(&f);
    for round in 0..1000 {
        for _ in 0..10 {
            tls.conn.refresh_traffic_keys().unwrap();
        }
        let r = tls_cmd(&mut tls, &mut buf, "NOOP").unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(r.starts_with("200"), "{r}");
    }
    let (mut tls, _) = tls_login(&f);
    let mut cut = false;
    for _ in 0..10_000 {
        if tls.conn.refresh_traffic_keys().is_err() || tls.flush().is_err() {
            cut = true;
            break;
        }
    }
    if !cut {
        let mut rest = Vec::new();
        let end = tls.read_to_end(&mut rest);
        assert!(end.is_err() || rest.is_empty(), "still talking: {end:?} {rest:?}");
    }
    let (mut tls, mut buf) = tls_login(&f);
    assert!(tls_cmd(&mut tls, &mut buf, "NOOP").unwrap().starts_with("200"));
    f.stop();
}

}

/// Stops a fixture, then lets `check` look at the files it leaves.
trait StopThen {
    fn stop_keeping_files_then(self, check: impl FnOnce(&Path));
}

impl StopThen for Fixture {
    fn stop_keeping_files_then(mut self, check: impl FnOnce(&Path)) {
        self.stop_keeping_files();
        check(&self.root);
        self.assert_no_temp_files();
    }
}
