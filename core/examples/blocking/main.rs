//! A third runtime for wharf-core, as small as one can be: a thread per control
//! connection and per waiting piece of work, on `std::net` and `std::fs`, no event loop.
//! It shows what a custom runtime really writes: the syscalls. Every FTP decision, the
//! transfer pump included, is the core's.
//!
//! ```sh
//! cargo run -p wharf-core --example blocking -- /srv/ftp 127.0.0.1:2121
//! ```
//!
//! It serves the directory to user `demo` (password `demo`) and to anonymous users, in
//! plain FTP or FTPS (explicit, with a self-signed certificate made at start). Not for
//! production: the disk storage trusts the directory (a symlink in it leads out).

// A runtime reads the clock: that is its job, not the core's.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use disk::Disk;
use wharf_core::backend::{execute, OpenFile, OpenFiles};
use wharf_core::memfs::MemUsers;
use wharf_core::*;

// ---- the runtime -----------------------------------------------------------------------

/// What the session's thread hears from the threads that wait for it.
enum Ev {
    Bytes(Vec<u8>),
    Eof,
    Accepted(DataConnId, TcpStream, SocketAddr, TcpListener),
    Connected(DataConnId, io::Result<TcpStream>),
    Progress(Input<'static>),
    Done(Input<'static>, Option<(FileHandle, OpenFile)>),
}

enum Data {
    Listening,
    Accepted(TcpStream, TcpListener),
    Idle(TcpStream),
    Running(TransferId, Arc<AtomicBool>),
}

struct Conn {
    session: Session,
    ctl: TcpStream,
    tx: Sender<Ev>,
    data: Vec<(DataConnId, Data)>,
    files: OpenFiles,
    storage: Arc<Disk>,
    users: Arc<MemUsers>,
}

fn accept_on(l: TcpListener, conn: DataConnId, tx: Sender<Ev>) {
    thread::spawn(move || {
        if let Ok((s, peer)) = l.accept() {
            let _ = tx.send(Ev::Accepted(conn, s, peer, l));
        }
    });
}

impl Conn {
    fn take(&mut self, id: DataConnId) -> Option<Data> {
        let i = self.data.iter().position(|(c, _)| *c == id)?;
        Some(self.data.swap_remove(i).1)
    }

    /// The drain rule: write what the session says, do what it asks, until it is quiet.
    fn drain(&mut self) -> io::Result<()> {
        loop {
            if let Some(out) = self.session.poll_transmit() {
                let n = out.len();
                self.ctl.write_all(out)?;
                self.session.handle_written(n);
            } else if let Some(action) = self.session.poll_action() {
                if let Some(input) = self.perform(action) {
                    self.session.handle_input(Instant::now(), input);
                }
            } else {
                return Ok(());
            }
        }
    }

    fn perform(&mut self, action: Action) -> Option<Input<'static>> {
        match action {
            Action::Request { req, request } => {
                // Storage and logins run right here: this thread is the session's own.
                let (handle, file) = self.files.prepare(&request);
                let (store, users, now) = (&*self.storage, &*self.users, SystemTime::now());
                let (completion, opened) = execute(store, users, &NoResolver, request, file, now);
                if let (Some(h), Some(f)) = (handle, opened) {
                    self.files.put(h, f);
                }
                Some(Input::Completed { req, completion })
            }
            Action::ListenData { conn, ip, ports } => {
                // The port range is ignored: the system picks a port.
                let _ = ports;
                match TcpListener::bind((ip, 0)) {
                    Ok(l) => {
                        let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                        accept_on(l, conn, self.tx.clone());
                        self.data.push((conn, Data::Listening));
                        Some(Input::DataListening { conn, port })
                    }
                    Err(e) => Some(Input::DataFailed {
                        conn,
                        error: DataError::Io(e.to_string()),
                    }),
                }
            }
            Action::RefuseData { conn } => {
                if let Some(Data::Accepted(_, l)) = self.take(conn) {
                    accept_on(l, conn, self.tx.clone());
                    self.data.push((conn, Data::Listening));
                }
                None
            }
            // This example serves no load balancer: a header it cannot read is no
            // header, and the core refuses the connection.
            Action::ReadProxyHeader { conn } => Some(Input::DataProxied { conn, client: None }),
            Action::StopListening { conn } => {
                if let Some(Data::Accepted(s, _)) = self.take(conn) {
                    self.data.push((conn, Data::Idle(s)));
                }
                None
            }
            Action::ConnectData { conn, target, .. } => {
                let tx = self.tx.clone();
                thread::spawn(move || {
                    let s = TcpStream::connect_timeout(&target, Duration::from_secs(30));
                    let _ = tx.send(Ev::Connected(conn, s));
                });
                None
            }
            Action::StartTransfer {
                conn, file, pump, ..
            } => {
                let Some(Data::Idle(stream)) = self.take(conn) else {
                    return Some(pump.connection_missing());
                };
                let file = file.and_then(|h| Some((h, self.files.take(h)?)));
                let stop = Arc::new(AtomicBool::new(false));
                self.data
                    .push((conn, Data::Running(pump.xfer(), stop.clone())));
                let tx = self.tx.clone();
                thread::spawn(move || transfer(stream, pump, file, stop, tx));
                None
            }
            Action::AbortTransfer { xfer } => {
                for (_, d) in &self.data {
                    if let Data::Running(x, stop) = d {
                        if *x == xfer {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
                None
            }
            Action::CloseData { conn } => {
                if let Some(Data::Running(_, stop)) = self.take(conn) {
                    stop.store(true, Ordering::Relaxed);
                }
                None
            }
            Action::Close => {
                let _ = self.ctl.shutdown(std::net::Shutdown::Both);
                None
            }
            // Optional: the transfer's pump runs the handshake instead.
            Action::Log(_) | Action::PrepareTransfer { .. } => None,
        }
    }
}

/// The transfer pump, driven with blocking calls: socket timeouts wake it for its timer
/// and for an abort.
fn transfer(
    s: TcpStream,
    mut pump: Box<Pump>,
    mut file: Option<(FileHandle, OpenFile)>,
    stop: Arc<AtomicBool>,
    tx: Sender<Ev>,
) {
    struct Io<'a>(&'a TcpStream, Option<&'a mut OpenFile>);
    impl DataIo for Io<'_> {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            (&mut &*self.0).read(b)
        }
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            (&mut &*self.0).write(b)
        }
        fn shutdown_write(&mut self) {
            let _ = self.0.shutdown(std::net::Shutdown::Write);
        }
        fn read_file(&mut self, b: &mut [u8]) -> io::Result<usize> {
            match &mut self.1 {
                Some(OpenFile::Read(r)) => r.read(b),
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        }
        fn write_file(&mut self, b: &[u8]) -> io::Result<usize> {
            match &mut self.1 {
                Some(OpenFile::Write(w)) => w.write(b),
                _ => Err(io::ErrorKind::NotFound.into()),
            }
        }
    }
    loop {
        if stop.load(Ordering::Relaxed) {
            pump.abort();
        }
        let now = Instant::now();
        let wait = pump
            .poll_timeout()
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
        // Short enough to see an abort soon; a zero timeout means none to std.
        let wait = wait.clamp(Duration::from_millis(1), Duration::from_millis(200));
        let _ = (
            s.set_read_timeout(Some(wait)),
            s.set_write_timeout(Some(wait)),
        );
        let run = pump.run(now, &mut Io(&s, file.as_mut().map(|(_, f)| f)), 1 << 20);
        pump.handle_timeout(Instant::now());
        while let Some(input) = pump.poll_input() {
            if let Input::TransferDone { .. } = input {
                drop(s); // closed before the session hears of the end
                let _ = tx.send(Ev::Done(input, file));
                return;
            }
            let _ = tx.send(Ev::Progress(input));
        }
        if run == Run::Wait {
            thread::sleep(wait); // paced: the pump's timer is this thread's sleep
        }
    }
}

/// One control connection, from admission to close.
fn serve(mut c: Conn, rx: std::sync::mpsc::Receiver<Ev>) -> io::Result<()> {
    let mut reader = c.ctl.try_clone()?;
    let tx = c.tx.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => return drop(tx.send(Ev::Eof)),
                Ok(n) if tx.send(Ev::Bytes(buf[..n].to_vec())).is_ok() => {}
                Ok(_) => return,
            }
        }
    });
    c.drain()?;
    while !c.session.is_closed() {
        let now = Instant::now();
        let wait = c
            .session
            .poll_timeout()
            .map_or(Duration::from_secs(3600), |t| {
                t.saturating_duration_since(now)
            });
        let input = match rx.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {
                c.session.handle_timeout(Instant::now());
                None
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Ok(Ev::Bytes(b)) => {
                c.session
                    .handle_input(Instant::now(), Input::ControlBytes(&b));
                None
            }
            Ok(Ev::Eof) => Some(Input::ControlEof),
            Ok(Ev::Accepted(conn, s, peer, l)) => match c.take(conn) {
                Some(Data::Listening) => {
                    c.data.push((conn, Data::Accepted(s, l)));
                    Some(Input::DataAccepted { conn, peer })
                }
                _ => None,
            },
            Ok(Ev::Connected(conn, Ok(s))) => {
                c.data.push((conn, Data::Idle(s)));
                Some(Input::DataConnected { conn })
            }
            Ok(Ev::Connected(conn, Err(e))) => Some(Input::DataFailed {
                conn,
                error: DataError::Io(e.to_string()),
            }),
            Ok(Ev::Progress(input)) => Some(input),
            Ok(Ev::Done(input, file)) => {
                if let Some((h, f)) = file {
                    c.files.put(h, f);
                }
                c.data.retain(|(_, d)| !matches!(d, Data::Running(..)));
                Some(input)
            }
        };
        if let Some(input) = input {
            c.session.handle_input(Instant::now(), input);
        }
        c.drain()?;
    }
    for (_, f) in c.files.drain() {
        if let OpenFile::Write(up) = f {
            up.discard();
        }
    }
    Ok(())
}

