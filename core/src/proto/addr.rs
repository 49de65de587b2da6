//! Data-address codecs: PORT and 227 (`h1,h2,h3,h4,p1,p2`), EPRT (`|1|addr|port|`,
//! `|2|addr|port|`, any delimiter in 33..=126 per RFC 2428) and 229 (`(|||port|)`).
//!
//! Port 0 is refused as `Malformed` by both parsers: nothing can be reached there, and
//! catching it here spares every caller the check.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("malformed address")]
    Malformed,
    #[error("unsupported network protocol")]
    UnsupportedFamily,
}

/// Parses PORT's argument.
///
/// Six decimal numbers in 0..=255 separated by commas, each optionally surrounded by
/// spaces; the last two give the port (`p1 * 256 + p2`), which must not be 0.
pub fn parse_port(arg: &str) -> Result<SocketAddr, AddrError> {
    let mut fields = [0u8; 6];
    let mut parts = arg.split(',');
    for field in &mut fields {
        let part = parts.next().ok_or(AddrError::Malformed)?;
        let value = parse_decimal(part.trim_matches(' ')).ok_or(AddrError::Malformed)?;
        *field = u8::try_from(value).map_err(|_| AddrError::Malformed)?;
    }
    if parts.next().is_some() {
        return Err(AddrError::Malformed);
    }
    let [a, b, c, d, hi, lo] = fields;
    let port = nonzero_port(u32::from(u16::from_be_bytes([hi, lo])))?;
    Ok(SocketAddr::from((Ipv4Addr::new(a, b, c, d), port)))
}

/// Parses EPRT's argument. Family 1 is IPv4, 2 is IPv6; any other is `UnsupportedFamily`.
///
/// A well-formed request for another family is `UnsupportedFamily` whatever its address
/// looks like, so the caller can answer 522 as RFC 2428 asks.
pub fn parse_eprt(arg: &str) -> Result<SocketAddr, AddrError> {
    let arg = arg.trim_matches(' ');
    let delim = arg.chars().next().ok_or(AddrError::Malformed)?;
    if !('!'..='~').contains(&delim) {
        return Err(AddrError::Malformed);
    }
    let mut parts = arg.split(delim);
    let (Some(""), Some(family), Some(addr), Some(port), Some(""), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(AddrError::Malformed);
    };
    let family = parse_decimal(family).ok_or(AddrError::Malformed)?;
    let port = parse_decimal(port).ok_or(AddrError::Malformed)?;
    let ip = match family {
        1 => addr.parse::<Ipv4Addr>().map(Into::into),
        2 => addr.parse::<Ipv6Addr>().map(Into::into),
        _ => return Err(AddrError::UnsupportedFamily),
    };
    let ip: std::net::IpAddr = ip.map_err(|_| AddrError::Malformed)?;
    Ok(SocketAddr::new(ip, nonzero_port(port)?))
}

/// The text of a 227 reply: `Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
pub fn format_pasv(ip: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = ip.octets();
    let [hi, lo] = port.to_be_bytes();
    format!("Entering Passive Mode ({a},{b},{c},{d},{hi},{lo}).")
}

/// The text of a 229 reply: `Entering Extended Passive Mode (|||port|)`.
pub fn format_epsv(port: u16) -> String {
    format!("Entering Extended Passive Mode (|||{port}|)")
}

/// A non-empty run of ASCII digits, saturating well above any valid field. Written by
/// hand because `str::parse` also accepts a leading `+`.
fn parse_decimal(digits: &str) -> Option<u32> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u32, |n, b| {
        n.saturating_mul(10).saturating_add(u32::from(b - b'0'))
    }))
}

