//! [`LocalFs`]: the site root on local disk, as a [`wharf_core::Storage`].
//!
//! Every operation goes through a `cap_std::fs::Dir` opened on the root, which resolves
//! paths itself and refuses anything that would leave the root: `..`, absolute paths,
//! and symlinks pointing outside — including one created after the server started.
//! Symlinks that stay inside the root are followed.
//!
//! A `LocalFs` can also serve several directories, each mounted at a top-level name of
//! the storage namespace (`/site0`, `/site0.vdir0`, ...): every site root and global
//! virtual directory of a multi-site server is one mount, sandboxed the same way.
//!
//! Uploads that replace a file (STOR, STOU) write to a file without a name (`O_TMPFILE`)
//! or under a hidden temporary name in the same directory, and become the final name on
//! [`Upload::commit`], so a reader never sees half a file and a failed upload leaves the
//! old one; appends and restarts write in place (see [`crate::upload`]). With durability
//! on (each mount's `durable_writes`, the default), every change is on disk before the
//! call that made it returns: uploads at their commit, MKD, RMD, DELE, RNTO and MFMT
//! before their reply. Temporary names are hidden from listings and cannot be named by
//! clients; [`LocalFs::sweep`] removes the ones a crashed run left.

use std::io::{self, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, MetadataExt, OpenOptions};
use wharf_core::backend::{Download, Upload};
use wharf_core::{DirEntry, FileKind, FsError, Metadata, Storage, VPath, WriteMode};

#[cfg(target_os = "linux")]
use crate::listdir;
use crate::upload::{self, LocalUpload, Reservations, Target};

pub use crate::upload::{Swept, TEMP_PREFIX};

/// Directories on disk served as storage: one root at `/`, or several mounts.
#[derive(Debug)]
pub struct LocalFs {
    mounts: Vec<Mount>,
    /// STOU names announced but not yet committed.
    reserved: Arc<Reservations>,
}

/// One served directory: the storage path `/name/rest` is `rest` below `dir`. The empty
/// name is the single root mounted at `/`.
#[derive(Debug)]
struct Mount {
    name: String,
    dir: Dir,
    /// `fsync` before a change is acknowledged (`durable_writes`).
    durable: AtomicBool,
}

/// A directory opened through a mount, with that mount's durability.
struct Parent {
    dir: Dir,
    name: String,
    durable: bool,
}

impl Parent {
    /// The directory's entries are on disk, when the mount asks for it.
    fn sync(&self) -> Result<(), FsError> {
        match self.durable {
            true => upload::sync_dir(&self.dir),
            false => Ok(()),
        }
    }
}

fn io_err(e: io::Error) -> FsError {
    FsError::from_io(&e)
}

/// The path below the root, as cap-std wants it (`.` for the root itself). Names of
/// in-progress uploads are refused as if they did not exist.
fn rel(path: &VPath) -> Result<&Path, FsError> {
    if path.segments().any(|s| s.starts_with(TEMP_PREFIX)) {
        return Err(FsError::NotFound);
    }
    Ok(Path::new(if path.is_root() {
        "."
    } else {
        path.relative()
    }))
}

fn convert(m: &cap_std::fs::Metadata) -> Metadata {
    let kind = if m.is_dir() {
        FileKind::Dir
    } else if m.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::File
    };
    Metadata {
        kind,
        size: m.len(),
        modified: m.modified().ok().map(|t| t.into_std()),
        mode: m.mode() & 0o7777,
        unique: Some((m.dev(), m.ino())),
        nlink: m.nlink(),
    }
}

impl LocalFs {
    /// Opens `root` (which must be a directory) as the whole storage, at `/`.
    pub fn open(root: &Path) -> io::Result<LocalFs> {
        let root = Dir::open_ambient_dir(root, ambient_authority())?;
        Ok(LocalFs {
            mounts: vec![Mount {
                name: String::new(),
                dir: root,
                durable: AtomicBool::new(true),
            }],
            reserved: Arc::default(),
        })
    }

