//! Figures: percentiles, one-line JSON output, CPU and memory of a server read from /proc.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// Nearest-rank percentile of an ascending slice; `None` when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Sort and return (p50, p99).
pub fn p50_p99(v: &mut [f64]) -> (Option<f64>, Option<f64>) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(v, 50.0), percentile(v, 99.0))
}

/// One JSON object, written as a single line. Keys keep their insertion order.
#[derive(Default)]
pub struct Out {
    fields: Vec<(String, String)>,
}

impl Out {
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        let mut s = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => s.push_str("\\\""),
                '\\' => s.push_str("\\\\"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(s, "\\u{:04x}", c as u32);
                }
                c => s.push(c),
            }
        }
        s.push('"');
        self.fields.push((k.to_string(), s));
        self
    }

    pub fn num(&mut self, k: &str, v: f64) -> &mut Self {
        let s = if v.is_finite() {
            let r = (v * 1000.0).round() / 1000.0;
            format!("{r}")
        } else {
            "null".into()
        };
        self.fields.push((k.to_string(), s));
        self
    }

    pub fn opt(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.fields.push((k.to_string(), "null".into()));
                self
            }
        }
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.fields.push((k.to_string(), v.to_string()));
        self
    }

    pub fn int(&mut self, k: &str, v: u64) -> &mut Self {
        self.fields.push((k.to_string(), v.to_string()));
        self
    }

    pub fn line(&self) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(s, "\"{k}\":{v}");
        }
        s.push('}');
        s
    }
}

/// Per-process fields of /proc/PID/stat after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// `pid` and all its descendants, from the ppid of every process in /proc.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(f) = stat_fields(p) {
                if let Some(pp) = f.get(1).and_then(|s| s.parse::<u32>().ok()) {
                    children.entry(pp).or_default().push(p);
                }
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(c) = children.get(&out[i]) {
            out.extend(c);
        }
        i += 1;
    }
    out
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Where the server's CPU time is read from.
#[derive(Clone, Debug)]
pub enum ServerCpu {
    /// utime+stime+cutime+cstime of the process tree (undercounts children reaped elsewhere).
    Tree(u32),
    /// A cgroup v1 cpuacct directory holding the server (exact for forking servers).
    Cgroup(PathBuf),
}

impl ServerCpu {
    pub fn seconds(&self) -> Option<f64> {
        match self {
            ServerCpu::Tree(pid) => {
                let tck = clk_tck();
                let mut total = 0u64;
                let mut any = false;
                for p in process_tree(*pid) {
                    if let Some(f) = stat_fields(p) {
                        // Fields after ')' start at index 0 = field 3 (state); utime is field 14.
                        for i in 11..=14 {
                            total += f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                        }
                        any = true;
                    }
                }
                any.then(|| total as f64 / tck)
            }
            ServerCpu::Cgroup(dir) => {
                let ns: u64 = fs::read_to_string(dir.join("cpuacct.usage"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                Some(ns as f64 / 1e9)
            }
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            ServerCpu::Tree(_) => "proc-tree",
            ServerCpu::Cgroup(_) => "cgroup",
        }
    }
}

/// RSS and PSS (KiB) summed over the process tree, from smaps_rollup, and the process count.
pub fn tree_memory_kib(pid: u32) -> (u64, u64, usize) {
    let (mut rss, mut pss, mut n) = (0, 0, 0);
    for p in process_tree(pid) {
        let Ok(s) = fs::read_to_string(format!("/proc/{p}/smaps_rollup")) else {
            continue;
        };
        n += 1;
        for line in s.lines() {
            let mut it = line.split_whitespace();
            let key = it.next();
            let val: u64 = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match key {
                Some("Rss:") => rss += val,
                Some("Pss:") => pss += val,
                _ => {}
            }
        }
    }
    (rss, pss, n)
}

/// MemAvailable of the machine in MiB.
pub fn mem_available_mib() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// CPU time of this process (user + system).
pub fn self_cpu() -> Duration {
    cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    cpu_clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

fn cpu_clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Raise the soft open-files limit to the hard one; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    r.rlim_cur
}

/// Pin the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> bool {
    // SAFETY: set is a zeroed cpu_set_t, filled by CPU_SET and passed with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        let mut w = vec![3.0, 1.0, 2.0];
        assert_eq!(p50_p99(&mut w), (Some(2.0), Some(3.0)));
    }

    #[test]
    fn json_line() {
        let mut o = Out::default();
        o.str("s", "a\"b\\\n")
            .num("x", 1.23456)
            .int("n", 3)
            .opt("none", None);
        o.num("inf", f64::INFINITY);
        assert_eq!(
            o.line(),
            r#"{"s":"a\"b\\\u000a","x":1.235,"n":3,"none":null,"inf":null}"#
        );
    }

    #[test]
    fn own_cpu_and_memory_visible() {
        let me = std::process::id();
        assert!(ServerCpu::Tree(me).seconds().is_some());
        let (rss, pss, n) = tree_memory_kib(me);
        assert!(rss > 0 && pss > 0 && n >= 1);
    }
}
