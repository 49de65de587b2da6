//! USER, PASS, ACCT, HOST, REIN, QUIT and the security-exchange verbs.

use std::time::Instant;

use super::state::{Ending, Login, Pending, Then};
use super::timer::Timer;
use crate::backend::{AuthError, Completion, Principal, Request, Secret};
use crate::path::VPath;
use crate::session::Session;

/// User names that mean an anonymous login.
fn is_anonymous_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("anonymous") || name.eq_ignore_ascii_case("ftp")
}

impl Session {
    pub(super) fn cmd_user(&mut self, arg: &str) {
        if self.logged_in() {
            return self.reply(530, "Already logged in; use REIN to change user.");
        }
        if arg.is_empty() {
            return self.reply(501, "USER needs a user name.");
        }
        let anonymous = is_anonymous_name(arg);
        if anonymous && !self.config.allow_anonymous {
            self.set_substatus(crate::log::SubStatus::AnonymousDenied);
            self.login = Login::Start;
            return self.reply(530, "Anonymous access is not allowed here.");
        }
        self.login = Login::User {
            name: arg.to_string(),
            anonymous,
        };
        if anonymous {
            self.reply(
                331,
                "Anonymous login ok, send your e-mail address as password.",
            );
        } else {
            self.reply(331, &format!("Password required for {arg}."));
        }
    }

    pub(super) fn cmd_pass(&mut self, now: Instant, arg: &str) {
        let (name, anonymous) = match &self.login {
            Login::User { name, anonymous } => (name.clone(), *anonymous),
            Login::LoggedIn(_) => return self.reply(503, "Already logged in."),
            Login::Start => return self.reply(503, "Login with USER first."),
        };
        if self.refuse_banned(now) {
            return;
        }
        if anonymous {
            let principal = Principal {
                name: "anonymous".into(),
                groups: Vec::new(),
                anonymous: true,
            };
            return self.logged_in_as(now, principal);
        }
        let request = Request::Authenticate {
            user: name.clone(),
            password: Secret(arg.into()),
            peer: self.peer,
        };
        self.request(request, Then::Login { user: name });
    }

    pub(super) fn on_login(&mut self, now: Instant, user: String, completion: Completion) {
        match completion {
            Completion::Auth(Ok(principal)) => self.logged_in_as(now, principal),
            Completion::Auth(Err(err)) => {
                if let AuthError::Backend(why) = &err {
                    tracing::warn!(session = %self.id, %user, %why, "authentication backend failed");
                }
                self.login = Login::Start;
                self.login_failures = self.login_failures.saturating_add(1);
                if matches!(err, AuthError::BadCredentials) && self.login_failed(now) {
                    return; // banned: replied and closing
                }
                self.reply(530, "Login incorrect.");
                if self.login_failures >= MAX_FAILURES {
                    self.reply(421, "Too many failed logins, closing control connection.");
                    self.close();
                }
            }
            other => self.unexpected(other),
        }
    }

    fn logged_in_as(&mut self, now: Instant, principal: Principal) {
        if !self.admit_user(now, &principal) {
            return;
        }
        let text = if principal.anonymous {
            "Anonymous access granted, restrictions apply.".to_string()
        } else {
            format!("User {} logged in.", principal.name)
        };
        tracing::debug!(session = %self.id, user = %principal.name, "logged in");
        self.login = Login::LoggedIn(principal);
        self.login_failures = 0;
        self.timers.stop(Timer::Login);
        self.timers
            .set(Timer::Idle, now + self.config.timeouts.idle);
        self.reply(230, &text);
    }

    pub(super) fn cmd_acct(&mut self) {
        if self.logged_in() {
            self.reply(202, "ACCT not needed.");
        } else {
            self.reply(503, "Login with USER and PASS first.");
        }
    }

    pub(super) fn cmd_host(&mut self, arg: &str) {
        match &self.login {
            Login::Start if arg.is_empty() => self.reply(501, "HOST needs a host name."),
            Login::Start => self.reply(220, "Host accepted."),
            _ => self.reply(503, "HOST must come before USER."),
        }
    }

    pub(super) fn cmd_rein(&mut self, now: Instant) {
        self.release_user();
        self.drop_data_channel();
        self.login = Login::Start;
        self.root = VPath::root();
        self.cwd = VPath::root();
        self.ascii = false;
        self.rest = 0;
        self.epsv_all = false;
        self.timers.stop(Timer::Idle);
        self.timers
            .set(Timer::Login, now + self.config.timeouts.login);
        self.reply(220, "Service ready for new user.");
    }

    pub(super) fn cmd_quit(&mut self) {
        // A running transfer gets its final reply first; `settle` says 221 after it.
        self.end(Ending::Quit);
        if !matches!(self.pending, Some(Pending::Transfer(_))) {
            self.held.clear();
            self.held_bytes = 0;
        }
    }

    pub(super) fn unexpected(&mut self, completion: Completion) {
        tracing::error!(session = %self.id, ?completion, "completion of the wrong kind");
        self.reply(451, "Internal error.");
    }
}

/// Consecutive failed passwords on one connection before it is closed (vsftpd's default).
/// Failed passwords on one connection before it is closed, as vsftpd does.
const MAX_FAILURES: u8 = 3;
