//! The PROXY protocol header parser: no panic; a verdict never changes as more bytes
//! arrive (so any split of the stream gives the same header); a complete header never
//! claims more bytes than it was given; and a carried address encodes back to a header
//! that parses to the same addresses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_core::proxy::{encode_v1, encode_v2, parse, Parsed, ProxyHeader};

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Parsed::Done { len, header } = whole {
        assert!(len <= data.len());
        assert_eq!(parse(&data[..len]), whole);
        if let ProxyHeader::Proxied { source, destination } = header {
            for encoded in [encode_v1(source, destination), encode_v2(source, destination, &[])] {
                let again = parse(&encoded);
                assert_eq!(again, Parsed::Done { header, len: encoded.len() });
            }
        }
    }
    // Every prefix is either still incomplete or already what the whole says.
    for cut in 0..data.len().min(300) {
        match parse(&data[..cut]) {
            Parsed::Incomplete => {}
            Parsed::Invalid(_) => assert!(matches!(whole, Parsed::Invalid(_))),
            done => assert_eq!(done, whole),
        }
    }
});
