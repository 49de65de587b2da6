use super::*;

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0fDkF6DgYmXkT7eW0Yqg3H8mK4YcU8Wq0lqJQ2n5rQ4";

fn root() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn good(root: &Path) -> String {
    format!(
        r#"# a comment
[server]
listen = ["127.0.0.1:2121", "[::1]:2121"]
shards = 2
max_connections = 500
passive_ports = "50000-50100"
external_ip = "203.0.113.7"
runtime = "mio"

[site]
name = "files"
root = {root:?}
anonymous = true
banner = "hello"
listing_style = "msdos"
keep_partial_uploads = true

[timeouts]
control = 60
data = 10
login = 5
tls_handshake = 3

[[users]]
name = "alice"
password_hash = "{HASH}"
groups = ["staff"]

[[users]]
name = "bob"
password_hash = "{HASH}"
"#,
        root = root.display().to_string()
    )
}

fn errors(text: &str) -> Vec<ConfigError> {
    ServerConfig::from_toml_str(text, "site.toml")
        .unwrap_err()
        .0
}

/// Replaces the first occurrence of `from` in the good config.
fn with(root: &Path, from: &str, to: &str) -> String {
    let g = good(root);
    assert!(g.contains(from), "{from}");
    g.replacen(from, to, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_good_config_builds_the_session_config() {
    let r = root();
    let c = ServerConfig::from_toml_str(&good(r.path()), "site.toml").unwrap();
    assert_eq!(c.listen.len(), 2);
    assert!(c.listen[1].is_ipv6());
    assert_eq!(c.shards, 2);
    assert_eq!(c.max_connections, 500);
    assert_eq!(c.sites[0].session.passive_ports, 50000..=50100);
    assert_eq!(
        c.sites[0].session.external_ip,
        Some(Ipv4Addr::new(203, 0, 113, 7))
    );
    assert!(c.sites[0].session.allow_anonymous);
    assert!(!c.sites[0].session.anonymous_write);
    assert!(c.sites[0].session.keep_partial_uploads);
    assert_eq!(c.sites[0].session.listing_style, ListingStyle::MsDos);
    assert_eq!(c.sites[0].session.timeouts.idle, Duration::from_secs(60));
    assert_eq!(
        c.sites[0].session.timeouts.data_connect,
        Duration::from_secs(10)
    );
    assert_eq!(c.sites[0].session.timeouts.login, Duration::from_secs(5));
    assert_eq!(
        c.sites[0].session.timeouts.tls_handshake,
        Duration::from_secs(3)
    );
    assert_eq!(c.sites[0].session.banner, "hello");
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.users[0].groups, vec!["staff".to_string()]);
}

#[test]
fn minimal_config_takes_defaults() {
    let r = root();
    let text = format!("[site]\nroot = {:?}\n", r.path().display().to_string());
    let c = ServerConfig::from_toml_str(&text, "m.toml").unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:2121".parse().unwrap()]);
    assert_eq!(c.sites[0].session.passive_ports, 0..=0);
    assert!(!c.sites[0].session.allow_anonymous);
    assert_eq!(c.sites[0].session.timeouts.idle, Duration::from_secs(120));
    assert_eq!(
        c.sites[0].session.timeouts.tls_handshake,
        Duration::from_secs(10)
    );
    assert_eq!(c.server_rules.max_handshakes_per_ip, 32);
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
}

#[test]
fn bad_ip_names_file_line_and_key() {
    let r = root();
    let text = with(r.path(), "\"[::1]:2121\"", "\"300.1.1.1:21\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].file, "site.toml");
    assert_eq!(e[0].line, line_of(&text, "listen ="));
    assert_eq!(e[0].key.as_deref(), Some("server.listen"));
    assert!(e[0].message.contains("300.1.1.1:21"), "{}", e[0].message);
    let shown = e[0].to_string();
    assert!(
        shown.starts_with(&format!("site.toml:{}:", e[0].line)),
        "{shown}"
    );
    assert!(shown.contains("server.listen"), "{shown}");
}

#[test]
fn bad_port_range_and_external_ip() {
    let r = root();
    let text = with(r.path(), "50000-50100", "50100-50000");
    let text = text.replacen("203.0.113.7", "::1", 1);
    let e = errors(&text);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("server.passive_ports"));
    assert_eq!(e[0].line, line_of(&text, "passive_ports"));
    assert_eq!(e[1].key.as_deref(), Some("server.external_ip"));
    assert!(e[1].message.contains("IPv4"));
    assert!(parse_port_range("0-5").is_err());
    assert!(parse_port_range("x").is_err());
    assert_eq!(parse_port_range("0-0").unwrap(), 0..=0);
}

#[test]
fn missing_root_is_an_error() {
    let r = root();
    let gone = r.path().join("nope");
    let text = good(&gone);
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("site.root"));
    assert_eq!(e[0].line, line_of(&text, "root ="));
    assert!(e[0].message.contains("nope"));
}

#[test]
fn duplicate_user_and_bad_hash_name_their_entries() {
    let r = root();
    let text = with(r.path(), "name = \"bob\"", "name = \"alice\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("users[1].name"));
    assert!(e[0].message.contains("twice"));
    let last = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"alice\""))
        .last();
    assert_eq!(e[0].line, last.unwrap().0 + 1);

    let text = good(r.path());
    let last = text.rfind(HASH).unwrap();
    let text = format!("{}plaintext{}", &text[..last], &text[last + HASH.len()..]);
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("users[1].password_hash"));
    assert!(e[0].message.contains("wharf passwd"));
}

#[test]
fn unknown_key_is_reported_with_its_line() {
    let r = root();
    let text = with(r.path(), "shards = 2", "shardz = 2");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, line_of(&text, "shardz"));
    assert_eq!(e[0].key.as_deref(), Some("server.shardz"));
    assert!(e[0].message.contains("shardz"), "{}", e[0].message);
}

#[test]
fn wrong_type_is_reported_with_its_key() {
    let r = root();
    let text = with(r.path(), "anonymous = true", "anonymous = \"yes\"");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, line_of(&text, "anonymous ="));
    assert_eq!(e[0].key.as_deref(), Some("site.anonymous"));
}

#[test]
fn syntax_error_is_located() {
    let e = errors("[server]\nlisten = [\"127.0.0.1:21\"\n");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].file, "site.toml");
    assert!(e[0].line >= 2, "{e:?}");
}

