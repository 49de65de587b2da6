//! `wharf user add|passwd|del|list` driven as an administrator would: on the users
//! file of a running server, which the command tells to reload through its pid file;
//! then curl logs in (or fails to) as the user. The file's comments survive.

mod common;

use std::path::PathBuf;

use common::*;

const USERS: &str = "# Accounts of the team: edit with `wharf user`.\n\n# alice runs the books\n[[users]]\nname = \"alice\"\npassword_hash = \"HASH\"  # first password\ngroups = [\"staff\"]\n\n[[groups]]\nname = \"auditors\"   # read-only, later\nmembers = [\"alice\"]\n";

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: String,
    users: PathBuf,
}

fn setup(pid_file: bool) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::create_dir(dir.join("pub")).unwrap();
    std::fs::write(dir.join("pub/f.txt"), "for users only\n").unwrap();
    let hash = wharf_server::hash_password("alice-pw").unwrap();
    let users = dir.join("users.toml");
    std::fs::write(&users, USERS.replace("HASH", &hash)).unwrap();
    let pid = if pid_file {
        "pid_file = \"wharf.pid\"\n"
    } else {
        ""
    };
    let config = dir.join("wharf.toml");
    std::fs::write(
        &config,
        format!("[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\nusers_file = \"users.toml\"\n{pid}\n[site]\nroot = \"pub\"\nfailed_login_delay = 0\n"),
    )
    .unwrap();
    Setup {
        _tmp: tmp,
        dir,
        config: config.display().to_string(),
        users,
    }
}

/// `wharf --config CONFIG user ARGS` with `stdin`: (success, stdout, stderr).
fn user(s: &Setup, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut all = vec!["--config", s.config.as_str(), "user"];
    all.extend_from_slice(args);
    let out = run(&s.dir, &all, stdin);
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Downloads f.txt as `user:password`: the body, or curl's exit code.
fn fetch(addr: &str, login: &str) -> Result<String, i32> {
    let out = curl(&["-u", login, &format!("ftp://{addr}/f.txt")]);
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap()),
        false => Err(out.status.code().unwrap_or(-1)),
    }
}

fn wait_reloaded(w: &mut Wharf) {
    let said = w
        .stderr
        .expect("about the reload", |l| l.contains("reload"));
    assert!(said.contains("reloaded"), "{said}");
}

/// The users file without the lines about `name` (its table), for comparing layouts.
fn without_entry(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("\n[[users]]\nname = \"{name}\""))
        .unwrap_or_else(|| panic!("no entry for {name} in {text}"));
    let end = text[start + 1..]
        .find("\n[[")
        .map_or(text.len(), |i| start + 1 + i);
    format!("{}{}", &text[..start], &text[end..])
}

