//! The login storm: `--count` sessions connect within `--window` seconds (a reconnect
//! storm after a network blip) and log in; every session is held until all are served.
//!
//! One client thread drives every connection with non-blocking sockets (mio), so the
//! storm arrives as scheduled whatever the server does: connection `i` starts at
//! `t0 + i·window/count`, and its latency runs from that scheduled start (time spent
//! queued behind the server counts) to the `230`.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::ftp::{parse_reply_line, Res, Target};
use crate::idle::{per_source_limit, source_for};
use crate::scenarios::{Ctx, Meter};
use crate::stats::{percentile, raise_nofile, Out};

pub struct StormOpts {
    pub count: u64,
    pub window: Duration,
    pub max_time: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Connecting,
    Banner,
    User,
    Pass,
    Done,
    Failed,
}

struct Conn {
    stream: TcpStream,
    st: St,
    buf: Vec<u8>,
    sched: Instant,
}

fn start_one(addr: SocketAddr, src: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(s.into()))
}

/// What to do after a reply: the next command to send, or the end.
enum Next {
    Send(String),
    Done,
    Fail(String),
}

fn on_reply(st: St, code: u16, t: &Target) -> Next {
    match (st, code) {
        (St::Banner, 220) => Next::Send(format!("USER {}\r\n", t.user)),
        (St::User, 331) => Next::Send(format!("PASS {}\r\n", t.pass)),
        (St::User | St::Pass, 230) => Next::Done,
        (St::Banner, c) => Next::Fail(format!("banner: {c}")),
        (St::User, c) => Next::Fail(format!("USER: {c}")),
        (_, c) => Next::Fail(format!("PASS: {c}")),
    }
}

pub fn storm(ctx: &Ctx, o: &StormOpts, out: &mut Out) -> Res<()> {
    let t = &ctx.target;
    if t.tls.is_some() {
        return Err("storm: --tls is not supported".into());
    }
    let nofile = raise_nofile();
    if o.count + 64 > nofile {
        return Err(format!(
            "skipped: open-files limit {nofile} < {} sessions",
            o.count
        ));
    }
    let per_source = per_source_limit();
    let multi = o.count > per_source;
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(o.count as usize);
    let mut lat: Vec<f64> = Vec::with_capacity(o.count as usize);
    let mut first_errors: Vec<String> = Vec::new();
    let mut failed = 0u64;
    let mut fail = |e: String, failed: &mut u64| {
        *failed += 1;
        if first_errors.len() < 3 {
            first_errors.push(e);
        }
    };
    let step = o.window.as_secs_f64() / o.count.max(1) as f64;
    let m = Meter::start(ctx);
    let t0 = Instant::now();
    let deadline = t0 + o.max_time;
    let mut next = 0u64;
    let mut last_done = t0;
    let mut settled = 0u64;
    let mut last_scan = t0;
    let mut buf = [0u8; 4096];
    while settled < o.count {
        let now = Instant::now();
        if now > deadline {
            break;
        }
        // Start every connection whose time has come.
        while next < o.count {
            let sched = t0 + Duration::from_secs_f64(step * next as f64);
            if sched > now {
                break;
            }
            let src = source_for(next, per_source, t.addr.ip(), multi);
            match start_one(t.addr, src) {
                Ok(mut stream) => {
                    let token = Token(next as usize);
                    let reg = poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    match reg {
                        Ok(()) => conns.push(Some(Conn {
                            stream,
                            st: St::Connecting,
                            buf: Vec::new(),
                            sched,
                        })),
                        Err(e) => {
                            fail(format!("register: {e}"), &mut failed);
                            settled += 1;
                            conns.push(None);
                        }
                    }
                }
                Err(e) => {
                    fail(format!("connect: {e}"), &mut failed);
                    settled += 1;
                    conns.push(None);
                }
            }
            next += 1;
        }
        let wait = if next < o.count {
            let sched = t0 + Duration::from_secs_f64(step * next as f64);
            sched.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(100)
        };
        poll.poll(&mut events, Some(wait.min(Duration::from_millis(100))))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = conns.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            if c.st == St::Connecting {
                if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                    c.st = St::Failed;
                    fail(format!("connect: {e}"), &mut failed);
                } else if c.stream.peer_addr().is_ok() {
                    c.st = St::Banner;
                } else if ev.is_error() || ev.is_write_closed() {
                    c.st = St::Failed;
                    fail("connect: refused".into(), &mut failed);
                }
            }
            // Read every reply that has arrived.
            while matches!(c.st, St::Banner | St::User | St::Pass) {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        let st = c.st;
                        c.st = St::Failed;
                        fail(format!("closed in {st:?}"), &mut failed);
                    }
                    Ok(k) => c.buf.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        let st = c.st;
                        c.st = St::Failed;
                        fail(format!("read in {st:?}: {e}"), &mut failed);
                    }
                }
                // Complete lines: act on each final reply line.
                while let Some(nl) = c.buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = c.buf.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line);
                    let Some((code, true)) = parse_reply_line(&line) else {
                        continue; // part of a multi-line reply
                    };
                    match on_reply(c.st, code, t) {
                        Next::Send(cmd) => {
                            // A few bytes into a fresh socket's empty buffer.
                            if let Err(e) = c.stream.write_all(cmd.as_bytes()) {
                                c.st = St::Failed;
                                fail(format!("write: {e}"), &mut failed);
                                break;
                            }
                            c.st = if c.st == St::Banner {
                                St::User
                            } else {
                                St::Pass
                            };
                        }
                        Next::Done => {
                            let now = Instant::now();
                            lat.push((now - c.sched).as_secs_f64() * 1e3);
                            last_done = now;
                            c.st = St::Done;
                            break;
                        }
                        Next::Fail(e) => {
                            c.st = St::Failed;
                            fail(e, &mut failed);
                            break;
                        }
                    }
                }
            }
            if matches!(c.st, St::Done | St::Failed) {
                settled += 1;
                if c.st == St::Failed {
                    conns[i] = None; // closed now; a served session is held
                } else {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
            }
        }
        // Connections that take too long fail (checked every 100 ms).
        let now = Instant::now();
        if now < last_scan + Duration::from_millis(100) {
            continue;
        }
        last_scan = now;
        for c in conns.iter_mut() {
            let late = c.as_ref().is_some_and(|c| {
                !matches!(c.st, St::Done | St::Failed) && now > c.sched + t.timeout
            });
            if late {
                let st = c.as_ref().map(|c| c.st);
                *c = None;
                settled += 1;
                fail(format!("timed out in {st:?}"), &mut failed);
            }
        }
    }
    let unsettled = o.count - settled;
    let (_, cpu) = m.stop(ctx, out);
    let served = lat.len() as u64;
    lat.sort_by(|a, b| a.total_cmp(b));
    let serve_all = (last_done - t0).as_secs_f64();
    out.int("requested", o.count)
        .num("window_s", o.window.as_secs_f64())
        .int("served", served)
        .int("failures", failed + unsettled)
        .num("serve_all_s", serve_all)
        .opt("p50_ms", percentile(&lat, 50.0))
        .opt("p99_ms", percentile(&lat, 99.0))
        .opt("max_ms", lat.last().copied())
        .opt(
            "logins_per_server_cpu_s",
            cpu.filter(|c| *c > 0.0).map(|c| served as f64 / c),
        );
    if !first_errors.is_empty() {
        out.str("first_errors", &first_errors.join(" | "));
    }
    let t1 = Instant::now();
    drop(conns);
    out.num("close_s", t1.elapsed().as_secs_f64());
    if served == 0 {
        return Err("no session logged in".into());
    }
    Ok(())
}
