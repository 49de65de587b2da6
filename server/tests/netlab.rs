//! FTP through real firewalls and NAT: wharf in a server namespace, real clients (curl,
//! lftp, Python's ftplib) in client namespaces, Linux's NAT, conntrack FTP helper and
//! nftables between them (see `lab/mod.rs` for the lab). Where a case needs firewall
//! rules on the server or its router, they are the ones `wharf firewall` prints.
//!
//! Every case runs on both runtimes. It needs root (CI runs as root) and the Debian
//! packages iproute2 and nftables (.ci/run installs them); without them each case fails
//! with one line saying what is missing.

mod common;
mod lab;

use std::net::SocketAddr;
use std::process::{Command, Output};

use lab::{counted, Host, Lab, Topology};

/// One `#[test]` per runtime for each case (`name::mio`, `name::smol`), as
/// `per_runtime!` does for the in-process suites; here the runtime is the binary's
/// `server.runtime`. A case is `fn name(rt: &str)`.
macro_rules! per_runtime {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn mio() {
                super::$name("mio")
            }
            #[test]
            fn smol() {
                super::$name("smol")
            }
        }
    )*};
}

per_runtime!(
    server_behind_nat_with_external_ip,
    server_behind_nat_without_external_ip,
    only_control_and_passive_ports_are_open,
    client_behind_nat_in_active_mode,
    active_mode_from_port_20_through_an_egress_firewall,
    ipv6_epsv_and_eprt,
);

const HELLO: &[u8] = b"hello from the lab\n";

