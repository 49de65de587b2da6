//! `wharf firewall`: the firewall rules a configuration needs, derived from it — the
//! control ports, the implicit-FTPS ports, the passive range and the active-mode source
//! ports — for nftables, ufw, firewalld or iptables, and with `--nat EXTERNAL_IP` the
//! port forwards of the NAT router in front of the server.
//!
//! Every flavour adds to a firewall that drops what it does not accept (ufw's and
//! firewalld's default, the policy an nftables or iptables input chain is given): the
//! rules open what wharf needs and nothing else, and never change a policy, so loading
//! them cannot lock anyone out.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;

use crate::config::ServerConfig;

/// Which firewall the rules are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// `nft` commands for an existing table and chains (Debian's `inet filter`).
    Nftables,
    /// `ufw allow` commands.
    Ufw,
    /// `firewall-cmd --permanent` commands.
    Firewalld,
    /// `iptables` (and `ip6tables`) commands.
    Iptables,
}

/// `wharf firewall`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct FirewallArgs {
    /// The firewall to write rules for.
    #[arg(value_enum, default_value = "nftables")]
    pub flavor: Flavor,
    /// Print the rules of the NAT router in front of the server instead: port forwards
    /// from this public IPv4 address (the configuration's external_ip, normally).
    #[arg(long, value_name = "EXTERNAL_IP")]
    pub nat: Option<Ipv4Addr>,
    /// With --nat: the server's address on the router's network, where the ports are
    /// forwarded. Needed when the configuration listens on a wildcard address.
    #[arg(long, value_name = "ADDRESS", requires = "nat")]
    pub internal_ip: Option<Ipv4Addr>,
    /// With nftables: the table and the input, output and forward chains the rules go
    /// into (they must exist).
    #[arg(long, value_name = "FAMILY NAME", default_value = "inet filter")]
    pub nft_table: String,
}

/// What a configuration needs opened, from its bindings and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// Plain FTP control ports (explicit FTPS uses them too).
    pub control: Vec<u16>,
    /// Implicit-FTPS control ports.
    pub implicit: Vec<u16>,
    /// The passive range; `None` when it is `0-0` (any port: no rule can cover it).
    pub passive: Option<RangeInclusive<u16>>,
    /// Fixed source ports of active-mode data connections.
    pub active: Vec<u16>,
    /// Whether some reachable binding is IPv4, IPv6.
    pub ipv4: bool,
    pub ipv6: bool,
    /// Whether some reachable binding is on `0.0.0.0`.
    pub ipv4_wildcard: bool,
    /// The specific (not wildcard) IPv4 addresses reachable bindings are on.
    pub addresses_v4: Vec<Ipv4Addr>,
    /// Addresses only this machine reaches (loopback): no rule needed.
    pub loopback: Vec<SocketAddr>,
    /// Sites without `external_ip`, by name (for `--nat`).
    pub without_external_ip: Vec<String>,
    /// The `external_ip` values sites set.
    pub external_ips: Vec<Ipv4Addr>,
}

impl Needs {
    pub fn of(config: &ServerConfig) -> Needs {
        let mut n = Needs {
            control: Vec::new(),
            implicit: Vec::new(),
            passive: None,
            active: config.active_source_ports(),
            ipv4: false,
            ipv6: false,
            ipv4_wildcard: false,
            addresses_v4: Vec::new(),
            loopback: Vec::new(),
            without_external_ip: Vec::new(),
            external_ips: Vec::new(),
        };
        for site in &config.sites {
            for b in &site.bindings {
                if b.addr.ip().is_loopback() {
                    n.loopback.push(b.addr);
                    continue;
                }
                match b.implicit_tls {
                    true => n.implicit.push(b.addr.port()),
                    false => n.control.push(b.addr.port()),
                }
                match b.addr.ip() {
                    IpAddr::V4(ip) => {
                        n.ipv4 = true;
                        match ip.is_unspecified() {
                            true => n.ipv4_wildcard = true,
                            false => n.addresses_v4.push(ip),
                        }
                    }
                    IpAddr::V6(_) => n.ipv6 = true,
                }
            }
            match site.session.external_ip {
                Some(ip) => n.external_ips.push(ip),
                None => n.without_external_ip.push(site.name.clone()),
            }
            let range = &site.session.passive_ports;
            if *range != (0..=0) {
                n.passive = Some(range.clone());
            }
        }
        for v in [&mut n.control, &mut n.implicit, &mut n.active] {
            v.sort_unstable();
            v.dedup();
        }
        n.addresses_v4.sort_unstable();
        n.addresses_v4.dedup();
        n.loopback.sort_unstable();
        n.loopback.dedup();
        n.external_ips.sort_unstable();
        n.external_ips.dedup();
        n
    }

