//! The runtimes over the core's in-memory storage, driven by a tiny blocking client:
//! the runtime contract (login, listing, transfers, ABOR, timers, passive ports, peers,
//! limits, shutdown, release of files) on every runtime through `per_runtime!`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wharf_core::Timeouts;
use wharf_tests::harness::{free_port, memstore_session, start_memstore, start_memstore_with};

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    /// Reads one (possibly multi-line) reply; returns its last line.
    fn reply(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.len() >= 4, "short reply {line:?}");
        if line.as_bytes()[3] == b'-' {
            let code = line[..3].to_string();
            loop {
                line.clear();
                self.r.read_line(&mut line).unwrap();
                if line.starts_with(&format!("{code} ")) || line.is_empty() {
                    break;
                }
            }
        }
        line.trim_end().to_string()
    }

    fn cmd(&mut self, c: &str) -> String {
        self.w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        self.reply()
    }

    fn expect(&mut self, c: &str, code: &str) -> String {
        let r = self.cmd(c);
        assert!(r.starts_with(code), "{c} -> {r}");
        r
    }

    /// Reads the next reply's last line, for a reply that arrives without a command.
    fn next(&mut self) -> String {
        self.reply()
    }

    fn login(&mut self) {
        assert!(self.reply().starts_with("220"));
        self.expect("USER alice", "331");
        self.expect("PASS secret", "230");
    }

    fn epsv(&mut self, addr: SocketAddr) -> TcpStream {
        let r = self.expect("EPSV", "229");
        let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
        TcpStream::connect((addr.ip(), port)).unwrap()
    }
}

wharf_tests::per_runtime! {
fn login_list_retrieve_store_quit(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 2, 1000);
    let addr = server.local_addrs()[0];
    assert_ne!(addr.port(), 0);
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    c.expect("USER alice", "331");
    c.expect("PASS secret", "230");
    c.expect("TYPE I", "200");

    let mut d = c.epsv(addr);
    c.expect("LIST", "150");
    let mut listing = String::new();
    d.read_to_string(&mut listing).unwrap();
    assert!(listing.contains("hello.txt"), "{listing}");
    assert!(c.reply().starts_with("226"));

    let mut d = c.epsv(addr);
    c.expect("RETR hello.txt", "150");
    let mut body = Vec::new();
    d.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"hello, world\n");
    assert!(c.reply().starts_with("226"));

    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut d = c.epsv(addr);
    c.expect("STOR up.bin", "150");
    d.write_all(&payload).unwrap();
    drop(d);
    assert!(c.reply().starts_with("226"));
    assert_eq!(storage.read_file("/up.bin").as_deref(), Some(&payload[..]));

    c.expect("QUIT", "221");
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

fn shutdown_says_421_to_idle_sessions(rt) {
    let (server, _) = start_memstore(rt, "127.0.0.1:0", 1, 1000);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    c.expect("USER anonymous", "331");
    c.expect("PASS x@y", "230");
    server.shutdown(Duration::from_secs(5));
    let r = c.reply();
    assert!(r.starts_with("421"), "{r}");
    server.wait().unwrap();
}

fn many_sessions_over_shards(rt) {
    let (server, _) = start_memstore(rt, "127.0.0.1:0", 2, 1000);
    let addr = server.local_addrs()[0];
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(addr)).collect();
    for c in &mut clients {
        assert!(c.reply().starts_with("220"));
        c.expect("USER alice", "331");
        c.expect("PASS secret", "230");
    }
    for c in &mut clients {
        c.expect("PWD", "257");
    }
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

fn ipv6_passive_download(rt) {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let (server, _) = start_memstore(rt, "[::1]:0", 1, 10);
    let addr = server.local_addrs()[0];
    assert!(addr.is_ipv6());
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    c.expect("USER alice", "331");
    c.expect("PASS secret", "230");
    let mut d = c.epsv(addr);
    c.expect("RETR hello.txt", "150");
    let mut body = Vec::new();
    d.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"hello, world\n");
    assert!(c.reply().starts_with("226"));
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