/// The bytes of `big.bin`: large enough for many segments through the NAT.
fn big() -> Vec<u8> {
    (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// The site (`site/`: hello.txt, big.bin, an `up/` anyone may write) and a certificate.
fn prepare(lab: &Lab) {
    use std::os::unix::fs::PermissionsExt;
    let site = lab.path("site");
    std::fs::create_dir_all(site.join("up")).unwrap();
    std::fs::write(site.join("hello.txt"), HELLO).unwrap();
    std::fs::write(site.join("big.bin"), big()).unwrap();
    std::fs::write(lab.path("upload.bin"), big()).unwrap();
    lab::certificate(lab.dir.path(), &["198.51.100.1", "10.0.0.2", "203.0.113.2"]);
    // server.user cases: the account must reach the site and write into up/.
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(site.join("up"), std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// A configuration: `server` keys, then a `[site]` over `site/` (anonymous reads, user
/// alice / s3cret writes) with `site` keys, and `tail` tables.
fn write_config(lab: &Lab, name: &str, rt: &str, server: &str, site: &str, tail: &str) -> String {
    let hash = password_hash();
    let text = format!(
        "[server]\nruntime = \"{rt}\"\nshards = 2\n{server}\n\n\
         [site]\nroot = \"site\"\nanonymous = true\n{site}\n\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\n{tail}\n"
    );
    std::fs::write(lab.path(name), text).unwrap();
    lab.path(name).display().to_string()
}

fn password_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| wharf_server::hash_password("s3cret").unwrap())
}

const TLS: &str = "[site.tls]\ncertificate = \"cert.pem\"\nprivate_key = \"key.pem\"\n";

/// `wharf --config CONFIG firewall ARGS`: the rules it prints.
fn printed_rules(config: &str, args: &[&str]) -> String {
    let out = Command::new(common::WHARF)
        .args(["--config", config, "firewall"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "wharf firewall: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The server host's own table: only loopback and ICMP (neighbour discovery) pass
/// unless rules are added; `output_policy` is "accept" or "drop" (then connections the
/// host did not start may answer, as on any host that filters what leaves it).
fn base_host_rules(output_policy: &str) -> String {
    format!(
        "table inet filter {{\n\
         \tchain input {{\n\t\ttype filter hook input priority filter; policy drop;\n\
         \t\tiif \"lo\" accept\n\t\tmeta l4proto {{ icmp, ipv6-icmp }} accept\n\t}}\n\
         \tchain output {{\n\t\ttype filter hook output priority filter; policy {output_policy};\n\
         \t\toif \"lo\" accept\n\t\tmeta l4proto {{ icmp, ipv6-icmp }} accept\n\
         \t\tct state established,related accept\n\t}}\n}}\n"
    )
}

/// Loads the lab's base table and the rules `wharf firewall` prints for `config` on the
/// server, then a last rule that counts the TCP packets the input chain is about to
/// drop (`dropped`).
fn server_firewall(lab: &Lab, config: &str, output_policy: &str) -> String {
    let rules = printed_rules(config, &[]);
    lab.nft(Host::Server, "flush ruleset\n");
    lab.nft(Host::Server, &base_host_rules(output_policy));
    lab.nft(Host::Server, &rules);
    lab.nft(
        Host::Server,
        "add rule inet filter input meta l4proto tcp counter comment \"dropped\"\n",
    );
    rules
}

fn dropped(lab: &Lab) -> u64 {
    counted(
        &lab.nft_cmd(Host::Server, &["list", "chain", "inet", "filter", "input"]),
        "dropped",
    )
}

/// A router that forwards nothing by itself: what its forward chain accepts is added
/// by the case (frames between the ports of its bridge pass, should the kernel's
/// bridge netfilter show them to it).
const ROUTER_BASE: &str = "table inet filter {\n\
    \tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\
    \t\tiifname \"srvnet\" oifname \"srvnet\" accept\n\t}\n}\n";

/// The kernel's FTP connection-tracking helper on the router, for control connections
/// to port 21: it reads PORT/EPRT and 227/229, opens the data connection they announce,
/// and under NAT rewrites the addresses in them.
const FTP_HELPER: &str = "table inet helper {\n\
    \tct helper ftp-standard {\n\t\ttype \"ftp\" protocol tcp\n\t\tl3proto inet\n\t}\n\
    \tchain prerouting {\n\t\ttype filter hook prerouting priority filter; policy accept;\n\
    \t\ttcp dport 21 ct helper set \"ftp-standard\"\n\t}\n}\n";

/// A client's output, and what the servers said meanwhile, for failure messages.
fn text(lab: &Lab, o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}\nthe servers said:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        lab.logs()
    )
}

/// curl in `host`, bounded.
fn curl(lab: &Lab, host: Host, args: &[&str]) -> Output {
    let mut all = vec!["-sS", "--max-time", "20", "--connect-timeout", "5"];
    all.extend_from_slice(args);
    lab.run(host, "curl", &all, "")
}

/// curl must succeed and print exactly `want`.
fn curl_gets(lab: &Lab, host: Host, args: &[&str], want: &[u8]) {
    let out = curl(lab, host, args);
    assert!(
        out.status.success() && out.stdout == want,
        "curl {args:?} should have downloaded {} bytes: {}",
        want.len(),
        text(lab, &out)
    );
}

/// curl must fail with exit status `code`.
fn curl_fails(lab: &Lab, host: Host, args: &[&str], code: i32) -> Output {
    let out = curl(lab, host, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "curl {args:?} should have failed with {code}: {}",
        text(lab, &out)
    );
    out
}

/// lftp in `host`: `script` (settings and commands) against `url`, bounded.
fn lftp(lab: &Lab, host: Host, url: &str, script: &str) -> Output {
    let script = format!(
        "set net:timeout 5; set net:max-retries 1; set net:reconnect-interval-base 1; \
         set cmd:fail-exit yes; {script}; bye"
    );
    lab.run(host, "lftp", &["-e", &script, url], "")
}

/// Python's ftplib: the script in `lab/ftplib_client.py`, with `args`. It prints one
/// line per step.
fn ftplib(lab: &Lab, host: Host, args: &[&str]) -> Output {
    let script = lab.path("ftplib_client.py");
    if !script.exists() {
        std::fs::write(&script, FTPLIB_CLIENT).unwrap();
    }
    let mut all = vec![script.to_str().unwrap()];
    all.extend_from_slice(args);
    lab.run(host, "python3", &all, "")
}

const FTPLIB_CLIENT: &str = include_str!("lab/ftplib_client.py");

fn ftplib_ok(lab: &Lab, host: Host, args: &[&str]) -> String {
    let out = ftplib(lab, host, args);
    assert!(out.status.success(), "ftplib {args:?}: {}", text(lab, &out));
    String::from_utf8(out.stdout).unwrap()
}

/// The server behind DNAT with `external_ip`: the router forwards the control ports
/// and the passive range (the rules `wharf firewall --nat` prints), the server's
/// firewall admits only what `wharf firewall` prints, and every kind of transfer
/// works from outside — PASV and EPSV, plain, explicit and implicit FTPS — with
/// clients that take the 227 reply's address at its word. In the same run a client
/// on the server's own network is told the internal address (`passive_addresses`).
fn server_behind_nat_with_external_ip(rt: &str) {
    let mut lab = Lab::new(Topology::ServerBehindNat);
    prepare(&lab);
    let config = write_config(
        &lab,
        "w.toml",
        rt,
        "listen = [\"10.0.0.2:21\"]\nlisten_implicit = [\"10.0.0.2:990\"]\n\
         passive_ports = \"50000-50099\"\nexternal_ip = \"198.51.100.1\"",
        "passive_addresses = [{ networks = [\"10.0.0.0/8\"] }]",
        TLS,
    );
    let router = printed_rules(&config, &["--nat", "198.51.100.1"]);
    assert!(!router.contains("WARNING"), "{router}");
    lab.nft(Host::Router, ROUTER_BASE);
    lab.nft(Host::Router, &router);
    server_firewall(&lab, &config, "accept");
    let control: SocketAddr = "10.0.0.2:21".parse().unwrap();
    let _wharf = lab.start_wharf(&["--config", &config], control);

    let out = "ftp://198.51.100.1/big.bin";
    let trust = ["--disable-epsv", "--no-ftp-skip-pasv-ip"];
    curl_gets(&lab, Host::Client, &[out], &big());
    curl_gets(&lab, Host::Client, &[&trust[..], &[out]].concat(), &big());
    // Explicit FTPS, PASV: an upload and its download.
    let up = lab.path("upload.bin");
    let tls = ["--ssl-reqd", "-k", "-u", "alice:s3cret"];
    let put = curl(
        &lab,
        Host::Client,
        &[
            &tls[..],
            &trust[..],
            &["-T", up.to_str().unwrap(), "ftp://198.51.100.1/up/in.bin"],
        ]
        .concat(),
    );
    assert!(put.status.success(), "{}", text(&lab, &put));
    assert_eq!(std::fs::read(lab.path("site/up/in.bin")).unwrap(), big());
    curl_gets(
        &lab,
        Host::Client,
        &[&tls[..], &trust[..], &["ftp://198.51.100.1/up/in.bin"]].concat(),
        &big(),
    );
    curl_gets(
        &lab,
        Host::Client,
        &[&tls[..], &["ftp://198.51.100.1/big.bin"]].concat(),
        &big(),
    );
    // Implicit FTPS, PASV and EPSV.
    curl_gets(
        &lab,
        Host::Client,
        &[&trust[..], &["-k", "ftps://198.51.100.1:990/big.bin"]].concat(),
        &big(),
    );
    curl_gets(
        &lab,
        Host::Client,
        &["-k", "ftps://198.51.100.1:990/hello.txt"],
        HELLO,
    );
    // lftp, FTPS with PASV and no address fixing of its own.
    let l = lftp(
        &lab,
        Host::Client,
        "ftp://alice:s3cret@198.51.100.1",
        "set ftp:ssl-force true; set ssl:verify-certificate no; set ftp:prefer-epsv no; \
         set ftp:fix-pasv-address no; cat hello.txt",
    );
    assert!(
        l.status.success() && l.stdout == HELLO,
        "{}",
        text(&lab, &l)
    );
    // The outside client is told the public address, the inside one its own network's.
    let outside = ftplib_ok(
        &lab,
        Host::Client,
        &["pasv", "198.51.100.1", "21", "hello.txt"],
    );
    assert!(
        outside.contains("227 Entering Passive Mode (198,51,100,1,"),
        "{outside}"
    );
    assert!(outside.contains("got 19 bytes"), "{outside}");
    let inside = ftplib_ok(&lab, Host::Inside, &["pasv", "10.0.0.2", "21", "hello.txt"]);
    assert!(
        inside.contains("227 Entering Passive Mode (10,0,0,2,"),
        "{inside}"
    );
    assert!(inside.contains("got 19 bytes"), "{inside}");
    assert_eq!(
        dropped(&lab),
        0,
        "the server's firewall dropped a packet wharf needed"
    );
}

/// The server behind DNAT without `external_ip`, and a router that forwards only the
/// control port: the 227 reply carries the server's private address, which clients
/// that believe it cannot reach. The kernel's FTP conntrack helper on the router
/// rewrites the 227 and opens the data connection, so plain FTP works; under FTPS it
/// cannot read the reply, and the transfer fails, as the documents say.
fn server_behind_nat_without_external_ip(rt: &str) {
    let mut lab = Lab::new(Topology::ServerBehindNat);
    prepare(&lab);
    let config = write_config(
        &lab,
        "w.toml",
        rt,
        "listen = [\"10.0.0.2:21\"]\npassive_ports = \"50000-50099\"",
        "",
        TLS,
    );
    let nat_warning = printed_rules(&config, &["--nat", "198.51.100.1"]);
    assert!(
        nat_warning.contains("WARNING: site \"default\" has no external_ip"),
        "{nat_warning}"
    );
    lab.nft(Host::Router, ROUTER_BASE);
    lab.nft(
        Host::Router,
        "add table ip nat\n\
         add chain ip nat prerouting { type nat hook prerouting priority dstnat; policy accept; }\n\
         add rule ip nat prerouting ip daddr 198.51.100.1 tcp dport 21 dnat to 10.0.0.2\n\
         add rule inet filter forward ct state established,related accept\n\
         add rule inet filter forward ct status dnat tcp dport 21 accept\n",
    );
    let control: SocketAddr = "10.0.0.2:21".parse().unwrap();
    let _wharf = lab.start_wharf(&["--config", &config], control);
    let pasv = [
        "--disable-epsv",
        "--no-ftp-skip-pasv-ip",
        "ftp://198.51.100.1/hello.txt",
    ];

    // No helper: the private address in the 227 is unreachable from outside.
    let seen = ftplib(
        &lab,
        Host::Client,
        &["pasv", "198.51.100.1", "21", "hello.txt"],
    );
    let said = String::from_utf8_lossy(&seen.stdout);
    assert!(
        said.contains("227 Entering Passive Mode (10,0,0,2,"),
        "{}",
        text(&lab, &seen)
    );
    assert!(
        !seen.status.success() && said.contains("data connection failed"),
        "{}",
        text(&lab, &seen)
    );
    curl_fails(&lab, Host::Client, &pasv, 7);

    // The helper rewrites the 227 to the router's address and forwards the port.
    lab.nft(Host::Router, FTP_HELPER);
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["pasv", "198.51.100.1", "21", "hello.txt"],
    );
    assert!(
        said.contains("227 Entering Passive Mode (198,51,100,1,"),
        "{said}"
    );
    assert!(said.contains("got 19 bytes"), "{said}");
    curl_gets(&lab, Host::Client, &pasv, HELLO);
    curl_gets(&lab, Host::Client, &["ftp://198.51.100.1/big.bin"], &big());

    // FTPS: the helper sees only ciphertext; the client gets the private address.
    let said = ftplib(&lab, Host::Client, &["pasv-tls", "198.51.100.1", "21"]);
    let out = String::from_utf8_lossy(&said.stdout);
    assert!(
        out.contains("227 Entering Passive Mode (10,0,0,2,"),
        "{}",
        text(&lab, &said)
    );
    let tls = ["--ssl-reqd", "-k", "-u", "alice:s3cret"];
    curl_fails(&lab, Host::Client, &[&tls[..], &pasv[..]].concat(), 7);
}

/// A server firewall that admits only the control port and the passive range (the
/// rules `wharf firewall` prints) and drops the rest: 200 sessions hold a passive
/// listener at once and all transfer, and the firewall never drops a packet — no
/// data port outside the range is ever used. A probe to another port is dropped, so
/// the count is live.
fn only_control_and_passive_ports_are_open(rt: &str) {
    let mut lab = Lab::new(Topology::Routed);
    prepare(&lab);
    let config = write_config(
        &lab,
        "w.toml",
        rt,
        "listen = [\"203.0.113.2:21\"]\npassive_ports = \"50000-50249\"",
        "",
        "",
    );
    let rules = server_firewall(&lab, &config, "accept");
    assert!(rules.contains("tcp dport 50000-50249 accept"), "{rules}");
    let control: SocketAddr = "203.0.113.2:21".parse().unwrap();
    let _wharf = lab.start_wharf(&["--config", &config], control);
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["concurrent", "203.0.113.2", "21", "200", "50000", "50249"],
    );
    assert!(
        said.contains("200 sessions transferred, 200 distinct passive ports in range"),
        "{said}"
    );
    curl_gets(&lab, Host::Client, &["ftp://203.0.113.2/big.bin"], &big());
    let l = lftp(
        &lab,
        Host::Client,
        "ftp://203.0.113.2",
        "set ftp:prefer-epsv no; cat hello.txt",
    );
    assert!(
        l.status.success() && l.stdout == HELLO,
        "{}",
        text(&lab, &l)
    );
    assert_eq!(
        dropped(&lab),
        0,
        "a data connection used a port outside the range"
    );
    let probe = ftplib(&lab, Host::Client, &["probe", "203.0.113.2", "8021"]);
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains("no answer"),
        "{}",
        text(&lab, &probe)
    );
    assert!(
        dropped(&lab) >= 1,
        "the firewall's drop count does not count"
    );
}

