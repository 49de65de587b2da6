//! The session's side of policy, called from the command path by one line each: command
//! filtering and raw-argument checks before dispatch, path filtering at the chokepoint,
//! logon restrictions and per-user limits at login, the upload size and minimum data rate
//! during transfers, and the log record of every command.

use std::borrow::Cow;
use std::time::Instant;

use super::state::{Login, Pending};
use super::{Action, TransferOutcome};
use crate::backend::{Completion, FsError, Principal};
use crate::log::{self, Field, LogRecord, SubStatus};
use crate::path::VPath;
use crate::policy::filter::{self, Denial};
use crate::policy::{DenyAction, Verdict};
use crate::proto::command::{Command, ParseError, Verb};
use crate::session::Session;

/// The log record of the command being executed, with its start time.
#[derive(Debug)]
pub(super) struct CmdLog {
    rec: Box<LogRecord>,
    started: Instant,
}

/// What an urgent command (ABOR, STAT, QUIT during a transfer) sets aside: the running
/// transfer's command state, restored once the urgent one has been handled.
pub(super) struct Suspended {
    verb: Option<Verb>,
    status: u16,
    sub: SubStatus,
    win32: u32,
    log: Option<CmdLog>,
}

impl Session {
    /// Starts a command: what it is (for filtering and logging) and, when the site logs,
    /// its record. During a transfer the transfer's state is set aside and returned.
    pub(super) fn begin_command(
        &mut self,
        now: Instant,
        parsed: &Result<Command, ParseError>,
        line: &[u8],
    ) -> Option<Suspended> {
        let urgent = matches!(self.pending, Some(Pending::Transfer(_)));
        let suspended = urgent.then(|| Suspended {
            verb: self.verb.take(),
            status: std::mem::take(&mut self.status),
            sub: std::mem::take(&mut self.sub),
            win32: std::mem::take(&mut self.win32),
            log: self.log.take(),
        });
        let (verb, arg) = match parsed {
            Ok(cmd) => (Some(cmd.verb), cmd.arg.as_str()),
            Err(ParseError::BadUtf8(v) | ParseError::ControlChar(v)) => (Some(*v), ""),
            Err(_) => (None, ""),
        };
        self.verb = verb;
        self.status = 0;
        self.sub = SubStatus::None;
        self.win32 = 0;
        if self.config.logging.is_some() {
            self.note_identity(verb, arg);
            let method = match verb {
                Some(v) => Cow::Borrowed(v.name()),
                None => Cow::Owned(unknown_word(line)),
            };
            let uri = match verb {
                Some(Verb::Pass) => "***",
                _ => arg,
            };
            self.start_record(now, method, uri, line.len() as u64 + 2);
        }
        if let Some(live) = &self.live {
            let arg = match verb {
                Some(Verb::Pass) => "***",
                _ => arg,
            };
            live.command(verb.map_or("?", |v| v.name()), arg);
        }
        suspended
    }

    pub(super) fn start_record(
        &mut self,
        now: Instant,
        method: Cow<'static, str>,
        uri: &str,
        cs: u64,
    ) {
        let Some(cfg) = &self.config.logging else {
            return;
        };
        let mut rec = LogRecord::new(self.id, cfg.site.clone(), self.peer, self.local, method);
        if cfg.fields.has(Field::UriStem) && !uri.is_empty() {
            rec.uri = Some(uri.to_string());
        }
        rec.user = self.log_user.clone();
        rec.host = self.log_host.clone();
        rec.bytes_received = cs;
        rec.w3c = cfg.w3c;
        self.log = Some(CmdLog {
            rec: Box::new(rec),
            started: now,
        });
    }

    /// USER and HOST name who and where the session is, for every later record.
    fn note_identity(&mut self, verb: Option<Verb>, arg: &str) {
        let arg = arg.trim();
        match verb {
            Some(Verb::User) if !arg.is_empty() && !self.logged_in() => {
                self.log_user = Some(arg.into());
            }
            Some(Verb::Host) if !arg.is_empty() && matches!(self.login, Login::Start) => {
                self.log_host = Some(arg.into());
            }
            _ => {}
        }
    }

    /// Ends an urgent command at once (its record is written now) and puts the
    /// transfer's state back.
    pub(super) fn end_urgent(&mut self, now: Instant, suspended: Option<Suspended>) {
        let Some(s) = suspended else { return };
        if self.status == 0 {
            // ABOR's 226 and QUIT's 221 come after the transfer's own final reply.
            self.status = match self.verb {
                Some(Verb::Abor) => 226,
                Some(Verb::Quit) => 221,
                _ => 0,
            };
        }
        self.emit_log(now);
        self.verb = s.verb;
        self.status = s.status;
        self.sub = s.sub;
        self.win32 = s.win32;
        self.log = s.log;
    }

