//! A token bucket for bandwidth limits. The core decides the rate (per site, per user)
//! and hands it to the driver in `TransferSpec::rate_limit`; the driver's data pump keeps
//! one of these per transfer and asks it how much it may move now. Pure: time is passed in.

use std::time::{Duration, Instant};

/// `rate` bytes per second, with bursts of up to `burst` bytes. Moving more than was
/// granted (a driver moves whole buffers) goes into debt, repaid before anything more is
/// granted, so the long-run rate holds exactly.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    /// Bytes available; negative when in debt.
    tokens: i128,
    last: Instant,
}

const NANOS: i128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket. The burst is a quarter second of traffic, at least 4 KiB.
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        let rate = rate.max(1);
        let burst = (rate / 4).max(4096);
        TokenBucket {
            rate,
            burst,
            tokens: i128::from(burst),
            last: now,
        }
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        let earned = elapsed.as_nanos() as i128 * i128::from(self.rate) / NANOS;
        if earned == 0 {
            return;
        }
        // Advance `last` only by the time the earned bytes took, so fractions carry over.
        let used = Duration::from_nanos((earned * NANOS / i128::from(self.rate)) as u64);
        self.last += used;
        self.tokens = (self.tokens + earned).min(i128::from(self.burst));
        if self.tokens == i128::from(self.burst) {
            self.last = now;
        }
    }

    /// How many bytes may move now (0 while in debt or empty).
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.max(0) as u64
    }

    /// Records `bytes` moved (possibly more than was available).
    pub fn consume(&mut self, now: Instant, bytes: u64) {
        self.refill(now);
        self.tokens -= i128::from(bytes);
    }

    /// When at least one byte will be available again.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens > 0 {
            return now;
        }
        let missing = 1 - self.tokens;
        let rate = i128::from(self.rate);
        let nanos = (missing * NANOS + rate - 1) / rate;
        self.last + Duration::from_nanos(nanos.min(i128::from(u64::MAX)) as u64)
    }
}
