//! Request filtering, as IIS's `requestFiltering` and `commandFiltering`: pure verdicts on
//! a command's verb, its raw argument, the path it resolves to, and listing entries.
//!
//! Names are compared the way a Windows client would expect and an attacker would not:
//! case-insensitively (Unicode lower case, without allocating), with trailing dots and
//! spaces ignored (`file.exe.` and `file.exe ` are `file.exe`), and with an NTFS stream
//! suffix judged both ways (`a.txt:x.exe` is judged as `a.txt:x.exe` *and* as `a.txt`; a
//! name is refused if either spelling is). On a case-sensitive disk this can only refuse
//! more, never less.

use crate::log::SubStatus;
use crate::path::VPath;
use crate::proto::command::Verb;

/// One site's filtering rules. `RequestFiltering::default()` allows everything (except
/// paths over IIS's `maxUrl` of 4096 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFiltering {
    /// Whether a file extension on neither list is allowed (IIS `allowUnlisted`).
    pub allow_unlisted_extensions: bool,
    /// Extensions, without the dot (`""` means "no extension"), compared case-insensitively.
    pub allowed_extensions: Vec<String>,
    pub denied_extensions: Vec<String>,
    /// Path segments that are invisible and unreachable (IIS `hiddenSegments`).
    pub hidden_segments: Vec<String>,
    /// Substrings refused anywhere in a path argument as sent (IIS `denyUrlSequences`).
    pub denied_sequences: Vec<String>,
    /// Whether a command on neither list is allowed (IIS `commandFiltering@allowUnlisted`).
    pub allow_unlisted_commands: bool,
    pub allowed_commands: Vec<Verb>,
    pub denied_commands: Vec<Verb>,
    /// The longest path, as sent or as resolved, in bytes (IIS `maxUrl`, 4096); 0: no limit.
    pub max_path_length: usize,
    /// The largest upload, in bytes (IIS `maxAllowedContentLength`); `None`: no limit.
    pub max_upload_size: Option<u64>,
}

impl Default for RequestFiltering {
    fn default() -> Self {
        RequestFiltering {
            allow_unlisted_extensions: true,
            allowed_extensions: Vec::new(),
            denied_extensions: Vec::new(),
            hidden_segments: Vec::new(),
            denied_sequences: Vec::new(),
            allow_unlisted_commands: true,
            allowed_commands: Vec::new(),
            denied_commands: Vec::new(),
            max_path_length: 4096,
            max_upload_size: None,
        }
    }
}

/// A refusal: the reply to send and the reason to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denial {
    pub code: u16,
    pub text: &'static str,
    pub sub: SubStatus,
}

impl Denial {
    pub const COMMAND: Denial = Denial {
        code: 502,
        text: "Command not allowed here.",
        sub: SubStatus::CommandDenied,
    };
    /// A hidden name answers like a missing one: its existence is not revealed.
    pub const HIDDEN: Denial = Denial {
        code: 550,
        text: "No such file or directory.",
        sub: SubStatus::HiddenSegment,
    };
    pub const SEQUENCE: Denial = Denial {
        code: 550,
        text: "Path not allowed.",
        sub: SubStatus::DeniedSequence,
    };
    pub const EXTENSION: Denial = Denial {
        code: 550,
        text: "File type not allowed.",
        sub: SubStatus::ExtensionDenied,
    };
    /// RNTO over an existing name without `allow_replace_on_rename` (RFC 959's 553).
    pub const RENAME_TARGET_EXISTS: Denial = Denial {
        code: 553,
        text: "File exists; replacing on rename is not allowed.",
        sub: SubStatus::RenameTargetExists,
    };
    pub const PATH_TOO_LONG: Denial = Denial {
        code: 553,
        text: "Path too long.",
        sub: SubStatus::PathTooLong,
    };
}

/// Whether a command's path names a file, so that extension rules apply to it. Directory
/// commands (CWD, MKD, RMD, listings) are judged by hidden segments and length only.
pub fn names_a_file(verb: Verb) -> bool {
    matches!(
        verb,
        Verb::Retr
            | Verb::Stor
            | Verb::Appe
            | Verb::Stou
            | Verb::Dele
            | Verb::Rnfr
            | Verb::Rnto
            | Verb::Size
            | Verb::Mdtm
            | Verb::Mfmt
            | Verb::Mlst
    )
}

