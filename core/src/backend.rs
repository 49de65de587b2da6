//! The synchronous, runtime-free interfaces to storage, authentication and name lookups,
//! and the requests the core sends to them.
//!
//! The core never calls [`Storage`] or [`Authenticator`] itself: it emits
//! [`crate::Action::Request`] and waits for [`crate::Input::Completed`]. A driver runs the
//! request wherever it likes (a worker pool, `smol::unblock`, inline in a simulator) with
//! [`execute`], and keeps the open files it produces in its own table keyed by
//! [`FileHandle`].

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::task::Waker;
use std::time::SystemTime;

use crate::ids::FileHandle;
use crate::path::VPath;

/// Why a storage operation failed. Each kind maps to one FTP reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("permission denied")]
    PermissionDenied,
    #[error("already exists")]
    AlreadyExists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotADirectory,
    #[error("is a directory")]
    IsADirectory,
    #[error("no space left on device")]
    NoSpace,
    #[error("file name not allowed")]
    BadName,
    /// What this storage cannot do (appending to an object in object storage): the
    /// reason is the reply's text.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("i/o error: {0}")]
    Io(String),
}

impl FsError {
    /// The reply code this error earns (RFC 959): 550 for "not available", 452 for
    /// "insufficient storage", 553 for "name not allowed", 451 for a local error.
    pub fn reply_code(&self) -> u16 {
        match self {
            FsError::NotFound
            | FsError::PermissionDenied
            | FsError::AlreadyExists
            | FsError::NotEmpty
            | FsError::NotADirectory
            | FsError::IsADirectory
            | FsError::Unsupported(_) => 550,
            FsError::NoSpace => 452,
            FsError::BadName => 553,
            FsError::Io(_) => 451,
        }
    }

    /// Maps an `std::io::Error` the way every storage implementation should.
    pub fn from_io(e: &std::io::Error) -> FsError {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound => FsError::NotFound,
            K::PermissionDenied => FsError::PermissionDenied,
            K::AlreadyExists => FsError::AlreadyExists,
            K::DirectoryNotEmpty => FsError::NotEmpty,
            K::NotADirectory => FsError::NotADirectory,
            K::IsADirectory => FsError::IsADirectory,
            K::StorageFull | K::QuotaExceeded => FsError::NoSpace,
            K::InvalidFilename | K::InvalidInput => FsError::BadName,
            _ => match e.raw_os_error() {
                Some(28) | Some(122) => FsError::NoSpace, // ENOSPC, EDQUOT
                Some(40) => FsError::PermissionDenied,    // ELOOP: a symlink we refuse to follow
                Some(18) => FsError::PermissionDenied,    // EXDEV: escape attempt across the root
                _ => FsError::Io(e.to_string()),
            },
        }
    }
}

/// What kind of object a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Symlink,
}

/// File facts the core needs for SIZE, MDTM and listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: FileKind,
    pub size: u64,
    /// Last modification, if the storage knows it.
    pub modified: Option<SystemTime>,
    /// Unix permission bits (`0o755`); storages without them report 0o644/0o755.
    pub mode: u32,
    /// A stable identity for MLSD's `unique` fact (device and inode for a disk).
    pub unique: Option<(u64, u64)>,
    pub nlink: u64,
}

impl Metadata {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Dir
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub meta: Metadata,
}

/// How an upload opens its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// STOR: replace the file when the upload completes.
    Replace,
    /// APPE: append to the file (created if missing), in place.
    Append,
    /// STOR after REST: overwrite from this offset, in place.
    At(u64),
    /// STOU: create a new file with a unique name derived from the path.
    Unique,
}

/// A logged-in user, as the authenticator vouches for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Principal {
    pub name: String,
    pub groups: Vec<String>,
    pub anonymous: bool,
    /// The home directory the account store assigns, as a site path (a directory's
    /// `msIIS-FTPRoot` + `msIIS-FTPDir`, a passwd home below a base): where
    /// [`crate::Isolation::ActiveDirectory`] jails the user and
    /// [`crate::Isolation::StartInUsersDirectory`] starts it. `None`: the store has none.
    pub home: Option<VPath>,
}

impl Principal {
    /// A named (not anonymous) user in `groups`, without a home of its own.
    pub fn user(name: impl Into<String>, groups: Vec<String>) -> Principal {
        Principal {
            name: name.into(),
            groups,
            ..Principal::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("login incorrect")]
    BadCredentials,
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

/// A password, kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Work the core asks a driver to run off its event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Authenticate {
        user: String,
        password: Secret,
        peer: SocketAddr,
    },
    Stat {
        path: VPath,
    },
    ReadDir {
        path: VPath,
    },
    OpenRead {
        file: FileHandle,
        path: VPath,
        offset: u64,
    },
    OpenWrite {
        file: FileHandle,
        path: VPath,
        mode: WriteMode,
    },
    /// Ends the life of an open file. For an upload, `commit` says whether the bytes
    /// become the file (`true`) or are thrown away (`false`); reads ignore it.
    CloseFile {
        file: FileHandle,
        commit: bool,
    },
    MakeDir {
        path: VPath,
    },
    RemoveDir {
        path: VPath,
    },
    RemoveFile {
        path: VPath,
    },
    /// `replace`: whether an existing `to` may be replaced (else `AlreadyExists`).
    Rename {
        from: VPath,
        to: VPath,
        replace: bool,
    },
    SetModified {
        path: VPath,
        modified: SystemTime,
    },
    /// The client's host name, for host-name entries of the IP rules (reverse DNS).
    ReverseLookup {
        ip: IpAddr,
    },
}

