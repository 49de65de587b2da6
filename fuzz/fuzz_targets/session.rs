//! A whole session fed an arbitrary schedule: control bytes, time jumps, data-connection
//! answers, failures and EOF, with storage requests run at once against `MemStorage`.
//! Invariants: no panic; every reply line is `ddd` + SP/`-` ... CR LF; nothing after Close.
//!
//! Input format (so the corpus can hold real client transcripts): a sequence of ops.
//! `0 len bytes..` control bytes; `1 n` advance n seconds; `2` answer the oldest data
//! action successfully; `3` fail it; `4` end the oldest transfer with a reset; `5` EOF.
#![no_main]

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use libfuzzer_sys::fuzz_target;
use wharf_core::backend::{execute, OpenFile};
use wharf_core::memfs::{MemStorage, MemUsers};
use wharf_core::*;

struct Driver {
    now: Instant,
    session: Session,
    storage: MemStorage,
    users: MemUsers,
    files: BTreeMap<FileHandle, OpenFile>,
    data: VecDeque<Action>,
    out: Vec<u8>,
    closed: bool,
}

impl Driver {
    fn drain(&mut self) {
        loop {
            if let Some(bytes) = self.session.poll_transmit() {
                assert!(!self.closed, "bytes after Close");
                let n = bytes.len();
                self.out.extend_from_slice(bytes);
                self.session.handle_written(n);
                continue;
            }
            let Some(action) = self.session.poll_action() else { return };
            match action {
                Action::Request { req, request } => {
                    let file = match &request {
                        Request::CloseFile { file, .. } => self.files.remove(file),
                        _ => None,
                    };
                    let handle = match &request {
                        Request::OpenRead { file, .. } | Request::OpenWrite { file, .. } => Some(*file),
                        _ => None,
                    };
                    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
                    let (completion, opened) = execute(
                        &self.storage,
                        &self.users,
                        &wharf_core::NoResolver,
                        request,
                        file,
                        wall,
                    );
                    if let (Some(h), Some(f)) = (handle, opened) {
                        self.files.insert(h, f);
                    }
                    self.session.handle_input(self.now, Input::Completed { req, completion });
                }
                Action::Close => self.closed = true,
                other => self.data.push_back(other),
            }
        }
    }

    fn answer(&mut self, ok: bool, reset: bool) {
        let Some(action) = self.data.pop_front() else { return };
        let input = match action {
            Action::ListenData { conn, .. } if ok => Input::DataListening { conn, port: 50000 },
            Action::ConnectData { conn, .. } if ok => Input::DataConnected { conn },
            Action::ListenData { conn, .. } | Action::ConnectData { conn, .. } => {
                Input::DataFailed { conn, error: DataError::Refused }
            }
            Action::StartTransfer { xfer, .. } | Action::AbortTransfer { xfer } => {
                let outcome = match (reset, ok) {
                    (true, _) => TransferOutcome::ConnectionLost { bytes: 1 },
                    (_, true) => TransferOutcome::Complete { bytes: 0 },
                    _ => TransferOutcome::Aborted { bytes: 0 },
                };
                Input::TransferDone { xfer, outcome }
            }
            _ => return,
        };
        self.session.handle_input(self.now, input);
    }
}

/// Every reply line ends in CR LF with no other CR; outside a multi-line reply each
/// line starts with three digits and SP or '-'; a multi-line reply ends with `ddd SP`.
fn check_replies(out: &[u8]) {
    let complete = out.len() - out.iter().rev().position(|&b| b == b'\n').unwrap_or(out.len());
    let mut multi: Option<&[u8]> = None;
    for line in out[..complete].split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\r\n").expect("line ends with CR LF");
        assert!(!body.contains(&b'\r'), "bare CR in {line:?}");
        let coded = body.len() >= 4 && body[..3].iter().all(u8::is_ascii_digit);
        match multi {
            Some(code) if coded && &body[..3] == code && body[3] == b' ' => multi = None,
            Some(_) => {}
            None => {
                assert!(coded && matches!(body[3], b' ' | b'-'), "malformed reply line {line:?}");
                if body[3] == b'-' {
                    multi = Some(&body[..3]);
                }
            }
        }
    }
}

fuzz_target!(|ops: &[u8]| {
    let now = Instant::now();
    let config = SessionConfig { allow_anonymous: true, anonymous_write: true, ..SessionConfig::default() };
    let mut server = Server::new(Arc::new(config), 0, 1, 4);
    let session = server
        .accept(now, "192.0.2.7:4000".parse().unwrap(), "192.0.2.1:21".parse().unwrap())
        .unwrap();
    let storage = MemStorage::new();
    storage.add_file("/pub/a.txt", b"hello\nworld\n");
    storage.add_dir("/up");
    let users = MemUsers::new().with("alice", "secret", &[]);
    let mut d = Driver { now, session, storage, users, files: BTreeMap::new(), data: VecDeque::new(), out: Vec::new(), closed: false };
    d.drain();
    let mut ops = ops;
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 6 {
            0 => {
                let Some((&len, rest)) = ops.split_first() else { break };
                let (bytes, rest) = rest.split_at(usize::from(len).min(rest.len()));
                ops = rest;
                d.session.handle_input(d.now, Input::ControlBytes(bytes));
            }
            1 => {
                let Some((&secs, rest)) = ops.split_first() else { break };
                ops = rest;
                d.now += Duration::from_secs(u64::from(secs));
                if d.session.poll_timeout().is_some_and(|t| t <= d.now) {
                    d.session.handle_timeout(d.now);
                }
            }
            2 => d.answer(true, false),
            3 => d.answer(false, false),
            4 => d.answer(true, true),
            _ => d.session.handle_input(d.now, Input::ControlEof),
        }
        d.drain();
    }
    check_replies(&d.out);
});
