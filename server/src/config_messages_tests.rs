//! Errors about whole tables, and the wording of toml's and serde's messages: each names
//! the table it is about (not the key of the table before it) and says what was expected
//! in the configuration's words, not Rust's.

use super::*;

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0fDkF6DgYmXkT7eW0Yqg3H8mK4YcU8Wq0lqJQ2n5rQ4";

fn errors(text: &str) -> Vec<ConfigError> {
    ServerConfig::from_toml_str(text, "w.toml").unwrap_err().0
}

fn one(text: &str) -> ConfigError {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    e.into_iter().next().unwrap()
}

#[test]
fn a_single_table_where_a_list_of_tables_belongs_names_it_and_says_how() {
    let e = one(
        "[server]\npassive_ports = \"50000-50010\"\n\n[sites]\nname = \"a\"\nroot = \".\"\nbindings = [\"127.0.0.1:2121:\"]\n",
    );
    assert_eq!((e.line, e.key.as_deref()), (4, Some("sites")), "{e}");
    assert!(e.message.contains("[[sites]]"), "{e}");
    assert!(!e.message.contains("map"), "{e}");
}

#[test]
fn a_missing_key_of_a_table_names_that_table() {
    let e = one("[server]\npassive_ports = \"50000-50010\"\n\n[site]\nanonymous = true\n");
    assert_eq!((e.line, e.key.as_deref()), (4, Some("site")), "{e}");
    assert!(e.message.contains("`root`"), "{e}");

    let e = one(&format!(
        "[site]\nroot = \".\"\n\n[[users]]\nname = \"alice\"\npassword_hash = \"{HASH}\"\n\n[[users]]\nname = \"bob\"\n"
    ));
    assert_eq!((e.line, e.key.as_deref()), (8, Some("users[1]")), "{e}");
    assert!(e.message.contains("`password_hash`"), "{e}");
}

#[test]
fn an_unknown_table_is_named_with_a_suggestion() {
    let e = one("[site]\nroot = \".\"\nanonymous = true\n\n[[user]]\nname = \"a\"\n");
    assert_eq!((e.line, e.key.as_deref()), (5, Some("user")), "{e}");
    assert!(e.message.contains("unknown"), "{e}");
    assert!(e.message.contains("did you mean `users`"), "{e}");

    let e = one("[site]\nroot = \".\"\n[site.tsl]\ncertificate = \"c\"\n");
    assert_eq!((e.line, e.key.as_deref()), (3, Some("site.tsl")), "{e}");
    assert!(e.message.contains("did you mean `tls`"), "{e}");
}

#[test]
fn messages_say_what_is_expected_without_rust_type_names() {
    for (text, key) in [
        (
            "[server]\nshards = -1\n[site]\nroot = \".\"\n",
            "server.shards",
        ),
        (
            "[server]\nmax_connections = 1.5\n[site]\nroot = \".\"\n",
            "server.max_connections",
        ),
        (
            "[server]\nshutdown_grace = \"30s\"\n[site]\nroot = \".\"\n",
            "server.shutdown_grace",
        ),
        (
            "[site]\nroot = \".\"\n[timeouts]\ncontrol = true\n",
            "timeouts.control",
        ),
        ("site = 5\n", "site"),
    ] {
        let e = one(text);
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        for rust in [
            "usize",
            "u64",
            "u32",
            "u16",
            "i64",
            "f64",
            "struct",
            "Raw",
            "map",
            "sequence",
            "floating point",
        ] {
            assert!(!e.message.contains(rust), "{rust:?} in {e}");
        }
        assert!(e.message.contains("expected"), "{e}");
    }
    let e = one("[server]\nshards = -1\n[site]\nroot = \".\"\n");
    assert!(e.message.contains("whole number"), "{e}");
}

#[test]
fn a_file_that_cannot_be_read_has_no_line_or_column() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("missing.toml");
    let e = ServerConfig::from_file(&path).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: ", path.display())),
        "{shown}"
    );
    assert!(!shown.contains(":0:0"), "{shown}");
    assert!(shown.contains("No such file"), "{shown}");
}

#[test]
fn a_placeholder_hash_is_explained_in_our_words() {
    let e = one(
        "[site]\nroot = \".\"\n[[users]]\nname = \"alice\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$...\"\n",
    );
    assert_eq!(e.key.as_deref(), Some("users[0].password_hash"), "{e}");
    assert!(!e.message.contains("to short"), "{e}");
    assert!(e.message.contains("wharf passwd"), "{e}");
    assert!(e.message.contains("$argon2id$"), "{e}");
}
