//! Embedding wharf: an FTP server inside a program's own smol executor, with a storage
//! and an authenticator of the program's own.
//!
//! ```sh
//! cargo run -p wharf-runtime-smol --example embed
//! ```
//!
//! The program keeps "notes" in memory (one flat directory), lets one user in, serves
//! them on 127.0.0.1 (a port the OS picks), talks to itself with a small async FTP client
//! on the same executor (list, download, upload), checks that the upload landed in its
//! own map, shuts the server down and exits. `cargo test` runs the same code.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::{Async, Executor};
use wharf_core::backend::{Download, Upload};
use wharf_core::{
    AuthError, Authenticator, DirEntry, FileKind, FsError, Metadata, Principal, Server,
    SessionConfig, Storage, VPath, WriteMode,
};
use wharf_runtime_smol::{SmolConfig, Wharf};

// ---------------------------------------------------------------------------------------
// The program's own storage: a flat directory of notes in a map.

type Files = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

#[derive(Default, Clone)]
struct Notes {
    files: Files,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Notes {
    fn put(&self, name: &str, body: &[u8]) {
        locked(&self.files).insert(name.to_string(), body.to_vec());
    }

    fn get(&self, name: &str) -> Option<Vec<u8>> {
        locked(&self.files).get(name).cloned()
    }

    /// The note a path names: only `/name` exists (the root holds everything).
    fn name(path: &VPath) -> Result<String, FsError> {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if parent.is_root() => Ok(name.to_string()),
            _ => Err(FsError::NotFound),
        }
    }

    fn meta(kind: FileKind, size: u64) -> Metadata {
        Metadata {
            kind,
            size,
            modified: None,
            mode: if kind == FileKind::Dir { 0o755 } else { 0o644 },
            unique: None,
            nlink: 1,
        }
    }
}

/// An upload collects its bytes and stores them on commit; dropped, it leaves nothing.
struct NoteUpload {
    files: Files,
    name: String,
    buf: Vec<u8>,
}

impl Write for NoteUpload {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Upload for NoteUpload {
    fn commit(self: Box<Self>) -> Result<(), FsError> {
        let NoteUpload { files, name, buf } = *self;
        locked(&files).insert(name, buf);
        Ok(())
    }
    fn discard(self: Box<Self>) {}
}

/// A download reads a copy of the note (no descriptor, so no sendfile).
struct NoteDownload(Cursor<Vec<u8>>);

impl io::Read for NoteDownload {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.0.read(b)
    }
}

impl Download for NoteDownload {}

impl Storage for Notes {
    fn stat(&self, path: &VPath) -> Result<Metadata, FsError> {
        if path.is_root() {
            return Ok(Notes::meta(FileKind::Dir, 0));
        }
        let name = Notes::name(path)?;
        let files = locked(&self.files);
        let body = files.get(&name).ok_or(FsError::NotFound)?;
        Ok(Notes::meta(FileKind::File, body.len() as u64))
    }

    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError> {
        if !path.is_root() {
            return Err(FsError::NotFound);
        }
        let files = locked(&self.files);
        let entries = files.iter().map(|(name, body)| DirEntry {
            name: name.clone(),
            meta: Notes::meta(FileKind::File, body.len() as u64),
        });
        Ok(entries.collect())
    }

    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        let body = self.get(&Notes::name(path)?).ok_or(FsError::NotFound)?;
        let size = body.len() as u64;
        let mut cursor = Cursor::new(body);
        cursor.set_position(offset.min(size));
        Ok((Box::new(NoteDownload(cursor)), size))
    }

    fn open_write(
        &self,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<(Box<dyn Upload>, VPath), FsError> {
        let name = Notes::name(path)?;
        let buf = match mode {
            WriteMode::Replace => Vec::new(),
            // Appending and resuming start from what is there; STOU is not offered.
            WriteMode::Append => self.get(&name).unwrap_or_default(),
            WriteMode::At(n) => {
                let mut b = self.get(&name).unwrap_or_default();
                b.truncate(usize::try_from(n).unwrap_or(usize::MAX));
                b
            }
            WriteMode::Unique => return Err(FsError::PermissionDenied),
        };
        let up = NoteUpload {
            files: self.files.clone(),
            name,
            buf,
        };
        Ok((Box::new(up), path.clone()))
    }

    fn make_dir(&self, _: &VPath) -> Result<(), FsError> {
        Err(FsError::PermissionDenied)
    }
    fn remove_dir(&self, _: &VPath) -> Result<(), FsError> {
        Err(FsError::PermissionDenied)
    }
    fn remove_file(&self, path: &VPath) -> Result<(), FsError> {
        let name = Notes::name(path)?;
        locked(&self.files)
            .remove(&name)
            .map(drop)
            .ok_or(FsError::NotFound)
    }
    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        let (from, to) = (Notes::name(from)?, Notes::name(to)?);
        let mut files = locked(&self.files);
        let body = files.remove(&from).ok_or(FsError::NotFound)?;
        files.insert(to, body);
        Ok(())
    }
    fn set_modified(&self, _: &VPath, _: SystemTime) -> Result<(), FsError> {
        Err(FsError::PermissionDenied)
    }
}

// ---------------------------------------------------------------------------------------
// The program's own authenticator: one user.

