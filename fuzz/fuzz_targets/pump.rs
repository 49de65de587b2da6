//! The transfer pump driven by an arbitrary schedule: each step a connection or file
//! operation answers with a chunk size, `WouldBlock`, an error, or the end; time jumps;
//! aborts. The spec (direction, TYPE A, size limit, pacing, minimum rate) comes from the
//! first bytes.
//!
//! Invariants: no panic; exactly one `TransferDone`, and nothing from the pump after
//! it; a complete download delivered exactly the (TYPE A encoded) file; a complete
//! upload stored exactly the (decoded) bytes sent; an upload cut at its limit stored
//! exactly the limit's worth of what was sent and reported the limit plus one; no upload
//! ever stores more than its limit.
#![no_main]

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wharf_core::pump::{PumpSpec, Source};
use wharf_core::typea::{FromNetAscii, ToNetAscii};
use wharf_core::*;

/// What each operation does next, from the schedule.
struct Io<'a> {
    ops: &'a [u8],
    incoming: VecDeque<u8>,
    fin: bool,
    sent: Vec<u8>,
    file: Vec<u8>,
    file_at: usize,
    stored: Vec<u8>,
}

impl Io<'_> {
    /// The next answer: `Ok(n)` with `n >= 1`, `WouldBlock`, or an error (0..=255 from
    /// the schedule; an exhausted schedule answers "as much as you like").
    fn next(&mut self) -> Result<usize, io::ErrorKind> {
        let Some((&b, rest)) = self.ops.split_first() else {
            return Ok(usize::MAX);
        };
        self.ops = rest;
        match b {
            0..=9 => Err(io::ErrorKind::WouldBlock),
            10 => Err(io::ErrorKind::Interrupted),
            11 => Err(io::ErrorKind::ConnectionReset),
            12 => Err(io::ErrorKind::Other),
            n => Ok(usize::from(n - 12)),
        }
    }
}

impl DataIo for Io<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.next()?;
        if self.incoming.is_empty() {
            return if self.fin { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = n.min(buf.len()).min(self.incoming.len());
        for (b, x) in buf.iter_mut().zip(self.incoming.drain(..n)) {
            *b = x;
        }
        Ok(n)
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.next()?.min(buf.len());
        self.sent.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn read_file(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.next()?.min(buf.len()).min(self.file.len() - self.file_at);
        buf[..n].copy_from_slice(&self.file[self.file_at..self.file_at + n]);
        self.file_at += n;
        Ok(n)
    }
    fn write_file(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.next()?.min(buf.len());
        self.stored.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((&size, rest)) = rest.split_first() else { return };
    let (body, ops) = rest.split_at(rest.len().min(usize::from(size) * 4));
    let upload = flags & 1 != 0;
    let ascii = flags & 2 != 0;
    let limit = (flags & 4 != 0).then(|| u64::from(size) * 2);
    let rate = (flags & 8 != 0).then_some(1000 + u64::from(size) * 100);
    let min_rate = (flags & 16 != 0).then_some(100);
    let start = Instant::now();
    let spec = PumpSpec {
        source: if upload { Source::Upload } else { Source::File },
        ascii,
        tls: None,
        rate_limit: rate,
        max_bytes: limit,
        stall: Duration::from_secs(5),
        min_rate,
    };
    let mut pump = Pump::new(TransferId(1), spec, start);
    pump.set_buffer_size(4096);
    let mut io = Io {
        ops,
        incoming: VecDeque::new(),
        fin: false,
        sent: Vec::new(),
        file: if upload { Vec::new() } else { body.to_vec() },
        file_at: 0,
        stored: Vec::new(),
    };
    if upload {
        io.incoming.extend(body);
        io.fin = flags & 32 == 0;
    }
    let mut now = start;
    let mut outcome = None;
    for step in 0..100_000 {
        if flags & 64 != 0 && step == usize::from(size) {
            pump.abort();
        }
        let run = pump.run(now, &mut io, 1 << 16);
        while let Some(input) = pump.poll_input() {
            assert!(outcome.is_none(), "input after TransferDone");
            if let Input::TransferDone { outcome: o, .. } = input {
                outcome = Some(o);
            }
        }
        if run == Run::Done {
            assert!(outcome.is_some(), "Done without TransferDone");
            break;
        }
        // Time goes on: to the pump's deadline, or a little, as the schedule says.
        now = match (io.ops.first(), pump.poll_timeout()) {
            (Some(&b), _) if b % 3 == 0 => now + Duration::from_millis(u64::from(b)),
            (_, Some(t)) => t.max(now),
            _ => now + Duration::from_secs(1),
        };
        pump.handle_timeout(now);
    }
    let outcome = outcome.expect("the pump ended");
    assert!(pump.poll_input().is_none());
    if let Some(max) = limit.filter(|_| upload) {
        let mut fed = Vec::new();
        let mut dec = FromNetAscii::default();
        let kept = &body[..body.len().min(max as usize)];
        if ascii {
            dec.decode(kept, &mut fed);
        } else {
            fed.extend_from_slice(kept);
        }
        assert!(io.stored.len() <= fed.len() + 1, "more stored than the limit allows");
        if let TransferOutcome::TooLarge { bytes } = outcome {
            assert_eq!(bytes, max + 1);
            assert!(body.len() as u64 > max);
        }
    }
    if let TransferOutcome::Complete { bytes } = outcome {
        if upload {
            let mut want = Vec::new();
            if ascii {
                let mut dec = FromNetAscii::default();
                dec.decode(body, &mut want);
                dec.finish(&mut want);
            } else {
                want.extend_from_slice(body);
            }
            assert_eq!(bytes, body.len() as u64);
            assert!(io.stored == want, "a complete upload stored other bytes");
        } else {
            let mut want = Vec::new();
            if ascii {
                ToNetAscii::default().encode(body, &mut want);
            } else {
                want.extend_from_slice(body);
            }
            assert!(io.sent == want, "a complete download sent other bytes");
            assert_eq!(bytes, want.len() as u64);
        }
    }
});