#[test]
fn several_errors_are_all_reported() {
    let r = root();
    let text = with(
        r.path(),
        "listing_style = \"msdos\"",
        "listing_style = \"vms\"",
    );
    let text = text.replacen("runtime = \"mio\"", "runtime = \"tokio\"", 1);
    let text = text.replacen("login = 5", "login = 0", 1);
    let e = errors(&text);
    let keys: Vec<_> = e.iter().map(|e| e.key.clone().unwrap()).collect();
    assert_eq!(
        keys,
        vec!["server.runtime", "site.listing_style", "timeouts.login"]
    );
}

#[test]
fn missing_site_is_an_error() {
    let e = errors("[server]\nshards = 1\n");
    assert!(e[0].message.contains("[site]"));
}

#[test]
fn relative_root_is_resolved_against_the_config_file() {
    let r = root();
    std::fs::create_dir(r.path().join("pub")).unwrap();
    let file = r.path().join("wharf.toml");
    std::fs::write(&file, "[site]\nroot = \"pub\"\n").unwrap();
    let c = ServerConfig::from_file(&file).unwrap();
    assert_eq!(c.sites[0].root, r.path().join("pub"));
}

#[test]
fn the_example_config_is_valid() {
    let r = root();
    let text = include_str!("../examples/wharf.toml").replacen(
        "root = \"/srv/ftp\"",
        &format!("root = {:?}", r.path().display().to_string()),
        1,
    );
    // Its certificate paths point at /etc/wharf: put a real pair there instead.
    crate::tls::ensure_self_signed(r.path(), &["localhost"]).unwrap();
    let text = text
        .replacen(
            "/etc/wharf/cert.pem",
            &r.path().join("cert.pem").display().to_string(),
            1,
        )
        .replacen(
            "/etc/wharf/key.pem",
            &r.path().join("key.pem").display().to_string(),
            1,
        )
        .replacen("# listen_implicit", "listen_implicit", 1);
    let c = ServerConfig::from_toml_str(&text, "examples/wharf.toml").unwrap();
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.users[0].groups, vec!["staff", "auditors"]);
    let site = &c.sites[0].session;
    assert_eq!(site.banner, "wharf FTP server ready\nFiles for the team.");
    assert_eq!(site.messages.exit.as_deref(), Some("Goodbye."));
    assert_eq!(site.isolation, Isolation::None);
    assert!(site.rules.is_none());
    assert_eq!(c.sites[0].session.passive_ports, 50000..=50100);
    assert!(c.sites[0].session.tls.is_some() && c.sites[0].tls.is_some());
    let implicit: Vec<_> = c.sites[0]
        .bindings
        .iter()
        .filter(|b| b.implicit_tls)
        .collect();
    assert_eq!(
        implicit.len(),
        1,
        "listen_implicit makes an implicit binding"
    );
}

/// Two sites on one address, one of them isolated, with rules, groups, a virtual
/// directory, passive addresses and messages; accounts in a users file.
fn sites_config(dir: &Path) -> String {
    for d in ["one", "two", "shared"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("users.toml"),
        format!(
            "[[users]]\nname = \"user3\"\npassword_hash = \"{HASH}\"\n\n\
             [[groups]]\nname = \"FTPUsersB\"\nmembers = [\"user3\"]\n"
        ),
    )
    .unwrap();
    format!(
        r#"[server]
passive_ports = "50000-50010"
external_ip = "203.0.113.1"
users_file = "users.toml"

[[users]]
name = "user1"
password_hash = "{HASH}"
groups = ["FTPUsersA"]

[[sites]]
name = "ftpsite01.com"
root = "one"
bindings = ["*:2121:", "127.0.0.1:2121:ftpsite01.com", "127.0.0.1:0:"]
anonymous = true

[sites.messages]
banner = "Site one"
welcome = "Hello"

[[sites.rules]]
access = "allow"
users = "?"
permissions = "read"

[[sites.rules]]
access = "allow"
roles = ["FTPUsersA", "ftpusersb"]
permissions = "read, write"

[[sites.rules]]
path = "/test.txt"
access = "deny"
users = ["user3"]
permissions = "read,write"

[[sites]]
name = "ftpsite02.com"
root = "two"
bindings = ["*:2121:ftpsite02.com"]
isolation = "isolate_root_directory_only"
external_ip = "203.0.113.2"
match_client_address_for_pasv = false

[[sites.passive_addresses]]
networks = ["10.0.0.0/8", "192.168.0.0/16"]

[[sites.virtual_directories]]
name = "shared"
path = "shared"

[sites.messages]
banner = "Only this"
suppress_default_banner = true
exit = "Bye"
"#
    )
}

#[test]
fn a_sites_config_builds_every_site() {
    let r = root();
    let file = r.path().join("wharf.toml");
    std::fs::write(&file, sites_config(r.path())).unwrap();
    let c = ServerConfig::from_file(&file).unwrap_or_else(|e| panic!("{e}"));
    // The wildcard on 2121 receives 127.0.0.1:2121 too; port 0 is its own listener.
    assert_eq!(
        c.listen,
        vec![
            "0.0.0.0:2121".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap()
        ]
    );
    assert_eq!(c.sites.len(), 2);
    let (one, two) = (&c.sites[0], &c.sites[1]);
    assert_eq!(one.name, "ftpsite01.com");
    assert_eq!(one.root, r.path().join("one"));
    assert_eq!(one.bindings[1].host.as_deref(), Some("ftpsite01.com"));
    assert_eq!(one.session.banner, "wharf FTP server ready\nSite one");
    assert_eq!(one.session.messages.welcome.as_deref(), Some("Hello"));
    assert_eq!(one.session.external_ip, Some(Ipv4Addr::new(203, 0, 113, 1)));
    assert_eq!(one.session.passive_ports, 50000..=50010);
    let rules = one.session.rules.as_ref().unwrap();
    assert_eq!(rules.rules().len(), 3);
    assert_eq!(rules.rules()[0].who, vec![Who::Anonymous]);
    assert_eq!(rules.rules()[2].path.as_str(), "/test.txt");
    assert!(!rules.rules()[2].allow);
    assert!(one.session.match_pasv_peer);

    assert_eq!(two.session.banner, "Only this");
    assert_eq!(two.session.messages.exit.as_deref(), Some("Bye"));
    assert_eq!(two.session.isolation, Isolation::IsolateRootDirectoryOnly);
    assert_eq!(two.session.external_ip, Some(Ipv4Addr::new(203, 0, 113, 2)));
    assert_eq!(two.session.pasv_addresses.len(), 2);
    assert_eq!(two.session.pasv_addresses[0].ip, None);
    assert!(!two.session.match_pasv_peer);
    assert!(two.session.rules.is_none());
    assert_eq!(
        two.virtual_dirs,
        vec![("shared".to_string(), r.path().join("shared"))]
    );
    assert_ne!(one.session.storage_root, two.session.storage_root);
    assert_eq!(c.mounts().len(), 3);

    // Users from both files; group membership from both ways of saying it.
    let u3 = c.users.iter().find(|u| u.name == "user3").unwrap();
    assert_eq!(u3.groups, vec!["FTPUsersB".to_string()]);
    let u1 = c.users.iter().find(|u| u.name == "user1").unwrap();
    assert_eq!(u1.groups, vec!["FTPUsersA".to_string()]);

    // The core table: the blank host of 2121 is site one, ftpsite02.com site two.
    let sites = c
        .sites_table(&[
            "0.0.0.0:2121".parse().unwrap(),
            "127.0.0.1:4000".parse().unwrap(),
        ])
        .unwrap();
    let local = "127.0.0.1:2121".parse().unwrap();
    assert_eq!(sites.listener(local).unwrap().default, Some(0));
    assert_eq!(sites.by_host(local, "FTPSITE02.COM"), Some(1));
    let resolved = "127.0.0.1:4000".parse().unwrap();
    assert_eq!(sites.listener(resolved).unwrap().default, Some(0));
}

