//! The TYPE A codecs: chunking never changes the output, and decoding an encoding gives
//! back the input when it holds no bare CR.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_core::typea::{FromNetAscii, ToNetAscii};

fn encode(data: &[u8], cut: usize) -> Vec<u8> {
    let mut enc = ToNetAscii::default();
    let mut out = Vec::new();
    data.chunks(cut.max(1)).for_each(|c| enc.encode(c, &mut out));
    out
}

fn decode(data: &[u8], cut: usize) -> Vec<u8> {
    let mut dec = FromNetAscii::default();
    let mut out = Vec::new();
    data.chunks(cut.max(1)).for_each(|c| dec.decode(c, &mut out));
    dec.finish(&mut out);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let cut = usize::from(cut % 8);
    let net = encode(data, data.len());
    assert_eq!(net, encode(data, cut));
    assert_eq!(decode(data, data.len()), decode(data, cut));
    if !data.contains(&b'\r') {
        assert_eq!(decode(&net, cut), data);
    }
});
