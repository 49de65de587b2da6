//! The control-line framer and command parser: no panic, bounded buffering, and the
//! same frames whatever the chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_core::proto::{command, Frame, LineFramer};

const MAX_LINE: usize = 64;

fn frames(data: &[u8], cut: usize) -> Vec<Frame> {
    let mut framer = LineFramer::new(MAX_LINE);
    let mut out = Vec::new();
    for chunk in data.chunks(cut.max(1)) {
        framer.feed(chunk);
        while let Some(f) = framer.next_frame() {
            out.push(f);
        }
        assert!(framer.buffered() <= MAX_LINE + 1, "buffered {}", framer.buffered());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let whole = frames(data, data.len());
    assert_eq!(whole, frames(data, usize::from(cut % 16)), "chunking changed the frames");
    for frame in whole {
        if let Frame::Line(line) = frame {
            assert!(line.len() <= MAX_LINE && !line.contains(&b'\n'));
            // A CR that is not part of CR LF is line content by the framer's design, so
            // only LF is impossible here (CR in arguments is reported as a policy issue).
            if let Ok(cmd) = command::parse(&line) {
                assert!(!cmd.arg.contains('\n'));
            }
        }
    }
});
