//! Path commands that need no data connection: PWD, CWD, MKD, RMD, DELE, RNFR/RNTO,
//! SIZE, MDTM, MFMT, MLST, REST; and the one place that resolves and authorizes a path.

use std::time::Instant;

use super::state::{Login, Then};
use crate::backend::{Completion, DirEntry, FsError, Metadata, Request};
use crate::listing;
use crate::path::VPath;
use crate::proto::reply::quote_path;
use crate::session::Session;

pub(crate) use crate::authz::Access;

impl Session {
    /// The chokepoint every path-taking command goes through: resolves the argument
    /// against the current directory inside the user's view (home, virtual
    /// directories) and checks the site's rules let the user `access` it. On refusal the
    /// reply is sent and `None` returned; otherwise the storage path and the shown path.
    pub(super) fn authorize(&mut self, arg: &str, access: Access) -> Option<(VPath, VPath)> {
        let Some(path) = self.resolve(arg) else {
            self.reply(553, "File name not allowed.");
            return None;
        };
        if !self.filter_path(&path.site, &path.shown) {
            return None;
        }
        if !self.may(access, &path.site) {
            tracing::debug!(session = %self.id, site_path = %path.site, ?access, "denied by rule");
            self.set_substatus(crate::log::SubStatus::PermissionDenied);
            self.reply(550, "Permission denied.");
            return None;
        }
        Some((path.storage, path.shown))
    }

    /// Whether the logged-in user may `access` the site path `site_path`.
    pub(super) fn may(&self, access: Access, site_path: &VPath) -> bool {
        let Login::LoggedIn(who) = &self.login else {
            return false;
        };
        match (&self.config.rules, access) {
            (Some(rules), _) => rules.allows(who, site_path, access),
            (None, Access::Read) => true,
            (None, Access::Write) if who.anonymous => self.config.anonymous_write,
            (None, Access::Write) => self.config.user_write,
        }
    }

    /// Whether a storage path is the root of the site, of the user's jail or of a
    /// virtual directory: never removed, renamed or written as a file.
    fn is_a_root(&self, real: &VPath, shown: &VPath) -> bool {
        shown.is_root()
            || *real == self.config.storage_root
            || self
                .config
                .virtual_dirs
                .iter()
                .any(|v| v.storage_root == *real)
    }

    /// The site path of a shown path.
    pub(super) fn site_path_of(&self, shown: &VPath) -> VPath {
        crate::site::map_path(&self.config, &self.view, shown).0
    }

    pub(super) fn cmd_pwd(&mut self) {
        let text = format!(
            "{} is the current directory.",
            quote_path(self.cwd.as_str())
        );
        self.reply(257, &text);
    }

    pub(super) fn cmd_cwd(&mut self, arg: &str) {
        if arg.is_empty() {
            return self.reply(501, "CWD needs a directory.");
        }
        if let Some((real, shown)) = self.authorize(arg, Access::Read) {
            self.request(Request::Stat { path: real }, Then::Cwd { path: shown });
        }
    }

    pub(super) fn cmd_mkd(&mut self, arg: &str) {
        self.simple(
            arg,
            Access::Write,
            |path| Request::MakeDir { path },
            |shown| (257, format!("{} created.", quote_path(shown.as_str()))),
        );
    }

    pub(super) fn cmd_rmd(&mut self, arg: &str) {
        self.simple(
            arg,
            Access::Write,
            |path| Request::RemoveDir { path },
            |_| (250, "Directory removed.".into()),
        );
    }

    pub(super) fn cmd_dele(&mut self, arg: &str) {
        self.simple(
            arg,
            Access::Write,
            |path| Request::RemoveFile { path },
            |_| (250, "File deleted.".into()),
        );
    }

