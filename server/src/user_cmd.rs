//! `wharf user add|passwd|del|list`: accounts without hand-editing TOML.
//!
//! The users live in `server.users_file` when the configuration names one, else in the
//! configuration's own `[[users]]`; a user is changed where it is written. The files are
//! edited with `toml_edit`, so comments, blank lines and the order of everything else
//! stay as they were. Every change is checked the way the server checks it: the
//! configuration must be valid before (else nothing is touched) and after (else the
//! files are put back); each file is replaced atomically, keeping its owner and mode.
//! Then the running server, found through its pid file, is told to reload (SIGHUP).
//!
//! Passwords are read from standard input, or asked for on a terminal; never from the
//! command line. A new subcommand is a variant of [`UserCommand`], an arm in [`run`],
//! and the `Accounts` operations it needs.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::config::{check_group_name, check_user_name};
use crate::ServerConfig;

/// `wharf user ...`
#[derive(clap::Subcommand, Debug, Clone)]
pub enum UserCommand {
    /// Add a user. The password is read from standard input (its first line), or asked
    /// for twice on a terminal; never from the command line.
    Add {
        /// The user name: no spaces, '/', '|' or ','; not "anonymous" or "ftp".
        name: String,
        /// A group to put the user in (repeat for several).
        #[arg(short, long = "group", value_name = "GROUP")]
        groups: Vec<String>,
    },
    /// Set a user's password (read as for add).
    Passwd {
        /// The user name.
        name: String,
    },
    /// Delete a user, and take them out of the member lists of [[groups]].
    Del {
        /// The user name.
        name: String,
    },
    /// List the users and their groups.
    List,
}

/// Runs `cmd` on the configuration `config`; `pid_file` (`--pid-file`) overrides its
/// `server.pid_file` for finding the running server.
pub fn run(
    cmd: &UserCommand,
    config: Option<&Path>,
    pid_file: Option<&Path>,
) -> Result<(), String> {
    let config = config.ok_or(
        "wharf user needs --config FILE: the configuration whose users (or server.users_file) to change",
    )?;
    match cmd {
        UserCommand::List => {
            let accounts = Accounts::open(config)?;
            print!("{}", accounts.listing());
            Ok(())
        }
        UserCommand::Add { name, groups } => {
            check_user_name(name)?;
            for g in groups {
                check_group_name(g)?;
            }
            let mut accounts = Accounts::open(config)?;
            if let Some((existing, file)) = accounts.find(name) {
                return Err(format!(
                    "user {existing:?} exists (in {}); `wharf user passwd {existing}` changes the password",
                    file.display()
                ));
            }
            let hash = new_hash(name)?;
            let file = accounts.add(name, &hash, groups);
            accounts.save()?;
            println!("wharf: user {name} added to {}", file.display());
            tell_server(pid_file, &accounts.config);
            Ok(())
        }
        UserCommand::Passwd { name } => {
            let mut accounts = Accounts::open(config)?;
            accounts.find(name).ok_or_else(|| unknown(name))?;
            let hash = new_hash(name)?;
            let file = accounts.set_hash(name, &hash)?;
            accounts.save()?;
            println!("wharf: password of {name} changed in {}", file.display());
            tell_server(pid_file, &accounts.config);
            Ok(())
        }
        UserCommand::Del { name } => {
            let mut accounts = Accounts::open(config)?;
            accounts.find(name).ok_or_else(|| unknown(name))?;
            let file = accounts.remove(name)?;
            accounts.save()?;
            println!("wharf: user {name} deleted from {}", file.display());
            tell_server(pid_file, &accounts.config);
            Ok(())
        }
    }
}

fn unknown(name: &str) -> String {
    format!("no user {name:?} (`wharf user list` shows the users)")
}

fn new_hash(name: &str) -> Result<String, String> {
    let password = crate::password::read_password(&format!("Password for {name}: "), true)?;
    crate::hash_password(&password)
}

