//! quickcheck properties of the session as a whole.

mod harness;

use harness::Harness;
use quickcheck::{quickcheck, TestResult};
use wharf_core::Action;

/// A plausible client script: real commands, some with random arguments.
fn script(words: &[(u8, String)]) -> Vec<u8> {
    const VERBS: [&str; 24] = [
        "USER alice",
        "PASS secret",
        "PWD",
        "CWD",
        "MKD",
        "RMD",
        "DELE",
        "LIST",
        "NLST",
        "MLSD",
        "RETR",
        "STOR",
        "APPE",
        "REST",
        "TYPE",
        "PASV",
        "EPSV",
        "PORT",
        "EPRT",
        "RNFR",
        "RNTO",
        "SIZE",
        "ABOR",
        "NOOP",
    ];
    let mut out = Vec::new();
    for (i, arg) in words {
        let verb = VERBS[*i as usize % VERBS.len()];
        out.extend_from_slice(verb.as_bytes());
        if !verb.contains(' ') && !arg.is_empty() {
            out.push(b' ');
            out.extend(arg.bytes().filter(|b| *b != b'\n' && *b != b'\r').take(64));
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn run(input: &[u8], cuts: &[usize]) -> (String, Vec<Action>) {
    let mut h = Harness::new();
    h.mode = harness::DataMode::Sync;
    h.storage.add_file("/f", b"0123456789");
    h.storage.add_dir("/d");
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([input.len()]) {
        if cut > start {
            h.send_raw(&input[start..cut]);
            start = cut;
        }
    }
    (h.replies(), h.actions)
}

quickcheck! {
    /// Any split of the same input into reads gives the same replies and actions.
    fn chunking_does_not_matter(words: Vec<(u8, String)>, cuts: Vec<usize>) -> bool {
        let input = script(&words);
        run(&input, &[]) == run(&input, &cuts)
    }

    /// Arbitrary bytes never panic, replies stay well framed and buffers bounded.
    fn arbitrary_bytes_are_harmless(chunks: Vec<Vec<u8>>) -> bool {
        let mut h = Harness::new();
        for chunk in &chunks {
            h.send_raw(chunk);
            if h.session.wants_read() && h.session.poll_transmit().is_some() {
                return false; // the harness drains everything; nothing may linger
            }
        }
        let wire = h.replies();
        wire.ends_with("\r\n") && !wire.replace("\r\n", "").contains(['\r', '\n'])
    }

    /// No ConnectData ever goes to an address but the control peer's, nor to a
    /// privileged port, whatever PORT/EPRT arguments a client sends.
    fn no_bounce(args: Vec<(bool, u8, u8, u8, u8, u16)>) -> TestResult {
        let mut h = Harness::new();
        h.storage.add_file("/f", b"x");
        h.login();
        for (eprt, a, b, c, d, port) in args {
            let line = if eprt {
                format!("EPRT |1|{a}.{b}.{c}.{d}|{port}|")
            } else {
                format!("PORT {a},{b},{c},{d},{},{}", port >> 8, port & 0xff)
            };
            h.send(&line);
            h.send("RETR f");
        }
        let peer: std::net::SocketAddr = harness::PEER.parse().unwrap();
        TestResult::from_bool(h.actions.iter().all(|a| match a {
            Action::ConnectData { target, .. } => target.ip() == peer.ip() && target.port() >= 1024,
            _ => true,
        }))
    }
}

#[test]
fn an_idle_session_is_small() {
    let mut h = Harness::new();
    h.login();
    for _ in 0..50 {
        h.send("NOOP");
    }
    // The struct itself; heap buffers are released when idle (checked by the runtime's
    // memory benchmark, where it counts).
    let size = std::mem::size_of::<wharf_core::Session>();
    assert!(size <= 1024, "Session is {size} bytes");
    assert!(h.session.poll_transmit().is_none());
}