    /// Called whenever the session may have finished a command: once nothing is pending
    /// and the command has its final reply, its record is written and what it held of
    /// the shared state (an in-place upload) is let go.
    pub(super) fn command_done(&mut self, now: Instant) {
        if self.pending.is_some() || self.verb.is_none() || self.status == 0 {
            return;
        }
        self.emit_log(now);
        self.slot.end_upload();
        self.spend_command_state();
        self.verb = None;
        if let Some(live) = &self.live {
            let (user, logged_in) = match &self.login {
                Login::LoggedIn(p) => (Some(p.name.as_str()), true),
                Login::User { name, .. } => (Some(name.as_str()), false),
                Login::Start => (None, false),
            };
            let tls = self.control_encrypted();
            live.idle(&self.config.site_name, user, logged_in, tls);
        }
    }

    /// The greeting (or the choice of a site) is queued: `ControlChannelOpened`.
    pub(super) fn emit_opened(&mut self) {
        if self.log.is_some() {
            self.emit_log(self.last_now);
        }
    }

    /// What a command spends whatever its fate (RFC 959: REST and the data connection
    /// belong to the next transfer command; RNFR's source to the next command). A
    /// transfer that ran has taken both already; one refused at any point (550, 425,
    /// 521, a filter, a failed open) must not leave them to a later command, or the
    /// next plain STOR would write in place at a stale offset.
    fn spend_command_state(&mut self) {
        match self.verb {
            Some(
                Verb::Retr
                | Verb::Stor
                | Verb::Appe
                | Verb::Stou
                | Verb::List
                | Verb::Nlst
                | Verb::Mlsd,
            ) => {
                self.rest = 0;
                self.drop_data_channel();
            }
            Some(Verb::Rnto) => self.rename_from = None,
            _ => {}
        }
    }

    fn emit_log(&mut self, now: Instant) {
        let Some(CmdLog { mut rec, started }) = self.log.take() else {
            return;
        };
        rec.status = self.status;
        rec.sub = self.sub;
        rec.win32 = self.win32;
        rec.time_taken = now.saturating_duration_since(started);
        rec.tls = self.control_encrypted();
        if rec.debug.is_none() && self.sub != SubStatus::None {
            rec.debug = Some(Cow::Borrowed(self.sub.slug()));
        }
        self.sent_total += rec.bytes_sent;
        self.received_total += rec.bytes_received;
        self.status = 0;
        self.sub = SubStatus::None;
        self.win32 = 0;
        self.actions.push_back(Action::Log(rec));
    }

    /// At close: the unfinished command's record, then `ControlChannelClosed`.
    pub(super) fn log_close(&mut self, now: Instant, why: SubStatus) {
        if self.config.logging.is_none() {
            return;
        }
        if self.log.is_some() {
            self.emit_log(now);
        }
        self.start_record(now, Cow::Borrowed("ControlChannelClosed"), "", 0);
        if let Some(l) = &mut self.log {
            // The session's totals, and how it ended.
            l.started = self.opened;
            l.rec.bytes_received = self.received_total;
            l.rec.bytes_sent = self.sent_total;
            if why == SubStatus::None {
                l.rec.debug = Some(Cow::Borrowed(self.end_note.unwrap_or("closed")));
            }
        }
        self.sub = why;
        self.emit_log(now);
    }

    /// Notes the reply code (the first final one is the command's status) and its bytes.
    #[inline]
    pub(super) fn note_reply(&mut self, code: u16, bytes: usize) {
        if code >= 200 && self.status == 0 {
            self.status = code;
        }
        if let Some(l) = &mut self.log {
            l.rec.bytes_sent += bytes as u64;
        }
    }

    /// Refuses the command with a policy reply and logs why.
    pub(super) fn deny(&mut self, d: Denial) {
        self.sub = d.sub;
        self.reply(d.code, d.text);
    }

    pub(super) fn set_substatus(&mut self, sub: SubStatus) {
        self.sub = sub;
    }

    /// The account store could not check a login: logged with sub-status
    /// `logon-unavailable`, `ERROR_NO_LOGON_SERVERS`, and `logon-unavailable: <the store's reason>` in `x-debug`.
    pub(super) fn note_logon_unavailable(&mut self, why: &str) {
        self.sub = SubStatus::LogonUnavailable;
        self.win32 = log::WIN32_NO_LOGON_SERVERS;
        if let Some(l) = &mut self.log {
            let slug = SubStatus::LogonUnavailable.slug();
            l.rec.debug = Some(Cow::Owned(format!("{slug}: {why}")));
        }
    }