fn sites_errors(r: &Path, from: &str, to: &str) -> (String, Vec<ConfigError>) {
    let text = sites_config(r);
    assert!(text.contains(from), "{from}");
    let text = text.replacen(from, to, 1);
    let file = r.join("wharf.toml");
    std::fs::write(&file, &text).unwrap();
    let e = ServerConfig::from_file(&file).unwrap_err().0;
    (text, e)
}

#[test]
fn ambiguous_bindings_name_the_binding() {
    let r = root();
    let (text, e) = sites_errors(
        r.path(),
        "bindings = [\"*:2121:ftpsite02.com\"]",
        "bindings = [\"0.0.0.0:2121:\"]",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, line_of(&text, "bindings = [\"0.0.0.0:2121:\"]"));
    assert_eq!(e[0].key.as_deref(), Some("sites[1].bindings"));
    assert!(
        e[0].message.contains("ftpsite01.com and ftpsite02.com"),
        "{}",
        e[0].message
    );
    assert!(
        e[0].message.contains("without a host name"),
        "{}",
        e[0].message
    );

    let (_, e) = sites_errors(
        r.path(),
        "bindings = [\"*:2121:ftpsite02.com\"]",
        "bindings = [\"0.0.0.0:2121:FTPSITE01.COM\", \"127.0.0.1:2121:ftpsite01.com\"]",
    );
    // 127.0.0.1 and 0.0.0.0 are different addresses; the first clashes with nothing
    // at 0.0.0.0 but ... the second repeats site one's exact binding.
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("bound twice"), "{}", e[0].message);
}

#[test]
fn rule_errors_name_the_rule() {
    let r = root();
    let (text, e) = sites_errors(r.path(), "users = [\"user3\"]", "users = [\"user9\"]");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("sites[0].rules[2].users"));
    assert_eq!(e[0].line, line_of(&text, "user9"));
    assert!(e[0].message.contains("\"user9\" is not a user"));

    let (_, e) = sites_errors(r.path(), "access = \"deny\"", "access = \"refuse\"");
    assert_eq!(
        e[0].key.as_deref(),
        Some("sites[0].rules[2].access"),
        "{e:?}"
    );
    let (_, e) = sites_errors(
        r.path(),
        "permissions = \"read, write\"",
        "permissions = \"rw\"",
    );
    assert_eq!(
        e[0].key.as_deref(),
        Some("sites[0].rules[1].permissions"),
        "{e:?}"
    );
    let (_, e) = sites_errors(
        r.path(),
        "roles = [\"FTPUsersA\", \"ftpusersb\"]",
        "roles = [\"nobody\"]",
    );
    assert!(e[0].message.contains("\"nobody\" is not a group"), "{e:?}");
    let (_, e) = sites_errors(r.path(), "users = \"?\"\n", "");
    assert_eq!(
        e[0].key.as_deref(),
        Some("sites[0].rules[0].access"),
        "{e:?}"
    );
    assert!(e[0].message.contains("names nobody"), "{e:?}");
    let (_, e) = sites_errors(r.path(), "anonymous = true", "anonymous_write = true");
    assert!(
        e[0].message.contains("anonymous_write has no effect"),
        "{e:?}"
    );
    assert_eq!(
        e[0].key.as_deref(),
        Some("sites[0].anonymous_write"),
        "{e:?}"
    );
}

#[test]
fn site_errors_name_file_line_and_key() {
    let r = root();
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "isolation = \"isolate_root_directory_only\"",
            "isolation = \"jail\"",
            "sites[1].isolation",
            "isolation mode",
        ),
        (
            "external_ip = \"203.0.113.2\"",
            "external_ip = \"::1\"",
            "sites[1].external_ip",
            "IPv4",
        ),
        (
            "networks = [\"10.0.0.0/8\"",
            "networks = [\"10.0.0.0/33\"",
            "sites[1].passive_addresses[0].networks",
            "network",
        ),
        (
            "name = \"shared\"",
            "name = \"../up\"",
            "sites[1].virtual_directories[0].name",
            "folder name",
        ),
        (
            "path = \"shared\"",
            "path = \"missing\"",
            "sites[1].virtual_directories[0].path",
            "missing",
        ),
        (
            "\"127.0.0.1:0:\"]",
            "\"127.0.0.1:0\"]",
            "sites[0].bindings",
            "ip:port:host",
        ),
        (
            "name = \"ftpsite02.com\"",
            "name = \"FTPSITE01.com\"",
            "sites[1].bindings",
            "two sites are named",
        ),
        (
            "banner = \"Only this\"",
            "bannr = \"Only this\"",
            "sites[1].messages.bannr",
            "bannr",
        ),
    ];
    for (from, to, key, words) in cases {
        let (text, e) = sites_errors(r.path(), from, to);
        assert_eq!(e.len(), 1, "{to}: {e:?}");
        assert_eq!(e[0].key.as_deref(), Some(*key), "{to}: {e:?}");
        assert!(e[0].message.contains(words), "{to}: {e:?}");
        let needle = to.split('"').nth(1).unwrap_or(to);
        if *key != "sites[1].bindings" {
            assert_eq!(e[0].line, line_of(&text, needle), "{to}: {e:?}");
        }
        assert!(e[0]
            .to_string()
            .starts_with(&format!("{}:{}:", e[0].file, e[0].line)));
    }
}