fn connections_over_the_limit_are_refused_with_421(rt) {
    let (server, _) = start_memstore(rt, "127.0.0.1:0", 1, 1);
    let addr = server.local_addrs()[0];
    let mut first = Client::connect(addr);
    assert!(first.reply().starts_with("220"));
    let mut second = Client::connect(addr);
    assert!(second.reply().starts_with("421"));
    first.expect("QUIT", "221");
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

fn shutdown_lets_a_running_download_finish(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 1, 1000);
    let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 253) as u8).collect();
    storage.add_file("/big.bin", &big);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    c.expect("USER alice", "331");
    c.expect("PASS secret", "230");
    c.expect("TYPE I", "200");
    let mut d = c.epsv(addr);
    c.expect("RETR big.bin", "150");
    // The body is far larger than the socket buffers, so the transfer is still running
    // (blocked on us) when the shutdown arrives.
    let mut first = vec![0u8; 1024];
    d.read_exact(&mut first).unwrap();
    server.shutdown(Duration::from_secs(30));
    let mut rest = Vec::new();
    d.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert!(first == big, "body differs ({} bytes)", first.len());
    assert!(c.reply().starts_with("226"));
    assert!(c.reply().starts_with("421"));
    server.wait().unwrap();
}

fn abor_stops_a_running_download(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 1, 1000);
    let big: Vec<u8> = vec![7u8; 8_000_000];
    storage.add_file("/big.bin", &big);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    assert!(c.reply().starts_with("220"));
    c.expect("USER alice", "331");
    c.expect("PASS secret", "230");
    c.expect("TYPE I", "200");
    let mut d = c.epsv(addr);
    c.expect("RETR big.bin", "150");
    let mut first = vec![0u8; 1024];
    d.read_exact(&mut first).unwrap();
    c.w.write_all(b"ABOR\r\n").unwrap();
    assert!(c.reply().starts_with("426"));
    assert!(c.reply().starts_with("226"));
    // The data connection is closed: whatever was in flight ends, short of the file.
    let mut rest = Vec::new();
    let _ = d.read_to_end(&mut rest);
    assert!(1024 + rest.len() < big.len());
    c.expect("NOOP", "200");
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

/// A passive range with one port: while one session holds it, another gets 425 at once
/// (and keeps working); once the first transfer is over the port serves again.
fn a_full_passive_range_is_425_and_stalls_nobody(rt) {
    let port = free_port();
    let session = wharf_core::SessionConfig {
        passive_ports: port..=port,
        ..memstore_session()
    };
    let (server, _) = start_memstore_with(rt, "127.0.0.1:0", 1, 100, session);
    let addr = server.local_addrs()[0];
    let mut a = Client::connect(addr);
    a.login();
    // Listening, not yet connected: the listener holds the port (it closes once it has
    // accepted).
    let r = a.expect("EPSV", "229");
    assert!(r.contains(&format!("|||{port}|")), "{r}");
    let mut b = Client::connect(addr);
    b.login();
    let r = b.expect("EPSV", "425");
    assert!(r.contains("passive port"), "{r}");
    b.expect("NOOP", "200");
    let mut d = TcpStream::connect((addr.ip(), port)).unwrap();
    a.expect("RETR hello.txt", "150");
    let mut body = Vec::new();
    d.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"hello, world\n");
    assert!(a.next().starts_with("226"));
    // The server closed the data connection first (TIME-WAIT on its side): the port is
    // usable again all the same.
    let mut d = b.epsv(addr);
    b.expect("LIST", "150");
    let mut listing = String::new();
    d.read_to_string(&mut listing).unwrap();
    assert!(listing.contains("hello.txt"), "{listing}");
    assert!(b.next().starts_with("226"));
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

/// A passive connection from another address than the control peer's is closed, and
/// the listener stays armed for the real client.
fn passive_connections_from_strangers_are_dropped(rt) {
    let stranger_ip: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    if std::net::TcpListener::bind((stranger_ip, 0)).is_err() {
        eprintln!("127.0.0.2 is not a local address here; skipped");
        return;
    }
    let (server, _) = start_memstore(rt, "127.0.0.1:0", 1, 100);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.login();
    let r = c.expect("EPSV", "229");
    let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
    let thief = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    thief.bind(&std::net::SocketAddr::new(stranger_ip, 0).into()).unwrap();
    thief
        .connect(&std::net::SocketAddr::new(addr.ip(), port).into())
        .unwrap();
    let mut thief: TcpStream = thief.into();
    thief.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server closes it without a byte (EOF, or a reset).
    let mut got = Vec::new();
    let _ = thief.read_to_end(&mut got);
    assert!(got.is_empty());
    let mut d = TcpStream::connect((addr.ip(), port)).unwrap();
    c.expect("RETR hello.txt", "150");
    let mut body = Vec::new();
    d.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"hello, world\n");
    assert!(c.next().starts_with("226"));
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

