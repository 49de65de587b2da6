//! A network lab made of Linux network namespaces: a client host, a router host and a
//! server host (and, on the server's network, a second client), joined by veth pairs, with
//! addresses of their own and nftables rulesets per host. Nothing leaves the namespaces.
//!
//! Every namespace name starts with a random prefix of this lab, so labs of tests running
//! in parallel never meet. [`Lab`]'s drop kills the processes started in it (by pid) and
//! deletes its namespaces, also when the test panics. Making namespaces needs root (CI
//! runs as root); without it the lab fails with one line saying so.
//!
//! ```text
//!  client ──eth0───cl─┐ router ┌─srvnet (bridge)─sv───eth0── server
//!                     └────────┘        └────────in───eth0── inside (a client next to the server)
//! ```

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::WHARF;

/// How long a client command may run before it is killed and the test fails.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// The addressing of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// The server behind a NAT router: the client is outside on 198.51.100.0/24 (the
    /// router is 198.51.100.1, the server's public address), the server inside on
    /// 10.0.0.0/24 (router .1, server .2, inside client .3). The outside client has no
    /// route to the inside network, as on the Internet.
    ServerBehindNat,
    /// The client behind a NAT router: the client on 192.168.1.0/24 (router .1, client
    /// .10), masqueraded to the router's public 203.0.113.1; the server is 203.0.113.2 and
    /// has no route to the client's network.
    ClientBehindNat,
    /// Plain routing, IPv4 and IPv6: client 198.51.100.10 / 2001:db8:1::10, server
    /// 203.0.113.2 / 2001:db8:2::2, router .1 / ::1 on both.
    Routed,
}

impl Topology {
    /// `(client link prefix, server link prefix)`, IPv4, /24.
    fn v4(self) -> (&'static str, &'static str) {
        match self {
            Topology::ServerBehindNat => ("198.51.100", "10.0.0"),
            Topology::ClientBehindNat => ("192.168.1", "203.0.113"),
            Topology::Routed => ("198.51.100", "203.0.113"),
        }
    }

    pub fn client_ip(self) -> IpAddr {
        format!("{}.10", self.v4().0).parse().unwrap()
    }

    /// The server's own address.
    pub fn server_ip(self) -> IpAddr {
        format!("{}.2", self.v4().1).parse().unwrap()
    }

    /// The router's address on the client's link (the server's public address behind
    /// NAT).
    pub fn router_client_side(self) -> IpAddr {
        format!("{}.1", self.v4().0).parse().unwrap()
    }

    pub fn inside_ip(self) -> IpAddr {
        format!("{}.3", self.v4().1).parse().unwrap()
    }

    pub const CLIENT_V6: &'static str = "2001:db8:1::10";
    pub const SERVER_V6: &'static str = "2001:db8:2::2";
}

/// Serialises `ip netns add|del`: concurrent first uses race on /run/netns's mount.
static NETNS: Mutex<()> = Mutex::new(());

/// A network lab; see the module docs.
pub struct Lab {
    pub topology: Topology,
    prefix: String,
    namespaces: Vec<String>,
    /// Processes started in the lab (servers), killed by pid on drop.
    processes: Vec<Child>,
    /// Scratch space: configurations, site roots, client files.
    pub dir: tempfile::TempDir,
    /// The output files of every wharf started here.
    logs: Vec<PathBuf>,
}

/// The hosts of a lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Client,
    Router,
    Server,
    /// A client on the server's own network.
    Inside,
}

impl Host {
    fn suffix(self) -> &'static str {
        match self {
            Host::Client => "c",
            Host::Router => "r",
            Host::Server => "s",
            Host::Inside => "i",
        }
    }
}

/// Runs `cmd`, failing the test with its output unless it succeeds.
fn must(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: cannot run it ({e}); .ci/run installs iproute2 and nftables")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn random_prefix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(COUNT.fetch_add(1, Ordering::Relaxed));
    format!("wl{:08x}", h.finish() as u32)
}

