use super::*;

fn ext_rules(allow_unlisted: bool, allowed: &[&str], denied: &[&str]) -> RequestFiltering {
    RequestFiltering {
        allow_unlisted_extensions: allow_unlisted,
        allowed_extensions: allowed.iter().map(|s| s.to_string()).collect(),
        denied_extensions: denied.iter().map(|s| s.to_string()).collect(),
        ..RequestFiltering::default()
    }
}

/// Ways to spell a name that must not change how it is judged: case, trailing dots and
/// spaces (Windows drops them), an NTFS stream suffix.
fn spellings_of(name: &str) -> Vec<String> {
    vec![
        name.to_string(),
        name.to_uppercase(),
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if i % 2 == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect(),
        format!("{name}."),
        format!("{name} "),
        format!("{name}. . ."),
    ]
}

/// Spellings that may refuse more but never less: an NTFS stream suffix names another
/// file on a POSIX disk, so an allowed name with one may be refused; a denied one must
/// stay denied.
fn stream_spellings_of(name: &str) -> Vec<String> {
    vec![
        format!("{name}::$DATA"),
        format!("{}::$DATA", name.to_uppercase()),
        format!("{name}:x.txt"),
    ]
}

#[test]
fn extension_matrix_rule_by_spelling() {
    // (rules, [(base name, allowed?)])
    let cases: Vec<(RequestFiltering, Vec<(&str, bool)>)> = vec![
        (
            ext_rules(true, &[], &["exe", "bat"]),
            vec![
                ("file.exe", false),
                ("setup.bat", false),
                ("file.txt", true),
                ("archive.exe.zip", true),
                ("noext", true),
                (".exe", false),
            ],
        ),
        (
            ext_rules(false, &["txt", "pdf"], &[]),
            vec![
                ("file.exe", false),
                ("file.txt", true),
                ("report.PDF", true),
                ("noext", false),
                ("file.txt.exe", false),
            ],
        ),
        (
            ext_rules(false, &["txt", ""], &["txt"]),
            vec![("file.txt", false), ("noext", true), ("a.md", false)],
        ),
    ];
    let mut checked = 0;
    for (rules, names) in &cases {
        for (base, allowed) in names {
            let mut spelled_all = spellings_of(base);
            if !allowed {
                spelled_all.extend(stream_spellings_of(base));
            }
            for spelled in spelled_all {
                assert_eq!(
                    rules.extension_allowed(&spelled),
                    *allowed,
                    "{spelled:?} under {rules:?}"
                );
                let path = VPath::root().resolve(&format!("dir/{spelled}")).unwrap();
                let verdict = rules.check_path(&path, true);
                assert_eq!(verdict.is_ok(), *allowed, "{path}");
                if !allowed {
                    assert_eq!(verdict.unwrap_err().sub, SubStatus::ExtensionDenied);
                }
                // Directory commands do not judge extensions.
                assert!(rules.check_path(&path, false).is_ok());
                checked += 1;
            }
        }
    }
    assert!(checked > 80, "{checked}");
}

#[test]
fn a_stream_suffix_cannot_smuggle_an_extension() {
    // On a case-sensitive POSIX disk `a.txt:x.exe` is its own file ending in `.exe`.
    let deny_unlisted = ext_rules(false, &["txt"], &[]);
    assert!(!deny_unlisted.extension_allowed("a.txt:x.exe"));
    let deny_exe = ext_rules(true, &[], &["exe"]);
    assert!(!deny_exe.extension_allowed("a.exe:x.txt"));
    assert!(!deny_exe.extension_allowed("a.txt:x.exe"));
}

fn hidden() -> RequestFiltering {
    RequestFiltering {
        hidden_segments: vec!["_private".into()],
        ..RequestFiltering::default()
    }
}