/// Starts the server on `addr` over the directory `root`; returns its address.
pub fn start(root: PathBuf, addr: &str) -> io::Result<SocketAddr> {
    let key =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).map_err(io::Error::other)?;
    let der = rustls::pki_types::CertificateDer::from(key.cert.der().to_vec());
    let pk = rustls::pki_types::PrivateKeyDer::try_from(key.signing_key.serialize_der())
        .map_err(io::Error::other)?;
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| b.with_no_client_auth().with_single_cert(vec![der], pk))
    .map_err(io::Error::other)?;
    tls.ticketer = rustls::crypto::ring::Ticketer::new().map_err(io::Error::other)?;
    tls.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    let config = SessionConfig {
        allow_anonymous: true,
        user_write: true,
        passive_ports: 0..=0,
        tls: Some(TlsSettings::new(tls)),
        ..SessionConfig::default()
    };
    let server = Arc::new(Mutex::new(Server::new(Arc::new(config), 0, 1, 1000)));
    let (storage, users) = (
        Arc::new(Disk(root)),
        Arc::new(MemUsers::new().with("demo", "demo", &[])),
    );
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    thread::spawn(move || {
        for ctl in listener.incoming().flatten() {
            let (Ok(peer), Ok(me)) = (ctl.peer_addr(), ctl.local_addr()) else {
                continue;
            };
            let accepted = server.lock().unwrap().accept(Instant::now(), peer, me);
            let mut ctl = ctl;
            match accepted {
                Ok(session) => {
                    let (tx, rx) = channel();
                    let (storage, users, server) = (storage.clone(), users.clone(), server.clone());
                    thread::spawn(move || {
                        let id = session.id();
                        let c = Conn {
                            session,
                            ctl,
                            tx,
                            data: Vec::new(),
                            files: OpenFiles::default(),
                            storage,
                            users,
                        };
                        let _ = serve(c, rx);
                        server.lock().unwrap().session_closed(id);
                    });
                }
                Err(refusal) => drop(ctl.write_all(&refusal.reply)),
            }
        }
    });
    Ok(local)
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:2121".into());
    let local = start(root, &addr)?;
    println!("serving ftp://{local}/ (user demo, password demo; FTPS with AUTH TLS)");
    loop {
        thread::park();
    }
}

mod disk;
#[cfg(test)]
mod tests;
