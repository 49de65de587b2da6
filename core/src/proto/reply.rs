//! Reply encoding (RFC 959 section 4.2): `code SP text CRLF` for one line, and
//! `code-first`, continuation lines, `code SP last` for several. A continuation line that
//! itself starts with three digits is indented by one space so clients cannot mistake it
//! for the end. CR and LF inside any text are never sent raw.

/// A reply to send on the control channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    pub fn multi(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, lines }
    }

    /// Appends the wire form of this reply to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!()
    }
}

/// Quotes a path for a 257 reply: wrapped in `"` with every inner `"` doubled.
pub fn quote_path(path: &str) -> String {
    let _ = path;
    todo!()
}