#[test]
fn implicit_tls_needs_tls_settings() {
    let r = root();
    let (_, e) = sites_errors(
        r.path(),
        "bindings = [\"*:2121:ftpsite02.com\"]",
        "bindings = [\"*:2121:ftpsite02.com\", { address = \"127.0.0.1:990:\", implicit_tls = true }]",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].message.contains("implicit TLS needs TLS settings"),
        "{e:?}"
    );
    assert_eq!(e[0].key.as_deref(), Some("sites[1].bindings"), "{e:?}");
}

#[test]
fn site_and_sites_and_listen_do_not_mix() {
    let r = root();
    let (_, e) = sites_errors(
        r.path(),
        "[server]\n",
        "[server]\nlisten = [\"127.0.0.1:21\"]\n",
    );
    assert!(
        e[0].message
            .contains("server.listen is for the single [site] form"),
        "{e:?}"
    );
    let text = format!(
        "{}\n[site]\nroot = {:?}\n",
        sites_config(r.path()),
        r.path().display().to_string()
    );
    let e = errors(&text);
    assert!(e.iter().any(|e| e.message.contains("not both")), "{e:?}");
    let (_, e) = sites_errors(r.path(), "name = \"ftpsite01.com\"\n", "");
    assert!(e[0].message.contains("needs a `name`"), "{e:?}");
}

#[test]
fn account_errors_name_their_file() {
    let r = root();
    let (_, e) = sites_errors(r.path(), "groups = [\"FTPUsersA\"]", "groups = [\"A B\"]");
    assert!(e[0].message.contains("not a usable group name"), "{e:?}");
    std::fs::write(
        r.path().join("users.toml"),
        "[[users]]\nname = \"user1\"\npassword_hash = \"x\"\n",
    )
    .unwrap();
    let text =
        sites_config(r.path()).replace("users_file = \"users.toml\"", "users_file = \"u2.toml\"");
    std::fs::write(
        r.path().join("u2.toml"),
        "[[users]]\nname = \"User1\"\npassword_hash = \"plain\"\n[[groups]]\nname = \"G\"\nmembers = [\"ghost\"]\n",
    )
    .unwrap();
    let file = r.path().join("wharf.toml");
    std::fs::write(&file, &text).unwrap();
    let e = ServerConfig::from_file(&file).unwrap_err().0;
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert!(
        shown.iter().any(|s| s.contains("u2.toml:2:")
            && s.contains("users[0].name")
            && s.contains("defined twice")),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s.contains("u2.toml:6:") && s.contains("\"ghost\", who is not a user")),
        "{shown:?}"
    );
    // The file's own errors come first.
    assert!(shown.iter().all(|s| s.contains("u2.toml")) || !shown[0].contains("u2.toml"));
}

/// The good config plus a `[site.tls]` table over a fresh self-signed certificate
/// (`cert.pem` and `key.pem` next to `site.toml` in `dir`), and `tls_keys`.
fn with_tls(dir: &Path, server_extra: &str, tls_keys: &str) -> (String, String) {
    crate::tls::ensure_self_signed(dir, &["localhost"]).unwrap();
    let text = good(dir)
        .replacen(
            "runtime = \"mio\"\n",
            &format!("runtime = \"mio\"\n{server_extra}\n"),
            1,
        )
        .replacen(
            "keep_partial_uploads = true\n",
            &format!(
                "keep_partial_uploads = true\n\n[site.tls]\ncertificate = \"cert.pem\"\n\
                 private_key = \"key.pem\"\n{tls_keys}\n"
            ),
            1,
        );
    let file = dir.join("site.toml").display().to_string();
    (text, file)
}

#[test]
fn site_tls_builds_the_policy_with_secure_defaults() {
    let r = root();
    let (text, file) = with_tls(r.path(), "listen_implicit = [\"127.0.0.1:990\"]", "");
    let c = ServerConfig::from_toml_str(&text, &file).unwrap();
    let tls = c.sites[0].session.tls.as_ref().expect("tls");
    assert_eq!(tls.control, ControlPolicy::Allow);
    assert_eq!(tls.data, DataPolicy::Allow);
    assert!(tls.require_session_reuse && tls.strict_close_notify && tls.allow_ccc);
    assert!(!tls.exempt_anonymous);
    assert_eq!(
        tls.data_config.send_tls13_tickets, 0,
        "no tickets on data connections"
    );
    assert!(
        tls.config.ticketer.enabled(),
        "stateless tickets for resumption"
    );
    let implicit: Vec<SocketAddr> = c.sites[0]
        .bindings
        .iter()
        .filter(|b| b.implicit_tls)
        .map(|b| b.addr)
        .collect();
    assert_eq!(
        implicit,
        vec!["127.0.0.1:990".parse::<SocketAddr>().unwrap()]
    );
    assert!(c.listen.contains(&"127.0.0.1:990".parse().unwrap()));
    assert_eq!(
        c.sites[0].tls.as_ref().unwrap().certificate,
        r.path().join("cert.pem")
    );

    let keys = "control = \"require_credentials_only\"\ndata = \"deny\"\nexempt_anonymous = true\n\
                require_tls_session_reuse = false\nstrict_close_notify = false\nallow_ccc = false";
    let (text, file) = with_tls(r.path(), "", keys);
    let c = ServerConfig::from_toml_str(&text, &file).unwrap();
    let tls = c.sites[0].session.tls.as_ref().unwrap();
    assert_eq!(tls.control, ControlPolicy::RequireCredentialsOnly);
    assert_eq!(tls.data, DataPolicy::Deny);
    assert!(tls.exempt_anonymous);
    assert!(!tls.require_session_reuse && !tls.strict_close_notify && !tls.allow_ccc);
}

