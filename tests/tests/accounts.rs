//! Accounts where administrators keep them, end to end with real components: a real
//! OpenLDAP slapd (StartTLS and ldaps with a generated CA, an AD-style directory) and
//! real system accounts through PAM's pam_unix, logged in by curl and lftp on both
//! runtimes.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wharf_tests::harness::*;
use wharf_tests::slapd::{self, Slapd};
use wharf_tests::unix_accounts::{self, State};

/// The site the directory users see: IIS-style homes under `users/` (what
/// `msIIS-FTPRoot` + `msIIS-FTPDir` name) and under `EXAMPLE/` (what `DOMAIN\user`
/// isolation names).
fn site(tmp: &Path) -> PathBuf {
    let root = tmp.join("site");
    for (dir, file) in [
        ("users/carol", "carol.txt"),
        ("users/grace", "grace.txt"),
        ("users/erin", "erin.txt"),
        ("EXAMPLE/carol", "carol-domain.txt"),
        ("EXAMPLE/grace", "grace-domain.txt"),
        ("LocalUser/alice", "alice.txt"),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        std::fs::write(root.join(dir).join(file), format!("{file}\n")).unwrap();
    }
    std::fs::write(root.join("top.txt"), b"top\n").unwrap();
    root
}

/// A configuration: `site_keys` go into `[site]`, `auth` is the `[auth]` tables.
fn config(rt: &str, root: &Path, server_keys: &str, site_keys: &str, auth: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 2\npassive_ports = \"0-0\"\nruntime = \"{rt}\"\n{server_keys}\n\
         [site]\nroot = {root:?}\n{site_keys}\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{hash}\"\n\n{auth}\n",
        root = root.display().to_string(),
        hash = password_hash()
    )
}

/// `[auth.ldap]` searching with the service account over `url`, as for Active
/// Directory (sAMAccountName, disabled accounts filtered out, the EXAMPLE domain).
fn ldap_search(slapd: &Slapd, url: &str, extra: &str) -> String {
    format!(
        "[auth]\nproviders = [\"users\", \"ldap\"]\n\n[auth.ldap]\nurl = \"{url}\"\nca_file = {ca:?}\n\
         bind_dn = \"{svc}\"\nbind_password = \"{svc_pw}\"\nbase_dn = \"{base}\"\n\
         user_filter = \"(&(sAMAccountName={{user}})(objectClass=inetOrgPerson)(!(userAccountControl:1.2.840.113556.1.4.803:=2)))\"\n\
         name_attribute = \"sAMAccountName\"\ndomain = \"EXAMPLE\"\nupn_suffixes = [\"example.com\"]\n\
         timeout = 2\n{extra}\n",
        ca = slapd.ca.display().to_string(),
        svc = slapd::SERVICE_DN,
        svc_pw = slapd::SERVICE_PASSWORD,
        base = slapd::BASE_DN,
    )
}

