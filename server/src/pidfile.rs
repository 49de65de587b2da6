//! The pid file (`server.pid_file`, `--pid-file`): the running server's pid, for
//! scripts and for `wharf user`, which signals the server to reload.
//!
//! The server holds an exclusive `flock` on the file for as long as it runs, so whether
//! a pid file is live does not depend on the pid in it (a dead server's pid may belong
//! to another process by now): a locked file means a running wharf, and refuses a
//! second start; an unlocked one is stale and is replaced. The file is removed at exit.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A pid file this process holds (locked, with its pid in it) until dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    file: File,
    removed: bool,
}

impl PidFile {
    /// Writes this process's pid to `path`, replacing a stale file; refuses (naming the
    /// pid) when a running server holds it.
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let shown = path.display();
        // A file unlinked (by the server that held it, exiting) between our open and our
        // lock is not the file at `path`: open again.
        for _ in 0..10 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(|e| format!("pid file {shown}: {e}"))?;
            if !try_lock(&file, libc::LOCK_EX)? {
                let pid = read_pid(&mut file);
                return Err(match pid {
                    Some(pid) => format!(
                        "another wharf runs as pid {pid} (pid file {shown}); stop it first, or use another pid file"
                    ),
                    None => format!("pid file {shown} is locked by a running wharf"),
                });
            }
            let same = std::fs::metadata(path)
                .ok()
                .zip(file.metadata().ok())
                .is_some_and(|(a, b)| a.dev() == b.dev() && a.ino() == b.ino());
            if !same {
                continue;
            }
            file.set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| writeln!(file, "{}", std::process::id()))
                .map_err(|e| format!("pid file {shown}: {e}"))?;
            return Ok(PidFile {
                path: path.to_path_buf(),
                file,
                removed: false,
            });
        }
        Err(format!(
            "pid file {shown}: replaced by another process again and again"
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file (if it is still ours); the lock goes when the descriptor
    /// closes, after the name. Dropping a `PidFile` does the same, silently.
    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        self.unlink()
    }

    fn unlink(&self) -> io::Result<()> {
        let ours = std::fs::metadata(&self.path)
            .ok()
            .zip(self.file.metadata().ok())
            .is_some_and(|(a, b)| a.dev() == b.dev() && a.ino() == b.ino());
        match ours {
            true => std::fs::remove_file(&self.path),
            false => Ok(()),
        }
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.unlink();
        }
    }
}

/// The pid of the wharf that holds the pid file at `path`; `None` when there is no such
/// file or no running server holds it (it is stale).
pub fn running_pid(path: &Path) -> Result<Option<u32>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("pid file {}: {e}", path.display())),
    };
    if try_lock(&file, libc::LOCK_SH)? {
        return Ok(None);
    }
    Ok(read_pid(&mut file))
}

/// `flock(op | LOCK_NB)`: whether the lock was taken.
fn try_lock(file: &File, op: libc::c_int) -> Result<bool, String> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(format!("locking the pid file: {e}")),
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_file_refuses_a_second_holder_and_a_released_one_is_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("wharf.pid");
        std::fs::write(&path, "999999999\n").unwrap();
        // Unlocked: stale, whatever pid it names.
        assert_eq!(running_pid(&path).unwrap(), None);
        let held = PidFile::create(&path).unwrap();
        let me = std::process::id();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{me}\n"));
        assert_eq!(running_pid(&path).unwrap(), Some(me));
        // flock locks belong to open files: a second open in this process conflicts too.
        let e = PidFile::create(&path).unwrap_err();
        assert!(e.contains(&format!("pid {me}")), "{e}");
        held.remove().unwrap();
        assert!(!path.exists());
        assert_eq!(running_pid(&path).unwrap(), None);
    }
}
