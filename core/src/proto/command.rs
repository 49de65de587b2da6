//! Command parsing: a case-insensitive verb and its raw argument.
//!
//! Argument parsing (TYPE's letters, PORT's numbers, paths) belongs to each command's
//! handler; the parser only splits the verb from the argument, checks the argument is
//! UTF-8 (RFC 2640) and knows which verbs exist.

/// The longest verb name, in bytes.
const MAX_VERB: usize = 4;

/// Every verb wharf knows, implemented or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    User,
    Pass,
    Acct,
    Host,
    Auth,
    Adat,
    Pbsz,
    Prot,
    Ccc,
    Feat,
    Opts,
    Syst,
    Noop,
    Help,
    Stat,
    Quit,
    Rein,
    Type,
    Mode,
    Stru,
    Pwd,
    Cwd,
    Cdup,
    Mkd,
    Rmd,
    Dele,
    Rnfr,
    Rnto,
    Size,
    Mdtm,
    Mfmt,
    Pasv,
    Epsv,
    Port,
    Eprt,
    Retr,
    Stor,
    Appe,
    Stou,
    Rest,
    List,
    Nlst,
    Mlsd,
    Mlst,
    Allo,
    Abor,
    Site,
    Smnt,
    Lprt,
    Lpsv,
    Mic,
    Conf,
    Enc,
    Lang,
    Mfct,
    Mff,
    Spsv,
}

