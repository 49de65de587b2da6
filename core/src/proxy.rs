//! HAProxy's PROXY protocol, versions 1 (text) and 2 (binary): a load balancer that
//! forwards a TCP connection sends one header first, naming the client it came from.
//!
//! [`parse`] is pure and incremental: given the bytes received so far it says the header
//! is complete (and how long it is: what follows is the client's), that more bytes are
//! needed, or that these bytes can never begin a header. A stranger's protocol (an FTP
//! command, a TLS ClientHello) is refused at its first byte that no header could have,
//! not after a timeout. [`ProxyRules`] says which connections must carry one.
//!
//! The encoders ([`encode_v1`], [`encode_v2`]) exist for tests, the fuzz target and the
//! benchmarks: the server never sends a header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::policy::IpNet;

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 header, CRLF included (the specification's limit).
pub const V1_MAX: usize = 107;
/// The longest version 2 header accepted: the fixed 16 bytes, the addresses and this
/// much room for TLVs (HAProxy's own fit in a few hundred bytes).
pub const V2_MAX: usize = 16 + 2048;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The connection was forwarded from `source` to the balancer's `destination`.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// The balancer speaks for itself (version 2 `LOCAL`, a health check) or forwards a
    /// protocol without addresses (`UNKNOWN`, `AF_UNSPEC`, `AF_UNIX`): the connection's
    /// own addresses stand.
    Local,
}

impl ProxyHeader {
    /// The client's address: the carried source, or `peer` for [`ProxyHeader::Local`].
    pub fn source_or(&self, peer: SocketAddr) -> SocketAddr {
        match self {
            ProxyHeader::Proxied { source, .. } => *source,
            ProxyHeader::Local => peer,
        }
    }
}

/// The verdict on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A header of `len` bytes; the bytes after it belong to the client.
    Done { header: ProxyHeader, len: usize },
    /// Every byte so far fits a header; more are needed.
    Incomplete,
    /// No header starts like this (or it is too long).
    Invalid(&'static str),
}

/// Judges the start of a connection's byte stream.
pub fn parse(bytes: &[u8]) -> Parsed {
    let Some(&first) = bytes.first() else {
        return Parsed::Incomplete;
    };
    match first {
        b'P' => parse_v1(bytes),
        b'\r' => parse_v2(bytes),
        _ => Parsed::Invalid("not a PROXY protocol header"),
    }
}

fn parse_v1(bytes: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    let n = bytes.len().min(PREFIX.len());
    if bytes[..n] != PREFIX[..n] {
        return Parsed::Invalid("not a PROXY protocol header");
    }
    let window = &bytes[..bytes.len().min(V1_MAX)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        if bytes.len() >= V1_MAX {
            return Parsed::Invalid("version 1 header longer than 107 bytes");
        }
        if window.contains(&b'\n') {
            return Parsed::Invalid("version 1 header ends without CR");
        }
        return Parsed::Incomplete;
    };
    match window.get(cr + 1) {
        None if cr + 1 < V1_MAX => return Parsed::Incomplete,
        Some(b'\n') => {}
        _ => return Parsed::Invalid("version 1 header ends without CRLF"),
    }
    if cr < PREFIX.len() {
        return Parsed::Invalid("version 1 header too short");
    }
    let Ok(line) = std::str::from_utf8(&bytes[PREFIX.len()..cr]) else {
        return Parsed::Invalid("version 1 header is not text");
    };
    match v1_fields(line) {
        Ok(header) => Parsed::Done {
            header,
            len: cr + 2,
        },
        Err(why) => Parsed::Invalid(why),
    }
}

/// `TCP4 src dst sport dport`, `TCP6 ...` or `UNKNOWN[ anything]`.
fn v1_fields(line: &str) -> Result<ProxyHeader, &'static str> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Ok(ProxyHeader::Local);
    }
    let mut fields = line.split(' ');
    let proto = fields.next().unwrap_or_default();
    let (src, dst, sport, dport) = match (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) {
        (Some(a), Some(b), Some(c), Some(d), None) => (a, b, c, d),
        _ => return Err("version 1 header needs exactly four fields after the protocol"),
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (
            IpAddr::V4(src.parse().map_err(|_| "bad IPv4 source")?),
            IpAddr::V4(dst.parse().map_err(|_| "bad IPv4 destination")?),
        ),
        "TCP6" => (
            IpAddr::V6(src.parse().map_err(|_| "bad IPv6 source")?),
            IpAddr::V6(dst.parse().map_err(|_| "bad IPv6 destination")?),
        ),
        _ => return Err("version 1 protocol is not TCP4, TCP6 or UNKNOWN"),
    };
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(src, v1_port(sport)?),
        destination: SocketAddr::new(dst, v1_port(dport)?),
    })
}

/// A decimal port, without sign or leading zeros (the specification's form).
fn v1_port(s: &str) -> Result<u16, &'static str> {
    let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits || (s.len() > 1 && s.starts_with('0')) {
        return Err("bad port in version 1 header");
    }
    s.parse().map_err(|_| "bad port in version 1 header")
}