    /// A storage error is logged with the Windows code IIS would show.
    pub(super) fn note_fs_error(&mut self, e: &FsError) {
        self.win32 = log::win32_of(e);
        if let (FsError::Io(why), Some(l)) = (e, &mut self.log) {
            l.rec.debug = Some(Cow::Owned(why.clone()));
        }
    }

    /// A line over the length limit.
    pub(super) fn on_too_long(&mut self, now: Instant) {
        self.begin_command(now, &Err(ParseError::Unknown), b"-");
        // A line, however bad, is the command after RNFR.
        self.rename_from = None;
        self.deny(Denial {
            code: 500,
            text: "Command line too long.",
            sub: SubStatus::CommandLineTooLong,
        });
    }

    /// Command filtering, then the raw argument of a path command (denied sequences, its
    /// length). False when refused (the reply is sent).
    pub(super) fn filter_command(&mut self, cmd: &Command) -> bool {
        let rules = &self.config.filtering;
        let verdict = rules.check_command(cmd.verb).and_then(|()| {
            if filter::takes_path(cmd.verb) {
                rules.check_argument(&cmd.arg)
            } else {
                Ok(())
            }
        });
        match verdict {
            Ok(()) => true,
            Err(d) => {
                tracing::info!(session = %self.id, verb = cmd.verb.name(), sub = d.sub.code(), "request filtered");
                self.deny(d);
                false
            }
        }
    }

    /// The chokepoint's filter: hidden segments, path length, and (for file commands)
    /// extensions, judged on the resolved path the user sees. Also puts the resolved paths
    /// in the log record (`x-fullpath` is the site path: with isolation, it shows the
    /// user's home). False when refused (the reply is sent).
    pub(super) fn filter_path(&mut self, site: &VPath, shown: &VPath) -> bool {
        if let (Some(l), Some(cfg)) = (&mut self.log, &self.config.logging) {
            if cfg.fields.has(Field::UriStem) {
                l.rec.uri = Some(shown.to_string());
            }
            if cfg.fields.has(Field::FullPath) {
                l.rec.full_path = Some(site.to_string());
            }
        }
        let file = self.verb.is_some_and(filter::names_a_file);
        match self.config.filtering.check_path(shown, file) {
            Ok(()) => true,
            Err(d) => {
                tracing::info!(session = %self.id, path = %shown, sub = d.sub.code(), "request filtered");
                self.deny(d);
                false
            }
        }
    }

    /// Whether a listing shows `name` (hidden segments are left out).
    pub(super) fn listed(&self, name: &str) -> bool {
        !self.config.filtering.is_hidden(name)
    }

    /// PASS from a banned address fails at once, and the connection is closed.
    pub(super) fn refuse_banned(&mut self, now: Instant) -> bool {
        if !self.slot.policy().is_banned(now, self.peer.ip()) {
            return false;
        }
        self.login = Login::Start;
        self.sub = SubStatus::LogonBanned;
        self.reply(
            530,
            "Login refused: too many failed logins from your address.",
        );
        self.close();
        true
    }

    /// A wrong password: counted against the address, and noted for the log. The caller
    /// replies (a `Banned` verdict ends the session after the `530`).
    pub(super) fn login_failed(&mut self, now: Instant) -> Verdict {
        self.win32 = log::WIN32_LOGON_FAILURE;
        self.sub = SubStatus::LogonFailed;
        let verdict = self.slot.policy().record_failure(now, self.peer.ip());
        match verdict {
            Verdict::Banned => {
                tracing::warn!(session = %self.id, peer = %self.peer, "address banned after failed logins");
                self.sub = SubStatus::LogonBanned;
            }
            Verdict::WouldBan => {
                tracing::warn!(session = %self.id, peer = %self.peer, "failed-login limit reached (logging only)");
                self.sub = SubStatus::LogonWouldBan;
            }
            Verdict::Counted(_) | Verdict::NotCounted => {}
        }
        verdict
    }