#[test]
fn site_tls_errors_name_file_line_and_key() {
    let r = root();
    let (text, file) = with_tls(r.path(), "", "control = \"sometimes\"\ndata = \"maybe\"");
    let e = ServerConfig::from_toml_str(&text, &file).unwrap_err().0;
    let keys: Vec<_> = e
        .iter()
        .map(|e| e.key.clone().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["site.tls.control", "site.tls.data"], "{e:?}");
    assert_eq!(e[0].line, line_of(&text, "control = "));
    assert!(
        e[0].message.contains("require_credentials_only"),
        "{}",
        e[0].message
    );

    let missing = text.replacen("\"key.pem\"", "\"nowhere.pem\"", 1);
    let missing = missing.replacen("control = \"sometimes\"\ndata = \"maybe\"", "", 1);
    let e = ServerConfig::from_toml_str(&missing, &file).unwrap_err().0;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("site.tls.private_key"));
    assert_eq!(e[0].line, line_of(&missing, "private_key ="));
    assert!(e[0].message.contains("nowhere.pem"), "{}", e[0].message);

    // A key that is not the certificate's.
    let other = root();
    crate::tls::ensure_self_signed(other.path(), &["other"]).unwrap();
    let key = other.path().join("key.pem").display().to_string();
    let wrong = missing.replacen("\"nowhere.pem\"", &format!("{key:?}"), 1);
    let e = ServerConfig::from_toml_str(&wrong, &file).unwrap_err().0;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("site.tls.private_key"), "{e:?}");

    // Implicit FTPS without a certificate.
    let text = with(
        r.path(),
        "runtime = \"mio\"",
        "runtime = \"mio\"\nlisten_implicit = [\"127.0.0.1:990\"]",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("server.listen_implicit"));
    assert!(e[0].message.contains("[site.tls]"), "{}", e[0].message);
}

fn policy_config(root: &Path) -> String {
    format!(
        r#"[server]
listen = ["127.0.0.1:0"]

[server.ip_security]
deny = ["203.0.113.0/24"]

[server.logon_restrictions]
max_failures = 3
window = 60
ban = 600
exempt = ["10.0.0.0 255.0.0.0"]

[site]
name = "files"
root = {root:?}
allow_replace_on_rename = true

[site.request_filtering]
allow_unlisted_extensions = false
allowed_extensions = [".txt", "PDF", "."]
denied_extensions = ["exe"]
hidden_segments = ["_private"]
denied_sequences = ["..", "~"]
denied_commands = ["SITE", "XMKD"]
max_path_length = 512
max_command_line = 1024
max_upload_size = 1048576

[site.ip_security]
allow_unlisted = false
deny_action = "drop"
allow = ["127.0.0.1", "::1", "2001:db8::/32"]

[site.logging]
directory = "w3c"
period = "size"
max_size = 1000000
fields = ["date", "time", "c-ip", "sc-status", "sc-substatus"]

[limits]
max_connections_per_ip = 8
max_connections_per_user = 2
max_tls_handshakes_per_ip = 4
max_clients_message = "Full up."
min_bytes_per_second = 100
bandwidth = 1000000

[[users]]
name = "alice"
password_hash = "{HASH}"
bandwidth = 50000
"#,
        root = root.display().to_string()
    )
}

