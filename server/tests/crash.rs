//! `kill -9` during uploads, on the real binary and each runtime (issue 12): many
//! uploads (STOR of new and existing names, STOU) are running when the server is killed
//! at a random point; after each restart no temporary file is left anywhere (the start
//! sweeps them), no final name holds a partial file, and every upload that was answered
//! `226` is there, whole. Half the rounds force temporary names
//! (`WHARF_NO_O_TMPFILE=1`, what a filesystem without `O_TMPFILE` gets), so that the
//! debris a kill leaves is real and the sweep has work.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");
/// Kills per runtime (two runtimes: 64 in all).
const ROUNDS: u64 = 32;
/// Concurrent uploading clients per round.
const CLIENTS: u64 = 6;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A running `wharf`, killed (SIGKILL) and reaped when dropped, panics included.
struct Wharf {
    child: Child,
    addr: String,
}

impl Wharf {
    fn start(cfg: &Path, runtime: &str, no_tmpfile: bool) -> Wharf {
        let mut cmd = Command::new(WHARF);
        cmd.args(["--runtime", runtime, "--config"])
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if no_tmpfile {
            cmd.env("WHARF_NO_O_TMPFILE", "1");
        }
        let mut child = cmd.spawn().expect("start wharf");
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("ftp://"))
            .map(|a| a.trim_end_matches('/').to_string());
        let mut w = Wharf {
            child,
            addr: String::new(),
        };
        match (read, addr) {
            (Ok(_), Some(addr)) => w.addr = addr,
            other => panic!("wharf did not start: {other:?} {line:?}"),
        }
        w
    }

    fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        // SAFETY: signalling our own child, by its pid, which we have not reaped yet.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// A small xorshift: the test's randomness, from a seed it prints.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An upload body that says what it is: its first 16 bytes are its seed and length, the
/// rest follows from them, so any file can be checked for being whole.
fn body(seed: u64, len: usize) -> Vec<u8> {
    let len = len.max(16);
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&seed.to_le_bytes());
    out.extend_from_slice(&(len as u64).to_le_bytes());
    let mut r = Rng(seed | 1);
    while out.len() < len {
        out.extend_from_slice(&r.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether `bytes` is a whole [`body`].
fn whole(bytes: &[u8]) -> bool {
    if bytes.len() < 16 {
        return false;
    }
    let seed = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
    len == bytes.len() as u64 && body(seed, len as usize) == bytes
}

/// Every file below `dir` (relative paths), temporary ones included.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// A temporary upload file (the user's look-alike in `user/` is not one).
fn is_temp(p: &Path) -> bool {
    !p.starts_with("user")
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".wharf-part-"))
}

/// One FTP control connection, just enough for uploads.
struct Ftp {
    ctl: BufReader<TcpStream>,
}

impl Ftp {
    fn connect(addr: &str) -> std::io::Result<Ftp> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        let mut f = Ftp {
            ctl: BufReader::new(s),
        };
        f.expect("220")?;
        f.cmd("USER anonymous", "331")?;
        f.cmd("PASS crash@example.com", "230")?;
        f.cmd("TYPE I", "200")?;
        Ok(f)
    }

    fn reply(&mut self) -> std::io::Result<String> {
        loop {
            let mut line = String::new();
            if self.ctl.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.len() >= 4 && line.as_bytes()[3] == b' ' {
                return Ok(line);
            }
        }
    }

    fn expect(&mut self, code: &str) -> std::io::Result<String> {
        let r = self.reply()?;
        match r.starts_with(code) {
            true => Ok(r),
            false => Err(std::io::Error::other(r)),
        }
    }

    fn cmd(&mut self, line: &str, code: &str) -> std::io::Result<String> {
        self.ctl
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())?;
        self.expect(code)
    }

    /// `STOR`/`STOU name` with `data`; the name the final `226` gave (STOU's may differ).
    fn upload(&mut self, verb: &str, name: &str, data: &[u8]) -> std::io::Result<String> {
        let r = self.cmd("EPSV", "229")?;
        let port: u16 = r
            .split('|')
            .nth(3)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| std::io::Error::other(r.clone()))?;
        let host = self.ctl.get_ref().peer_addr()?.ip();
        let mut data_conn = TcpStream::connect((host, port))?;
        data_conn.set_write_timeout(Some(TIMEOUT))?;
        self.cmd(&format!("{verb} {name}"), "150")?;
        for chunk in data.chunks(64 * 1024) {
            data_conn.write_all(chunk)?;
        }
        drop(data_conn);
        let done = self.expect("226")?;
        Ok(match done.split("unique file name: ").nth(1) {
            Some(rest) => rest.trim_end().trim_end_matches(").").to_string(),
            None => name.to_string(),
        })
    }
}