/// A client behind SNAT in active mode: its PORT and EPRT name its private address,
/// which the peer check refuses (and the log says why); with the FTP conntrack helper
/// on its router, which rewrites them to the router's address and forwards the
/// connection back, active mode works.
fn client_behind_nat_in_active_mode(rt: &str) {
    let mut lab = Lab::new(Topology::ClientBehindNat);
    prepare(&lab);
    let config = write_config(
        &lab,
        "w.toml",
        rt,
        "listen = [\"203.0.113.2:21\"]\npassive_ports = \"50000-50099\"",
        "[site.logging]\nfields = [\"cs-method\", \"sc-status\", \"sc-substatus\", \"x-debug\"]",
        "",
    );
    lab.nft(Host::Router, ROUTER_BASE);
    lab.nft(
        Host::Router,
        "add table ip nat\n\
         add chain ip nat postrouting { type nat hook postrouting priority srcnat; policy accept; }\n\
         add rule ip nat postrouting oifname \"srvnet\" masquerade\n\
         add rule inet filter forward ct state established,related accept\n\
         add rule inet filter forward iifname \"cl\" accept\n",
    );
    let control: SocketAddr = "203.0.113.2:21".parse().unwrap();
    let wharf = lab.start_wharf(&["--config", &config], control);
    let url = "ftp://203.0.113.2/hello.txt";

    // Without the helper: refused, and said why.
    let refused = "< 504 The address must be the client's own address.";
    for args in [
        &["-v", "-P", "-", "--disable-eprt", url][..],
        &["-v", "-P", "-", url],
    ] {
        let out = curl_fails(&lab, Host::Client, args, 30);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(said.contains(refused), "{}", text(&lab, &out));
    }
    let said = ftplib(
        &lab,
        Host::Client,
        &["active", "203.0.113.2", "21", "hello.txt"],
    );
    let out = String::from_utf8_lossy(&said.stdout);
    assert!(
        out.contains("504 The address must be the client's own address."),
        "{}",
        text(&lab, &said)
    );
    wharf.expect_line("why PORT was refused", |l| {
        l.contains("PORT/EPRT address is not the client's own") && l.contains("192.168.1.10")
    });

    // The helper rewrites PORT and EPRT, and opens the way back.
    lab.nft(Host::Router, FTP_HELPER);
    curl_gets(
        &lab,
        Host::Client,
        &["-P", "-", "--disable-eprt", url],
        HELLO,
    );
    curl_gets(
        &lab,
        Host::Client,
        &["-P", "-", "ftp://203.0.113.2/big.bin"],
        &big(),
    );
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["active", "203.0.113.2", "21", "hello.txt"],
    );
    assert!(said.contains("got 19 bytes"), "{said}");
    lab.stop_wharf(wharf);
    // The W3C log has the refusals with their sub-status.
    let logs: String = std::fs::read_dir(lab.path("logs/default"))
        .expect("the site's log directory")
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    // Refused: curl's PORT, curl's EPRT and then its PORT, ftplib's PORT. Accepted once
    // the helper rewrote them: EPRT (curl tries it first) as well as PORT.
    let count = |prefix: &str| logs.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(
        (
            count("PORT 504 31 port-not-client"),
            count("EPRT 504 31 port-not-client")
        ),
        (3, 1),
        "{logs}"
    );
    assert!(count("EPRT 200 ") >= 1 && count("PORT 200 ") >= 2, "{logs}");
}

