//! The simulator's only sources of "randomness" and identity: a seeded SplitMix64
//! generator (one stream per subsystem, so adding a draw in one place does not reshuffle
//! every other) and a hand-written FNV-1a hash (std's hashers are randomly keyed).

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for scheduling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The stream named `name` of the run seeded with `seed`.
    pub fn stream(seed: u64, name: &str) -> Rng {
        let mut h = Fnv::default();
        h.write(name.as_bytes());
        Rng(seed ^ h.finish().rotate_left(17))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (modulo bias is irrelevant here).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub fn upto(&mut self, hi: usize) -> usize {
        self.range(0, hi as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.upto(items.len() - 1)]
    }

    /// File contents that exercise line-end handling: mostly text with CR, LF, CR LF.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        const ALPHABET: &[u8] = b"abcXYZ019 \r\n\r\n\xff\x00";
        (0..len).map(|_| *self.pick(ALPHABET)).collect()
    }
}

/// FNV-1a, 64 bit: a deterministic hash for transcripts and stream names.
#[derive(Debug, Clone)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}