/// Uploads until the connection dies (the kill): returns the names answered `226`
/// with the bytes they were given.
fn keep_uploading(addr: String, mut rng: Rng, stop: Arc<AtomicBool>) -> Vec<(String, Vec<u8>)> {
    let mut done = Vec::new();
    let Ok(mut ftp) = Ftp::connect(&addr) else {
        return done;
    };
    while !stop.load(Ordering::Relaxed) {
        let seed = rng.next();
        let len = match rng.below(4) {
            0 => 16 + rng.below(4096) as usize,
            _ => 64 * 1024 + rng.below(1024 * 1024) as usize,
        };
        let data = body(seed, len);
        let (verb, name) = match rng.below(3) {
            0 => ("STOU", format!("u{}.bin", rng.below(4))),
            1 => ("STOR", format!("r{}.bin", rng.below(3))),
            _ => ("STOR", format!("n{seed:016x}.bin")),
        };
        match ftp.upload(verb, &name, &data) {
            Ok(stored) => done.push((stored, data)),
            Err(_) => break,
        }
    }
    done
}

/// After a restart: the sweep removed every temporary file (it runs in the background:
/// polled, within a bound), every final name holds a whole upload, and each name whose
/// last acknowledged upload is known holds a whole file (replacements by later uploads
/// to the same name are whole too).
fn check_after_restart(root: &Path, acknowledged: &[(String, Vec<u8>)], round: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let temps: Vec<PathBuf> = files(root).into_iter().filter(|p| is_temp(p)).collect();
        if temps.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "round {round}: temporary files left after the restart: {temps:?}"
        );
        std::thread::yield_now();
    }
    for p in files(root) {
        let name = p.to_string_lossy();
        if p.starts_with("user") {
            continue;
        }
        let bytes = std::fs::read(root.join(&p)).unwrap();
        assert!(
            whole(&bytes),
            "round {round}: {name} holds a partial or foreign file ({} bytes)",
            bytes.len()
        );
    }
    for (name, data) in acknowledged {
        let stored = std::fs::read(root.join(name))
            .unwrap_or_else(|e| panic!("round {round}: acknowledged {name} is gone: {e}"));
        // New names and STOU's are never written again; `r*` may have been replaced
        // by a later upload (whole, as checked above).
        if !name.starts_with('r') {
            assert!(stored == *data, "round {round}: {name} changed");
        }
    }
}

fn kill_during_uploads(runtime: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pub");
    std::fs::create_dir_all(root.join("user")).unwrap();
    // A user's files, one with a look-alike name: never swept.
    std::fs::write(root.join("user/.wharf-part-notours"), b"mine").unwrap();
    std::fs::write(root.join("user/keep.txt"), b"mine").unwrap();
    // Debris of an older wharf (its names carried the final name): swept at start.
    std::fs::write(root.join(".wharf-part-00000000deadbeef-old.bin"), b"half").unwrap();
    let cfg = tmp.path().join("w.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 2\n\
         [site]\nroot = \"pub\"\nanonymous = true\nanonymous_write = true\n",
    )
    .unwrap();
    let seed = 0x5eed_0000 ^ runtime.len() as u64;
    eprintln!("{runtime}: seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut acknowledged: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut total, mut debris) = (0, 0);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let server = Wharf::start(&cfg, runtime, round % 2 == 1);
        check_after_restart(&root, &acknowledged, round);
        // Checked: make room (the `r*` names stay, to be replaced again).
        for (name, _) in acknowledged.drain(..) {
            if !name.starts_with('r') {
                let _ = std::fs::remove_file(root.join(name));
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (addr, stop, results) = (server.addr.clone(), stop.clone(), results.clone());
                let client_rng = Rng(rng.next() | 1);
                std::thread::spawn(move || {
                    let done = keep_uploading(addr, client_rng, stop);
                    results.lock().unwrap().extend(done);
                })
            })
            .collect();
        // The kill point: anywhere in the first 0.6 s of uploading (a pause chosen at
        // random, not a synchronisation).
        std::thread::sleep(Duration::from_millis(rng.below(600)));
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        acknowledged.extend(std::mem::take(&mut *results.lock().unwrap()));
        total += acknowledged.len();
        // What the kill left for the next start to sweep.
        debris += files(&root).into_iter().filter(|p| is_temp(p)).count();
    }
    let last = Wharf::start(&cfg, runtime, false);
    check_after_restart(&root, &acknowledged, ROUNDS);
    assert!(!root.join(".wharf-part-00000000deadbeef-old.bin").exists());
    assert_eq!(std::fs::read(root.join("user/keep.txt")).unwrap(), b"mine");
    drop(last);
    eprintln!(
        "{runtime}: {ROUNDS} kills in {:?}, {total} uploads acknowledged, {debris} \
         temporary files left by the kills and swept",
        started.elapsed(),
    );
    assert!(
        total > 0,
        "no upload ever completed: the test tested nothing"
    );
}

#[test]
fn kill_9_during_uploads_leaves_no_debris_or_partial_file_mio() {
    kill_during_uploads("mio");
}

#[test]
fn kill_9_during_uploads_leaves_no_debris_or_partial_file_smol() {
    kill_during_uploads("smol");
}

#[test]
fn bodies_check_themselves() {
    let b = body(7, 1000);
    assert!(whole(&b));
    assert!(!whole(&b[..999]));
    let mut c = b.clone();
    c[500] ^= 1;
    assert!(!whole(&c));
    assert!(!whole(b"mine"));
    let mut r = Rng(3);
    assert_ne!(r.next(), r.next());
}