/// curl's output for a login as `user` listing `/`: (success, stdout, stderr).
fn list(f: &Fixture, user: &str, password: &str) -> (bool, String, String) {
    let out = curl_output(&["-v", "-u", &format!("{user}:{password}"), &f.url("")]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that the login fails with a `530` whose text contains `says`.
fn refused(f: &Fixture, user: &str, password: &str, says: &str) {
    let (ok, out, err) = list(f, user, password);
    assert!(!ok, "{user:?} logged in: {out}");
    let line = err
        .lines()
        .find(|l| l.starts_with("< 530"))
        .unwrap_or_else(|| panic!("no 530 for {user:?}:\n{err}"));
    assert!(line.contains(says), "{user:?}: {line:?}, want {says:?}");
}

wharf_tests::per_runtime! {
fn ldap_search_and_bind_over_starttls_with_active_directory_isolation(rt) {
    let slapd = Slapd::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = site(tmp.path());
    let text = config(
        rt,
        &root,
        "",
        "isolation = \"active_directory\"\nfailed_login_delay = 0",
        &ldap_search(&slapd, &slapd.url(), "starttls = true"),
    );
    let f = Fixture::from_toml(rt, tmp, root, &text);
    // Each login form reaches carol, who sees her own home (msIIS-FTPRoot +
    // msIIS-FTPDir = users\carol) as `/`, and nothing else.
    for user in ["carol", "EXAMPLE\\carol", "example\\carol", "carol@example.com"] {
        let (ok, out, err) = list(&f, user, slapd::PASSWORD);
        assert!(ok, "{user}: {err}");
        assert!(out.contains("carol.txt") && !out.contains("top.txt"), "{user}: {out}");
        assert!(err.contains("230 User EXAMPLE\\carol logged in"), "{user}: {err}");
    }
    assert_eq!(curl(&["-u", "carol:s3cret", &f.url("carol.txt")]), b"carol.txt\n");
    // lftp: `/` is the home, `..` does not leave it.
    let out = lftp(&format!(
        "open -u 'EXAMPLE\\carol,{}' ftp://127.0.0.1:{}; ls; cd ..; pwd; cat carol.txt; quit",
        slapd::PASSWORD, f.port
    ));
    assert_ok("lftp as EXAMPLE\\carol", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(" carol.txt\n") && !stdout.contains("top.txt"), "{stdout}");
    assert!(stdout.contains(&format!(":{}/\ncarol.txt\n", f.port)), "cd .. stays at /: {stdout}");
    // A user without the home attributes is refused as IIS refuses it; a disabled
    // account, a wrong password and another domain are refused as logins.
    refused(&f, "dave", slapd::PASSWORD, "home directory inaccessible");
    refused(&f, "erin", slapd::PASSWORD, "Login incorrect");
    refused(&f, "carol", "wrong", "Login incorrect");
    refused(&f, "OTHER\\carol", slapd::PASSWORD, "Login incorrect");
    refused(&f, "carol@other.org", slapd::PASSWORD, "Login incorrect");
    // The users file still decides for its own users (alice has no AD home here).
    refused(&f, "alice", PASSWORD, "home directory inaccessible");
    f.stop();
}

fn ldap_bind_template_over_ldaps_with_groups_in_rules_and_domain_isolation(rt) {
    let slapd = Slapd::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = site(tmp.path());
    let auth = format!(
        "[auth]\nproviders = [\"ldap\", \"users\"]\n\n[auth.ldap]\nurl = \"{}\"\nca_file = {:?}\n\
         user_dn = \"uid={{user}},ou=people,{}\"\ndomain = \"EXAMPLE\"\n\
         group_attribute = \"\"\ngroup_filter = \"(&(objectClass=groupOfNames)(member={{dn}}))\"\n",
        slapd.ldaps_url(),
        slapd.ca.display().to_string(),
        slapd::BASE_DN
    );
    let site_keys = "isolation = \"isolate_all_directories\"\nfailed_login_delay = 0\n\
        [[site.rules]]\naccess = \"allow\"\nusers = \"*\"\npermissions = \"read\"\n\
        [[site.rules]]\naccess = \"allow\"\ngroups = \"FTPUsers\"\npermissions = \"read, write\"\n";
    let text = config(rt, &root, "", site_keys, &auth);
    let f = Fixture::from_toml(rt, tmp, root.clone(), &text);
    // carol binds as her DN; DOMAIN\user is isolated in DOMAIN/user.
    let (ok, out, err) = list(&f, "carol", slapd::PASSWORD);
    assert!(ok, "{err}");
    assert!(out.contains("carol-domain.txt"), "{out}");
    // Her group (found by the group search) lets her upload; grace's none does not.
    let up = f.scratch().join("up.txt");
    std::fs::write(&up, b"uploaded\n").unwrap();
    curl(&["-u", "carol:s3cret", "-T", up.to_str().unwrap(), &f.url("up.txt")]);
    assert_eq!(std::fs::read(root.join("EXAMPLE/carol/up.txt")).unwrap(), b"uploaded\n");
    let denied = curl_output(&["-u", "grace:s3cret", "-T", up.to_str().unwrap(), &f.url("up.txt")]);
    assert!(!denied.status.success());
    assert!(!root.join("EXAMPLE/grace/up.txt").exists());
    assert_eq!(curl(&["-u", "grace:s3cret", &f.url("grace-domain.txt")]), b"grace-domain.txt\n");
    // The CA is checked: a directory certificate from another CA is refused, which is
    // the directory failing (the login is not checked), not a wrong password.
    let other = wharf_tests::certs::TestCa::new(&f.scratch(), "another-ca");
    let bad = text.replace(&slapd.ca.display().to_string(), &other.files.cert.display().to_string());
    f.reloader().reload(wharf_server::ServerConfig::from_toml_str(&bad, "t.toml").unwrap()).unwrap();
    refused(&f, "carol", slapd::PASSWORD, "account service is unavailable");
    f.stop();
}

fn ldap_injection_never_reaches_the_directory_unescaped(rt) {
    let slapd = Slapd::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = site(tmp.path());
    let text = config(
        rt,
        &root,
        "login_cache = 0",
        "isolation = \"active_directory\"\nfailed_login_delay = 0",
        &ldap_search(&slapd, &slapd.url(), "allow_plaintext = true"),
    );
    let f = Fixture::from_toml(rt, tmp, root, &text);
    // With carol's password, none of these may log in, as an unescaped filter would
    // let `car*` (one match: carol) or `*)(uid=carol` do.
    let names = ["car*", "*", "carol)(uid=*", "*)(sAMAccountName=carol", "EXAMPLE\\car*", "(carol)", "c\\2arol", "carol\\"];
    for name in names {
        refused(&f, name, slapd::PASSWORD, "Login incorrect");
    }
    // What slapd received: every value escaped (RFC 4515), nothing unbalanced.
    let searches = slapd.operations("SRCH");
    let filters: Vec<&String> = searches.iter().filter(|l| l.contains("filter=")).collect();
    assert!(filters.iter().any(|l| l.contains("sAMAccountName=car\\2A")), "{filters:#?}");
    assert!(filters.iter().any(|l| l.contains("sAMAccountName=carol\\29\\28uid=\\2A")), "{filters:#?}");
    for l in &filters {
        assert!(!l.contains("sAMAccountName=car*"), "unescaped: {l}");
        assert!(!l.contains("(uid=*)"), "unescaped: {l}");
        // A backslash is the domain separator: `c\2arol` is a login for domain "c",
        // not this directory's, and never a hex escape in a filter.
        assert!(!l.contains("c\\2arol") && !l.contains("carol\\)"), "{l}");
    }
    // NUL and over-long names never reach slapd, and the server stays up.
    let before = slapd.operations("SRCH").len();
    for name in ["carol\0x".to_string(), "a".repeat(300)] {
        let mut s = TcpStream::connect(f.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        s.write_all(format!("USER {name}\r\nPASS {}\r\n", slapd::PASSWORD).as_bytes()).unwrap();
        let mut replies = String::new();
        while !replies.contains("530") {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            replies.push_str(&line);
        }
        assert!(!replies.contains("230"), "{name:?}: {replies}");
        assert!(replies.contains("530") || replies.starts_with("5"), "{name:?}: {replies}");
    }
    assert_eq!(slapd.operations("SRCH").len(), before, "a bad name reached the directory");
    let (ok, _, err) = list(&f, "carol", slapd::PASSWORD);
    assert!(ok, "{err}");
    f.stop();
}

fn a_down_or_stalled_directory_costs_one_login_a_clear_530_and_a_log_line(rt) {
    let mut slapd = Slapd::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = site(tmp.path());
    let logs = tmp.path().join("logs");
    let text = config(
        rt,
        &root,
        "login_cache = 0",
        &format!("isolation = \"active_directory\"\nfailed_login_delay = 0\n[site.logging]\ndirectory = {:?}\n", logs.display().to_string()),
        &ldap_search(&slapd, &slapd.url(), "allow_plaintext = true\nretry_after = 1"),
    );
    let f = Fixture::from_toml(rt, tmp, root, &text);
    assert!(list(&f, "carol", slapd::PASSWORD).0);
    // A directory that never answers: the login is refused as unavailable within the
    // timeout (2 s), and other sessions go on meanwhile.
    slapd.signal(libc::SIGSTOP);
    let started = Instant::now();
    refused(&f, "carol", slapd::PASSWORD, "account service is unavailable");
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    slapd.signal(libc::SIGCONT);
    // Once it answers again (after retry_after), logins work again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !list(&f, "carol", slapd::PASSWORD).0 {
        assert!(Instant::now() < deadline, "logins did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A directory that is down.
    slapd.stop();
    refused(&f, "carol", slapd::PASSWORD, "account service is unavailable");
    // The W3C log has the PASS with 530, ERROR_NO_LOGON_SERVERS and sub-status 44.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text: String = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        if text.lines().any(|l| l.contains(" PASS ") && l.contains(" 530 1311 44 ") && l.contains("logon-unavailable")) {
            break;
        }
        assert!(Instant::now() < deadline, "no PASS 530 1311 44 line in the W3C log:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.stop();
}

fn the_login_cache_covers_the_directory_and_can_be_off(rt) {
    let slapd = Slapd::start();
    for (cache, binds_wanted) in [("login_cache = 900", 1), ("login_cache = 0", 3)] {
        let tmp = tempfile::tempdir().unwrap();
        let root = site(tmp.path());
        let text = config(
            rt,
            &root,
            cache,
            "isolation = \"active_directory\"",
            &ldap_search(&slapd, &slapd.url(), "allow_plaintext = true"),
        );
        let f = Fixture::from_toml(rt, tmp, root, &text);
        let carol_binds = || {
            slapd
                .operations("BIND")
                .iter()
                // One line per bind attempt ("method=128"); a successful one logs a
                // second line ("mech=SIMPLE").
                .filter(|l| l.contains("uid=carol,ou=people") && l.contains("method=128"))
                .count()
        };
        let before = carol_binds();
        for _ in 0..3 {
            assert_eq!(curl(&["-u", "carol:s3cret", &f.url("carol.txt")]), b"carol.txt\n");
        }
        // Wrong passwords are never answered from the cache.
        refused(&f, "carol", "wrong", "Login incorrect");
        assert_eq!(carol_binds() - before, binds_wanted + 1, "{cache}");
        f.stop();
    }
}

fn reload_adds_and_removes_a_directory(rt) {
    let slapd = Slapd::start();
    let tmp = tempfile::tempdir().unwrap();
    let root = site(tmp.path());
    let without = config(rt, &root, "", "failed_login_delay = 0", "");
    let with = config(rt, &root, "", "failed_login_delay = 0", &ldap_search(&slapd, &slapd.url(), "allow_plaintext = true"));
    let f = Fixture::from_toml(rt, tmp, root, &without);
    let parse = |t: &str| wharf_server::ServerConfig::from_toml_str(t, "r.toml").unwrap();
    refused(&f, "carol", slapd::PASSWORD, "Login incorrect");
    let summary = f.reloader().reload(parse(&with)).unwrap();
    assert!(summary.contains("users, ldap"), "{summary}");
    assert!(list(&f, "EXAMPLE\\carol", slapd::PASSWORD).0);
    f.reloader().reload(parse(&without)).unwrap();
    refused(&f, "carol", slapd::PASSWORD, "Login incorrect");
    assert!(list(&f, "alice", PASSWORD).0);
    f.stop();
}

fn pam_logs_in_system_accounts_and_refuses_locked_expired_and_nologin_ones(rt) {
    let mut accounts = unix_accounts::Accounts::new("the PAM test");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    let homes = root.join("home");
    std::fs::create_dir_all(&homes).unwrap();
    std::fs::write(root.join("top.txt"), b"top\n").unwrap();
    let pw = "Pam-pw-1";
    let mut make = |suffix: &str, state: State| {
        let home = homes.join(accounts.name_of(suffix));
        let name = accounts.user(suffix, pw, &home, state);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("mine.txt"), format!("{name}\n")).unwrap();
        name
    };
    let good = make("good", State::Good);
    let locked = make("locked", State::Locked);
    let expired = make("expired", State::Expired);
    let nologin = make("nologin", State::NoLogin);
    let plain = make("plain", State::Good);
    let writers = accounts.group("w", &[&good]);
    let service = accounts.service.clone();
    let auth = format!(
        "[auth]\nproviders = [\"users\", \"pam\"]\n[auth.pam]\nservice = \"{service}\"\nhome_base = {:?}\n",
        root.display().to_string()
    );
    let site_keys = format!(
        "isolation = \"start_in_users_directory\"\nfailed_login_delay = 0\n\
         [[site.rules]]\naccess = \"allow\"\nusers = \"*\"\npermissions = \"read\"\n\
         [[site.rules]]\naccess = \"allow\"\ngroups = \"{writers}\"\npermissions = \"read, write\"\n"
    );
    let text = config(rt, &root, "", &site_keys, &auth);
    let f = Fixture::from_toml(rt, tmp, root.clone(), &text);
    // A good login starts in its passwd home (below home_base), and its Unix group
    // lets it write.
    let (ok, out, err) = list(&f, &good, pw);
    assert!(ok, "{err}");
    assert!(out.contains("mine.txt"), "{out}");
    let up = f.scratch().join("up.txt");
    std::fs::write(&up, b"pam upload\n").unwrap();
    curl(&["-u", &format!("{good}:{pw}"), "-T", up.to_str().unwrap(), &f.url("x.txt")]);
    assert_eq!(std::fs::read(homes.join(&good).join("x.txt")).unwrap(), b"pam upload\n");
    let denied = curl_output(&["-u", &format!("{plain}:{pw}"), "-T", up.to_str().unwrap(), &f.url("y.txt")]);
    assert!(!denied.status.success(), "no group, no write");
    assert!(!homes.join(&plain).join("y.txt").exists());
    assert!(err.contains(&format!("257 \"/home/{good}\"")), "starts in its home: {err}");
    let out = lftp(&format!("open -u '{good},{pw}' ftp://127.0.0.1:{}; cat mine.txt; quit", f.port));
    assert_ok("lftp", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{good}\n"));
    // Refused: a wrong password, a locked account, an expired one, a nologin shell.
    for (user, pass) in [(&good, "wrong"), (&locked, pw), (&expired, pw), (&nologin, pw)] {
        refused(&f, user, pass, "Login incorrect");
    }
    // The users file still comes first.
    assert!(list(&f, "alice", PASSWORD).0);
    f.stop();
}

fn a_pam_module_that_hangs_costs_one_login_a_clear_530_after_the_timeout(rt) {
    let mut accounts = unix_accounts::Accounts::new("the PAM timeout test");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("top.txt"), b"top\n").unwrap();
    let user = accounts.user("slow", "Pam-pw-1", &root, State::Good);
    // A real module that does not answer in time: pam_exec running `sleep 15` (a
    // child that ends by itself soon after the test).
    let service = accounts.pam_service(
        "hang",
        "auth required pam_exec.so quiet /bin/sleep 15\naccount required pam_unix.so\n",
    );
    let auth = format!("[auth]\nproviders = [\"pam\", \"users\"]\n[auth.pam]\nservice = \"{service}\"\ntimeout = 2\n");
    let text = config(rt, &root, "login_cache = 0", "failed_login_delay = 0", &auth);
    let f = Fixture::from_toml(rt, tmp, root, &text);
    let started = Instant::now();
    refused(&f, &user, "Pam-pw-1", "account service is unavailable");
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(20), "{took:?}");
    // Meanwhile and afterwards, other logins and transfers go on.
    assert_eq!(curl(&["-u", &format!("alice:{PASSWORD}"), &f.url("top.txt")]), b"top\n");
    f.stop();
}

fn imported_crypt_hashes_from_other_servers_log_in(rt) {
    // A ProFTPD AuthUserFile line (sha512-crypt, as `openssl passwd -6` makes it) and an
    // htpasswd bcrypt line (libxcrypt's $2b$ as $2y$), imported as they are.
    let tmp = tempfile::tempdir().unwrap();
    let root = site(tmp.path());
    let proftpd = "pro:$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1:1001:1001::/srv/pro:/bin/false\n";
    let htpasswd = "web:$2y$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK\n";
    use wharf_server::auth::import::{import, to_toml, Format};
    let (a, skipped_a) = import(Format::Proftpd, proftpd, &[]);
    let (b, skipped_b) = import(Format::Htpasswd, htpasswd, &[]);
    assert!(skipped_a.is_empty() && skipped_b.is_empty(), "{skipped_a:?} {skipped_b:?}");
    let users = format!("{}{}", to_toml(&a, "ftpd.passwd"), to_toml(&b, ".htpasswd"));
    std::fs::write(tmp.path().join("users.toml"), users).unwrap();
    let text = config(
        rt,
        &root,
        &format!("users_file = {:?}", tmp.path().join("users.toml").display().to_string()),
        "failed_login_delay = 0",
        "",
    )
    .replace("[[users]]\nname = \"alice\"", "[[users]]\nname = \"alice2\"");
    let f = Fixture::from_toml(rt, tmp, root, &text);
    for user in ["pro", "web"] {
        assert_eq!(curl(&["-u", &format!("{user}:s3cret"), &f.url("top.txt")]), b"top\n", "{user}");
        refused(&f, user, "S3cret", "Login incorrect");
        let out = lftp(&format!("open -u {user},s3cret ftp://127.0.0.1:{}; cat top.txt; quit", f.port));
        assert_ok(&format!("lftp as {user}"), &out);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "top\n");
    }
    f.stop();
}
}
