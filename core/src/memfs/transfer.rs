//! The bodies of [`MemStorage`](super::MemStorage) transfers: uploads that write into
//! the tree under its lock, and downloads that read a snapshot.

use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex};

use super::{lock, Body, Node, Tree};
use crate::backend::{Download, FsError, Upload};
use crate::path::VPath;

/// The inverse of `FsError::from_io`, for errors surfacing through `Read`/`Write`.
pub(super) fn to_io(e: FsError) -> io::Error {
    let kind = match e {
        FsError::NotFound => io::ErrorKind::NotFound,
        FsError::NoSpace => io::ErrorKind::StorageFull,
        FsError::IsADirectory => io::ErrorKind::IsADirectory,
        FsError::NotADirectory => io::ErrorKind::NotADirectory,
        FsError::PermissionDenied => io::ErrorKind::PermissionDenied,
        FsError::Io(msg) => return io::Error::other(msg),
        _ => io::ErrorKind::Other,
    };
    io::Error::from(kind)
}

/// Where an upload's bytes go.
pub(super) enum Target {
    /// Replace/Unique: a hidden buffer that becomes the file on commit.
    Pending { buf: Vec<u8>, reserved: bool },
    /// Append/At: straight into the stored file, at this position.
    InPlace { pos: u64 },
    /// Committed or discarded.
    Closed,
}

pub(super) struct MemUpload {
    pub(super) tree: Arc<Mutex<Tree>>,
    pub(super) path: VPath,
    pub(super) target: Target,
}

impl MemUpload {
    /// Gives back what a pending upload held (its capacity share and STOU reservation).
    fn release(&mut self, t: &mut Tree) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.target, Target::Closed) {
            Target::Pending { buf, reserved } => {
                t.pending -= buf.len() as u64;
                if reserved {
                    t.reserved.remove(self.path.as_str());
                }
                Some(buf)
            }
            Target::InPlace { .. } | Target::Closed => None,
        }
    }
}

impl Write for MemUpload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut t = lock(&self.tree);
        t.check_io().map_err(to_io)?;
        let want = data
            .len()
            .min(t.faults.short_writes.unwrap_or(usize::MAX).max(1));
        if want == 0 {
            return Ok(0);
        }
        match &mut self.target {
            Target::Pending { buf, .. } => {
                let n = t.admit(want, want as u64)?;
                buf.extend_from_slice(&data[..n]);
                t.pending += n as u64;
                Ok(n)
            }
            Target::InPlace { pos } => {
                let len = match t.nodes.get(self.path.as_str()).map(|n| &n.body) {
                    Some(Body::File(b)) => b.len() as u64,
                    Some(Body::Dir) => return Err(to_io(FsError::IsADirectory)),
                    None => return Err(to_io(FsError::NotFound)),
                };
                let start = (*pos).min(len);
                let n = t.admit(want, (start + want as u64).saturating_sub(len))?;
                let now = t.now;
                let node = t.nodes.get_mut(self.path.as_str()).expect("checked above");
                if let Body::File(b) = &mut node.body {
                    let at = start as usize;
                    if b.len() < at + n {
                        b.resize(at + n, 0);
                    }
                    b[at..at + n].copy_from_slice(&data[..n]);
                }
                node.modified = now;
                *pos = start + n as u64;
                Ok(n)
            }
            Target::Closed => Err(io::Error::other("upload already closed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.tree).check_io().map_err(to_io)
    }
}

impl Upload for MemUpload {
    fn commit(mut self: Box<Self>) -> Result<(), FsError> {
        let tree = Arc::clone(&self.tree);
        let mut t = lock(&tree);
        let Some(buf) = self.release(&mut t) else {
            return t.check_io();
        };
        t.check_io()?;
        t.check_parent(&self.path)?;
        if t.node(&self.path).is_ok_and(Node::is_dir) {
            return Err(FsError::IsADirectory);
        }
        let node = t.new_node(Body::File(buf));
        t.nodes.insert(self.path.as_str().to_owned(), node);
        t.touch_parent(&self.path);
        Ok(())
    }

    fn discard(mut self: Box<Self>) {
        let tree = Arc::clone(&self.tree);
        self.release(&mut lock(&tree));
    }
}

impl Drop for MemUpload {
    fn drop(&mut self) {
        if matches!(self.target, Target::Pending { .. }) {
            let tree = Arc::clone(&self.tree);
            self.release(&mut lock(&tree));
        }
    }
}

/// A snapshot of a file's bytes taken at open time; later writes do not show through.
pub(super) struct MemDownload {
    pub(super) tree: Arc<Mutex<Tree>>,
    pub(super) body: Cursor<Vec<u8>>,
}

impl Read for MemDownload {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        lock(&self.tree).check_io().map_err(to_io)?;
        self.body.read(buf)
    }
}

impl Download for MemDownload {}
