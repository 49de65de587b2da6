//! The uniform delay on failed logins (`SessionConfig::failed_login_delay`): a failed
//! PASS is answered `530` a fixed time after the PASS arrived, however long the check
//! took, and nothing else is read meanwhile. Requests are answered by hand here, so the
//! check can be made slow or quick.

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{config, origin, Harness};
use wharf_core::backend::{AuthError, Completion, Principal};
use wharf_core::policy::limits::{ServerPolicy, ServerRules};
use wharf_core::policy::LogonRestrictions;
use wharf_core::{Action, Input, Request, RequestId, Server, Session, SessionConfig};

/// A session whose requests wait for the test to answer them.
struct Manual {
    now: Instant,
    session: Session,
    wire: String,
    requests: Vec<(RequestId, Request)>,
    logs: Vec<wharf_core::log::LogRecord>,
    closed: bool,
}

impl Manual {
    fn new(cfg: SessionConfig) -> Manual {
        Manual::with_server(&mut Server::new(Arc::new(cfg), 0, 1, 10))
    }

    fn with_server(server: &mut Server) -> Manual {
        let now = origin();
        let session = server
            .accept(
                now,
                harness::PEER.parse().unwrap(),
                harness::LOCAL.parse().unwrap(),
            )
            .expect("admitted");
        let mut m = Manual {
            now,
            session,
            wire: String::new(),
            requests: Vec::new(),
            logs: Vec::new(),
            closed: false,
        };
        m.drain();
        m.wire.clear();
        m
    }

    fn drain(&mut self) {
        loop {
            if let Some(bytes) = self.session.poll_transmit() {
                let n = bytes.len();
                self.wire.push_str(&String::from_utf8_lossy(bytes));
                self.session.handle_written(n);
                continue;
            }
            match self.session.poll_action() {
                Some(Action::Request { req, request }) => self.requests.push((req, request)),
                Some(Action::Log(record)) => self.logs.push(*record),
                Some(Action::Close) => self.closed = true,
                Some(_) => {}
                None => break,
            }
        }
    }

    /// Sends a line at the current time; returns what it produced.
    fn send(&mut self, line: &str) -> String {
        let start = self.wire.len();
        let bytes = format!("{line}\r\n");
        self.session
            .handle_input(self.now, Input::ControlBytes(bytes.as_bytes()));
        self.drain();
        self.wire[start..].to_string()
    }

    /// Moves the clock by `by`, firing due timers on the way.
    fn advance(&mut self, by: Duration) -> String {
        let start = self.wire.len();
        let target = self.now + by;
        while let Some(at) = self.session.poll_timeout() {
            if at > target {
                break;
            }
            assert!(at >= self.now, "a timer went backwards");
            self.now = at;
            self.session.handle_timeout(at);
            self.drain();
        }
        self.now = target;
        self.wire[start..].to_string()
    }

    /// Answers the last request (the password check) with `result`.
    fn answer_auth(&mut self, result: Result<Principal, AuthError>) -> String {
        let (req, request) = self.requests.pop().expect("a pending request");
        assert!(
            matches!(request, Request::Authenticate { .. }),
            "{request:?}"
        );
        let start = self.wire.len();
        let completion = Completion::Auth(result);
        self.session
            .handle_input(self.now, Input::Completed { req, completion });
        self.drain();
        self.wire[start..].to_string()
    }
}

fn delayed(delay: Duration) -> SessionConfig {
    SessionConfig {
        failed_login_delay: delay,
        ..config()
    }
}

fn alice() -> Principal {
    Principal {
        name: "alice".into(),
        groups: Vec::new(),
        anonymous: false,
        home: None,
    }
}

#[test]
fn a_failure_is_answered_a_fixed_time_after_the_pass_however_long_the_check_took() {
    let delay = Duration::from_millis(1000);
    // The check fails after 0 ms, 300 ms and 999 ms: the 530 always comes at 1000 ms.
    for check in [0, 300, 999] {
        let mut m = Manual::new(delayed(delay));
        m.send("USER alice");
        let pass_at = m.now;
        assert_eq!(m.send("PASS wrong"), "");
        m.advance(Duration::from_millis(check));
        assert_eq!(
            m.answer_auth(Err(AuthError::BadCredentials)),
            "",
            "{check} ms"
        );
        assert_eq!(
            m.session.poll_timeout(),
            Some(pass_at + delay),
            "{check} ms"
        );
        let early = m.advance(pass_at + delay - m.now - Duration::from_nanos(1));
        assert_eq!(early, "", "{check} ms: answered early");
        assert_eq!(
            m.advance(Duration::from_nanos(1)),
            "530 Login incorrect.\r\n"
        );
        assert_eq!(m.now - pass_at, delay);
        // The session goes on as after any failed login.
        assert!(m.send("USER alice").starts_with("331 "));
    }
}

