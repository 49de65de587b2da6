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
    ///
    /// A reply with no lines is sent as `code SP CRLF`. A continuation line starting with
    /// any digit is indented, which covers the three-digit case and sloppy clients alike.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Text plus CR LF and a possible indent per line, plus code and separator twice.
        let text: usize = self.lines.iter().map(|l| l.len() + 3).sum();
        out.reserve(text + 2 * 4 + 2);
        match self.lines.as_slice() {
            [] => push_line(out, self.code, b' ', ""),
            [only] => push_line(out, self.code, b' ', only),
            [first, middle @ .., last] => {
                push_line(out, self.code, b'-', first);
                for line in middle {
                    if line.starts_with(|c: char| c.is_ascii_digit()) {
                        out.push(b' ');
                    }
                    push_text(out, line);
                    out.extend_from_slice(b"\r\n");
                }
                push_line(out, self.code, b' ', last);
            }
        }
    }
}

/// Quotes a path for a 257 reply: wrapped in `"` with every inner `"` doubled.
pub fn quote_path(path: &str) -> String {
    let mut quoted = String::with_capacity(path.len() + 2);
    quoted.push('"');
    for (i, piece) in path.split('"').enumerate() {
        if i > 0 {
            quoted.push_str("\"\"");
        }
        quoted.push_str(piece);
    }
    quoted.push('"');
    quoted
}

/// `code sep text CRLF`.
fn push_line(out: &mut Vec<u8>, code: u16, sep: u8, text: &str) {
    push_code(out, code);
    out.push(sep);
    push_text(out, text);
    out.extend_from_slice(b"\r\n");
}

/// The code in decimal; a stray code outside 100..=999 is sent in full, not truncated.
fn push_code(out: &mut Vec<u8>, code: u16) {
    let mut digits = [0u8; 5];
    let mut at = digits.len();
    let mut rest = code;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// The text with every CR and LF turned into a space, so no text (a file name, an error
/// message) can end a reply line early and forge another reply.
fn push_text(out: &mut Vec<u8>, text: &str) {
    let mut rest = text.as_bytes();
    while let Some(at) = rest.iter().position(|&b| b == b'\r' || b == b'\n') {
        out.extend_from_slice(&rest[..at]);
        out.push(b' ');
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn encode(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.encode_into(&mut out);
        String::from_utf8(out).expect("replies of UTF-8 text stay UTF-8")
    }

    #[test]
    fn single_line() {
        assert_eq!(
            encode(&Reply::new(200, "Command okay.")),
            "200 Command okay.\r\n"
        );
        assert_eq!(encode(&Reply::new(200, "")), "200 \r\n");
    }

    #[test]
    fn no_lines() {
        assert_eq!(encode(&Reply::multi(211, vec![])), "211 \r\n");
    }

    #[test]
    fn appends_to_existing_output() {
        let mut out = b"x".to_vec();
        Reply::new(220, "hi").encode_into(&mut out);
        assert_eq!(out, b"x220 hi\r\n");
    }

    #[test]
    fn multi_line() {
        let reply = Reply::multi(
            211,
            vec![
                "Features:".into(),
                " UTF8".into(),
                " MLST size*;".into(),
                "End".into(),
            ],
        );
        assert_eq!(
            encode(&reply),
            "211-Features:\r\n UTF8\r\n MLST size*;\r\n211 End\r\n"
        );
        let two = Reply::multi(250, vec!["a".into(), "b".into()]);
        assert_eq!(encode(&two), "250-a\r\n250 b\r\n");
    }

    #[test]
    fn digit_led_middle_lines_are_indented() {
        let reply = Reply::multi(
            213,
            vec![
                "status".into(),
                "213 fake end".into(),
                "7 files".into(),
                "".into(),
                "end".into(),
            ],
        );
        assert_eq!(
            encode(&reply),
            "213-status\r\n 213 fake end\r\n 7 files\r\n\r\n213 end\r\n"
        );
    }

    #[test]
    fn cr_and_lf_in_text_become_spaces() {
        assert_eq!(
            encode(&Reply::new(550, "a\r\n230 Logged in\rb\nc")),
            "550 a  230 Logged in b c\r\n"
        );
        let reply = Reply::multi(211, vec!["x\ny".into(), "\n230 z".into(), "w\r".into()]);
        assert_eq!(encode(&reply), "211-x y\r\n 230 z\r\n211 w \r\n");
    }

    #[test]
    fn unusual_codes_encode_in_full() {
        assert_eq!(encode(&Reply::new(0, "x")), "0 x\r\n");
        assert_eq!(encode(&Reply::new(65535, "x")), "65535 x\r\n");
    }

    #[test]
    fn quote_path_table() {
        for (path, quoted) in [
            ("/", "\"/\""),
            ("", "\"\""),
            ("/a b", "\"/a b\""),
            ("/say \"hi\"", "\"/say \"\"hi\"\"\""),
            ("\"", "\"\"\"\""),
            ("/caf\u{e9}", "\"/caf\u{e9}\""),
        ] {
            assert_eq!(quote_path(path), quoted);
        }
    }

    #[test]
    fn prop_replies_are_well_framed() {
        fn prop(code: u16, lines: Vec<String>) -> bool {
            let code = 100 + code % 900;
            let wire = encode(&Reply::multi(code, lines));
            let Some(body) = wire.strip_suffix("\r\n") else {
                return false;
            };
            let sent: Vec<&str> = body.split("\r\n").collect();
            let end = format!("{code} ");
            let (last, earlier) = sent.split_last().expect("split yields one piece");
            sent.iter().all(|l| !l.contains(['\r', '\n']))
                && last.starts_with(&end)
                && earlier.iter().all(|l| !l.starts_with(&end))
                && earlier
                    .iter()
                    .skip(1)
                    .all(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        }
        quickcheck(prop as fn(u16, Vec<String>) -> bool);
    }
}