fn parse_v2(bytes: &[u8]) -> Parsed {
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Parsed::Invalid("not a PROXY protocol header");
    }
    let Some(&[ver_cmd, fam, hi, lo]) = bytes.get(12..16) else {
        return match bytes.get(12) {
            Some(v) if v >> 4 != 2 => Parsed::Invalid("PROXY protocol version is not 2"),
            _ => Parsed::Incomplete,
        };
    };
    if ver_cmd >> 4 != 2 {
        return Parsed::Invalid("PROXY protocol version is not 2");
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid("version 2 command is neither LOCAL nor PROXY"),
    };
    let body = usize::from(u16::from_be_bytes([hi, lo]));
    let len = 16 + body;
    if len > V2_MAX {
        return Parsed::Invalid("version 2 header too long");
    }
    let need = match fam {
        0x11 => 12,
        0x21 => 36,
        _ => 0,
    };
    if body < need {
        return Parsed::Invalid("version 2 address block too short");
    }
    let Some(block) = bytes.get(16..len) else {
        return Parsed::Incomplete;
    };
    let header = match (local, fam >> 4, fam & 0x0f) {
        (true, _, _) => ProxyHeader::Local,
        // Without a protocol (or for a Unix socket) the addresses are not the client's.
        (false, 0 | 3, _) => ProxyHeader::Local,
        (false, 1 | 2, 1) => v2_addresses(fam, block),
        (false, 1 | 2, _) => return Parsed::Invalid("version 2 transport is not a stream"),
        _ => return Parsed::Invalid("version 2 address family unknown"),
    };
    Parsed::Done { header, len }
}

/// The addresses of a `PROXY` command over TCP (family checked by the caller, the block
/// long enough for it).
fn v2_addresses(fam: u8, b: &[u8]) -> ProxyHeader {
    let port = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let (src, dst, ports): (IpAddr, IpAddr, usize) = if fam == 0x11 {
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        (ip(0).into(), ip(4).into(), 8)
    } else {
        let ip = |i: usize| {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[i..i + 16]);
            Ipv6Addr::from(o)
        };
        (ip(0).into(), ip(16).into(), 32)
    };
    ProxyHeader::Proxied {
        source: SocketAddr::new(src, port(ports)),
        destination: SocketAddr::new(dst, port(ports + 2)),
    }
}

/// A version 1 header for a TCP connection from `source` to `destination` (of one
/// family; a mixed pair is sent as `UNKNOWN`).
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let line = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => format!("TCP4 {s} {d}"),
        (IpAddr::V6(s), IpAddr::V6(d)) => format!("TCP6 {s} {d}"),
        _ => return b"PROXY UNKNOWN\r\n".to_vec(),
    };
    let ports = format!(" {} {}", source.port(), destination.port());
    format!("PROXY {line}{ports}\r\n").into_bytes()
}

/// A version 2 `PROXY` header over TCP from `source` to `destination` (of one family;
/// a mixed pair is sent as `AF_UNSPEC`), followed by `tlvs` (raw type-length-value
/// bytes, which receivers skip).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut block = Vec::new();
    let fam = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            block.extend_from_slice(&s.octets());
            block.extend_from_slice(&d.octets());
            0x21
        }
        _ => 0x00,
    };
    if fam != 0 {
        block.extend_from_slice(&source.port().to_be_bytes());
        block.extend_from_slice(&destination.port().to_be_bytes());
    }
    block.extend_from_slice(tlvs);
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    out.push(fam);
    let len = u16::try_from(block.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&block[..usize::from(len)]);
    out
}

/// A version 2 `LOCAL` header (what a balancer's health check sends).
pub fn encode_v2_local() -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    out
}

/// The default of [`ProxyRules::header_timeout`]: a balancer sends its header with the
/// connection's first segment; anything slower is not a balancer.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Which control connections start with a PROXY header, and whose headers count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRules {
    /// The balancers: only connections from these may (and must) send a header. Empty:
    /// the PROXY protocol is off.
    pub from: Vec<IpNet>,
    /// The control addresses (as bound) whose connections carry a header; empty: every
    /// control address.
    pub addresses: Vec<SocketAddr>,
    /// A connection whose header is not complete by then is closed.
    pub header_timeout: Duration,
}

impl Default for ProxyRules {
    fn default() -> Self {
        ProxyRules {
            from: Vec::new(),
            addresses: Vec::new(),
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

impl ProxyRules {
    /// Whether a control connection reaching `local` starts with a header.
    pub fn expects_header(&self, local: SocketAddr) -> bool {
        !self.from.is_empty() && (self.addresses.is_empty() || self.addresses.contains(&local))
    }

    /// Whether `ip` is a balancer allowed to send a header.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.from.iter().any(|net| net.contains(ip))
    }
}

#[cfg(test)]
mod tests;
