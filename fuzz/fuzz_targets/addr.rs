//! PORT and EPRT parsing: no panic, no port 0, and 227 replies parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_core::proto::addr::{format_pasv, parse_eprt, parse_port};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parsed in [parse_port(text), parse_eprt(text)] {
        if let Ok(addr) = parsed {
            assert_ne!(addr.port(), 0);
        }
    }
    if let Ok(addr) = parse_port(text) {
        if let std::net::IpAddr::V4(ip) = addr.ip() {
            let reply = format_pasv(ip, addr.port());
            let inner = reply.split(['(', ')']).nth(1).expect("227 has parentheses");
            assert_eq!(parse_port(inner), Ok(addr));
        }
    }
});
