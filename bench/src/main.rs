//! wharf-load: a load generator for any FTP server, printing one JSON line per run.

mod concurrent;
mod ftp;
mod idle;
mod scenarios;
mod selftest;
mod stats;
mod storm;
mod tls;

use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stats::{Out, ServerCpu};

const USAGE: &str = "\
usage: wharf-load SCENARIO [--option value]...

FTP scenarios (need a server):
  retr-big     one session, TYPE I, PASV, --count x RETR --path into a 1 MiB
               buffer; median MB/s over the repetitions
  stor-big     one session, --count x STOR --size-mib MiB from memory, DELE after
               each (untimed); median MB/s
  sessions     --clients threads for --duration s: connect, login, TYPE I, PASV,
               RETR --path, QUIT, wait for close; sessions/s, p50/p99 ms, errors
  logins       --clients threads for --duration s: connect, USER, PASS, QUIT, wait
               for close; logins/s, p50/p99 ms, errors (account providers)
  cmd-latency  one session, --count alternating NOOP/PWD; ops/s, p50/p99 us
  list         --count x LIST and --count x MLSD of directory --path; entries/s
  idle         hold --count logged-in control connections; logins/s, and with
               --server-pid the server's RSS/PSS per session; NOOP a sample
  xfer-down | xfer-up
               --clients sessions log in, then all RETR --path (or STOR
               --size-mib MiB) at once; aggregate MB/s, MB per server CPU-s,
               Jain's fairness index of the per-transfer rates, slowest rate
  ctl-latency  --clients sessions send NOOP/PWD every --interval-ms, idle for
               --duration s, then while --transfers sessions RETR --path in a
               loop; p50/p99/p99.9 us of both phases
  storm        --count sessions connect within --window s and log in (one
               non-blocking client thread), held until all are served; time to
               serve all, failures, p50/p99 ms from each scheduled start
  tree         CWD --path, then --count times: LIST, CWD d; levels/s
Self tests (no server):
  echo-floor   --count round trips to an in-process echo server; p50/p99 us
  raw-tcp | raw-readwrite | raw-sendfile
               loopback stream of --size-mib from a buffer, or of file --path
               with read()+write() of --buf-kib, or with sendfile(); MB/s

options (defaults):
  --host 127.0.0.1  --port 21  --user anonymous  --pass bench@  --server unknown
  --server-pid PID        CPU of the PID's process tree from /proc (and idle memory)
  --server-cgroup DIR     CPU from DIR/cpuacct.usage instead (cgroup v1 cpuacct)
  --path P  --size-mib 512  --clients 16  --duration 8  --count (per scenario)
  --timeout 30  --pin-cpu N (cmd-latency, echo-floor client)  --echo-cpu N
  --threads 8  --hold 3  --max-time 180  --min-avail-mib 4096  --sample 1000
  --buf-kib 1024  --tag TEXT (copied into the output)
  --transfers 100  --interval-ms 20 (ctl-latency)  --window 1 (storm)
  --label NAME   the scenario's name in the output (default: SCENARIO)
  --total N      sessions, logins: stop after N in all (profiling per session)
  --tls off|explicit|implicit  FTPS (AUTH TLS + PROT P, or TLS from the first byte);
                          any certificate is accepted; data connections resume the
                          control connection's TLS session
";

fn parse_args() -> Result<(String, HashMap<String, String>), String> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().ok_or("missing SCENARIO")?;
    if scenario == "-h" || scenario == "--help" {
        return Err(String::new());
    }
    let mut opts = HashMap::new();
    while let Some(k) = args.next() {
        let key = k
            .strip_prefix("--")
            .ok_or_else(|| format!("expected --option, got {k:?}"))?;
        let v = args
            .next()
            .ok_or_else(|| format!("--{key} needs a value"))?;
        opts.insert(key.to_string(), v);
    }
    Ok((scenario, opts))
}

struct Opts(HashMap<String, String>);

impl Opts {
    fn s(&mut self, k: &str, d: &str) -> String {
        self.0.remove(k).unwrap_or_else(|| d.to_string())
    }
    fn n<T: std::str::FromStr>(&mut self, k: &str, d: T) -> Result<T, String> {
        match self.0.remove(k) {
            None => Ok(d),
            Some(v) => v.parse().map_err(|_| format!("--{k}: bad number {v:?}")),
        }
    }
    fn opt<T: std::str::FromStr>(&mut self, k: &str) -> Result<Option<T>, String> {
        self.0
            .remove(k)
            .map(|v| v.parse().map_err(|_| format!("--{k}: bad number {v:?}")))
            .transpose()
    }
}