    /// Opens each directory as a mount: `/name/...` in the storage is below it. Names
    /// are single path segments and unique; nothing is served at `/` itself.
    pub fn with_mounts(mounts: &[(String, &Path)]) -> io::Result<LocalFs> {
        let mut out: Vec<Mount> = Vec::with_capacity(mounts.len());
        for (name, path) in mounts {
            if VPath::root().child(name).is_none() || out.iter().any(|m| m.name == *name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad or duplicate mount name {name:?}"),
                ));
            }
            let dir = Dir::open_ambient_dir(path, ambient_authority())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            out.push(Mount {
                name: name.clone(),
                dir,
                durable: AtomicBool::new(true),
            });
        }
        Ok(LocalFs {
            mounts: out,
            reserved: Arc::default(),
        })
    }

    /// Turns durability on or off for the mount `name` (`""`: the single root), as the
    /// site's `durable_writes` says; false when there is no such mount. On by default.
    pub fn set_durable(&self, name: &str, durable: bool) -> bool {
        match self.mounts.iter().find(|m| m.name == name) {
            Some(m) => {
                m.durable.store(durable, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Removes the temporary upload files a previous run left in every mount (a crash,
    /// `kill -9`, a power cut), and only those: names that are ours, held by no live
    /// upload. Walks every directory; run it off the serving path
    /// ([`LocalFs::sweep_in_background`]).
    pub fn sweep(&self) -> Swept {
        let mut total = Swept::default();
        for m in &self.mounts {
            total += upload::sweep(&m.dir);
        }
        total
    }

    /// [`LocalFs::sweep`] on a thread of its own, logging what it removed; `None` when
    /// no thread could be started (then nothing is swept until the next start or reload).
    pub fn sweep_in_background(self: &Arc<Self>) -> Option<std::thread::JoinHandle<Swept>> {
        let fs = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wharf-sweep".into())
            .spawn(move || {
                let t = std::time::Instant::now();
                let swept = fs.sweep();
                if swept.removed > 0 || swept.unreadable > 0 {
                    tracing::info!(
                        removed = swept.removed,
                        live = swept.live,
                        unreadable = swept.unreadable,
                        secs = t.elapsed().as_secs_f64(),
                        "removed temporary upload files left by an earlier run"
                    );
                }
                swept
            });
        match spawned {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "no thread for the sweep of temporary upload files");
                None
            }
        }
    }

    /// The mount `path` is in, and the path below it.
    fn locate(&self, path: &VPath) -> Result<(&Mount, VPath), FsError> {
        if let [m] = self.mounts.as_slice() {
            if m.name.is_empty() {
                return Ok((m, path.clone()));
            }
        }
        let first = path.segments().next().ok_or(FsError::NotFound)?;
        let m = self
            .mounts
            .iter()
            .find(|m| m.name == first)
            .ok_or(FsError::NotFound)?;
        Ok((m, path.without_first()))
    }

    /// The directory holding `path` (opened through its mount) and the last name.
    fn parent_of(&self, path: &VPath) -> Result<Parent, FsError> {
        let (mount, path) = self.locate(path)?;
        let name = path.file_name().ok_or(FsError::IsADirectory)?;
        // Longer names cannot exist; refused here, an upload would learn it only at
        // its commit (its bytes have no name until then).
        if name.starts_with(TEMP_PREFIX) || name.len() > upload::NAME_MAX {
            return Err(FsError::BadName);
        }
        let parent = path.parent().unwrap_or_else(VPath::root);
        let dir = mount.dir.open_dir(rel(&parent)?).map_err(io_err)?;
        Ok(Parent {
            dir,
            name: name.to_string(),
            durable: mount.durable.load(Ordering::Relaxed),
        })
    }

    fn entry(root: &Dir, dir: &Path, name: String, meta: Metadata) -> DirEntry {
        // A symlink that stays inside the root is listed as what it points to; one that
        // leads out (or dangles) is listed as a link and cannot be opened.
        let meta = if meta.kind == FileKind::Symlink {
            match root.metadata(dir.join(&name)) {
                Ok(target) => convert(&target),
                Err(_) => meta,
            }
        } else {
            meta
        };
        DirEntry { name, meta }
    }

    /// The entries of `dir` (below `root`) but in-progress uploads, unsorted.
    #[cfg(target_os = "linux")]
    fn entries(root: &Dir, dir: &Path) -> Result<Vec<DirEntry>, FsError> {
        let opened = root.open_dir(dir).map_err(io_err)?;
        let skip = |name: &[u8]| name.starts_with(TEMP_PREFIX.as_bytes());
        let listed = listdir::list(opened, skip).map_err(io_err)?;
        Ok(listed
            .into_iter()
            .map(|(name, meta)| LocalFs::entry(root, dir, name, meta))
            .collect())
    }

    #[cfg(not(target_os = "linux"))]
    fn entries(root: &Dir, dir: &Path) -> Result<Vec<DirEntry>, FsError> {
        let mut out = Vec::new();
        for e in root.read_dir(dir).map_err(io_err)? {
            let e = e.map_err(io_err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            out.push(LocalFs::entry(root, dir, name, convert(&m)));
        }
        Ok(out)
    }
}

impl Storage for LocalFs {
    fn stat(&self, path: &VPath) -> Result<Metadata, FsError> {
        let (mount, path) = self.locate(path)?;
        mount
            .dir
            .metadata(rel(&path)?)
            .map(|m| convert(&m))
            .map_err(io_err)
    }

    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError> {
        let (mount, path) = self.locate(path)?;
        let mut out = LocalFs::entries(&mount.dir, rel(&path)?)?;
        // Names in a directory are unique: an unstable sort gives the one order, with
        // no scratch buffer.
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        let (mount, path) = self.locate(path)?;
        let mut f = mount.dir.open(rel(&path)?).map_err(io_err)?;
        let m = f.metadata().map_err(io_err)?;
        if m.is_dir() {
            return Err(FsError::IsADirectory);
        }
        if offset > 0 {
            f.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        }
        Ok((Box::new(LocalDownload(f.into_std())), m.len()))
    }

    fn open_write(
        &self,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<(Box<dyn Upload>, VPath), FsError> {
        let Parent { dir, name, durable } = self.parent_of(path)?;
        match mode {
            WriteMode::Replace => {
                refuse_dir(&dir, &name)?;
                let target = Target::Replace { final_name: name };
                let up = LocalUpload::create(dir, target, durable)?;
                Ok((Box::new(up), path.clone()))
            }
            WriteMode::Unique => {
                // The name is announced in the 150 reply, but nothing is created under
                // it before the commit: a crash leaves no empty file at a final name.
                let (chosen, reserved) = upload::reserve_unique(&dir, &name, &self.reserved)?;
                let final_path = path
                    .parent()
                    .unwrap_or_else(VPath::root)
                    .resolve(&chosen)
                    .map_err(|_| FsError::BadName)?;
                let target = Target::Unique {
                    final_name: chosen,
                    _reserved: reserved,
                };
                let up = LocalUpload::create(dir, target, durable)?;
                Ok((Box::new(up), final_path))
            }
            WriteMode::Append => {
                let mut opts = OpenOptions::new();
                opts.create(true).append(true);
                let f = dir.open_with(&name, &opts).map_err(io_err)?;
                let up = LocalUpload::in_place(dir, f.into_std(), durable);
                Ok((Box::new(up), path.clone()))
            }
            WriteMode::At(off) => {
                // As in MemStorage: a resumed upload needs the file, and an offset no
                // further than its end. Seeking past the end would leave a hole (REST
                // 1000000000000 + STOR made a terabyte sparse file), and creating a
                // missing file would leave an empty one behind the refusal.
                let beyond = || FsError::Io("offset beyond end".into());
                let mut opts = OpenOptions::new();
                opts.write(true);
                let mut f = dir.open_with(&name, &opts).map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => beyond(),
                    _ => io_err(e),
                })?;
                if f.metadata().map_err(io_err)?.len() < off {
                    return Err(beyond());
                }
                f.seek(SeekFrom::Start(off)).map_err(io_err)?;
                let up = LocalUpload::in_place(dir, f.into_std(), durable);
                Ok((Box::new(up), path.clone()))
            }
        }
    }

    fn make_dir(&self, path: &VPath) -> Result<(), FsError> {
        let p = self.parent_of(path)?;
        p.dir.create_dir(&p.name).map_err(io_err)?;
        p.sync()
    }

    fn remove_dir(&self, path: &VPath) -> Result<(), FsError> {
        let p = self.parent_of(path)?;
        p.dir.remove_dir(&p.name).map_err(io_err)?;
        p.sync()
    }

    fn remove_file(&self, path: &VPath) -> Result<(), FsError> {
        let p = self.parent_of(path)?;
        p.dir.remove_file(&p.name).map_err(io_err)?;
        p.sync()
    }

    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        let (f, t) = (self.parent_of(from)?, self.parent_of(to)?);
        f.dir.rename(&f.name, &t.dir, &t.name).map_err(io_err)?;
        sync_both(&f, &t)
    }

    /// `renameat2(RENAME_NOREPLACE)` between the two parent directories (opened through
    /// the root, so no component can lead out; the last names are single segments), so
    /// no racing writer can slip a file in between a check and the rename. Filesystems
    /// without it fall back to check-then-rename.
    fn rename_noreplace(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        let (f, t) = (self.parent_of(from)?, self.parent_of(to)?);
        match renameat2_noreplace(&f.dir, &f.name, &t.dir, &t.name) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                if t.dir.symlink_metadata(&t.name).is_ok() {
                    f.dir.symlink_metadata(&f.name).map_err(io_err)?;
                    return Err(FsError::AlreadyExists);
                }
                f.dir.rename(&f.name, &t.dir, &t.name).map_err(io_err)?;
            }
            Err(e) => return Err(io_err(e)),
        }
        sync_both(&f, &t)
    }

    fn set_modified(&self, path: &VPath, modified: SystemTime) -> Result<(), FsError> {
        let (mount, path) = self.locate(path)?;
        let f = mount.dir.open(rel(&path)?).map_err(io_err)?.into_std();
        f.set_modified(modified).map_err(io_err)?;
        if mount.durable.load(Ordering::Relaxed) {
            f.sync_all().map_err(io_err)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn renameat2_noreplace(fdir: &Dir, fname: &str, tdir: &Dir, tname: &str) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    let bad = |_| io::Error::from(io::ErrorKind::InvalidInput);
    let (f, t) = (
        CString::new(fname).map_err(bad)?,
        CString::new(tname).map_err(bad)?,
    );
    // SAFETY: both descriptors are open directories borrowed for the call, and both
    // names are NUL-terminated strings that outlive it.
    let r = unsafe {
        libc::renameat2(
            fdir.as_raw_fd(),
            f.as_ptr(),
            tdir.as_raw_fd(),
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn renameat2_noreplace(_: &Dir, _: &str, _: &Dir, _: &str) -> io::Result<()> {
    Err(io::Error::from_raw_os_error(libc::ENOSYS))
}

fn refuse_dir(dir: &Dir, name: &str) -> Result<(), FsError> {
    match dir.symlink_metadata(name) {
        Ok(m) if m.is_dir() => Err(FsError::IsADirectory),
        _ => Ok(()),
    }
}

/// After a rename: both directories' entries on disk (one `fsync` when they are the
/// same directory).
fn sync_both(from: &Parent, to: &Parent) -> Result<(), FsError> {
    if !from.durable && !to.durable {
        return Ok(());
    }
    let same = match (from.dir.dir_metadata(), to.dir.dir_metadata()) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    upload::sync_dir(&to.dir)?;
    if !same {
        upload::sync_dir(&from.dir)?;
    }
    Ok(())
}

struct LocalDownload(std::fs::File);

impl io::Read for LocalDownload {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Download for LocalDownload {
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.0.as_raw_fd())
    }
}

#[cfg(test)]
#[path = "localfs_tests.rs"]
mod tests;
