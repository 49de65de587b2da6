//! IP address restrictions (IIS `ipSecurity`): networks, rules, and the verdict for a
//! client address. [`IpNet`] is the crate's one network type: the sites' passive
//! addresses per client network (`crate::site::PasvAddress`) use it too.
//!
//! Addresses are judged canonically: an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a
//! dual-stack listener reports for an IPv4 client) is the IPv4 address. Among the rules
//! that match, the most specific network (longest prefix) decides, and a deny beats an
//! allow of the same length, so the order of entries in a config file does not matter.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`, or a single
/// address as `/32` or `/128`). Host bits are cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `addr/prefix`; an IPv4-mapped IPv6 network becomes the IPv4 one.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<IpNet, String> {
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && prefix >= 96 => (
                IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
                prefix - 96,
            ),
            other => (other, prefix),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} bits"));
        }
        Ok(IpNet {
            addr: mask(addr, prefix),
            prefix,
        })
    }

    /// One address.
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        IpNet { addr, prefix }
    }

    /// Parses `1.2.3.4`, `10.0.0.0/8`, `10.0.0.0 255.0.0.0` (address and subnet mask),
    /// `::1`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        if let Some((addr, len)) = s.split_once('/') {
            let addr = parse_addr(addr.trim())?;
            let len: u8 = len
                .trim()
                .parse()
                .map_err(|_| format!("{len:?} is not a prefix length"))?;
            return IpNet::new(addr, len);
        }
        if let Some((addr, mask)) = s.split_once(char::is_whitespace) {
            let addr = parse_addr(addr)?;
            let mask = parse_addr(mask.trim())?;
            return IpNet::with_mask(addr, mask);
        }
        Ok(IpNet::host(parse_addr(s)?))
    }

    /// An address and a subnet mask of the same family; the mask must be contiguous.
    pub fn with_mask(addr: IpAddr, mask: IpAddr) -> Result<IpNet, String> {
        let (bits, width) = match (addr, mask) {
            (IpAddr::V4(_), IpAddr::V4(m)) => (u128::from(u32::from(m)) << 96, 32),
            (IpAddr::V6(_), IpAddr::V6(m)) => (u128::from(m), 128),
            _ => return Err(format!("{mask} is not a mask for {addr}")),
        };
        let ones = bits.leading_ones();
        if bits.checked_shl(ones).unwrap_or(0) != 0 {
            return Err(format!("{mask} is not a contiguous subnet mask"));
        }
        IpNet::new(addr, ones.min(width) as u8)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }
}

impl std::fmt::Display for IpNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address"))
}

/// `addr` with everything after the first `prefix` bits cleared.
pub(crate) fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep))
        }
        IpAddr::V6(a) => {
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
        }
    }
}

/// One entry: a network and whether it is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRule {
    pub net: IpNet,
    pub allow: bool,
}

/// What a denied client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DenyAction {
    /// `421 Service not available` and close.
    #[default]
    Refuse421,
    /// `530 Not logged in` and close.
    Refuse530,
    /// Close without a word.
    Drop,
}

impl DenyAction {
    /// The bytes to send before closing (empty for `Drop`).
    pub fn reply(self) -> &'static [u8] {
        match self {
            DenyAction::Refuse421 => b"421 Access denied for your address.\r\n",
            DenyAction::Refuse530 => b"530 Access denied for your address.\r\n",
            DenyAction::Drop => b"",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            DenyAction::Refuse421 => 421,
            DenyAction::Refuse530 => 530,
            DenyAction::Drop => 0,
        }
    }
}

/// A host-name entry (reverse DNS): one host (`ftp.example.com`) or every host below a
/// domain (`*.example.com`, which does not match `example.com` itself). Compared
/// case-insensitively, a trailing dot ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host name, lower case.
    Exact(String),
    /// Names ending in this suffix, lower case, with its leading dot (`.example.com`).
    Below(String),
}