    /// Before a login is granted: the address may have been banned while the password
    /// was checked, and the user may be at its session limit. False when refused (the
    /// reply is sent and the session closes).
    pub(super) fn admit_user(&mut self, now: Instant, principal: &Principal) -> bool {
        if self.refuse_banned(now) {
            return false;
        }
        // A site chosen after connecting (HOST, USER host|user, SNI) judges the address
        // (and the name, when it was looked up) by its own IP rules; the listener's
        // default site already did at accept.
        let rules = &self.config.ip_rules;
        if !rules.allows_named(self.peer.ip(), self.peer_name.as_deref()) {
            let action = rules.deny_action;
            tracing::info!(session = %self.id, peer = %self.peer, site = %self.config.site_name, "refused by the site's IP rules");
            self.login = Login::Start;
            self.sub = SubStatus::IpDenied;
            if action != DenyAction::Drop {
                self.reply(action.status(), "Access denied for your address.");
            }
            self.close();
            return false;
        }
        if !self.slot.take_user(&principal.name) {
            self.login = Login::Start;
            self.sub = SubStatus::TooManyForUser;
            self.reply(421, "Too many sessions for this user, try again later.");
            self.close();
            return false;
        }
        if self.config.logging.is_some() {
            self.log_user = Some(principal.name.as_str().into());
            if let Some(l) = &mut self.log {
                l.rec.user = self.log_user.clone();
            }
        }
        true
    }

    /// Counts this connection against `site` (none: against no site) under that site's
    /// connection limit. When the site is full, refuses with its max-clients message
    /// (`421`) and closes; false then.
    pub(super) fn count_for_site(&mut self, site: Option<usize>) -> bool {
        let Some(i) = site else {
            self.slot.release_site();
            return true;
        };
        let config = self.sites.site(i).clone();
        if self
            .slot
            .take_site(&config.site_name, config.limits.max_connections)
        {
            return true;
        }
        tracing::info!(session = %self.id, peer = %self.peer, site = %config.site_name, "refused: the site is full");
        self.sub = SubStatus::TooManyForSite;
        self.login = Login::Start;
        let rules = self.slot.policy().rules();
        let text = config
            .messages
            .max_clients
            .as_deref()
            .unwrap_or(&rules.max_clients_message);
        let lines = text.lines().map(str::to_owned).collect();
        self.reply_multi(421, lines);
        self.close();
        false
    }

    /// The PROXY protocol header named the client (now `peer`): it is judged as a
    /// direct connection is at accept, and greeted or refused as one would be.
    pub(super) fn admit_proxied(&mut self) {
        let now = self.last_now;
        let policy = self.slot.policy().clone();
        let addrs = (self.peer, self.local);
        match crate::server::judge(&policy, &self.sites, self.listener, now, addrs, false) {
            Ok(admitted) => {
                self.slot = admitted.slot;
                self.begin(now, admitted.lookup);
            }
            Err(refused) => {
                self.start_record(now, Cow::Borrowed("ControlChannelOpened"), "", 0);
                self.sub = refused.sub;
                if !self.listener.implicit_tls && !refused.reply.is_empty() {
                    // Already encoded; nothing is encrypted yet.
                    let code = refused
                        .reply
                        .get(..3)
                        .and_then(|c| std::str::from_utf8(c).ok()?.parse().ok());
                    self.note_reply(code.unwrap_or(0), refused.reply.len());
                    self.out.extend_from_slice(&refused.reply);
                }
                if let Some(l) = &mut self.log {
                    l.rec.debug = Some(Cow::Borrowed(refused.sub.slug()));
                }
                self.emit_log(now);
                self.close();
            }
        }
    }

    /// The reverse lookup of the peer's name is done: the IP rules that waited for it
    /// (the server's, then the listener's site's) judge, then the greeting goes out. A
    /// failed or unknown lookup is no name: only address entries apply then.
    pub(super) fn on_lookup(&mut self, now: Instant, completion: Completion) {
        let name = match completion {
            Completion::Hostname(name) => name,
            other => {
                tracing::error!(session = %self.id, ?other, "completion of the wrong kind");
                None
            }
        };
        self.peer_name = name.map(String::into_boxed_str);
        let ip = self.peer.ip();
        let site = self.listener.default.unwrap_or(self.listener.fallback);
        let policy = self.slot.policy().clone();
        let denied = [&policy.rules().ip_rules, &self.sites.site(site).ip_rules]
            .into_iter()
            .find(|rules| !rules.allows_named(ip, self.peer_name.as_deref()))
            .map(|rules| rules.deny_action);
        let Some(action) = denied else {
            tracing::debug!(session = %self.id, name = ?self.peer_name, "peer name looked up");
            return self.greet();
        };
        tracing::info!(session = %self.id, peer = %self.peer, name = ?self.peer_name, "refused by IP rules");
        // Logged as a refused connection is, at accept.
        self.start_record(now, Cow::Borrowed("ControlChannelOpened"), "", 0);
        self.sub = SubStatus::IpDenied;
        if action != DenyAction::Drop {
            self.reply(action.status(), "Access denied for your address.");
        }
        if let Some(l) = &mut self.log {
            l.rec.debug = Some(Cow::Borrowed(SubStatus::IpDenied.slug()));
        }
        self.emit_log(now);
        self.close();
    }

