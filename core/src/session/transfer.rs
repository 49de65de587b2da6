//! RETR, STOR, APPE, STOU, LIST, NLST, MLSD, STAT with a path, ABOR, and the transfer
//! events. A transfer goes: request (open / read dir) → 150 → data connection →
//! `StartTransfer` → `TransferDone` → (uploads: `CloseFile` commit or discard) → reply.

use std::time::{Instant, SystemTime};

use super::nav::Access;
use super::state::{Pending, Then, Transfer};
use super::timer::Timer;
use super::{Action, Body, DataError, TransferOutcome};
use crate::backend::{Completion, DirEntry, FsError, Request, WriteMode};
use crate::config::ListingStyle;
use crate::ids::{FileHandle, TransferId};
use crate::listing;
use crate::path::VPath;
use crate::pump::{Pump, PumpSpec, Source};
use crate::session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListKind {
    List,
    Nlst,
    Mlsd,
    /// STAT with a path: the listing goes over the control channel.
    Stat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Stor,
    Appe,
    Stou,
}

#[derive(Debug)]
pub(crate) struct ListJob {
    kind: ListKind,
    real: VPath,
    /// The listed directory as the user names it.
    shown: VPath,
    /// A name pattern (`*.txt`) that filters the entries.
    glob: Option<String>,
    /// The path named a file, so it is being listed on its own.
    single: bool,
}

#[derive(Debug)]
pub(crate) struct OpenJob {
    file: FileHandle,
    upload: Option<StoreKind>,
    shown: VPath,
}

impl Session {
    pub(super) fn cmd_list(&mut self, kind: ListKind, arg: &str) {
        let arg = if kind == ListKind::Mlsd {
            arg
        } else {
            strip_list_flags(arg)
        };
        if kind != ListKind::Stat && !self.has_data_channel() {
            return;
        }
        let (dir, glob) = split_glob(arg);
        let Some((real, shown)) = self.authorize(dir, Access::Read) else {
            return;
        };
        if kind != ListKind::Stat {
            // A listing is a transfer command: it spends REST (so does any refusal of
            // it, in `command_done`).
            self.rest = 0;
        }
        let job = ListJob {
            kind,
            real: real.clone(),
            shown,
            glob,
            single: false,
        };
        self.request(Request::ReadDir { path: real }, Then::List(job));
    }

    pub(super) fn cmd_retr(&mut self, arg: &str) {
        if arg.is_empty() {
            return self.reply(501, "RETR needs a file name.");
        }
        if !self.has_data_channel() {
            return;
        }
        let Some((real, shown)) = self.authorize(arg, Access::Read) else {
            return;
        };
        if !self.may_read_now(&real) {
            return;
        }
        let file = FileHandle(self.next_id());
        let offset = std::mem::take(&mut self.rest);
        let job = OpenJob {
            file,
            upload: None,
            shown,
        };
        self.request(
            Request::OpenRead {
                file,
                path: real,
                offset,
            },
            Then::Open(job),
        );
    }

    pub(super) fn cmd_store(&mut self, arg: &str, kind: StoreKind) {
        let arg = match (kind, arg.is_empty()) {
            (StoreKind::Stou, true) => "ftp-upload",
            (_, true) => return self.reply(501, "A file name is required."),
            (_, false) => arg,
        };
        if !self.has_data_channel() {
            return;
        }
        let Some((real, shown)) = self.authorize(arg, Access::Write) else {
            return;
        };
        let offset = std::mem::take(&mut self.rest);
        let mode = match kind {
            StoreKind::Stor if offset > 0 => WriteMode::At(offset),
            StoreKind::Stor => WriteMode::Replace,
            StoreKind::Appe => WriteMode::Append,
            StoreKind::Stou => WriteMode::Unique,
        };
        if matches!(mode, WriteMode::Append | WriteMode::At(_)) {
            self.writing_in_place(&real);
        }
        let file = FileHandle(self.next_id());
        let job = OpenJob {
            file,
            upload: Some(kind),
            shown,
        };
        self.request(
            Request::OpenWrite {
                file,
                path: real,
                mode,
            },
            Then::Open(job),
        );
    }

