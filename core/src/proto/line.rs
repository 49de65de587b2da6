//! Control-channel line framing: CRLF or bare LF line ends, Telnet IAC stripping
//! (RFC 854: `IAC IP`, `IAC DM`, `IAC WILL x`, `IAC IAC` = a literal 0xFF, ...), and a
//! hard cap on line length after which the framer discards up to the next line end and
//! reports [`Frame::TooLong`] once. It never buffers more than the cap of an incomplete
//! line, whatever it is fed.
//!
//! Telnet commands are removed before anything else looks at the bytes, so `CR IAC NOP LF`
//! is a CR LF line end and an `IAC` split across two feeds is still recognised. Only the
//! CR immediately before the LF is stripped; a CR anywhere else is line content.
//!
//! [`Frame::TooLong`] is queued as soon as the line's content exceeds the cap, not when its
//! line end arrives: a peer streaming an endless line is visible at once, and the frame
//! sequence is still a function of the byte stream alone (the overflow always sits between
//! the previous line and the next one), so chunking cannot change it.

use std::collections::VecDeque;
use std::mem;

/// Telnet "Interpret As Command".
const IAC: u8 = 255;

/// One framed unit of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its CR LF / LF, with Telnet commands removed.
    Line(Vec<u8>),
    /// A line longer than the cap was discarded (reported once per over-long line).
    TooLong,
}

impl Frame {
    /// What a queued frame counts toward [`LineFramer::buffered`]: its content plus its
    /// line end, so a flood of empty lines still shows up as held input.
    fn weight(&self) -> usize {
        match self {
            Frame::Line(line) => line.len() + 1,
            Frame::TooLong => 1,
        }
    }
}

/// Where the Telnet decoder stands between bytes (this must survive chunk boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    Data,
    /// Saw IAC; the next byte says what it was.
    Iac,
    /// Saw IAC WILL/WONT/DO/DONT; the next byte is the option code and is dropped.
    Option,
}

/// Splits control-channel bytes into lines.
#[derive(Debug)]
pub struct LineFramer {
    max_line: usize,
    /// Content of the incomplete line. Emptied by moving it into the finished frame, so
    /// an idle framer holds no allocation.
    partial: Vec<u8>,
    /// A CR that ended the data seen so far: it is the CR of CR LF if an LF follows, and
    /// line content otherwise. Held as a flag so a line of exactly `max_line` bytes plus
    /// CR LF never needs `max_line + 1` bytes of buffer.
    pending_cr: bool,
    /// The current line overflowed and was reported; drop everything up to its LF.
    discarding: bool,
    telnet: Telnet,
    /// The oldest queued frame, kept inline so the common one-command-per-read case
    /// never allocates a queue.
    ready: Option<Frame>,
    /// Frames behind `ready` (pipelined commands); released whenever it drains.
    more: VecDeque<Frame>,
    /// Sum of the weights of `ready` and `more`.
    queued: usize,
}

impl LineFramer {
    /// A framer that refuses lines longer than `max_line` bytes (not counting CR LF).
    pub fn new(max_line: usize) -> Self {
        LineFramer {
            max_line,
            partial: Vec::new(),
            pending_cr: false,
            discarding: false,
            telnet: Telnet::Data,
            ready: None,
            more: VecDeque::new(),
            queued: 0,
        }
    }

