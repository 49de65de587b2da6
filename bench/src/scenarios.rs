//! The FTP scenarios: transfers, session rate, command latency, listings.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ftp::{Ctrl, Res, Target};
use crate::stats::{p50_p99, pin_to_cpu, self_cpu, Out, ServerCpu};

/// What every scenario gets.
pub struct Ctx {
    pub target: Target,
    pub server_cpu: Option<ServerCpu>,
    pub path: String,
    pub size_mib: u64,
    pub clients: usize,
    pub duration: Duration,
    pub count: u64,
    pub pin_cpu: Option<usize>,
    /// `sessions`/`logins`: stop after this many in all (before `duration` ends), for
    /// counts of instructions or system calls per session.
    pub total: Option<u64>,
}

/// Wall time, server CPU and client CPU around `f`, written into `out`.
pub struct Meter {
    start: Instant,
    cpu0: Option<f64>,
    self0: Duration,
}

impl Meter {
    pub fn start(ctx: &Ctx) -> Meter {
        Meter {
            cpu0: ctx.server_cpu.as_ref().and_then(ServerCpu::seconds),
            self0: self_cpu(),
            start: Instant::now(),
        }
    }

    /// Record `wall_s`, `server_cpu_s` and `client_cpu_s`; returns (wall, server CPU).
    pub fn stop(self, ctx: &Ctx, out: &mut Out) -> (f64, Option<f64>) {
        let wall = self.start.elapsed().as_secs_f64();
        let cpu1 = ctx.server_cpu.as_ref().and_then(ServerCpu::seconds);
        let server = match (self.cpu0, cpu1) {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        };
        out.num("wall_s", wall).opt("server_cpu_s", server);
        if let Some(c) = &ctx.server_cpu {
            out.str("server_cpu_from", c.label());
        }
        out.num("client_cpu_s", (self_cpu() - self.self0).as_secs_f64());
        (wall, server)
    }
}

/// `work / cpu` when the CPU figure is known and not zero.
fn per_cpu(work: f64, cpu: Option<f64>) -> Option<f64> {
    cpu.filter(|c| *c > 0.0).map(|c| work / c)
}

fn login(ctx: &Ctx) -> Res<Ctrl> {
    let mut c = Ctrl::open(&ctx.target, None)?;
    c.login(&ctx.target.user, &ctx.target.pass)?;
    c.cmd("TYPE I", &[200])?;
    Ok(c)
}

/// Per repetition: (bytes, wall seconds, server CPU seconds).
type Rep = (u64, f64, Option<f64>);

/// Median MB/s and MB per server CPU-s over repetitions, plus every repetition's MB/s.
fn report_reps(reps: &[Rep], out: &mut Out) {
    let mut rates: Vec<f64> = reps.iter().map(|(b, w, _)| *b as f64 / 1e6 / w).collect();
    let mut per: Vec<f64> = reps
        .iter()
        .filter_map(|(b, _, c)| per_cpu(*b as f64 / 1e6, *c))
        .collect();
    let list: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    let (wall, cpu): (f64, f64) = reps
        .iter()
        .map(|(_, w, c)| (*w, c.unwrap_or(0.0)))
        .fold((0.0, 0.0), |(a, b), (w, c)| (a + w, b + c));
    out.int("reps", reps.len() as u64)
        .int("bytes", reps.first().map_or(0, |r| r.0))
        .num("wall_s", wall)
        .num("server_cpu_s", cpu)
        .opt("mb_per_s", median(&mut rates))
        .opt("mb_per_server_cpu_s", median(&mut per))
        .str("reps_mb_per_s", &list.join(","));
}

fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    crate::stats::percentile(v, 50.0)
}

/// RETR the file `count` times (default 1 in main; run.sh asks for 2).
pub fn retr_big(ctx: &Ctx, out: &mut Out) -> Res<()> {
    let mut c = login(ctx)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut reps = Vec::new();
    for _ in 0..ctx.count.max(1) {
        let m = Meter::start(ctx);
        let bytes = c.download(
            &format!("RETR {}", ctx.path),
            ctx.target.timeout,
            &mut buf,
            &mut |_| {},
        )?;
        let (wall, cpu) = m.stop(ctx, &mut Out::default());
        reps.push((bytes, wall, cpu));
    }
    report_reps(&reps, out);
    c.quit()
}

/// STOR `size_mib` MiB `count` times, deleting the file after each (untimed). The first
/// upload into a fresh tmpfs can be slower (page allocation), hence repetitions.
pub fn stor_big(ctx: &Ctx, out: &mut Out) -> Res<()> {
    let mut c = login(ctx)?;
    let chunk = pseudo_random(1 << 20, 0x5eed);
    let bytes = ctx.size_mib << 20;
    let name = format!("wharf-load-stor-{}.bin", std::process::id());
    let mut reps = Vec::new();
    for _ in 0..ctx.count.max(1) {
        let m = Meter::start(ctx);
        c.upload(&format!("STOR {name}"), ctx.target.timeout, &chunk, bytes)?;
        let (wall, cpu) = m.stop(ctx, &mut Out::default());
        reps.push((bytes, wall, cpu));
        c.cmd(&format!("DELE {name}"), &[250])?;
    }
    report_reps(&reps, out);
    c.quit()
}

/// Deterministic filler bytes (xorshift), incompressible enough for FTP.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// One full session: connect, banner, login, TYPE I, PASV, RETR, QUIT, wait for close.
fn one_session(t: &Target, path: &str, buf: &mut [u8]) -> Res<()> {
    let mut c = Ctrl::open(t, None)?;
    c.login(&t.user, &t.pass)?;
    c.cmd("TYPE I", &[200])?;
    let n = c.download(&format!("RETR {path}"), t.timeout, buf, &mut |_| {})?;
    if n == 0 {
        return Err("RETR returned 0 bytes".into());
    }
    c.quit()
}