struct OneUser {
    name: &'static str,
    password: &'static str,
}

impl Authenticator for OneUser {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<Principal, AuthError> {
        if user == self.name && password == self.password {
            println!("embed: {user} logs in from {peer}");
            Ok(Principal {
                name: user.to_string(),
                groups: Vec::new(),
                anonymous: false,
            })
        } else {
            Err(AuthError::BadCredentials)
        }
    }
}

// ---------------------------------------------------------------------------------------
// A tiny async FTP client, on the same executor as the server.

struct Client {
    r: BufReader<Async<TcpStream>>,
    w: Async<TcpStream>,
    ip: std::net::IpAddr,
}

impl Client {
    async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let s = Async::<TcpStream>::connect(addr).await?;
        let w = Async::new(s.get_ref().try_clone()?)?;
        Ok(Client {
            r: BufReader::new(s),
            w,
            ip: addr.ip(),
        })
    }

    /// The last line of the next reply (multi-line replies are read through).
    async fn reply(&mut self) -> io::Result<String> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return Ok(line.trim_end().to_string());
            }
        }
    }

    /// Sends a command; fails unless the reply has the expected code.
    async fn cmd(&mut self, cmd: &str, code: &str) -> io::Result<String> {
        self.w.write_all(format!("{cmd}\r\n").as_bytes()).await?;
        self.expect(code).await
    }

    async fn expect(&mut self, code: &str) -> io::Result<String> {
        let r = self.reply().await?;
        if r.starts_with(code) {
            Ok(r)
        } else {
            Err(io::Error::other(format!("expected {code}, got {r:?}")))
        }
    }

    /// EPSV and the data connection it offers.
    async fn data(&mut self) -> io::Result<Async<TcpStream>> {
        let r = self.cmd("EPSV", "229").await?;
        let port = r
            .split('|')
            .nth(3)
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| io::Error::other(format!("bad EPSV reply {r:?}")))?;
        Async::<TcpStream>::connect((self.ip, port)).await
    }
}

// ---------------------------------------------------------------------------------------

/// Serves the notes on a fresh executor, runs a client session against them, stops the
/// server; returns what the session saw.
fn run() -> io::Result<String> {
    let ex = Arc::new(Executor::new());
    smol::block_on(ex.run(serve_and_talk(ex.clone())))
}

async fn serve_and_talk(ex: Arc<Executor<'static>>) -> io::Result<String> {
    let notes = Notes::default();
    notes.put("readme.txt", b"Notes served by an embedded wharf.\n");
    let session = Arc::new(SessionConfig {
        site_name: "notes".into(),
        banner: "notes over FTP".into(),
        ..SessionConfig::default()
    });
    let wharf = Wharf::bind(
        vec!["127.0.0.1:0".parse().expect("an address")],
        SmolConfig {
            driver: wharf_runtime_smol::DriverConfig {
                shards: 1,
                ..Default::default()
            },
            ..SmolConfig::default()
        },
        // One shard: session ids from 0, at most 16 sessions.
        move |shard| Server::new(session.clone(), shard as u64, 1, 16),
        Arc::new(notes.clone()),
        Arc::new(OneUser {
            name: "demo",
            password: "demo",
        }),
    )?;
    let addr = wharf.local_addrs()[0];
    let stop = wharf.shutdown_handle();
    let server = ex.spawn(wharf.run(ex.clone()));
    println!("embed: serving notes on ftp://{addr}/");

    let mut log = String::new();
    let mut c = Client::connect(addr).await?;
    log += &c.expect("220").await?;
    c.cmd("USER demo", "331").await?;
    log += &format!("\n{}", c.cmd("PASS demo", "230").await?);

    let mut d = c.data().await?;
    c.cmd("NLST", "150").await?;
    let mut names = String::new();
    d.read_to_string(&mut names).await?;
    c.expect("226").await?;
    log += &format!("\nNLST: {}", names.trim_end().replace("\r\n", ", "));

    let mut d = c.data().await?;
    c.cmd("RETR readme.txt", "150").await?;
    let mut body = String::new();
    d.read_to_string(&mut body).await?;
    c.expect("226").await?;
    log += &format!("\nreadme.txt: {}", body.trim_end());

    let mut d = c.data().await?;
    c.cmd("STOR todo.txt", "150").await?;
    d.write_all(b"embed wharf in something\n").await?;
    drop(d);
    c.expect("226").await?;
    c.cmd("QUIT", "221").await?;
    let stored = notes.get("todo.txt").unwrap_or_default();
    log += &format!(
        "\ntodo.txt in the map: {}",
        String::from_utf8_lossy(&stored).trim_end()
    );

    stop.shutdown(Duration::from_secs(1));
    server.await?;
    Ok(log)
}

fn main() {
    match run() {
        Ok(log) => println!("{log}\nembed: done"),
        Err(e) => {
            eprintln!("embed: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_server_serves_a_session_and_stops() {
        let log = super::run().unwrap();
        assert!(log.starts_with("220 notes over FTP"), "{log}");
        assert!(log.contains("NLST: readme.txt"), "{log}");
        assert!(
            log.contains("readme.txt: Notes served by an embedded wharf."),
            "{log}"
        );
        assert!(
            log.contains("todo.txt in the map: embed wharf in something"),
            "{log}"
        );
    }
}
