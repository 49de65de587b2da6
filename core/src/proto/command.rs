//! Command parsing: a case-insensitive verb and its raw argument.
//!
//! Argument parsing (TYPE's letters, PORT's numbers, paths) belongs to each command's
//! handler; the parser only splits the verb from the argument, checks the argument is
//! UTF-8 (RFC 2640) and knows which verbs exist.

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
    /// The verb for a command word, case-insensitively; X-prefixed RFC 775 aliases
    /// (XPWD, XCWD, XCUP, XMKD, XRMD) map to their modern verbs.
    pub fn from_word(word: &[u8]) -> Option<Verb> {
        let _ = word;
        todo!()
    }

    /// The canonical upper-case name.
    pub fn name(self) -> &'static str {
        todo!()
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
}

/// Parses one framed line.
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let _ = line;
    todo!()
}
