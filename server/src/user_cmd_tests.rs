use super::*;

const HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$0fDkF6DgYmXkT7eW0Yqg3H8mK4YcU8Wq0lqJQ2n5rQ4";
const HASH2: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0c2FsdA$1fDkF6DgYmXkT7eW0Yqg3H8mK4YcU8Wq0lqJQ2n5rQ4";

fn setup(users: &str, rules: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let config = tmp.path().join("wharf.toml");
    std::fs::write(
        &config,
        format!("# the server\n[server]\nusers_file = \"users.toml\"  # accounts\n\n[site]\nroot = \"pub\"\n{rules}"),
    )
    .unwrap();
    let users_path = tmp.path().join("users.toml");
    std::fs::write(&users_path, users.replace("HASH", HASH)).unwrap();
    (tmp, config, users_path)
}

const USERS: &str = "# Accounts of the team.\n\n# alice runs the books\n[[users]]\nname = \"alice\"\npassword_hash = \"HASH\"   # set 2026-01-01\ngroups = [\"staff\"]\n\n# bob, on call\n[[users]]\nname = \"bob\"\npassword_hash = \"HASH\"\n\n[[groups]]\nname = \"auditors\"\nmembers = [\"alice\", \"bob\"]  # both\n\n# end of file\n";

#[test]
fn add_change_and_delete_keep_every_comment_and_the_layout() {
    let (_tmp, config, users) = setup(USERS, "");
    let mut a = Accounts::open(&config).unwrap();
    assert_eq!(a.find("ALICE").unwrap().0, "alice");
    assert!(a.find("carol").is_none());
    a.add("carol", HASH2, &["staff".into(), "ops".into()]);
    a.save().unwrap();
    let text = std::fs::read_to_string(&users).unwrap();
    let carol = format!("\n[[users]]\nname = \"carol\"\npassword_hash = \"{HASH2}\"\ngroups = [\"staff\", \"ops\"]\n");
    // After bob, before the groups; everything else as it was.
    assert_eq!(
        text,
        USERS
            .replace("HASH", HASH)
            .replace("\n[[groups]]", &format!("{carol}\n[[groups]]"))
    );
    assert_eq!(a.config.users.len(), 3);

    a.set_hash("alice", HASH2).unwrap();
    a.save().unwrap();
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.contains(&format!("password_hash = \"{HASH2}\"   # set 2026-01-01\n")),
        "{text}"
    );

    // Deleting alice keeps the file's heading (set apart by a blank line), drops her
    // own comment, and takes her out of the auditors.
    a.remove("alice").unwrap();
    a.save().unwrap();
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.starts_with("# Accounts of the team.\n\n# bob, on call\n[[users]]\nname = \"bob\""),
        "{text}"
    );
    assert!(!text.contains("alice"), "{text}");
    assert!(text.contains("members = [\"bob\"]  # both\n"), "{text}");
    assert!(text.ends_with("# end of file\n"), "{text}");
    // The configuration file itself was not touched.
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("users_file = \"users.toml\"  # accounts\n"));
}

#[test]
fn deleting_the_last_user_keeps_the_heading_for_what_follows() {
    let (_tmp, config, users) = setup(
        "# Accounts.\n\n# alice\n[[users]]\nname = \"alice\"\npassword_hash = \"HASH\"\n",
        "",
    );
    let mut a = Accounts::open(&config).unwrap();
    a.remove("alice").unwrap();
    a.save().unwrap();
    assert_eq!(std::fs::read_to_string(&users).unwrap(), "# Accounts.\n");
    // And one can be added to the now empty file.
    a.add("bob", HASH, &[]);
    a.save().unwrap();
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(text.starts_with("# Accounts.\n"), "{text}");
    assert!(text.contains("name = \"bob\""), "{text}");
}

#[test]
fn users_in_the_configuration_itself_and_inline_arrays() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("pub")).unwrap();
    let config = tmp.path().join("wharf.toml");
    // `users = [...]` must come before any table to be a top-level key.
    let text = format!("users = [\n  {{ name = \"alice\", password_hash = \"{HASH}\" }},  # inline\n]\n\n[site]\nroot = \"pub\"\n");
    std::fs::write(&config, &text).unwrap();
    let mut a = Accounts::open(&config).unwrap();
    a.add("bob", HASH2, &[]);
    a.save().unwrap();
    a.set_hash("alice", HASH2).unwrap();
    a.remove("bob").unwrap();
    a.save().unwrap();
    let now = std::fs::read_to_string(&config).unwrap();
    assert_eq!(now, text.replace(HASH, HASH2), "{now}");
}

#[test]
fn a_change_that_breaks_the_configuration_is_undone() {
    let rules = "[[site.rules]]\naccess = \"allow\"\nusers = \"bob\"\npermissions = \"read\"\n";
    let (_tmp, config, users) = setup(USERS, rules);
    let before = std::fs::read_to_string(&users).unwrap();
    let mut a = Accounts::open(&config).unwrap();
    a.remove("bob").unwrap();
    let e = a.save().unwrap_err();
    assert!(
        e.contains("nothing was changed") && e.contains("\"bob\" is not a user"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&users).unwrap(), before);
}

#[test]
fn an_invalid_configuration_is_not_touched() {
    let (_tmp, config, _users) = setup(USERS, "");
    std::fs::write(&config, "[site]\nroot = \"missing\"\n").unwrap();
    let e = Accounts::open(&config).err().unwrap();
    assert!(
        e.contains("fix them first") && e.contains("site.root"),
        "{e}"
    );
}

#[test]
fn the_owner_and_mode_of_a_replaced_file_stay() {
    use std::os::unix::fs::PermissionsExt;
    let (_tmp, config, users) = setup(USERS, "");
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&users).unwrap();
    let mut a = Accounts::open(&config).unwrap();
    a.add("carol", HASH, &[]);
    a.save().unwrap();
    let after = std::fs::metadata(&users).unwrap();
    assert_ne!(
        before.ino(),
        after.ino(),
        "replaced, not rewritten in place"
    );
    assert_eq!(after.permissions().mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
}