fn nonzero_port(port: u32) -> Result<u16, AddrError> {
    match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(AddrError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Result<SocketAddr, AddrError> {
        Ok(s.parse().expect("test address"))
    }

    #[test]
    fn parse_port_table() {
        let malformed = Err(AddrError::Malformed);
        let cases = [
            ("127,0,0,1,4,1", ok("127.0.0.1:1025")),
            ("10,1,2,3,0,21", ok("10.1.2.3:21")),
            ("255,255,255,255,255,255", ok("255.255.255.255:65535")),
            (" 192, 168 ,0,1,  4,1 ", ok("192.168.0.1:1025")),
            ("010,001,0,1,4,1", ok("10.1.0.1:1025")),
            ("127,0,0,1,256,1", malformed.clone()),
            ("127,0,0,1,4,256", malformed.clone()),
            ("256,0,0,1,4,1", malformed.clone()),
            ("127,0,0,1,4", malformed.clone()),
            ("127,0,0,1,4,1,1", malformed.clone()),
            ("127,0,0,1,4,1,", malformed.clone()),
            ("127,0,0,1,,1", malformed.clone()),
            ("127,0,0,1,+4,1", malformed.clone()),
            ("127,0,0,1,-4,1", malformed.clone()),
            ("127,0,0,1,4 1,1", malformed.clone()),
            ("127.0.0.1,4,1", malformed.clone()),
            ("127,0,0,1,0,0", malformed.clone()),
            ("1,2,3,4,5,99999999999999999999", malformed.clone()),
            ("", malformed.clone()),
            ("\u{661},0,0,1,4,1", malformed),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_port(arg), want, "{arg:?}");
        }
    }

    #[test]
    fn parse_eprt_table() {
        let malformed = Err(AddrError::Malformed);
        let unsupported = Err(AddrError::UnsupportedFamily);
        let cases = [
            ("|1|132.235.1.2|6275|", ok("132.235.1.2:6275")),
            (
                "|2|1080::8:800:200C:417A|5282|",
                ok("[1080::8:800:200c:417a]:5282"),
            ),
            ("|2|::1|65535|", ok("[::1]:65535")),
            ("!1!10.0.0.1!21!", ok("10.0.0.1:21")),
            ("~2~::ffff:10.0.0.1~1~", ok("[::ffff:10.0.0.1]:1")),
            (" |1|1.2.3.4|1| ", ok("1.2.3.4:1")),
            ("|3|1.2.3.4|21|", unsupported.clone()),
            ("|3|whatever|21|", unsupported.clone()),
            ("|0|1.2.3.4|21|", unsupported),
            ("|1|::1|21|", malformed.clone()),
            ("|2|1.2.3.4|21|", malformed.clone()),
            ("|1|1.2.3|21|", malformed.clone()),
            ("|1|1.2.3.4|0|", malformed.clone()),
            ("|1|1.2.3.4|65536|", malformed.clone()),
            ("|1|1.2.3.4|+21|", malformed.clone()),
            ("|1|1.2.3.4||", malformed.clone()),
            ("||1.2.3.4|21|", malformed.clone()),
            ("|x|1.2.3.4|21|", malformed.clone()),
            ("|1|1.2.3.4|21", malformed.clone()),
            ("|1|1.2.3.4|21||", malformed.clone()),
            ("1|1|1.2.3.4|21|", malformed.clone()),
            (".1.1.2.3.4.21.", malformed.clone()),
            (" 1 1.2.3.4 21 ", malformed.clone()),
            ("\u{7f}1\u{7f}1.2.3.4\u{7f}21\u{7f}", malformed.clone()),
            ("\u{e9}1\u{e9}1.2.3.4\u{e9}21\u{e9}", malformed.clone()),
            ("|2|fe80::1%eth0|21|", malformed.clone()),
            ("", malformed),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_eprt(arg), want, "{arg:?}");
        }
    }

    #[test]
    fn pasv_and_epsv_text() {
        assert_eq!(
            format_pasv(Ipv4Addr::new(127, 0, 0, 1), 1025),
            "Entering Passive Mode (127,0,0,1,4,1)."
        );
        assert_eq!(
            format_pasv(Ipv4Addr::new(10, 20, 30, 40), 65535),
            "Entering Passive Mode (10,20,30,40,255,255)."
        );
        assert_eq!(
            format_epsv(1025),
            "Entering Extended Passive Mode (|||1025|)"
        );
    }

    #[test]
    fn pasv_text_parses_back_as_port() {
        let text = format_pasv(Ipv4Addr::new(192, 168, 1, 9), 50_000);
        let inner = &text[text.find('(').expect("(") + 1..text.find(')').expect(")")];
        assert_eq!(parse_port(inner), ok("192.168.1.9:50000"));
    }
}
