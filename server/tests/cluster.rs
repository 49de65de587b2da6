//! The reference deployment of "Running several nodes" (README), tested: HAProxy in TCP
//! mode with `send-proxy-v2`, run from the shipped `deploy/haproxy.cfg`, in front of two
//! wharf nodes on 127.0.0.11 and 127.0.0.12 serving one shared root. curl, lftp and
//! Python's ftplib connect through the balancer from several loopback source addresses,
//! plain and explicit FTPS, passive transfers; the nodes' W3C logs must name those
//! addresses. Then node A is stopped while a session holds it, and new sessions go to B.
//!
//! Every process is started here, on loopback ports picked free, and killed by pid when
//! the test ends (also on panic). A missing haproxy fails the test saying so.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{wait_exit, wait_for, Wharf, PATIENCE};

const NODE_A: &str = "127.0.0.11";
const NODE_B: &str = "127.0.0.12";
/// The balancer's address: what clients reach and what the nodes advertise.
const LB: &str = "127.0.0.1";
/// Passive ports per node.
const SLICE: u16 = 10;
/// Control connections from one client address over the whole cluster.
const PER_IP: usize = 3;

mod through_haproxy {
    #[test]
    fn mio() {
        super::through_haproxy("mio");
    }

    #[test]
    fn smol() {
        super::through_haproxy("smol");
    }
}

/// A process this test started (haproxy); killed by pid on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    /// The balancer's control address.
    lb: SocketAddr,
    a: Option<Wharf>,
    b: Wharf,
    _haproxy: Proc,
    redis: Option<Proc>,
    /// The nodes' control port (each on its own address).
    node_port: u16,
}

/// The file only the site `other` has.
const OTHER: &[u8] = b"served by the site other.example chose\n";