    /// 425 unless PASV/EPSV/PORT/EPRT came first; 521 when the site's data-channel
    /// policy refuses the current protection level.
    fn has_data_channel(&mut self) -> bool {
        if let Some(refusal) = self.data_policy_refusal() {
            self.reply(521, refusal);
            return false;
        }
        let ok = self.data != super::state::DataChan::None;
        if !ok {
            self.reply(425, "Use PORT, EPRT, PASV or EPSV first.");
        }
        ok
    }

    pub(super) fn on_listing(&mut self, now: Instant, mut job: ListJob, completion: Completion) {
        let (mut entries, wall) = match completion {
            Completion::Listing(Ok(listing)) => listing,
            Completion::Listing(Err(FsError::NotADirectory)) if job.kind != ListKind::Mlsd => {
                job.single = true;
                let path = job.real.clone();
                return self.request(Request::Stat { path }, Then::List(job));
            }
            Completion::Listing(Err(FsError::NotADirectory)) => {
                return self.reply(501, "MLSD needs a directory.")
            }
            Completion::Stat(Ok(meta)) if job.single => {
                let name = job.real.file_name().unwrap_or("/").to_string();
                (vec![DirEntry { name, meta }], SystemTime::UNIX_EPOCH)
            }
            Completion::Listing(Err(e)) | Completion::Stat(Err(e)) => return self.fs_error(&e),
            other => return self.unexpected(other),
        };
        if !job.single && job.shown.is_root() && self.view.virtual_dirs {
            self.add_virtual_dirs(&mut entries);
        }
        let body = self.render(&job, entries, wall);
        if job.kind == ListKind::Stat {
            let mut lines = vec!["Status follows:".to_string()];
            lines.extend(
                String::from_utf8_lossy(&body)
                    .lines()
                    .map(|l| format!(" {l}")),
            );
            lines.push("End of status.".into());
            let code = if job.single { 213 } else { 212 };
            return self.reply_multi(code, lines);
        }
        let opening = "Here comes the directory listing.".to_string();
        let done = "Directory send OK.".to_string();
        self.begin_transfer(now, Body::Bytes(body), None, false, opening, done);
    }

    /// Global virtual directories appear in the listing of the user's `/` (replacing a
    /// physical entry of the same name, which they hide).
    fn add_virtual_dirs(&self, entries: &mut Vec<DirEntry>) {
        for v in &self.config.virtual_dirs {
            entries.retain(|e| !crate::site::same_name(&e.name, &v.name));
            entries.push(DirEntry {
                name: v.name.clone(),
                meta: crate::backend::Metadata {
                    kind: crate::backend::FileKind::Dir,
                    size: 0,
                    modified: None,
                    mode: 0o755,
                    unique: None,
                    nlink: 2,
                },
            });
        }
    }

    /// Whether the MLSD perm fact of `name` in the listed directory offers changes.
    fn entry_writable(&self, job: &ListJob, name: &str) -> bool {
        if self.config.rules.is_none() {
            // The switches do not depend on the path.
            return self.may(Access::Write, &job.shown);
        }
        job.shown
            .child(name)
            .is_some_and(|p| self.may(Access::Write, &self.site_path_of(&p)))
    }