    /// REIN: the user's session no longer counts.
    pub(super) fn release_user(&mut self) {
        self.slot.release_user();
    }

    /// RETR of a file someone is writing in place (APPE, REST+STOR), unless the site
    /// allows reading uploads in progress. False when refused.
    pub(super) fn may_read_now(&mut self, real: &VPath) -> bool {
        if self.config.allow_read_uploads_in_progress
            || !self.slot.policy().upload_in_progress(real)
        {
            return true;
        }
        self.sub = SubStatus::UploadInProgress;
        self.reply(550, "The file is being uploaded; try again later.");
        false
    }

    /// An in-place upload is starting: readers are kept away until the command ends.
    pub(super) fn writing_in_place(&mut self, real: &VPath) {
        if !self.config.allow_read_uploads_in_progress {
            self.slot.start_upload(real.clone());
        }
    }

    /// The bandwidth limit of the next transfer, for `TransferSpec::rate_limit`.
    pub(super) fn rate_limit(&self) -> Option<u64> {
        let (user, anonymous) = match &self.login {
            Login::LoggedIn(p) => (Some(p.name.as_str()), p.anonymous),
            _ => (None, false),
        };
        self.config.limits.rate_for(user, anonymous)
    }

    /// The minimum data rate a transfer must keep (IIS `minBytesPerSecond`), judged by
    /// its pump over each data-timeout window; `None` when off.
    pub(super) fn min_rate(&self) -> Option<u64> {
        Some(self.config.limits.min_bytes_per_second).filter(|&r| r > 0)
    }

    /// The reply of a transfer its pump ended by policy (size, rate, stall), with the
    /// sub-status it logs.
    pub(super) fn policy_end_reply(&mut self, outcome: &TransferOutcome) -> Option<(u16, String)> {
        match outcome {
            TransferOutcome::TooLarge { .. } => {
                self.sub = SubStatus::UploadTooLarge;
                let max = self.config.filtering.max_upload_size.unwrap_or(0);
                Some((
                    552,
                    format!("Upload exceeds the maximum size of {max} bytes; discarded."),
                ))
            }
            TransferOutcome::TooSlow { .. } => {
                self.sub = SubStatus::TooSlow;
                Some((426, "Transfer below the minimum data rate; aborted.".into()))
            }
            TransferOutcome::Stalled { .. } => {
                self.sub = SubStatus::Stalled;
                Some((
                    426,
                    "No progress on the data connection; transfer aborted.".into(),
                ))
            }
            _ => None,
        }
    }

    /// A transfer's bytes and how it ended, for the log.
    pub(super) fn note_transfer(&mut self, upload: bool, outcome: &TransferOutcome) {
        self.win32 = match outcome {
            TransferOutcome::Complete { .. } => self.win32,
            TransferOutcome::ConnectionLost { .. } => log::WIN32_CONNECTION_RESET,
            TransferOutcome::Aborted { .. }
            | TransferOutcome::Stalled { .. }
            | TransferOutcome::TooSlow { .. }
            | TransferOutcome::TooLarge { .. } => log::WIN32_ABORTED,
            TransferOutcome::Storage { error, .. } => log::win32_of(error),
            TransferOutcome::Tls {
                error: crate::tls::DataTlsError::Truncated,
                ..
            } => log::WIN32_CONNECTION_RESET,
            TransferOutcome::Tls { .. } => log::WIN32_TLS_FAILURE,
        };
        if let Some(l) = &mut self.log {
            let bytes = outcome.bytes();
            l.rec.data_bytes += bytes;
            if upload {
                l.rec.bytes_received += bytes;
            } else {
                l.rec.bytes_sent += bytes;
            }
        }
    }
}

/// The command word of a line that did not parse, for `cs-method`: at most 8 visible
/// ASCII characters, upper case.
fn unknown_word(line: &[u8]) -> String {
    let word = line.split(|&b| b == b' ').next().unwrap_or(b"");
    let mut out: String = word
        .iter()
        .take(8)
        .map(|&b| {
            if b.is_ascii_graphic() {
                b.to_ascii_uppercase() as char
            } else {
                '?'
            }
        })
        .collect();
    if out.is_empty() {
        out.push('-');
    }
    out
}