#[test]
fn hidden_segment_matrix_cwd_by_spelling() {
    let rules = hidden();
    let cwds = ["/", "/x", "/a/b"];
    let hidden_spellings = [
        "_private",
        "./_private",
        "x/../_private",
        "_PRIVATE",
        "_private/",
        "_private//",
        "_Private.",
        "_private ",
        "_private::$DATA",
        "_private/private.txt",
        "_private/sub/deeper/file",
        "./_PRIVATE/./private.txt",
        "a/_private",
        "/_private",
        "/../_private/x",
        "/a/../../_private",
    ];
    for cwd in cwds {
        let cwd = VPath::root().resolve(cwd).unwrap();
        for arg in hidden_spellings {
            let path = cwd.resolve(arg).unwrap();
            for file in [false, true] {
                assert_eq!(
                    rules.check_path(&path, file),
                    Err(Denial::HIDDEN),
                    "{arg:?} from {cwd} -> {path}"
                );
            }
        }
        for arg in ["_privatex", "x_private", "private", "_priv", "..", "."] {
            let path = cwd.resolve(arg).unwrap();
            assert!(rules.check_path(&path, true).is_ok(), "{arg:?} from {cwd}");
        }
    }
    assert!(rules.is_hidden("_private"));
    assert!(rules.is_hidden("_PRIVATE."));
    assert!(!rules.is_hidden("_private_"));
    assert!(!RequestFiltering::default().is_hidden("_private"));
}

#[test]
fn hidden_segments_fold_unicode_case() {
    let rules = RequestFiltering {
        hidden_segments: vec!["Geheim_Ü".into()],
        ..RequestFiltering::default()
    };
    assert!(rules.is_hidden("geheim_ü"));
    assert!(rules.is_hidden("GEHEIM_Ü"));
    assert!(!rules.is_hidden("geheim_u"));
}

#[test]
fn denied_sequences_judge_the_argument_as_sent() {
    let rules = RequestFiltering {
        denied_sequences: vec!["..".into(), "~".into(), "%2e".into()],
        ..RequestFiltering::default()
    };
    for arg in [
        "..",
        "x/../y",
        "../../etc/passwd",
        "~root",
        "a/~/b",
        "%2E%2E/x",
        "a..b",
    ] {
        assert_eq!(rules.check_argument(arg), Err(Denial::SEQUENCE), "{arg:?}");
    }
    for arg in ["", "a.b", "./x", "x/y.txt", "/abs/path"] {
        assert_eq!(rules.check_argument(arg), Ok(()), "{arg:?}");
    }
    // An empty sequence in a config must not deny everything.
    let empty = RequestFiltering {
        denied_sequences: vec![String::new()],
        ..RequestFiltering::default()
    };
    assert_eq!(empty.check_argument("x"), Ok(()));
}

#[test]
fn path_length_limit_applies_to_argument_and_resolved_path() {
    let rules = RequestFiltering {
        max_path_length: 10,
        ..RequestFiltering::default()
    };
    assert!(rules.check_argument("0123456789").is_ok());
    assert_eq!(
        rules.check_argument("0123456789a"),
        Err(Denial::PATH_TOO_LONG)
    );
    let deep = VPath::root().resolve("/abcdef/ghijk").unwrap();
    assert_eq!(rules.check_path(&deep, false), Err(Denial::PATH_TOO_LONG));
    let unlimited = RequestFiltering {
        max_path_length: 0,
        ..RequestFiltering::default()
    };
    assert!(unlimited.check_argument(&"x".repeat(100_000)).is_ok());
}

#[test]
fn command_filtering_table() {
    let deny_listed = RequestFiltering {
        denied_commands: vec![Verb::Site, Verb::Dele],
        ..RequestFiltering::default()
    };
    let allow_listed = RequestFiltering {
        allow_unlisted_commands: false,
        allowed_commands: vec![Verb::User, Verb::Pass, Verb::Retr, Verb::Dele],
        denied_commands: vec![Verb::Dele],
        ..RequestFiltering::default()
    };
    let table = [
        (Verb::Site, false, false),
        (Verb::Dele, false, false),
        (Verb::Retr, true, true),
        (Verb::User, true, true),
        (Verb::Stor, true, false),
        (Verb::Pwd, true, false),
    ];
    for (verb, under_deny, under_allow) in table {
        assert_eq!(
            deny_listed.check_command(verb).is_ok(),
            under_deny,
            "{verb:?}"
        );
        assert_eq!(
            allow_listed.check_command(verb).is_ok(),
            under_allow,
            "{verb:?}"
        );
    }
    assert_eq!(deny_listed.check_command(Verb::Site), Err(Denial::COMMAND));
    // Aliases are their verb.
    assert_eq!(Verb::from_word(b"XPWD"), Some(Verb::Pwd));
}

#[test]
fn upload_limit() {
    let rules = RequestFiltering {
        max_upload_size: Some(100),
        ..RequestFiltering::default()
    };
    assert!(!rules.upload_too_large(100));
    assert!(rules.upload_too_large(101));
    assert!(!RequestFiltering::default().upload_too_large(u64::MAX));
}