/// ABOR is heard while a download runs at full speed (the client reads as fast as it
/// can, so the transfer never waits and reports progress all along): the transfer
/// stops short of the body.
fn abor_is_heard_during_a_download_at_full_speed(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 2, 100);
    let size = 64 << 20;
    storage.add_file("/huge.bin", &vec![3u8; size]);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.login();
    c.expect("TYPE I", "200");
    let mut d = c.epsv(addr);
    c.expect("RETR huge.bin", "150");
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            match d.read(&mut buf) {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    });
    c.w.write_all(b"ABOR\r\n").unwrap();
    let r = c.next();
    assert!(r.starts_with("426") || r.starts_with("226"), "{r}");
    if r.starts_with("426") {
        assert!(c.next().starts_with("226"));
    }
    let got = reader.join().unwrap();
    assert!(got < size, "the whole body went through before ABOR was heard");
    c.expect("NOOP", "200");
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

/// ABOR during an upload: 426 + 226, and nothing lands (partial uploads are not kept).
fn abor_during_an_upload_keeps_nothing(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 1, 100);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.login();
    let mut d = c.epsv(addr);
    c.expect("STOR part.bin", "150");
    d.write_all(&[1u8; 100_000]).unwrap();
    c.w.write_all(b"ABOR\r\n").unwrap();
    assert!(c.next().starts_with("426"));
    assert!(c.next().starts_with("226"));
    c.expect("NOOP", "200");
    assert!(!storage.exists("/part.bin"));
    drop(d);
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
    assert_eq!(storage.paths(), vec!["/hello.txt".to_string()]);
}

/// A client that vanishes mid-upload (control connection closed, data connection left
/// open) leaves nothing behind once the server has let go of the session.
fn a_vanished_client_leaves_no_upload(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 1, 100);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.login();
    let mut d = c.epsv(addr);
    c.expect("STOR gone.bin", "150");
    d.write_all(&[2u8; 100_000]).unwrap();
    drop(c);
    // Every session and every file it held is released by the time `wait` returns.
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
    drop(d);
    assert_eq!(storage.paths(), vec!["/hello.txt".to_string()]);
}

/// Timers come from the session's `poll_timeout`: a login that never happens ends with
/// 421 after the login timeout, never before it.
fn the_login_timer_closes_a_silent_connection(rt) {
    let timeouts = Timeouts {
        login: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let session = wharf_core::SessionConfig {
        timeouts,
        ..memstore_session()
    };
    let (server, _) = start_memstore_with(rt, "127.0.0.1:0", 1, 100, session);
    let mut c = Client::connect(server.local_addrs()[0]);
    let started = Instant::now();
    assert!(c.next().starts_with("220"));
    let r = c.next();
    assert!(r.starts_with("421"), "{r}");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
    let mut rest = Vec::new();
    c.r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

/// A download the client stops reading is aborted by the stall timer (progress reports
/// re-arm it only while bytes move); the session goes on.
fn a_stalled_download_is_aborted(rt) {
    let timeouts = Timeouts {
        transfer_stall: Duration::from_secs(1),
        ..Timeouts::default()
    };
    let session = wharf_core::SessionConfig {
        timeouts,
        ..memstore_session()
    };
    let (server, storage) = start_memstore_with(rt, "127.0.0.1:0", 1, 100, session);
    storage.add_file("/big.bin", &vec![9u8; 16_000_000]);
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.login();
    c.expect("TYPE I", "200");
    let d = c.epsv(addr);
    c.expect("RETR big.bin", "150");
    let r = c.next();
    assert!(r.starts_with("426") && r.contains("No progress"), "{r}");
    c.expect("NOOP", "200");
    drop(d);
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

/// TYPE A both ways over raw sockets: LF becomes CR LF on the wire and back.
fn type_a_converts_line_ends_both_ways(rt) {
    let (server, storage) = start_memstore(rt, "127.0.0.1:0", 1, 100);
    storage.add_file("/unix.txt", b"one\ntwo\n\nthree");
    let addr = server.local_addrs()[0];
    let mut c = Client::connect(addr);
    c.login();
    c.expect("TYPE A", "200");
    let mut d = c.epsv(addr);
    c.expect("RETR unix.txt", "150");
    let mut body = Vec::new();
    d.read_to_end(&mut body).unwrap();
    assert_eq!(body, b"one\r\ntwo\r\n\r\nthree");
    assert!(c.next().starts_with("226"));
    let mut d = c.epsv(addr);
    c.expect("STOR dos.txt", "150");
    d.write_all(b"a\r\nb\r").unwrap();
    d.write_all(b"\nc\r").unwrap();
    drop(d);
    assert!(c.next().starts_with("226"));
    assert_eq!(storage.read_file("/dos.txt").as_deref(), Some(&b"a\nb\nc\r"[..]));
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}
}
