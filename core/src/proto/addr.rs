//! Data-address codecs: PORT and 227 (`h1,h2,h3,h4,p1,p2`), EPRT (`|1|addr|port|`,
//! `|2|addr|port|`, any delimiter in 33..=126 per RFC 2428) and 229 (`(|||port|)`).

use std::net::{Ipv4Addr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("malformed address")]
    Malformed,
    #[error("unsupported network protocol")]
    UnsupportedFamily,
}

/// Parses PORT's argument.
pub fn parse_port(arg: &str) -> Result<SocketAddr, AddrError> {
    let _ = arg;
    todo!()
}

/// Parses EPRT's argument. Family 1 is IPv4, 2 is IPv6; any other is `UnsupportedFamily`.
pub fn parse_eprt(arg: &str) -> Result<SocketAddr, AddrError> {
    let _ = arg;
    todo!()
}

/// The text of a 227 reply: `Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
pub fn format_pasv(ip: Ipv4Addr, port: u16) -> String {
    let _ = (ip, port);
    todo!()
}

/// The text of a 229 reply: `Entering Extended Passive Mode (|||port|)`.
pub fn format_epsv(port: u16) -> String {
    let _ = port;
    todo!()
}
