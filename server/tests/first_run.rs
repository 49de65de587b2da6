//! What a new user meets first: the help and the demo's welcome point to an example
//! configuration an installed wharf has, the demo data (with its private key) is
//! ignored by git, and a refused reload says so once.

mod common;

use common::*;

#[test]
fn help_and_the_demo_welcome_point_to_an_example_an_installed_wharf_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let help = run(tmp.path(), &["--help"], "");
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    // `examples/wharf.toml` is not where anyone finds it: it is in the source tree
    // (server/examples), and `cargo install` installs only the binary.
    assert!(!help.contains("examples/wharf.toml"), "{help}");
    assert!(help.contains("wharf example-config"), "{help}");

    let data = tmp.path().join("wharf-data");
    wharf_server::default_config(&data).unwrap();
    let welcome = std::fs::read_to_string(data.join("public/welcome.txt")).unwrap();
    assert!(!welcome.contains("examples/wharf.toml"), "{welcome}");
    assert!(welcome.contains("wharf example-config"), "{welcome}");

    let example = run(tmp.path(), &["example-config"], "");
    assert!(example.status.success());
    let example = String::from_utf8(example.stdout).unwrap();
    assert_eq!(
        example,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/wharf.toml"))
            .unwrap()
    );
    for key in [
        "[server]",
        "passive_ports",
        "[site]",
        "[[users]]",
        "[site.tls]",
    ] {
        assert!(example.contains(key), "{key} missing from the example");
    }
}

#[test]
fn the_demo_data_directory_is_ignored_by_git() {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for path in [
        "wharf-data/tls/key.pem",
        "wharf-data/public/welcome.txt",
        "server/wharf-data/tls/key.pem",
    ] {
        let out = std::process::Command::new("git")
            .args(["check-ignore", "--no-index", "-q", path])
            .current_dir(repo)
            .output()
            .expect("git must be installed to check .gitignore");
        assert!(
            out.status.code() != Some(128),
            "git check-ignore failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{path} is not ignored by git");
    }
}

#[test]
fn a_refused_reload_says_the_running_configuration_stays_once() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let cfg = tmp.path().join("w.toml");
    let text = |shards: u32| {
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nshards = {shards}\n[site]\nroot = \"pub\"\nanonymous = true\n")
    };
    std::fs::write(&cfg, text(1)).unwrap();
    let mut w = Wharf::start(tmp.path(), &["--config", cfg.to_str().unwrap()], &[]);
    w.serving();
    std::fs::write(&cfg, text(2)).unwrap();
    w.signal(libc::SIGHUP);
    let said = w
        .stderr
        .expect("about the reload", |l| l.contains("reload"));
    assert!(said.contains("refused"), "{said}");
    assert!(said.contains("server.shards"), "{said}");
    assert_eq!(
        said.matches("the running configuration stays").count(),
        1,
        "{said}"
    );
    assert!(w.terminate().success());
}