/// Whether a command's argument is a path (so denied sequences apply to it as sent).
pub fn takes_path(verb: Verb) -> bool {
    names_a_file(verb)
        || matches!(
            verb,
            Verb::Cwd | Verb::Mkd | Verb::Rmd | Verb::List | Verb::Nlst | Verb::Mlsd | Verb::Stat
        )
}

impl RequestFiltering {
    /// Command filtering: `502` for a denied verb (aliases such as XPWD are their verb).
    pub fn check_command(&self, verb: Verb) -> Result<(), Denial> {
        let allowed = if self.denied_commands.contains(&verb) {
            false
        } else if self.allowed_commands.contains(&verb) {
            true
        } else {
            self.allow_unlisted_commands
        };
        if allowed {
            Ok(())
        } else {
            Err(Denial::COMMAND)
        }
    }

    /// The raw argument of a path-taking command: denied sequences (case-insensitive,
    /// before any normalisation, so `x/../y` is caught by `..`) and the length limit.
    pub fn check_argument(&self, arg: &str) -> Result<(), Denial> {
        if self.max_path_length > 0 && arg.len() > self.max_path_length {
            return Err(Denial::PATH_TOO_LONG);
        }
        if self
            .denied_sequences
            .iter()
            .any(|seq| contains_ignore_case(arg, seq))
        {
            return Err(Denial::SEQUENCE);
        }
        Ok(())
    }

    /// A resolved path as the user sees it: hidden segments anywhere in it (so everything
    /// at or below a hidden name is refused, however it was spelled), its length, and,
    /// when `file` is set, its extension.
    pub fn check_path(&self, shown: &VPath, file: bool) -> Result<(), Denial> {
        if self.max_path_length > 0 && shown.as_str().len() > self.max_path_length {
            return Err(Denial::PATH_TOO_LONG);
        }
        if shown.segments().any(|seg| self.is_hidden(seg)) {
            return Err(Denial::HIDDEN);
        }
        if file {
            if let Some(name) = shown.file_name() {
                if !self.extension_allowed(name) {
                    return Err(Denial::EXTENSION);
                }
            }
        }
        Ok(())
    }

    /// Whether a name (one segment) is hidden: left out of listings and unreachable.
    pub fn is_hidden(&self, name: &str) -> bool {
        if self.hidden_segments.is_empty() {
            return false;
        }
        spellings(name).any(|n| self.hidden_segments.iter().any(|h| eq_ignore_case(n, h)))
    }

    /// Whether a file name's extension passes the extension rules.
    pub fn extension_allowed(&self, name: &str) -> bool {
        if self.allow_unlisted_extensions && self.denied_extensions.is_empty() {
            return true;
        }
        spellings(name).all(|n| self.one_extension_allowed(extension(n)))
    }

    fn one_extension_allowed(&self, ext: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|e| eq_ignore_case(ext, e));
        if listed(&self.denied_extensions) {
            false
        } else if listed(&self.allowed_extensions) {
            true
        } else {
            self.allow_unlisted_extensions
        }
    }

    /// Whether an upload of `bytes` so far is over the limit.
    pub fn upload_too_large(&self, bytes: u64) -> bool {
        self.max_upload_size.is_some_and(|max| bytes > max)
    }

    /// Whether any path rule is set (listings skip the per-entry check when not).
    pub fn hides_anything(&self) -> bool {
        !self.hidden_segments.is_empty()
    }
}

/// The spellings a name is judged under: trailing dots and spaces removed, and the part
/// before an NTFS stream separator (`:`), likewise trimmed.
fn spellings(name: &str) -> impl Iterator<Item = &str> {
    let whole = trim_windows(name);
    let stem = name.split_once(':').map(|(stem, _)| trim_windows(stem));
    std::iter::once(whole).chain(stem.filter(|s| *s != whole))
}

/// Windows ignores trailing dots and spaces in a name.
fn trim_windows(name: &str) -> &str {
    name.trim_end_matches(['.', ' '])
}

/// The extension of a (trimmed) name without its dot; `""` when there is none.
fn extension(name: &str) -> &str {
    match name.rsplit_once('.') {
        Some((_, ext)) => ext,
        None => "",
    }
}

/// Case-insensitive equality (Unicode lower case), without allocating.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

/// Case-insensitive substring search (ASCII folding, plus Unicode lower case for the rare
/// non-ASCII needle), without allocating for ASCII.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    if needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        return h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