#[test]
fn policy_tables_build_the_policy() {
    use wharf_core::log::{Field, LogFields};
    use wharf_core::policy::DenyAction;
    use wharf_core::proto::command::Verb;
    let r = root();
    let c = ServerConfig::from_toml_str(&policy_config(r.path()), "/etc/wharf/site.toml").unwrap();
    let f = &c.sites[0].session.filtering;
    assert!(!f.allow_unlisted_extensions);
    assert_eq!(f.allowed_extensions, ["txt", "pdf", ""]);
    assert_eq!(f.denied_extensions, ["exe"]);
    assert_eq!(f.hidden_segments, ["_private"]);
    assert_eq!(f.denied_sequences, ["..", "~"]);
    assert_eq!(f.denied_commands, [Verb::Site, Verb::Mkd]);
    assert_eq!(f.max_path_length, 512);
    assert_eq!(f.max_upload_size, Some(1 << 20));
    assert_eq!(c.sites[0].session.max_line, 1024);
    assert!(c.sites[0].session.allow_replace_on_rename);
    assert!(!c.sites[0].session.allow_read_uploads_in_progress);

    let ip = &c.sites[0].session.ip_rules;
    assert!(!ip.allow_unlisted);
    assert_eq!(ip.deny_action, DenyAction::Drop);
    assert!(ip.allows("127.0.0.1".parse().unwrap()));
    assert!(ip.allows("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!ip.allows("127.0.0.2".parse().unwrap()));
    assert!(ip.allows("2001:db8::7".parse().unwrap()));
    assert!(!ip.reverse_dns && ip.domains.is_empty(), "off by default");

    let rules = &c.server_rules;
    assert!(!rules.ip_rules.allows("203.0.113.9".parse().unwrap()));
    assert!(rules.ip_rules.allows("198.51.100.1".parse().unwrap()));
    assert!(rules.logon.enabled);
    assert_eq!(rules.logon.max_failures, 3);
    assert_eq!(rules.logon.window, Duration::from_secs(60));
    assert_eq!(rules.logon.ban, Duration::from_secs(600));
    assert!(rules.logon.exempt[0].contains("10.9.9.9".parse().unwrap()));
    assert_eq!(rules.max_per_ip, 8);
    assert_eq!(rules.max_per_user, 2);
    assert_eq!(rules.max_handshakes_per_ip, 4);
    assert_eq!(rules.max_clients_message, "Full up.");

    let limits = &c.sites[0].session.limits;
    assert_eq!(limits.min_bytes_per_second, 100);
    assert_eq!(limits.rate_for(Some("alice"), false), Some(50_000));
    assert_eq!(limits.rate_for(Some("bob"), false), Some(1_000_000));

    let log = c.sites[0].session.logging.as_ref().unwrap();
    assert_eq!(&*log.site, "files");
    assert!(log.w3c, "the site writes a W3C log");
    // The core fills in every field (the server's log lines show paths); the file
    // shows the configured ones.
    assert_eq!(
        log.fields,
        Field::ALL
            .into_iter()
            .fold(LogFields::NONE, LogFields::with)
    );
    let out = c.sites[0].log.as_ref().unwrap();
    assert_eq!(out.fields.iter().count(), 5);
    assert!(out.fields.has(Field::SubStatus) && !out.fields.has(Field::UserName));
    assert_eq!(out.directory, Path::new("/etc/wharf/w3c"));
    assert_eq!(out.period, crate::w3c::Period::Size(1_000_000));
    assert!(!out.central);
}

#[test]
fn policy_defaults_follow_iis() {
    let r = root();
    let text = format!("[site]\nroot = {:?}\n", r.path().display().to_string());
    let c = ServerConfig::from_toml_str(&text, "m.toml").unwrap();
    assert_eq!(
        c.sites[0].session.filtering,
        wharf_core::policy::RequestFiltering::default()
    );
    assert!(!c.sites[0].session.ip_rules.restricts());
    assert!(!c.server_rules.logon.enabled);
    assert_eq!(c.server_rules.logon.max_failures, 4);
    assert_eq!(c.server_rules.logon.window, Duration::from_secs(30));
    assert_eq!(c.sites[0].session.limits.min_bytes_per_second, 240);
    // Every site logs for the server's own lines and metrics; none writes a W3C file.
    let logging = c.sites[0].session.logging.as_ref().unwrap();
    assert!(!logging.w3c && c.sites[0].log.is_none());
    assert!(!c.sites[0].session.allow_replace_on_rename);
}

#[test]
fn central_logging_takes_every_site() {
    let r = root();
    let text = format!(
        "[server.logging]\ndirectory = \"/var/log/wharf\"\nperiod = \"hourly\"\n\
         [site]\nroot = {:?}\n",
        r.path().display().to_string()
    );
    let c = ServerConfig::from_toml_str(&text, "m.toml").unwrap();
    let out = c.sites[0].log.clone().unwrap();
    assert!(out.central);
    assert_eq!(out.period, crate::w3c::Period::Hourly);
    assert!(c.sites[0].session.logging.is_some());
}

#[test]
fn policy_errors_name_their_keys() {
    let r = root();
    let good = policy_config(r.path());
    let cases = [
        (
            "denied_commands = [\"SITE\", \"XMKD\"]",
            "denied_commands = [\"SITE\", \"FROB\"]",
            "site.request_filtering.denied_commands",
            "not an FTP command",
        ),
        (
            "allowed_extensions = [\".txt\", \"PDF\", \".\"]",
            "allowed_extensions = [\"tar.gz\"]",
            "site.request_filtering.allowed_extensions",
            "last dot",
        ),
        (
            "hidden_segments = [\"_private\"]",
            "hidden_segments = [\"a/b\"]",
            "site.request_filtering.hidden_segments",
            "single path segment",
        ),
        (
            "denied_sequences = [\"..\", \"~\"]",
            "denied_sequences = [\"\"]",
            "site.request_filtering.denied_sequences",
            "every path",
        ),
        (
            "max_command_line = 1024",
            "max_command_line = 8",
            "site.request_filtering.max_command_line",
            "at least 32",
        ),
        (
            "deny_action = \"drop\"",
            "deny_action = \"reset\"",
            "site.ip_security.deny_action",
            "not a deny action",
        ),
        (
            "allow = [\"127.0.0.1\", \"::1\", \"2001:db8::/32\"]",
            "allow = [\"127.0.0.1/40\"]",
            "site.ip_security.allow",
            "longer than 32",
        ),
        (
            "allow = [\"127.0.0.1\", \"::1\", \"2001:db8::/32\"]",
            "allow = [\"ftp.example.com\"]",
            "site.ip_security.allow",
            "enable_reverse_dns = true",
        ),
        (
            "exempt = [\"10.0.0.0 255.0.0.0\"]",
            "exempt = [\"trusted.example.com\"]",
            "server.logon_restrictions.exempt",
            "host names are not supported here",
        ),
        (
            "deny = [\"203.0.113.0/24\"]",
            "deny = [\"10.0.0.0 255.0.255.0\"]",
            "server.ip_security.deny",
            "contiguous",
        ),
        (
            "max_failures = 3",
            "max_failures = 0",
            "server.logon_restrictions.max_failures",
            "at least 1",
        ),
        (
            "period = \"size\"",
            "period = \"weekly\"",
            "site.logging.period",
            "not a period",
        ),
        (
            "fields = [\"date\", \"time\", \"c-ip\", \"sc-status\", \"sc-substatus\"]",
            "fields = [\"date\", \"cs(User-Agent)\"]",
            "site.logging.fields",
            "not a field",
        ),
        (
            "bandwidth = 50000",
            "bandwidth = 7",
            "users[0].bandwidth",
            "below limits.min_bytes_per_second",
        ),
        (
            "max_clients_message = \"Full up.\"",
            "max_clients_message = \"a\\r\\n230 ok\"",
            "limits.max_clients_message",
            "one line",
        ),
    ];
    for (from, to, key, message) in cases {
        assert!(good.contains(from), "{from}");
        let text = good.replacen(from, to, 1);
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{to}: {e:?}");
        assert_eq!(e[0].key.as_deref(), Some(key), "{to}: {}", e[0]);
        assert_eq!(e[0].line, line_of(&text, to), "{}", e[0]);
        assert!(e[0].message.contains(message), "{to}: {}", e[0].message);
    }
    let both = good.replacen(
        "denied_commands = [\"SITE\", \"XMKD\"]",
        "denied_commands = [\"SITE\"]\nallowed_commands = [\"site\"]",
        1,
    );
    let e = errors(&both);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("both allowed and denied"), "{}", e[0]);
}

#[test]
fn each_site_logs_into_its_own_directory_or_the_central_one() {
    let r = root();
    let two = |logging_a: &str, logging_b: &str, central: &str| {
        format!(
            "{central}\n[[sites]]\nname = \"a.example\"\nroot = {root:?}\nbindings = [\"127.0.0.1:2121:\"]\n{logging_a}\n\
             [[sites]]\nname = \"b/x\"\nroot = {root:?}\nbindings = [\"127.0.0.1:2121:b.example\"]\n{logging_b}\n",
            root = r.path().display().to_string()
        )
    };
    let c = ServerConfig::from_toml_str(
        &two("[sites.logging]", "[sites.logging]", ""),
        "/etc/w/w.toml",
    )
    .unwrap();
    let dirs: Vec<_> = c
        .sites
        .iter()
        .map(|s| s.log.as_ref().unwrap().directory.clone())
        .collect();
    assert_eq!(
        dirs,
        [
            Path::new("/etc/w/logs/a.example"),
            Path::new("/etc/w/logs/b_x")
        ]
    );
    assert_eq!(c.log_outputs().len(), 2);
    assert_eq!(c.log_outputs()[1].0.as_deref(), Some("b/x"));

    let same = two(
        "[sites.logging]\ndirectory = \"l\"",
        "[sites.logging]\ndirectory = \"l\"",
        "",
    );
    let e = errors(&same);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].message.contains("both log into"), "{}", e[0]);

    let central = two(
        "",
        "[sites.logging]\nenabled = false",
        "[server.logging]\ndirectory = \"all\"",
    );
    let c = ServerConfig::from_toml_str(&central, "/etc/w/w.toml").unwrap();
    assert!(c.sites[0].log.as_ref().unwrap().central);
    assert!(c.sites[1].log.is_none());
    assert!(c.sites[1].session.logging.as_ref().is_some_and(|l| !l.w3c));
    let outputs = c.log_outputs();
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].0, None);
    assert_eq!(outputs[0].1.directory, Path::new("/etc/w/all"));
}

