//! USER, PASS, ACCT, HOST, REIN, QUIT and the security-exchange verbs.

use std::time::Instant;

use super::state::{Ending, Login, Pending, PriorSite, Then};
use super::timer::Timer;
use crate::backend::{AuthError, Completion, Principal, Request, Secret};
use crate::path::VPath;
use crate::policy::Verdict;
use crate::session::Session;
use crate::site::{home_for, map_path, Home, View};

/// User names that mean an anonymous login.
fn is_anonymous_name(name: &str) -> bool {
    name.eq_ignore_ascii_case("anonymous") || name.eq_ignore_ascii_case("ftp")
}

impl Session {
    pub(super) fn cmd_user(&mut self, arg: &str) {
        if self.logged_in() {
            return self.reply(530, "Already logged in; use REIN to change user.");
        }
        // A USER starts a new attempt: the previous one is forgotten, whatever becomes
        // of this one (a refused USER leaves no user name for a later PASS).
        self.forget_login_attempt();
        if self.closed {
            return;
        }
        if arg.is_empty() {
            return self.reply(501, "USER needs a user name.");
        }
        let before = self.prior_site();
        // IIS virtual host syntax: `USER host|user`.
        let (name, prior) = match arg.split_once('|') {
            Some((host, user)) => {
                if host.is_empty() || user.is_empty() {
                    return self.reply(501, "USER host|user needs both a host and a user name.");
                }
                if !self.choose_site_by_user_host(host) {
                    return;
                }
                (user, (before != self.prior_site()).then_some(before))
            }
            None => (arg, None),
        };
        if self.site.is_none() {
            return self.reply(
                530,
                "Several sites share this address: send HOST name first, or log in as USER host|user.",
            );
        }
        if let Some(refusal) = self.client_certificate_refusal() {
            self.restore_site(prior);
            return self.reply(530, refusal);
        }
        let anonymous = is_anonymous_name(name);
        if anonymous && !self.config.allow_anonymous {
            self.set_substatus(crate::log::SubStatus::AnonymousDenied);
            self.restore_site(prior);
            return self.reply(530, "Anonymous access is not allowed here.");
        }
        self.login = Login::User {
            name: name.to_string(),
            anonymous,
            prior,
        };
        if anonymous {
            self.reply(
                331,
                "Anonymous login ok, send your e-mail address as password.",
            );
        } else {
            self.reply(331, &format!("Password required for {name}."));
        }
    }

    fn prior_site(&self) -> PriorSite {
        PriorSite {
            site: self.site.and_then(|i| u32::try_from(i).ok()),
            host_given: self.host_given,
        }
    }

    /// A login attempt failed (or a new USER starts another): back to `Login::Start`,
    /// and to the site the session had before the attempt's `USER host|user` chose one.
    pub(super) fn forget_login_attempt(&mut self) {
        if let Login::User { prior, .. } = std::mem::replace(&mut self.login, Login::Start) {
            self.restore_site(prior);
        }
    }

    /// Goes back to the site choice `prior` (counted there again; a full site refuses
    /// with `421` and closes, as a REIN would).
    fn restore_site(&mut self, prior: Option<PriorSite>) {
        let Some(prior) = prior else { return };
        let site = prior.site.map(|i| i as usize);
        if !self.count_for_site(site) {
            return;
        }
        self.site = site;
        self.host_given = prior.host_given;
        let config = self.sites.site(site.unwrap_or(self.listener.fallback));
        if !std::sync::Arc::ptr_eq(&self.config, config) {
            self.config = config.clone();
        }
    }

    /// `USER host|user`: picks the site bound to `host`, unless HOST already chose a
    /// different one. Replies and returns false on refusal.
    fn choose_site_by_user_host(&mut self, host: &str) -> bool {
        match self.sites.by_host(self.local, host) {
            None => {
                self.reply(
                    530,
                    &format!("Unknown host {host:?}: no site by that name here."),
                );
                false
            }
            Some(i) if self.host_given && self.site != Some(i) => {
                self.reply(
                    530,
                    &format!("Host {host:?} in USER differs from the site already chosen."),
                );
                false
            }
            Some(i) => self.select_site(i),
        }
    }