impl Lab {
    /// Builds the namespaces, links, addresses and routes of `topology`, with the
    /// router forwarding (and filtering nothing yet).
    pub fn new(topology: Topology) -> Lab {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            panic!("the network lab needs root to make network namespaces (CI runs as root): run `cargo test` as root");
        }
        let mut lab = Lab {
            topology,
            prefix: random_prefix(),
            namespaces: Vec::new(),
            processes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            logs: Vec::new(),
        };
        let hosts: &[Host] = match topology {
            Topology::ServerBehindNat => &[Host::Client, Host::Router, Host::Server, Host::Inside],
            _ => &[Host::Client, Host::Router, Host::Server],
        };
        {
            let _one_at_a_time = NETNS.lock().unwrap_or_else(|e| e.into_inner());
            for &h in hosts {
                let name = lab.ns(h);
                let out = Command::new("ip").args(["netns", "add", &name]).output();
                match out {
                    Ok(o) if o.status.success() => lab.namespaces.push(name),
                    Ok(o) => panic!(
                        "the network lab cannot make a network namespace (`ip netns add`): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => {
                        panic!("the network lab needs `ip` (iproute2; .ci/run installs it): {e}")
                    }
                }
            }
        }
        let (cnet, snet) = topology.v4();
        let r = lab.ns(Host::Router);
        let ipr = |args: &[&str]| must(Command::new("ip").arg("-n").arg(&r).args(args));
        ipr(&[
            "link",
            "add",
            "name",
            "cl",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.ns(Host::Client),
        ]);
        ipr(&["link", "add", "name", "srvnet", "type", "bridge"]);
        ipr(&[
            "link",
            "add",
            "name",
            "sv",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.ns(Host::Server),
        ]);
        ipr(&["link", "set", "sv", "master", "srvnet"]);
        if hosts.contains(&Host::Inside) {
            ipr(&[
                "link",
                "add",
                "name",
                "in",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &lab.ns(Host::Inside),
            ]);
            ipr(&["link", "set", "in", "master", "srvnet"]);
            ipr(&["link", "set", "in", "up"]);
        }
        ipr(&["addr", "add", &format!("{cnet}.1/24"), "dev", "cl"]);
        ipr(&["addr", "add", &format!("{snet}.1/24"), "dev", "srvnet"]);
        ipr(&["addr", "add", "2001:db8:1::1/64", "dev", "cl", "nodad"]);
        ipr(&["addr", "add", "2001:db8:2::1/64", "dev", "srvnet", "nodad"]);
        for dev in ["lo", "cl", "sv", "srvnet"] {
            ipr(&["link", "set", dev, "up"]);
        }
        lab.sh(
            Host::Router,
            "echo 1 > /proc/sys/net/ipv4/ip_forward && echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        );
        let host_addr = |h: Host, v4: String, v6: &str, gw4: Option<String>, gw6: bool| {
            let n = lab.ns(h);
            let ip = |args: &[&str]| must(Command::new("ip").arg("-n").arg(&n).args(args));
            ip(&["addr", "add", &v4, "dev", "eth0"]);
            ip(&["addr", "add", v6, "dev", "eth0", "nodad"]);
            ip(&["link", "set", "lo", "up"]);
            ip(&["link", "set", "eth0", "up"]);
            if let Some(gw) = gw4 {
                ip(&["route", "add", "default", "via", &gw]);
            }
            if gw6 {
                let gw = if h == Host::Client {
                    "2001:db8:1::1"
                } else {
                    "2001:db8:2::1"
                };
                ip(&["-6", "route", "add", "default", "via", gw]);
            }
        };
        let (client_gw, server_gw) = match topology {
            // The outside client has no route into the server's private network.
            Topology::ServerBehindNat => (None, Some(format!("{snet}.1"))),
            // The server has no route into the client's private network.
            Topology::ClientBehindNat => (Some(format!("{cnet}.1")), None),
            Topology::Routed => (Some(format!("{cnet}.1")), Some(format!("{snet}.1"))),
        };
        host_addr(
            Host::Client,
            format!("{cnet}.10/24"),
            "2001:db8:1::10/64",
            client_gw,
            true,
        );
        host_addr(
            Host::Server,
            format!("{snet}.2/24"),
            "2001:db8:2::2/64",
            server_gw.clone(),
            true,
        );
        if hosts.contains(&Host::Inside) {
            host_addr(
                Host::Inside,
                format!("{snet}.3/24"),
                "2001:db8:2::3/64",
                server_gw,
                true,
            );
        }
        lab
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: Host) -> String {
        format!("{}-{}", self.prefix, host.suffix())
    }

    /// `sh -c script` in `host`; must succeed.
    pub fn sh(&self, host: Host, script: &str) -> Output {
        must(Command::new("ip").args(["netns", "exec", &self.ns(host), "sh", "-c", script]))
    }

    /// Loads an nftables ruleset (`nft -f`) in `host`; must succeed.
    pub fn nft(&self, host: Host, ruleset: &str) {
        let path = self
            .dir
            .path()
            .join(format!("rules-{}.nft", random_prefix()));
        std::fs::write(&path, ruleset).unwrap();
        must(
            Command::new("ip")
                .args(["netns", "exec", &self.ns(host), "nft", "-f"])
                .arg(&path),
        );
    }

