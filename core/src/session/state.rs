use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::{Action, Input};
use crate::config::SessionConfig;
use crate::ids::SessionId;

/// One control connection's protocol state.
pub struct Session {
    _todo: (),
}

impl Session {
    pub(crate) fn new(
        now: Instant,
        id: SessionId,
        config: Arc<SessionConfig>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Session {
        let _ = (now, id, config, peer, local);
        todo!()
    }

    pub fn id(&self) -> SessionId {
        todo!()
    }

    /// Feeds one input. Protocol errors become replies; nothing here fails.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let _ = (now, input);
        todo!()
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }

    /// Control-channel bytes waiting to be written. Refilled by `handle_input` and
    /// `handle_timeout`; consumed by `handle_written`.
    #[must_use]
    pub fn poll_transmit(&self) -> Option<&[u8]> {
        todo!()
    }

    /// Reports that the first `n` bytes of `poll_transmit` were written.
    pub fn handle_written(&mut self, n: usize) {
        let _ = n;
        todo!()
    }

    /// The next action for the driver. Refilled by `handle_input` and `handle_timeout`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        todo!()
    }

    /// When `handle_timeout` must next be called. Changes after any `handle_*` call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }

    /// Whether the driver should read more control bytes (false under backpressure).
    pub fn wants_read(&self) -> bool {
        todo!()
    }

    /// Whether the session has ended; the driver closes the connection once
    /// `poll_transmit` is drained.
    pub fn is_closed(&self) -> bool {
        todo!()
    }
}
