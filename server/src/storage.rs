//! [`Mounts`]: the server's one storage, routing each mount (a site root or virtual
//! directory, the first segment of a storage path) to the disk or to a bucket.

use std::sync::Arc;
use std::time::SystemTime;

use wharf_core::backend::{Download, Upload};
use wharf_core::{DirEntry, FsError, Metadata, Storage, VPath, WriteMode};

use crate::s3::S3Store;
use crate::LocalFs;

/// Disk mounts and bucket mounts behind one [`Storage`].
#[derive(Debug)]
pub struct Mounts {
    disk: Arc<LocalFs>,
    buckets: Vec<(String, S3Store)>,
}

/// Where a path lives.
enum Route<'a> {
    Disk,
    Bucket(&'a S3Store, VPath),
}

impl Mounts {
    pub fn new(disk: Arc<LocalFs>, buckets: Vec<(String, S3Store)>) -> Mounts {
        Mounts { disk, buckets }
    }

    fn route(&self, path: &VPath) -> Route<'_> {
        let first = path.segments().next();
        match self
            .buckets
            .iter()
            .find(|(name, _)| Some(name.as_str()) == first)
        {
            Some((_, store)) => Route::Bucket(store, path.without_first()),
            None => Route::Disk,
        }
    }
}

impl Storage for Mounts {
    fn stat(&self, path: &VPath) -> Result<Metadata, FsError> {
        match self.route(path) {
            Route::Disk => self.disk.stat(path),
            Route::Bucket(s, p) => s.stat(&p),
        }
    }
    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError> {
        match self.route(path) {
            Route::Disk => self.disk.read_dir(path),
            Route::Bucket(s, p) => s.read_dir(&p),
        }
    }
    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        match self.route(path) {
            Route::Disk => self.disk.open_read(path, offset),
            Route::Bucket(s, p) => s.open_read(&p, offset),
        }
    }
    fn open_write(
        &self,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<(Box<dyn Upload>, VPath), FsError> {
        match self.route(path) {
            Route::Disk => self.disk.open_write(path, mode),
            Route::Bucket(s, p) => {
                let (up, chosen) = s.open_write(&p, mode)?;
                // STOU picks the name below the mount: put the mount back in front.
                let mount = path.segments().next().unwrap_or_default();
                let full = VPath::root()
                    .child(mount)
                    .map(|m| chosen.under(&m))
                    .unwrap_or(chosen);
                Ok((up, full))
            }
        }
    }
    fn make_dir(&self, path: &VPath) -> Result<(), FsError> {
        match self.route(path) {
            Route::Disk => self.disk.make_dir(path),
            Route::Bucket(s, p) => s.make_dir(&p),
        }
    }
    fn remove_dir(&self, path: &VPath) -> Result<(), FsError> {
        match self.route(path) {
            Route::Disk => self.disk.remove_dir(path),
            Route::Bucket(s, p) => s.remove_dir(&p),
        }
    }
    fn remove_file(&self, path: &VPath) -> Result<(), FsError> {
        match self.route(path) {
            Route::Disk => self.disk.remove_file(path),
            Route::Bucket(s, p) => s.remove_file(&p),
        }
    }
    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        match (self.route(from), self.route(to)) {
            (Route::Disk, Route::Disk) => self.disk.rename(from, to),
            (Route::Bucket(a, f), Route::Bucket(b, t)) if std::ptr::eq(a, b) => a.rename(&f, &t),
            // Across mounts, as across file systems on disk.
            _ => Err(FsError::PermissionDenied),
        }
    }
    fn rename_noreplace(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        match (self.route(from), self.route(to)) {
            (Route::Disk, Route::Disk) => self.disk.rename_noreplace(from, to),
            (Route::Bucket(a, f), Route::Bucket(b, t)) if std::ptr::eq(a, b) => {
                a.rename_noreplace(&f, &t)
            }
            _ => Err(FsError::PermissionDenied),
        }
    }
    fn set_modified(&self, path: &VPath, modified: SystemTime) -> Result<(), FsError> {
        match self.route(path) {
            Route::Disk => self.disk.set_modified(path, modified),
            Route::Bucket(s, p) => s.set_modified(&p, modified),
        }
    }
}
