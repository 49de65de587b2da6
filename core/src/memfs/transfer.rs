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
                // (A power cut may have reset the count already.)
                t.pending = t.pending.saturating_sub(buf.len() as u64);
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
            Target::InPlace { pos, .. } => {
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

impl MemUpload {
    /// The commit of an in-place upload: `fsync` the file, then its directory (whoever
    /// created the file, its name must be durable for the acknowledged bytes to be).
    fn sync_in_place(&self, t: &mut Tree) {
        let Tree { nodes, crash, .. } = t;
        let Some(cm) = crash.as_mut().filter(|cm| cm.durable) else {
            return;
        };
        let Some(node) = nodes.get(self.path.as_str()) else {
            return;
        };
        if cm.step("commit:fsync-file") {
            if let Body::File(b) = &node.body {
                cm.sync_file(node.id, b);
            }
            if cm.step("commit:fsync-dir") {
                cm.sync_dir(super::crash::parent_of(self.path.as_str()));
            }
        }
    }
}

impl Upload for MemUpload {
    fn commit(mut self: Box<Self>) -> Result<(), FsError> {
        let tree = Arc::clone(&self.tree);
        let mut t = lock(&tree);
        let Some(buf) = self.release(&mut t) else {
            t.check_io()?;
            self.sync_in_place(&mut t);
            return Ok(());
        };
        t.check_io()?;
        t.check_parent(&self.path)?;
        if t.node(&self.path).is_ok_and(Node::is_dir) {
            return Err(FsError::IsADirectory);
        }
        let node = t.new_node(Body::File(buf));
        if let Some(cm) = &mut t.crash {
            // As `LocalFs` does: fsync the file, link/rename it to its name, fsync
            // the directory.
            if cm.durable && cm.step("commit:fsync-file") {
                if let Body::File(b) = &node.body {
                    cm.sync_file(node.id, b);
                }
            }
            if cm.step("commit:link") {
                cm.link(self.path.as_str(), node.id, false);
                if cm.durable && cm.step("commit:fsync-dir") {
                    cm.sync_dir(super::crash::parent_of(self.path.as_str()));
                }
            }
        }
        t.nodes.insert(self.path.as_str().to_owned(), node);
        t.touch_parent(&self.path);
        Ok(())
    }

    fn discard(mut self: Box<Self>) {
        let tree = Arc::clone(&self.tree);
        let mut t = lock(&tree);
        // What a failed in-place upload left is what the failure reply describes: as
        // durable as a success (`LocalFs` syncs it too).
        if let Target::InPlace { .. } = self.target {
            self.sync_in_place(&mut t);
        }
        self.release(&mut t);
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