    /// A command that is one request and one reply.
    fn simple(
        &mut self,
        arg: &str,
        access: Access,
        request: impl FnOnce(VPath) -> Request,
        ok: impl FnOnce(&VPath) -> (u16, String),
    ) {
        if arg.is_empty() {
            return self.reply(501, "A path is required.");
        }
        if let Some((real, shown)) = self.authorize(arg, access) {
            if access == Access::Write && self.is_a_root(&real, &shown) {
                return self.reply(550, "Permission denied.");
            }
            let (code, text) = ok(&shown);
            self.request(request(real), Then::Reply { code, text });
        }
    }

    pub(super) fn cmd_rnfr(&mut self, arg: &str) {
        if arg.is_empty() {
            return self.reply(501, "RNFR needs a path.");
        }
        if let Some((real, shown)) = self.authorize(arg, Access::Write) {
            if self.is_a_root(&real, &shown) {
                return self.reply(550, "Permission denied.");
            }
            self.request(
                Request::Stat { path: real.clone() },
                Then::Rnfr { path: real },
            );
        }
    }

    pub(super) fn cmd_rnto(&mut self, arg: &str) {
        let Some(from) = self.rename_from.take() else {
            return self.reply(503, "RNFR required first.");
        };
        if arg.is_empty() {
            return self.reply(501, "RNTO needs a path.");
        }
        if let Some((to, shown)) = self.authorize(arg, Access::Write) {
            if self.is_a_root(&to, &shown) {
                return self.reply(550, "Permission denied.");
            }
            let replace = self.config.allow_replace_on_rename;
            self.request(Request::Rename { from, to, replace }, Then::Rnto);
        }
    }

    pub(super) fn cmd_size(&mut self, arg: &str) {
        self.stat_then(arg, Then::Size);
    }

    /// MDTM path (read), or `MDTM YYYYMMDDHHMMSS path` (set, as vsftpd and IIS allow).
    pub(super) fn cmd_mdtm(&mut self, arg: &str) {
        if let Some((time, path)) = arg.split_once(' ') {
            if let Some(t) = listing::parse_time(time) {
                return self.set_mtime(t, path, 213);
            }
        }
        self.stat_then(arg, Then::Mdtm);
    }

    pub(super) fn cmd_mfmt(&mut self, arg: &str) {
        let parsed = arg
            .split_once(' ')
            .and_then(|(t, p)| Some((listing::parse_time(t)?, p)));
        match parsed {
            Some((time, path)) if !path.is_empty() => self.set_mtime(time, path, 213),
            _ => self.reply(501, "MFMT takes YYYYMMDDHHMMSS and a path."),
        }
    }

    fn set_mtime(&mut self, modified: std::time::SystemTime, arg: &str, code: u16) {
        if let Some((real, shown)) = self.authorize(arg, Access::Write) {
            let text = format!("Modify={}; {}", listing::format_time(modified), shown);
            self.request(
                Request::SetModified {
                    path: real,
                    modified,
                },
                Then::Reply { code, text },
            );
        }
    }

    pub(super) fn cmd_mlst(&mut self, arg: &str) {
        let arg = if arg.is_empty() { "." } else { arg };
        if let Some((real, shown)) = self.authorize(arg, Access::Read) {
            let writable = self.may(Access::Write, &self.site_path_of(&shown));
            self.request(Request::Stat { path: real }, Then::Mlst { shown, writable });
        }
    }

    fn stat_then(&mut self, arg: &str, then: Then) {
        if arg.is_empty() {
            return self.reply(501, "A path is required.");
        }
        if let Some((real, _)) = self.authorize(arg, Access::Read) {
            self.request(Request::Stat { path: real }, then);
        }
    }

    pub(super) fn cmd_rest(&mut self, arg: &str) {
        match arg.trim().parse::<u64>() {
            Ok(offset) => {
                self.rest = offset;
                let text = format!("Restarting at {offset}. Send STOR or RETR to resume.");
                self.reply(350, &text);
            }
            Err(_) => {
                // A refused REST leaves no offset behind, not even an earlier one.
                self.rest = 0;
                self.reply(501, "REST takes a byte offset.")
            }
        }
    }