    /// `nft ARGS` in `host`: its standard output.
    pub fn nft_cmd(&self, host: Host, args: &[&str]) -> String {
        let out = must(
            Command::new("ip")
                .args(["netns", "exec", &self.ns(host), "nft"])
                .args(args),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `program ARGS` in `host` with `stdin`, killed (by pid) if it outlives
    /// [`CLIENT_DEADLINE`] (then the test fails).
    pub fn run(&self, host: Host, program: &str, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), program])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in the lab: {e}"));
        let mut input = child.stdin.take().unwrap();
        let text = stdin.to_string();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(text.as_bytes());
        });
        let read_all = |mut p: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = p.read_to_end(&mut v);
                v
            })
        };
        let out = read_all(Box::new(child.stdout.take().unwrap()));
        let err = read_all(Box::new(child.stderr.take().unwrap()));
        let guard = Reap(child);
        let deadline = Instant::now() + CLIENT_DEADLINE;
        let mut guard = guard;
        let status = loop {
            if let Some(status) = guard.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{program} {args:?} in {:?} did not finish within {CLIENT_DEADLINE:?}",
                host
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = writer.join();
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    /// Starts `wharf -v ARGS` in the server's namespace, from the lab's directory (its
    /// output goes to `wharf-N.log` there: [`Lab::logs`]), and waits until it says it
    /// serves and answers on `control` (both polled, the latter from the server's
    /// namespace; bounded).
    pub fn start_wharf(&mut self, args: &[&str], control: SocketAddr) -> Wharf {
        let log = self.path(&format!("wharf-{}.log", self.logs.len()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(Host::Server), WHARF, "-v"])
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting wharf in the lab");
        // `ip netns exec` execs wharf in place: the pid is wharf's.
        let pid = child.id();
        self.processes.push(child);
        self.logs.push(log.clone());
        let w = Wharf { pid, log };
        let deadline = Instant::now() + crate::common::PATIENCE;
        loop {
            if self.exited(pid) {
                panic!("wharf {args:?} exited before serving:\n{}", w.output());
            }
            // Serving (said once the privileges are dropped) and answering.
            let serving = w.output().contains("wharf: serving");
            if serving && in_netns(&self.ns(Host::Server), move || greeting(control)).is_some() {
                return w;
            }
            assert!(
                Instant::now() < deadline,
                "wharf did not answer on {control}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn exited(&mut self, pid: u32) -> bool {
        self.processes
            .iter_mut()
            .find(|c| c.id() == pid)
            .is_some_and(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Stops a wharf this lab started: SIGTERM, then waits (bounded) for it to exit 0.
    pub fn stop_wharf(&mut self, w: Wharf) {
        let i = self
            .processes
            .iter()
            .position(|c| c.id() == w.pid)
            .expect("a wharf of this lab");
        let mut child = self.processes.swap_remove(i);
        // SAFETY: signalling our own child, not yet reaped.
        unsafe { libc::kill(w.pid as i32, libc::SIGTERM) };
        let status = crate::common::wait_exit(&mut child);
        assert!(status.success(), "wharf exited with {status}");
    }

    /// What every wharf started here has said, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for log in &self.logs {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            out.push_str(&format!("--- {}:\n{text}", log.display()));
        }
        out
    }

    /// A file in the lab's directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A child that is killed (by pid) if dropped while running.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for mut p in self.processes.drain(..) {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _one_at_a_time = NETNS.lock().unwrap_or_else(|e| e.into_inner());
        for ns in self.namespaces.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

/// A wharf running in the lab (owned by the [`Lab`], which kills it on drop).
pub struct Wharf {
    pub pid: u32,
    log: PathBuf,
}

impl Wharf {
    /// What it has written so far (stdout and stderr).
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until its output has a line that satisfies `pred`.
    pub fn expect_line(&self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + crate::common::PATIENCE;
        while !self.output().lines().any(&pred) {
            assert!(
                Instant::now() < deadline,
                "wharf did not say {what}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The first line the server at `addr` sends, if it answers within a second.
fn greeting(addr: SocketAddr) -> Option<String> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    line.starts_with("220").then_some(line)
}

/// Runs `f` on a thread of its own that has joined the network namespace `ns` (a
/// namespace is a property of a thread, so the test's other threads stay where they are).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let file = std::fs::File::open(Path::new("/run/netns").join(ns))
        .unwrap_or_else(|e| panic!("opening the namespace {ns}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid namespace descriptor; it affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// A self-signed certificate and key (PEM) for the server, in `dir`.
pub fn certificate(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let c = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// The packets an nftables rule with `counter` and this comment counted, from
/// `nft list` output.
pub fn counted(listing: &str, comment: &str) -> u64 {
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}\"")))
        .unwrap_or_else(|| panic!("no rule commented {comment:?} in {listing}"));
    let after = line.split("packets ").nth(1).expect("a counter");
    after.split_whitespace().next().unwrap().parse().unwrap()
}