/// The shared site's download: big enough to take many segments.
fn big() -> Vec<u8> {
    (0..1_500_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is not installed (.ci/run installs it)");
}

/// `n` consecutive ports free on the balancer's and both nodes' addresses.
fn free_range(n: u16, avoid: &[u16]) -> u16 {
    // Tests run side by side in one process: each pick starts somewhere else.
    static PICKS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pick = PICKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let seed = (std::process::id() as u64) ^ clock ^ pick.wrapping_mul(0x9e37_79b9);
    for attempt in 0..500u64 {
        let base = 12_000 + ((seed.wrapping_mul(7919) + attempt * 131) % 18_000) as u16;
        let ports = base..base + n;
        if ports.clone().any(|p| avoid.contains(&p)) {
            continue;
        }
        let free = ports.clone().all(|p| {
            [LB, NODE_A, NODE_B]
                .iter()
                .all(|ip| std::net::TcpListener::bind((*ip, p)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no {n} free consecutive ports on loopback");
}

fn password_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| wharf_server::hash_password("s3cret").unwrap())
}

/// A node's configuration: its address, its slice of the passive range, the balancer's
/// address advertised, PROXY headers from the balancer, the shared root, bans after two
/// failed logins shared through the Redis at `redis_port`.
fn node_config(
    dir: &Path,
    (name, rt): (&str, &str),
    (ip, port): (&str, u16),
    pasv: u16,
    redis_port: u16,
) -> PathBuf {
    let node = dir.join(name);
    std::fs::create_dir_all(&node).unwrap();
    let hash = password_hash();
    // Two sites on the node's address: `files` without a host name, `other` for the
    // host name other.example (chosen by the TLS SNI name, or HOST).
    let text = format!(
        "[server]\nruntime = \"{rt}\"\nshards = 2\n\
         passive_ports = \"{pasv}-{last}\"\nexternal_ip = \"{LB}\"\n\n\
         [server.proxy_protocol]\nfrom = [\"{LB}\"]\n\n\
         [server.logon_restrictions]\nmax_failures = 2\nwindow = 60\nban = 60\n\n\
         [cluster]\nredis = \"redis://127.0.0.1:{redis_port}/\"\n\n\
         [limits]\nmax_connections_per_ip = {PER_IP}\n\n\
         [[sites]]\nname = \"files\"\nroot = \"../site\"\nbanner = \"wharf node {name}\"\n\
         bindings = [\"{ip}:{port}:\"]\n\n\
         [sites.tls]\ncertificate = \"../cert.pem\"\nprivate_key = \"../key.pem\"\n\n\
         [sites.logging]\ndirectory = \"logs\"\n\n\
         [[sites]]\nname = \"other\"\nroot = \"../other\"\nbanner = \"other on node {name}\"\n\
         bindings = [\"{ip}:{port}:other.example\"]\n\n\
         [sites.tls]\ncertificate = \"../other-cert.pem\"\nprivate_key = \"../other-key.pem\"\n\n\
         [sites.logging]\ndirectory = \"logs-other\"\n\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n",
        last = pasv + SLICE - 1,
    );
    let path = node.join("wharf.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn start_node(config: &Path) -> Wharf {
    let mut w = Wharf::start(
        config.parent().unwrap(),
        &["--config", config.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    );
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.serving()));
    if served.is_err() {
        let _ = w.child.kill();
        panic!(
            "the node of {} did not start: {:?}",
            config.display(),
            w.stderr.rest()
        );
    }
    w
}

/// The repository's `deploy/haproxy.cfg`, exactly as shipped.
fn shipped_haproxy_cfg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg")
}

fn start_haproxy(dir: &Path, lb: SocketAddr, node_port: u16, pasv: (u16, u16)) -> Proc {
    let range = |p: u16| format!("{p}-{}", p + SLICE - 1);
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(shipped_haproxy_cfg())
        .current_dir(dir)
        .env("WHARF_LB_ADDR", lb.ip().to_string())
        .env("WHARF_LB_PORT", lb.port().to_string())
        .env("WHARF_LB_SOURCE", LB)
        .env("WHARF_NODE_A", NODE_A)
        .env("WHARF_NODE_B", NODE_B)
        .env("WHARF_NODE_PORT", node_port.to_string())
        .env("WHARF_PASV_A", range(pasv.0))
        .env("WHARF_PASV_B", range(pasv.1))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("starting haproxy");
    Proc(child)
}

/// A Redis of this test's own, on loopback, keeping nothing on disk; up once it answers.
fn start_redis(dir: &Path, port: u16) -> Proc {
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let redis = Proc(child);
    wait_for("redis-server answering PING", || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    });
    redis
}

/// A session straight to a node, as the balancer would open it, for `client`: the
/// node's first line.
fn greeting_as(node: &str, port: u16, client: &str) -> (TcpStream, BufReader<TcpStream>, String) {
    let s = TcpStream::connect((node, port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let local = s.local_addr().unwrap();
    let header = wharf_core::proxy::encode_v2(client.parse().unwrap(), local, &[]);
    (&s).write_all(&header).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    let _ = r.read_line(&mut line);
    (s, r, line)
}

/// A failed login of `client` on `node` (the `530` comes after the failed-login delay).
fn fail_login(node: &str, port: u16, client: &str) {
    let (mut s, mut r, greeting) = greeting_as(node, port, client);
    assert!(
        greeting.starts_with("220 "),
        "{node} greeted {client} with {greeting:?}"
    );
    for (cmd, want) in [("USER alice", "331 "), ("PASS wrong", "530 ")] {
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(want), "{cmd} on {node}: {line:?}");
    }
}

/// A connection to `to` from the address `source`.
fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s
}

/// The greeting a new session through the balancer from `source` gets (bounded).
fn greeting_from(source: &str, lb: SocketAddr) -> String {
    let s = connect_from(source, lb);
    let mut line = String::new();
    let _ = BufReader::new(s).read_line(&mut line);
    line
}

/// The greeting a new session through the balancer gets (bounded).
fn greeting_via(lb: SocketAddr) -> Option<String> {
    let s = TcpStream::connect_timeout(&lb, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line)
}

fn start(rt: &str) -> Cluster {
    require("haproxy");
    require("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("up")).unwrap();
    std::fs::write(site.join("big.bin"), big()).unwrap();
    std::fs::write(dir.path().join("upload.bin"), big()).unwrap();
    std::fs::create_dir_all(dir.path().join("other")).unwrap();
    std::fs::write(dir.path().join("other/other.txt"), OTHER).unwrap();
    for (name, host) in [("", "ftp.example"), ("other-", "other.example")] {
        let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        let path = |f: &str| dir.path().join(format!("{name}{f}"));
        std::fs::write(path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    }

    let node_port = free_range(1, &[]);
    let front = free_range(1, &[node_port]);
    let pasv_a = free_range(SLICE, &[node_port, front]);
    let avoid: Vec<u16> = [node_port, front]
        .into_iter()
        .chain(pasv_a..pasv_a + SLICE)
        .collect();
    let pasv_b = free_range(SLICE, &avoid);
    let redis_port = free_range(1, &[&avoid[..], &[pasv_b, pasv_b + SLICE - 1]].concat());
    let redis = start_redis(dir.path(), redis_port);
    let a = node_config(
        dir.path(),
        ("a", rt),
        (NODE_A, node_port),
        pasv_a,
        redis_port,
    );
    let b = node_config(
        dir.path(),
        ("b", rt),
        (NODE_B, node_port),
        pasv_b,
        redis_port,
    );
    let a = start_node(&a);
    let b = start_node(&b);
    let lb: SocketAddr = format!("{LB}:{front}").parse().unwrap();
    let haproxy = start_haproxy(dir.path(), lb, node_port, (pasv_a, pasv_b));
    let mut cluster = Cluster {
        dir,
        lb,
        a: Some(a),
        b,
        _haproxy: haproxy,
        redis: Some(redis),
        node_port,
    };
    let deadline = Instant::now() + PATIENCE;
    loop {
        if greeting_via(lb).is_some_and(|g| g.starts_with("220 ")) {
            break;
        }
        let log = std::fs::read_to_string(cluster.dir.path().join("haproxy.log"));
        let exited = cluster._haproxy.0.try_wait().ok().flatten();
        assert!(exited.is_none(), "haproxy exited ({exited:?}): {log:?}");
        assert!(
            Instant::now() < deadline,
            "the balancer did not greet within {PATIENCE:?}; haproxy said: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster
}

/// Runs a client with a deadline; its output.
fn bounded(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let ereader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let child = Proc(child);
    let mut child = child;
    let status = wait_exit(&mut child.0);
    Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: ereader.join().unwrap(),
    }
}

#[track_caller]
fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(source: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "--interface", source]);
    cmd.args(args);
    bounded(cmd)
}

fn lftp(source: &str, lb: SocketAddr, script: &str) -> Output {
    let mut cmd = Command::new("lftp");
    cmd.arg("-c").arg(format!(
        "set net:socket-bind-ipv4 {source}; set net:max-retries 1; set net:timeout 20; \
         set ftp:ssl-force true; set ftp:ssl-protect-data true; \
         set ssl:verify-certificate no; \
         open -u alice,s3cret -p {} {}; {script}",
        lb.port(),
        lb.ip()
    ));
    bounded(cmd)
}

fn ftplib(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster/ftplib_client.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(args);
    bounded(cmd)
}

/// Every W3C record both nodes logged so far, as (c-ip, cs-method, s-ip) triples.
fn logged(dir: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let dirs = ["a", "b"]
        .into_iter()
        .flat_map(|n| ["logs", "logs-other"].map(|l| dir.join(n).join(l)));
    for logs in dirs {
        let Ok(files) = std::fs::read_dir(logs) else {
            continue;
        };
        for f in files.flatten() {
            let text = std::fs::read_to_string(f.path()).unwrap_or_default();
            let mut fields: Vec<String> = Vec::new();
            for line in text.lines() {
                if let Some(f) = line.strip_prefix("#Fields: ") {
                    fields = f.split(' ').map(str::to_owned).collect();
                    continue;
                }
                if line.starts_with('#') {
                    continue;
                }
                let col = |name: &str| {
                    let i = fields.iter().position(|f| f == name)?;
                    line.split(' ').nth(i).map(str::to_owned)
                };
                if let (Some(ip), Some(m), Some(s)) = (col("c-ip"), col("cs-method"), col("s-ip")) {
                    out.push((ip, m, s));
                }
            }
        }
    }
    out
}

fn through_haproxy(rt: &str) {
    let mut c = start(rt);
    let dir = c.dir.path().to_path_buf();
    let lb = c.lb;
    let want = big();
    let url = |path: &str| format!("ftp://{lb}/{path}");

    // curl, plain, EPSV (the passive slice of the node that holds the session).
    let got = dir.join("curl.bin");
    let out = curl(
        "127.0.0.21",
        &[
            "-u",
            "alice:s3cret",
            "-o",
            got.to_str().unwrap(),
            &url("big.bin"),
        ],
    );
    ok("curl download", out);
    assert!(
        std::fs::read(&got).unwrap() == want,
        "curl's download differs"
    );
    let up = dir.join("upload.bin");
    let out = curl(
        "127.0.0.21",
        &[
            "-u",
            "alice:s3cret",
            "-T",
            up.to_str().unwrap(),
            &url("up/curl.bin"),
        ],
    );
    ok("curl upload", out);

    // curl, explicit FTPS, PROT P data through the balancer.
    let got = dir.join("curl-tls.bin");
    let tls = ["--ssl-reqd", "-k", "-u", "alice:s3cret"];
    let out = curl(
        "127.0.0.22",
        &[&tls[..], &["-o", got.to_str().unwrap(), &url("big.bin")]].concat(),
    );
    ok("curl FTPS download", out);
    assert!(
        std::fs::read(&got).unwrap() == want,
        "curl's FTPS download differs"
    );
    let out = curl(
        "127.0.0.22",
        &[
            &tls[..],
            &["-T", up.to_str().unwrap(), &url("up/curl-tls.bin")],
        ]
        .concat(),
    );
    ok("curl FTPS upload", out);

    // lftp, explicit FTPS, PASV (the 227 carries the balancer's address).
    let got = dir.join("lftp.bin");
    let script = format!(
        "get big.bin -o {}; put {} -o up/lftp.bin",
        got.display(),
        up.display()
    );
    ok("lftp", lftp("127.0.0.23", lb, &script));
    assert!(
        std::fs::read(&got).unwrap() == want,
        "lftp's download differs"
    );

    // ftplib, plain and FTPS, PASV.
    let (host, port) = (lb.ip().to_string(), lb.port().to_string());
    for (tls, name) in [(None, "ftplib"), (Some("tls"), "ftplib-tls")] {
        let got = dir.join(format!("{name}.bin"));
        let mut args = vec!["get", "127.0.0.24", &host, &port, "big.bin"];
        let got_s = got.display().to_string();
        args.push(&got_s);
        args.extend(tls);
        ok(name, ftplib(&args));
        assert!(
            std::fs::read(&got).unwrap() == want,
            "{name}'s download differs"
        );
        let up_s = up.display().to_string();
        let target = format!("up/{name}.bin");
        let mut args = vec!["put", "127.0.0.24", &host, &port, &up_s, &target];
        args.extend(tls);
        ok(name, ftplib(&args));
    }
    // The SNI name picks the site, through the balancer: other.example's file.
    let host = format!("other.example:{}", lb.port());
    let connect_to = format!("{host}:{}:{}", lb.ip(), lb.port());
    let out = curl(
        "127.0.0.26",
        &[
            &tls[..],
            &[
                "--connect-to",
                &connect_to,
                &format!("ftp://{host}/other.txt"),
            ],
        ]
        .concat(),
    );
    assert!(
        out.status.success(),
        "curl FTPS with SNI other.example: {out:?}"
    );
    assert!(
        out.stdout == OTHER,
        "SNI other.example got {:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    for name in ["curl", "curl-tls", "lftp", "ftplib", "ftplib-tls"] {
        let path = dir.join("site/up").join(format!("{name}.bin"));
        let stored = std::fs::read(&path).unwrap_or_default();
        assert!(
            stored == want,
            "{name}'s upload is not whole at {}",
            path.display()
        );
    }

    // The logs name the clients, not the balancer, and both nodes served transfers.
    let clients = [
        "127.0.0.21",
        "127.0.0.22",
        "127.0.0.23",
        "127.0.0.24",
        "127.0.0.26",
    ];
    let transfer = |m: &str| m == "RETR" || m == "STOR";
    let mut records = Vec::new();
    wait_for("every client's transfers in the W3C logs", || {
        records = logged(&dir);
        clients
            .iter()
            .all(|ip| records.iter().any(|(c, m, _)| c == ip && transfer(m)))
    });
    let from_lb: Vec<_> = records
        .iter()
        .filter(|(c, m, _)| c == LB && transfer(m))
        .collect();
    assert!(
        from_lb.is_empty(),
        "transfers logged with the balancer's address: {from_lb:?}"
    );
    for node in [NODE_A, NODE_B] {
        assert!(
            records.iter().any(|(_, m, s)| s == node && transfer(m)),
            "node {node} served no transfer: {records:?}"
        );
    }

    strangers_are_closed(&c);
    shared_bans(&mut c);
    stop_a_mid_session(&mut c);
}

/// Straight to a node from an address that is not the balancer, or from the balancer's
/// address without a header: closed without a word.
fn strangers_are_closed(c: &Cluster) {
    let node: SocketAddr = format!("{NODE_A}:{}", c.node_port).parse().unwrap();
    let said = |mut s: TcpStream, send: &[u8]| {
        let _ = s.write_all(send);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    };
    assert_eq!(
        said(connect_from("127.0.0.50", node), b""),
        "",
        "a stranger"
    );
    let from_lb = connect_from(LB, node);
    assert_eq!(said(from_lb, b"USER alice\r\n"), "", "no header");
    let from_lb = connect_from(LB, node);
    assert_eq!(
        said(from_lb, b"PROXY TCP4 1.2.3.4\r\n"),
        "",
        "a malformed header"
    );
}

/// Bans are the cluster's: two failed logins through node A ban the client on node B
/// too; failures spread over the nodes through the balancer add up; and a cluster
/// whose Redis is gone goes on serving with each node's own bans, saying so.
fn shared_bans(c: &mut Cluster) {
    let port = c.node_port;
    let banned = |line: &str| line.starts_with("421 Too many failed logins");
    fail_login(NODE_A, port, "127.0.0.30:4000");
    fail_login(NODE_A, port, "127.0.0.30:4001");
    assert!(banned(&greeting_as(NODE_A, port, "127.0.0.30:4002").2));
    let start = Instant::now();
    wait_for("node A's ban of 127.0.0.30 on node B", || {
        banned(&greeting_as(NODE_B, port, "127.0.0.30:4003").2)
    });
    eprintln!("the ban reached node B after {:?}", start.elapsed());
    assert!(greeting_as(NODE_B, port, "127.0.0.32:4000")
        .2
        .starts_with("220 "));

    // One failure on each node: neither bans alone, the cluster does.
    fail_login(NODE_A, port, "127.0.0.31:4000");
    fail_login(NODE_B, port, "127.0.0.31:4001");
    wait_for("the cluster's ban of 127.0.0.31 on both nodes", || {
        [NODE_A, NODE_B]
            .iter()
            .all(|n| banned(&greeting_as(n, port, "127.0.0.31:4002").2))
    });
    // Through the balancer, from that address, whichever node answers.
    for _ in 0..4 {
        let g = greeting_from("127.0.0.31", c.lb);
        assert!(banned(&g), "127.0.0.31 through the balancer got {g:?}");
    }

    // Connections per address count over the cluster: a client holding PER_IP on node A
    // is refused on node B too, and admitted there again once one of them ends.
    let client = "127.0.0.35";
    let mut held: Vec<_> = (0..PER_IP)
        .map(|i| greeting_as(NODE_A, port, &format!("{client}:{}", 5000 + i)))
        .collect();
    assert!(held.iter().all(|(_, _, g)| g.starts_with("220 ")));
    let full = |g: &str| g.starts_with("421 Too many connections");
    wait_for(
        "node A's connections of 127.0.0.35 counting on node B",
        || full(&greeting_as(NODE_B, port, &format!("{client}:6000")).2),
    );
    held.pop();
    wait_for("node B admitting 127.0.0.35 again", || {
        greeting_as(NODE_B, port, &format!("{client}:6001"))
            .2
            .starts_with("220 ")
    });
    drop(held);

    // The store goes away: each node says so and serves on, with its own bans.
    drop(c.redis.take());
    let a = c.a.as_mut().unwrap();
    a.stderr
        .expect("saying the cluster store is unreachable", |l| {
            l.contains("cluster store unreachable")
        });
    fail_login(NODE_A, port, "127.0.0.33:4000");
    fail_login(NODE_A, port, "127.0.0.33:4001");
    assert!(banned(&greeting_as(NODE_A, port, "127.0.0.33:4002").2));
    assert!(greeting_as(NODE_B, port, "127.0.0.33:4003")
        .2
        .starts_with("220 "));
    assert!(greeting_from("127.0.0.34", c.lb).starts_with("220 "));
}

/// Node A stops while a logged-in session holds it: the client hears 421 and the
/// connection ends; new sessions go to B.
fn stop_a_mid_session(c: &mut Cluster) {
    let lb = c.lb;
    let mut held = None;
    for _ in 0..8 {
        let s = connect_from("127.0.0.27", lb);
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.contains("node a") {
            held = Some((s, r));
            break;
        }
    }
    let (mut s, mut r) = held.expect("no session landed on node A in 8 tries");
    let mut say = |cmd: &str, r: &mut BufReader<TcpStream>| {
        s.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    };
    assert!(say("USER alice", &mut r).starts_with("331 "));
    assert!(say("PASS s3cret", &mut r).starts_with("230 "));

    let mut a = c.a.take().unwrap();
    let status = a.terminate();
    assert!(status.success(), "node A exited with {status}");
    let mut rest = String::new();
    r.read_to_string(&mut rest).unwrap();
    assert!(
        rest.starts_with("421 "),
        "the session on A did not end with 421: {rest:?}"
    );
    for i in 0..4 {
        let g = greeting_from(&format!("127.0.0.{}", 41 + i), lb);
        assert!(
            g.contains("node b"),
            "session {i} after A stopped got {g:?}"
        );
    }
    let out = curl(
        "127.0.0.25",
        &["-u", "alice:s3cret", &format!("ftp://{lb}/big.bin")],
    );
    assert!(out.status.success(), "curl after A stopped: {out:?}");
    assert!(out.stdout == big(), "the download after A stopped differs");
    // Node B served on throughout.
    assert!(c.b.child.try_wait().unwrap().is_none(), "node B exited");
}
