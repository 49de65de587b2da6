//! The pump against a scripted connection and file: chunking, short writes, TYPE A, the
//! size cut, pacing, stall, minimum rate, abort, failures on either side.

// The tests are the driver: they may read the clock once for an origin.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use quickcheck::{quickcheck, TestResult};

use wharf_core::backend::FsError;
use wharf_core::ids::TransferId;
use wharf_core::pump::*;
use wharf_core::session::{Input, TransferOutcome};
use wharf_core::typea::{FromNetAscii, ToNetAscii};

/// A scripted data connection and file. The connection's incoming bytes arrive in
/// `chunks`; each write takes at most `write_max`; `blocked_*` make the next operations
/// answer `WouldBlock` (once each).
#[derive(Default)]
struct Script {
    incoming: VecDeque<Vec<u8>>,
    incoming_eof: bool,
    reset_after_incoming: bool,
    sent: Vec<u8>,
    write_max: usize,
    send_blocks: usize,
    recv_blocks: usize,
    shut: bool,
    file_in: Vec<u8>,
    file_at: usize,
    file_read_max: usize,
    file_out: Vec<u8>,
    file_full_at: Option<usize>,
    flushed: bool,
    sendfile: bool,
    sendfile_calls: usize,
}

impl DataIo for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.recv_blocks > 0 {
            self.recv_blocks -= 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.incoming.pop_front() {
            Some(mut chunk) => {
                let n = chunk.len().min(buf.len());
                buf[..n].copy_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    chunk.drain(..n);
                    self.incoming.push_front(chunk);
                }
                Ok(n)
            }
            None if self.reset_after_incoming => Err(io::ErrorKind::ConnectionReset.into()),
            None if self.incoming_eof => Ok(0),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.send_blocks > 0 {
            self.send_blocks -= 1;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.write_max.max(1));
        self.sent.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn shutdown_write(&mut self) {
        self.shut = true;
    }

    fn read_file(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = if self.file_read_max == 0 {
            buf.len()
        } else {
            self.file_read_max
        };
        let n = (self.file_in.len() - self.file_at).min(buf.len()).min(max);
        buf[..n].copy_from_slice(&self.file_in[self.file_at..self.file_at + n]);
        self.file_at += n;
        Ok(n)
    }

