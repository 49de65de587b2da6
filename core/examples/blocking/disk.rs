//! The example's storage: a directory on disk through `std::fs`. This is the embedder's
//! part (any `wharf_core::Storage` will do), not the runtime's; wharf-server's LocalFs is
//! the production one (sandboxed, uploads under a temporary name until committed).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use wharf_core::backend::{Download, Upload};
use wharf_core::{DirEntry, FileKind, FsError, Metadata, Storage, VPath, WriteMode};

pub struct Disk(pub PathBuf);

fn fs<T>(r: io::Result<T>) -> Result<T, FsError> {
    r.map_err(|e| FsError::from_io(&e))
}

fn meta(m: fs::Metadata) -> Metadata {
    use std::os::unix::fs::MetadataExt;
    let kind = [FileKind::File, FileKind::Dir][usize::from(m.is_dir())];
    let (size, modified, mode) = (m.len(), m.modified().ok(), m.mode() & 0o7777);
    Metadata {
        kind,
        size,
        modified,
        mode,
        unique: Some((m.dev(), m.ino())),
        nlink: m.nlink(),
    }
}

struct Down(File);
impl Read for Down {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.0.read(b)
    }
}
impl Download for Down {
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(&self.0))
    }
}

/// An upload, written in place: a failed one leaves what arrived (a real storage writes
/// a temporary file and renames it on commit; see wharf-server's LocalFs).
struct Up(File);
impl Write for Up {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
impl Upload for Up {
    fn commit(self: Box<Self>) -> Result<(), FsError> {
        fs(self.0.sync_all())
    }
    fn discard(self: Box<Self>) {}
}

impl Storage for Disk {
    fn stat(&self, p: &VPath) -> Result<Metadata, FsError> {
        fs(fs::metadata(self.0.join(p.relative()))).map(meta)
    }
    fn read_dir(&self, p: &VPath) -> Result<Vec<DirEntry>, FsError> {
        let entries = fs(fs::read_dir(self.0.join(p.relative())))?;
        let entry = |e: fs::DirEntry| {
            let name = e.file_name().to_string_lossy().into_owned();
            Ok(DirEntry {
                name,
                meta: meta(fs(e.metadata())?),
            })
        };
        entries.map(|e| fs(e).and_then(entry)).collect()
    }
    fn open_read(&self, p: &VPath, at: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        let mut f = fs(File::open(self.0.join(p.relative())))?;
        let size = fs(f.metadata())?.len();
        fs(f.seek(io::SeekFrom::Start(at.min(size))))?;
        Ok((Box::new(Down(f)), size))
    }
    fn open_write(&self, p: &VPath, mode: WriteMode) -> Result<(Box<dyn Upload>, VPath), FsError> {
        let mut o = OpenOptions::new();
        let f = match mode {
            WriteMode::Replace => o.write(true).create(true).truncate(true),
            WriteMode::Unique => o.write(true).create_new(true),
            WriteMode::Append | WriteMode::At(_) => o.write(true).create(true),
        };
        let mut f = fs(f.open(self.0.join(p.relative())))?;
        let at = match mode {
            WriteMode::Append => fs(f.seek(io::SeekFrom::End(0)))?,
            WriteMode::At(n) => n.min(fs(f.metadata())?.len()),
            _ => 0,
        };
        fs(f.seek(io::SeekFrom::Start(at)))?;
        Ok((Box::new(Up(f)), p.clone()))
    }
    fn make_dir(&self, p: &VPath) -> Result<(), FsError> {
        fs(fs::create_dir(self.0.join(p.relative())))
    }
    fn remove_dir(&self, p: &VPath) -> Result<(), FsError> {
        fs(fs::remove_dir(self.0.join(p.relative())))
    }
    fn remove_file(&self, p: &VPath) -> Result<(), FsError> {
        fs(fs::remove_file(self.0.join(p.relative())))
    }
    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        fs(fs::rename(
            self.0.join(from.relative()),
            self.0.join(to.relative()),
        ))
    }
    fn set_modified(&self, p: &VPath, t: SystemTime) -> Result<(), FsError> {
        let f = File::options().write(true).open(self.0.join(p.relative()));
        fs(f.and_then(|f| f.set_modified(t)))
    }
}