#[test]
fn users_added_changed_and_deleted_log_in_or_not_on_a_running_server() {
    let s = setup(true);
    let mut w = Wharf::start(&s.dir, &["--config", &s.config], &[]);
    let addr = w.serving();
    assert_eq!(fetch(&addr, "alice:alice-pw").unwrap(), "for users only\n");
    assert!(fetch(&addr, "bob:bob-pw").is_err());
    let before = std::fs::read_to_string(&s.users).unwrap();

    // add, with a group: the password comes from standard input.
    let (ok, out, err) = user(&s, &["add", "bob", "--group", "staff"], "bob-pw\n");
    assert!(ok, "{err}");
    assert!(out.contains("user bob added to"), "{out}");
    assert!(
        out.contains(&format!(
            "told the running server (pid {}) to reload",
            w.pid()
        )),
        "{out}"
    );
    wait_reloaded(&mut w);
    assert_eq!(fetch(&addr, "bob:bob-pw").unwrap(), "for users only\n");
    let text = std::fs::read_to_string(&s.users).unwrap();
    assert_eq!(
        without_entry(&text, "bob"),
        before,
        "comments or layout changed"
    );
    assert!(
        text.contains("groups = [\"staff\"]\n\n[[groups]]"),
        "{text}"
    );
    // The hash is the server's own format, not the password.
    assert!(
        !text.contains("bob-pw") && text.contains("$argon2id$"),
        "{text}"
    );

    // passwd: the old password stops working, the new one works.
    let (ok, out, err) = user(&s, &["passwd", "BOB"], "bob-new\n");
    assert!(ok, "{err}");
    assert!(out.contains("password of BOB changed"), "{out}");
    wait_reloaded(&mut w);
    assert_eq!(fetch(&addr, "bob:bob-pw"), Err(67));
    assert_eq!(fetch(&addr, "bob:bob-new").unwrap(), "for users only\n");

    // list
    let (ok, out, _) = user(&s, &["list"], "");
    assert!(ok);
    assert_eq!(out, "alice  staff, auditors\nbob    staff\n");

    // del alice: out of the auditors too; the comments of the rest stay.
    let (ok, out, err) = user(&s, &["del", "alice"], "");
    assert!(ok, "{err}");
    assert!(out.contains("user alice deleted"), "{out}");
    wait_reloaded(&mut w);
    assert_eq!(fetch(&addr, "alice:alice-pw"), Err(67));
    let text = std::fs::read_to_string(&s.users).unwrap();
    assert!(
        text.starts_with(
            "# Accounts of the team: edit with `wharf user`.\n\n[[users]]\nname = \"bob\""
        ),
        "{text}"
    );
    assert!(
        text.contains("name = \"auditors\"   # read-only, later\nmembers = []\n"),
        "{text}"
    );
    assert!(!text.contains("alice"), "{text}");
    assert!(w.terminate().success());
}

#[test]
fn mistakes_are_refused_with_clear_errors_and_change_nothing() {
    let s = setup(true);
    let before = std::fs::read_to_string(&s.users).unwrap();
    for (args, stdin, expect) in [
        (&["add", "Alice"][..], "pw\n", "user \"alice\" exists"),
        (&["passwd", "carol"][..], "pw\n", "no user \"carol\""),
        (&["del", "carol"][..], "", "no user \"carol\""),
        (&["add", "two words"][..], "pw\n", "not a usable user name"),
        (&["add", "anonymous"][..], "pw\n", "anonymous login"),
        (
            &["add", "carol", "--group", "a|b"][..],
            "pw\n",
            "not a usable group name",
        ),
        (&["add", "carol"][..], "\n", "empty password"),
        (&["add", "carol"][..], "", "empty password"),
    ] {
        let (ok, _, err) = user(&s, args, stdin);
        assert!(!ok, "{args:?} succeeded");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert_eq!(
            std::fs::read_to_string(&s.users).unwrap(),
            before,
            "{args:?}"
        );
    }
    // Without --config there is nothing to change.
    let out = run(&s.dir, &["user", "list"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}

#[test]
fn without_a_running_server_or_a_pid_file_it_says_so() {
    // A pid file configured, no server: the change waits for the next start.
    let s = setup(true);
    let (ok, out, err) = user(&s, &["add", "carol"], "pw\n");
    assert!(ok, "{err}");
    assert!(out.contains("no server is running"), "{out}");
    // No pid file at all: the administrator is told how to reload.
    let s = setup(false);
    let (ok, out, err) = user(&s, &["add", "carol"], "pw\n");
    assert!(ok, "{err}");
    assert!(out.contains("no pid file is configured"), "{out}");
    assert!(out.contains("systemctl reload wharf"), "{out}");
    // --pid-file finds a server started with it.
    let mut w = Wharf::start(&s.dir, &["--config", &s.config, "--pid-file", "w.pid"], &[]);
    let addr = w.serving();
    let (ok, out, err) = user(&s, &["--pid-file", "w.pid", "add", "dave"], "dave-pw\n");
    assert!(ok, "{err}");
    assert!(out.contains("told the running server"), "{out}");
    wait_reloaded(&mut w);
    assert_eq!(fetch(&addr, "dave:dave-pw").unwrap(), "for users only\n");
    assert!(w.terminate().success());
}
