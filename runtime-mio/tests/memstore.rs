//! The mio runtime over the core's in-memory storage, driven by a tiny blocking client:
//! login, listing, download, upload, and a graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::{Server, SessionConfig};
use wharf_runtime_mio::{start, MioConfig, RunningServer};

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

    fn epsv(&mut self, addr: SocketAddr) -> TcpStream {
        let r = self.expect("EPSV", "229");
        let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
        TcpStream::connect((addr.ip(), port)).unwrap()
    }
}

fn serve(shards: usize) -> (RunningServer, Arc<MemStorage>) {
    serve_on("127.0.0.1:0", shards, 1000)
}

fn serve_on(listen: &str, shards: usize, max: usize) -> (RunningServer, Arc<MemStorage>) {
    let storage = Arc::new(MemStorage::new());
    storage.add_file("/hello.txt", b"hello, world\n");
    let users = Arc::new(MemUsers::new().with("alice", "secret", &[]));
    let config = Arc::new(SessionConfig {
        allow_anonymous: true,
        ..SessionConfig::default()
    });
    let cfg = MioConfig {
        shards,
        ..MioConfig::default()
    };
    let make = move |i: usize| Server::new(config.clone(), i as u64, shards as u64, max);
    let listen = vec![listen.parse().unwrap()];
    let server = start(listen, cfg, make, storage.clone(), users).unwrap();
    (server, storage)
}

#[test]
fn login_list_retrieve_store_quit() {
    let (server, storage) = serve(2);
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

#[test]
fn shutdown_says_421_to_idle_sessions() {
    let (server, _) = serve(1);
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

#[test]
fn many_sessions_over_shards() {
    let (server, _) = serve(2);
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

#[test]
fn ipv6_passive_download() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    }
    let (server, _) = serve_on("[::1]:0", 1, 10);
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

#[test]
fn connections_over_the_limit_are_refused_with_421() {
    let (server, _) = serve_on("127.0.0.1:0", 1, 1);
    let addr = server.local_addrs()[0];
    let mut first = Client::connect(addr);
    assert!(first.reply().starts_with("220"));
    let mut second = Client::connect(addr);
    assert!(second.reply().starts_with("421"));
    first.expect("QUIT", "221");
    server.shutdown(Duration::from_secs(5));
    server.wait().unwrap();
}

#[test]
fn shutdown_lets_a_running_download_finish() {
    let (server, storage) = serve(1);
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

#[test]
fn abor_stops_a_running_download() {
    let (server, storage) = serve(1);
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
