//! TYPE A (ASCII) conversion as streaming codecs: LF to CR LF on the way out, CR LF to
//! LF on the way in, correct whatever chunk boundaries the bytes arrive in.
//!
//! Both work on runs between line-end bytes, copying whole slices rather than pushing
//! byte by byte.

/// Download direction: every LF not already preceded by CR becomes CR LF.
#[derive(Debug, Default, Clone)]
pub struct ToNetAscii {
    /// The last byte of the previous chunk was CR, so an LF opening this one is already
    /// preceded by CR.
    after_cr: bool,
}

impl ToNetAscii {
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        // Typical text has a line every few dozen bytes; guess a little over.
        out.reserve(input.len() + input.len() / 32 + 1);
        let mut start = 0;
        let mut from = 0;
        while let Some(found) = input[from..].iter().position(|&b| b == b'\n') {
            let lf = from + found;
            let preceded = match lf.checked_sub(1) {
                Some(before) => input[before] == b'\r',
                None => self.after_cr,
            };
            if !preceded {
                out.extend_from_slice(&input[start..lf]);
                out.push(b'\r');
                // The LF itself opens the next run.
                start = lf;
            }
            from = lf + 1;
        }
        out.extend_from_slice(&input[start..]);
        self.after_cr = last == b'\r';
    }
}

/// Upload direction: CR LF becomes LF; a CR not followed by LF is kept.
#[derive(Debug, Default, Clone)]
pub struct FromNetAscii {
    /// The previous chunk ended in CR, not yet written: it vanishes if an LF follows.
    held_cr: bool,
}

impl FromNetAscii {
    pub fn decode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        out.reserve(input.len() + 1);
        if std::mem::replace(&mut self.held_cr, false) && input[0] != b'\n' {
            out.push(b'\r');
        }
        // Strip a trailing CR now; whether it is kept depends on the next chunk.
        if let [head @ .., b'\r'] = input {
            self.held_cr = true;
            input = head;
        }
        let mut start = 0;
        let mut from = 0;
        while let Some(found) = input[from..].iter().position(|&b| b == b'\r') {
            let cr = from + found;
            if input.get(cr + 1) == Some(&b'\n') {
                out.extend_from_slice(&input[start..cr]);
                start = cr + 1;
            }
            from = cr + 1;
        }
        out.extend_from_slice(&input[start..]);
    }

    /// Flushes a CR held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::replace(&mut self.held_cr, false) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn encode_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        let mut codec = ToNetAscii::default();
        let mut out = Vec::new();
        for chunk in chunks {
            codec.encode(chunk, &mut out);
        }
        out
    }

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<u8> {
        let mut codec = FromNetAscii::default();
        let mut out = Vec::new();
        for chunk in chunks {
            codec.decode(chunk, &mut out);
        }
        codec.finish(&mut out);
        out
    }

    #[test]
    fn encode_table() {
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[b""], b""),
            (&[b"abc"], b"abc"),
            (&[b"a\nb\n"], b"a\r\nb\r\n"),
            (&[b"\n\n"], b"\r\n\r\n"),
            (&[b"a\r\nb"], b"a\r\nb"),
            (&[b"a\r", b"\nb"], b"a\r\nb"),
            (&[b"a\r", b"", b"\nb"], b"a\r\nb"),
            (&[b"a", b"\n"], b"a\r\n"),
            (&[b"\r\r\n\r"], b"\r\r\n\r"),
            (&[b"x\r", b"y", b"\n"], b"x\ry\r\n"),
        ];
        for (chunks, want) in cases {
            assert_eq!(encode_chunks(chunks), *want, "{chunks:?}");
        }
    }

    #[test]
    fn decode_table() {
        let cases: &[(&[&[u8]], &[u8])] = &[
            (&[b""], b""),
            (&[b"abc"], b"abc"),
            (&[b"a\r\nb\r\n"], b"a\nb\n"),
            (&[b"a\nb"], b"a\nb"),
            (&[b"a\rb"], b"a\rb"),
            (&[b"a\r\r\n"], b"a\r\n"),
            (&[b"a\r", b"\nb"], b"a\nb"),
            (&[b"a\r", b"", b"\nb"], b"a\nb"),
            (&[b"a\r", b"b"], b"a\rb"),
            (&[b"a\r", b"\r", b"\n"], b"a\r\n"),
            (&[b"a\r"], b"a\r"),
            (&[b"\r"], b"\r"),
        ];
        for (chunks, want) in cases {
            assert_eq!(decode_chunks(chunks), *want, "{chunks:?}");
        }
    }

    #[test]
    fn trailing_cr_is_held_until_finish() {
        let mut codec = FromNetAscii::default();
        let mut out = Vec::new();
        codec.decode(b"end\r", &mut out);
        assert_eq!(out, b"end");
        codec.finish(&mut out);
        assert_eq!(out, b"end\r");
        codec.finish(&mut out);
        assert_eq!(out, b"end\r");
    }

    /// Bytes drawn mostly from the line-end ones.
    fn texty(raw: &[u8], allow_cr: bool) -> Vec<u8> {
        raw.iter()
            .map(|&b| match b % 4 {
                0 => b'\n',
                1 if allow_cr => b'\r',
                _ => b,
            })
            .filter(|&b| allow_cr || b != b'\r')
            .collect()
    }

    fn chunked<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = data;
        for &size in sizes.iter().chain(std::iter::once(&u8::MAX)) {
            let (chunk, tail) = rest.split_at(usize::from(size % 8).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks.push(rest);
        chunks
    }

    #[test]
    fn prop_round_trip_without_cr() {
        fn prop(raw: Vec<u8>) -> bool {
            let text = texty(&raw, false);
            decode_chunks(&[&encode_chunks(&[&text])]) == text
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
    }

    #[test]
    fn prop_chunking_does_not_change_output() {
        fn prop(raw: Vec<u8>, sizes: Vec<u8>) -> bool {
            let data = texty(&raw, true);
            let chunks = chunked(&data, &sizes);
            let bytewise: Vec<&[u8]> = data.chunks(1).collect();
            let encoded = encode_chunks(&[&data]);
            let decoded = decode_chunks(&[&data]);
            encoded == encode_chunks(&chunks)
                && encoded == encode_chunks(&bytewise)
                && decoded == decode_chunks(&chunks)
                && decoded == decode_chunks(&bytewise)
        }
        quickcheck(prop as fn(Vec<u8>, Vec<u8>) -> bool);
    }

    #[test]
    fn prop_encoded_lfs_all_follow_cr() {
        fn prop(raw: Vec<u8>) -> bool {
            let encoded = encode_chunks(&[&texty(&raw, true)]);
            encoded
                .iter()
                .enumerate()
                .all(|(i, &b)| b != b'\n' || (i > 0 && encoded[i - 1] == b'\r'))
        }
        quickcheck(prop as fn(Vec<u8>) -> bool);
    }
}