    fn write_file(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(full) = self.file_full_at {
            if self.file_out.len() + buf.len() > full {
                return Err(io::Error::from_raw_os_error(28));
            }
        }
        self.file_out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush_file(&mut self) -> io::Result<()> {
        self.flushed = true;
        Ok(())
    }

    fn send_file(&mut self, max: usize) -> Option<io::Result<usize>> {
        if !self.sendfile {
            return None;
        }
        self.sendfile_calls += 1;
        Some(self.read_file(&mut vec![0; max]).inspect(|&n| {
            let at = self.file_at;
            self.sent.extend_from_slice(&self.file_in[at - n..at]);
        }))
    }
}

fn spec(source: Source) -> PumpSpec {
    PumpSpec {
        source,
        ascii: false,
        tls: None,
        rate_limit: None,
        max_bytes: None,
        stall: Duration::from_secs(30),
        min_rate: None,
    }
}

/// Runs the pump to its end, answering every wait at once (time moves by `tick` per
/// wait); returns the outcome and the time it took.
fn drive(
    pump: &mut Pump,
    io: &mut Script,
    start: Instant,
    tick: Duration,
) -> (TransferOutcome, Duration) {
    let mut now = start;
    for _ in 0..1_000_000 {
        match pump.run(now, io, 64 * 1024) {
            Run::Done => {
                let mut done = None;
                while let Some(input) = pump.poll_input() {
                    if let Input::TransferDone { outcome, .. } = input {
                        done = Some(outcome);
                    }
                }
                return (done.expect("a TransferDone"), now - start);
            }
            Run::Yield => {}
            Run::Writable | Run::File => {} // the script unblocks itself
            Run::Readable => {
                // A connection that stays empty waits for the pump's timeout.
                if io.incoming.is_empty() && !io.incoming_eof && !io.reset_after_incoming {
                    now = pump.poll_timeout().expect("a deadline").max(now);
                    pump.handle_timeout(now);
                }
            }
            Run::Wait => {
                now = pump
                    .poll_timeout()
                    .expect("a pacing deadline")
                    .max(now + tick);
                pump.handle_timeout(now);
            }
        }
    }
    panic!("the pump never finished");
}

fn chunks(data: &[u8], sizes: &[u8]) -> VecDeque<Vec<u8>> {
    let mut out = VecDeque::new();
    let mut at = 0;
    let mut i = 0;
    while at < data.len() {
        let n = (sizes.get(i).copied().unwrap_or(97) as usize % 4096 + 1).min(data.len() - at);
        out.push_back(data[at..at + n].to_vec());
        at += n;
        i += 1;
    }
    out
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn a_download_arrives_whole_with_a_fin_after_short_writes_and_blocks() {
    let now = Instant::now();
    let data = body(300_000);
    let mut io = Script {
        file_in: data.clone(),
        write_max: 7_001,
        send_blocks: 3,
        file_read_max: 50_000,
        ..Script::default()
    };
    let mut pump = Pump::new(TransferId(1), spec(Source::File), now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert_eq!(outcome, TransferOutcome::Complete { bytes: 300_000 });
    assert!(io.sent == data, "the body arrived changed");
    assert!(io.shut, "no FIN after the body");
}

#[test]
fn a_plain_binary_download_passes_through_send_file() {
    let now = Instant::now();
    let data = body(3_000_000);
    let mut io = Script {
        file_in: data.clone(),
        sendfile: true,
        ..Script::default()
    };
    let mut pump = Pump::new(TransferId(1), spec(Source::File), now);
    assert!(pump.wants_send_file());
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert_eq!(outcome, TransferOutcome::Complete { bytes: 3_000_000 });
    assert!(io.sent == data);
    assert!(io.sendfile_calls >= 3, "sendfile was not used");
}

#[test]
fn rendered_bytes_go_out_as_they_are() {
    let now = Instant::now();
    let listing = b"a\r\nb\r\n".repeat(10_000);
    let mut io = Script {
        write_max: 999,
        ..Script::default()
    };
    let mut s = spec(Source::Bytes(listing.clone()));
    s.ascii = true; // a listing is never converted again
    let mut pump = Pump::new(TransferId(1), s, now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert_eq!(
        outcome,
        TransferOutcome::Complete {
            bytes: listing.len() as u64
        }
    );
    assert_eq!(io.sent, listing);
    // An empty listing is a complete, empty transfer.
    let mut io = Script::default();
    let mut pump = Pump::new(TransferId(2), spec(Source::Bytes(Vec::new())), now);
    assert_eq!(
        drive(&mut pump, &mut io, now, Duration::ZERO).0,
        TransferOutcome::Complete { bytes: 0 }
    );
    assert!(io.shut);
}

fn ascii_download(data: Vec<u8>, read_max: u8, write_max: u8) -> TestResult {
    let now = Instant::now();
    let mut io = Script {
        file_in: data.clone(),
        file_read_max: usize::from(read_max) + 1,
        write_max: usize::from(write_max) + 1,
        ..Script::default()
    };
    let mut s = spec(Source::File);
    s.ascii = true;
    let mut pump = Pump::new(TransferId(1), s, now);
    assert!(!pump.wants_send_file());
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    let mut expected = Vec::new();
    ToNetAscii::default().encode(&data, &mut expected);
    TestResult::from_bool(
        outcome
            == TransferOutcome::Complete {
                bytes: expected.len() as u64,
            }
            && io.sent == expected,
    )
}

fn ascii_upload(data: Vec<u8>, sizes: Vec<u8>) -> TestResult {
    let now = Instant::now();
    let mut io = Script {
        incoming: chunks(&data, &sizes),
        incoming_eof: true,
        ..Script::default()
    };
    let mut s = spec(Source::Upload);
    s.ascii = true;
    let mut pump = Pump::new(TransferId(1), s, now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    let mut expected = Vec::new();
    let mut dec = FromNetAscii::default();
    dec.decode(&data, &mut expected);
    dec.finish(&mut expected);
    TestResult::from_bool(
        outcome
            == TransferOutcome::Complete {
                bytes: data.len() as u64,
            }
            && io.file_out == expected
            && io.flushed,
    )
}

/// Text-like bytes: mostly letters, with CR and LF where they hurt.
fn text(seed: Vec<u8>) -> Vec<u8> {
    seed.iter()
        .map(|&b| match b % 7 {
            0 => b'\n',
            1 => b'\r',
            _ => b'a' + b % 26,
        })
        .collect()
}

#[test]
fn type_a_survives_every_chunking() {
    quickcheck(
        (|d: Vec<u8>, r: u8, w: u8| ascii_download(text(d), r, w))
            as fn(Vec<u8>, u8, u8) -> TestResult,
    );
    quickcheck(
        (|d: Vec<u8>, s: Vec<u8>| ascii_upload(text(d), s)) as fn(Vec<u8>, Vec<u8>) -> TestResult,
    );
}

#[test]
fn an_upload_arrives_whole_and_is_flushed() {
    let now = Instant::now();
    let data = body(500_000);
    let mut io = Script {
        incoming: chunks(&data, &[200, 13, 255, 1]),
        incoming_eof: true,
        recv_blocks: 2,
        ..Script::default()
    };
    let mut pump = Pump::new(TransferId(1), spec(Source::Upload), now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert_eq!(outcome, TransferOutcome::Complete { bytes: 500_000 });
    assert!(io.file_out == data);
    assert!(io.flushed);
}

fn cut(limit: u16, len: u16, sizes: Vec<u8>) -> TestResult {
    let (limit, len) = (u64::from(limit), usize::from(len));
    let now = Instant::now();
    let data = body(len);
    let mut io = Script {
        incoming: chunks(&data, &sizes),
        incoming_eof: true,
        ..Script::default()
    };
    let mut s = spec(Source::Upload);
    s.max_bytes = Some(limit);
    let mut pump = Pump::new(TransferId(1), s, now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    let ok = if len as u64 <= limit {
        outcome == TransferOutcome::Complete { bytes: len as u64 } && io.file_out == data
    } else {
        // Exactly the limit written, and the same count however the bytes arrived.
        outcome == TransferOutcome::TooLarge { bytes: limit + 1 }
            && io.file_out == data[..limit as usize]
    };
    TestResult::from_bool(ok)
}

#[test]
fn the_size_cut_is_exact_whatever_the_chunks() {
    quickcheck(cut as fn(u16, u16, Vec<u8>) -> TestResult);
    // The edges, by hand.
    assert!(!cut(100, 100, vec![255]).is_failure());
    assert!(!cut(100, 101, vec![255]).is_failure());
    assert!(!cut(0, 1, vec![0]).is_failure());
}

#[test]
fn pacing_holds_the_rate() {
    let start = Instant::now();
    let rate = 100_000u64;
    let data = body(1_000_000);
    let mut io = Script {
        file_in: data.clone(),
        ..Script::default()
    };
    let mut s = spec(Source::File);
    s.rate_limit = Some(rate);
    let mut pump = Pump::new(TransferId(1), s, start);
    assert!(
        !pump.wants_send_file(),
        "a paced transfer never bypasses the pump"
    );
    let (outcome, took) = drive(&mut pump, &mut io, start, Duration::from_millis(1));
    assert_eq!(outcome, TransferOutcome::Complete { bytes: 1_000_000 });
    assert!(io.sent == data);
    // The burst is a quarter second; the rest goes at the rate.
    let floor = Duration::from_secs_f64((1_000_000 - rate / 4) as f64 / rate as f64);
    assert!(
        took >= floor,
        "{took:?} is faster than the rate allows ({floor:?})"
    );
    assert!(
        took <= floor + Duration::from_secs(1),
        "{took:?} is far slower than the rate"
    );
}

#[test]
fn a_connection_without_progress_stalls() {
    let now = Instant::now();
    let mut io = Script::default(); // never sends a byte, never closes
    let mut pump = Pump::new(TransferId(1), spec(Source::Upload), now);
    assert_eq!(pump.run(now, &mut io, 1 << 20), Run::Readable);
    assert_eq!(pump.poll_timeout(), Some(now + Duration::from_secs(30)));
    // Early, nothing happens.
    pump.handle_timeout(now + Duration::from_secs(29));
    assert_eq!(
        pump.run(now + Duration::from_secs(29), &mut io, 1 << 20),
        Run::Readable
    );
    let (outcome, took) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert_eq!(outcome, TransferOutcome::Stalled { bytes: 0 });
    assert_eq!(took, Duration::from_secs(30));
}

#[test]
fn a_trickle_below_the_minimum_rate_is_too_slow() {
    let start = Instant::now();
    let mut s = spec(Source::Upload);
    s.min_rate = Some(1_000);
    s.stall = Duration::from_secs(10);
    let mut pump = Pump::new(TransferId(1), s, start);
    let mut io = Script::default();
    // 500 bytes a second: never a stall, always too slow.
    let mut now = start;
    let outcome = loop {
        io.incoming.push_back(vec![b'x'; 500]);
        let run = pump.run(now, &mut io, 1 << 20);
        if run == Run::Done {
            break std::iter::from_fn(|| pump.poll_input()).last();
        }
        now += Duration::from_secs(1);
        pump.handle_timeout(now);
        assert!(
            now < start + Duration::from_secs(60),
            "never judged too slow"
        );
    };
    let Some(Input::TransferDone { outcome, .. }) = outcome else {
        panic!("no TransferDone")
    };
    assert!(matches!(outcome, TransferOutcome::TooSlow { bytes } if bytes >= 4_500));
    assert!(
        now >= start + Duration::from_secs(10),
        "judged before its window ended"
    );
}

#[test]
fn a_reset_mid_upload_is_a_lost_connection_with_what_arrived_written() {
    let now = Instant::now();
    let data = body(70_000);
    let mut io = Script {
        incoming: chunks(&data, &[255; 100]),
        reset_after_incoming: true,
        ..Script::default()
    };
    let mut pump = Pump::new(TransferId(1), spec(Source::Upload), now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert_eq!(outcome, TransferOutcome::ConnectionLost { bytes: 70_000 });
    assert!(io.file_out == data);
    assert!(!io.flushed, "a broken upload is not a complete body");
}

#[test]
fn abort_ends_at_the_next_run_without_waiting_on_the_connection() {
    let now = Instant::now();
    let mut io = Script {
        incoming: chunks(&body(5_000), &[255; 10]),
        ..Script::default()
    };
    let mut pump = Pump::new(TransferId(1), spec(Source::Upload), now);
    assert_eq!(pump.run(now, &mut io, 1 << 20), Run::Readable);
    pump.abort();
    assert_eq!(pump.run(now, &mut io, 1 << 20), Run::Done);
    let Some(Input::TransferDone { outcome, .. }) = pump.poll_input() else {
        panic!("no TransferDone")
    };
    assert_eq!(outcome, TransferOutcome::Aborted { bytes: 5_000 });
    assert_eq!(io.file_out.len(), 5_000);
    assert!(
        pump.poll_timeout().is_none(),
        "a finished pump has no timer"
    );
}

#[test]
fn a_full_disk_drains_the_upload_then_reports_no_space() {
    let now = Instant::now();
    let data = body(400_000);
    let mut io = Script {
        incoming: chunks(&data, &[255; 1000]),
        incoming_eof: true,
        file_full_at: Some(100_000),
        ..Script::default()
    };
    let mut pump = Pump::new(TransferId(1), spec(Source::Upload), now);
    let (outcome, _) = drive(&mut pump, &mut io, now, Duration::ZERO);
    assert!(
        matches!(
            outcome,
            TransferOutcome::Storage {
                error: FsError::NoSpace,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert!(
        io.incoming.is_empty(),
        "the rest of the upload was not read"
    );
    assert!(io.file_out.len() <= 100_000);
}

#[test]
fn a_download_whose_file_fails_reports_the_storage_error() {
    struct Broken(Script);
    impl DataIo for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn read_file(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("disk on fire"))
        }
        fn write_file(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write_file(buf)
        }
    }
    let now = Instant::now();
    let mut io = Broken(Script::default());
    let mut pump = Pump::new(TransferId(1), spec(Source::File), now);
    assert_eq!(pump.run(now, &mut io, 1 << 20), Run::Done);
    let Some(Input::TransferDone { outcome, .. }) = pump.poll_input() else {
        panic!("no TransferDone")
    };
    assert!(matches!(
        outcome,
        TransferOutcome::Storage {
            bytes: 0,
            error: FsError::Io(_)
        }
    ));
    assert!(!io.0.shut, "a failed download must not look complete");
}

#[test]
fn progress_is_reported_at_most_once_a_second() {
    let start = Instant::now();
    let mut io = Script::default();
    let mut pump = Pump::new(TransferId(7), spec(Source::Upload), start);
    let mut reports = Vec::new();
    for ms in 0..3_000u64 {
        let now = start + Duration::from_millis(ms);
        io.incoming.push_back(vec![0; 10]);
        pump.run(now, &mut io, 1 << 20);
        while let Some(input) = pump.poll_input() {
            if let Input::TransferProgress { xfer, bytes } = input {
                assert_eq!(xfer, TransferId(7));
                reports.push((ms, bytes));
            }
        }
    }
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_eq!(reports[0], (1_000, 10_010));
    assert_eq!(reports[1], (2_000, 20_010));
}

/// Regression (simulator seed 179): a draining upload under a minimum rate kept its
/// minimum-rate deadline in the past, so its timer fired forever at one instant.
#[test]
fn every_deadline_moves_on_once_handled() {
    let start = Instant::now();
    let mut s = spec(Source::Upload);
    s.min_rate = Some(1_000_000);
    s.stall = Duration::from_secs(5);
    let mut pump = Pump::new(TransferId(1), s, start);
    let mut io = Script {
        incoming: chunks(&body(10_000), &[255; 10]),
        file_full_at: Some(100),
        ..Script::default()
    };
    let mut now = start;
    for _ in 0..1000 {
        if pump.run(now, &mut io, 1 << 20) == Run::Done {
            return;
        }
        let due = pump.poll_timeout().expect("a running pump has a deadline");
        assert!(
            due > now || now == start,
            "a handled deadline stayed due at {now:?}"
        );
        now = due.max(now);
        pump.handle_timeout(now);
        io.incoming.push_back(vec![1; 10]);
    }
    panic!("the draining upload never ended");
}