impl Verb {
    /// Every verb, in declaration order.
    pub const ALL: &'static [Verb] = &[
        Verb::User,
        Verb::Pass,
        Verb::Acct,
        Verb::Host,
        Verb::Auth,
        Verb::Adat,
        Verb::Pbsz,
        Verb::Prot,
        Verb::Ccc,
        Verb::Feat,
        Verb::Opts,
        Verb::Syst,
        Verb::Noop,
        Verb::Help,
        Verb::Stat,
        Verb::Quit,
        Verb::Rein,
        Verb::Type,
        Verb::Mode,
        Verb::Stru,
        Verb::Pwd,
        Verb::Cwd,
        Verb::Cdup,
        Verb::Mkd,
        Verb::Rmd,
        Verb::Dele,
        Verb::Rnfr,
        Verb::Rnto,
        Verb::Size,
        Verb::Mdtm,
        Verb::Mfmt,
        Verb::Pasv,
        Verb::Epsv,
        Verb::Port,
        Verb::Eprt,
        Verb::Retr,
        Verb::Stor,
        Verb::Appe,
        Verb::Stou,
        Verb::Rest,
        Verb::List,
        Verb::Nlst,
        Verb::Mlsd,
        Verb::Mlst,
        Verb::Allo,
        Verb::Abor,
        Verb::Site,
        Verb::Smnt,
        Verb::Lprt,
        Verb::Lpsv,
        Verb::Mic,
        Verb::Conf,
        Verb::Enc,
        Verb::Lang,
        Verb::Mfct,
        Verb::Mff,
        Verb::Spsv,
    ];

    /// The verb for a command word, case-insensitively; X-prefixed RFC 775 aliases
    /// (XPWD, XCWD, XCUP, XMKD, XRMD) map to their modern verbs.
    pub fn from_word(word: &[u8]) -> Option<Verb> {
        let mut buf = [0u8; MAX_VERB];
        // Longer than any verb: unknown, and no allocation to find that out.
        let upper = buf.get_mut(..word.len())?;
        for (u, &b) in upper.iter_mut().zip(word) {
            *u = b.to_ascii_uppercase();
        }
        Some(match &*upper {
            b"USER" => Verb::User,
            b"PASS" => Verb::Pass,
            b"ACCT" => Verb::Acct,
            b"HOST" => Verb::Host,
            b"AUTH" => Verb::Auth,
            b"ADAT" => Verb::Adat,
            b"PBSZ" => Verb::Pbsz,
            b"PROT" => Verb::Prot,
            b"CCC" => Verb::Ccc,
            b"FEAT" => Verb::Feat,
            b"OPTS" => Verb::Opts,
            b"SYST" => Verb::Syst,
            b"NOOP" => Verb::Noop,
            b"HELP" => Verb::Help,
            b"STAT" => Verb::Stat,
            b"QUIT" => Verb::Quit,
            b"REIN" => Verb::Rein,
            b"TYPE" => Verb::Type,
            b"MODE" => Verb::Mode,
            b"STRU" => Verb::Stru,
            b"PWD" | b"XPWD" => Verb::Pwd,
            b"CWD" | b"XCWD" => Verb::Cwd,
            b"CDUP" | b"XCUP" => Verb::Cdup,
            b"MKD" | b"XMKD" => Verb::Mkd,
            b"RMD" | b"XRMD" => Verb::Rmd,
            b"DELE" => Verb::Dele,
            b"RNFR" => Verb::Rnfr,
            b"RNTO" => Verb::Rnto,
            b"SIZE" => Verb::Size,
            b"MDTM" => Verb::Mdtm,
            b"MFMT" => Verb::Mfmt,
            b"PASV" => Verb::Pasv,
            b"EPSV" => Verb::Epsv,
            b"PORT" => Verb::Port,
            b"EPRT" => Verb::Eprt,
            b"RETR" => Verb::Retr,
            b"STOR" => Verb::Stor,
            b"APPE" => Verb::Appe,
            b"STOU" => Verb::Stou,
            b"REST" => Verb::Rest,
            b"LIST" => Verb::List,
            b"NLST" => Verb::Nlst,
            b"MLSD" => Verb::Mlsd,
            b"MLST" => Verb::Mlst,
            b"ALLO" => Verb::Allo,
            b"ABOR" => Verb::Abor,
            b"SITE" => Verb::Site,
            b"SMNT" => Verb::Smnt,
            b"LPRT" => Verb::Lprt,
            b"LPSV" => Verb::Lpsv,
            b"MIC" => Verb::Mic,
            b"CONF" => Verb::Conf,
            b"ENC" => Verb::Enc,
            b"LANG" => Verb::Lang,
            b"MFCT" => Verb::Mfct,
            b"MFF" => Verb::Mff,
            b"SPSV" => Verb::Spsv,
            _ => return None,
        })
    }

    /// The canonical upper-case name.
    pub fn name(self) -> &'static str {
        match self {
            Verb::User => "USER",
            Verb::Pass => "PASS",
            Verb::Acct => "ACCT",
            Verb::Host => "HOST",
            Verb::Auth => "AUTH",
            Verb::Adat => "ADAT",
            Verb::Pbsz => "PBSZ",
            Verb::Prot => "PROT",
            Verb::Ccc => "CCC",
            Verb::Feat => "FEAT",
            Verb::Opts => "OPTS",
            Verb::Syst => "SYST",
            Verb::Noop => "NOOP",
            Verb::Help => "HELP",
            Verb::Stat => "STAT",
            Verb::Quit => "QUIT",
            Verb::Rein => "REIN",
            Verb::Type => "TYPE",
            Verb::Mode => "MODE",
            Verb::Stru => "STRU",
            Verb::Pwd => "PWD",
            Verb::Cwd => "CWD",
            Verb::Cdup => "CDUP",
            Verb::Mkd => "MKD",
            Verb::Rmd => "RMD",
            Verb::Dele => "DELE",
            Verb::Rnfr => "RNFR",
            Verb::Rnto => "RNTO",
            Verb::Size => "SIZE",
            Verb::Mdtm => "MDTM",
            Verb::Mfmt => "MFMT",
            Verb::Pasv => "PASV",
            Verb::Epsv => "EPSV",
            Verb::Port => "PORT",
            Verb::Eprt => "EPRT",
            Verb::Retr => "RETR",
            Verb::Stor => "STOR",
            Verb::Appe => "APPE",
            Verb::Stou => "STOU",
            Verb::Rest => "REST",
            Verb::List => "LIST",
            Verb::Nlst => "NLST",
            Verb::Mlsd => "MLSD",
            Verb::Mlst => "MLST",
            Verb::Allo => "ALLO",
            Verb::Abor => "ABOR",
            Verb::Site => "SITE",
            Verb::Smnt => "SMNT",
            Verb::Lprt => "LPRT",
            Verb::Lpsv => "LPSV",
            Verb::Mic => "MIC",
            Verb::Conf => "CONF",
            Verb::Enc => "ENC",
            Verb::Lang => "LANG",
            Verb::Mfct => "MFCT",
            Verb::Mff => "MFF",
            Verb::Spsv => "SPSV",
        }
    }
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    /// Everything after the first space (one space removed; further spaces kept, since
    /// file names may begin with one). Empty when there was no argument.
    pub arg: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty command line")]
    Empty,
    #[error("unknown command")]
    Unknown,
    #[error("argument is not valid UTF-8")]
    BadUtf8(Verb),
    /// A CR (not part of the line end) or NUL in the argument: never a valid name, and a
    /// name with CR would go out raw in NLST listings.
    #[error("argument contains CR or NUL")]
    ControlChar(Verb),
}

