//! Scenarios with many sessions at once: concurrent transfers and their fairness,
//! control-channel latency while transfers saturate the server, and a deep tree walk.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::ftp::{Ctrl, Res, Target};
use crate::scenarios::{pseudo_random, Ctx, Meter};
use crate::stats::{percentile, Out};

/// Client threads block in reads and writes; a small stack keeps 1,000 of them cheap.
const STACK: usize = 256 * 1024;
/// Each reading thread's buffer (1,000 threads: 64 MiB).
const READ_BUF: usize = 64 * 1024;

fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Res<JoinHandle<T>> {
    std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .map_err(|e| format!("spawning a client thread: {e}"))
}

fn login(t: &Target) -> Res<Ctrl> {
    let mut c = Ctrl::open(t, None)?;
    c.login(&t.user, &t.pass)?;
    c.cmd("TYPE I", &[200])?;
    Ok(c)
}

/// Keeps the first few error messages of many threads.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<(u64, Vec<String>)>>);

impl Errors {
    fn add(&self, e: String) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 += 1;
        if g.1.len() < 3 {
            g.1.push(e);
        }
    }

    fn write(&self, out: &mut Out) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        out.int("errors", g.0);
        if !g.1.is_empty() {
            out.str("first_errors", &g.1.join(" | "));
        }
    }
}

/// Jain's fairness index of `rates`: (Σx)² / (n·Σx²); 1 when all are equal, 1/n when
/// one gets everything.
pub fn jain(rates: &[f64]) -> Option<f64> {
    let sum: f64 = rates.iter().sum();
    let sq: f64 = rates.iter().map(|r| r * r).sum();
    (!rates.is_empty() && sq > 0.0).then(|| sum * sum / (rates.len() as f64 * sq))
}

/// Which way the bytes go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Down,
    Up,
}

/// One transfer's outcome: bytes, start and end.
type Done = (u64, Instant, Instant);

