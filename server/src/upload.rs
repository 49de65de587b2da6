//! Uploads on local disk: where their bytes live until the commit, how the commit makes
//! them the file (and durable), and how the debris of a crashed run is recognised and
//! removed. See *Durable uploads and crash recovery* in docs/design.md.
//!
//! - **STOR and STOU** write to a file without a name: on Linux an `O_TMPFILE` inode in
//!   the target directory (a crash leaves nothing), else a *temporary name*
//!   (`.wharf-part-` and 16 random hex digits, 28 bytes whatever the final name's
//!   length). Either is locked (`flock`) by the writer for its whole life.
//! - **The commit**, with durability on: `fsync` the file; then link it in (STOR: under
//!   a temporary name, then `rename` over the final name; STOU: straight at the name the
//!   150 reply announced, never replacing anything); then `fsync` the directory. Only
//!   then does the core send `226`.
//! - **APPE and REST+STOR** write in place; the commit `fsync`s the file, then its
//!   directory (the file's name must be durable too, whoever created it: an APPE that
//!   created it may have failed before its own sync).
//! - **The sweep** walks a tree and removes files whose name is a temporary name and
//!   whose lock nobody holds: the lock dies with the process that held it, even under
//!   `kill -9`, so a live upload (of this or another wharf) is never touched.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cap_std::fs::{Dir, MetadataExt, OpenOptions};
use wharf_core::FsError;

/// The prefix of temporary upload names. Names that start with it are hidden from
/// listings and cannot be named by clients.
pub const TEMP_PREFIX: &str = ".wharf-part-";
/// Random hex digits after the prefix.
const TEMP_DIGITS: usize = 16;
/// The longest name a directory entry may have (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;

fn io_err(e: io::Error) -> FsError {
    FsError::from_io(&e)
}

#[cfg(target_os = "linux")]
fn rx(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// A fresh temporary name: the prefix and 16 random hex digits.
pub fn temp_name() -> String {
    let mut b = [0u8; TEMP_DIGITS / 2];
    // Uniqueness is enforced by O_EXCL / link; the randomness only avoids retries.
    let _ = getrandom::fill(&mut b);
    let mut name = String::with_capacity(TEMP_PREFIX.len() + TEMP_DIGITS);
    name.push_str(TEMP_PREFIX);
    for x in b {
        name.push_str(&format!("{x:02x}"));
    }
    name
}

/// Whether `name` is one of ours: the prefix, 16 lowercase hex digits, and either
/// nothing more or (names of wharf before 0.1.1) `-` and the final name.
pub fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(TEMP_PREFIX.as_bytes()) else {
        return false;
    };
    if rest.len() < TEMP_DIGITS {
        return false;
    }
    let (digits, tail) = rest.split_at(TEMP_DIGITS);
    digits
        .iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        && (tail.is_empty() || tail[0] == b'-')
}

/// Names STOU has announced whose uploads are not committed yet, per directory
/// (device, inode), so two uploads of this process never get the same one. Nothing is
/// created on disk for them: a crash leaves no empty file at a final name.
#[derive(Debug, Default)]
pub struct Reservations(Mutex<HashSet<(u64, u64, String)>>);

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<(u64, u64, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A STOU name held in [`Reservations`] until the upload ends.
struct Reserved {
    table: Arc<Reservations>,
    key: (u64, u64, String),
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.table.lock().remove(&self.key);
    }
}

/// `name`, or `name.1`, `name.2`, ... (shortened to fit [`NAME_MAX`]): the first that is
/// neither on disk in `dir` nor reserved by another upload; reserved for this one.
pub fn reserve_unique(
    dir: &Dir,
    name: &str,
    table: &Arc<Reservations>,
) -> Result<(String, ReservedName), FsError> {
    let meta = dir.dir_metadata().map_err(io_err)?;
    let (dev, ino) = (meta.dev(), meta.ino());
    for i in 0..1000u32 {
        let candidate = match i {
            0 => name.to_string(),
            i => {
                let suffix = format!(".{i}");
                let mut cut = name.len().min(NAME_MAX - suffix.len());
                while !name.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}{suffix}", &name[..cut])
            }
        };
        if candidate.len() > NAME_MAX {
            return Err(FsError::BadName);
        }
        // Reserve first, then look on disk: an upload gives its reservation back only
        // once its file is linked, so a name reserved here and free on disk now stays
        // free (for wharf; someone else may still take it, which the commit detects).
        let key = (dev, ino, candidate.clone());
        if !table.lock().insert(key.clone()) {
            continue;
        }
        match dir.symlink_metadata(&candidate) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => {
                table.lock().remove(&key);
                match other {
                    Ok(_) => continue,
                    Err(e) => return Err(io_err(e)),
                }
            }
        }
        let reserved = Reserved {
            table: table.clone(),
            key,
        };
        return Ok((candidate, ReservedName(reserved)));
    }
    Err(FsError::AlreadyExists)
}