    /// Takes bytes from the wire. Complete lines queue up until [`Self::next_frame`]
    /// takes them; an over-long partial line is dropped as it arrives.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&first, rest)) = bytes.split_first() {
            match self.telnet {
                Telnet::Data => {}
                Telnet::Iac => {
                    self.telnet = Telnet::Data;
                    match first {
                        IAC => self.push_data(&[IAC]),
                        251..=254 => self.telnet = Telnet::Option,
                        240..=250 => {}
                        // Not a Telnet command: drop the stray IAC, keep this byte as data
                        // so a line end is never swallowed.
                        _ => continue,
                    }
                    bytes = rest;
                    continue;
                }
                Telnet::Option => {
                    self.telnet = Telnet::Data;
                    bytes = rest;
                    continue;
                }
            }
            let Some(at) = bytes.iter().position(|&b| b == b'\n' || b == IAC) else {
                self.push_data(bytes);
                return;
            };
            self.push_data(&bytes[..at]);
            if bytes[at] == b'\n' {
                self.end_line();
            } else {
                self.telnet = Telnet::Iac;
            }
            bytes = &bytes[at + 1..];
        }
    }

    /// The next complete frame, in arrival order.
    pub fn next_frame(&mut self) -> Option<Frame> {
        let frame = self.ready.take()?;
        self.ready = self.more.pop_front();
        if self.more.is_empty() && self.more.capacity() != 0 {
            self.more = VecDeque::new();
        }
        self.queued -= frame.weight();
        Some(frame)
    }

    /// Bytes held (complete lines not yet taken plus the partial line).
    ///
    /// Each queued frame counts its content plus one for its line end; a trailing CR that
    /// may turn out to be half of a CR LF is not counted. With every frame taken this is
    /// at most `max_line`.
    pub fn buffered(&self) -> usize {
        self.queued + self.partial.len()
    }

    /// Drops everything buffered (used when the channel switches to TLS).
    pub fn clear(&mut self) {
        *self = LineFramer::new(self.max_line);
    }

    /// Appends Telnet-free data that contains no LF to the current line.
    fn push_data(&mut self, mut run: &[u8]) {
        if self.discarding || run.is_empty() {
            return;
        }
        // Data after a held CR proves that CR was content, not a line end.
        let held_cr = mem::replace(&mut self.pending_cr, false);
        if let [head @ .., b'\r'] = run {
            self.pending_cr = true;
            run = head;
        }
        let extra = usize::from(held_cr) + run.len();
        if self.partial.len() + extra > self.max_line {
            self.overflow();
            return;
        }
        self.reserve_capped(extra);
        if held_cr {
            self.partial.push(b'\r');
        }
        self.partial.extend_from_slice(run);
    }

    /// Grows `partial` geometrically but never past `max_line`, so a slowly fed long
    /// line cannot hold twice the cap.
    fn reserve_capped(&mut self, extra: usize) {
        let need = self.partial.len() + extra;
        if need > self.partial.capacity() {
            let target = need.max(self.partial.capacity() * 2).min(self.max_line);
            self.partial.reserve_exact(target - self.partial.len());
        }
    }

    fn overflow(&mut self) {
        self.partial = Vec::new();
        self.pending_cr = false;
        self.discarding = true;
        self.push_frame(Frame::TooLong);
    }

    fn end_line(&mut self) {
        // A held CR directly before the LF is the CR of CR LF: dropped.
        self.pending_cr = false;
        if mem::replace(&mut self.discarding, false) {
            return;
        }
        let line = mem::take(&mut self.partial);
        self.push_frame(Frame::Line(line));
    }

    fn push_frame(&mut self, frame: Frame) {
        self.queued += frame.weight();
        if self.ready.is_none() {
            self.ready = Some(frame);
        } else {
            self.more.push_back(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, TestResult};

    fn frames_of(framer: &mut LineFramer) -> Vec<Frame> {
        std::iter::from_fn(|| framer.next_frame()).collect()
    }

    fn frame_all(max_line: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max_line);
        for chunk in chunks {
            framer.feed(chunk);
        }
        frames_of(&mut framer)
    }

    fn line(s: &[u8]) -> Frame {
        Frame::Line(s.to_vec())
    }

    #[test]
    fn crlf_and_bare_lf_end_lines() {
        assert_eq!(
            frame_all(100, &[b"USER a\r\nPASS b\nNOOP\r\n"]),
            vec![line(b"USER a"), line(b"PASS b"), line(b"NOOP")]
        );
    }

    #[test]
    fn cr_not_before_lf_is_content() {
        assert_eq!(frame_all(100, &[b"a\rb\r\r\n\r"]), vec![line(b"a\rb\r")]);
        assert_eq!(frame_all(100, &[b"a\r", b"b\n"]), vec![line(b"a\rb")]);
        assert_eq!(frame_all(100, &[b"a\r", b"\n"]), vec![line(b"a")]);
    }

    #[test]
    fn empty_lines_are_frames() {
        assert_eq!(frame_all(100, &[b"\r\n\n"]), vec![line(b""), line(b"")]);
    }

    #[test]
    fn partial_line_waits_for_its_end() {
        let mut framer = LineFramer::new(100);
        framer.feed(b"RETR fi");
        assert_eq!(framer.next_frame(), None);
        assert_eq!(framer.buffered(), 7);
        framer.feed(b"le\r");
        assert_eq!(framer.next_frame(), None);
        framer.feed(b"\n");
        assert_eq!(framer.next_frame(), Some(line(b"RETR file")));
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn iac_commands_are_stripped() {
        // IAC IP IAC DM in the middle of a verb, as clients send before ABOR.
        assert_eq!(
            frame_all(100, &[b"AB\xff\xf4\xff\xf2OR\r\n"]),
            vec![line(b"ABOR")]
        );
        // IAC WILL/WONT/DO/DONT carry an option byte, which may even be LF.
        assert_eq!(
            frame_all(
                100,
                &[b"NO\xff\xfb\x01\xff\xfc\n\xff\xfd\x03\xff\xfe\x18OP\n"]
            ),
            vec![line(b"NOOP")]
        );
        // IAC IAC is one literal 0xFF.
        assert_eq!(frame_all(100, &[b"a\xff\xffb\n"]), vec![line(b"a\xffb")]);
        // An IAC followed by a non-command drops only the IAC.
        assert_eq!(frame_all(100, &[b"a\xffb\xff\n"]), vec![line(b"ab")]);
    }

    #[test]
    fn iac_split_across_feeds() {
        assert_eq!(
            frame_all(100, &[b"AB\xff", b"\xf4OR\r", b"\n"]),
            vec![line(b"ABOR")]
        );
        assert_eq!(
            frame_all(100, &[b"x\xff", b"\xfb", b"\n", b"y\xff", b"\xff\n"]),
            vec![line(b"xy\xff")]
        );
    }

    #[test]
    fn cr_iac_lf_is_a_line_end() {
        assert_eq!(frame_all(100, &[b"a\r\xff\xf1\n"]), vec![line(b"a")]);
    }

    #[test]
    fn exactly_max_line_is_accepted() {
        assert_eq!(frame_all(4, &[b"abcd\r\n"]), vec![line(b"abcd")]);
        assert_eq!(frame_all(4, &[b"ab", b"cd\r", b"\n"]), vec![line(b"abcd")]);
    }

    #[test]
    fn max_line_plus_one_is_too_long_once() {
        assert_eq!(
            frame_all(4, &[b"abcde\r\nok\r\n"]),
            vec![Frame::TooLong, line(b"ok")]
        );
        assert_eq!(
            frame_all(4, &[b"ab", b"c", b"de", b"fghij", b"\r\nok\n"]),
            vec![Frame::TooLong, line(b"ok")]
        );
        // A content CR counts toward the cap.
        assert_eq!(frame_all(4, &[b"abcd\rx\n"]), vec![Frame::TooLong]);
        // IAC sequences do not count; IAC IAC counts as one byte.
        assert_eq!(
            frame_all(4, &[b"ab\xff\xf4\xff\xf2cd\n", b"ab\xff\xffcd\n"]),
            vec![line(b"abcd"), Frame::TooLong]
        );
    }

    #[test]
    fn too_long_is_reported_before_the_line_end() {
        let mut framer = LineFramer::new(3);
        framer.feed(b"ok\nabcd");
        assert_eq!(framer.next_frame(), Some(line(b"ok")));
        assert_eq!(framer.next_frame(), Some(Frame::TooLong));
        framer.feed(&[b'x'; 1000]);
        assert_eq!(framer.next_frame(), None);
        assert_eq!(framer.buffered(), 0);
        framer.feed(b"\nnext\n");
        assert_eq!(framer.next_frame(), Some(Frame::TooLong));
        framer.feed(b"abc\n");
        assert_eq!(framer.next_frame(), Some(line(b"abc")));
    }

    #[test]
    fn zero_cap_allows_only_empty_lines() {
        assert_eq!(
            frame_all(0, &[b"\r\nx\n\n"]),
            vec![line(b""), Frame::TooLong, line(b"")]
        );
    }

    #[test]
    fn pipelined_lines_in_one_feed() {
        let mut framer = LineFramer::new(100);
        framer.feed(b"TYPE I\r\nPASV\r\nRETR f\r\nQUI");
        assert_eq!(framer.buffered(), 7 + 5 + 7 + 3);
        assert_eq!(framer.next_frame(), Some(line(b"TYPE I")));
        assert_eq!(framer.next_frame(), Some(line(b"PASV")));
        framer.feed(b"T\r\n");
        assert_eq!(framer.next_frame(), Some(line(b"RETR f")));
        assert_eq!(framer.next_frame(), Some(line(b"QUIT")));
        assert_eq!(framer.next_frame(), None);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn idle_framer_holds_no_heap() {
        let mut framer = LineFramer::new(100);
        framer.feed(b"USER anonymous\r\nPASS x\r\nSY");
        framer.feed(b"ST\r\n");
        assert_eq!(frames_of(&mut framer).len(), 3);
        assert_eq!(framer.partial.capacity(), 0);
        assert_eq!(framer.more.capacity(), 0);
        assert!(framer.ready.is_none());
        framer.feed(b"way too long a line for this framer, surely");
        framer.feed(&[b'y'; 500]);
        assert!(framer.partial.capacity() <= 100);
    }

    #[test]
    fn clear_drops_everything() {
        let mut framer = LineFramer::new(10);
        framer.feed(b"AUTH TLS\r\npartial\r\xff");
        framer.clear();
        assert_eq!(framer.buffered(), 0);
        assert_eq!(framer.next_frame(), None);
        // The held IAC and CR are gone too.
        framer.feed(b"\xf4x\n");
        assert_eq!(framer.next_frame(), Some(line(b"\xf4x")));
    }

    /// Bytes drawn mostly from the ones the framer treats specially.
    fn interesting(raw: &[u8]) -> Vec<u8> {
        const SPECIAL: &[u8] = b"ab \r\n\r\n\xff\xff\xff\xf4\xf2\xfb\xfd\xf0\x01";
        raw.iter()
            .map(|&b| {
                if b >= 0xe0 {
                    b
                } else {
                    SPECIAL[usize::from(b) % SPECIAL.len()]
                }
            })
            .collect()
    }

    /// Splits `data` into chunks whose sizes cycle through `sizes`; a size of 0 feeds an
    /// empty chunk followed by a one-byte one, so progress is guaranteed.
    fn chunked<'a>(data: &'a [u8], sizes: &[u8]) -> Vec<&'a [u8]> {
        if sizes.is_empty() {
            return vec![data];
        }
        let mut chunks = Vec::new();
        let mut rest = data;
        for size in sizes.iter().map(|&s| usize::from(s % 9)).cycle() {
            if rest.is_empty() {
                break;
            }
            if size == 0 {
                chunks.push(&rest[..0]);
            }
            let (chunk, tail) = rest.split_at(size.max(1).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }

    /// A straightforward whole-input model of the framer.
    fn model(max_line: usize, data: &[u8]) -> Vec<Frame> {
        let mut clean = Vec::new();
        let mut i = 0;
        while i < data.len() {
            match (data[i], data.get(i + 1)) {
                (IAC, Some(&IAC)) => {
                    clean.push(IAC);
                    i += 2;
                }
                (IAC, Some(251..=254)) => i += 3,
                (IAC, Some(240..=250)) | (IAC, None) => i += 2,
                (IAC, Some(_)) => i += 1,
                (b, _) => {
                    clean.push(b);
                    i += 1;
                }
            }
        }
        let mut frames = Vec::new();
        let mut pieces = clean.split(|&b| b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            let complete = pieces.peek().is_some();
            let content = piece.strip_suffix(b"\r").unwrap_or(piece);
            if content.len() > max_line {
                frames.push(Frame::TooLong);
            } else if complete {
                frames.push(Frame::Line(content.to_vec()));
            }
        }
        frames
    }

    #[test]
    fn prop_chunking_does_not_change_frames() {
        fn prop(raw: Vec<u8>, sizes: Vec<u8>, cap: u8) -> bool {
            let data = interesting(&raw);
            let max_line = usize::from(cap % 12);
            let whole = frame_all(max_line, &[&data]);
            let bytewise: Vec<&[u8]> = data.chunks(1).collect();
            whole == frame_all(max_line, &chunked(&data, &sizes))
                && whole == frame_all(max_line, &bytewise)
                && whole == model(max_line, &data)
        }
        quickcheck(prop as fn(Vec<u8>, Vec<u8>, u8) -> bool);
    }

    #[test]
    fn prop_buffer_stays_within_cap() {
        fn prop(raw: Vec<u8>, sizes: Vec<u8>, cap: u8, plain: bool) -> TestResult {
            let data = if plain { raw } else { interesting(&raw) };
            let max_line = usize::from(cap % 12);
            let mut framer = LineFramer::new(max_line);
            for chunk in chunked(&data, &sizes) {
                framer.feed(chunk);
                while let Some(frame) = framer.next_frame() {
                    if let Frame::Line(l) = frame {
                        if l.len() > max_line || l.contains(&b'\n') {
                            return TestResult::failed();
                        }
                    }
                }
                if framer.buffered() > max_line || framer.partial.capacity() > max_line {
                    return TestResult::failed();
                }
            }
            TestResult::passed()
        }
        quickcheck(prop as fn(Vec<u8>, Vec<u8>, u8, bool) -> TestResult);
    }
}