    /// The ports of one kind, `21, 990`.
    fn list(ports: &[u16], sep: &str) -> String {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(sep)
    }
}

/// The port forwards of a NAT router: from `external` to `internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nat {
    pub external: Ipv4Addr,
    pub internal: Ipv4Addr,
}

/// Runs `wharf firewall`: the rules for `config` (read from `source`), on stdout.
pub fn run(args: &FirewallArgs, config: &ServerConfig, source: &str) -> Result<String, String> {
    let needs = Needs::of(config);
    let nat = match args.nat {
        None => None,
        Some(external) => Some(Nat {
            external,
            internal: match args.internal_ip {
                Some(ip) => ip,
                None => internal_address(&needs)?,
            },
        }),
    };
    let (family, table) = args
        .nft_table
        .split_once(' ')
        .map(|(f, t)| (f.trim(), t.trim()))
        .filter(|(f, t)| !f.is_empty() && !t.is_empty() && !t.contains(' '))
        .ok_or_else(|| {
            format!(
                "--nft-table {:?}: give a family and a table name, like \"inet filter\"",
                args.nft_table
            )
        })?;
    Ok(rules(&needs, source, args.flavor, nat, (family, table)))
}

/// The one specific IPv4 address the server listens on, for `--nat` without
/// `--internal-ip`.
fn internal_address(needs: &Needs) -> Result<Ipv4Addr, String> {
    match needs.addresses_v4.as_slice() {
        [one] if !needs.ipv4_wildcard => Ok(*one),
        _ => Err(
            "--nat: the configuration does not listen on exactly one IPv4 address (a wildcard \
             like 0.0.0.0, or several), so the router's forwarding target is unknown: name the \
             server's address on the router's network with --internal-ip ADDRESS"
                .into(),
        ),
    }
}

/// The rules, as text.
pub fn rules(
    needs: &Needs,
    source: &str,
    flavor: Flavor,
    nat: Option<Nat>,
    nft_table: (&str, &str),
) -> String {
    let mut out = String::new();
    let name = match flavor {
        Flavor::Nftables => "nftables",
        Flavor::Ufw => "ufw",
        Flavor::Firewalld => "firewalld",
        Flavor::Iptables => "iptables",
    };
    let _ = writeln!(
        out,
        "# wharf firewall rules ({name}) for {source}, made by `wharf firewall`."
    );
    summary(&mut out, needs);
    if needs.control.is_empty() && needs.implicit.is_empty() {
        let _ = writeln!(
            out,
            "# wharf listens on loopback only here: no firewall rule is needed."
        );
        return out;
    }
    // One machine's rules per run: the server's, or (--nat) its router's.
    match (flavor, nat) {
        (Flavor::Nftables, None) => nftables(&mut out, needs, nft_table),
        (Flavor::Ufw, None) => ufw(&mut out, needs),
        (Flavor::Firewalld, None) => firewalld(&mut out, needs),
        (Flavor::Iptables, None) => iptables(&mut out, needs),
        (flavor, Some(nat)) => {
            nat_notes(&mut out, needs, nat);
            match flavor {
                Flavor::Nftables => nftables_nat(&mut out, needs, nat, nft_table),
                Flavor::Ufw => ufw_nat(&mut out, needs, nat),
                Flavor::Firewalld => firewalld_nat(&mut out, needs, nat),
                Flavor::Iptables => iptables_nat(&mut out, needs, nat),
            }
        }
    }
    out
}