/// `--clients` sessions log in, wait for each other, then all RETR `--path` (or STOR
/// `--size-mib` MiB into `up/`) at once. Aggregate MB/s from the first start to the last
/// end, MB per server CPU-second, and per transfer: Jain's index of the rates, the
/// slowest and the median. Uploads are deleted afterwards (untimed).
pub fn transfers(ctx: &Ctx, dir: Dir, out: &mut Out) -> Res<()> {
    let n = ctx.clients.max(1);
    let size = ctx.size_mib << 20;
    if dir == Dir::Up {
        // Every upload is held at once: refuse what would not fit in memory (tmpfs).
        let need = n as u64 * ctx.size_mib;
        if let Some(avail) = crate::stats::mem_available_mib() {
            if need > avail / 2 {
                return Err(format!(
                    "skipped: {n} uploads of {} MiB need {need} MiB, more than half of MemAvailable ({avail} MiB)",
                    ctx.size_mib
                ));
            }
        }
    }
    let chunk = Arc::new(pseudo_random(1 << 20, 0x5eed));
    let start = Arc::new(Barrier::new(n + 1));
    let errors = Errors::default();
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (t, path, start, errors, chunk) = (
            ctx.target.clone(),
            ctx.path.clone(),
            start.clone(),
            errors.clone(),
            chunk.clone(),
        );
        let pid = std::process::id();
        handles.push(spawn(move || {
            let session = login(&t);
            start.wait();
            let mut c = match session {
                Ok(c) => c,
                Err(e) => {
                    errors.add(format!("login: {e}"));
                    return (None, None);
                }
            };
            let s = Instant::now();
            let (r, name) = match dir {
                Dir::Down => {
                    let mut buf = vec![0u8; READ_BUF];
                    let cmd = format!("RETR {path}");
                    (c.download(&cmd, t.timeout, &mut buf, &mut |_| {}), None)
                }
                Dir::Up => {
                    let name = format!("up/wharf-load-{pid}-{i}.bin");
                    let cmd = format!("STOR {name}");
                    let r = c.upload(&cmd, t.timeout, &chunk, size).map(|()| size);
                    (r, Some(name))
                }
            };
            let e = Instant::now();
            match r {
                Ok(bytes) => (Some((bytes, s, e)), Some((c, name))),
                Err(err) => {
                    errors.add(err);
                    (None, Some((c, name)))
                }
            }
        })?);
    }
    let m = Meter::start(ctx);
    start.wait();
    let mut done: Vec<Done> = Vec::with_capacity(n);
    let mut sessions = Vec::new();
    for h in handles {
        let (d, s) = h.join().map_err(|_| "client thread panicked".to_string())?;
        done.extend(d);
        sessions.extend(s);
    }
    let (_, cpu) = m.stop(ctx, out);
    for (mut c, name) in sessions {
        if let Some(name) = name {
            // The upload may have failed half-way: deleting is best effort.
            let _ = c.cmd(&format!("DELE {name}"), &[250]);
        }
        let _ = c.quit();
    }
    errors.write(out);
    let bytes: u64 = done.iter().map(|d| d.0).sum();
    let first = done.iter().map(|d| d.1).min();
    let last = done.iter().map(|d| d.2).max();
    let span = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let mut rates: Vec<f64> = done
        .iter()
        .map(|(b, s, e)| *b as f64 / 1e6 / (*e - *s).as_secs_f64().max(1e-9))
        .collect();
    rates.sort_by(|a, b| a.total_cmp(b));
    let mb = bytes as f64 / 1e6;
    // A download's size is the file's (unknown when none completed).
    let size_mib = match dir {
        Dir::Up => Some(ctx.size_mib as f64),
        Dir::Down => done.first().map(|d| (d.0 >> 20) as f64),
    };
    out.int("clients", n as u64)
        .opt("size_mib", size_mib)
        .int("completed", done.len() as u64)
        .int("bytes", bytes)
        .num("span_s", span)
        .opt("mb_per_s", (span > 0.0).then(|| mb / span))
        .opt(
            "mb_per_server_cpu_s",
            cpu.filter(|c| *c > 0.0).map(|c| mb / c),
        )
        .opt("jain", jain(&rates))
        .opt("slowest_mb_per_s", rates.first().copied())
        .opt("median_mb_per_s", percentile(&rates, 50.0))
        .opt("fastest_mb_per_s", rates.last().copied());
    // Failed transfers are counted in `errors`; the run fails only if none completed.
    if done.is_empty() {
        return Err(format!("all {n} transfers failed"));
    }
    Ok(())
}

/// Nearest-rank p50, p99 and p99.9 of `v` (sorted here), in the unit given.
fn tail(v: &mut [f64], out: &mut Out, prefix: &str) {
    v.sort_by(|a, b| a.total_cmp(b));
    out.int(&format!("{prefix}_ops"), v.len() as u64)
        .opt(&format!("{prefix}_p50_us"), percentile(v, 50.0))
        .opt(&format!("{prefix}_p99_us"), percentile(v, 99.0))
        .opt(&format!("{prefix}_p999_us"), percentile(v, 99.9));
}