#[test]
fn a_check_slower_than_the_delay_is_answered_at_once() {
    let mut m = Manual::new(delayed(Duration::from_secs(1)));
    m.send("USER alice");
    m.send("PASS wrong");
    m.advance(Duration::from_millis(1500));
    assert_eq!(
        m.answer_auth(Err(AuthError::BadCredentials)),
        "530 Login incorrect.\r\n"
    );
    // A backend failure is refused like any other, delayed the same way, but says
    // that the account service failed rather than that the password was wrong.
    m.send("USER alice");
    m.send("PASS x");
    assert_eq!(m.answer_auth(Err(AuthError::Backend("down".into()))), "");
    assert_eq!(
        m.advance(Duration::from_secs(1)),
        "530 Login failed: the account service is unavailable, try again later.\r\n"
    );
}

#[test]
fn no_command_is_read_during_the_delay_and_they_run_in_order_after_it() {
    let mut m = Manual::new(delayed(Duration::from_secs(1)));
    m.send("USER alice");
    m.send("PASS wrong");
    m.answer_auth(Err(AuthError::BadCredentials));
    assert_eq!(m.send("NOOP"), "");
    assert_eq!(m.send("USER alice"), "");
    assert_eq!(m.send("STAT"), "", "not even STAT skips ahead");
    assert!(m.requests.is_empty());
    let got = m.advance(Duration::from_secs(1));
    let codes: Vec<&str> = got.lines().map(|l| &l[..4]).collect();
    assert_eq!(codes[..3], ["530 ", "200 ", "331 "], "{got}");
    assert!(got.contains("211"), "{got}");
}

#[test]
fn success_is_not_delayed_and_zero_turns_the_delay_off() {
    let mut m = Manual::new(delayed(Duration::from_secs(5)));
    m.send("USER alice");
    m.send("PASS secret");
    assert!(m.answer_auth(Ok(alice())).starts_with("230 "));

    let mut m = Manual::new(delayed(Duration::ZERO));
    m.send("USER alice");
    m.send("PASS wrong");
    assert_eq!(
        m.answer_auth(Err(AuthError::BadCredentials)),
        "530 Login incorrect.\r\n"
    );
    assert_eq!(
        m.session.poll_timeout(),
        Some(m.now + config().timeouts.login)
    );
}

#[test]
fn a_client_that_leaves_during_the_delay_is_closed_at_once() {
    let mut m = Manual::new(delayed(Duration::from_secs(1)));
    m.send("USER alice");
    m.send("PASS wrong");
    m.answer_auth(Err(AuthError::BadCredentials));
    m.session.handle_input(m.now, Input::ControlEof);
    m.drain();
    assert!(m.closed && m.session.is_closed());
    assert_eq!(m.wire, "331 Password required for alice.\r\n");
}

#[test]
fn the_login_timeout_still_applies_during_the_delay() {
    let cfg = SessionConfig {
        failed_login_delay: Duration::from_secs(10),
        timeouts: wharf_core::Timeouts {
            login: Duration::from_secs(3),
            ..wharf_core::Timeouts::default()
        },
        ..config()
    };
    let mut m = Manual::new(cfg);
    m.send("USER alice");
    m.send("PASS wrong");
    m.answer_auth(Err(AuthError::BadCredentials));
    let got = m.advance(Duration::from_secs(3));
    assert!(got.starts_with("421 Login timeout"), "{got}");
    assert!(m.session.is_closed());
}

#[test]
fn the_failure_counts_towards_a_ban_before_the_reply_goes_out() {
    let policy = Arc::new(ServerPolicy::new(ServerRules {
        logon: LogonRestrictions {
            enabled: true,
            max_failures: 1,
            ..LogonRestrictions::default()
        },
        ..ServerRules::default()
    }));
    let mut server =
        Server::new(Arc::new(delayed(Duration::from_secs(1))), 0, 1, 10).with_policy(policy);
    let mut m = Manual::with_server(&mut server);
    let peer = harness::PEER.parse().unwrap();
    let local = harness::LOCAL.parse().unwrap();
    m.send("USER alice");
    m.send("PASS wrong");
    assert_eq!(m.answer_auth(Err(AuthError::BadCredentials)), "");
    // During the delay, the address is already banned.
    assert!(server.accept(m.now, peer, local).is_err());
    let got = m.advance(Duration::from_secs(1));
    assert!(
        got.starts_with("530 Login incorrect.\r\n421 Too many failed logins"),
        "{got}"
    );
    assert!(m.session.is_closed());
}