/// Sends SIGHUP to the server holding the pid file, and says what happened.
fn tell_server(pid_file: Option<&Path>, config: &ServerConfig) {
    let Some(path) = pid_file.or(config.pid_file.as_deref()) else {
        println!(
            "wharf: no pid file is configured (server.pid_file, or --pid-file): reload the \
             running server yourself (systemctl reload wharf, or kill -HUP its pid)"
        );
        return;
    };
    match crate::pidfile::running_pid(path) {
        Ok(Some(pid)) => {
            // SAFETY: kill sends a signal; the pid is that of the locked pid file's holder.
            match unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } {
                0 => println!("wharf: told the running server (pid {pid}) to reload"),
                _ => eprintln!(
                    "wharf: could not signal the server (pid {pid}): {}; reload it yourself",
                    std::io::Error::last_os_error()
                ),
            }
        }
        Ok(None) => println!(
            "wharf: no server is running ({} is absent or stale); the change applies when it starts",
            path.display()
        ),
        Err(e) => eprintln!("wharf: {e}; reload the server yourself"),
    }
}

/// One TOML file being edited.
struct Doc {
    path: PathBuf,
    original: String,
    doc: DocumentMut,
    changed: bool,
}

impl Doc {
    fn open(path: &Path) -> Result<Doc, String> {
        // Edit the file a symlink points to, not the link.
        let path = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let original =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc = original
            .parse::<DocumentMut>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Doc {
            path,
            original,
            doc,
            changed: false,
        })
    }
}

/// The accounts of a configuration, opened for editing: the configuration file and its
/// users file, if any.
struct Accounts {
    config_path: PathBuf,
    /// The configuration as the server reads it (valid).
    config: ServerConfig,
    /// `[0]`: the configuration file; `[1]`: the users file, if it names one.
    docs: Vec<Doc>,
}

impl Accounts {
    /// Opens `config` and its users file; refuses a configuration that does not validate
    /// (the server would refuse it too, and a change could not be checked).
    fn open(config: &Path) -> Result<Accounts, String> {
        let parsed = ServerConfig::from_file(config).map_err(|e| {
            format!("the configuration has errors; fix them first (wharf check-config):\n{e}")
        })?;
        let mut docs = vec![Doc::open(config)?];
        if let Some(users) = &parsed.users_file {
            docs.push(Doc::open(users)?);
        }
        Ok(Accounts {
            config_path: config.to_path_buf(),
            config: parsed,
            docs,
        })
    }

    /// The name as written and the file of the user called `name` (names ignore case).
    fn find(&self, name: &str) -> Option<(String, &Path)> {
        self.docs.iter().find_map(|d| {
            let entries = d.doc.get("users")?;
            let found = user_names(entries)
                .into_iter()
                .find(|n| n.eq_ignore_ascii_case(name))?;
            Some((found, d.path.as_path()))
        })
    }

    /// Which document holds `name`, and its index in that document's `users`.
    fn locate(&self, name: &str) -> Result<(usize, usize), String> {
        self.docs
            .iter()
            .enumerate()
            .find_map(|(i, d)| {
                let names = user_names(d.doc.get("users")?);
                let j = names.iter().position(|n| n.eq_ignore_ascii_case(name))?;
                Some((i, j))
            })
            .ok_or_else(|| unknown(name))
    }

    /// Appends a user after the last one of the users file (or of the configuration);
    /// returns the file.
    fn add(&mut self, name: &str, hash: &str, groups: &[String]) -> PathBuf {
        let doc = self.docs.last_mut().expect("the configuration is open");
        doc.changed = true;
        let root = doc.doc.as_table_mut();
        match root.get_mut("users") {
            // `users = [{ name = ..., ... }]`: one more inline table.
            Some(Item::Value(Value::Array(list))) => {
                let mut entry = toml_edit::InlineTable::new();
                entry.insert("name", name.into());
                entry.insert("password_hash", hash.into());
                if !groups.is_empty() {
                    entry.insert("groups", Value::Array(string_array(groups)));
                }
                list.push(entry);
            }
            Some(Item::ArrayOfTables(tables)) => tables.push(user_table(name, hash, groups)),
            _ => {
                let mut table = user_table(name, hash, groups);
                // A file of comments only: they stay above the first user.
                if !root
                    .iter()
                    .any(|(_, i)| i.is_table() || i.is_array_of_tables())
                {
                    let trailing = doc.doc.trailing().as_str().unwrap_or("").to_string();
                    table.decor_mut().set_prefix(trailing);
                    doc.doc.set_trailing("");
                }
                let mut tables = ArrayOfTables::new();
                tables.push(table);
                doc.doc.insert("users", Item::ArrayOfTables(tables));
            }
        }
        doc.path.clone()
    }