#[test]
fn client_certificates_need_a_readable_ca_bundle() {
    let r = root();
    let ca = root();
    crate::tls::ensure_self_signed(ca.path(), &["Test CA"]).unwrap();
    std::fs::copy(ca.path().join("cert.pem"), r.path().join("ca.pem")).unwrap();
    let mode_of = |keys: &str| {
        let (text, file) = with_tls(r.path(), "", keys);
        let c = ServerConfig::from_toml_str(&text, &file).unwrap_or_else(|e| panic!("{e}"));
        c.sites[0].session.tls.as_ref().unwrap().client_certificates
    };
    assert_eq!(mode_of(""), ClientCertificates::Ignore);
    assert_eq!(
        mode_of("client_certificates = \"ignore\""),
        ClientCertificates::Ignore
    );
    assert_eq!(
        mode_of("client_certificates = \"allow\"\nclient_ca = \"ca.pem\""),
        ClientCertificates::Allow
    );
    assert_eq!(
        mode_of("client_certificates = \"require\"\nclient_ca = \"ca.pem\""),
        ClientCertificates::Require
    );

    // Each mistake: the key, its line, and what to do.
    let error_for = |keys: &str| {
        let (text, file) = with_tls(r.path(), "", keys);
        let e = ServerConfig::from_toml_str(&text, &file).unwrap_err().0;
        assert_eq!(e.len(), 1, "{keys}: {e:?}");
        let e = e.into_iter().next().unwrap();
        let key = e.key.clone().unwrap_or_default();
        let line = text.lines().nth(e.line - 1).unwrap_or_default().to_string();
        assert!(
            line.starts_with(key.trim_start_matches("site.tls.")),
            "{e:?} at {line:?}"
        );
        (key, e.message)
    };
    let (key, msg) = error_for("client_certificates = \"require\"");
    assert_eq!(key, "site.tls.client_certificates");
    assert!(msg.contains("needs client_ca"), "{msg}");
    let (key, msg) = error_for("client_certificates = \"allow\"");
    assert_eq!(key, "site.tls.client_certificates");
    assert!(msg.contains("needs client_ca"), "{msg}");
    let (key, msg) = error_for("client_certificates = \"always\"\nclient_ca = \"ca.pem\"");
    assert_eq!(key, "site.tls.client_certificates");
    assert!(msg.contains("\"require\""), "{msg}");
    let (key, msg) = error_for("client_ca = \"ca.pem\"");
    assert_eq!(key, "site.tls.client_ca");
    assert!(msg.contains("no effect"), "{msg}");
    let (key, msg) = error_for("client_certificates = \"require\"\nclient_ca = \"nowhere.pem\"");
    assert_eq!(key, "site.tls.client_ca");
    assert!(
        msg.contains("nowhere.pem") && msg.contains("No such file"),
        "{msg}"
    );
    // A private key, a directory, garbage: not a CA bundle.
    std::fs::write(r.path().join("garbage.pem"), b"\x00\xffnot pem at all").unwrap();
    for (file, says) in [
        ("key.pem", "BEGIN CERTIFICATE"),
        ("garbage.pem", "BEGIN CERTIFICATE"),
        (".", "directory"),
    ] {
        let keys = format!("client_certificates = \"require\"\nclient_ca = \"{file}\"");
        let (key, msg) = error_for(&keys);
        assert_eq!(key, "site.tls.client_ca");
        assert!(msg.contains(says), "{file}: {msg}");
    }

    // A missing CA and a missing certificate: both reported.
    let (text, file) = with_tls(
        r.path(),
        "",
        "client_certificates = \"require\"\nclient_ca = \"nowhere.pem\"",
    );
    let text = text.replacen("\"cert.pem\"", "\"gone.pem\"", 1);
    let e = ServerConfig::from_toml_str(&text, &file).unwrap_err().0;
    let keys: Vec<_> = e
        .iter()
        .map(|e| e.key.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        keys,
        ["site.tls.certificate", "site.tls.client_ca"],
        "{e:?}"
    );
}

#[test]
fn failed_login_delay_is_seconds_below_the_login_timeout() {
    let r = root();
    let c = ServerConfig::from_toml_str(&good(r.path()), "site.toml").unwrap();
    assert_eq!(
        c.sites[0].session.failed_login_delay,
        Duration::from_secs(1),
        "on by default"
    );
    for (value, want) in [("0", 0), ("2", 2000), ("0.25", 250)] {
        let text = with(
            r.path(),
            "keep_partial_uploads = true",
            &format!("keep_partial_uploads = true\nfailed_login_delay = {value}"),
        );
        let c = ServerConfig::from_toml_str(&text, "site.toml").unwrap();
        assert_eq!(
            c.sites[0].session.failed_login_delay,
            Duration::from_millis(want),
            "{value}"
        );
    }
    // The good config's login timeout is 5 s.
    for (value, message) in [
        ("5", "shorter than the login timeout"),
        ("-1", "0 (off) or a positive"),
        ("nan", "0 (off) or a positive"),
        ("\"1s\"", "number of seconds"),
    ] {
        let text = with(
            r.path(),
            "keep_partial_uploads = true",
            &format!("keep_partial_uploads = true\nfailed_login_delay = {value}"),
        );
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{value}: {e:?}");
        assert_eq!(e[0].line, line_of(&text, "failed_login_delay"), "{value}");
        assert_eq!(e[0].key.as_deref(), Some("site.failed_login_delay"));
        assert!(e[0].message.contains(message), "{value}: {}", e[0].message);
    }
}

#[test]
fn a_site_has_its_own_connection_limit() {
    let r = root();
    let c = ServerConfig::from_toml_str(&good(r.path()), "site.toml").unwrap();
    assert_eq!(
        c.sites[0].session.limits.max_connections, 0,
        "no limit by default"
    );
    let text = with(
        r.path(),
        "keep_partial_uploads = true",
        "keep_partial_uploads = true\nmax_connections = 3",
    );
    let c = ServerConfig::from_toml_str(&text, "site.toml").unwrap();
    assert_eq!(c.sites[0].session.limits.max_connections, 3);
    assert_eq!(c.max_connections, 500, "the server's own stays apart");
    let text = with(
        r.path(),
        "keep_partial_uploads = true",
        "keep_partial_uploads = true\nmax_connections = -1",
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, line_of(&text, "max_connections = -1"));
    assert_eq!(e[0].key.as_deref(), Some("site.max_connections"));
}