    fn render(&self, job: &ListJob, mut entries: Vec<DirEntry>, wall: SystemTime) -> Vec<u8> {
        if let Some(pattern) = &job.glob {
            entries.retain(|e| glob_match(pattern.as_bytes(), e.name.as_bytes()));
        }
        entries.retain(|e| self.listed(&e.name));
        entries.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        // Lines are 40-60 bytes plus the name (ls -l, NLST), MLSD's up to ~110: one
        // allocation for the whole body in the common case.
        let line = match job.kind {
            ListKind::Nlst => 2,
            ListKind::Mlsd => 112,
            _ => 64,
        };
        let names: usize = entries.iter().map(|e| e.name.len()).sum();
        let mut out = Vec::with_capacity(names + entries.len() * line);
        let now = listing::unix_secs(Some(wall));
        // Without rules the perm fact does not depend on the entry.
        let writable = self
            .config
            .rules
            .is_none()
            .then(|| self.may(Access::Write, &job.shown));
        for entry in &entries {
            match (job.kind, self.config.listing_style) {
                (ListKind::Nlst, _) => {
                    out.extend_from_slice(entry.name.as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
                (ListKind::Mlsd, _) => {
                    let writable =
                        writable.unwrap_or_else(|| self.entry_writable(job, &entry.name));
                    listing::mlsx_line(entry, self.facts, writable, &mut out)
                }
                (_, ListingStyle::MsDos) => listing::msdos_line(entry, &mut out),
                (_, ListingStyle::Unix) => listing::unix_line_at(entry, now, &mut out),
            }
        }
        out
    }

    pub(super) fn on_opened(&mut self, now: Instant, job: OpenJob, completion: Completion) {
        let opened = match completion {
            Completion::Opened(Ok(opened)) => opened,
            Completion::Opened(Err(e)) => return self.fs_error(&e),
            other => return self.unexpected(other),
        };
        let mode = if self.ascii { "ASCII" } else { "BINARY" };
        let name = opened.path.file_name().unwrap_or("").to_string();
        let (body, opening, done) = match job.upload {
            None => (
                Body::Send(job.file),
                format!(
                    "Opening {mode} mode data connection for {} ({} bytes).",
                    job.shown, opened.size
                ),
                "Transfer complete.".to_string(),
            ),
            Some(StoreKind::Stou) => (
                Body::Receive(job.file),
                format!("FILE: {name}"),
                format!("Transfer complete (unique file name: {name})."),
            ),
            Some(_) => (
                Body::Receive(job.file),
                format!("Opening {mode} mode data connection for {}.", job.shown),
                "Transfer complete.".to_string(),
            ),
        };
        let upload = job.upload.is_some();
        if let Some(live) = &self.live {
            let size = (!upload).then_some(opened.size);
            live.transfer_started(now, upload, job.shown.to_string(), size);
        }
        self.begin_transfer(now, body, Some(job.file), upload, opening, done);
    }

    fn begin_transfer(
        &mut self,
        now: Instant,
        body: Body,
        file: Option<FileHandle>,
        upload: bool,
        opening: String,
        done_text: String,
    ) {
        let Some((conn, connected)) = self.take_data_channel(now) else {
            // The listener failed while the file was being opened.
            if let Some(file) = file {
                self.close_file(file, false);
            }
            return self.reply(425, "Data connection lost; use PASV or PORT again.");
        };
        self.reply(150, &opening);
        let ascii = self.ascii && !matches!(body, Body::Bytes(_));
        self.pending = Some(Pending::Transfer(Transfer {
            xfer: None,
            conn: Some(conn),
            connected,
            body: Some(body),
            ascii,
            upload,
            file,
            bytes: 0,
            aborted: false,
            done_text,
        }));
        if connected {
            self.start_transfer(now);
        }
    }

    /// The data connection is there: hand the body, in its pump, to the driver.
    pub(super) fn start_transfer(&mut self, now: Instant) {
        let xfer = TransferId(self.next_id());
        let rate_limit = self.rate_limit();
        let min_rate = self.min_rate();
        let stall = self.config.timeouts.transfer_stall;
        let Some(Pending::Transfer(t)) = &mut self.pending else {
            return;
        };
        let (Some(conn), Some(body)) = (t.conn, t.body.take()) else {
            return;
        };
        t.xfer = Some(xfer);
        let ascii = t.ascii;
        let tls = match self.data_tls() {
            Ok(tls) => tls,
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "cannot start data TLS");
                self.cancel_waiting_transfer();
                return self.reply(425, "Can't open data connection: TLS unavailable.");
            }
        };
        let (source, file, max_bytes) = match body {
            Body::Send(file) => (Source::File, Some(file), None),
            Body::Receive(file) => (
                Source::Upload,
                Some(file),
                self.config.filtering.max_upload_size,
            ),
            Body::Bytes(bytes) => (Source::Bytes(bytes), None, None),
        };
        let spec = PumpSpec {
            source,
            ascii,
            tls,
            rate_limit,
            max_bytes,
            stall,
            min_rate,
        };
        let pump = Box::new(Pump::new(xfer, spec, now));
        self.actions.push_back(Action::StartTransfer {
            xfer,
            conn,
            file,
            pump,
        });
        self.timers.stop(Timer::DataConnect);
    }

