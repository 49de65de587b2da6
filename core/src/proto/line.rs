//! Control-channel line framing: CRLF or bare LF line ends, Telnet IAC stripping
//! (RFC 854: `IAC IP`, `IAC DM`, `IAC WILL x`, `IAC IAC` = a literal 0xFF, ...), and a
//! hard cap on line length after which the framer discards up to the next line end and
//! reports [`Frame::TooLong`] once. It never buffers more than the cap of an incomplete
//! line, whatever it is fed.

/// One framed unit of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its CR LF / LF, with Telnet commands removed.
    Line(Vec<u8>),
    /// A line longer than the cap was discarded (reported once per over-long line).
    TooLong,
}

/// Splits control-channel bytes into lines.
#[derive(Debug)]
pub struct LineFramer {
    _todo: (),
}

impl LineFramer {
    /// A framer that refuses lines longer than `max_line` bytes (not counting CR LF).
    pub fn new(max_line: usize) -> Self {
        let _ = max_line;
        todo!()
    }

    /// Takes bytes from the wire. Complete lines queue up until [`Self::next_frame`]
    /// takes them; an over-long partial line is dropped as it arrives.
    pub fn feed(&mut self, bytes: &[u8]) {
        let _ = bytes;
        todo!()
    }

    /// The next complete frame, in arrival order.
    pub fn next_frame(&mut self) -> Option<Frame> {
        todo!()
    }

    /// Bytes held (complete lines not yet taken plus the partial line).
    pub fn buffered(&self) -> usize {
        todo!()
    }

    /// Drops everything buffered (used when the channel switches to TLS).
    pub fn clear(&mut self) {
        todo!()
    }
}
