//! Real system accounts for the PAM tests: made with `useradd` and `chpasswd` under
//! generated names (`wharft<random>...`), locked (`usermod -L`), expired (`chage -E 0`)
//! or with a `nologin` shell as a test needs, plus a PAM service file of the test's own
//! in `/etc/pam.d`. Everything is removed when the guard is dropped, even when the test
//! panics. Creating accounts needs root: without it a test fails with one line saying
//! so (CI runs as root).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The state of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Good,
    /// `usermod -L`: the password hash is prefixed with `!`.
    Locked,
    /// `chage -E 0`: the account expired on 1970-01-01.
    Expired,
    /// Shell `/usr/sbin/nologin`.
    NoLogin,
}

/// Accounts, groups and a PAM service made for one test.
pub struct Accounts {
    prefix: String,
    users: Vec<String>,
    groups: Vec<String>,
    /// The PAM service files, `/etc/pam.d/<service>`.
    pam_files: Vec<PathBuf>,
    /// The PAM service name this test uses.
    pub service: String,
}

/// Fails the test with one line unless running as root.
pub fn require_root(what: &str) {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root,
        "{what} needs root (to create system accounts with useradd and a PAM service in /etc/pam.d); CI runs as root"
    );
}

/// Runs a command; `useradd` and friends may find /etc/passwd locked by another test
/// for a moment, so they are retried for up to 30 s.
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut c = Command::new(cmd);
        c.args(args);
        let out = match stdin {
            None => c.output(),
            Some(input) => {
                use std::io::Write;
                let mut child = c
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap_or_else(|e| panic!("{cmd}: {e}"));
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
                child.wait_with_output()
            }
        }
        .unwrap_or_else(|e| panic!("{cmd} must be installed: {e}"));
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        // 10: useradd's "cannot lock /etc/passwd"; the others say "lock" too.
        let busy = err.contains("lock") || out.status.code() == Some(10);
        assert!(
            busy && Instant::now() < deadline,
            "{cmd} {args:?}: {}: {err}",
            out.status
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Accounts {
    /// A fresh prefix and a PAM service `wharf-test-<prefix>` that authenticates with
    /// pam_unix and checks the account with pam_unix (expiry, locks).
    pub fn new(test: &str) -> Accounts {
        require_root(test);
        let mut r = [0u8; 4];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut r))
            .unwrap();
        let prefix = format!("wharft{:08x}", u32::from_le_bytes(r));
        let service = format!("wharf-test-{prefix}");
        let pam_file = Path::new("/etc/pam.d").join(&service);
        std::fs::write(
            &pam_file,
            "# written by a wharf test; removed when it ends\n\
             auth     required pam_unix.so\n\
             account  required pam_unix.so\n",
        )
        .expect("writing the test's PAM service file");
        Accounts {
            prefix,
            users: Vec::new(),
            groups: Vec::new(),
            pam_files: vec![pam_file],
            service,
        }
    }

    /// Another PAM service of the test's own, `wharf-test-<prefix>-<suffix>`, with
    /// `stack` as its file; returns its name.
    pub fn pam_service(&mut self, suffix: &str, stack: &str) -> String {
        let service = format!("{}-{suffix}", self.service);
        let file = Path::new("/etc/pam.d").join(&service);
        std::fs::write(&file, stack).expect("writing a PAM service file");
        self.pam_files.push(file);
        service
    }

    /// The name [`Accounts::user`] gives `suffix`.
    pub fn name_of(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// Adds user `<prefix><suffix>` with `password`, home `home`, in `state`; returns its
    /// name.
    pub fn user(&mut self, suffix: &str, password: &str, home: &Path, state: State) -> String {
        let name = format!("{}{suffix}", self.prefix);
        let shell = match state {
            State::NoLogin => "/usr/sbin/nologin",
            _ => "/bin/sh",
        };
        let home = home.display().to_string();
        run(
            "useradd",
            &["-M", "-N", "-g", "users", "-d", &home, "-s", shell, &name],
            None,
        );
        self.users.push(name.clone());
        run("chpasswd", &[], Some(&format!("{name}:{password}\n")));
        match state {
            State::Locked => run("usermod", &["-L", &name], None),
            State::Expired => run("chage", &["-E", "0", &name], None),
            State::Good | State::NoLogin => {}
        }
        name
    }

    /// Adds group `<prefix><suffix>` with `members`; returns its name.
    pub fn group(&mut self, suffix: &str, members: &[&str]) -> String {
        let name = format!("{}{suffix}", self.prefix);
        run("groupadd", &[&name], None);
        self.groups.push(name.clone());
        for m in members {
            run("usermod", &["-a", "-G", &name, m], None);
        }
        name
    }
}

/// Runs a removal, retried while the account files are locked (bounded); never panics.
fn remove(cmd: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(out) = Command::new(cmd).arg(name).output() {
        let locked = String::from_utf8_lossy(&out.stderr).contains("lock");
        if out.status.success() || !locked || Instant::now() > deadline {
            if !out.status.success() {
                eprintln!("{cmd} {name}: {}", String::from_utf8_lossy(&out.stderr));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in self.users.drain(..) {
            remove("userdel", &u);
        }
        for g in self.groups.drain(..) {
            remove("groupdel", &g);
        }
        for f in self.pam_files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}