/// What an opened file is, for the 150 reply and for SIZE-aware transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedFile {
    /// The size at open time (for reads) or the starting size (for writes).
    pub size: u64,
    /// The final path; differs from the asked path for STOU.
    pub path: VPath,
}

/// The answer to a [`Request`], fed back as `Input::Completed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    Auth(Result<Principal, AuthError>),
    Stat(Result<Metadata, FsError>),
    /// A directory's entries, with the wall-clock time of the listing (for the
    /// six-months rule of `ls -l`).
    Listing(Result<(Vec<DirEntry>, SystemTime), FsError>),
    Opened(Result<OpenedFile, FsError>),
    Done(Result<(), FsError>),
    /// The confirmed host name of a `ReverseLookup`; `None` when there is none, the
    /// lookup failed, or the name does not lead back to the address.
    Hostname(Option<String>),
}

/// An upload in progress. Dropping it without [`Upload::commit`] must leave the final
/// name untouched (or, for in-place writes, leave what was written).
pub trait Upload: Write + Send + 'static {
    /// Makes the written bytes durable under their final name.
    fn commit(self: Box<Self>) -> Result<(), FsError>;
    /// Throws the upload away (or keeps the partial file, if the storage was told to).
    fn discard(self: Box<Self>);
    /// For a storage that writes in the background (object storage), whose `write`
    /// answers `WouldBlock` while it cannot take more: `waker` is woken once it can
    /// (at once if it already can). Disk files never block and ignore it.
    fn set_waker(&mut self, waker: &Waker) {
        let _ = waker;
    }
}

/// A file body being read. `raw_fd` lets a driver use `sendfile` when the body is a plain
/// file on a local disk: the descriptor's file offset must be where the body starts (the
/// REST offset), since the driver sends from the current offset to the end.
pub trait Download: Read + Send + 'static {
    #[cfg(unix)]
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
    /// For a storage that reads in the background (object storage), whose `read`
    /// answers `WouldBlock` until bytes arrive: `waker` is woken once a read can go on
    /// (at once if it already can). Disk files never block and ignore it.
    fn set_waker(&mut self, waker: &Waker) {
        let _ = waker;
    }
}

/// A storage backend. Paths are already normalised and confined to the storage's root;
/// an implementation must still refuse to follow anything that leaves it (a symlink).
pub trait Storage: Send + Sync + 'static {
    fn stat(&self, path: &VPath) -> Result<Metadata, FsError>;
    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError>;
    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError>;
    /// Opens an upload; returns it with the path it will have (STOU picks one).
    fn open_write(
        &self,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<(Box<dyn Upload>, VPath), FsError>;
    fn make_dir(&self, path: &VPath) -> Result<(), FsError>;
    fn remove_dir(&self, path: &VPath) -> Result<(), FsError>;
    fn remove_file(&self, path: &VPath) -> Result<(), FsError>;
    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError>;
    /// Renames only if `to` does not exist (`AlreadyExists` otherwise). Storages should
    /// make this atomic (`renameat2(RENAME_NOREPLACE)`); this default checks first, which
    /// leaves a window for a racing writer.
    fn rename_noreplace(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        if from == to || self.stat(to).is_ok() {
            self.stat(from)?;
            return Err(FsError::AlreadyExists);
        }
        self.rename(from, to)
    }
    fn set_modified(&self, path: &VPath, modified: SystemTime) -> Result<(), FsError>;
}

/// Checks credentials. Anonymous logins never reach it; the core admits them by config.
pub trait Authenticator: Send + Sync + 'static {
    fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: SocketAddr,
    ) -> Result<Principal, AuthError>;
}

/// Finds a client's host name for the IP rules' host-name entries. It blocks (DNS), so
/// it runs where the other requests run: off the event loop, through [`execute`].
pub trait Resolver: Send + Sync + std::fmt::Debug + 'static {
    /// The host name of `ip`, only if it is confirmed: the reverse (PTR) name must
    /// resolve forward to `ip` again, or anyone controlling their PTR record could claim
    /// any name. `None` for no name, a failure, or an unconfirmed one.
    fn reverse_lookup(&self, ip: IpAddr) -> Option<String>;
}

/// A resolver that knows no names: every client is judged by its address alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl Resolver for NoResolver {
    fn reverse_lookup(&self, _ip: IpAddr) -> Option<String> {
        None
    }
}

