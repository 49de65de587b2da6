//! The RFC 2228 / 4217 security exchange: AUTH, PBSZ, PROT, CCC, and the site's
//! TLS policy.

use super::state::Login;
use crate::proto::{Command, Verb};
use crate::session::Session;
use crate::tls::{ControlPolicy, DataPolicy};

/// How long after CCC's `200` the server waits for the client's close_notify before
/// sending its own (for clients that wait for the server's, like curl).
const CCC_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    pub(super) fn cmd_auth(&mut self, arg: &str) {
        let Some(settings) = self.config.tls.clone() else {
            return self.reply(502, "TLS is not configured on this site.");
        };
        if self.secured {
            return self.reply(503, "TLS is already on (or was ended by CCC).");
        }
        let kind = arg.trim().to_ascii_uppercase();
        if !matches!(kind.as_str(), "TLS" | "SSL" | "TLS-C" | "TLS-P") {
            return self.reply(504, "AUTH takes TLS or SSL.");
        }
        if !self.slot.take_handshake() {
            self.set_substatus(crate::log::SubStatus::TooManyHandshakes);
            return self.reply(
                431,
                "Too many TLS handshakes in progress from your address; try again shortly.",
            );
        }
        self.reply(234, "AUTH TLS successful, start the handshake.");
        if self.framer.buffered() > 0 || !self.held.is_empty() {
            // Plaintext that arrived behind AUTH would be taken as if it were protected
            // (the STARTTLS injection, CVE-2011-1575): refuse the whole connection.
            tracing::warn!(session = %self.id, "plaintext pipelined after AUTH TLS; closing");
            return self.close();
        }
        self.start_tls(&settings);
    }

    pub(super) fn cmd_pbsz(&mut self, arg: &str) {
        if !self.secured {
            return self.reply(503, "Security exchange required first (AUTH TLS).");
        }
        if arg.trim().parse::<u64>().is_err() {
            return self.reply(501, "PBSZ takes a number.");
        }
        self.pbsz = true;
        self.reply(200, "PBSZ=0");
    }

    pub(super) fn cmd_prot(&mut self, arg: &str) {
        if !self.secured || !self.pbsz {
            return self.reply(503, "PBSZ required first (after AUTH TLS).");
        }
        let policy = self.config.tls.as_ref().map(|t| t.data).unwrap_or_default();
        match arg.trim().to_ascii_uppercase().as_str() {
            "C" if policy == DataPolicy::Require && !self.exempt() => {
                self.reply(534, "Policy requires encrypted data connections (PROT P).")
            }
            "C" => {
                self.prot_private = false;
                self.reply(200, "Protection level set to Clear.");
            }
            "P" if policy == DataPolicy::Deny => {
                self.reply(534, "Policy allows only clear data connections (PROT C).")
            }
            "P" => {
                self.prot_private = true;
                self.reply(200, "Protection level set to Private.");
            }
            "S" | "E" => self.reply(536, "Only PROT C and PROT P are supported."),
            _ => self.reply(504, "PROT takes C or P."),
        }
    }

    /// CCC (RFC 4217 section 6): `200` over TLS, then close_notify; the peer answers
    /// with its own close_notify and the control channel is plaintext from there on.
    /// Data connections keep their protection level.
    pub(super) fn cmd_ccc(&mut self, now: std::time::Instant) {
        if !self.control_encrypted() {
            return self.reply(533, "The control channel is not protected.");
        }
        let Some(settings) = &self.config.tls else {
            return self.reply(533, "The control channel is not protected.");
        };
        if !settings.allow_ccc {
            return self.reply(
                534,
                "CCC is not permitted on this site (allow_ccc = false).",
            );
        }
        if settings.control == ControlPolicy::Require && !self.exempt() {
            return self.reply(
                534,
                "Policy requires TLS on the control channel; CCC refused.",
            );
        }
        self.reply(
            200,
            "CCC ok; the control channel is plaintext after TLS closes.",
        );
        if let Some(tls) = &mut self.tls {
            tls.start_closing();
            self.timers
                .set(super::timer::Timer::CccClose, now + CCC_CLOSE_WAIT);
        }
    }

    /// Whether CCC is offered in FEAT.
    pub(super) fn ccc_offered(&self) -> bool {
        self.config
            .tls
            .as_ref()
            .is_some_and(|t| t.allow_ccc && t.control != ControlPolicy::Require)
    }

    /// Whether the current (or announced) user is exempt from `Require` policies.
    fn exempt(&self) -> bool {
        let anonymous = match &self.login {
            Login::User { anonymous, .. } => *anonymous,
            Login::LoggedIn(p) => p.anonymous,
            Login::Start => false,
        };
        anonymous && self.config.tls.as_ref().is_some_and(|t| t.exempt_anonymous)
    }

    /// The 534 text when the control policy forbids `cmd` in plaintext.
    pub(super) fn tls_policy_refusal(&self, cmd: &Command) -> Option<&'static str> {
        let settings = self.config.tls.as_ref()?;
        if self.control_encrypted() {
            return None;
        }
        let anonymous_user = cmd.verb == Verb::User
            && (cmd.arg.eq_ignore_ascii_case("anonymous") || cmd.arg.eq_ignore_ascii_case("ftp"));
        if (anonymous_user || self.exempt()) && settings.exempt_anonymous {
            return None;
        }
        let harmless = matches!(
            cmd.verb,
            Verb::Auth
                | Verb::Feat
                | Verb::Host
                | Verb::Noop
                | Verb::Syst
                | Verb::Quit
                | Verb::Opts
        );
        match settings.control {
            ControlPolicy::Allow => None,
            ControlPolicy::Require if !harmless => Some("Policy requires TLS (AUTH TLS) first."),
            ControlPolicy::RequireCredentialsOnly
                if matches!(cmd.verb, Verb::User | Verb::Pass) =>
            {
                Some("Policy requires TLS (AUTH TLS) for credentials.")
            }
            _ => None,
        }
    }

    /// The data-channel policy check at transfer time: `Some(text)` refuses with 521.
    pub(super) fn data_policy_refusal(&self) -> Option<&'static str> {
        let settings = self.config.tls.as_ref()?;
        match settings.data {
            DataPolicy::Require if !self.prot_private && !self.exempt() => {
                Some("Policy requires PROT P for data connections.")
            }
            DataPolicy::Deny if self.prot_private => Some("Policy forbids PROT P."),
            _ => None,
        }
    }
}
