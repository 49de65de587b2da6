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
//! Uploads that replace a file (STOR, STOU) write to a hidden temporary name in the same
//! directory and are renamed over the final name on [`Upload::commit`], so a reader never
//! sees half a file and a failed upload leaves the old one. Temporary names are hidden
//! from listings and cannot be named by clients. Appends and restarts write in place.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use cap_std::ambient_authority;
use cap_std::fs::{Dir, File, MetadataExt, OpenOptions};
use wharf_core::backend::{Download, Upload};
use wharf_core::{DirEntry, FileKind, FsError, Metadata, Storage, VPath, WriteMode};

#[cfg(target_os = "linux")]
use crate::listdir;

/// The prefix of in-progress upload files.
pub const TEMP_PREFIX: &str = ".wharf-part-";

/// Directories on disk served as storage: one root at `/`, or several mounts.
#[derive(Debug)]
pub struct LocalFs {
    /// `(name, dir)`: the storage path `/name/rest` is `rest` below `dir`. The empty
    /// name is the single root mounted at `/`.
    mounts: Vec<(String, Dir)>,
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
            mounts: vec![(String::new(), root)],
        })
    }

    /// Opens each directory as a mount: `/name/...` in the storage is below it. Names
    /// are single path segments and unique; nothing is served at `/` itself.
    pub fn with_mounts(mounts: &[(String, &Path)]) -> io::Result<LocalFs> {
        let mut out: Vec<(String, Dir)> = Vec::with_capacity(mounts.len());
        for (name, path) in mounts {
            if VPath::root().child(name).is_none() || out.iter().any(|(n, _)| n == name) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad or duplicate mount name {name:?}"),
                ));
            }
            let dir = Dir::open_ambient_dir(path, ambient_authority())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            out.push((name.clone(), dir));
        }
        Ok(LocalFs { mounts: out })
    }

    /// The mounted directory `path` is in, and the path below it.
    fn locate(&self, path: &VPath) -> Result<(&Dir, VPath), FsError> {
        if let [(name, dir)] = self.mounts.as_slice() {
            if name.is_empty() {
                return Ok((dir, path.clone()));
            }
        }
        let first = path.segments().next().ok_or(FsError::NotFound)?;
        let (_, dir) = self
            .mounts
            .iter()
            .find(|(name, _)| name == first)
            .ok_or(FsError::NotFound)?;
        Ok((dir, path.without_first()))
    }

    /// The directory holding `path` (opened through its mount) and the last name.
    fn parent_of(&self, path: &VPath) -> Result<(Dir, String), FsError> {
        let (root, path) = self.locate(path)?;
        let name = path.file_name().ok_or(FsError::IsADirectory)?;
        if name.starts_with(TEMP_PREFIX) {
            return Err(FsError::BadName);
        }
        let parent = path.parent().unwrap_or_else(VPath::root);
        let dir = root.open_dir(rel(&parent)?).map_err(io_err)?;
        Ok((dir, name.to_string()))
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
        let (root, path) = self.locate(path)?;
        root.metadata(rel(&path)?)
            .map(|m| convert(&m))
            .map_err(io_err)
    }

    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError> {
        let (root, path) = self.locate(path)?;
        let mut out = LocalFs::entries(root, rel(&path)?)?;
        // Names in a directory are unique: an unstable sort gives the one order, with
        // no scratch buffer.
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        let (root, path) = self.locate(path)?;
        let mut f = root.open(rel(&path)?).map_err(io_err)?;
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
        let (dir, name) = self.parent_of(path)?;
        match mode {
            WriteMode::Replace => {
                refuse_dir(&dir, &name)?;
                let up = LocalUpload::temp(dir, name, false)?;
                Ok((Box::new(up), path.clone()))
            }
            WriteMode::Unique => {
                let chosen = reserve_unique(&dir, &name)?;
                let final_path = path
                    .parent()
                    .unwrap_or_else(VPath::root)
                    .resolve(&chosen)
                    .map_err(|_| FsError::BadName)?;
                let up = LocalUpload::temp(dir, chosen, true)?;
                Ok((Box::new(up), final_path))
            }
            WriteMode::Append => {
                let mut opts = OpenOptions::new();
                opts.create(true).append(true);
                let f = dir.open_with(&name, &opts).map_err(io_err)?;
                Ok((Box::new(LocalUpload::in_place(dir, f)), path.clone()))
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
                Ok((Box::new(LocalUpload::in_place(dir, f)), path.clone()))
            }
        }
    }

    fn make_dir(&self, path: &VPath) -> Result<(), FsError> {
        let (dir, name) = self.parent_of(path)?;
        dir.create_dir(name).map_err(io_err)
    }

    fn remove_dir(&self, path: &VPath) -> Result<(), FsError> {
        let (dir, name) = self.parent_of(path)?;
        dir.remove_dir(name).map_err(io_err)
    }

    fn remove_file(&self, path: &VPath) -> Result<(), FsError> {
        let (dir, name) = self.parent_of(path)?;
        dir.remove_file(name).map_err(io_err)
    }

    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        let (fdir, fname) = self.parent_of(from)?;
        let (tdir, tname) = self.parent_of(to)?;
        fdir.rename(fname, &tdir, tname).map_err(io_err)
    }

    /// `renameat2(RENAME_NOREPLACE)` between the two parent directories (opened through
    /// the root, so no component can lead out; the last names are single segments), so
    /// no racing writer can slip a file in between a check and the rename. Filesystems
    /// without it fall back to check-then-rename.
    fn rename_noreplace(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        let (fdir, fname) = self.parent_of(from)?;
        let (tdir, tname) = self.parent_of(to)?;
        match renameat2_noreplace(&fdir, &fname, &tdir, &tname) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) => {
                if tdir.symlink_metadata(&tname).is_ok() {
                    fdir.symlink_metadata(&fname).map_err(io_err)?;
                    return Err(FsError::AlreadyExists);
                }
                fdir.rename(&fname, &tdir, &tname).map_err(io_err)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    fn set_modified(&self, path: &VPath, modified: SystemTime) -> Result<(), FsError> {
        let (root, path) = self.locate(path)?;
        let f = root.open(rel(&path)?).map_err(io_err)?;
        f.into_std().set_modified(modified).map_err(io_err)
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

fn random_hex() -> String {
    let mut b = [0u8; 8];
    // Uniqueness is also enforced by create_new; the randomness only avoids retries.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Creates an empty file under the first free name of `name`, `name.1`, `name.2`, ...
fn reserve_unique(dir: &Dir, name: &str) -> Result<String, FsError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    for i in 0..1000 {
        let candidate = if i == 0 {
            name.to_string()
        } else {
            format!("{name}.{i}")
        };
        match dir.open_with(&candidate, &opts) {
            Ok(_) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    Err(FsError::AlreadyExists)
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

/// An upload. With a `temp` name it becomes `final_name` on commit; without one it
/// writes in place and commit has nothing to do.
struct LocalUpload {
    dir: Dir,
    file: File,
    temp: Option<String>,
    final_name: String,
    /// STOU reserved `final_name` as an empty file; discarding removes it too.
    reserved: bool,
}

impl LocalUpload {
    fn temp(dir: Dir, final_name: String, reserved: bool) -> Result<LocalUpload, FsError> {
        let temp = format!("{TEMP_PREFIX}{}-{final_name}", random_hex());
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        let file = match dir.open_with(&temp, &opts) {
            Ok(f) => f,
            Err(e) => {
                if reserved {
                    let _ = dir.remove_file(&final_name);
                }
                return Err(io_err(e));
            }
        };
        Ok(LocalUpload {
            dir,
            file,
            temp: Some(temp),
            final_name,
            reserved,
        })
    }

    fn in_place(dir: Dir, file: File) -> LocalUpload {
        LocalUpload {
            dir,
            file,
            temp: None,
            final_name: String::new(),
            reserved: false,
        }
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

impl Upload for LocalUpload {
    fn commit(mut self: Box<Self>) -> Result<(), FsError> {
        self.file.flush().map_err(io_err)?;
        if let Some(temp) = self.temp.take() {
            let r = self.dir.rename(&temp, &self.dir, &self.final_name);
            if let Err(e) = r {
                let _ = self.dir.remove_file(&temp);
                return Err(io_err(e));
            }
        }
        self.reserved = false;
        Ok(())
    }

    fn discard(self: Box<Self>) {
        // Drop removes what an uncommitted upload left.
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = self.dir.remove_file(temp);
        }
        if self.reserved {
            let _ = self.dir.remove_file(&self.final_name);
        }
    }
}

#[cfg(test)]
#[path = "localfs_tests.rs"]
mod tests;
