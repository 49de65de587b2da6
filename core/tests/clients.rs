//! The client behaviour corpus (`core/tests/clients/*.txt`, format in its README):
//! what FileZilla, WinSCP, Windows' ftp.exe and Explorer, Dolphin, IP cameras and
//! others send, replayed against the core. A failure names the file, the line and
//! the replies the client would have choked on.

mod harness;

use harness::Harness;

const CORPUS: &[(&str, &str)] = &[
    ("filezilla.txt", include_str!("clients/filezilla.txt")),
    ("winscp.txt", include_str!("clients/winscp.txt")),
    ("windows-ftp.txt", include_str!("clients/windows-ftp.txt")),
    (
        "windows-explorer.txt",
        include_str!("clients/windows-explorer.txt"),
    ),
    ("dolphin.txt", include_str!("clients/dolphin.txt")),
    ("cameras.txt", include_str!("clients/cameras.txt")),
    (
        "abor-and-quit.txt",
        include_str!("clients/abor-and-quit.txt"),
    ),
];

/// `\n` and `\r` in a statement's text.
fn unescape(text: &str) -> Vec<u8> {
    text.replace("\\n", "\n").replace("\\r", "\r").into_bytes()
}

/// The codes of the replies in `wire`, in order (the final line of each).
fn codes(wire: &str) -> Vec<String> {
    wire.split("\r\n")
        .filter(|l| {
            let b = l.as_bytes();
            b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' '
        })
        .map(|l| l[..3].to_string())
        .collect()
}

/// Whether `got` matches `want` ("150 226", with alternatives "200|202").
fn matches(want: &str, got: &[String]) -> bool {
    let want: Vec<&str> = want.split_whitespace().collect();
    want.len() == got.len()
        && want
            .iter()
            .zip(got)
            .all(|(w, g)| w.split('|').any(|alt| alt == g))
}

fn replay(name: &str, script: &str) {
    let mut h = Harness::new();
    let mut last = String::new();
    let mut started = false;
    for (i, raw) in script.lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "file" | "dir" => {
                assert!(!started, "{at}: storage is set up before the first command");
                let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
                match word {
                    "file" => h.storage.add_file(path, &unescape(text)),
                    _ => h.storage.add_dir(path),
                }
            }
            "upload" => h.upload = unescape(rest),
            ">" => {
                started = true;
                last = h.send(rest);
            }
            "<" => {
                let got = codes(&last);
                assert!(
                    matches(rest, &got),
                    "{at}: the client needs {rest:?}, the server said {last:?}"
                );
            }
            "has" => {
                let (path, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let stored = h.storage.read_file(path);
                assert_eq!(
                    stored.as_deref(),
                    Some(&unescape(text)[..]),
                    "{at}: {path} in storage"
                );
            }
            "got" => {
                let want = unescape(rest);
                assert!(
                    h.received.windows(want.len()).any(|w| w == want),
                    "{at}: the last download lacks {rest:?}: {:?}",
                    String::from_utf8_lossy(&h.received)
                );
            }
            other => panic!("{at}: unknown statement {other:?}"),
        }
    }
    assert!(started, "{name}: no command");
}

#[test]
fn every_client_in_the_corpus_gets_what_it_needs() {
    for (name, script) in CORPUS {
        replay(name, script);
    }
}

#[test]
fn the_corpus_list_names_every_file() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CORPUS.iter().map(|(n, _)| n.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn a_reply_the_client_cannot_use_fails_the_replay() {
    let result = std::panic::catch_unwind(|| replay("broken", "> NOOP\n< 502\n"));
    assert!(result.is_err(), "a wrong expectation must fail");
}