    /// Replaces the password hash of `name`, keeping the value's spacing and comment.
    fn set_hash(&mut self, name: &str, hash: &str) -> Result<PathBuf, String> {
        let (i, j) = self.locate(name)?;
        let doc = &mut self.docs[i];
        let slot = match doc.doc.get_mut("users") {
            Some(Item::ArrayOfTables(tables)) => tables
                .get_mut(j)
                .and_then(|t| t.get_mut("password_hash"))
                .and_then(Item::as_value_mut),
            Some(Item::Value(Value::Array(list))) => list
                .get_mut(j)
                .and_then(Value::as_inline_table_mut)
                .and_then(|t| t.get_mut("password_hash")),
            _ => None,
        };
        let slot = slot.ok_or_else(|| format!("user {name:?} has no password_hash to replace"))?;
        let decor = slot.decor().clone();
        *slot = Value::from(hash);
        *slot.decor_mut() = decor;
        doc.changed = true;
        Ok(doc.path.clone())
    }

    /// Deletes `name`, and takes it out of every `[[groups]]` member list.
    fn remove(&mut self, name: &str) -> Result<PathBuf, String> {
        let (i, j) = self.locate(name)?;
        let doc = &mut self.docs[i];
        match doc.doc.get_mut("users") {
            Some(Item::ArrayOfTables(tables)) => {
                let gone = tables.remove(j);
                if tables.is_empty() {
                    doc.doc.remove("users");
                }
                // Its successor in the list now has its index.
                keep_detached_comments(&mut doc.doc, &gone, j);
            }
            Some(Item::Value(Value::Array(list))) => {
                list.remove(j);
            }
            _ => return Err(unknown(name)),
        }
        doc.changed = true;
        let path = doc.path.clone();
        for doc in &mut self.docs {
            if remove_member(&mut doc.doc, name) {
                doc.changed = true;
            }
        }
        Ok(path)
    }

    /// `name  group, group` per user, in configuration order.
    fn listing(&self) -> String {
        let width = self
            .config
            .users
            .iter()
            .map(|u| u.name.len())
            .max()
            .unwrap_or(0);
        let mut out = String::new();
        for u in &self.config.users {
            let groups = match u.groups.is_empty() {
                true => "-".to_string(),
                false => u.groups.join(", "),
            };
            out.push_str(&format!("{:width$}  {groups}\n", u.name));
        }
        out
    }

    /// Writes the changed files, then checks the configuration as the server would; if
    /// it no longer validates, the files are put back and the errors returned.
    fn save(&mut self) -> Result<(), String> {
        let changed: Vec<&Doc> = self.docs.iter().filter(|d| d.changed).collect();
        for d in &changed {
            replace_file(&d.path, &d.doc.to_string())?;
        }
        match ServerConfig::from_file(&self.config_path) {
            Ok(config) => {
                self.config = config;
                Ok(())
            }
            Err(errors) => {
                for d in &changed {
                    replace_file(&d.path, &d.original)?;
                }
                Err(format!(
                    "the change would make the configuration invalid, so nothing was changed:\n{errors}"
                ))
            }
        }
    }
}

/// A `[[users]]` table.
fn user_table(name: &str, hash: &str, groups: &[String]) -> Table {
    let mut t = Table::new();
    t.insert("name", toml_edit::value(name));
    t.insert("password_hash", toml_edit::value(hash));
    if !groups.is_empty() {
        t.insert("groups", toml_edit::value(string_array(groups)));
    }
    // A blank line before it, as between the entries of the example configuration.
    t.decor_mut().set_prefix("\n");
    t
}

fn string_array(items: &[String]) -> Array {
    items.iter().map(String::as_str).collect()
}

