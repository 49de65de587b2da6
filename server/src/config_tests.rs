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
    let c = ServerConfig::from_toml_str(&text, "examples/wharf.toml").unwrap();
    assert_eq!(c.users.len(), 1);
    assert_eq!(c.session.passive_ports, 50000..=50100);
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
    use wharf_core::log::Field;
    use wharf_core::policy::DenyAction;
    use wharf_core::proto::command::Verb;
    let r = root();
    let c = ServerConfig::from_toml_str(&policy_config(r.path()), "/etc/wharf/site.toml").unwrap();
    let f = &c.session.filtering;
    assert!(!f.allow_unlisted_extensions);
    assert_eq!(f.allowed_extensions, ["txt", "pdf", ""]);
    assert_eq!(f.denied_extensions, ["exe"]);
    assert_eq!(f.hidden_segments, ["_private"]);
    assert_eq!(f.denied_sequences, ["..", "~"]);
    assert_eq!(f.denied_commands, [Verb::Site, Verb::Mkd]);
    assert_eq!(f.max_path_length, 512);
    assert_eq!(f.max_upload_size, Some(1 << 20));
    assert_eq!(c.session.max_line, 1024);
    assert!(c.session.allow_replace_on_rename);
    assert!(!c.session.allow_read_uploads_in_progress);

    let ip = &c.session.ip_rules;
    assert!(!ip.allow_unlisted);
    assert_eq!(ip.deny_action, DenyAction::Drop);
    assert!(ip.allows("127.0.0.1".parse().unwrap()));
    assert!(ip.allows("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!ip.allows("127.0.0.2".parse().unwrap()));
    assert!(ip.allows("2001:db8::7".parse().unwrap()));

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
    assert_eq!(rules.max_clients_message, "Full up.");

    let limits = &c.session.limits;
    assert_eq!(limits.min_bytes_per_second, 100);
    assert_eq!(limits.rate_for(Some("alice"), false), Some(50_000));
    assert_eq!(limits.rate_for(Some("bob"), false), Some(1_000_000));

    let log = c.session.logging.as_ref().unwrap();
    assert_eq!(&*log.site, "files");
    assert_eq!(log.fields.iter().count(), 5);
    assert!(log.fields.has(Field::SubStatus) && !log.fields.has(Field::UserName));
    let out = c.log.as_ref().unwrap();
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
        c.session.filtering,
        wharf_core::policy::RequestFiltering::default()
    );
    assert!(!c.session.ip_rules.restricts());
    assert!(!c.server_rules.logon.enabled);
    assert_eq!(c.server_rules.logon.max_failures, 4);
    assert_eq!(c.server_rules.logon.window, Duration::from_secs(30));
    assert_eq!(c.session.limits.min_bytes_per_second, 240);
    assert!(c.session.logging.is_none() && c.log.is_none());
    assert!(!c.session.allow_replace_on_rename);
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
    let out = c.log.unwrap();
    assert!(out.central);
    assert_eq!(out.period, crate::w3c::Period::Hourly);
    assert!(c.session.logging.is_some());
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
            "reverse DNS",
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
