//! The machine's own limits: an echo-server round trip and raw loopback streams.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::ftp::Res;
use crate::stats::{p50_p99, pin_to_cpu, thread_cpu, Out};

/// A trivial line echo server in a thread vs a client sending 6-byte "NOOP\r\n"-sized
/// commands: the floor for any request/response round trip on this machine.
pub fn echo_floor(count: u64, pin: Option<(usize, usize)>, out: &mut Out) -> Res<()> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || -> Duration {
        if let Some((s, _)) = pin {
            pin_to_cpu(s);
        }
        let Ok((s, _)) = l.accept() else {
            return Duration::ZERO;
        };
        let _ = s.set_nodelay(true);
        let c0 = thread_cpu();
        let mut w = s.try_clone().expect("clone");
        let mut r = BufReader::new(s);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if w.write_all(b"200 \r\n").is_err() {
                        break;
                    }
                }
            }
        }
        thread_cpu() - c0
    });
    if let Some((_, c)) = pin {
        out.str("pinned", if pin_to_cpu(c) { "yes" } else { "failed" });
    }
    let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut lat = Vec::with_capacity(count as usize);
    let mut line = Vec::new();
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        w.write_all(b"NOOP\r\n").map_err(|e| e.to_string())?;
        line.clear();
        r.read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let wall = start.elapsed().as_secs_f64();
    drop(w);
    drop(r);
    let echo_cpu = server.join().map_err(|_| "echo thread panicked")?;
    let (p50, p99) = p50_p99(&mut lat);
    out.int("ops", count)
        .num("wall_s", wall)
        .num("ops_per_s", count as f64 / wall)
        .num("echo_cpu_s", echo_cpu.as_secs_f64())
        .opt(
            "ops_per_echo_cpu_s",
            (echo_cpu > Duration::ZERO).then(|| count as f64 / echo_cpu.as_secs_f64()),
        )
        .opt("p50_us", p50)
        .opt("p99_us", p99);
    Ok(())
}

/// How the sender of a raw stream produces its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawMode {
    /// Write a cache-hot buffer over and over.
    Tcp,
    /// read() the file into a buffer, write() it to the socket.
    ReadWrite,
    /// sendfile() from the file to the socket.
    Sendfile,
}

impl RawMode {
    pub fn name(self) -> &'static str {
        match self {
            RawMode::Tcp => "raw-tcp",
            RawMode::ReadWrite => "raw-readwrite",
            RawMode::Sendfile => "raw-sendfile",
        }
    }
}

/// Stream `bytes` (or the whole file) over loopback from a sender thread to this thread.
pub fn raw(
    mode: RawMode,
    file: Option<&str>,
    bytes: u64,
    buf_size: usize,
    out: &mut Out,
) -> Res<()> {
    let total = match (mode, file) {
        (RawMode::Tcp, _) => bytes,
        (_, Some(f)) => std::fs::metadata(f).map_err(|e| format!("{f}: {e}"))?.len(),
        (_, None) => return Err("--path FILE is needed for the file-to-socket tests".into()),
    };
    let file = file.map(str::to_string);
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let sender = std::thread::spawn(move || -> Res<Duration> {
        let (mut s, _) = l.accept().map_err(|e| e.to_string())?;
        let c0 = thread_cpu();
        let mut buf = crate::scenarios::pseudo_random(buf_size, 7);
        match mode {
            RawMode::Tcp => {
                let mut left = total;
                while left > 0 {
                    let n = left.min(buf.len() as u64) as usize;
                    s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                    left -= n as u64;
                }
            }
            RawMode::ReadWrite => {
                let mut f = File::open(file.unwrap()).map_err(|e| e.to_string())?;
                loop {
                    let n = f.read(&mut buf).map_err(|e| e.to_string())?;
                    if n == 0 {
                        break;
                    }
                    s.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                }
            }
            RawMode::Sendfile => {
                let f = File::open(file.unwrap()).map_err(|e| e.to_string())?;
                let mut off: libc::off_t = 0;
                while (off as u64) < total {
                    let want = (total - off as u64).min(1 << 30) as usize;
                    // SAFETY: both fds are open for the duration; off is a valid pointer.
                    let n = unsafe { libc::sendfile(s.as_raw_fd(), f.as_raw_fd(), &mut off, want) };
                    if n < 0 {
                        let e = std::io::Error::last_os_error();
                        if e.kind() == std::io::ErrorKind::Interrupted {
                            continue;
                        }
                        return Err(format!("sendfile: {e}"));
                    }
                    if n == 0 {
                        break;
                    }
                }
            }
        }
        Ok(thread_cpu() - c0)
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; buf_size];
    let start = Instant::now();
    let c0 = thread_cpu();
    let mut got = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let recv_cpu = (thread_cpu() - c0).as_secs_f64();
    let send_cpu = sender.join().map_err(|_| "sender panicked")??.as_secs_f64();
    let mb = got as f64 / 1e6;
    out.str("test", mode.name())
        .int("buf_kib", (buf_size / 1024) as u64)
        .int("bytes", got)
        .num("wall_s", wall)
        .num("mb_per_s", mb / wall)
        .num("sender_cpu_s", send_cpu)
        .num("receiver_cpu_s", recv_cpu)
        .opt(
            "mb_per_sender_cpu_s",
            (send_cpu > 0.0).then(|| mb / send_cpu),
        )
        .opt(
            "mb_per_receiver_cpu_s",
            (recv_cpu > 0.0).then(|| mb / recv_cpu),
        );
    if got != total {
        return Err(format!("short stream: {got} of {total} bytes"));
    }
    Ok(())
}