/// What the configuration asks for, and what it leaves to the reader.
fn summary(out: &mut String, n: &Needs) {
    let mut parts = Vec::new();
    if !n.control.is_empty() {
        parts.push(format!("FTP control {}", Needs::list(&n.control, ", ")));
    }
    if !n.implicit.is_empty() {
        parts.push(format!("implicit FTPS {}", Needs::list(&n.implicit, ", ")));
    }
    if let Some(p) = &n.passive {
        parts.push(format!("passive data {}-{}", p.start(), p.end()));
    }
    match n.active.as_slice() {
        [] => parts.push("active mode from any port".into()),
        ports => parts.push(format!(
            "active mode from port {}",
            Needs::list(ports, ", ")
        )),
    }
    let _ = writeln!(out, "# {}.", parts.join("; "));
    for addr in &n.loopback {
        let _ = writeln!(out, "# {addr} is loopback: nothing to open for it.");
    }
    if n.passive.is_none() && !(n.control.is_empty() && n.implicit.is_empty()) {
        let _ = writeln!(
            out,
            "# passive_ports is \"0-0\" (any port): no rule can let passive data connections in\n\
             # short of opening every port. Set passive_ports = \"50000-50100\" (or another range)\n\
             # in [server], then run this again."
        );
    }
}

fn nftables(out: &mut String, n: &Needs, (family, table): (&str, &str)) {
    let _ = writeln!(
        out,
        "# These rules go into the input (and output) chain of the table \"{family} {table}\"\n\
         # (Debian's /etc/nftables.conf has it), whose policy then drops everything else:\n\
         # nft -f THIS_FILE. They change no policy. --nft-table names another table."
    );
    let add = |out: &mut String, chain: &str, rule: String| {
        let _ = writeln!(out, "add rule {family} {table} {chain} {rule}");
    };
    add(
        out,
        "input",
        "ct state established,related accept comment \"wharf: replies, and data connections of known control connections\"".into(),
    );
    if !n.control.is_empty() {
        add(
            out,
            "input",
            format!(
                "tcp dport {} accept comment \"wharf: FTP control (and explicit FTPS)\"",
                nft_set(&n.control, None)
            ),
        );
    }
    if !n.implicit.is_empty() {
        add(
            out,
            "input",
            format!(
                "tcp dport {} accept comment \"wharf: implicit FTPS\"",
                nft_set(&n.implicit, None)
            ),
        );
    }
    if let Some(p) = &n.passive {
        add(
            out,
            "input",
            format!(
                "tcp dport {}-{} accept comment \"wharf: passive data connections\"",
                p.start(),
                p.end()
            ),
        );
    }
    if !n.active.is_empty() {
        let _ = writeln!(
            out,
            "# Active mode: wharf connects to clients from port {}. These matter where the\n\
             # output chain's policy drops too.",
            Needs::list(&n.active, ", ")
        );
        add(
            out,
            "output",
            "ct state established,related accept comment \"wharf: replies\"".into(),
        );
        add(
            out,
            "output",
            format!(
                "tcp sport {} accept comment \"wharf: active-mode data connections\"",
                nft_set(&n.active, None)
            ),
        );
    }
}

/// `21` or `{ 21, 990, 50000-50100 }`.
fn nft_set(ports: &[u16], range: Option<&RangeInclusive<u16>>) -> String {
    let mut items: Vec<String> = ports.iter().map(u16::to_string).collect();
    if let Some(r) = range {
        items.push(format!("{}-{}", r.start(), r.end()));
    }
    match items.as_slice() {
        [one] => one.clone(),
        _ => format!("{{ {} }}", items.join(", ")),
    }
}

fn ufw(out: &mut String, n: &Needs) {
    let _ = writeln!(
        out,
        "# ufw denies what it is not told to allow; these allow what wharf needs."
    );
    for p in &n.control {
        let _ = writeln!(
            out,
            "ufw allow {p}/tcp comment 'wharf: FTP control (and explicit FTPS)'"
        );
    }
    for p in &n.implicit {
        let _ = writeln!(out, "ufw allow {p}/tcp comment 'wharf: implicit FTPS'");
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "ufw allow {}:{}/tcp comment 'wharf: passive data connections'",
            r.start(),
            r.end()
        );
    }
    for p in &n.active {
        let _ = writeln!(
            out,
            "# Active mode: ufw allows outgoing connections by default; if yours denies them:\n\
             # ufw allow out proto tcp from any port {p} comment 'wharf: active-mode data connections'"
        );
    }
}