    /// The pump's running total, for STAT.
    pub(super) fn on_progress(&mut self, xfer: TransferId, bytes: u64) {
        if let Some(Pending::Transfer(t)) = &mut self.pending {
            if t.xfer == Some(xfer) {
                t.bytes = bytes;
                if let Some(live) = &self.live {
                    live.progress(bytes);
                }
            }
        }
    }

    pub(super) fn on_transfer_done(
        &mut self,
        _now: Instant,
        xfer: TransferId,
        outcome: TransferOutcome,
    ) {
        let t = match self.pending.take() {
            Some(Pending::Transfer(t)) if t.xfer == Some(xfer) => t,
            other => {
                self.pending = other;
                return;
            }
        };
        // A driver that cut an upload late still gets the limit applied.
        let outcome = match outcome {
            TransferOutcome::Complete { bytes } | TransferOutcome::Aborted { bytes }
                if t.upload && self.config.filtering.upload_too_large(bytes) =>
            {
                TransferOutcome::TooLarge { bytes }
            }
            other => other,
        };
        let too_large = matches!(outcome, TransferOutcome::TooLarge { .. });
        let complete = matches!(outcome, TransferOutcome::Complete { .. });
        let replies = match (self.policy_end_reply(&outcome), &outcome, t.aborted) {
            (Some(reply), _, _) => vec![reply],
            (None, TransferOutcome::Complete { .. }, false) => vec![(226, t.done_text)],
            // ABOR came after the transfer had completed: it completed (and an upload is
            // kept), so it says so; then ABOR's own 226 (RFC 959).
            (None, TransferOutcome::Complete { .. }, true) => {
                vec![(226, t.done_text), (226, "ABOR successful.".into())]
            }
            (None, _, true) => {
                vec![
                    (426, "Transfer aborted.".into()),
                    (226, "ABOR successful.".into()),
                ]
            }
            (None, TransferOutcome::Storage { error, .. }, false) => {
                vec![(error.reply_code(), format!("Transfer failed: {error}."))]
            }
            (None, TransferOutcome::Tls { error, .. }, false) => {
                vec![Self::tls_failure_reply(error)]
            }
            (None, _, _) => vec![(426, "Data connection lost; transfer aborted.".into())],
        };
        self.note_transfer(t.upload, &outcome);
        if let Some(live) = &self.live {
            live.transfer_ended();
        }
        tracing::debug!(session = %self.id, bytes = outcome.bytes(), ?outcome, "transfer done");
        match t.file {
            Some(file) if t.upload => {
                // An upload cut at the size limit is never kept, even in part.
                let commit = complete || (self.config.keep_partial_uploads && !too_large);
                let request = Request::CloseFile { file, commit };
                self.request(request, Then::CloseUpload { replies });
            }
            file => {
                if let Some(file) = file {
                    self.close_file(file, false);
                }
                self.send_replies(replies);
            }
        }
    }

    /// The TLS layer for a data connection under `PROT P`, bound to this session.
    pub(super) fn data_tls(&self) -> Result<Option<crate::tls::DataTls>, rustls::Error> {
        let Some(settings) = self.config.tls.as_ref().filter(|_| self.prot_private) else {
            return Ok(None);
        };
        let expect = settings
            .require_session_reuse
            .then(|| crate::tls::session_token(self.id));
        let tls = crate::tls::DataTls::new(
            &settings.data_config,
            expect,
            settings.strict_close_notify,
            settings.client_certificates == crate::tls::ClientCertificates::Require,
        )?
        .with_logins(self.slot.policy().clone());
        Ok(Some(tls))
    }

    fn tls_failure_reply(error: &crate::tls::DataTlsError) -> (u16, String) {
        use crate::tls::DataTlsError;
        match error {
            DataTlsError::NotResumed => (
                522,
                "TLS session of data connection not resumed; this site requires the data \
                 connection to reuse the control connection's TLS session. Make the \
                 client reuse it (Python ftplib: wrap the data socket with \
                 session=self.sock.session), or set require_tls_session_reuse = false \
                 in the site's [site.tls]."
                    .into(),
            ),
            DataTlsError::Handshake(why) => {
                (522, format!("Data connection TLS handshake failed: {why}."))
            }
            DataTlsError::Truncated => (
                426,
                "Data connection closed without TLS close_notify; upload truncated \
                 (strict_close_notify)."
                    .into(),
            ),
            DataTlsError::Protocol(why) => {
                (426, format!("Data connection lost; TLS error: {why}."))
            }
        }
    }