/// One login: connect, banner, USER, PASS (230), QUIT, wait for the close.
fn one_login(t: &Target, _path: &str, _buf: &mut [u8]) -> Res<()> {
    let mut c = Ctrl::open(t, None)?;
    c.login(&t.user, &t.pass)?;
    c.quit()
}

pub fn sessions(ctx: &Ctx, out: &mut Out) -> Res<()> {
    repeat(ctx, out, "sessions", one_session)
}

/// `--clients` threads logging in and out for `--duration` s: what an account provider
/// (the users file, PAM, LDAP with or without the login cache) costs per login.
pub fn logins(ctx: &Ctx, out: &mut Out) -> Res<()> {
    repeat(ctx, out, "logins", one_login)
}

type Job = fn(&Target, &str, &mut [u8]) -> Res<()>;

/// `--clients` threads running `job` back to back for `--duration` s; reported as
/// `noun`, `noun_per_s`, `noun_per_server_cpu_s`, p50/p99 ms.
fn repeat(ctx: &Ctx, out: &mut Out, noun: &str, job: Job) -> Res<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let first_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let m = Meter::start(ctx);
    let deadline = Instant::now() + ctx.duration;
    let claimed = Arc::new(AtomicU64::new(0));
    let total = ctx.total.unwrap_or(u64::MAX);
    let mut handles = Vec::new();
    for _ in 0..ctx.clients {
        let (t, path) = (ctx.target.clone(), ctx.path.clone());
        let (stop, first_errors, claimed) = (stop.clone(), first_errors.clone(), claimed.clone());
        handles.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::Relaxed)
                && Instant::now() < deadline
                && claimed.fetch_add(1, Ordering::Relaxed) < total
            {
                let s = Instant::now();
                match job(&t, &path, &mut buf) {
                    Ok(()) => lat.push(s.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        errors += 1;
                        let mut fe = first_errors.lock().unwrap();
                        if fe.len() < 3 {
                            fe.push(e);
                        }
                        // Do not spin on a refusing server.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().map_err(|_| "client thread panicked".to_string())?;
        lat.extend(l);
        errors += e;
    }
    let (wall, cpu) = m.stop(ctx, out);
    let n = lat.len() as f64;
    let (p50, p99) = p50_p99(&mut lat);
    out.int("clients", ctx.clients as u64)
        .int(noun, lat.len() as u64)
        .int("errors", errors)
        .num(&format!("{noun}_per_s"), n / wall)
        .opt(&format!("{noun}_per_server_cpu_s"), per_cpu(n, cpu))
        .opt("p50_ms", p50)
        .opt("p99_ms", p99);
    let fe = first_errors.lock().unwrap();
    if !fe.is_empty() {
        out.str("first_errors", &fe.join(" | "));
    }
    Ok(())
}

pub fn cmd_latency(ctx: &Ctx, out: &mut Out) -> Res<()> {
    if let Some(cpu) = ctx.pin_cpu {
        out.str("pinned", if pin_to_cpu(cpu) { "yes" } else { "failed" });
    }
    let mut c = login(ctx)?;
    let mut lat = Vec::with_capacity(ctx.count as usize);
    let m = Meter::start(ctx);
    for i in 0..ctx.count {
        let s = Instant::now();
        if i % 2 == 0 {
            c.cmd("NOOP", &[200])?;
        } else {
            c.cmd("PWD", &[257])?;
        }
        lat.push(s.elapsed().as_secs_f64() * 1e6);
    }
    let (wall, cpu) = m.stop(ctx, out);
    let n = lat.len() as f64;
    let (p50, p99) = p50_p99(&mut lat);
    out.int("ops", lat.len() as u64)
        .num("ops_per_s", n / wall)
        .opt("ops_per_server_cpu_s", per_cpu(n, cpu))
        .opt("p50_us", p50)
        .opt("p99_us", p99);
    c.quit()
}

/// 5 x LIST and 5 x MLSD of a directory; entries = non-empty lines.
pub fn list(ctx: &Ctx, out: &mut Out) -> Res<()> {
    let mut c = login(ctx)?;
    let mut buf = vec![0u8; 256 * 1024];
    for verb in ["LIST", "MLSD"] {
        let mut entries = 0u64;
        let mut failed = None;
        let m = Meter::start(ctx);
        for _ in 0..ctx.count {
            let mut lines = 0u64;
            let r = c.download(
                &format!("{verb} {}", ctx.path),
                ctx.target.timeout,
                &mut buf,
                &mut |b| lines += b.iter().filter(|&&x| x == b'\n').count() as u64,
            );
            match r {
                Ok(_) => entries += lines,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let mut sub = Out::default();
        let (wall, cpu) = m.stop(ctx, &mut sub);
        let key = verb.to_lowercase();
        if let Some(e) = failed {
            out.str(&format!("{key}_error"), &e);
            out.opt(&format!("{key}_entries_per_s"), None);
            continue;
        }
        out.int(&format!("{key}_entries"), entries)
            .num(&format!("{key}_wall_s"), wall)
            .opt(&format!("{key}_server_cpu_s"), cpu)
            .num(&format!("{key}_entries_per_s"), entries as f64 / wall)
            .opt(
                &format!("{key}_entries_per_server_cpu_s"),
                per_cpu(entries as f64, cpu),
            );
    }
    c.quit()
}
