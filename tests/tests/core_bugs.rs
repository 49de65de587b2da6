//! Minimal reproductions of wharf-core bugs the simulator found, kept as regression
//! tests once fixed. A new bug starts here `#[ignore]`d, with a matching switch in
//! `wharf_tests::sim::known_bugs` so the simulator's other checks keep running; the fix
//! removes both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_core::{
    Action, Completion, Input, Principal, Request, Server, Session, SessionConfig, Timeouts,
    TransferId,
};

/// Drives one session by hand: the drain rule, with the replies kept as text.
struct Wire {
    now: Instant,
    session: Session,
    replies: String,
    actions: Vec<Action>,
}

impl Wire {
    fn new(config: SessionConfig) -> Wire {
        // Tests own the clock: one reading for an origin, then only additions.
        let now = Instant::now();
        let mut server = Server::new(Arc::new(config), 0, 1, 10);
        let peer = "192.0.2.7:40000".parse().unwrap();
        let local = "192.0.2.1:21".parse().unwrap();
        let session = server.accept(now, peer, local).unwrap();
        let mut w = Wire {
            now,
            session,
            replies: String::new(),
            actions: Vec::new(),
        };
        w.drain();
        w
    }

    fn drain(&mut self) {
        while let Some(out) = self.session.poll_transmit() {
            let n = out.len();
            self.replies.push_str(&String::from_utf8_lossy(out));
            self.session.handle_written(n);
        }
        while let Some(a) = self.session.poll_action() {
            self.actions.push(a);
        }
    }

    fn input(&mut self, input: Input<'_>) {
        self.session.handle_input(self.now, input);
        self.drain();
    }

    fn send(&mut self, bytes: &[u8]) {
        self.input(Input::ControlBytes(bytes));
    }

    /// Moves the clock by `by`, firing due timers as a driver would.
    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(at) = self.session.poll_timeout().filter(|at| *at <= target) {
            self.now = self.now.max(at);
            self.session.handle_timeout(self.now);
            self.drain();
        }
        self.now = target;
    }

    fn last_request(&self) -> (wharf_core::RequestId, Request) {
        self.actions
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Request { req, request } => Some((*req, request.clone())),
                _ => None,
            })
            .unwrap()
    }
}

/// Bug: the tail of an over-long command line, when it arrives in a later read, is
/// executed as a command of its own (command smuggling past the line cap).
///
/// Cause: `Session::settle` ends with `if self.framer.buffered() == 0 { self.framer.clear() }`
/// to release buffers, but `LineFramer::clear` also resets `discarding`, so the framer
/// forgets it is inside an over-long line. Fix: release memory without touching the
/// framing state (e.g. a `LineFramer::shrink()` that only drops capacity), or only clear
/// when the framer is idle (no partial line, no pending CR, not discarding, Telnet in Data).
#[test]
fn long_line_tail_is_not_a_command() {
    let mut w = Wire::new(SessionConfig {
        max_line: 100,
        ..SessionConfig::default()
    });
    w.send(&[b'X'; 150]);
    w.send(b"USER smuggled\r\n");
    assert_eq!(
        w.replies, "220 wharf FTP server ready\r\n500 Command line too long.\r\n",
        "the tail of the long line got its own reply"
    );
}

/// Bug: the idle timer (`controlChannelTimeout`) closes a session in the middle of a
/// transfer that keeps making progress, with `421 Timeout`.
///
/// Cause: `Timer::Idle` is only re-armed when a command line is taken; nothing stops it
/// when a transfer starts or re-arms it on `TransferProgress`. Fix: stop `Timer::Idle` in
/// `begin_transfer` and re-arm it (`now + idle`) when the transfer's final reply is sent
/// (`on_transfer_done`, `fail_before_start`); or, in `on_timer(Timer::Idle)`, re-arm
/// instead of closing while `pending` is a `Pending::Transfer` (its own stall and
/// data-connect timers govern it).
#[test]
fn idle_timer_spares_a_running_transfer() {
    let timeouts = Timeouts {
        idle: Duration::from_secs(5),
        ..Timeouts::default()
    };
    let mut w = Wire::new(SessionConfig {
        timeouts,
        ..SessionConfig::default()
    });
    w.send(b"USER alice\r\nPASS secret\r\n");
    let (req, _) = w.last_request();
    let principal = Principal {
        name: "alice".into(),
        groups: vec![],
        anonymous: false,
    };
    w.input(Input::Completed {
        req,
        completion: Completion::Auth(Ok(principal)),
    });
    w.send(b"PORT 192,0,2,7,100,0\r\nSTOR f\r\n");
    let (req, request) = w.last_request();
    let Request::OpenWrite { path, .. } = request else {
        panic!("{request:?}")
    };
    let opened = wharf_core::OpenedFile { size: 0, path };
    w.input(Input::Completed {
        req,
        completion: Completion::Opened(Ok(opened)),
    });
    let conn = w.actions.iter().find_map(|a| match a {
        Action::ConnectData { conn, .. } => Some(*conn),
        _ => None,
    });
    w.input(Input::DataConnected {
        conn: conn.unwrap(),
    });
    let xfer: TransferId = w
        .actions
        .iter()
        .find_map(|a| match a {
            Action::StartTransfer { xfer, .. } => Some(*xfer),
            _ => None,
        })
        .unwrap();
    // Twenty seconds of steady progress, one report a second.
    for second in 1..=20u64 {
        w.advance(Duration::from_secs(1));
        w.input(Input::TransferProgress {
            xfer,
            bytes: second * 1000,
        });
    }
    assert!(
        !w.replies.contains("421"),
        "closed mid-transfer: {:?}",
        w.replies
    );
}

/// Bug (seeds 11581 and 17926 of a 20,000-seed run): a RETR refused before it reached
/// storage left its REST offset armed, so the next plain STOR opened the file with
/// `WriteMode::At(offset)` and wrote in place over the old bytes; a failure of that
/// STOR then left a partial file at its final name.
///
/// Cause: `cmd_retr`/`cmd_store` took `rest` only once every check had passed. Fix: a
/// transfer command spends REST (and the data channel) when it ends, whatever its fate
/// (`Session::command_done`).
#[test]
fn a_refused_retr_leaves_no_rest_offset() {
    let mut w = Wire::new(SessionConfig {
        allow_anonymous: true,
        anonymous_write: true,
        ..SessionConfig::default()
    });
    // Anonymous logins need no request; RETR without a name is refused before storage.
    w.send(b"USER anonymous\r\nPASS x\r\nREST 76\r\nPORT 192,0,2,7,100,0\r\nRETR\r\n");
    w.send(b"PORT 192,0,2,7,100,0\r\nSTOR a\r\n");
    let (_, request) = w.last_request();
    assert!(
        matches!(
            request,
            Request::OpenWrite {
                mode: wharf_core::WriteMode::Replace,
                ..
            }
        ),
        "the STOR after a refused RETR was {request:?}"
    );
}
