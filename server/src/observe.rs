//! What the server tells its operator: the log sink the runtimes hand every record to.
//!
//! The core makes one record per command and per session event (see
//! `wharf_core::log`); every site logs for the [`Observer`], whether or not it writes a
//! W3C file. The observer turns each record into the default log lines (one per session
//! start and end, failed login, transfer and policy refusal; every command at debug),
//! counts it in the Prometheus metrics when the admin listener is on, and passes it to
//! the W3C writer when its site has a W3C log. It runs on the thread that made the
//! record and never blocks: tracing's level checks come first, metrics are atomics.
//!
//! Log lines use targets under `wharf::log` (`wharf::log::session`, `::login`,
//! `::transfer`, `::refusal`, `::reload`, `::command`), so a filter can pick them.

use std::sync::Arc;

use wharf_core::log::{LogRecord, LogSink, SubStatus};

use crate::metrics::Metrics;
use crate::w3c::W3cLogger;

/// The runtimes' log sink: log lines, metrics, and the W3C log.
#[derive(Debug)]
pub struct Observer {
    w3c: Option<Arc<W3cLogger>>,
    metrics: Option<Arc<Metrics>>,
}

impl Observer {
    pub fn new(w3c: Option<Arc<W3cLogger>>, metrics: Option<Arc<Metrics>>) -> Observer {
        Observer { w3c, metrics }
    }

    /// Records the W3C writer dropped because the disk fell behind, since the start.
    pub fn w3c_dropped(&self) -> u64 {
        self.w3c.as_ref().map_or(0, |w| w.dropped_total())
    }
}

impl LogSink for Observer {
    fn log(&self, record: Box<LogRecord>) {
        log_line(&record);
        if let Some(m) = &self.metrics {
            m.count(&record);
        }
        if record.w3c {
            if let Some(w) = &self.w3c {
                w.log(record);
            }
        }
    }
}

/// Whether `sub` is a refusal by a policy (IP rules, bans, limits, filtering, bounce
/// checks), logged as such; the others are failures of their own kind.
pub fn is_policy_refusal(sub: SubStatus) -> bool {
    !matches!(
        sub,
        SubStatus::None
            | SubStatus::LogonFailed
            | SubStatus::LogonUnavailable
            | SubStatus::HandshakeTimeout
            | SubStatus::Stalled
            | SubStatus::TooSlow
            | SubStatus::UploadInProgress
            | SubStatus::RenameTargetExists
            | SubStatus::PermissionDenied
            | SubStatus::AdminDisconnect
    )
}

/// Upload and download verbs.
pub fn transfer_direction(method: &str) -> Option<&'static str> {
    match method {
        "RETR" => Some("download"),
        "STOR" | "APPE" | "STOU" => Some("upload"),
        _ => None,
    }
}

fn user(rec: &LogRecord) -> &str {
    rec.user.as_deref().unwrap_or("-")
}

/// The default log lines. Each `tracing` macro checks its level before anything is
/// formatted, so a line that is filtered out costs a branch.
fn log_line(rec: &LogRecord) {
    let method = &*rec.method;
    let session = rec.session.0;
    let client = rec.client;
    tracing::debug!(
        target: "wharf::log::command",
        session,
        %client,
        user = user(rec),
        command = method,
        arg = rec.uri.as_deref().unwrap_or(""),
        status = rec.status,
        substatus = rec.sub.slug(),
        "command"
    );
    match method {
        "ControlChannelOpened" if rec.sub == SubStatus::None => {
            tracing::info!(
                target: "wharf::log::session",
                session,
                %client,
                server = %rec.server,
                site = &*rec.site,
                tls = rec.tls,
                "session start"
            );
        }
        "ControlChannelClosed" => {
            let ended = match rec.sub {
                SubStatus::None => rec.debug.as_deref().unwrap_or("closed"),
                sub => sub.slug(),
            };
            tracing::info!(
                target: "wharf::log::session",
                session,
                %client,
                site = &*rec.site,
                user = user(rec),
                tls = rec.tls,
                duration_ms = rec.time_taken.as_millis() as u64,
                bytes_in = rec.bytes_received,
                bytes_out = rec.bytes_sent,
                ended,
                "session end"
            );
        }
        _ => {}
    }
    if method == "PASS" && rec.status >= 400 {
        // Wrong credentials are told by the account providers, with the provider and
        // its reason (auth::Accounts); what refused the login before any provider
        // (a ban, anonymous logins off, a limit) or made it fail is told here.
        if rec.sub != SubStatus::LogonFailed {
            tracing::info!(
                target: "wharf::log::login",
                session,
                %client,
                site = &*rec.site,
                user = user(rec),
                status = rec.status,
                reason = rec.debug.as_deref().unwrap_or(rec.sub.slug()),
                "login failed"
            );
        }
    }
    if let Some(direction) = transfer_direction(method) {
        let secs = rec.time_taken.as_secs_f64();
        let rate = match secs > 0.0 {
            true => (rec.data_bytes as f64 / secs) as u64,
            false => 0,
        };
        let outcome = match (rec.status, rec.sub) {
            (226 | 250, _) => "complete",
            (_, SubStatus::None) => rec.debug.as_deref().unwrap_or("failed"),
            (_, sub) => sub.slug(),
        };
        tracing::info!(
            target: "wharf::log::transfer",
            session,
            %client,
            site = &*rec.site,
            user = user(rec),
            tls = rec.tls,
            command = method,
            direction,
            path = rec.uri.as_deref().unwrap_or("-"),
            bytes = rec.data_bytes,
            ms = rec.time_taken.as_millis() as u64,
            bytes_per_sec = rate,
            status = rec.status,
            outcome,
            "transfer"
        );
    }
    if is_policy_refusal(rec.sub) {
        tracing::info!(
            target: "wharf::log::refusal",
            session,
            %client,
            site = &*rec.site,
            user = user(rec),
            command = method,
            status = rec.status,
            substatus = rec.sub.code(),
            reason = rec.sub.slug(),
            "refused"
        );
    }
}
