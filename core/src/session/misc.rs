//! FEAT, OPTS, HELP, STAT, TYPE, MODE, STRU.

use super::state::Pending;
use crate::listing::Facts;
use crate::session::Session;

impl Session {
    pub(super) fn cmd_feat(&mut self) {
        let mut lines = vec!["Features:".to_string()];
        if self.config.tls.is_some() {
            if !self.listener.implicit_tls {
                lines.push(" AUTH TLS".into());
            }
            if self.ccc_offered() {
                lines.push(" CCC".into());
            }
            lines.push(" PBSZ".into());
            lines.push(" PROT".into());
        }
        for feature in ["EPRT", "EPSV", "HOST", "MDTM", "MFMT"] {
            lines.push(format!(" {feature}"));
        }
        lines.push(format!(" {}", self.facts.feat_line()));
        for feature in ["PASV", "REST STREAM", "SIZE", "TVFS", "UTF8"] {
            lines.push(format!(" {feature}"));
        }
        lines.push("End".into());
        self.reply_multi(211, lines);
    }

    pub(super) fn cmd_opts(&mut self, arg: &str) {
        let (name, value) = arg.split_once(' ').unwrap_or((arg, ""));
        if name.eq_ignore_ascii_case("UTF8") || name.eq_ignore_ascii_case("UTF-8") {
            // Names are always UTF-8 (RFC 2640); Windows Explorer insists on a 200 here.
            if value.eq_ignore_ascii_case("ON") || value.is_empty() {
                self.reply(200, "UTF8 mode enabled.");
            } else if value.eq_ignore_ascii_case("OFF") {
                self.reply(200, "UTF8 mode stays on; names are UTF-8.");
            } else {
                self.reply(501, "OPTS UTF8 takes ON or OFF.");
            }
        } else if name.eq_ignore_ascii_case("MLST") {
            self.facts = Facts::select(value);
            let names = self.facts.selected_names();
            self.reply(200, &format!("MLST OPTS {names}"));
        } else {
            self.reply(501, "Option not understood.");
        }
    }

    pub(super) fn cmd_help(&mut self) {
        let lines = vec![
            "The following commands are recognized:".to_string(),
            " ABOR ACCT ALLO APPE CDUP CWD  DELE EPRT EPSV FEAT HELP HOST LIST MDTM MFMT".into(),
            " MKD  MLSD MLST MODE NLST NOOP OPTS PASS PASV PORT PWD  QUIT REIN REST RETR".into(),
            " RMD  RNFR RNTO SIZE STAT STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD".into(),
            " XRMD".into(),
            "Help OK.".into(),
        ];
        self.reply_multi(214, lines);
    }

    /// STAT: server status; during a transfer, its progress; with a path, a listing
    /// over the control channel (see `transfer.rs`).
    pub(super) fn cmd_stat(&mut self, arg: &str) {
        if let Some(Pending::Transfer(t)) = &self.pending {
            let text = format!("Transfer in progress: {} bytes so far.", t.bytes);
            return self.reply(213, &text);
        }
        if !arg.is_empty() {
            return self.cmd_list(super::transfer::ListKind::Stat, arg);
        }
        let user = match &self.login {
            super::state::Login::LoggedIn(p) => p.name.clone(),
            _ => "(not logged in)".into(),
        };
        let lines = vec![
            format!("{} FTP server status:", self.config.site_name),
            format!(" Connected to {}", self.peer),
            format!(" Logged in as {user}"),
            format!(
                " TYPE: {}, STRUcture: File, MODE: Stream",
                if self.ascii { "ASCII" } else { "BINARY" }
            ),
            " No data connection".into(),
            "End of status".into(),
        ];
        self.reply_multi(211, lines);
    }

    pub(super) fn cmd_type(&mut self, arg: &str) {
        let mut words = arg.split_whitespace().map(|w| w.to_ascii_uppercase());
        let first = words.next().unwrap_or_default();
        let second = words.next();
        let (ascii, shown) = match (first.as_str(), second.as_deref(), words.next()) {
            ("A", None | Some("N"), None) => (true, "A"),
            ("I", None, None) | ("L", Some("8"), None) | ("L8", None, None) => (false, "I"),
            ("A" | "E", Some("T" | "C"), None) | ("E", None | Some("N"), None) => {
                return self.reply(504, "Only TYPE A (non-print), I and L 8 are supported.")
            }
            ("L", Some(_), None) => return self.reply(504, "Only byte size 8 is supported."),
            _ => return self.reply(501, "TYPE takes A, I or L 8."),
        };
        self.ascii = ascii;
        self.reply(200, &format!("Type set to {shown}."));
    }

    pub(super) fn cmd_mode(&mut self, arg: &str) {
        match arg.trim().to_ascii_uppercase().as_str() {
            "S" => self.reply(200, "Mode set to S."),
            "B" | "C" | "Z" => self.reply(504, "Only MODE S (stream) is supported."),
            _ => self.reply(501, "MODE takes S, B or C."),
        }
    }

    pub(super) fn cmd_stru(&mut self, arg: &str) {
        match arg.trim().to_ascii_uppercase().as_str() {
            "F" => self.reply(200, "Structure set to F."),
            "R" | "P" => self.reply(504, "Only STRU F (file) is supported."),
            _ => self.reply(501, "STRU takes F, R or P."),
        }
    }
}