/// Parses one framed line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let (word, arg) = match line.iter().position(|&b| b == b' ') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &[][..]),
    };
    if word.is_empty() && arg.iter().all(|&b| b == b' ') {
        return Err(ParseError::Empty);
    }
    let verb = Verb::from_word(word).ok_or(ParseError::Unknown)?;
    if arg.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(ParseError::ControlChar(verb));
    }
    let arg = std::str::from_utf8(arg).map_err(|_| ParseError::BadUtf8(verb))?;
    Ok(Command {
        verb,
        arg: arg.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(verb: Verb, arg: &str) -> Result<Command, ParseError> {
        Ok(Command {
            verb,
            arg: arg.to_owned(),
        })
    }

    /// `Verb::ALL` is complete: every word the parser accepts is one of its verbs (the
    /// authorization test relies on it to reach every command).
    #[test]
    fn all_lists_every_parseable_verb() {
        let mut word = Vec::with_capacity(MAX_VERB);
        fn walk(word: &mut Vec<u8>, found: &mut std::collections::BTreeSet<Verb>) {
            if let Some(v) = Verb::from_word(word) {
                assert!(Verb::ALL.contains(&v), "{v:?} is missing from Verb::ALL");
                found.insert(v);
            }
            if word.len() == MAX_VERB {
                return;
            }
            for b in b'A'..=b'Z' {
                word.push(b);
                walk(word, found);
                word.pop();
            }
        }
        let mut found = std::collections::BTreeSet::new();
        walk(&mut word, &mut found);
        assert_eq!(found.len(), Verb::ALL.len());
    }

    #[test]
    fn names_round_trip_in_any_case() {
        for &verb in Verb::ALL {
            let name = verb.name();
            assert!(name.len() <= MAX_VERB && name.bytes().all(|b| b.is_ascii_uppercase()));
            assert_eq!(Verb::from_word(name.as_bytes()), Some(verb));
            let lower = name.to_ascii_lowercase();
            assert_eq!(Verb::from_word(lower.as_bytes()), Some(verb));
        }
    }

    #[test]
    fn x_aliases_map_to_modern_verbs() {
        for (word, verb) in [
            (&b"XPWD"[..], Verb::Pwd),
            (b"xcwd", Verb::Cwd),
            (b"XcUp", Verb::Cdup),
            (b"XMKD", Verb::Mkd),
            (b"xrmd", Verb::Rmd),
        ] {
            assert_eq!(Verb::from_word(word), Some(verb));
        }
    }

    #[test]
    fn unknown_words() {
        for word in [
            &b""[..],
            b"US",
            b"USERS",
            b"XYZZY",
            b"STORAGEXX",
            b"R\xc3\xa9TR",
            b"NOOP\r",
        ] {
            assert_eq!(Verb::from_word(word), None, "{word:?}");
        }
    }

    #[test]
    fn parse_table() {
        let cases: &[(&[u8], Result<Command, ParseError>)] = &[
            (b"NOOP", cmd(Verb::Noop, "")),
            (b"noop ", cmd(Verb::Noop, "")),
            (b"list -la", cmd(Verb::List, "-la")),
            (b"XPWD", cmd(Verb::Pwd, "")),
            (b"USER anonymous", cmd(Verb::User, "anonymous")),
            (b"RETR  lead space", cmd(Verb::Retr, " lead space")),
            (b"STOR trailing ", cmd(Verb::Stor, "trailing ")),
            (b"CWD caf\xc3\xa9", cmd(Verb::Cwd, "caf\u{e9}")),
            (b"PORT 127,0,0,1,4,1", cmd(Verb::Port, "127,0,0,1,4,1")),
            (b"", Err(ParseError::Empty)),
            (b" ", Err(ParseError::Empty)),
            (b"    ", Err(ParseError::Empty)),
            (b" NOOP", Err(ParseError::Unknown)),
            (b"FROB x", Err(ParseError::Unknown)),
            (b"AB\xff\xf4OR", Err(ParseError::Unknown)),
            (b"VERYLONGVERBINDEED arg", Err(ParseError::Unknown)),
            (b"CWD caf\xe9", Err(ParseError::BadUtf8(Verb::Cwd))),
            (b"stor \xff", Err(ParseError::BadUtf8(Verb::Stor))),
            (b"USER a\rb", Err(ParseError::ControlChar(Verb::User))),
            (b"RETR a\0b", Err(ParseError::ControlChar(Verb::Retr))),
        ];
        for (line, want) in cases {
            assert_eq!(&parse(line), want, "{:?}", String::from_utf8_lossy(line));
        }
    }
}
