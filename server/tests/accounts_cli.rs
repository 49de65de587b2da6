//! The `wharf` binary's account commands: `passwd` with a scheme and a cost, `user
//! import` of other servers' password files, and check-config's warning for a
//! directory it cannot reach.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use wharf_server::auth::crypt;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

fn wharf(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(WHARF)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits without reading: a broken pipe here
    // is its answer, not the test's failure.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn passwd_takes_a_scheme_and_a_cost() {
    let out = wharf(&["passwd", "--scheme", "bcrypt", "--cost", "5"], "s3cret\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let hash = text(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$2b$05$"), "{hash}");
    assert_eq!(crypt::verify("s3cret", &hash), Ok(true));
    assert_eq!(crypt::verify("s3cret!", &hash), Ok(false));

    let out = wharf(&["passwd", "--cost", "m=8192,t=3"], "s3cret\n");
    let hash = text(&out.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$v=19$m=8192,t=3,p=1$"), "{hash}");
    assert_eq!(crypt::verify("s3cret", &hash), Ok(true));

    for bad in [
        vec!["passwd", "--scheme", "bcrypt", "--cost", "40"],
        vec!["passwd", "--scheme", "md5"],
        vec!["passwd", "--cost", "m=1"],
    ] {
        let out = wharf(&bad, "s3cret\n");
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        assert!(text(&out.stderr).starts_with("wharf: "), "{bad:?}");
    }
}

#[test]
fn user_import_converts_a_proftpd_file_and_appends_to_a_users_file() {
    let tmp = tempfile::tempdir().unwrap();
    // What ftpasswd --sha512 writes, a weak MD5 line, and an htpasswd bcrypt line.
    let sha512 = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";
    let passwd = tmp.path().join("ftpd.passwd");
    std::fs::write(
        &passwd,
        format!(
            "alice:{sha512}:1001:1001::/srv/ftp/alice:/bin/false\n\
             old:$1$saltsalt$RwMqRjSWhXMKbW72DwzGd1:1002:1002::/srv/ftp/old:/bin/false\n"
        ),
    )
    .unwrap();
    let p = passwd.to_str().unwrap();
    // To stdout.
    let out = wharf(&["user", "import", "--format", "proftpd", p], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = text(&out.stdout);
    assert!(
        toml.contains("name = \"alice\"") && toml.contains(sha512),
        "{toml}"
    );
    assert!(toml.contains("# home in"), "{toml}");
    assert!(!toml.contains("old"), "{toml}");
    let err = text(&out.stderr);
    assert!(
        err.contains("ftpd.passwd:2: \"old\" skipped: MD5-crypt"),
        "{err}"
    );

    // Appended to a users file that the configuration then uses: alice logs in with
    // the password she had.
    let users = tmp.path().join("users.toml");
    std::fs::write(&users, "[[users]]\nname = \"bob\"\npassword_hash = \"$2b$04$abcdefghijklmnopqrstuuPp7HPfoAs8I2dCQCQ/fW7zEJv8I8C8e\"\n").unwrap();
    let u = users.to_str().unwrap();
    let out = wharf(&["user", "import", "--format", "proftpd", "--to", u, p], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("1 user(s) appended"),
        "{}",
        text(&out.stderr)
    );
    // A second import finds alice there already.
    let out = wharf(&["user", "import", "--format", "proftpd", "--to", u, p], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("\"alice\" skipped: the user is defined already"));
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let conf = tmp.path().join("wharf.toml");
    std::fs::write(
        &conf,
        "[server]\nusers_file = \"users.toml\"\n[site]\nroot = \"pub\"\n",
    )
    .unwrap();
    let config = wharf_server::ServerConfig::from_file(&conf).unwrap();
    let names: Vec<&str> = config.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["bob", "alice"]);
    let alice = &config.users[1];
    assert_eq!(crypt::verify("s3cret", &alice.password_hash), Ok(true));

    // The other `wharf user` commands manage the imported users like any other: a new
    // password (argon2id) replaces the imported hash in place.
    let c = conf.to_str().unwrap();
    let out = wharf(&["--config", c, "user", "list"], "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    assert_eq!(listed, ["bob", "alice"]);
    let out = wharf(&["--config", c, "user", "passwd", "alice"], "n3w-s3cret\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = wharf_server::ServerConfig::from_file(&conf).unwrap();
    let alice = &config.users[1];
    assert!(alice.password_hash.starts_with("$argon2id$"), "{alice:?}");
    assert_eq!(crypt::verify("n3w-s3cret", &alice.password_hash), Ok(true));
    assert_eq!(crypt::verify("s3cret", &alice.password_hash), Ok(false));
    assert!(!std::fs::read_to_string(&users).unwrap().contains(sha512));

    let out = wharf(&["user", "import", "--format", "passwd", p], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a format"));
}

#[test]
fn check_config_warns_about_a_directory_it_cannot_reach_and_still_says_ok() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let conf = tmp.path().join("ldap.toml");
    std::fs::write(
        &conf,
        "[site]\nroot = \"pub\"\n\n[auth.ldap]\nurl = \"ldap://127.0.0.1:1\"\nallow_plaintext = true\n\
         user_dn = \"uid={user},dc=example,dc=com\"\ntimeout = 2\n",
    )
    .unwrap();
    let out = Command::new(WHARF)
        .arg("check-config")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"));
    let err = text(&out.stderr);
    assert!(
        err.contains("warning: ")
            && err.contains("ldap.toml:5:7: auth.ldap.url: the directory cannot be reached now"),
        "{err}"
    );
}
