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
    assert_eq!(c.session.passive_ports, 50000..=50100);
    assert_eq!(c.session.external_ip, Some(Ipv4Addr::new(203, 0, 113, 7)));
    assert!(c.session.allow_anonymous);
    assert!(!c.session.anonymous_write);
    assert!(c.session.keep_partial_uploads);
    assert_eq!(c.session.listing_style, ListingStyle::MsDos);
    assert_eq!(c.session.timeouts.idle, Duration::from_secs(60));
    assert_eq!(c.session.timeouts.data_connect, Duration::from_secs(10));
    assert_eq!(c.session.timeouts.login, Duration::from_secs(5));
    assert_eq!(c.session.banner, "hello");
    assert_eq!(c.users.len(), 2);
    assert_eq!(c.users[0].groups, vec!["staff".to_string()]);
}

#[test]
fn minimal_config_takes_defaults() {
    let r = root();
    let text = format!("[site]\nroot = {:?}\n", r.path().display().to_string());
    let c = ServerConfig::from_toml_str(&text, "m.toml").unwrap();
    assert_eq!(c.listen, vec!["127.0.0.1:2121".parse().unwrap()]);
    assert_eq!(c.session.passive_ports, 0..=0);
    assert!(!c.session.allow_anonymous);
    assert_eq!(c.session.timeouts.idle, Duration::from_secs(120));
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
    assert_eq!(c.root, r.path().join("pub"));
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
    assert_eq!(c.session.passive_ports, 50000..=50100);
    assert!(c.session.tls.is_some());
    assert_eq!(c.listen_implicit.len(), 1);
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
    let tls = c.session.tls.as_ref().expect("tls");
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
    assert_eq!(c.listen_implicit, vec!["127.0.0.1:990".parse().unwrap()]);
    assert_eq!(
        c.tls.as_ref().unwrap().certificate,
        r.path().join("cert.pem")
    );

    let keys = "control = \"require_credentials_only\"\ndata = \"deny\"\nexempt_anonymous = true\n\
                require_tls_session_reuse = false\nstrict_close_notify = false\nallow_ccc = false";
    let (text, file) = with_tls(r.path(), "", keys);
    let c = ServerConfig::from_toml_str(&text, &file).unwrap();
    let tls = c.session.tls.as_ref().unwrap();
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