fn firewalld(out: &mut String, n: &Needs) {
    let _ = writeln!(
        out,
        "# Ports, not --add-service=ftp: that service loads the FTP conntrack helper, which\n\
         # cannot read FTPS; the passive range below serves plain FTP and FTPS alike.\n\
         # Add --zone=ZONE for a zone other than the default one."
    );
    for p in n.control.iter().chain(&n.implicit) {
        let _ = writeln!(out, "firewall-cmd --permanent --add-port={p}/tcp");
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "firewall-cmd --permanent --add-port={}-{}/tcp",
            r.start(),
            r.end()
        );
    }
    if !n.active.is_empty() {
        let _ = writeln!(
            out,
            "# Active mode (from port {}): firewalld allows outgoing connections.",
            Needs::list(&n.active, ", ")
        );
    }
    let _ = writeln!(out, "firewall-cmd --reload");
}

fn iptables(out: &mut String, n: &Needs) {
    let _ = writeln!(
        out,
        "# For INPUT (and OUTPUT) chains whose policy drops what they do not accept."
    );
    let commands: Vec<&str> = [(n.ipv4, "iptables"), (n.ipv6, "ip6tables")]
        .into_iter()
        .filter_map(|(on, c)| on.then_some(c))
        .collect();
    for cmd in commands {
        let _ = writeln!(
            out,
            "{cmd} -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
        );
        for (ports, what) in [
            (&n.control, "FTP control (and explicit FTPS)"),
            (&n.implicit, "implicit FTPS"),
        ] {
            for chunk in ports.chunks(15) {
                let _ = writeln!(
                    out,
                    "{cmd} -A INPUT -p tcp -m multiport --dports {} -m comment --comment \"wharf: {what}\" -j ACCEPT",
                    Needs::list(chunk, ",")
                );
            }
        }
        if let Some(r) = &n.passive {
            let _ = writeln!(
                out,
                "{cmd} -A INPUT -p tcp --dport {}:{} -m comment --comment \"wharf: passive data connections\" -j ACCEPT",
                r.start(),
                r.end()
            );
        }
        if !n.active.is_empty() {
            let _ = writeln!(
                out,
                "{cmd} -A OUTPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
            );
            for chunk in n.active.chunks(15) {
                let _ = writeln!(
                    out,
                    "{cmd} -A OUTPUT -p tcp -m multiport --sports {} -m comment --comment \"wharf: active-mode data connections\" -j ACCEPT",
                    Needs::list(chunk, ",")
                );
            }
        }
    }
}

/// What `--nat` means for the configuration: the sites that would advertise an address
/// the outside cannot reach.
fn nat_notes(out: &mut String, n: &Needs, nat: Nat) {
    let _ = writeln!(
        out,
        "# For the NAT router in front of the server: port forwards from {} to {}.\n\
         # They serve plain FTP and FTPS alike, with no FTP conntrack helper (which cannot\n\
         # read FTPS anyway). The server's own rules: the same command without --nat.",
        nat.external, nat.internal
    );
    for site in &n.without_external_ip {
        let _ = writeln!(
            out,
            "# WARNING: site {site:?} has no external_ip: its PASV (227) replies carry the\n\
             # server's own address, which clients outside cannot reach, and the router\n\
             # cannot rewrite them under TLS. Set external_ip = \"{}\".",
            nat.external
        );
    }
    for ip in n.external_ips.iter().filter(|ip| **ip != nat.external) {
        let _ = writeln!(
            out,
            "# WARNING: a site advertises external_ip = \"{ip}\", not {}.",
            nat.external
        );
    }
    if n.ipv6 {
        let _ = writeln!(
            out,
            "# IPv6 is not translated: if the router filters forwarded IPv6, let the control\n\
             # ports and the passive range through to the server's IPv6 addresses."
        );
    }
}

