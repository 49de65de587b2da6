//! TYPE A (ASCII) conversion as streaming codecs: LF to CR LF on the way out, CR LF to
//! LF on the way in, correct whatever chunk boundaries the bytes arrive in.

/// Download direction: every LF not already preceded by CR becomes CR LF.
#[derive(Debug, Default, Clone)]
pub struct ToNetAscii {
    _todo: (),
}

impl ToNetAscii {
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out);
        todo!()
    }
}

/// Upload direction: CR LF becomes LF; a CR not followed by LF is kept.
#[derive(Debug, Default, Clone)]
pub struct FromNetAscii {
    _todo: (),
}

impl FromNetAscii {
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let _ = (input, out);
        todo!()
    }

    /// Flushes a CR held back at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}