    /// Under `client_certificates = "require"`, a login needs a protected control
    /// connection whose handshake this site's configuration answered, so that its
    /// verifier checked the certificate the client presented (another site's on the
    /// same address may ask for none, or trust another CA).
    fn client_certificate_refusal(&self) -> Option<&'static str> {
        let settings = self.config.tls.as_ref()?;
        if settings.client_certificates != crate::tls::ClientCertificates::Require {
            return None;
        }
        let tls = self.tls.as_ref().filter(|t| !t.is_closing());
        match tls {
            None => Some("This site requires TLS with a client certificate: AUTH TLS first."),
            Some(t) if !t.answered_with(&settings.config) => Some(
                "This site requires a client certificate, but TLS was set up for another \
                 site: name this one before the handshake (SNI, or HOST before AUTH TLS).",
            ),
            Some(t) if t.peer_certificate().is_none() => {
                Some("This site requires a client certificate.")
            }
            Some(_) => None,
        }
    }

    /// Makes site `i` the one this session talks to, and counts the connection against
    /// it. False when the site is at its connection limit: the session was refused with
    /// the site's max-clients message and is closing.
    pub(super) fn select_site(&mut self, i: usize) -> bool {
        if !self.count_for_site(Some(i)) {
            return false;
        }
        self.site = Some(i);
        self.host_given = true;
        if !std::sync::Arc::ptr_eq(&self.config, self.sites.site(i)) {
            self.config = self.sites.site(i).clone();
        }
        true
    }

    /// The ClientHello names `server_name`: the TLS configuration of the site that name
    /// will choose (see [`Self::select_site_by_sni`]), to answer the handshake with. The
    /// site itself is chosen, and counted, once the handshake is done.
    pub(super) fn sni_site_tls(
        &self,
        server_name: &str,
    ) -> Option<std::sync::Arc<rustls::ServerConfig>> {
        if self.host_given || !matches!(self.login, Login::Start) {
            return None;
        }
        let i = self.sites.by_sni(self.local, server_name)?;
        let tls = self.sites.site(i).tls.as_ref()?;
        Some(tls.config.clone())
    }

    /// The TLS SNI name is known: pick the site bound to it, as HOST would (before login
    /// and only if no host name was given yet). Unknown names change nothing.
    pub(super) fn select_site_by_sni(&mut self, server_name: &str) -> bool {
        if self.host_given || !matches!(self.login, Login::Start) {
            return false;
        }
        match self.sites.by_sni(self.local, server_name) {
            Some(i) => self.select_site(i),
            None => false,
        }
    }

    pub(super) fn cmd_pass(&mut self, now: Instant, arg: &str) {
        let (name, anonymous) = match &self.login {
            Login::User {
                name, anonymous, ..
            } => (name.clone(), *anonymous),
            Login::LoggedIn(_) => return self.reply(503, "Already logged in."),
            Login::Start => return self.reply(503, "Login with USER first."),
        };
        if self.refuse_banned(now) {
            return;
        }
        if let Some(refusal) = self.client_certificate_refusal() {
            // TLS may have changed since USER (AUTH after USER, CCC).
            self.forget_login_attempt();
            return self.reply(530, refusal);
        }
        if anonymous {
            let principal = Principal {
                name: "anonymous".into(),
                groups: Vec::new(),
                anonymous: true,
            };
            return self.authenticated(now, principal);
        }
        let request = Request::Authenticate {
            user: name.clone(),
            password: Secret(arg.into()),
            peer: self.peer,
        };
        self.request(
            request,
            Then::Login {
                user: name,
                at: now,
            },
        );
    }

    pub(super) fn on_login(
        &mut self,
        now: Instant,
        user: String,
        at: Instant,
        completion: Completion,
    ) {
        match completion {
            Completion::Auth(Ok(principal)) => self.authenticated(now, principal),
            Completion::Auth(Err(err)) => {
                if let AuthError::Backend(why) = &err {
                    tracing::warn!(session = %self.id, %user, %why, "authentication backend failed");
                }
                self.forget_login_attempt();
                if self.closed {
                    return;
                }
                self.login_failures = self.login_failures.saturating_add(1);
                // Counted at once, so a ban takes effect before the reply goes out.
                let verdict = match err {
                    AuthError::BadCredentials => self.login_failed(now),
                    AuthError::Backend(_) => Verdict::NotCounted,
                };
                // However long the check took, the refusal comes `failed_login_delay`
                // after the PASS; until then no command is read.
                let due = at + self.config.failed_login_delay;
                if due > now {
                    self.pending = Some(Pending::FailedLogin { verdict });
                    self.timers.set(Timer::FailedLogin, due);
                } else {
                    self.refuse_login(verdict);
                }
            }
            other => self.unexpected(other),
        }
    }

    /// The failed login's delay is over: say `530`.
    pub(super) fn on_failed_login_delay(&mut self) {
        if let Some(Pending::FailedLogin { verdict }) = self.pending.take() {
            self.refuse_login(verdict);
        }
    }

    /// The `530` of a failed login; a ban it caused, or one failure too many on this
    /// connection, closes the session after it.
    fn refuse_login(&mut self, verdict: Verdict) {
        self.reply(530, "Login incorrect.");
        if verdict == Verdict::Banned {
            let secs = self.slot.policy().rules().logon.ban.as_secs();
            self.reply(
                421,
                &format!("Too many failed logins; try again in {secs} seconds."),
            );
            self.close();
        } else if self.login_failures >= MAX_FAILURES {
            self.reply(421, "Too many failed logins, closing control connection.");
            self.close();
        }
    }

    /// The credentials are good: find the home directory the isolation mode asks for,
    /// then log in.
    fn authenticated(&mut self, now: Instant, principal: Principal) {
        let mode = self.config.isolation;
        match home_for(mode, &principal) {
            Err(_) => self.refuse_home(&principal),
            Ok(None) => self.logged_in_as(now, principal, View::default(), VPath::root()),
            Ok(Some(home)) => {
                let view = View {
                    root: VPath::root(),
                    virtual_dirs: !mode.jails(),
                };
                let (_, storage) = map_path(&self.config, &view, &home.path);
                self.request(
                    Request::Stat { path: storage },
                    Then::Home { principal, home },
                );
            }
        }
    }

    pub(super) fn on_home(
        &mut self,
        now: Instant,
        principal: Principal,
        home: Home,
        completion: Completion,
    ) {
        let exists = match completion {
            Completion::Stat(Ok(meta)) => meta.is_dir(),
            Completion::Stat(Err(_)) => false,
            other => return self.unexpected(other),
        };
        let mode = self.config.isolation;
        match (exists, mode.jails()) {
            (true, true) => {
                let view = View {
                    root: home.path,
                    virtual_dirs: mode.shows_virtual_dirs(),
                };
                self.logged_in_as(now, principal, view, VPath::root());
            }
            (true, false) => self.logged_in_as(now, principal, View::default(), home.path),
            (false, _) if home.required => self.refuse_home(&principal),
            (false, _) => self.logged_in_as(now, principal, View::default(), VPath::root()),
        }
    }

    fn refuse_home(&mut self, principal: &Principal) {
        tracing::info!(session = %self.id, user = %principal.name, "home directory inaccessible");
        self.reply(530, "User cannot log in, home directory inaccessible.");
        self.forget_login_attempt();
    }

    fn logged_in_as(&mut self, now: Instant, principal: Principal, view: View, cwd: VPath) {
        if !self.admit_user(now, &principal) {
            return;
        }
        let text = if principal.anonymous {
            "Anonymous access granted, restrictions apply.".to_string()
        } else {
            format!("User {} logged in.", principal.name)
        };
        tracing::debug!(session = %self.id, user = %principal.name, site = %self.config.site_name, "logged in");
        self.login = Login::LoggedIn(principal);
        self.login_failures = 0;
        self.view = view;
        self.cwd = cwd;
        self.timers.stop(Timer::Login);
        self.timers
            .set(Timer::Idle, now + self.config.timeouts.idle);
        match self.config.messages.welcome.clone() {
            Some(welcome) => {
                let mut lines: Vec<String> = welcome.lines().map(str::to_owned).collect();
                lines.push(text);
                self.reply_multi(230, lines);
            }
            None => self.reply(230, &text),
        }
    }

    pub(super) fn cmd_acct(&mut self) {
        if self.logged_in() {
            self.reply(202, "ACCT not needed.");
        } else {
            self.reply(503, "Login with USER and PASS first.");
        }
    }

    /// RFC 7151: before USER, choose the virtual host. Success resets the session to
    /// what a new connection to that site would be (transfer parameters, data channel)
    /// and greets with the site's banner.
    pub(super) fn cmd_host(&mut self, arg: &str) {
        match &self.login {
            Login::Start => {}
            Login::User { .. } => return self.reply(503, "HOST must come before USER."),
            Login::LoggedIn(_) => {
                return self.reply(503, "Already logged in; HOST must come before USER.")
            }
        }
        let host = arg.trim();
        if host.is_empty() {
            return self.reply(501, "HOST needs a host name.");
        }
        let Some(i) = self.sites.by_host(self.local, host) else {
            return self.reply(
                504,
                &format!("Unknown host {host:?}: no site by that name here."),
            );
        };
        if !self.select_site(i) {
            return;
        }
        self.reset_transfer_state();
        self.greet();
    }

    /// Back to the transfer parameters of a new connection.
    fn reset_transfer_state(&mut self) {
        self.drop_data_channel();
        self.ascii = false;
        self.rest = 0;
        self.epsv_all = false;
        self.rename_from = None;
        self.facts = crate::listing::Facts::default();
    }

    /// REIN: as if the connection were new (RFC 959), the host choice included (RFC
    /// 7151); TLS stays.
    pub(super) fn cmd_rein(&mut self, now: Instant) {
        self.release_user();
        if !self.count_for_site(self.listener.default) {
            return;
        }
        self.reset_transfer_state();
        self.login = Login::Start;
        self.view = View::default();
        self.cwd = VPath::root();
        self.site = self.listener.default;
        self.host_given = false;
        self.config = self
            .sites
            .site(self.listener.default.unwrap_or(self.listener.fallback))
            .clone();
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
