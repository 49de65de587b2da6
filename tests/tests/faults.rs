//! A bug met by one session ends that session alone (issue 12, item 5): a panic in the
//! storage (on a worker), in a file read (on the event loop, or in a transfer task), in
//! the authenticator, or in the log sink (on the event loop) gets that session a `421`,
//! releases every slot it held, and leaves the shard, the worker pool and every other
//! session running. The panics are injected through the extension points a deployment
//! plugs in (`Storage`, `Download`, `Authenticator`, `LogSink`), on both runtimes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use wharf_core::backend::{Download, Upload};
use wharf_core::log::{LogRecord, LogSink};
use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::{
    AuthError, Authenticator, DirEntry, FsError, Metadata, Principal, SessionConfig, Sites,
    Storage, VPath, WriteMode,
};
use wharf_server::{start_runtime, RuntimeSetup};
use wharf_tests::harness::runtime_kind;

/// MemStorage, except that opening `/boom-open` panics (on a worker) and reading
/// `/boom-read` panics (where file bodies are read: the event loop, a transfer task).
struct Faulty(MemStorage);

struct Exploding;

impl Read for Exploding {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        panic!("injected: a file read panics");
    }
}

impl Download for Exploding {}

impl Storage for Faulty {
    fn stat(&self, p: &VPath) -> Result<Metadata, FsError> {
        self.0.stat(p)
    }
    fn read_dir(&self, p: &VPath) -> Result<Vec<DirEntry>, FsError> {
        self.0.read_dir(p)
    }
    fn open_read(&self, p: &VPath, at: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        match p.as_str() {
            "/boom-open" => panic!("injected: opening a file panics"),
            "/boom-read" => Ok((Box::new(Exploding), 10)),
            _ => self.0.open_read(p, at),
        }
    }
    fn open_write(&self, p: &VPath, m: WriteMode) -> Result<(Box<dyn Upload>, VPath), FsError> {
        self.0.open_write(p, m)
    }
    fn make_dir(&self, p: &VPath) -> Result<(), FsError> {
        self.0.make_dir(p)
    }
    fn remove_dir(&self, p: &VPath) -> Result<(), FsError> {
        self.0.remove_dir(p)
    }
    fn remove_file(&self, p: &VPath) -> Result<(), FsError> {
        self.0.remove_file(p)
    }
    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        self.0.rename(from, to)
    }
    fn set_modified(&self, p: &VPath, t: SystemTime) -> Result<(), FsError> {
        self.0.set_modified(p, t)
    }
}

/// Users as usual, except that checking `boom` panics.
struct FaultyUsers(MemUsers);

impl Authenticator for FaultyUsers {
    fn authenticate(&self, user: &str, pw: &str, peer: SocketAddr) -> Result<Principal, AuthError> {
        if user == "boom" {
            panic!("injected: the password check panics");
        }
        self.0.authenticate(user, pw, peer)
    }
}

/// A log sink that panics on `SITE` records (logged on the event loop).
#[derive(Debug)]
struct FaultyLog;

impl LogSink for FaultyLog {
    fn log(&self, record: Box<LogRecord>) {
        if record.method == "SITE" {
            panic!("injected: the log sink panics");
        }
    }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = c.line();
        assert!(greeting.starts_with("220"), "{greeting}");
        c
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn cmd(&mut self, c: &str) -> String {
        self.w.write_all(format!("{c}\r\n").as_bytes()).unwrap();
        self.line()
    }

    fn login(&mut self) {
        assert!(self.cmd("USER alice").starts_with("331"));
        assert!(self.cmd("PASS secret").starts_with("230"));
    }

    /// EPSV, and the data connection to it.
    fn epsv(&mut self, addr: SocketAddr) -> TcpStream {
        let r = self.cmd("EPSV");
        assert!(r.starts_with("229"), "{r}");
        let port: u16 = r.split('|').nth(3).unwrap().parse().unwrap();
        TcpStream::connect((addr.ip(), port)).unwrap()
    }

    /// After a 421 the server closes: the next read is the end of the stream.
    fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        let _ = self.r.read_to_end(&mut rest);
        assert!(rest.is_empty(), "bytes after the 421: {rest:?}");
    }
}

const INTERNAL: &str = "421 Internal server error";

wharf_tests::per_runtime! {
fn a_panic_ends_its_own_session_only_and_releases_what_it_held(rt) {
    let storage = MemStorage::new();
    storage.add_file("/hello.txt", b"hello\n");
    let users = MemUsers::new().with("alice", "secret", &[]).with("boom", "x", &[]);
    let session = SessionConfig {
        logging: Some(wharf_core::log::LogConfig {
            site: "faults".into(),
            fields: wharf_core::log::LogFields::ALL,
            w3c: true,
        }),
        ..SessionConfig::default()
    };
    // Two connections at most: a slot a failed session kept would show at once.
    let setup = RuntimeSetup {
        shards: 1,
        max_connections: 2,
        log: Some(Arc::new(FaultyLog)),
        ..RuntimeSetup::new(
            runtime_kind(rt),
            vec!["127.0.0.1:0".parse().unwrap()],
            Arc::new(Sites::single(Arc::new(session))),
        )
    };
    let server = start_runtime(setup, Arc::new(Faulty(storage)), Arc::new(FaultyUsers(users)))
        .unwrap();
    let addr = server.local_addrs()[0];
    // A bystander holds the other slot throughout.
    let mut bystander = Client::connect(addr);
    bystander.login();
    // More failures than the mio runtime has workers (4): none may cost a worker.
    for round in 0..6 {
        let mut c = Client::connect(addr);
        let got = match round % 4 {
            0 => {
                c.login();
                let _data = c.epsv(addr);
                c.cmd("RETR /boom-open")
            }
            1 => {
                c.login();
                let _data = c.epsv(addr);
                c.cmd("RETR /boom-read")
            }
            2 => {
                assert!(c.cmd("USER boom").starts_with("331"));
                c.cmd("PASS x")
            }
            _ => {
                c.login();
                c.cmd("SITE HELP")
            }
        };
        // The RETR may open its data connection first (150) before the read fails; the
        // SITE record is logged after its reply (502).
        let got = match &got[..3] {
            "150" | "502" => c.line(),
            _ => got,
        };
        assert!(got.starts_with(INTERNAL), "round {round}: {got}");
        c.assert_closed();
        // The bystander is untouched.
        assert!(bystander.cmd("NOOP").starts_with("200"), "round {round}");
    }
    // The slot of every failed session came back, and logins and storage still work.
    let mut c = Client::connect(addr);
    c.login();
    assert!(c.cmd("SIZE /hello.txt").starts_with("213 6"));
    assert!(c.cmd("QUIT").starts_with("221"));
    assert!(bystander.cmd("QUIT").starts_with("221"));
    server.shutdown(Duration::from_secs(1));
    server.wait().unwrap();
}
}