/// `--clients` (50) logged-in sessions, each sending NOOP or PWD every `--interval-ms`
/// (20), for `--duration` s with the server otherwise idle, then again while
/// `--transfers` (100) sessions RETR `--path` over and over. Round-trip p50/p99/p99.9 of
/// both phases and their ratio: head-of-line blocking behind transfers shows here.
pub fn ctl_latency(ctx: &Ctx, transfers: usize, interval: Duration, out: &mut Out) -> Res<()> {
    let n = ctx.clients.max(1);
    let errors = Errors::default();
    // The command sessions, logged in once and used in both phases.
    let mut ctrls = Vec::with_capacity(n);
    for _ in 0..n {
        ctrls.push(login(&ctx.target)?);
    }
    let phase = |ctrls: Vec<Ctrl>, errors: &Errors| -> Res<(Vec<Ctrl>, Vec<f64>)> {
        let t0 = Instant::now() + Duration::from_millis(50);
        let end = t0 + ctx.duration;
        let mut hs = Vec::with_capacity(n);
        for (i, mut c) in ctrls.into_iter().enumerate() {
            let errors = errors.clone();
            // Spread the sessions over the interval.
            let offset = interval.mul_f64(i as f64 / n as f64);
            hs.push(spawn(move || {
                let mut lat = Vec::new();
                let mut next = t0 + offset;
                let mut k = 0u64;
                while next < end {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    let s = Instant::now();
                    let r = if k.is_multiple_of(2) {
                        c.cmd("NOOP", &[200])
                    } else {
                        c.cmd("PWD", &[257])
                    };
                    match r {
                        Ok(_) => lat.push(s.elapsed().as_secs_f64() * 1e6),
                        Err(e) => {
                            errors.add(e);
                            return (None, lat);
                        }
                    }
                    k += 1;
                    next = (next + interval).max(Instant::now());
                }
                (Some(c), lat)
            })?);
        }
        let mut lat = Vec::new();
        let mut back = Vec::new();
        for h in hs {
            let (c, l) = h.join().map_err(|_| "client thread panicked".to_string())?;
            back.extend(c);
            lat.extend(l);
        }
        Ok((back, lat))
    };
    let (ctrls, mut idle) = phase(ctrls, &errors)?;
    tail(&mut idle, out, "idle");
    // The load: `transfers` sessions downloading until told to stop, all read by one
    // non-blocking thread (a hundred reading threads would take the CPUs from the command
    // threads, and measure the client's scheduler rather than the server).
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(AtomicU64::new(0));
    let loader = {
        let (t, path) = (ctx.target.clone(), ctx.path.clone());
        let (stop, started, moved, errors) =
            (stop.clone(), started.clone(), moved.clone(), errors.clone());
        spawn(move || {
            if let Err(e) = load_loop(&t, &path, transfers, &stop, &started, &moved) {
                errors.add(format!("transfers: {e}"));
            }
        })?
    };
    // Every transfer running (bounded wait) before the loaded phase starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.load(Ordering::Relaxed) < transfers as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    out.int("transfers", transfers as u64)
        .int("transfers_running", started.load(Ordering::Relaxed));
    let m = Meter::start(ctx);
    let b0 = moved.load(Ordering::Relaxed);
    let (ctrls, mut loaded) = phase(ctrls, &errors)?;
    let b1 = moved.load(Ordering::Relaxed);
    let mut sub = Out::default();
    let (wall, cpu) = m.stop(ctx, &mut sub);
    stop.store(true, Ordering::Relaxed);
    let _ = loader.join();
    tail(&mut loaded, out, "loaded");
    let ratio = |k: f64| {
        let (mut a, mut b) = (idle.clone(), loaded.clone());
        a.sort_by(|x, y| x.total_cmp(y));
        b.sort_by(|x, y| x.total_cmp(y));
        match (percentile(&a, k), percentile(&b, k)) {
            (Some(i), Some(l)) if i > 0.0 => Some(l / i),
            _ => None,
        }
    };
    out.int("clients", n as u64)
        .num("interval_ms", interval.as_secs_f64() * 1e3)
        .opt("p99_loaded_over_idle", ratio(99.0))
        .num("load_mb_per_s", (b1 - b0) as f64 / 1e6 / wall)
        .opt("load_server_cpu_s", cpu);
    errors.write(out);
    for c in ctrls {
        let _ = c.quit();
    }
    let (ok_idle, ok_loaded) = (idle.len(), loaded.len());
    if ok_idle == 0 || ok_loaded == 0 {
        return Err("no command completed".into());
    }
    Ok(())
}