#[test]
fn the_harness_default_is_one_second() {
    // `SessionConfig::default()` delays failures by 1 s (the server's default too).
    assert_eq!(
        SessionConfig::default().failed_login_delay,
        Duration::from_secs(1)
    );
    let mut h = Harness::new();
    h.expect("USER alice", "331 ");
    assert_eq!(h.send("PASS wrong"), "");
    assert_eq!(h.advance(Duration::from_millis(999)), "");
    assert_eq!(
        h.advance(Duration::from_millis(1)),
        "530 Login incorrect.\r\n"
    );
}

/// A site that logs every command, so the tests can read a record's sub-status.
fn logging(delay: Duration) -> SessionConfig {
    SessionConfig {
        logging: Some(wharf_core::log::LogConfig {
            site: "accounts".into(),
            fields: wharf_core::log::LogFields::ALL,
            w3c: true,
        }),
        ..delayed(delay)
    }
}

#[test]
fn a_failed_account_store_is_logged_with_its_substatus_and_reason_and_not_counted() {
    let policy = Arc::new(ServerPolicy::new(ServerRules {
        logon: LogonRestrictions {
            enabled: true,
            max_failures: 1,
            ..LogonRestrictions::default()
        },
        ..ServerRules::default()
    }));
    let mut server =
        Server::new(Arc::new(logging(Duration::from_secs(1))), 0, 1, 10).with_policy(policy);
    let mut m = Manual::with_server(&mut server);
    m.send("USER alice");
    m.send("PASS s3cret");
    m.answer_auth(Err(AuthError::Backend(
        "ldap://127.0.0.1:1: connection refused".into(),
    )));
    let got = m.advance(Duration::from_secs(1));
    assert!(
        got.starts_with("530 Login failed: the account service"),
        "{got}"
    );
    let pass = m
        .logs
        .iter()
        .find(|r| r.method == "PASS")
        .expect("PASS logged");
    assert_eq!(pass.status, 530);
    assert_eq!(pass.sub, wharf_core::log::SubStatus::LogonUnavailable);
    assert_eq!(pass.sub.code(), 44);
    assert_eq!(pass.win32, wharf_core::log::WIN32_NO_LOGON_SERVERS);
    let debug = pass.debug.as_deref().unwrap_or("");
    assert!(debug.contains("connection refused"), "{debug:?}");
    // With a ban after one failure, a failure counted would have banned the address:
    // the store failing is not the client's fault.
    let peer = harness::PEER.parse().unwrap();
    let local = harness::LOCAL.parse().unwrap();
    assert!(server.accept(m.now, peer, local).is_ok());
    assert!(!m.session.is_closed());
    // A wrong password afterwards is logged as one.
    m.send("USER alice");
    m.send("PASS wrong");
    m.answer_auth(Err(AuthError::BadCredentials));
    m.advance(Duration::from_secs(1));
    let last = m.logs.iter().rfind(|r| r.method == "PASS").unwrap();
    assert_eq!(last.sub, wharf_core::log::SubStatus::LogonBanned);
}

#[test]
fn a_password_check_that_never_completes_ends_with_the_login_timeout() {
    // PAM or a directory that hangs: the session is not stuck behind it. Its login
    // timer closes it, and an answer arriving afterwards changes nothing.
    let cfg = SessionConfig {
        timeouts: wharf_core::Timeouts {
            login: Duration::from_secs(5),
            ..wharf_core::Timeouts::default()
        },
        ..config()
    };
    let mut m = Manual::new(cfg);
    m.send("USER alice");
    assert_eq!(m.send("PASS secret"), "");
    assert_eq!(m.requests.len(), 1, "the password check is asked for");
    assert_eq!(m.advance(Duration::from_millis(4999)), "");
    let got = m.advance(Duration::from_millis(1));
    assert_eq!(got, "421 Login timeout, closing control connection.\r\n");
    assert!(m.closed && m.session.is_closed());
    let late = m.answer_auth(Ok(alice()));
    assert_eq!(late, "", "a late answer logs nobody in");
    assert!(m.session.is_closed());
}
