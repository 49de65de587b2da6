use super::*;
use quickcheck::{quickcheck, Arbitrary, Gen, TestResult};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn done(bytes: &[u8]) -> (ProxyHeader, usize) {
    match parse(bytes) {
        Parsed::Done { header, len } => (header, len),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bytes)),
    }
}

fn invalid(bytes: &[u8]) -> bool {
    matches!(parse(bytes), Parsed::Invalid(_))
}

#[test]
fn v1_tcp4_and_tcp6() {
    let h = b"PROXY TCP4 192.0.2.7 127.0.0.11 51234 21\r\nUSER a\r\n";
    let (header, len) = done(h);
    assert_eq!(len, h.len() - 8);
    let want = ProxyHeader::Proxied {
        source: addr("192.0.2.7:51234"),
        destination: addr("127.0.0.11:21"),
    };
    assert_eq!(header, want);
    let h = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    let (header, len) = done(h);
    assert_eq!(len, h.len());
    assert_eq!(
        header.source_or(addr("127.0.0.1:1")),
        addr("[2001:db8::1]:65535")
    );
}

#[test]
fn v1_unknown_keeps_the_connection_addresses() {
    assert_eq!(done(b"PROXY UNKNOWN\r\n").0, ProxyHeader::Local);
    assert_eq!(done(b"PROXY UNKNOWN ::1 ::2 1 2\r\n").0, ProxyHeader::Local);
    let peer = addr("10.0.0.1:5");
    assert_eq!(ProxyHeader::Local.source_or(peer), peer);
}

#[test]
fn v1_refusals() {
    for bad in [
        &b"USER anonymous\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \r\n",
        b"PROXY\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\x16\x03\x01\x02\x00",
    ] {
        assert!(invalid(bad), "{:?}", String::from_utf8_lossy(bad));
    }
    // 107 bytes without a CRLF can never become a header.
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX, b'x');
    assert!(invalid(&long));
    long.truncate(V1_MAX - 1);
    assert_eq!(parse(&long), Parsed::Incomplete);
}

#[test]
fn v2_local_unspec_and_unix() {
    assert_eq!(done(&encode_v2_local()), (ProxyHeader::Local, 16));
    let mut unix = V2_SIGNATURE.to_vec();
    unix.extend_from_slice(&[0x21, 0x31, 0, 216]);
    unix.resize(16 + 216, 0);
    assert_eq!(done(&unix), (ProxyHeader::Local, 232));
}

#[test]
fn v2_refusals() {
    let good = encode_v2(addr("1.2.3.4:5"), addr("6.7.8.9:10"), &[]);
    let with = |i: usize, b: u8| {
        let mut h = good.clone();
        h[i] = b;
        h
    };
    assert!(invalid(&with(12, 0x11)), "version 1 in a binary header");
    assert!(invalid(&with(12, 0x22)), "command 2");
    assert!(invalid(&with(13, 0x12)), "datagrams");
    assert!(invalid(&with(13, 0x41)), "family 4");
    assert!(invalid(&with(15, 4)), "address block too short for IPv4");
    assert!(invalid(&with(5, b'x')), "signature");
    let mut huge = good[..14].to_vec();
    huge.extend_from_slice(&u16::MAX.to_be_bytes());
    assert!(invalid(&huge));
}

#[test]
fn every_prefix_of_a_header_is_incomplete() {
    let headers = [
        encode_v1(addr("203.0.113.9:40000"), addr("127.0.0.11:2121")),
        encode_v1(addr("[2001:db8::9]:1"), addr("[::1]:2")),
        encode_v2(
            addr("203.0.113.9:40000"),
            addr("127.0.0.11:2121"),
            &[1, 0, 2, b'h', b'2'],
        ),
        encode_v2(addr("[2001:db8::9]:1"), addr("[::1]:2"), &[]),
        encode_v2_local(),
    ];
    for h in headers {
        for cut in 0..h.len() {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "{h:?} cut at {cut}");
        }
        assert_eq!(done(&h).1, h.len());
    }
}

#[test]
fn rules_expect_headers_only_where_configured() {
    let off = ProxyRules::default();
    assert!(!off.expects_header(addr("127.0.0.1:21")));
    let mut rules = ProxyRules {
        from: vec![IpNet::parse("10.0.0.0/8").unwrap()],
        ..ProxyRules::default()
    };
    assert!(rules.expects_header(addr("127.0.0.1:21")));
    assert!(rules.trusts("10.1.2.3".parse().unwrap()));
    assert!(!rules.trusts("11.1.2.3".parse().unwrap()));
    rules.addresses = vec![addr("127.0.0.11:21")];
    assert!(rules.expects_header(addr("127.0.0.11:21")));
    assert!(!rules.expects_header(addr("127.0.0.11:990")));
}

/// Any pair of addresses of one family.
#[derive(Debug, Clone)]
struct Pair(SocketAddr, SocketAddr);

impl Arbitrary for Pair {
    fn arbitrary(g: &mut Gen) -> Pair {
        let v6 = bool::arbitrary(g);
        let ip = |g: &mut Gen| -> IpAddr {
            if v6 {
                Ipv6Addr::from(u128::arbitrary(g)).into()
            } else {
                Ipv4Addr::from(u32::arbitrary(g)).into()
            }
        };
        let a = SocketAddr::new(ip(g), u16::arbitrary(g));
        let b = SocketAddr::new(ip(g), u16::arbitrary(g));
        Pair(a, b)
    }
}

/// TLVs as a balancer may add them: type, 16-bit length, value.
fn tlvs(seed: Vec<(u8, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in seed.into_iter().take(8) {
        let v = &v[..v.len().min(100)];
        out.push(t);
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

quickcheck! {
    /// Encode, append the client's bytes, parse: the same addresses, and the length
    /// leaves exactly the client's bytes.
    fn v1_round_trip(pair: Pair, rest: Vec<u8>) -> bool {
        let mut bytes = encode_v1(pair.0, pair.1);
        let len = bytes.len();
        bytes.extend_from_slice(&rest);
        parse(&bytes) == Parsed::Done {
            header: ProxyHeader::Proxied { source: pair.0, destination: pair.1 },
            len,
        }
    }

    fn v2_round_trip(pair: Pair, tlv: Vec<(u8, Vec<u8>)>, rest: Vec<u8>) -> bool {
        let mut bytes = encode_v2(pair.0, pair.1, &tlvs(tlv));
        let len = bytes.len();
        bytes.extend_from_slice(&rest);
        parse(&bytes) == Parsed::Done {
            header: ProxyHeader::Proxied { source: pair.0, destination: pair.1 },
            len,
        }
    }

    /// A verdict never changes as more bytes arrive (so a driver may judge any prefix),
    /// and a header never claims more bytes than it was given.
    fn verdicts_are_stable(bytes: Vec<u8>, more: Vec<u8>, v2: bool) -> TestResult {
        let mut bytes = bytes;
        if v2 && !bytes.is_empty() {
            // Reach the interesting states past the signature too.
            let mut b = V2_SIGNATURE.to_vec();
            b.extend_from_slice(&bytes);
            bytes = b;
        }
        let first = parse(&bytes);
        let mut longer = bytes.clone();
        longer.extend_from_slice(&more);
        let second = parse(&longer);
        match first {
            Parsed::Incomplete => TestResult::passed(),
            Parsed::Done { len, .. } => TestResult::from_bool(len <= bytes.len() && second == first),
            Parsed::Invalid(_) => TestResult::from_bool(matches!(second, Parsed::Invalid(_))),
        }
    }
}
