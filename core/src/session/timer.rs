//! The session's timers: one optional deadline per kind, as in quinn-proto.

use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Login must complete by then (IIS `unauthenticatedTimeout`).
    Login,
    /// No command for this long after login closes the session (`controlChannelTimeout`).
    Idle,
    /// A transfer waiting for its data connection gives up (`dataChannelTimeout`).
    DataConnect,
    /// After CCC, the server sends its close_notify if the client has not sent one.
    CccClose,
    /// A failed login's `530` is held until then (`failed_login_delay`).
    FailedLogin,
    /// A control-channel TLS handshake must complete by then (`tls_handshake`).
    Handshake,
}

const ALL: [Timer; 6] = [
    Timer::Login,
    Timer::Idle,
    Timer::DataConnect,
    Timer::CccClose,
    Timer::FailedLogin,
    Timer::Handshake,
];

#[derive(Debug, Default, Clone)]
pub(super) struct TimerTable {
    deadlines: [Option<Instant>; ALL.len()],
}

impl TimerTable {
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    pub(super) fn clear(&mut self) {
        self.deadlines = [None; ALL.len()];
    }

    pub(super) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Takes the earliest timer due at `now`, if any; it fires once.
    pub(super) fn expired(&mut self, now: Instant) -> Option<Timer> {
        let due = ALL
            .into_iter()
            .filter_map(|t| self.deadlines[t as usize].map(|at| (at, t)))
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)?;
        self.stop(due.1);
        Some(due.1)
    }
}