fn nftables_nat(out: &mut String, n: &Needs, nat: Nat, (family, table): (&str, &str)) {
    let control: Vec<u16> = n.control.iter().chain(&n.implicit).copied().collect();
    let _ = writeln!(
        out,
        "add table ip nat\n\
         add chain ip nat prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
    );
    if !control.is_empty() {
        let _ = writeln!(
            out,
            "add rule ip nat prerouting ip daddr {} tcp dport {} dnat to {} comment \"wharf: FTP control\"",
            nat.external,
            nft_set(&control, None),
            nat.internal
        );
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "add rule ip nat prerouting ip daddr {} tcp dport {}-{} dnat to {} comment \"wharf: passive data connections\"",
            nat.external,
            r.start(),
            r.end(),
            nat.internal
        );
    }
    let _ = writeln!(
        out,
        "# The router's forward chain (\"{family} {table}\" forward), where its policy drops:"
    );
    let _ = writeln!(
        out,
        "add rule {family} {table} forward ct state established,related accept comment \"wharf: replies\""
    );
    let _ = writeln!(
        out,
        "add rule {family} {table} forward ip daddr {} tcp dport {} ct status dnat accept comment \"wharf: forwarded to the server\"",
        nat.internal,
        nft_set(&control, n.passive.as_ref())
    );
    let sports = match n.active.as_slice() {
        [] => "tcp dport 1024-65535 ".to_string(),
        ports => format!("tcp sport {} ", nft_set(ports, None)),
    };
    let _ = writeln!(
        out,
        "add rule {family} {table} forward ip saddr {} {sports}accept comment \"wharf: active-mode data connections\"\n\
         # Active mode leaves through the router's address: most routers masquerade their\n\
         # network already; if yours does not:\n\
         # add rule ip nat postrouting ip saddr {} {sports}snat to {}",
        nat.internal, nat.internal, nat.external
    );
}

fn ufw_nat(out: &mut String, n: &Needs, nat: Nat) {
    let _ = writeln!(
        out,
        "# ufw has no command for port forwards. On the router, add to /etc/ufw/before.rules,\n\
         # before its *filter section (and set net/ipv4/ip_forward=1 in /etc/ufw/sysctl.conf):\n\
         # *nat\n\
         # :PREROUTING ACCEPT [0:0]"
    );
    for p in n.control.iter().chain(&n.implicit) {
        let _ = writeln!(
            out,
            "# -A PREROUTING -d {} -p tcp --dport {p} -j DNAT --to-destination {}",
            nat.external, nat.internal
        );
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "# -A PREROUTING -d {} -p tcp --dport {}:{} -j DNAT --to-destination {}",
            nat.external,
            r.start(),
            r.end(),
            nat.internal
        );
    }
    let _ = writeln!(
        out,
        "# COMMIT\n# and let the forwarded connections through:"
    );
    for p in n.control.iter().chain(&n.implicit) {
        let _ = writeln!(
            out,
            "ufw route allow proto tcp to {} port {p} comment 'wharf: FTP control'",
            nat.internal
        );
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "ufw route allow proto tcp to {} port {}:{} comment 'wharf: passive data connections'",
            nat.internal,
            r.start(),
            r.end()
        );
    }
}

fn firewalld_nat(out: &mut String, n: &Needs, nat: Nat) {
    let _ = writeln!(
        out,
        "# On the router, in the zone of its outside interface (--zone=ZONE):\n\
         firewall-cmd --permanent --add-masquerade"
    );
    for p in n.control.iter().chain(&n.implicit) {
        let _ = writeln!(
            out,
            "firewall-cmd --permanent --add-forward-port=port={p}:proto=tcp:toaddr={}",
            nat.internal
        );
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "firewall-cmd --permanent --add-forward-port=port={}-{}:proto=tcp:toaddr={}",
            r.start(),
            r.end(),
            nat.internal
        );
    }
    let _ = writeln!(out, "firewall-cmd --reload");
}