/// A reservation made by [`reserve_unique`]; released when it is dropped (the upload
/// ends).
pub struct ReservedName(#[allow(dead_code)] Reserved);

/// Where the upload's bytes go, and what the commit does with them.
pub enum Target {
    /// STOR: the file replaces `final_name` at the commit.
    Replace { final_name: String },
    /// STOU: the file takes `final_name`, which must still be free at the commit.
    Unique {
        final_name: String,
        _reserved: ReservedName,
    },
    /// APPE, REST+STOR: the bytes are written into the file itself.
    InPlace,
}

/// How the file of a STOR/STOU is held until the commit.
enum Temp {
    /// Written in place: no temporary.
    None,
    /// An `O_TMPFILE` inode: no name until the commit links it.
    Anonymous,
    /// A temporary name in the target directory.
    Named(String),
}

/// An upload in progress on local disk (see the module documentation).
pub struct LocalUpload {
    dir: Dir,
    file: std::fs::File,
    temp: Temp,
    target: Target,
    durable: bool,
    /// Committed (nothing to clean up) or cleaned up already.
    finished: bool,
}

impl LocalUpload {
    /// A STOR or STOU upload into `dir` (its target directory).
    pub fn create(dir: Dir, target: Target, durable: bool) -> Result<LocalUpload, FsError> {
        LocalUpload::create_with(dir, target, durable, true)
    }

    /// [`LocalUpload::create`]; `anonymous: false` takes a temporary name even where
    /// `O_TMPFILE` works (what other filesystems get; for tests).
    pub fn create_with(
        dir: Dir,
        target: Target,
        durable: bool,
        anonymous: bool,
    ) -> Result<LocalUpload, FsError> {
        let anonymous = match anonymous {
            true => open_anonymous(&dir)?,
            false => None,
        };
        let (file, temp) = match anonymous {
            Some(file) => (file, Temp::Anonymous),
            None => {
                let (file, name) = open_named(&dir)?;
                (file, Temp::Named(name))
            }
        };
        Ok(LocalUpload {
            dir,
            file,
            temp,
            target,
            durable,
            finished: false,
        })
    }

    /// An APPE or REST+STOR upload writing into `file` in `dir`.
    pub fn in_place(dir: Dir, file: std::fs::File, durable: bool) -> LocalUpload {
        LocalUpload {
            dir,
            file,
            temp: Temp::None,
            target: Target::InPlace,
            durable,
            finished: false,
        }
    }

    /// Whether the bytes live in a nameless `O_TMPFILE` inode (for tests).
    pub fn is_anonymous(&self) -> bool {
        matches!(self.temp, Temp::Anonymous)
    }

    /// The steps of the commit: file `fsync`, link/rename, directory `fsync`.
    fn commit_steps(&mut self) -> Result<(), FsError> {
        self.file.flush().map_err(io_err)?;
        if self.durable {
            self.file.sync_all().map_err(io_err)?;
        }
        let temp = std::mem::replace(&mut self.temp, Temp::None);
        match (&self.target, temp) {
            (Target::InPlace, _) => {
                if self.durable {
                    sync_dir(&self.dir)?;
                }
                return Ok(());
            }
            (Target::Replace { final_name }, Temp::Anonymous) => {
                // link() cannot replace a name: link under a temporary one, then rename
                // it over the final name (a crash in between leaves a temporary name
                // whose lock has died with us: the sweep's).
                let temp = link_anonymous_as_temp(&self.file, &self.dir)?;
                rename_or_unlink(&self.dir, &temp, final_name)?;
            }
            (Target::Replace { final_name }, Temp::Named(temp)) => {
                rename_or_unlink(&self.dir, &temp, final_name)?;
            }
            (Target::Unique { final_name, .. }, Temp::Anonymous) => {
                link_anonymous(&self.file, &self.dir, final_name).map_err(|e| {
                    match e.kind() {
                        // Someone outside wharf took the announced name meanwhile.
                        io::ErrorKind::AlreadyExists => FsError::AlreadyExists,
                        _ => io_err(e),
                    }
                })?;
            }
            (Target::Unique { final_name, .. }, Temp::Named(temp)) => {
                let r = rename_noreplace(&self.dir, &temp, final_name);
                if let Err(e) = r {
                    let _ = self.dir.remove_file(&temp);
                    return Err(io_err(e));
                }
            }
            (_, Temp::None) => return Err(FsError::Io("upload already closed".into())),
        }
        if self.durable {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Write for LocalUpload {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl wharf_core::backend::Upload for LocalUpload {
    fn commit(mut self: Box<Self>) -> Result<(), FsError> {
        let r = self.commit_steps();
        if r.is_ok() {
            self.finished = true;
        }
        r
    }

    fn discard(self: Box<Self>) {
        // Drop removes what an uncommitted upload left.
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Temp::Named(temp) = &self.temp {
            let _ = self.dir.remove_file(temp);
        }
        // An anonymous inode goes with its descriptor; a reservation with `target`.
        // What a failed in-place upload wrote stays, and its failure reply describes
        // it: as durable as a success would be (a client resumes from its size).
        if let (Target::InPlace, true) = (&self.target, self.durable) {
            let _ = self.file.sync_all();
            let _ = sync_dir(&self.dir);
        }
    }
}

/// `fsync` of a directory: its entries (a new, renamed or removed name) are on disk.
pub fn sync_dir(dir: &Dir) -> Result<(), FsError> {
    #[cfg(target_os = "linux")]
    {
        // cap-std holds directories as `O_PATH` descriptors, which cannot be synced:
        // open the directory itself for that.
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(dir, ".", flags, Mode::empty()).map_err(|e| io_err(rx(e)))?;
        rustix::fs::fsync(&fd).map_err(|e| io_err(rx(e)))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Renames `temp` over `name` in `dir`; on failure removes `temp`.
fn rename_or_unlink(dir: &Dir, temp: &str, name: &str) -> Result<(), FsError> {
    if let Err(e) = dir.rename(temp, dir, name) {
        let _ = dir.remove_file(temp);
        return Err(io_err(e));
    }
    Ok(())
}

/// Whether `O_TMPFILE` files can be given a name: through `/proc/self/fd` (the way
/// open(2) documents; `AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH`). Checked once.
/// `WHARF_NO_O_TMPFILE=1` in the environment says no, so that uploads take temporary
/// names as on a filesystem without `O_TMPFILE` (a diagnostic switch, which the crash
/// tests use to exercise the sweep).
#[cfg(target_os = "linux")]
fn can_link_anonymous() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let off = std::env::var_os("WHARF_NO_O_TMPFILE").filter(|v| !v.is_empty() && v != "0");
        off.is_none() && Path::new("/proc/self/fd").is_dir()
    })
}

/// An unnamed, locked file in `dir`; `None` where the filesystem (or the system) has
/// no `O_TMPFILE`.
#[cfg(target_os = "linux")]
fn open_anonymous(dir: &Dir) -> Result<Option<std::fs::File>, FsError> {
    use rustix::fs::{Mode, OFlags};
    use rustix::io::Errno;
    if !can_link_anonymous() {
        return Ok(None);
    }
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(0o666)) {
        Ok(fd) => {
            let file = std::fs::File::from(fd);
            lock(&file);
            Ok(Some(file))
        }
        // No O_TMPFILE here: the filesystem, or an old kernel.
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err(rx(e))),
    }
}

#[cfg(not(target_os = "linux"))]
fn open_anonymous(_: &Dir) -> Result<Option<std::fs::File>, FsError> {
    Ok(None)
}

/// A new file under a fresh temporary name in `dir`, locked, and checked to still be
/// the file under that name once locked (a sweep may have taken the name in between).
fn open_named(dir: &Dir) -> Result<(std::fs::File, String), FsError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    for _ in 0..8 {
        let name = temp_name();
        let file = match dir.open_with(&name, &opts) {
            Ok(f) => f.into_std(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(e)),
        };
        lock(&file);
        let mine = file.metadata().map_err(io_err)?;
        let named = dir.symlink_metadata(&name);
        if named.is_ok_and(|m| m.ino() == std::os::unix::fs::MetadataExt::ino(&mine)) {
            return Ok((file, name));
        }
    }
    Err(FsError::Io("no free temporary name".into()))
}

/// Takes the writer's lock on an upload file (best effort: a filesystem without locks
/// only loses the sweep's protection of live uploads there).
fn lock(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::FlockOperation;
        let _ = rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Links an `O_TMPFILE` file into `dir` as `name` (fails if `name` exists).
#[cfg(target_os = "linux")]
fn link_anonymous(file: &std::fs::File, dir: &Dir, name: &str) -> io::Result<()> {
    use rustix::fs::AtFlags;
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    rustix::fs::linkat(
        rustix::fs::CWD,
        proc_path.as_str(),
        dir,
        name,
        AtFlags::SYMLINK_FOLLOW,
    )
    .map_err(rx)
}

#[cfg(not(target_os = "linux"))]
fn link_anonymous(_: &std::fs::File, _: &Dir, _: &str) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Links an `O_TMPFILE` file into `dir` under a fresh temporary name.
fn link_anonymous_as_temp(file: &std::fs::File, dir: &Dir) -> Result<String, FsError> {
    for _ in 0..8 {
        let temp = temp_name();
        match link_anonymous(file, dir, &temp) {
            Ok(()) => return Ok(temp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(FsError::Io("no free temporary name".into()))
}

/// Renames `from` to `to` in `dir` only if `to` does not exist
/// (`renameat2(RENAME_NOREPLACE)`, else link and unlink, which is as atomic).
fn rename_noreplace(dir: &Dir, from: &str, to: &str) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::RenameFlags;
        match rustix::fs::renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(rx(e)),
        }
    }
    dir.hard_link(from, dir, to)?;
    dir.remove_file(from)
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Temporary files removed (left by a run that ended without cleaning up).
    pub removed: usize,
    /// Temporary files kept because a live upload holds them.
    pub live: usize,
    /// Directories that could not be read.
    pub unreadable: usize,
}

impl std::ops::AddAssign for Swept {
    fn add_assign(&mut self, o: Swept) {
        self.removed += o.removed;
        self.live += o.live;
        self.unreadable += o.unreadable;
    }
}

/// Removes, below `root`, every file that is ours ([`is_temp_name`]) and that no
/// process holds locked. Symlinks are never followed; directories are opened by path
/// from `root`, so a deep tree costs no descriptor per level.
pub fn sweep(root: &Dir) -> Swept {
    let mut out = Swept::default();
    let mut todo: Vec<PathBuf> = vec![PathBuf::from(".")];
    while let Some(rel) = todo.pop() {
        let dir = open_dir_nofollow(root, &rel);
        let Ok(dir) = dir else {
            out.unreadable += 1;
            continue;
        };
        let Ok(entries) = dir.entries() else {
            out.unreadable += 1;
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            if kind.is_dir() {
                todo.push(rel.join(&name));
            } else if kind.is_file() && is_temp_name(name.as_encoded_bytes()) {
                match remove_if_unlocked(&dir, Path::new(&name)) {
                    Some(true) => out.removed += 1,
                    Some(false) => out.live += 1,
                    None => {}
                }
            }
        }
    }
    out
}

/// The directory `rel` below `root`, opened one component at a time without following
/// a symlink (a link swapped in for a directory must not make the walk loop).
fn open_dir_nofollow(root: &Dir, rel: &Path) -> io::Result<Dir> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Mode, OFlags};
        use std::path::Component;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut at: Option<std::os::fd::OwnedFd> = None;
        for part in rel.components() {
            let Component::Normal(name) = part else {
                continue;
            };
            let next = match &at {
                None => rustix::fs::openat(root, name, flags, Mode::empty()),
                Some(fd) => rustix::fs::openat(fd, name, flags, Mode::empty()),
            };
            at = Some(next.map_err(rx)?);
        }
        match at {
            None => root.try_clone(),
            Some(fd) => Ok(Dir::from_std_file(std::fs::File::from(fd))),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        match rel.as_os_str() == "." {
            true => root.try_clone(),
            false => root.open_dir(rel),
        }
    }
}