    pub(super) fn on_upload_closed(&mut self, replies: Vec<(u16, String)>, completion: Completion) {
        match completion {
            Completion::Done(Err(e)) if replies.first().is_some_and(|r| r.0 == 226) => {
                self.fs_error(&e)
            }
            Completion::Done(_) => self.send_replies(replies),
            other => self.unexpected(other),
        }
    }

    fn send_replies(&mut self, replies: Vec<(u16, String)>) {
        for (code, text) in replies {
            self.reply(code, &text);
        }
    }

    /// Releases a file without waiting for the answer (reads, and uploads that never
    /// received a byte).
    fn close_file(&mut self, file: FileHandle, commit: bool) {
        let req = crate::ids::RequestId(self.next_id());
        self.actions.push_back(Action::Request {
            req,
            request: Request::CloseFile { file, commit },
        });
    }

    pub(super) fn cmd_abor(&mut self, _now: Instant) {
        match &mut self.pending {
            Some(Pending::Transfer(t)) if t.xfer.is_some() => {
                if !t.aborted {
                    t.aborted = true;
                    let xfer = t.xfer.expect("checked above");
                    self.actions.push_back(Action::AbortTransfer { xfer });
                }
            }
            Some(Pending::Transfer(_)) => {
                self.cancel_waiting_transfer();
                self.reply(426, "Transfer aborted.");
                self.reply(226, "ABOR successful.");
            }
            _ => {
                // RFC 959: with no transfer running, ABOR still closes the data
                // connection (a listener or an idle connection from PASV/PORT).
                self.drop_data_channel();
                self.reply(225, "No transfer to abort.")
            }
        }
    }

    /// A transfer that never got its data connection: 425, and release what it held.
    pub(super) fn fail_before_start(&mut self, error: &DataError) {
        self.cancel_waiting_transfer();
        self.reply(425, Self::data_error_text(error));
    }

    fn cancel_waiting_transfer(&mut self) {
        if let Some(Pending::Transfer(t)) = self.pending.take() {
            if let Some(conn) = t.conn {
                self.actions.push_back(Action::CloseData { conn });
            }
            if let Some(file) = t.file {
                self.close_file(file, false);
            }
        }
        self.timers.stop(Timer::DataConnect);
    }
}

/// LIST's `-l`, `-a`, `-la` ... flags are not paths (clients send them; `ls` habits).
fn strip_list_flags(arg: &str) -> &str {
    let mut rest = arg.trim_start();
    while rest.starts_with('-') {
        match rest.split_once(' ') {
            Some((_, tail)) => rest = tail.trim_start(),
            None => return "",
        }
    }
    rest
}

/// Splits `dir/*.txt` into `dir` and the pattern; no pattern characters → no pattern.
fn split_glob(arg: &str) -> (&str, Option<String>) {
    let (dir, last) = match arg.rsplit_once('/') {
        Some((dir, last)) => (if dir.is_empty() { "/" } else { dir }, last),
        None => (".", arg),
    };
    if last.contains(['*', '?']) {
        (dir, Some(last.to_string()))
    } else if arg.is_empty() {
        (".", None)
    } else {
        (arg, None)
    }
}

/// Shell-style matching of `*` and `?`, iterative (no exponential backtracking).
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_flags_are_not_paths() {
        assert_eq!(strip_list_flags("-la"), "");
        assert_eq!(strip_list_flags("-a -l dir"), "dir");
        assert_eq!(strip_list_flags("dir"), "dir");
        assert_eq!(strip_list_flags(""), "");
    }

    #[test]
    fn globs_split_and_match() {
        assert_eq!(split_glob("*.txt"), (".", Some("*.txt".into())));
        assert_eq!(split_glob("/a/b?.c"), ("/a", Some("b?.c".into())));
        assert_eq!(split_glob("/x*"), ("/", Some("x*".into())));
        assert_eq!(split_glob("dir"), ("dir", None));
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"a.txt.bak"));
        assert!(glob_match(b"a?c*", b"abcdef"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"**", b""));
    }
}