fn iptables_nat(out: &mut String, n: &Needs, nat: Nat) {
    let control: Vec<u16> = n.control.iter().chain(&n.implicit).copied().collect();
    let mut dports: Vec<String> = control.iter().map(u16::to_string).collect();
    for chunk in control.chunks(15) {
        let _ = writeln!(
            out,
            "iptables -t nat -A PREROUTING -d {} -p tcp -m multiport --dports {} -j DNAT --to-destination {}",
            nat.external,
            Needs::list(chunk, ","),
            nat.internal
        );
    }
    if let Some(r) = &n.passive {
        let _ = writeln!(
            out,
            "iptables -t nat -A PREROUTING -d {} -p tcp --dport {}:{} -j DNAT --to-destination {}",
            nat.external,
            r.start(),
            r.end(),
            nat.internal
        );
        dports.push(format!("{}:{}", r.start(), r.end()));
    }
    let _ = writeln!(
        out,
        "iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    );
    for chunk in dports.chunks(15) {
        let _ = writeln!(
            out,
            "iptables -A FORWARD -d {} -p tcp -m multiport --dports {} -m conntrack --ctstate DNAT -j ACCEPT",
            nat.internal,
            chunk.join(",")
        );
    }
    let sports = match n.active.as_slice() {
        [] => " -p tcp --dport 1024:65535".to_string(),
        ports => format!(" -p tcp -m multiport --sports {}", Needs::list(ports, ",")),
    };
    let _ = writeln!(
        out,
        "iptables -A FORWARD -s {}{sports} -j ACCEPT",
        nat.internal
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> ServerConfig {
        let root = format!("{:?}", std::env::temp_dir().display().to_string());
        ServerConfig::from_toml_str(&text.replace("ROOT", &root), "w.toml").unwrap()
    }

    fn args(flavor: Flavor, nat: Option<&str>, internal: Option<&str>) -> FirewallArgs {
        FirewallArgs {
            flavor,
            nat: nat.map(|n| n.parse().unwrap()),
            internal_ip: internal.map(|n| n.parse().unwrap()),
            nft_table: "inet filter".into(),
        }
    }

    /// The lines that are not comments.
    fn rules_of(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    const TWO_SITES: &str = r#"
[server]
passive_ports = "50000-50100"
external_ip = "203.0.113.7"
[[sites]]
name = "a"
root = ROOT
bindings = ["10.0.0.2:21:", "127.0.0.1:2121:"]
active_source_port = "control-1"
[[sites]]
name = "b"
root = ROOT
bindings = ["[::]:2121:"]
"#;

    #[test]
    fn needs_come_from_bindings_and_settings() {
        let n = Needs::of(&config(TWO_SITES));
        assert_eq!(n.control, [21, 2121]);
        assert!(n.implicit.is_empty());
        assert_eq!(n.passive, Some(50000..=50100));
        // control-1 of site a: 21 - 1 and (loopback, but still a source port) 2121 - 1.
        assert_eq!(n.active, [20, 2120]);
        assert!(n.ipv4 && n.ipv6 && !n.ipv4_wildcard);
        assert_eq!(n.addresses_v4, ["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(n.loopback, ["127.0.0.1:2121".parse().unwrap()]);
        assert!(n.without_external_ip.is_empty());
    }

    #[test]
    fn nftables_rules_for_the_server() {
        let text = run(
            &args(Flavor::Nftables, None, None),
            &config(TWO_SITES),
            "w.toml",
        )
        .unwrap();
        assert_eq!(
            rules_of(&text),
            [
                "add rule inet filter input ct state established,related accept comment \"wharf: replies, and data connections of known control connections\"",
                "add rule inet filter input tcp dport { 21, 2121 } accept comment \"wharf: FTP control (and explicit FTPS)\"",
                "add rule inet filter input tcp dport 50000-50100 accept comment \"wharf: passive data connections\"",
                "add rule inet filter output ct state established,related accept comment \"wharf: replies\"",
                "add rule inet filter output tcp sport { 20, 2120 } accept comment \"wharf: active-mode data connections\"",
            ]
        );
        assert!(text.contains("# 127.0.0.1:2121 is loopback: nothing to open for it."));
    }

    #[test]
    fn nat_rules_need_to_know_where_to_forward() {
        let cfg = config(TWO_SITES);
        let text = run(
            &args(Flavor::Nftables, Some("203.0.113.7"), None),
            &cfg,
            "w.toml",
        )
        .unwrap();
        let rules = rules_of(&text);
        assert!(rules.contains(&"add rule ip nat prerouting ip daddr 203.0.113.7 tcp dport { 21, 2121 } dnat to 10.0.0.2 comment \"wharf: FTP control\""), "{text}");
        assert!(rules.contains(&"add rule inet filter forward ip daddr 10.0.0.2 tcp dport { 21, 2121, 50000-50100 } ct status dnat accept comment \"wharf: forwarded to the server\""), "{text}");
        assert!(!text.contains("WARNING"), "{text}");
        assert!(
            !text.contains("filter input"),
            "the router's rules only: {text}"
        );
        // A wildcard address: the router's target must be named.
        let wild = config("[server]\nlisten = [\"0.0.0.0:21\"]\npassive_ports = \"50000-50010\"\n[site]\nroot = ROOT\n");
        let err = run(
            &args(Flavor::Nftables, Some("203.0.113.7"), None),
            &wild,
            "w.toml",
        )
        .unwrap_err();
        assert!(err.contains("--internal-ip"), "{err}");
        let text = run(
            &args(Flavor::Iptables, Some("203.0.113.7"), Some("10.0.0.9")),
            &wild,
            "w.toml",
        )
        .unwrap();
        assert!(
            text.contains("WARNING: site \"default\" has no external_ip"),
            "{text}"
        );
        assert_eq!(
            rules_of(&text),
            [
                "iptables -t nat -A PREROUTING -d 203.0.113.7 -p tcp -m multiport --dports 21 -j DNAT --to-destination 10.0.0.9",
                "iptables -t nat -A PREROUTING -d 203.0.113.7 -p tcp --dport 50000:50010 -j DNAT --to-destination 10.0.0.9",
                "iptables -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
                "iptables -A FORWARD -d 10.0.0.9 -p tcp -m multiport --dports 21,50000:50010 -m conntrack --ctstate DNAT -j ACCEPT",
                "iptables -A FORWARD -s 10.0.0.9 -p tcp --dport 1024:65535 -j ACCEPT",
            ]
        );
    }

    #[test]
    fn ufw_firewalld_and_iptables_open_the_same_ports() {
        let cfg = config(TWO_SITES);
        let ufw = run(&args(Flavor::Ufw, None, None), &cfg, "w.toml").unwrap();
        assert_eq!(
            rules_of(&ufw),
            [
                "ufw allow 21/tcp comment 'wharf: FTP control (and explicit FTPS)'",
                "ufw allow 2121/tcp comment 'wharf: FTP control (and explicit FTPS)'",
                "ufw allow 50000:50100/tcp comment 'wharf: passive data connections'",
            ]
        );
        assert!(
            ufw.contains("# ufw allow out proto tcp from any port 20 "),
            "{ufw}"
        );
        let fwd = run(&args(Flavor::Firewalld, None, None), &cfg, "w.toml").unwrap();
        assert_eq!(
            rules_of(&fwd),
            [
                "firewall-cmd --permanent --add-port=21/tcp",
                "firewall-cmd --permanent --add-port=2121/tcp",
                "firewall-cmd --permanent --add-port=50000-50100/tcp",
                "firewall-cmd --reload",
            ]
        );
        let ipt = run(&args(Flavor::Iptables, None, None), &cfg, "w.toml").unwrap();
        let rules = rules_of(&ipt);
        assert_eq!(rules.len(), 10, "iptables and ip6tables: {ipt}");
        assert!(rules.contains(&"ip6tables -A INPUT -p tcp --dport 50000:50100 -m comment --comment \"wharf: passive data connections\" -j ACCEPT"));
        assert!(rules.contains(&"iptables -A OUTPUT -p tcp -m multiport --sports 20,2120 -m comment --comment \"wharf: active-mode data connections\" -j ACCEPT"));
    }

    #[test]
    fn what_cannot_be_opened_is_said() {
        let any = config("[server]\nlisten = [\"0.0.0.0:21\"]\n[site]\nroot = ROOT\n");
        let text = run(&args(Flavor::Nftables, None, None), &any, "w.toml").unwrap();
        assert!(
            text.contains("passive_ports is \"0-0\" (any port)"),
            "{text}"
        );
        assert!(!text.contains("dport 0"), "{text}");
        let local = config("[site]\nroot = ROOT\n");
        let text = run(&args(Flavor::Ufw, None, None), &local, "w.toml").unwrap();
        assert!(rules_of(&text).is_empty(), "{text}");
        assert!(
            text.contains("loopback only here: no firewall rule is needed"),
            "{text}"
        );
        let bad = FirewallArgs {
            nft_table: "filter".into(),
            ..args(Flavor::Nftables, None, None)
        };
        assert!(run(&bad, &any, "w.toml")
            .unwrap_err()
            .contains("--nft-table"));
    }
}