/// `Some(true)`: removed; `Some(false)`: a live upload holds it; `None`: gone already, or
/// it could not be judged (no locks on this filesystem: kept).
fn remove_if_unlocked(dir: &Dir, name: &Path) -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).ok()?;
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => return Some(false),
            Err(_) => return None,
        }
        // Still the file we locked? (Names are random: only a sweep of another process
        // could have removed it meanwhile.)
        let held = rustix::fs::fstat(&fd).ok()?;
        let named = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if (held.st_dev, held.st_ino) != (named.st_dev, named.st_ino) {
            return None;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::empty()).ok()?;
        Some(true)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (dir, name);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_short_fixed_and_recognised() {
        let a = temp_name();
        assert_eq!(a.len(), TEMP_PREFIX.len() + TEMP_DIGITS);
        assert!(is_temp_name(a.as_bytes()));
        assert_ne!(a, temp_name());
        assert!(is_temp_name(b".wharf-part-0123456789abcdef-report.pdf"));
        for not in [
            &b".wharf-part-"[..],
            b".wharf-part-0123456789abcde",
            b".wharf-part-0123456789ABCDEF",
            b".wharf-part-0123456789abcdefx",
            b".wharf-part-x123456789abcdef",
            b"wharf-part-0123456789abcdef",
            b"report.pdf",
        ] {
            assert!(!is_temp_name(not), "{:?}", String::from_utf8_lossy(not));
        }
    }
}