/// Active mode from port 20 through a server firewall that lets connections out only
/// from port 20 (the rules `wharf firewall` prints, with the output policy at drop):
/// it works after the switch to `server.user`, with CAP_NET_BIND_SERVICE kept by one
/// thread and no other capability anywhere; from any port it is blocked; and
/// `"control-1"` connects from the control port minus one.
fn active_mode_from_port_20_through_an_egress_firewall(rt: &str) {
    let mut lab = Lab::new(Topology::Routed);
    prepare(&lab);
    let server = "listen = [\"203.0.113.2:21\"]\npassive_ports = \"50000-50099\"";
    let control: SocketAddr = "203.0.113.2:21".parse().unwrap();

    let config = write_config(
        &lab,
        "port20.toml",
        rt,
        &format!("{server}\nactive_source_port = 20\nuser = \"nobody\""),
        "",
        "",
    );
    let rules = server_firewall(&lab, &config, "drop");
    assert!(
        rules.contains("add rule inet filter output tcp sport 20 accept"),
        "{rules}"
    );
    let wharf = lab.start_wharf(&["--config", &config], control);
    curl_gets(
        &lab,
        Host::Client,
        &["-P", "-", "ftp://203.0.113.2/big.bin"],
        &big(),
    );
    curl_gets(
        &lab,
        Host::Client,
        &["-P", "-", "--disable-eprt", "ftp://203.0.113.2/hello.txt"],
        HELLO,
    );
    let up = lab.path("upload.bin");
    let put = curl(
        &lab,
        Host::Client,
        &[
            "-P",
            "-",
            "-u",
            "alice:s3cret",
            "-T",
            up.to_str().unwrap(),
            "ftp://203.0.113.2/up/active.bin",
        ],
    );
    assert!(put.status.success(), "{}", text(&lab, &put));
    assert_eq!(
        std::fs::read(lab.path("site/up/active.bin")).unwrap(),
        big()
    );
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["active", "203.0.113.2", "21", "hello.txt"],
    );
    assert!(
        said.contains("data connection from port 20") && said.contains("got 19 bytes"),
        "{said}"
    );
    check_capabilities(wharf.pid);
    lab.stop_wharf(wharf);

    // From any port: the firewall blocks the data connection, and the client is told.
    // (A data connection that cannot be made is given up after `timeouts.data`.)
    let config = write_config(&lab, "any.toml", rt, server, "", "[timeouts]\ndata = 2");
    let rules = server_firewall(&lab, &config, "drop");
    assert!(!rules.contains("sport"), "{rules}");
    let wharf = lab.start_wharf(&["--config", &config], control);
    let failed = curl_fails(
        &lab,
        Host::Client,
        &["-v", "-P", "-", "ftp://203.0.113.2/hello.txt"],
        10,
    );
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("< 425 "),
        "{}",
        text(&lab, &failed)
    );
    lab.stop_wharf(wharf);

    // The control port minus one: 2121 connects from 2120.
    let config = write_config(
        &lab,
        "minus1.toml",
        rt,
        "listen = [\"203.0.113.2:2121\"]\npassive_ports = \"50000-50099\"\nactive_source_port = \"control-1\"",
        "",
        "",
    );
    let rules = server_firewall(&lab, &config, "drop");
    assert!(
        rules.contains("add rule inet filter output tcp sport 2120 accept"),
        "{rules}"
    );
    let wharf = lab.start_wharf(&["--config", &config], "203.0.113.2:2121".parse().unwrap());
    curl_gets(
        &lab,
        Host::Client,
        &["-P", "-", "ftp://203.0.113.2:2121/big.bin"],
        &big(),
    );
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["active", "203.0.113.2", "2121", "hello.txt"],
    );
    assert!(said.contains("data connection from port 2120"), "{said}");
    lab.stop_wharf(wharf);
}