    /// Completions of the requests made above.
    pub(super) fn on_nav_then(&mut self, then: Then, completion: Completion) {
        match (then, completion) {
            (Then::Cwd { path }, Completion::Stat(Ok(meta))) if meta.is_dir() => {
                self.cwd = path;
                let text = format!("Directory changed to {}.", self.cwd);
                self.reply(250, &text);
            }
            (Then::Cwd { .. }, Completion::Stat(Ok(_))) => self.reply(550, "Not a directory."),
            (Then::Size, Completion::Stat(Ok(meta))) if !meta.is_dir() => {
                self.reply(213, &meta.size.to_string())
            }
            (Then::Mdtm, Completion::Stat(Ok(meta))) if !meta.is_dir() => {
                let time = meta.modified.map(listing::format_time).unwrap_or_default();
                self.reply(213, &time)
            }
            (Then::Size | Then::Mdtm, Completion::Stat(Ok(_))) => {
                self.reply(550, "Not a regular file.")
            }
            (Then::Mlst { shown, writable }, Completion::Stat(Ok(meta))) => {
                self.mlst_reply(&shown, meta, writable)
            }
            (Then::Rnfr { path }, Completion::Stat(Ok(_))) => {
                self.rename_from = Some(path);
                self.reply(350, "Ready for RNTO.");
            }
            (Then::Reply { code, text }, Completion::Done(Ok(()))) => self.reply(code, &text),
            (Then::Rnto, Completion::Done(Ok(()))) => self.reply(250, "Rename successful."),
            (Then::Rnto, Completion::Done(Err(FsError::AlreadyExists)))
                if !self.config.allow_replace_on_rename =>
            {
                self.note_fs_error(&FsError::AlreadyExists);
                self.deny(crate::policy::Denial::RENAME_TARGET_EXISTS);
            }
            (_, Completion::Stat(Err(e)) | Completion::Done(Err(e))) => self.fs_error(&e),
            (_, other) => self.unexpected(other),
        }
    }

    fn mlst_reply(&mut self, shown: &VPath, meta: Metadata, writable: bool) {
        let entry = DirEntry {
            name: shown.to_string(),
            meta,
        };
        let mut line = vec![b' '];
        listing::mlsx_line(&entry, self.facts, writable, &mut line);
        let fact_line = String::from_utf8_lossy(&line).trim_end().to_string();
        self.reply_multi(
            250,
            vec![format!("Listing {shown}"), fact_line, "End".into()],
        );
    }

    /// The reply for a failed storage operation.
    pub(super) fn fs_error(&mut self, e: &FsError) {
        self.note_fs_error(e);
        let text = match e {
            FsError::NotFound => "No such file or directory.",
            FsError::PermissionDenied => "Permission denied.",
            FsError::AlreadyExists => "File exists.",
            FsError::NotEmpty => "Directory not empty.",
            FsError::NotADirectory => "Not a directory.",
            FsError::IsADirectory => "Is a directory.",
            FsError::NoSpace => "Insufficient storage space.",
            FsError::BadName => "File name not allowed.",
            FsError::Io(_) => "Local error in processing.",
            FsError::Unsupported(why) => why,
        };
        self.reply(e.reply_code(), text);
    }

    pub(super) fn on_then(&mut self, now: Instant, then: Then, completion: Completion) {
        match then {
            Then::Login { user, at } => self.on_login(now, user, at, completion),
            Then::Home { principal, home } => self.on_home(now, principal, home, completion),
            Then::List(job) => self.on_listing(now, job, completion),
            Then::Open(job) => self.on_opened(now, job, completion),
            Then::CloseUpload { replies } => self.on_upload_closed(replies, completion),
            Then::Lookup => self.on_lookup(now, completion),
            other => self.on_nav_then(other, completion),
        }
    }
}