/// Starts a RETR of `path` on `c` and returns its data connection, non-blocking.
fn start_retr(c: &mut Ctrl, t: &Target, path: &str) -> Res<mio::net::TcpStream> {
    let data = c.pasv_connect(t.timeout)?;
    c.cmd(&format!("RETR {path}"), &[125, 150])?;
    data.set_nonblocking(true)
        .map_err(|e| format!("nonblocking: {e}"))?;
    Ok(mio::net::TcpStream::from_std(data))
}

/// `n` sessions each downloading `path` over and over, until `stop`; every data
/// connection is read by this one thread.
fn load_loop(
    t: &Target,
    path: &str,
    n: usize,
    stop: &AtomicBool,
    started: &AtomicU64,
    moved: &AtomicU64,
) -> Res<()> {
    use mio::{Events, Interest, Poll, Token};
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = login(t)?;
        let mut d = start_retr(&mut c, t, path)?;
        poll.registry()
            .register(&mut d, Token(i), Interest::READABLE)
            .map_err(|e| format!("register: {e}"))?;
        started.fetch_add(1, Ordering::Relaxed);
        sessions.push((c, d));
    }
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; 256 * 1024];
    while !stop.load(Ordering::Relaxed) {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let (c, d) = &mut sessions[i];
            let ended = loop {
                match std::io::Read::read(d, &mut buf) {
                    Ok(0) => break true,
                    Ok(k) => {
                        moved.fetch_add(k as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("RETR: reading data: {e}")),
                }
            };
            if ended {
                // The next download on this session, once this one is acknowledged.
                let _ = poll.registry().deregister(d);
                c.expect_reply(&[226, 250], "RETR")?;
                *d = start_retr(c, t, path)?;
                poll.registry()
                    .register(d, Token(i), Interest::READABLE)
                    .map_err(|e| format!("register: {e}"))?;
            }
        }
    }
    // Mid-transfer: the sessions and their data connections just go.
    Ok(())
}

/// Walks a chain of `--count` nested directories under `--path` (each named `d`): LIST
/// the current directory, CWD into `d`, and again, to the bottom. Levels per second,
/// entries per second and server CPU per level.
pub fn tree(ctx: &Ctx, out: &mut Out) -> Res<()> {
    let mut c = login(&ctx.target)?;
    c.cmd(&format!("CWD {}", ctx.path), &[250])?;
    let mut buf = vec![0u8; READ_BUF];
    let m = Meter::start(ctx);
    let (mut levels, mut entries) = (0u64, 0u64);
    let mut failed = None;
    for level in 0..ctx.count {
        let mut lines = 0u64;
        let r = c.download("LIST", ctx.target.timeout, &mut buf, &mut |b| {
            lines += b.iter().filter(|&&x| x == b'\n').count() as u64
        });
        if let Err(e) = r {
            failed = Some(format!("level {level}: {e}"));
            break;
        }
        entries += lines;
        levels += 1;
        if level + 1 < ctx.count {
            if let Err(e) = c.cmd("CWD d", &[250]) {
                failed = Some(format!("level {level}: {e}"));
                break;
            }
        }
    }
    let (wall, cpu) = m.stop(ctx, out);
    out.int("levels", levels)
        .int("entries", entries)
        .num("levels_per_s", levels as f64 / wall)
        .opt(
            "levels_per_server_cpu_s",
            cpu.filter(|c| *c > 0.0).map(|c| levels as f64 / c),
        )
        .num("entries_per_s", entries as f64 / wall);
    // The deepest directory's full path, as the server sees it.
    if let Ok(r) = c.cmd("PWD", &[257]) {
        out.int("pwd_len", r.text.len() as u64);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    c.quit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index() {
        assert_eq!(jain(&[]), None);
        assert_eq!(jain(&[5.0, 5.0, 5.0]), Some(1.0));
        let one = jain(&[10.0, 0.0, 0.0, 0.0]).unwrap();
        assert!((one - 0.25).abs() < 1e-12);
        let mixed = jain(&[1.0, 2.0]).unwrap();
        assert!((mixed - 0.9).abs() < 1e-12);
    }
}
