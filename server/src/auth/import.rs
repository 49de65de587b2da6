//! `wharf user import`: the accounts of another server's password file, as `[[users]]`
//! entries for a users file.
//!
//! - `proftpd`: an `AuthUserFile` (passwd format, `name:hash:uid:gid:gecos:home:shell`,
//!   as `ftpasswd` writes it);
//! - `pureftpd`: `pureftpd.passwd` (`name:hash:uid:gid:gecos:home:...`, as `pure-pw`
//!   writes it);
//! - `htpasswd`: `name:hash` (bcrypt lines: `htpasswd -B`).
//!
//! The hashes are kept as they are (sha512-crypt, sha256-crypt, bcrypt, argon2), so the
//! users keep their passwords. Lines whose hash wharf cannot check (MD5-crypt, DES,
//! `{SHA}`, locked accounts) or whose name wharf cannot use are skipped, each with the
//! reason; the home directory of passwd-style files is written as a comment.

use std::collections::HashSet;

/// The file formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Proftpd,
    Pureftpd,
    Htpasswd,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, String> {
        match s {
            "proftpd" => Ok(Format::Proftpd),
            "pureftpd" | "pure-ftpd" => Ok(Format::Pureftpd),
            "htpasswd" => Ok(Format::Htpasswd),
            _ => Err(format!(
                "{s:?} is not a format: \"proftpd\", \"pureftpd\" or \"htpasswd\""
            )),
        }
    }
}

/// One account read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    pub name: String,
    pub password_hash: String,
    /// The home directory the file gave (passwd formats).
    pub home: Option<String>,
}

/// A line that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// 1-based.
    pub line: usize,
    pub name: String,
    pub reason: String,
}

/// Reads `text` in `format`. Names already in `existing` are skipped (a users file
/// cannot define a user twice).
pub fn import(format: Format, text: &str, existing: &[String]) -> (Vec<Imported>, Vec<Skipped>) {
    let mut taken: HashSet<String> = existing.iter().map(|n| n.to_lowercase()).collect();
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(':').collect();
        let skip = |name: &str, reason: String| Skipped {
            line: i + 1,
            name: name.to_string(),
            reason,
        };
        let need = match format {
            Format::Htpasswd => 2,
            Format::Proftpd => 7,
            Format::Pureftpd => 6,
        };
        if fields.len() < need {
            skipped.push(skip(
                fields[0],
                format!(
                    "{} fields where the format has at least {need}",
                    fields.len()
                ),
            ));
            continue;
        }
        let (name, hash) = (fields[0], fields[1]);
        if let Err(e) = usable_name(name) {
            skipped.push(skip(name, e));
            continue;
        }
        if let Err(e) = super::crypt::check_hash(hash) {
            skipped.push(skip(name, e));
            continue;
        }
        if !taken.insert(name.to_lowercase()) {
            skipped.push(skip(name, "the user is defined already".into()));
            continue;
        }
        let home = match format {
            Format::Htpasswd => None,
            Format::Proftpd | Format::Pureftpd => {
                Some(fields[5].trim_end_matches("/./").to_string()).filter(|h| !h.is_empty())
            }
        };
        out.push(Imported {
            name: name.to_string(),
            password_hash: hash.to_string(),
            home,
        });
    }
    (out, skipped)
}

/// The rules the configuration has for user names (see `config.rs`).
fn usable_name(name: &str) -> Result<(), String> {
    crate::config::check_user_name(name)
}

/// A TOML string, quoted (basic string, escapes as TOML wants them).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `[[users]]` tables for `users`, with a header comment naming `source`.
pub fn to_toml(users: &[Imported], source: &str) -> String {
    let mut out = format!("\n# Imported from {source} by `wharf user import`.\n");
    for u in users {
        out.push_str("\n[[users]]\n");
        if let Some(home) = &u.home {
            out.push_str(&format!("# home in {source}: {home}\n"));
        }
        out.push_str(&format!("name = {}\n", quote(&u.name)));
        out.push_str(&format!("password_hash = {}\n", quote(&u.password_hash)));
    }
    out
}

/// The user names a users file (TOML) defines already.
pub fn names_in(users_file: &str) -> Result<Vec<String>, String> {
    let value: toml::Value = toml::from_str(users_file).map_err(|e| e.to_string())?;
    Ok(value
        .get("users")
        .and_then(|u| u.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|u| u.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA512: &str = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";

    #[test]
    fn proftpd_auth_user_file() {
        let text = format!(
            "# ftpasswd\nalice:{SHA512}:1001:1001::/srv/ftp/alice:/bin/false\n\
             old:$1$saltsalt$RwMqRjSWhXMKbW72DwzGd1:1002:1002::/srv/ftp/old:/bin/false\n\
             anonymous:{SHA512}:1003:1003::/srv/ftp:/bin/false\n\
             short:{SHA512}:1\n\
             bob:{SHA512}:1004:1004::/srv/ftp/bob:/bin/false\n\
             alice:{SHA512}:1005:1005::/x:/bin/false\n"
        );
        let (users, skipped) = import(Format::Proftpd, &text, &["BOB".into()]);
        assert_eq!(
            users,
            vec![Imported {
                name: "alice".into(),
                password_hash: SHA512.into(),
                home: Some("/srv/ftp/alice".into()),
            }]
        );
        let why: Vec<(usize, &str)> = skipped.iter().map(|s| (s.line, s.name.as_str())).collect();
        assert_eq!(
            why,
            [
                (3, "old"),
                (4, "anonymous"),
                (5, "short"),
                (6, "bob"),
                (7, "alice")
            ]
        );
        assert!(skipped[0].reason.contains("MD5"), "{skipped:?}");
        assert!(skipped[3].reason.contains("defined already"));
    }

    #[test]
    fn pureftpd_and_htpasswd() {
        let bcrypt = "$2y$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK";
        let pure = format!("joe:{bcrypt}:500:500::/home/ftpusers/joe/./::::::::::::\n");
        let (users, skipped) = import(Format::Pureftpd, &pure, &[]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(users[0].home.as_deref(), Some("/home/ftpusers/joe"));
        let ht = format!("joe:{bcrypt}\r\nweb:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n");
        let (users, skipped) = import(Format::Htpasswd, &ht, &[]);
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].password_hash, bcrypt);
        assert_eq!(skipped[0].name, "web");
    }

    #[test]
    fn the_toml_parses_back_into_a_users_file() {
        let users = vec![Imported {
            name: "we\"ird\\name".into(),
            password_hash: SHA512.into(),
            home: Some("/srv/x".into()),
        }];
        let text = to_toml(&users, "/etc/proftpd/ftpd.passwd");
        assert_eq!(names_in(&text).unwrap(), vec!["we\"ird\\name".to_string()]);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["users"][0]["password_hash"].as_str(), Some(SHA512));
    }
}
