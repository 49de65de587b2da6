//! `idle`: hold N logged-in control connections and measure the server's memory.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ftp::{Ctrl, Res, Target};
use crate::stats::{mem_available_mib, raise_nofile, tree_memory_kib, Out};

pub struct IdleOpts {
    pub count: u64,
    pub threads: usize,
    pub hold: Duration,
    pub max_time: Duration,
    pub min_avail_mib: u64,
    pub sample: usize,
    pub server_pid: Option<u32>,
}

/// Connections one source address may open to one server port before its
/// ephemeral ports run out (leave a margin for data connections and TIME_WAIT).
pub(crate) fn per_source_limit() -> u64 {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let v: Vec<u64> = s
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 2).then(|| v[1].saturating_sub(v[0]))
        })
        .unwrap_or(28_000);
    range * 8 / 10
}

/// The source address for connection number `i`: 127.0.0.1 until the ephemeral range
/// of one source could run out, then 127.0.0.2, ... (loopback servers only).
pub(crate) fn source_for(
    i: u64,
    per_source: u64,
    target_ip: IpAddr,
    needed: bool,
) -> Option<IpAddr> {
    if !needed || !target_ip.is_loopback() || !target_ip.is_ipv4() {
        return None;
    }
    let k = (i / per_source.max(1)) as u8;
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + k)))
}

fn open_one(t: &Target, src: Option<IpAddr>) -> Res<Ctrl> {
    let mut c = Ctrl::open(t, src)?;
    c.login(&t.user, &t.pass)?;
    Ok(c)
}

/// NOOP on a held connection; true when it answers 200.
fn noop(c: &mut Ctrl) -> bool {
    c.cmd("NOOP", &[200]).is_ok()
}

pub fn idle(t: &Target, o: &IdleOpts, out: &mut Out) -> Res<()> {
    let nofile = raise_nofile();
    out.int("requested", o.count).int("client_nofile", nofile);
    let before = o.server_pid.map(tree_memory_kib);
    let per_source = per_source_limit();
    let multi_source = o.count > per_source;
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let why = Arc::new(Mutex::new(String::from("all opened")));
    let deadline = Instant::now() + o.max_time;
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..o.threads.max(1) {
        let (t, stop, opened, next, why) = (
            t.clone(),
            stop.clone(),
            opened.clone(),
            next.clone(),
            why.clone(),
        );
        let (count, min_avail) = (o.count, o.min_avail_mib);
        handles.push(std::thread::spawn(move || {
            let mut held = Vec::new();
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let reason = if Instant::now() > deadline {
                    Some("time limit".to_string())
                } else if i % 256 == 0 && mem_available_mib().is_some_and(|m| m < min_avail) {
                    Some(format!("MemAvailable < {min_avail} MiB"))
                } else {
                    None
                };
                let reason = reason.or_else(|| {
                    match open_one(&t, source_for(i, per_source, t.addr.ip(), multi_source)) {
                        Ok(s) => {
                            held.push(s);
                            opened.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Err(e) => Some(format!("error at connection {i}: {e}")),
                    }
                });
                if let Some(r) = reason {
                    if !stop.swap(true, Ordering::Relaxed) {
                        *why.lock().unwrap() = r;
                    }
                    break;
                }
            }
            held
        }));
    }
    let mut held: Vec<Ctrl> = Vec::new();
    for h in handles {
        held.extend(h.join().map_err(|_| "idle thread panicked".to_string())?);
    }
    let open_s = start.elapsed().as_secs_f64();
    let n = held.len() as u64;
    out.int("opened", n)
        .num("open_s", open_s)
        .num("logins_per_s", n as f64 / open_s)
        .str("stop_reason", &why.lock().unwrap())
        .int(
            "source_addresses",
            if multi_source {
                n.div_ceil(per_source)
            } else {
                1
            },
        );
    std::thread::sleep(o.hold);
    if let (Some(pid), Some((rss0, pss0, procs0))) = (o.server_pid, before) {
        let (rss1, pss1, procs1) = tree_memory_kib(pid);
        let per = |a: u64, b: u64| (b as f64 - a as f64) / n.max(1) as f64;
        out.int("server_rss_kib_before", rss0)
            .int("server_pss_kib_before", pss0)
            .int("server_rss_kib_held", rss1)
            .int("server_pss_kib_held", pss1)
            .int("server_procs_before", procs0 as u64)
            .int("server_procs_held", procs1 as u64)
            .num("rss_kib_per_session", per(rss0, rss1))
            .num("pss_kib_per_session", per(pss0, pss1));
    }
    // NOOP a sample spread over all held connections.
    let step = (held.len() / o.sample.max(1)).max(1);
    let (mut tried, mut ok) = (0u64, 0u64);
    for s in held.iter_mut().step_by(step).take(o.sample) {
        s.set_read_timeout(Some(Duration::from_secs(5)));
        tried += 1;
        ok += u64::from(noop(s));
    }
    out.int("noop_sampled", tried).int("noop_ok", ok).num(
        "noop_ok_pct",
        if tried > 0 {
            100.0 * ok as f64 / tried as f64
        } else {
            0.0
        },
    );
    let t0 = Instant::now();
    drop(held);
    out.num("close_s", t0.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_only_when_needed() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(source_for(5, 100, lo, false), None);
        assert_eq!(
            source_for(5, 100, lo, true),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            source_for(250, 100, lo, true),
            Some("127.0.0.3".parse().unwrap())
        );
        assert_eq!(
            source_for(250, 100, "10.0.0.1".parse().unwrap(), true),
            None
        );
    }
}