/// The `name` of every entry of `users` (`[[users]]` or an inline array), in order.
fn user_names(users: &Item) -> Vec<String> {
    let name_of = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    match users {
        Item::ArrayOfTables(tables) => tables
            .iter()
            .map(|t| name_of(t.get("name").and_then(Item::as_value)))
            .collect(),
        Item::Value(Value::Array(list)) => list
            .iter()
            .map(|v| name_of(v.as_inline_table().and_then(|t| t.get("name"))))
            .collect(),
        _ => Vec::new(),
    }
}

/// The comments above a deleted `[[users]]` table that are set apart from it by a blank
/// line are about what follows, not about that user: they move to the next entry (or, if
/// it was the last one, the next table in the file, or the end of the file).
fn keep_detached_comments(doc: &mut DocumentMut, gone: &Table, next: usize) {
    let prefix = gone
        .decor()
        .prefix()
        .and_then(|p| p.as_str())
        .unwrap_or("")
        .to_string();
    // The part up to the last blank line; what follows it belongs to the deleted user.
    let detached = match prefix.rfind("\n\n") {
        Some(i) => &prefix[..i + 1],
        None => "",
    };
    if detached.trim().is_empty() {
        return;
    }
    let prepend = |t: &mut Table| {
        let old = t
            .decor()
            .prefix()
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string();
        t.decor_mut().set_prefix(format!("{detached}{old}"));
    };
    if let Some(Item::ArrayOfTables(tables)) = doc.get_mut("users") {
        if let Some(t) = tables.get_mut(next) {
            prepend(t);
            return;
        }
    }
    let after = gone.position().unwrap_or(isize::MAX);
    let mut best: Option<&mut Table> = None;
    for (_, item) in doc.as_table_mut().iter_mut() {
        let candidates: Vec<&mut Table> = match item {
            Item::Table(t) => vec![t],
            Item::ArrayOfTables(ts) => ts.iter_mut().collect(),
            _ => Vec::new(),
        };
        for t in candidates {
            let p = t.position().unwrap_or(isize::MAX);
            if p > after
                && best
                    .as_ref()
                    .is_none_or(|b| p < b.position().unwrap_or(isize::MAX))
            {
                best = Some(t);
            }
        }
    }
    match best {
        Some(t) => prepend(t),
        None => {
            let trailing = doc.trailing().as_str().unwrap_or("").to_string();
            doc.set_trailing(format!("{detached}{trailing}"));
        }
    }
}

/// Takes `name` out of every `[[groups]]` `members` list; whether any was.
fn remove_member(doc: &mut DocumentMut, name: &str) -> bool {
    let mut removed = false;
    let mut clean = |members: Option<&mut Value>| {
        if let Some(Value::Array(list)) = members {
            // The first element's spacing (`[ "a"` vs `["a"`) stays first.
            let first = list.get(0).map(|v| v.decor().clone());
            let before = list.len();
            list.retain(|v| !v.as_str().is_some_and(|m| m.eq_ignore_ascii_case(name)));
            removed |= list.len() != before;
            if let (Some(decor), Some(v)) = (first, list.get_mut(0)) {
                if let Some(prefix) = decor.prefix() {
                    v.decor_mut().set_prefix(prefix.clone());
                }
            }
        }
    };
    match doc.get_mut("groups") {
        Some(Item::ArrayOfTables(tables)) => {
            for t in tables.iter_mut() {
                clean(t.get_mut("members").and_then(Item::as_value_mut));
            }
        }
        Some(Item::Value(Value::Array(list))) => {
            for v in list.iter_mut() {
                clean(v.as_inline_table_mut().and_then(|t| t.get_mut("members")));
            }
        }
        _ => {}
    }
    removed
}

/// Replaces `path` with `text` atomically (a new file renamed over it), with the old
/// file's mode and, when this process may set them, its owner and group: a users file
/// the server's account reads stays readable to it after root edits it.
fn replace_file(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or("users".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{name}.wharf-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if (meta.uid(), meta.gid()) != (uid, gid) {
            std::os::unix::fs::fchown(&f, Some(meta.uid()), Some(meta.gid()))?;
        }
        f.set_permissions(meta.permissions())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("writing {shown}: {e}")
    })
}

#[cfg(test)]
#[path = "user_cmd_tests.rs"]
mod tests;