#[test]
fn host_name_entries_need_reverse_dns() {
    use wharf_core::policy::HostPattern;
    let r = root();
    let text = policy_config(r.path()).replace(
        "allow = [\"127.0.0.1\", \"::1\", \"2001:db8::/32\"]",
        "enable_reverse_dns = true\nallow = [\"127.0.0.1\", \"LocalHost.\", \"*.example.com\"]\n\
         deny = [\"bad.example.com\", \"10.0.0.0/8\"]",
    );
    let c = ServerConfig::from_toml_str(&text, "site.toml").unwrap();
    let ip = &c.sites[0].session.ip_rules;
    assert!(ip.reverse_dns);
    let names: Vec<(String, bool)> = ip
        .domains
        .iter()
        .map(|d| (d.host.to_string(), d.allow))
        .collect();
    assert_eq!(
        names,
        [
            ("localhost".to_string(), true),
            ("*.example.com".to_string(), true),
            ("bad.example.com".to_string(), false)
        ]
    );
    assert_eq!(ip.rules.len(), 2);
    assert_eq!(ip.domains[0].host, HostPattern::Exact("localhost".into()));
    let a: std::net::IpAddr = "192.0.2.1".parse().unwrap();
    assert!(ip.needs_name(a));
    assert!(ip.allows_named(a, Some("x.example.com")));
    assert!(!ip.allows_named(a, Some("bad.example.com")));
    assert!(!ip.allows_named(a, None));

    let bad = text.replace("\"bad.example.com\"", "\"*.*.example.com\"");
    let e = errors(&bad);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key.as_deref(), Some("site.ip_security.deny"));
    assert_eq!(e[0].line, line_of(&bad, "*.*.example.com"));
    assert!(e[0].message.contains("not a host name"), "{}", e[0]);
}

#[test]
fn server_user_and_group_are_looked_up() {
    let r = root();
    let site = format!("[site]\nroot = {:?}\n", r.path().display().to_string());
    let ok = format!("[server]\nuser = \"nobody\"\n{site}");
    let c = ServerConfig::from_toml_str(&ok, "u.toml").unwrap();
    let run_as = c.run_as.expect("run_as");
    assert_eq!(run_as.user, "nobody");
    assert_ne!(run_as.uid, 0);
    let with_group = format!("[server]\nuser = \"nobody\"\ngroup = \"root\"\n{site}");
    let c = ServerConfig::from_toml_str(&with_group, "u.toml").unwrap();
    assert_eq!(c.run_as.unwrap().gid, 0);
    for (text, key, needle) in [
        (
            "[server]\nuser = \"no-such-user-wharf\"\n",
            "server.user",
            "no user",
        ),
        ("[server]\nuser = \"root\"\n", "server.user", "unprivileged"),
        (
            "[server]\nuser = \"nobody\"\ngroup = \"no-such-group-wharf\"\n",
            "server.group",
            "no group",
        ),
        (
            "[server]\ngroup = \"root\"\n",
            "server.group",
            "needs server.user",
        ),
    ] {
        let text = format!("{text}{site}");
        let e = errors(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key.as_deref(), Some(key), "{e:?}");
        assert!(e[0].message.contains(needle), "{e:?}");
    }
}

#[test]
fn durable_writes_is_on_by_default_and_per_site() {
    let r = root();
    let c = ServerConfig::from_toml_str(&good(r.path()), "site.toml").unwrap();
    assert!(c.sites[0].durable_writes);
    assert_eq!(c.mount_durability(), vec![("site0".to_string(), true)]);
    let off = with(
        r.path(),
        "keep_partial_uploads = true",
        "keep_partial_uploads = true\ndurable_writes = false",
    );
    let c = ServerConfig::from_toml_str(&off, "site.toml").unwrap();
    assert!(!c.sites[0].durable_writes);
    assert_eq!(c.mount_durability(), vec![("site0".to_string(), false)]);
    let bad = with(
        r.path(),
        "keep_partial_uploads = true",
        "keep_partial_uploads = true\ndurable_writes = \"yes\"",
    );
    let e = errors(&bad);
    assert_eq!(e[0].key.as_deref(), Some("site.durable_writes"), "{e:?}");
}

fn s3_site(table: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:2121\"]\n[site]\nroot = \"s3://files/site1\"\n{table}\n\
         [[users]]\nname = \"alice\"\npassword_hash = \"{HASH}\"\n"
    )
}

#[test]
fn an_s3_root_reads_its_table() {
    let text = s3_site(
        "[site.s3]\nendpoint = \"http://127.0.0.1:3900/\"\nregion = \"garage\"\n\
         access_key_id = \"GK1\"\nsecret_access_key = \"s\"\npath_style = true\n\
         part_size_mib = 16\nparallel_parts = 3\n",
    );
    let c = ServerConfig::from_toml_str(&text, "t.toml").unwrap();
    // Not a disk mount: nothing to open on disk.
    assert!(c.mounts().is_empty());
    let [(mount, s)] = c.object_mounts().try_into().unwrap();
    assert_eq!(mount, "site0");
    assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("files", "site1"));
    assert_eq!(s.endpoint, "http://127.0.0.1:3900");
    assert_eq!((s.part_size, s.parallel_parts), (16 << 20, 3));
    assert!(s.path_style);
}

#[test]
fn s3_roots_say_what_is_missing() {
    let msgs = |text: &str| -> String {
        errors(text)
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let m = msgs(&s3_site(""));
    assert!(m.contains("needs an [s3] table"), "{m}");
    let m = msgs(&s3_site(
        "[site.s3]\nendpoint = \"ftp://x\"\naccess_key_id = \"a\"\nsecret_access_key = \"b\"\npart_size_mib = 1\n",
    ));
    assert!(m.contains("not an http:// or https:// address"), "{m}");
    assert!(
        m.contains("part_size_mib must be between 5 and 5120"),
        "{m}"
    );
    let m = msgs(&s3_site(
        "[site.s3]\nendpoint = \"http://x\"\naccess_key_id = \"\"\n",
    ));
    assert!(m.contains("access_key_id is empty"), "{m}");
    let m = msgs(
        &s3_site("[site.s3]\nendpoint = \"http://x\"\nparallel_parts = 0\n")
            .replace("s3://files/site1", "s3:///p"),
    );
    assert!(m.contains("names no bucket"), "{m}");
}
