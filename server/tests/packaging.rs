//! What installing wharf gives: shell completions and manual pages generated from the
//! command-line definitions, the licence files the workspace names, and release builds
//! without debug information (with a profile that keeps it, for profiling).

mod common;

use common::*;

fn stdout(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), args, "");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_know_the_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = stdout(&["completions", shell]);
        assert!(script.lines().count() > 50, "{shell}: {script}");
        // (Flags without their dashes: fish writes `-l listen`.)
        for word in [
            "check-config",
            "example-config",
            "user",
            "passwd",
            "completions",
            "listen",
            "pid-file",
            "config",
            "group",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // bash parses its script, and completing `wharf user ` offers the subcommands.
    let script = stdout(&["completions", "bash"]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("wharf.bash");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && COMP_WORDS=(wharf user '') COMP_CWORD=2 COMP_LINE='wharf user ' COMP_POINT=11 && _wharf wharf '' user && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            path.display()
        ))
        .output()
        .expect("bash");
    let offered = String::from_utf8_lossy(&out.stdout);
    for sub in ["add", "passwd", "del", "list"] {
        assert!(
            offered.lines().any(|l| l == sub),
            "`wharf user <TAB>` lacks {sub}: {offered}"
        );
    }
}

#[test]
fn the_manual_pages_describe_the_commands() {
    let page = stdout(&["man"]);
    assert!(page.contains(".TH wharf 1"), "{page}");
    for word in [
        "check\\-config",
        "\\-\\-listen",
        "\\-\\-pid\\-file",
        "user",
        "completions",
        "SIGHUP",
    ] {
        assert!(page.contains(word), "wharf(1) lacks {word}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["man", "--out-dir", "."], "");
    assert!(out.status.success());
    for page in [
        "wharf.1",
        "wharf-check-config.1",
        "wharf-user.1",
        "wharf-user-add.1",
        "wharf-completions.1",
    ] {
        assert!(tmp.path().join(page).exists(), "no {page}");
    }
    let add = std::fs::read_to_string(tmp.path().join("wharf-user-add.1")).unwrap();
    assert!(
        add.contains("\\-\\-group") && add.contains("standard input"),
        "{add}"
    );
}

#[test]
fn licence_files_and_release_profiles() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let read = |f: &str| {
        std::fs::read_to_string(format!("{root}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"))
    };
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    assert_eq!(
        manifest["workspace"]["package"]["license"].as_str(),
        Some("MIT OR Apache-2.0")
    );
    assert!(read("LICENSE-MIT").contains("Permission is hereby granted, free of charge"));
    let apache = read("LICENSE-APACHE");
    assert!(apache.contains("Apache License") && apache.contains("Version 2.0, January 2004"));
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
    let profile = &manifest["profile"];
    assert_eq!(
        profile["release"]["debug"].as_integer(),
        Some(0),
        "release with debug info"
    );
    assert_eq!(profile["release"]["strip"].as_str(), Some("symbols"));
    assert_eq!(profile["profiling"]["inherits"].as_str(), Some("release"));
    assert!(profile["profiling"]["debug"].as_integer().unwrap_or(0) > 0);
    assert_eq!(profile["profiling"]["strip"].as_str(), Some("none"));
}