/// An open file that a driver keeps between `Opened` and the end of its transfer.
pub enum OpenFile {
    Read(Box<dyn Download>),
    Write(Box<dyn Upload>),
}

impl OpenFile {
    /// After a transfer's pump stopped with [`crate::Run::File`]: `waker` is woken when
    /// the file can go on ([`Download::set_waker`], [`Upload::set_waker`]).
    pub fn set_waker(&mut self, waker: &Waker) {
        match self {
            OpenFile::Read(r) => r.set_waker(waker),
            OpenFile::Write(w) => w.set_waker(waker),
        }
    }
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenFile::Read(_) => f.write_str("OpenFile::Read"),
            OpenFile::Write(_) => f.write_str("OpenFile::Write"),
        }
    }
}

/// The files a session has open and not lent to a running transfer, by the core's
/// handle: the table every driver keeps (a session holds one or two at a time).
#[derive(Default)]
pub struct OpenFiles(Vec<(FileHandle, OpenFile)>);

impl OpenFiles {
    pub fn put(&mut self, handle: FileHandle, file: OpenFile) {
        self.0.push((handle, file));
    }

    pub fn take(&mut self, handle: FileHandle) -> Option<OpenFile> {
        let i = self.0.iter().position(|(h, _)| *h == handle)?;
        Some(self.0.swap_remove(i).1)
    }

    /// What a request needs from the table before it runs ([`execute`]'s `file`: the
    /// file a `CloseFile` ends), and the handle under which the file an open yields
    /// goes back in with [`Self::put`].
    pub fn prepare(&mut self, request: &Request) -> (Option<FileHandle>, Option<OpenFile>) {
        match request {
            Request::CloseFile { file, .. } => (None, self.take(*file)),
            Request::OpenRead { file, .. } | Request::OpenWrite { file, .. } => (Some(*file), None),
            _ => (None, None),
        }
    }

    /// Every file left, with its handle, when the session ends (uploads among them are
    /// to be discarded).
    pub fn drain(&mut self) -> Vec<(FileHandle, OpenFile)> {
        std::mem::take(&mut self.0)
    }
}

/// Runs one request against a storage, an authenticator and a resolver. `wall_now` is
/// the driver's wall clock, used to date listings. `CloseFile` needs the file back from the driver's
/// table, so it is passed in `file`; every other request leaves `file` as `None`.
///
/// Returns the completion and, for a successful open, the file for the driver to keep
/// under the request's [`FileHandle`].
pub fn execute(
    storage: &dyn Storage,
    auth: &dyn Authenticator,
    resolver: &dyn Resolver,
    request: Request,
    file: Option<OpenFile>,
    wall_now: SystemTime,
) -> (Completion, Option<OpenFile>) {
    match request {
        Request::Authenticate {
            user,
            password,
            peer,
        } => (
            Completion::Auth(auth.authenticate(&user, &password.0, peer)),
            None,
        ),
        Request::Stat { path } => (Completion::Stat(storage.stat(&path)), None),
        Request::ReadDir { path } => (
            Completion::Listing(storage.read_dir(&path).map(|entries| (entries, wall_now))),
            None,
        ),
        Request::OpenRead { path, offset, .. } => match storage.open_read(&path, offset) {
            Ok((body, size)) => (
                Completion::Opened(Ok(OpenedFile { size, path })),
                Some(OpenFile::Read(body)),
            ),
            Err(e) => (Completion::Opened(Err(e)), None),
        },
        Request::OpenWrite { path, mode, .. } => match storage.open_write(&path, mode) {
            Ok((up, path)) => {
                let size = match mode {
                    WriteMode::At(n) => n,
                    _ => 0,
                };
                (
                    Completion::Opened(Ok(OpenedFile { size, path })),
                    Some(OpenFile::Write(up)),
                )
            }
            Err(e) => (Completion::Opened(Err(e)), None),
        },
        Request::CloseFile { commit, .. } => {
            let result = match file {
                Some(OpenFile::Write(up)) if commit => up.commit(),
                Some(OpenFile::Write(up)) => {
                    up.discard();
                    Ok(())
                }
                Some(OpenFile::Read(_)) | None => Ok(()),
            };
            (Completion::Done(result), None)
        }
        Request::MakeDir { path } => (Completion::Done(storage.make_dir(&path)), None),
        Request::RemoveDir { path } => (Completion::Done(storage.remove_dir(&path)), None),
        Request::RemoveFile { path } => (Completion::Done(storage.remove_file(&path)), None),
        Request::Rename { from, to, replace } => {
            let result = if replace {
                storage.rename(&from, &to)
            } else {
                storage.rename_noreplace(&from, &to)
            };
            (Completion::Done(result), None)
        }
        Request::SetModified { path, modified } => (
            Completion::Done(storage.set_modified(&path, modified)),
            None,
        ),
        Request::ReverseLookup { ip } => (Completion::Hostname(resolver.reverse_lookup(ip)), None),
    }
}