impl HostPattern {
    /// Parses `host.example.com` or `*.example.com`: labels of letters, digits and `-`
    /// (and `_`, which some PTR records carry), 1 to 63 characters, at most 253 in all.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (below, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, t),
        };
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{s:?} is not a host name like \"ftp.example.com\" or \"*.example.com\""
            ));
        }
        if name.parse::<IpAddr>().is_ok() || name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(format!("{s:?} looks like an address, not a host name"));
        }
        Ok(if below {
            HostPattern::Below(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether `name` (as a resolver gives it: any case, maybe a trailing dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        match self {
            HostPattern::Exact(h) => name.eq_ignore_ascii_case(h),
            HostPattern::Below(suffix) => {
                name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    /// How specific the entry is: an exact host beats any wildcard, and a longer
    /// wildcard suffix beats a shorter one.
    fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Below(suffix) => (1, suffix.len()),
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Below(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// One host-name entry and whether it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRule {
    pub host: HostPattern,
    pub allow: bool,
}

/// A set of IP rules and the default for unlisted clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRules {
    /// Whether an address no rule matches is allowed (IIS `allowUnlisted`).
    pub allow_unlisted: bool,
    pub rules: Vec<IpRule>,
    /// Host-name entries, judged against the client's reverse-DNS name (confirmed by a
    /// forward lookup); only used with `reverse_dns`.
    pub domains: Vec<DomainRule>,
    /// Whether to look the client's name up for `domains` (IIS `enableReverseDns`; off).
    pub reverse_dns: bool,
    pub deny_action: DenyAction,
}

impl Default for IpRules {
    fn default() -> Self {
        IpRules {
            allow_unlisted: true,
            rules: Vec::new(),
            domains: Vec::new(),
            reverse_dns: false,
            deny_action: DenyAction::default(),
        }
    }
}

/// How specific a matching entry is; the greatest decides (deny on a tie): a single
/// address, then an exact host name, then a wildcard domain (longer first), then
/// networks (longer prefix first).
type Rank = (u8, usize);

impl IpRules {
    /// Whether `ip` may connect, judged by address only (a client without a name).
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allows_named(ip, None)
    }

    /// Whether `ip`, known as `name` (its confirmed reverse-DNS name, if any), may
    /// connect: the most specific matching entry decides (see [`IpRules`]), deny on a
    /// tie, `allow_unlisted` when nothing matches.
    pub fn allows_named(&self, ip: IpAddr, name: Option<&str>) -> bool {
        let by_addr = self
            .best_match(ip)
            .map(|r| (Self::addr_rank(r), !r.allow, r.allow));
        let by_name = name
            .filter(|_| self.reverse_dns)
            .and_then(|name| {
                self.domains
                    .iter()
                    .filter(|d| d.host.matches(name))
                    .max_by_key(|d| (d.host.rank(), !d.allow))
            })
            .map(|d| (d.host.rank(), !d.allow, d.allow));
        match (by_addr, by_name) {
            (Some(a), Some(n)) => a.max(n).2,
            (Some((.., allow)), None) | (None, Some((.., allow))) => allow,
            (None, None) => self.allow_unlisted,
        }
    }

    /// Whether the client's name could change the verdict for `ip`: reverse DNS is on,
    /// there are host-name entries, and no single-address entry decides already.
    pub fn needs_name(&self, ip: IpAddr) -> bool {
        self.reverse_dns
            && !self.domains.is_empty()
            && self.best_match(ip).is_none_or(|r| Self::addr_rank(r).0 < 3)
    }

    fn addr_rank(rule: &IpRule) -> Rank {
        let full = if rule.net.addr().is_ipv4() { 32 } else { 128 };
        let class = if rule.net.prefix() == full { 3 } else { 0 };
        (class, usize::from(rule.net.prefix()))
    }

    /// Whether an explicit allow entry matches `ip` (and decides for it), which exempts
    /// it from logon restrictions as in IIS.
    pub fn explicitly_allows(&self, ip: IpAddr) -> bool {
        self.best_match(ip).is_some_and(|rule| rule.allow)
    }

    fn best_match(&self, ip: IpAddr) -> Option<&IpRule> {
        self.rules
            .iter()
            .filter(|r| r.net.contains(ip))
            .max_by_key(|r| (r.net.prefix(), !r.allow))
    }

    /// Whether these rules can refuse anyone (so an unrestricted site skips them).
    pub fn restricts(&self) -> bool {
        !self.allow_unlisted
            || self.rules.iter().any(|r| !r.allow)
            || (self.reverse_dns && self.domains.iter().any(|d| !d.allow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_notation() {
        let table = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("10.0.0.0 255.0.0.0", "10.0.0.0/8"),
            ("192.168.1.0  255.255.255.128", "192.168.1.0/25"),
            ("127.0.0.1", "127.0.0.1/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("::1", "::1/128"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8::1 ffff:ffff::", "2001:db8::/32"),
            ("::ffff:10.0.0.1", "10.0.0.1/32"),
            ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
        ];
        for (text, want) in table {
            assert_eq!(IpNet::parse(text).unwrap().to_string(), want, "{text}");
        }
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "x",
            "10.0.0.0 255.0.255.0",
            "10.0.0.0 ffff::",
            "not-an-ip",
            "10.0.0.0/x",
            "",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn contains_judges_mapped_addresses_as_ipv4() {
        let net = IpNet::parse("10.0.0.0/8").unwrap();
        assert!(net.contains(ip("10.200.3.4")));
        assert!(net.contains(ip("::ffff:10.200.3.4")));
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(
            !net.contains(ip("::a00:1")),
            "IPv4-compatible is not mapped"
        );
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!IpNet::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
        let host = IpNet::parse("192.168.1.5").unwrap();
        assert!(host.contains(ip("192.168.1.5")) && !host.contains(ip("192.168.1.6")));
        assert!(IpNet::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        let all6 = IpNet::parse("::/0").unwrap();
        assert!(all6.contains(ip("2001:db8::1")));
        assert!(
            !all6.contains(ip("::ffff:10.0.0.1")),
            "a mapped address is IPv4"
        );
        // A mapped network is the IPv4 one, whichever way it is written.
        let mapped = IpNet::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.1.2.3")) && mapped.contains(ip("::ffff:10.1.2.3")));
        assert!(!mapped.contains(ip("11.0.0.1")));
    }

    #[test]
    fn most_specific_rule_decides() {
        let rules = IpRules {
            allow_unlisted: false,
            rules: vec![
                IpRule {
                    net: IpNet::parse("10.0.0.0/8").unwrap(),
                    allow: true,
                },
                IpRule {
                    net: IpNet::parse("10.9.0.0/16").unwrap(),
                    allow: false,
                },
                IpRule {
                    net: IpNet::parse("10.9.9.9").unwrap(),
                    allow: true,
                },
                IpRule {
                    net: IpNet::parse("10.8.8.8").unwrap(),
                    allow: true,
                },
                IpRule {
                    net: IpNet::parse("10.8.8.8").unwrap(),
                    allow: false,
                },
            ],
            deny_action: DenyAction::Drop,
            ..IpRules::default()
        };
        let table = [
            ("10.1.1.1", true),
            ("10.9.1.1", false),
            ("10.9.9.9", true),
            ("::ffff:10.9.9.9", true),
            ("10.8.8.8", false),
            ("192.0.2.1", false),
            ("::1", false),
        ];
        for (addr, want) in table {
            assert_eq!(rules.allows(ip(addr)), want, "{addr}");
        }
        assert!(rules.explicitly_allows(ip("10.1.1.1")));
        assert!(!rules.explicitly_allows(ip("192.0.2.1")));
        assert!(!IpRules::default().restricts());
        assert!(IpRules::default().allows(ip("203.0.113.9")));
    }

    fn domain(host: &str, allow: bool) -> DomainRule {
        DomainRule {
            host: HostPattern::parse(host).unwrap(),
            allow,
        }
    }

    #[test]
    fn host_patterns_parse_and_match() {
        let exact = HostPattern::parse("FTP.Example.com.").unwrap();
        assert_eq!(exact.to_string(), "ftp.example.com");
        assert!(exact.matches("ftp.example.com") && exact.matches("FTP.EXAMPLE.COM."));
        assert!(!exact.matches("x.ftp.example.com") && !exact.matches("example.com"));
        let below = HostPattern::parse("*.example.com").unwrap();
        assert_eq!(below.to_string(), "*.example.com");
        for yes in ["a.example.com", "a.b.Example.COM", "a.example.com."] {
            assert!(below.matches(yes), "{yes}");
        }
        for no in [
            "example.com",
            "badexample.com",
            "a.example.com.evil",
            "",
            ".example.com",
        ] {
            assert!(!below.matches(no), "{no}");
        }
        assert!(!below.matches("é") && !exact.matches("ftp.example.cöm"));
        for bad in [
            "",
            "*",
            "*.",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "*.*.com",
            "a.*.com",
            "10.0.0.1",
            "127.1",
            "ex/ample.com",
            &"a".repeat(64),
            &"ab.".repeat(90),
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn names_decide_between_single_addresses_and_networks() {
        let rules = IpRules {
            allow_unlisted: true,
            rules: vec![
                IpRule {
                    net: IpNet::parse("10.0.0.0/8").unwrap(),
                    allow: false,
                },
                IpRule {
                    net: IpNet::parse("10.1.1.1").unwrap(),
                    allow: false,
                },
            ],
            domains: vec![
                domain("*.example.com", false),
                domain("*.ok.example.com", true),
                domain("ftp.ok.example.com", false),
                domain("trusted.example.net", true),
                domain("trusted.example.net", false),
                domain("*.friends.org", true),
            ],
            reverse_dns: true,
            deny_action: DenyAction::Refuse421,
        };
        let table = [
            // (address, name, allowed)
            ("192.0.2.1", None, true),
            ("192.0.2.1", Some("a.example.com"), false),
            ("192.0.2.1", Some("a.ok.example.com"), true),
            ("192.0.2.1", Some("ftp.ok.example.com"), false),
            ("192.0.2.1", Some("trusted.example.net"), false), // deny wins the tie
            ("192.0.2.1", Some("unrelated.org"), true),
            ("10.2.3.4", None, false),
            ("10.2.3.4", Some("x.friends.org"), true), // a name beats a network
            ("10.1.1.1", Some("x.friends.org"), false), // a single address beats a name
        ];
        for (addr, name, want) in table {
            assert_eq!(rules.allows_named(ip(addr), name), want, "{addr} {name:?}");
        }
        assert!(rules.needs_name(ip("192.0.2.1")));
        assert!(rules.needs_name(ip("10.2.3.4")));
        assert!(!rules.needs_name(ip("10.1.1.1")), "its own entry decides");
        // Off (the default), names count for nothing and nothing is looked up.
        let off = IpRules {
            reverse_dns: false,
            ..rules.clone()
        };
        assert!(off.allows_named(ip("192.0.2.1"), Some("a.example.com")));
        assert!(!off.needs_name(ip("192.0.2.1")));
        assert!(!IpRules::default().needs_name(ip("192.0.2.1")));
        // Default deny with only names allowed: a client without a name is refused.
        let names_only = IpRules {
            allow_unlisted: false,
            rules: vec![],
            domains: vec![domain("localhost", true)],
            reverse_dns: true,
            deny_action: DenyAction::Drop,
        };
        assert!(names_only.allows_named(ip("127.0.0.1"), Some("localhost")));
        assert!(!names_only.allows_named(ip("127.0.0.1"), None));
        assert!(names_only.restricts());
    }

    quickcheck! {
        /// A network contains exactly the addresses whose first `prefix` bits match.
        fn prop_contains_is_prefix_match(a: u32, b: u32, prefix: u8) -> bool {
            let prefix = prefix % 33;
            let net = IpNet::new(IpAddr::V4(Ipv4Addr::from(a)), prefix).unwrap();
            let shift = 32 - u32::from(prefix);
            let same = if prefix == 0 { true } else { (a >> shift) == (b >> shift) };
            net.contains(IpAddr::V4(Ipv4Addr::from(b))) == same
        }

        fn prop_v6_contains_is_prefix_match(a: u128, b: u128, prefix: u8) -> bool {
            let prefix = prefix % 129;
            let addr = Ipv6Addr::from(a);
            if addr.to_ipv4_mapped().is_some() {
                return true; // judged as IPv4; covered above
            }
            let net = IpNet::new(IpAddr::V6(addr), prefix).unwrap();
            let shift = 128 - u32::from(prefix);
            let same = prefix == 0 || (a >> shift) == (b >> shift);
            let other = Ipv6Addr::from(b);
            other.to_ipv4_mapped().is_some() || net.contains(IpAddr::V6(other)) == same
        }
    }
}