/// IPv6 between the namespaces, no NAT: EPSV and EPRT with curl, lftp and ftplib,
/// plain and FTPS, through the rules `wharf firewall` prints.
fn ipv6_epsv_and_eprt(rt: &str) {
    let mut lab = Lab::new(Topology::Routed);
    prepare(&lab);
    let config = write_config(
        &lab,
        "w.toml",
        rt,
        "listen = [\"[2001:db8:2::2]:21\"]\npassive_ports = \"50000-50099\"",
        "",
        TLS,
    );
    server_firewall(&lab, &config, "accept");
    let control: SocketAddr = "[2001:db8:2::2]:21".parse().unwrap();
    let _wharf = lab.start_wharf(&["--config", &config], control);
    let url = "ftp://[2001:db8:2::2]/big.bin";
    curl_gets(&lab, Host::Client, &["-g", url], &big());
    curl_gets(&lab, Host::Client, &["-g", "-P", "-", url], &big());
    curl_gets(
        &lab,
        Host::Client,
        &["-g", "--ssl-reqd", "-k", "-u", "alice:s3cret", url],
        &big(),
    );
    let l = lftp(
        &lab,
        Host::Client,
        "ftp://[2001:db8:2::2]",
        "set ftp:passive-mode off; cat hello.txt",
    );
    assert!(
        l.status.success() && l.stdout == HELLO,
        "{}",
        text(&lab, &l)
    );
    // FTPS in active mode: lftp (curl 7.87 and 7.88, Debian 12's, never start the data connection's
    // handshake in active mode: curl/curl#10666).
    let l = lftp(
        &lab,
        Host::Client,
        "ftp://alice:s3cret@[2001:db8:2::2]",
        "set ftp:ssl-force true; set ssl:verify-certificate no; set ftp:passive-mode off; cat hello.txt",
    );
    assert!(
        l.status.success() && l.stdout == HELLO,
        "{}",
        text(&lab, &l)
    );
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["pasv", "2001:db8:2::2", "21", "hello.txt"],
    );
    assert!(
        said.contains("229 Entering Extended Passive Mode (|||"),
        "{said}"
    );
    let said = ftplib_ok(
        &lab,
        Host::Client,
        &["active", "2001:db8:2::2", "21", "hello.txt"],
    );
    assert!(
        said.contains("200 EPRT command successful.") && said.contains("got 19 bytes"),
        "{said}"
    );
    assert_eq!(
        dropped(&lab),
        0,
        "the server's firewall dropped a packet wharf needed"
    );
}

/// After the switch to `nobody` with active mode from port 20: exactly one thread holds
/// CAP_NET_BIND_SERVICE (permitted and effective, nothing else), and no other thread
/// holds any capability; every thread runs as `nobody`.
fn check_capabilities(pid: u32) {
    let nobody = wharf_server::privileges::resolve("nobody", None).unwrap();
    let mut keepers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .trim()
                .to_string()
        };
        let uid = field("Uid:");
        assert!(
            uid.split_whitespace().all(|u| u == nobody.uid.to_string()),
            "{uid}"
        );
        let (prm, eff) = (field("CapPrm:"), field("CapEff:"));
        match prm.as_str() {
            "0000000000000000" => assert_eq!(eff, "0000000000000000"),
            "0000000000000400" => {
                assert_eq!(eff, "0000000000000400");
                keepers.push(std::fs::read_to_string(dir.join("comm")).unwrap());
            }
            other => panic!("a thread of wharf holds capabilities {other}: {status}"),
        }
    }
    assert_eq!(
        keepers,
        ["wharf-bind\n"],
        "one thread keeps CAP_NET_BIND_SERVICE"
    );
}