fn run(scenario: &str, o: &mut Opts, out: &mut Out) -> Result<(), String> {
    let host = o.s("host", "127.0.0.1");
    let port: u16 = o.n("port", 21)?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let target = ftp::Target {
        addr,
        user: o.s("user", "anonymous"),
        pass: o.s("pass", "bench@"),
        timeout: Duration::from_secs_f64(o.n("timeout", 30.0)?),
        tls: match o.s("tls", "off").as_str() {
            "off" => None,
            "explicit" => Some(tls::Tls::new(tls::Mode::Explicit)),
            "implicit" => Some(tls::Tls::new(tls::Mode::Implicit)),
            other => return Err(format!("--tls: {other:?} is not off, explicit or implicit")),
        },
    };
    let server_pid: Option<u32> = o.opt("server-pid")?;
    let server_cpu = match (o.0.remove("server-cgroup"), server_pid) {
        (Some(dir), _) => Some(ServerCpu::Cgroup(dir.into())),
        (None, Some(pid)) => Some(ServerCpu::Tree(pid)),
        (None, None) => None,
    };
    let default_count = match scenario {
        "cmd-latency" => 20_000,
        "echo-floor" => 20_000,
        "list" => 5,
        "retr-big" | "stor-big" => 1,
        "storm" => 10_000,
        "tree" => 1_000,
        _ => 1_000,
    };
    let default_path = match scenario {
        "retr-big" => "big.bin",
        "sessions" => "small.bin",
        "list" => "list10k",
        "xfer-down" | "ctl-latency" => "x64m.bin",
        "tree" => "deep",
        _ => "",
    };
    let ctx = scenarios::Ctx {
        target: target.clone(),
        server_cpu,
        path: o.s("path", default_path),
        size_mib: o.n("size-mib", if scenario == "xfer-up" { 64 } else { 512 })?,
        clients: o.n("clients", 16)?,
        duration: Duration::from_secs_f64(o.n("duration", 8.0)?),
        count: o.n("count", default_count)?,
        pin_cpu: o.opt("pin-cpu")?,
        total: o.opt("total")?,
    };
    let buf = o.n::<usize>("buf-kib", 1024)? * 1024;
    let echo_cpu: Option<usize> = o.opt("echo-cpu")?;
    let idle_opts = idle::IdleOpts {
        count: ctx.count,
        threads: o.n("threads", 8)?,
        hold: Duration::from_secs_f64(o.n("hold", 3.0)?),
        max_time: Duration::from_secs_f64(o.n("max-time", 180.0)?),
        min_avail_mib: o.n("min-avail-mib", 4096)?,
        sample: o.n("sample", 1000)?,
        server_pid,
    };
    let transfers: usize = o.n("transfers", 100)?;
    let interval = Duration::from_secs_f64(o.n::<f64>("interval-ms", 20.0)? / 1e3);
    let storm_opts = storm::StormOpts {
        count: ctx.count,
        window: Duration::from_secs_f64(o.n("window", 1.0)?),
        max_time: idle_opts.max_time,
    };
    if let Some(k) = o.0.keys().next() {
        return Err(format!("unknown option --{k}"));
    }
    match scenario {
        "retr-big" => scenarios::retr_big(&ctx, out),
        "stor-big" => scenarios::stor_big(&ctx, out),
        "sessions" => scenarios::sessions(&ctx, out),
        "logins" => scenarios::logins(&ctx, out),
        "cmd-latency" => scenarios::cmd_latency(&ctx, out),
        "list" => scenarios::list(&ctx, out),
        "idle" => idle::idle(&target, &idle_opts, out),
        "xfer-down" => concurrent::transfers(&ctx, concurrent::Dir::Down, out),
        "xfer-up" => concurrent::transfers(&ctx, concurrent::Dir::Up, out),
        "ctl-latency" => concurrent::ctl_latency(&ctx, transfers, interval, out),
        "storm" => storm::storm(&ctx, &storm_opts, out),
        "tree" => concurrent::tree(&ctx, out),
        "echo-floor" => {
            let pin = match (echo_cpu, ctx.pin_cpu) {
                (Some(e), Some(c)) => Some((e, c)),
                _ => None,
            };
            selftest::echo_floor(ctx.count, pin, out)
        }
        "raw-tcp" | "raw-readwrite" | "raw-sendfile" => {
            let mode = match scenario {
                "raw-tcp" => selftest::RawMode::Tcp,
                "raw-readwrite" => selftest::RawMode::ReadWrite,
                _ => selftest::RawMode::Sendfile,
            };
            let file = (!ctx.path.is_empty()).then_some(ctx.path.as_str());
            selftest::raw(mode, file, ctx.size_mib << 20, buf, out)
        }
        other => Err(format!("unknown scenario {other:?}")),
    }
}

fn main() -> ExitCode {
    let (scenario, opts) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("wharf-load: {e}");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mut o = Opts(opts);
    let mut head = Out::default();
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // FTPS runs are their own rows: "ftps-retr-big", ...
    let label = match (o.0.remove("label"), o.0.get("tls").map(String::as_str)) {
        (Some(l), _) => l,
        (None, Some("explicit" | "implicit")) => format!("ftps-{scenario}"),
        _ => scenario.clone(),
    };
    head.str("scenario", &label)
        .str("server", &o.s("server", "unknown"))
        .str("tag", &o.s("tag", ""))
        .int("unix_time", ts);
    let mut body = Out::default();
    let result = run(&scenario, &mut o, &mut body);
    match &result {
        Ok(()) => head.bool("ok", true),
        Err(e) => head.bool("ok", false).str("error", e),
    };
    let (h, b) = (head.line(), body.line());
    // Splice the two objects into one line.
    let line = if b == "{}" {
        h
    } else {
        format!("{},{}", &h[..h.len() - 1], &b[1..])
    };
    println!("{line}");
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
